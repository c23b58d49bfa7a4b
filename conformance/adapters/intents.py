"""Intents (what the harness asks the vendor software to do) and the adapter's result, as JSON.

Each action is a small frozen dataclass: ``RecordVaccination``, ``RecordNotDone``, ``ReadHistory``,
``CorrectVaccination`` and ``CancelVaccination``. ``intent.to_json()`` gives a JSON object with an
``action`` and snake_case fields; ``intent_from_json(data)`` (or ``RecordVaccination.from_json``) reads
one back. Both directions are checked with jsonschema against ``intent.schema.json``, shipped with the
package so that a vendor can write an adapter hook in any language. ``AdapterResult`` is what the vendor
software reports back (outcome, the message and OperationOutcome issues it showed, the records it made,
the history it displays), checked against the same file's ``$defs/AdapterResult``. A schema violation
raises ``ConfigurationError`` naming the JSON path (``$.product.cnk``) of every problem.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, ClassVar, Literal, Union

import jsonschema

from conformance.errors import ConfigurationError

__all__ = [
    "INTENT_TYPES",
    "AdapterResult",
    "AdministeredProduct",
    "BodySite",
    "CancelVaccination",
    "CareSetting",
    "Coding",
    "CorrectVaccination",
    "DisplayedVaccination",
    "Identifier",
    "Intent",
    "Issue",
    "Reaction",
    "ReadHistory",
    "RecordNotDone",
    "RecordVaccination",
    "check_intent_json",
    "check_result_json",
    "intent_from_json",
    "intent_schema",
]

Outcome = Literal["succeeded", "rejected", "failed"]
DisplayedStatus = Literal["completed", "not-done", "cancelled"]


# --- building blocks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Coding:
    """A code from a code system (``display`` is optional)."""

    system: str
    code: str
    display: str | None = None


@dataclass(frozen=True)
class Identifier:
    """A business identifier: the software's own naming system and the record's key in it."""

    system: str
    value: str


@dataclass(frozen=True)
class AdministeredProduct:
    """The product given: CNK code, lot number and expiry date (``YYYY-MM-DD``)."""

    cnk: str | None = None
    lot_number: str | None = None
    expiry: str | None = None


@dataclass(frozen=True)
class BodySite:
    """Where the vaccine was given (a be-vs-vaccination-bodysite code) and on which side."""

    site: Coding
    laterality: Literal["left", "right"] | None = None


@dataclass(frozen=True)
class CareSetting:
    """Where the vaccination took place: a be-vs-care-location code (``hospital``, ``workplace`` ...)."""

    code: str
    name: str | None = None


@dataclass(frozen=True)
class Reaction:
    """A reaction after the vaccination: its date and, optionally, what it was."""

    date: str
    detail: Coding | None = None


@dataclass(frozen=True)
class Issue:
    """An OperationOutcome issue as the software surfaced it to the user."""

    severity: Literal["fatal", "error", "warning", "information"]
    code: str
    text: str
    expression: str | None = None


@dataclass(frozen=True)
class DisplayedVaccination:
    """One line of the history the software displays; ``cancelled`` for entered-in-error records."""

    status: DisplayedStatus
    record_id: str | None = None
    business_identifier: Identifier | None = None
    vaccine: Coding | None = None
    occurrence: str | None = None


# --- JSON plumbing ---------------------------------------------------------------------------------


def intent_schema() -> dict[str, Any]:
    """The shipped JSON Schema (intents at the root, the result under ``$defs/AdapterResult``); a copy."""
    return copy.deepcopy(_schema())


@cache
def _schema() -> dict[str, Any]:
    text = resources.files("conformance.adapters").joinpath("intent.schema.json").read_text("utf-8")
    return json.loads(text)


@cache
def _validator(definition: str) -> jsonschema.protocols.Validator:
    root = _schema()
    schema = {"$schema": root["$schema"], "$defs": root["$defs"], "$ref": f"#/$defs/{definition}"}
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def _check(definition: str, data: Any, what: str) -> None:
    errors = sorted(_validator(definition).iter_errors(data), key=lambda e: (list(e.path), e.message))
    if not errors:
        return
    problems = []
    for error in errors:
        leaves = _leaf_errors(error)
        for leaf in leaves:
            problems.append(f"{leaf.json_path}: {_describe(leaf)}")
    unique = list(dict.fromkeys(problems))
    raise ConfigurationError(f"invalid {what}: " + "; ".join(unique))


def _describe(error: jsonschema.ValidationError) -> str:
    """The error's message without quoting whole objects (an intent holds an SSIN)."""
    if error.validator == "not":
        comment = error.validator_value.get("$comment") if isinstance(error.validator_value, dict) else None
        return str(comment or "a forbidden combination of fields")
    if error.validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"must be {expected}, not {_json_type(error.instance)}"
    if isinstance(error.instance, dict | list) and error.validator not in (
        "required",
        "additionalProperties",
    ):
        return f"does not satisfy {error.validator!r}"
    return error.message if len(error.message) <= 200 else error.message[:197] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _leaf_errors(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """The most specific errors under a oneOf (the branch that is not ``null``)."""
    if not error.context:
        return [error]
    deepest = [e for e in error.context if e.validator != "type" or "null" not in repr(e.validator_value)]
    best = max(deepest or error.context, key=lambda e: len(e.absolute_path))
    return _leaf_errors(best)


def check_intent_json(data: Any) -> None:
    """Raise ConfigurationError (naming each JSON path) unless ``data`` is a valid intent."""
    _check("Intent", data, "intent")


def check_result_json(data: Any) -> None:
    """Raise ConfigurationError (naming each JSON path) unless ``data`` is a valid adapter result."""
    _check("AdapterResult", data, "adapter result")


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_to_json(item) for item in value]
    return value


def _from_json(kind: Any, value: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin in (Union, types.UnionType):
        if value is None:
            return None
        options = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return _from_json(options[0], value)
    if origin is tuple:
        return tuple(_from_json(typing.get_args(kind)[0], item) for item in value)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        arguments = {
            f.name: _from_json(hints[f.name], value[f.name])
            for f in dataclasses.fields(kind)
            if f.init and f.name in value
        }
        return kind(**arguments)
    return value


class _Json:
    """``to_json``/``from_json`` for intents, checked against the schema both ways."""

    action: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        """This intent as a JSON object (``action`` first), checked against the schema."""
        data = {"action": self.action, **_to_json(self)}
        check_intent_json(data)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Any:
        """Read this kind of intent from JSON (checked against the schema)."""
        check_intent_json(data)
        if data.get("action") != cls.action:
            raise ConfigurationError(
                f"invalid intent: $.action: expected {cls.action!r}, not {data.get('action')!r}"
            )
        fields = {key: value for key, value in data.items() if key != "action"}
        return _from_json(cls, fields)


# --- the intents -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordVaccination(_Json):
    """Record a vaccination given (``occurrence``) or reported from history (``occurrence_text``)."""

    action: ClassVar[str] = "record-vaccination"
    patient: str
    """The patient's SSIN (or BIS number)."""
    vaccine: Coding
    occurrence: str | None = None
    """FHIR dateTime of the administration."""
    occurrence_text: str | None = None
    """Free text for a reported vaccination whose date is not known exactly ("spring 2016")."""
    product: AdministeredProduct | None = None
    route: Coding | None = None
    body_site: BodySite | None = None
    performer: str | None = None
    """NIHDI number of who gave the vaccine (None: the logged-in professional)."""
    care_setting: CareSetting | None = None
    reaction: Reaction | None = None
    business_identifier: Identifier | None = None
    """The record's key in the software (None: the software makes one up and reports it)."""
    note: str | None = None
    professional: str | None = None
    """SSIN of the test professional who acts (None: the professional the run is configured with)."""
    encrypted: bool = False
    """Use the register's encrypted variant (sealed for Vaccicard with its ETK from the ETK depot)."""


@dataclass(frozen=True)
class RecordNotDone(_Json):
    """Record that a vaccination was not given: a refusal or a contraindication, with its reason."""

    action: ClassVar[str] = "record-not-done"
    patient: str
    vaccine: Coding
    status_reason: Coding
    """A code from be-vs-vaccination-status-reason (e.g. v3-ActReason PATOBJ, MEDPREC)."""
    kind: Literal["refusal", "contraindication", "other"]
    """Why it was not given: the patient refused, a medical reason, or another (out of stock ...)."""
    occurrence: str | None = None
    performer: str | None = None
    care_setting: CareSetting | None = None
    business_identifier: Identifier | None = None
    note: str | None = None
    professional: str | None = None
    """SSIN of the test professional who acts (None: the professional the run is configured with)."""
    encrypted: bool = False
    """Use the register's encrypted variant (sealed for Vaccicard with its ETK from the ETK depot)."""


@dataclass(frozen=True)
class ReadHistory(_Json):
    """Show the patient's vaccinations as the register holds them."""

    action: ClassVar[str] = "read-history"
    patient: str
    professional: str | None = None
    """SSIN of the test professional who acts (None: the professional the run is configured with)."""


@dataclass(frozen=True)
class CorrectVaccination(_Json):
    """Correct a recorded vaccination; fields left None stay as recorded."""

    action: ClassVar[str] = "correct-vaccination"
    business_identifier: Identifier
    vaccine: Coding | None = None
    occurrence: str | None = None
    occurrence_text: str | None = None
    product: AdministeredProduct | None = None
    route: Coding | None = None
    body_site: BodySite | None = None
    reaction: Reaction | None = None
    note: str | None = None
    professional: str | None = None
    """SSIN of the test professional who acts (None: the professional the run is configured with)."""


@dataclass(frozen=True)
class CancelVaccination(_Json):
    """Cancel a record made in error (an entered-in-error update, never a delete)."""

    action: ClassVar[str] = "cancel-vaccination"
    business_identifier: Identifier
    reason: str
    professional: str | None = None
    """SSIN of the test professional who acts (None: the professional the run is configured with)."""


Intent = RecordVaccination | RecordNotDone | ReadHistory | CorrectVaccination | CancelVaccination

INTENT_TYPES: Mapping[str, type[Any]] = types.MappingProxyType(
    {
        cls.action: cls
        for cls in (RecordVaccination, RecordNotDone, ReadHistory, CorrectVaccination, CancelVaccination)
    }
)


def intent_from_json(data: Mapping[str, Any]) -> Intent:
    """Read any intent from JSON (checked against the schema; its ``action`` picks the class)."""
    check_intent_json(data)
    return INTENT_TYPES[data["action"]].from_json(data)


# --- the result ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdapterResult:
    """What the vendor software reported back after carrying out an intent."""

    outcome: Outcome
    message: str | None = None
    """The text the software showed the user (a rejection's reason, a confirmation ...)."""
    issues: tuple[Issue, ...] = field(default=())
    """The OperationOutcome issues the software surfaced."""
    record_ids: tuple[str, ...] = field(default=())
    business_identifiers: tuple[Identifier, ...] = field(default=())
    vaccinations: tuple[DisplayedVaccination, ...] = field(default=())
    """For ReadHistory: what the software displays, with each record's status."""

    @property
    def succeeded(self) -> bool:
        return self.outcome == "succeeded"

    def to_json(self) -> dict[str, Any]:
        """This result as a JSON object, checked against the schema."""
        data = _to_json(self)
        check_result_json(data)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AdapterResult:
        """Read a result (as a hook answers it) from JSON, checked against the schema."""
        check_result_json(data)
        return _from_json(cls, data)
