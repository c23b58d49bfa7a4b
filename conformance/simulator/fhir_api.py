"""The simulated Vaccicard FHIR R4 API (JSON only): Immunization records behind IAM Connect tokens.

``FhirApi.handle(request)`` answers every path under ``config.fhir_base`` (``/fhir``) from a plain
``HttpRequest``; servers only translate. It behaves like a careful register, with every choice the
private real API may make differently taken from ``SimulatorConfig`` (assumed defaults):

* ``GET /metadata`` (no token needed): a CapabilityStatement stating exactly what is implemented.
* ``Immunization``: create (``POST``, conditional with ``If-None-Exist: identifier=system|value``:
  200 with the existing record, 201 for a new one), read, vread, update (``PUT``, ``If-Match: W/"n"``
  → 412 when stale, optional unless ``require_if_match``), history, search (``GET`` or ``POST _search``)
  by ``patient.identifier`` (also ``patient:identifier``) ``=<SSIN system>|<SSIN>``, ``identifier``,
  ``status``, ``date`` (prefixes eq ne gt lt ge le sa eb), with ``_count``, ``_sort=date|-date`` and
  ``_offset`` paging (``self``/``first``/``previous``/``next`` links). Unknown search parameters get 400
  (strict) unless ``Prefer: handling=lenient``. ``DELETE`` follows ``delete_policy``: 405 telling how to
  cancel (default), or a cancellation (a new version with ``status = entered-in-error``, 204).
* ``POST /Immunization/$validate``: the resource or a Parameters with ``resource`` (and optional
  ``profile``); 200 with the validator's OperationOutcome (profile validation only, no register rule).

Order of checks for every request: route (404, 405; unsafe path segments and bad ids 400), fault
injection, ``_format``/``Accept`` (406), body size (413), ``Content-Type`` (415), bearer token (401:
``WWW-Authenticate`` with ``error="invalid_token"`` and a description, except for a missing token,
which gets the bare ``Bearer realm="..."`` challenge RFC 6750 asks for), the principal (403), body (400:
not JSON, not an object, nested deeper than ``max_json_depth``, a ``null`` property, not an
Immunization), then the interaction: for create, profile validation (422) comes before the register
rules (403, 422) and the store (409); for update, vread, history and read, the record must exist (404)
and be visible (403) first. Store failures (database locked or closed) get 503 with ``Retry-After``;
anything else unexpected is logged and answered 500 with an OperationOutcome that shows no internals.

Register rules: each refusal is an OperationOutcome whose issue has an IssueType code, a text and a
``details.coding`` from ``RULES_SYSTEM`` (the codes are ``Rule`` members, listed in ``Rule``'s
docstring). Access needs a professional token (organisations get 403 except for ``$validate``) with a
recognised discipline; writes need a recognised recording discipline. The patient is named by SSIN in
``patient.identifier``; an unknown patient gets 403 (like no consent, so as not to tell more than
needed to someone without access; the code says which). Searches without a patient show only the
records of patients the professional may see. A record's patient never changes (cancel it and record it
for the right patient), so every version of a record has the same audience.

Responses carry ``annotations`` for the traffic recorder: ``operation``, ``resource_type``,
``resource_id``, ``subject`` (``nihdi:<nihii11>``, ``cbe:<cbe>``), ``validation`` (issue dicts),
``fault`` and, when it applies, ``rule`` (the register-rule code) and ``committed``. Nothing that
reaches a client quotes a token, and rejection texts never quote an SSIN.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

import orjson

from conformance import __version__
from conformance.belgium.identifiers import NIHDI, NIHDI_PROFESSIONAL, SSIN, check_ssin
from conformance.errors import ConfigurationError
from conformance.fhir.inputs import parse_error_issue
from conformance.fhir.outcome import Outcome
from conformance.fhir.validator import Validator
from conformance.simulator.config import IMMUNIZATION_STATUSES, SimulatorConfig
from conformance.simulator.faults import Fault, FaultPlan
from conformance.simulator.http import DropConnection, HttpRequest, HttpResponse
from conformance.simulator.iam import (
    HEALTHCARE,
    IamConnect,
    InvalidAccessTokenError,
    Principal,
    TokenRejection,
)
from conformance.simulator.store import (
    DATE_PREFIXES,
    DuplicateIdentifier,
    IdentifierChanged,
    ImmunizationStore,
    InvalidSearch,
    NotFound,
    StoredResource,
    StoreError,
    VersionConflict,
    date_range,
)
from conformance.simulator.testdata import TestData

__all__ = ["FHIR_CONTENT_TYPE", "RECORDER_EXTENSION", "RULES_SYSTEM", "FhirApi", "Rule"]

FHIR_CONTENT_TYPE = "application/fhir+json; charset=utf-8"
RULES_SYSTEM = "https://vaccicard-conformance.example/register-rules"
"""Naming system of the ``details.coding`` codes the simulator puts on every refusal."""
RECORDER_EXTENSION = "https://www.ehealth.fgov.be/standards/fhir/core/StructureDefinition/be-ext-recorder"
VALIDATE_OPERATION = "http://hl7.org/fhir/OperationDefinition/Resource-validate"
SMART_OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
EVENT_STATUS = "http://hl7.org/fhir/event-status"

_log = logging.getLogger(__name__)


class Rule(StrEnum):
    """Stable codes (system ``RULES_SYSTEM``) of the simulator's refusals, with their HTTP status.

    Tokens (401): ``token-missing``, ``token-malformed``, ``token-bad-signature``, ``token-expired``,
    ``token-wrong-issuer``, ``token-wrong-audience``, ``token-invalid-claims``.
    Principal (403): ``professional-required`` (an organisation token on patient data),
    ``discipline-not-recognised``, ``discipline-may-not-record`` (writes).
    Patient access (403): ``patient-unknown``, ``patient-no-consent``, ``no-therapeutic-relationship``;
    ``recorder-mismatch`` (the be-ext-recorder does not identify the authenticated professional).
    Content (422): ``profile-invalid`` (validator errors), ``patient-identifier-required`` (no SSIN in
    ``patient.identifier``), ``business-identifier-missing``, ``recorded-in-future``,
    ``occurrence-in-future``, ``status-transition``, ``patient-changed``, ``identifier-changed``.
    Conflicts: ``duplicate-identifier`` (409), ``version-conflict`` (412), ``if-match-required`` (428).
    Protocol: ``invalid-path``/``invalid-id``/``invalid-json``/``json-too-deep``/``not-an-immunization``/
    ``id-mismatch``/``invalid-if-match``/``invalid-if-none-exist``/``conditional-create-mismatch``/
    ``unknown-search-parameter``/``invalid-search``/``invalid-parameters``/``unknown-profile`` (400),
    ``unknown-route`` and ``not-found`` (404), ``method-not-allowed`` and ``delete-forbidden`` (405),
    ``not-acceptable`` (406), ``payload-too-large`` (413), ``unsupported-media-type`` (415),
    ``fault-injected`` (a status fault), ``register-unavailable`` (503), ``internal-error`` (500).
    """

    TOKEN_MISSING = "token-missing"
    TOKEN_MALFORMED = "token-malformed"
    TOKEN_BAD_SIGNATURE = "token-bad-signature"
    TOKEN_EXPIRED = "token-expired"
    TOKEN_WRONG_ISSUER = "token-wrong-issuer"
    TOKEN_WRONG_AUDIENCE = "token-wrong-audience"
    TOKEN_INVALID_CLAIMS = "token-invalid-claims"
    PROFESSIONAL_REQUIRED = "professional-required"
    DISCIPLINE_NOT_RECOGNISED = "discipline-not-recognised"
    DISCIPLINE_MAY_NOT_RECORD = "discipline-may-not-record"
    PATIENT_UNKNOWN = "patient-unknown"
    PATIENT_NO_CONSENT = "patient-no-consent"
    NO_THERAPEUTIC_RELATIONSHIP = "no-therapeutic-relationship"
    RECORDER_MISMATCH = "recorder-mismatch"
    PROFILE_INVALID = "profile-invalid"
    PATIENT_IDENTIFIER_REQUIRED = "patient-identifier-required"
    BUSINESS_IDENTIFIER_MISSING = "business-identifier-missing"
    RECORDED_IN_FUTURE = "recorded-in-future"
    OCCURRENCE_IN_FUTURE = "occurrence-in-future"
    STATUS_TRANSITION = "status-transition"
    PATIENT_CHANGED = "patient-changed"
    IDENTIFIER_CHANGED = "identifier-changed"
    DUPLICATE_IDENTIFIER = "duplicate-identifier"
    VERSION_CONFLICT = "version-conflict"
    IF_MATCH_REQUIRED = "if-match-required"
    INVALID_PATH = "invalid-path"
    INVALID_ID = "invalid-id"
    INVALID_JSON = "invalid-json"
    JSON_TOO_DEEP = "json-too-deep"
    NOT_AN_IMMUNIZATION = "not-an-immunization"
    ID_MISMATCH = "id-mismatch"
    INVALID_IF_MATCH = "invalid-if-match"
    INVALID_IF_NONE_EXIST = "invalid-if-none-exist"
    CONDITIONAL_CREATE_MISMATCH = "conditional-create-mismatch"
    UNKNOWN_SEARCH_PARAMETER = "unknown-search-parameter"
    INVALID_SEARCH = "invalid-search"
    INVALID_PARAMETERS = "invalid-parameters"
    UNKNOWN_PROFILE = "unknown-profile"
    UNKNOWN_ROUTE = "unknown-route"
    NOT_FOUND = "not-found"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    DELETE_FORBIDDEN = "delete-forbidden"
    NOT_ACCEPTABLE = "not-acceptable"
    PAYLOAD_TOO_LARGE = "payload-too-large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported-media-type"
    FAULT_INJECTED = "fault-injected"
    REGISTER_UNAVAILABLE = "register-unavailable"
    INTERNAL_ERROR = "internal-error"


_TOKEN_RULES: Mapping[TokenRejection, Rule] = {
    TokenRejection.MISSING: Rule.TOKEN_MISSING,
    TokenRejection.MALFORMED: Rule.TOKEN_MALFORMED,
    TokenRejection.BAD_SIGNATURE: Rule.TOKEN_BAD_SIGNATURE,
    TokenRejection.EXPIRED: Rule.TOKEN_EXPIRED,
    TokenRejection.WRONG_ISSUER: Rule.TOKEN_WRONG_ISSUER,
    TokenRejection.WRONG_AUDIENCE: Rule.TOKEN_WRONG_AUDIENCE,
    TokenRejection.INVALID_CLAIMS: Rule.TOKEN_INVALID_CLAIMS,
}

_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")
_JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
_ACCEPTABLE = _JSON_TYPES | {"*/*", "application/*"}
# an unencoded "+" in a query string reads as a space
_FORMATS = _JSON_TYPES | {"json", "application/fhir json", "application/json fhir"}
_FORM = "application/x-www-form-urlencoded"
_UNSAFE = frozenset('%\\"<>{}|^`')
_ALWAYS_ALLOWED_PARAMS = frozenset({"_format", "_pretty"})
_PATIENT_PARAMS = ("patient.identifier", "patient:identifier")
_SEARCH_PARAMS = (*_PATIENT_PARAMS, "identifier", "status", "date", "_count", "_offset", "_sort")
_WRITES = frozenset({"create", "update", "delete"})
_FAULT_OPERATION = {
    "capabilities": "metadata",
    "create": "create",
    "read": "read",
    "vread": "read",
    "history": "read",
    "update": "update",
    "delete": "delete",
    "search": "search",
    "validate": "validate",
}
_STATUS_TEXT = {200: "200 OK", 201: "201 Created"}
_FAULT_ISSUE_CODES = {429: "throttled", 503: "transient", 504: "timeout"}


# --- internal plumbing -------------------------------------------------------------------------------


class _Refusal(Exception):
    """An error answer: HTTP status, IssueType code, text, register-rule code, extra headers."""

    def __init__(
        self,
        status: int,
        code: str,
        text: str,
        rule: Rule,
        *,
        headers: Mapping[str, str] | None = None,
        expression: str | None = None,
        outcome: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(text)
        self.status = status
        self.code = code
        self.text = text
        self.rule = rule
        self.headers = dict(headers or {})
        self.expression = expression
        self.outcome = outcome


@dataclass
class _Exchange:
    """What the API learns while handling one request (becomes the response annotations)."""

    request: HttpRequest
    operation: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    subject: str | None = None
    validation: list[dict[str, Any]] = field(default_factory=list)
    fault: str | None = None
    rule: str | None = None
    committed: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    pretty: bool = False

    def annotations(self) -> dict[str, Any]:
        data = {
            "operation": self.operation,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "subject": self.subject,
            "validation": self.validation,
            "fault": self.fault,
        }
        if self.rule is not None:
            data["rule"] = self.rule
        if self.committed is not None:
            data["committed"] = self.committed
        data.update(self.extra)
        return data


@dataclass(frozen=True)
class _Route:
    """A matched path: the allowed methods and their operations, and the path's ids."""

    operations: Mapping[str, str]
    resource_type: str | None
    id: str | None = None
    version: str | None = None


@dataclass
class _Search:
    """A parsed search: criteria for the store, paging, and the parameters to echo in links."""

    patient: str | None = None
    identifier: tuple[str | None, str] | None = None
    status: list[str] | None = None
    dates: list[tuple[str, str]] = field(default_factory=list)
    sort: str | None = None
    count: int = 20
    offset: int = 0
    echoed: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


# --- the API -----------------------------------------------------------------------------------------


class FhirApi:
    """The Vaccicard FHIR API core: answers ``HttpRequest`` objects for paths under ``config.fhir_base``."""

    def __init__(
        self,
        *,
        validator: Validator,
        store: ImmunizationStore,
        iam: IamConnect,
        testdata: TestData,
        faults: FaultPlan,
        config: SimulatorConfig,
        base_url: str,
    ) -> None:
        """Wire the API; ``base_url`` (``http://127.0.0.1:8080``) makes absolute URLs in links and headers."""
        self.validator = validator
        self.store = store
        self.iam = iam
        self.testdata = testdata
        self.faults = faults
        self.config = config
        self.base_url = base_url.rstrip("/")
        self.fhir_url = self.base_url + config.fhir_base
        self.audience = config.audience or iam.vaccicard_audience
        self.recording_disciplines = config.recording_disciplines or testdata.recording_disciplines
        self._tz = ZoneInfo(config.timezone)
        validator.profile_plan(config.profile)  # an unknown profile is a configuration error, now
        self._started = config.now()
        self._capabilities = self.capability_statement()

    # -- entry point --------------------------------------------------------------------------------

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one request (never raises except ``DropConnection``; may sleep for delay faults)."""
        exchange = _Exchange(request)
        try:
            response = self._handle(exchange)
        except DropConnection as drop:
            drop.annotations = {**exchange.annotations(), **drop.annotations}
            raise
        except Exception:
            _log.exception("internal error answering %s %s", request.method, exchange.operation)
            response = self._refusal_response(
                exchange,
                _Refusal(
                    500,
                    "exception",
                    "internal error in the simulator; its log has the details",
                    Rule.INTERNAL_ERROR,
                ),
            )
        response.annotations = exchange.annotations()
        return response

    def _handle(self, exchange: _Exchange) -> HttpResponse:
        request = exchange.request
        method = request.method.upper()
        exchange.pretty = _first(request.query, "_pretty") == "true"
        try:
            route = self._route(request.path)
            exchange.resource_type = route.resource_type
            exchange.resource_id = route.id
            operation = route.operations.get(method)
            if operation is None:
                instance = "PUT" in route.operations
                exchange.operation = "delete" if method == "DELETE" and instance else None
                raise self._method_not_allowed(method, route)
            exchange.operation = operation
        except _Refusal as refusal:
            return self._refusal_response(exchange, refusal)
        fault = self.faults.take(_FAULT_OPERATION[operation])
        if fault is not None:
            exchange.fault = fault.kind
            early = self._apply_fault(exchange, fault)
            if early is not None:
                return early
        try:
            response = self._process(exchange, method, route)
        except _Refusal as refusal:
            response = self._refusal_response(exchange, refusal)
        except (StoreError, sqlite3.Error) as error:
            _log.warning("register store unavailable: %s", type(error).__name__)
            response = self._refusal_response(
                exchange,
                _Refusal(
                    503,
                    "transient",
                    "the register is temporarily unavailable; retry later",
                    Rule.REGISTER_UNAVAILABLE,
                    headers={"Retry-After": "1"},
                ),
            )
        if fault is not None and fault.kind == "commit_then_drop":
            committed = exchange.committed is True
            exchange.committed = committed
            exchange.extra["status"] = response.status
            raise DropConnection(
                "fault: commit_then_drop (" + ("committed" if committed else "nothing committed") + ")",
                exchange.annotations(),
            )
        return response

    def _apply_fault(self, exchange: _Exchange, fault: Fault) -> HttpResponse | None:
        """Apply a fault taken before processing: an answer, a wait, or a dropped connection."""
        if fault.kind == "status":
            status = int(fault.status or 503)
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            text = fault.message or f"simulated fault: the register answers {status}"
            return self._refusal_response(
                exchange,
                _Refusal(
                    status,
                    _FAULT_ISSUE_CODES.get(status, "exception"),
                    text,
                    Rule.FAULT_INJECTED,
                    headers=headers,
                ),
            )
        if fault.kind == "delay":
            self.config.sleep(float(fault.seconds or 0))
            return None
        if fault.kind == "reset":
            raise DropConnection("fault: reset before processing", exchange.annotations())
        if fault.kind == "timeout":
            self.config.sleep(float(fault.seconds or 0))
            raise DropConnection("fault: timeout, dropped without processing", exchange.annotations())
        return None  # commit_then_drop acts after processing

    def _process(self, exchange: _Exchange, method: str, route: _Route) -> HttpResponse:
        request = exchange.request
        operation = exchange.operation
        self._negotiate(request)
        if len(request.body) > self.config.max_body_bytes:
            raise _Refusal(
                413,
                "too-costly",
                f"the request body has {len(request.body)} bytes; the limit is {self.config.max_body_bytes}",
                Rule.PAYLOAD_TOO_LARGE,
            )
        form: list[tuple[str, str]] = []
        if method in ("POST", "PUT"):
            form = self._check_content_type(request, form=operation == "search")
        if operation == "capabilities":
            return self._json(exchange, 200, self._capabilities)
        principal = self._authenticate(exchange)
        if operation == "validate":
            return self._validate(exchange, principal)
        write = operation in _WRITES
        self._require_professional(principal, write=write)
        assert route.resource_type == "Immunization"
        if operation == "create":
            return self._create(exchange, principal)
        if operation == "search":
            return self._search(exchange, principal, form)
        assert route.id is not None
        if operation == "read":
            return self._read(exchange, principal, route.id)
        if operation == "vread":
            return self._vread(exchange, principal, route.id, route.version or "")
        if operation == "history":
            return self._history(exchange, principal, route.id)
        if operation == "update":
            return self._update(exchange, principal, route.id)
        if operation == "delete":
            return self._delete(exchange, principal, route.id)
        raise AssertionError(f"unrouted operation {operation}")  # pragma: no cover

    # -- routing ------------------------------------------------------------------------------------

    def _route(self, path: str) -> _Route:
        """Match the path under the FHIR base; 400 for unsafe segments or ids, 404 for unknown paths."""
        base = self.config.fhir_base
        if path != base and not path.startswith(base + "/"):
            raise _Refusal(404, "not-found", "no FHIR endpoint at this path", Rule.UNKNOWN_ROUTE)
        rest = path[len(base) + 1 :]
        if rest.endswith("/"):
            rest = rest[:-1]
        segments = rest.split("/") if rest else []
        for segment in segments:
            if segment in (".", "..") or not all(
                c.isascii() and c.isprintable() and c not in _UNSAFE for c in segment
            ):
                raise _Refusal(400, "invalid", "the path has an invalid segment", Rule.INVALID_PATH)
        if not segments or "" in segments:
            raise _Refusal(404, "not-found", "no FHIR endpoint at this path", Rule.UNKNOWN_ROUTE)
        head = segments[0]
        if head == "metadata" and len(segments) == 1:
            return _Route({"GET": "capabilities"}, "CapabilityStatement")
        if head != "Immunization":
            if head[:1].isupper() and head.isalpha():
                raise _Refusal(
                    404,
                    "not-supported",
                    f"resource type {_shown(head)} is not supported; this register serves Immunization only",
                    Rule.UNKNOWN_ROUTE,
                )
            raise _Refusal(404, "not-found", "no FHIR endpoint at this path", Rule.UNKNOWN_ROUTE)
        if len(segments) == 1:
            return _Route({"GET": "search", "POST": "create"}, "Immunization")
        second = segments[1]
        if len(segments) == 2 and second == "_search":
            return _Route({"POST": "search"}, "Immunization")
        if len(segments) == 2 and second == "$validate":
            return _Route({"POST": "validate"}, "Immunization")
        if second.startswith(("$", "_")):
            raise _Refusal(
                404, "not-supported", f"{_shown(second)} is not supported on Immunization", Rule.UNKNOWN_ROUTE
            )
        _check_id(second, "id")
        if len(segments) == 2:
            operations = {"GET": "read", "PUT": "update"}
            if self.config.delete_policy == "allow":
                operations["DELETE"] = "delete"
            return _Route(operations, "Immunization", second)
        if segments[2] == "_history" and len(segments) == 3:
            return _Route({"GET": "history"}, "Immunization", second)
        if segments[2] == "_history" and len(segments) == 4:
            _check_id(segments[3], "version id")
            return _Route({"GET": "vread"}, "Immunization", second, segments[3])
        raise _Refusal(404, "not-found", "no FHIR endpoint at this path", Rule.UNKNOWN_ROUTE)

    def _method_not_allowed(self, method: str, route: _Route) -> _Refusal:
        allowed = ", ".join(route.operations)
        if method == "DELETE" and "PUT" in route.operations:
            return _Refusal(
                405,
                "not-supported",
                "records are never deleted from the register: cancel one with an update (PUT) that sets "
                "status to entered-in-error",
                Rule.DELETE_FORBIDDEN,
                headers={"Allow": allowed},
            )
        return _Refusal(
            405,
            "not-supported",
            f"{_shown(method)} is not allowed here; allowed: {allowed}",
            Rule.METHOD_NOT_ALLOWED,
            headers={"Allow": allowed},
        )

    # -- protocol checks ----------------------------------------------------------------------------

    def _negotiate(self, request: HttpRequest) -> None:
        """406 unless the client accepts FHIR JSON (``_format`` wins over ``Accept``)."""
        wanted = _first(request.query, "_format")
        if wanted is not None:
            if wanted.strip().lower() not in _FORMATS:
                raise _Refusal(
                    406,
                    "not-supported",
                    "this register answers JSON only (_format=json or application/fhir+json)",
                    Rule.NOT_ACCEPTABLE,
                )
            return
        accept = request.headers.get("accept")
        if accept is not None and accept.strip() and not _accepts_json(accept):
            raise _Refusal(
                406,
                "not-supported",
                "this register answers application/fhir+json (FHIR R4) only",
                Rule.NOT_ACCEPTABLE,
            )

    def _check_content_type(self, request: HttpRequest, *, form: bool) -> list[tuple[str, str]]:
        """415 unless the body is FHIR JSON (or a form for ``_search``); return a search form's fields."""
        raw = request.headers.get("content-type", "")
        media, params = _media_type(raw)
        if form:
            if not request.body:
                return []
            if media != _FORM:
                raise _Refusal(
                    415,
                    "not-supported",
                    f"_search takes {_FORM} parameters, not {_shown(media) if media else 'an untyped body'}",
                    Rule.UNSUPPORTED_MEDIA_TYPE,
                )
            try:
                return parse_qsl(request.body.decode("utf-8"), keep_blank_values=True)
            except (UnicodeDecodeError, ValueError):
                raise _Refusal(400, "invalid", "the form is not valid UTF-8", Rule.INVALID_SEARCH) from None
        if media not in _JSON_TYPES:
            raise _Refusal(
                415,
                "not-supported",
                f"send the resource as application/fhir+json, not {_shown(media) if media else 'an untyped body'}",
                Rule.UNSUPPORTED_MEDIA_TYPE,
            )
        charset = params.get("charset", "utf-8").lower()
        version = params.get("fhirversion")
        if charset not in ("utf-8", "utf8") or (version is not None and not version.startswith("4.0")):
            raise _Refusal(
                415,
                "not-supported",
                "send UTF-8 FHIR R4 JSON (charset=utf-8, fhirVersion=4.0)",
                Rule.UNSUPPORTED_MEDIA_TYPE,
            )
        return []

    def _authenticate(self, exchange: _Exchange) -> Principal:
        """The principal of the bearer token; 401 with ``WWW-Authenticate`` for every refusal reason."""
        header = exchange.request.headers.get("authorization")
        try:
            principal = self.iam.verify_bearer(header, self.audience)
        except InvalidAccessTokenError as error:
            rule = _TOKEN_RULES.get(error.reason, Rule.TOKEN_INVALID_CLAIMS)
            code = "expired" if error.reason is TokenRejection.EXPIRED else "login"
            raise _Refusal(
                401,
                code,
                f"access token refused: {error.detail}",
                rule,
                headers={"WWW-Authenticate": error.www_authenticate(self.config.realm)},
            ) from None
        exchange.subject = _subject(principal)
        return principal

    def _require_professional(self, principal: Principal, *, write: bool) -> None:
        """403 unless a professional with a recognised discipline (a recording one for writes)."""
        if principal.kind != "professional" or not principal.ssin:
            raise _Refusal(
                403,
                "forbidden",
                "vaccination records are read and written by healthcare professionals (realm "
                f"{HEALTHCARE}), not with an organisation token",
                Rule.PROFESSIONAL_REQUIRED,
            )
        if not any(d.recognised for d in principal.disciplines):
            raise _Refusal(
                403,
                "forbidden",
                "the professional has no recognised discipline (userProfile ... recognised = false)",
                Rule.DISCIPLINE_NOT_RECOGNISED,
            )
        if write and not self._may_record(principal):
            names = ", ".join(d.name for d in principal.disciplines if d.recognised) or "none"
            raise _Refusal(
                403,
                "forbidden",
                f"discipline {names} may not record vaccinations; allowed: {', '.join(self.recording_disciplines)}",
                Rule.DISCIPLINE_MAY_NOT_RECORD,
            )

    def _may_record(self, principal: Principal) -> bool:
        return any(d.recognised and d.name in self.recording_disciplines for d in principal.disciplines)

    # -- register rules -----------------------------------------------------------------------------

    def _check_patient(self, principal: Principal, ssin: str | None, *, writing: bool = False) -> None:
        """403 unless the patient exists, consented and has a therapeutic relationship with the principal.

        A record to write without an SSIN patient gets 422; a stored one (imported) is simply not visible.
        """
        refusal = self._patient_refusal(principal, ssin, writing=writing)
        if refusal is not None:
            raise refusal

    def _patient_refusal(self, principal: Principal, ssin: str | None, *, writing: bool) -> _Refusal | None:
        if ssin is None and writing:
            return _Refusal(
                422,
                "business-rule",
                f"the patient must be identified by SSIN: patient.identifier with system {SSIN}",
                Rule.PATIENT_IDENTIFIER_REQUIRED,
                expression="Immunization.patient.identifier",
            )
        patient = self.testdata.patient(ssin) if ssin is not None else None
        if patient is None:
            return _Refusal(
                403,
                "forbidden",
                "the patient is not known to the register (not a test patient of the simulator)",
                Rule.PATIENT_UNKNOWN,
            )
        if not patient.consent:
            return _Refusal(
                403,
                "forbidden",
                "the patient has not given consent to share health data; the register refuses access",
                Rule.PATIENT_NO_CONSENT,
            )
        if principal.ssin not in patient.relationships:
            return _Refusal(
                403,
                "forbidden",
                "no therapeutic relationship between the professional and the patient",
                Rule.NO_THERAPEUTIC_RELATIONSHIP,
            )
        return None

    def _visible(self, principal: Principal, stored: StoredResource) -> bool:
        return self._patient_refusal(principal, _patient_ssin(stored.resource), writing=False) is None

    def _check_recorder(self, resource: dict[str, Any], principal: Principal) -> None:
        """403 unless the be-ext-recorder identifies the authenticated professional (NIHDI or SSIN)."""
        mine = _identities(principal)
        found = _recorder_identifiers(resource)
        if not any(pair in mine for pair in found):
            raise _Refusal(
                403,
                "forbidden",
                "the recorder extension (be-ext-recorder) must identify the authenticated professional "
                f"by NIHDI number ({NIHDI_PROFESSIONAL}) or SSIN",
                Rule.RECORDER_MISMATCH,
                expression="Immunization.extension('" + RECORDER_EXTENSION + "')",
            )

    def _check_dates(self, resource: dict[str, Any]) -> None:
        """422 when ``recorded`` or ``occurrenceDateTime`` starts beyond now plus the tolerance."""
        limit = self.config.now() + timedelta(seconds=self.config.future_tolerance_seconds)
        for name, rule in (
            ("recorded", Rule.RECORDED_IN_FUTURE),
            ("occurrenceDateTime", Rule.OCCURRENCE_IN_FUTURE),
        ):
            value = resource.get(name)
            if not isinstance(value, str):
                continue
            try:
                start = datetime.fromisoformat(date_range(value, self._tz)[0].replace("Z", "+00:00"))
            except ValueError:
                continue  # the validator reports unreadable dates
            if start > limit:
                raise _Refusal(
                    422,
                    "business-rule",
                    f"Immunization.{name} is in the future; the register records what happened",
                    rule,
                    expression=f"Immunization.{name}",
                )

    def _business_key(self, resource: dict[str, Any]) -> tuple[str, str]:
        """The record's business identifier (system, value) per the configured rule; 422 if absent."""
        wanted = self.config.business_identifier_system
        identifiers = resource.get("identifier")
        for item in identifiers if isinstance(identifiers, list) else []:
            if not isinstance(item, dict):
                continue
            system, value = item.get("system"), item.get("value")
            usable = isinstance(system, str) and system and isinstance(value, str) and value
            if usable and (wanted is None or system == wanted):
                return system, value
        where = f" in system {wanted}" if wanted else " with system and value"
        raise _Refusal(
            422,
            "business-rule",
            f"the record needs a business identifier{where}: it follows the record through its life "
            "and makes retries idempotent",
            Rule.BUSINESS_IDENTIFIER_MISSING,
            expression="Immunization.identifier",
        )

    def _validate_resource(self, exchange: _Exchange, resource: dict[str, Any]) -> Outcome:
        """Validate against the configured profile; 422 with the validator's OperationOutcome on errors."""
        outcome = self.validator.validate(resource, self.config.profile)
        exchange.validation = [asdict(issue) for issue in outcome.issues]
        if not outcome.ok:
            raise _Refusal(
                422,
                "processing",
                "the resource does not conform to the profile",
                Rule.PROFILE_INVALID,
                outcome=outcome.to_operation_outcome(),
            )
        return outcome

    # -- bodies -------------------------------------------------------------------------------------

    def _parse_json(self, request: HttpRequest) -> dict[str, Any]:
        if not request.body.strip():
            raise _Refusal(400, "required", "the request has no body", Rule.INVALID_JSON)
        try:
            data = orjson.loads(request.body)
        except orjson.JSONDecodeError as error:
            issue = parse_error_issue(error, request.body)
            deep = any(word in error.msg.lower() for word in ("recursion", "depth"))
            rule = Rule.JSON_TOO_DEEP if deep else Rule.INVALID_JSON
            raise _Refusal(400, "too-costly" if deep else "structure", issue.message, rule) from None
        problem = _json_problem(data, self.config.max_json_depth)
        if problem is Rule.JSON_TOO_DEEP:
            raise _Refusal(
                400,
                "too-costly",
                f"the JSON is nested more than {self.config.max_json_depth} levels deep",
                Rule.JSON_TOO_DEEP,
            )
        if problem is not None:
            raise _Refusal(
                400,
                "structure",
                "FHIR JSON has no null properties: leave the property out",
                Rule.INVALID_JSON,
            )
        if not isinstance(data, dict):
            raise _Refusal(
                400, "structure", "the body is not a JSON object (a FHIR resource)", Rule.INVALID_JSON
            )
        return data

    def _parse_immunization(self, request: HttpRequest) -> dict[str, Any]:
        data = self._parse_json(request)
        rtype = data.get("resourceType")
        if rtype != "Immunization":
            shown = rtype if isinstance(rtype, str) and rtype.isalnum() and len(rtype) < 64 else None
            raise _Refusal(
                400,
                "invalid",
                f"expected an Immunization, found {shown or 'no valid resourceType'}",
                Rule.NOT_AN_IMMUNIZATION,
                expression="resourceType",
            )
        return data

    # -- interactions -------------------------------------------------------------------------------

    def _create(self, exchange: _Exchange, principal: Principal) -> HttpResponse:
        request = exchange.request
        resource = self._parse_immunization(request)
        condition_header = request.headers.get("if-none-exist")
        condition = _if_none_exist(condition_header) if condition_header is not None else None
        outcome = self._validate_resource(exchange, resource)
        self._check_patient(principal, _patient_ssin(resource), writing=True)
        self._check_recorder(resource, principal)
        key = self._business_key(resource)
        if condition is not None and condition != key:
            raise _Refusal(
                400,
                "invalid",
                "If-None-Exist must name the record's business identifier (its first identifier, "
                "identifier=system|value)",
                Rule.CONDITIONAL_CREATE_MISMATCH,
            )
        self._check_dates(resource)
        if condition is not None:
            stored, created = self.store.create_if_absent(resource, key, recorder=exchange.subject)
            if not created and not self._visible(principal, stored):
                raise self._duplicate(key, None)
        else:
            try:
                stored = self.store.create(resource, business_key=key, recorder=exchange.subject)
            except DuplicateIdentifier as duplicate:
                visible = self._visible(principal, duplicate.existing)
                raise self._duplicate(key, duplicate.existing.id if visible else None) from None
            created = True
        exchange.resource_id = stored.id
        exchange.committed = created
        exchange.extra["conditional"] = None if condition is None else ("created" if created else "existing")
        return self._resource_response(
            exchange,
            stored,
            201 if created else 200,
            outcome=outcome,
            action="created" if created else "exists",
        )

    def _duplicate(self, key: tuple[str, str], existing_id: str | None) -> _Refusal:
        where = f" (Immunization/{existing_id})" if existing_id else ""
        return _Refusal(
            409,
            "duplicate",
            f"a record with identifier {key[0]}|{key[1]} already exists{where}: update that record, or use "
            "conditional create (If-None-Exist) to make retries safe",
            Rule.DUPLICATE_IDENTIFIER,
        )

    def _current(self, principal: Principal, id: str) -> StoredResource:
        stored = self.store.read(id)
        if stored is None:
            raise _Refusal(404, "not-found", f"Immunization/{id} does not exist", Rule.NOT_FOUND)
        self._check_patient(principal, _patient_ssin(stored.resource))
        return stored

    def _read(self, exchange: _Exchange, principal: Principal, id: str) -> HttpResponse:
        stored = self._current(principal, id)
        if _etag_matches(exchange.request.headers.get("if-none-match"), stored.version):
            return HttpResponse(304, self._version_headers(stored))
        return self._resource_response(exchange, stored, 200, location=False)

    def _vread(self, exchange: _Exchange, principal: Principal, id: str, version: str) -> HttpResponse:
        if not version.isdigit() or len(version) > 9 or int(version) < 1:
            raise _Refusal(404, "not-found", f"Immunization/{id} has no version {version}", Rule.NOT_FOUND)
        stored = self.store.vread(id, int(version))
        if stored is None:
            if self.store.read(id) is None:
                raise _Refusal(404, "not-found", f"Immunization/{id} does not exist", Rule.NOT_FOUND)
            raise _Refusal(404, "not-found", f"Immunization/{id} has no version {version}", Rule.NOT_FOUND)
        self._check_patient(principal, _patient_ssin(stored.resource))
        return self._resource_response(exchange, stored, 200, location=False)

    def _history(self, exchange: _Exchange, principal: Principal, id: str) -> HttpResponse:
        if not self._only_control_params(exchange):
            raise _Refusal(
                400, "not-supported", "history takes no parameters here", Rule.UNKNOWN_SEARCH_PARAMETER
            )
        current = self._current(principal, id)
        versions = self.store.history(id)
        entries = []
        for stored in versions:
            first = stored.version == 1
            entries.append(
                {
                    "fullUrl": f"{self.fhir_url}/Immunization/{stored.id}",
                    "resource": stored.resource,
                    "request": {
                        "method": "POST" if first else "PUT",
                        "url": "Immunization" if first else f"Immunization/{stored.id}",
                    },
                    "response": {
                        "status": "201 Created" if first else "200 OK",
                        "etag": stored.etag,
                        "lastModified": stored.resource.get("meta", {}).get("lastUpdated"),
                    },
                }
            )
        bundle = self._bundle(
            "history",
            len(entries),
            entries,
            [("self", f"{self.fhir_url}/Immunization/{current.id}/_history")],
        )
        return self._json(exchange, 200, bundle)

    def _update(self, exchange: _Exchange, principal: Principal, id: str) -> HttpResponse:
        request = exchange.request
        resource = self._parse_immunization(request)
        body_id = resource.get("id")
        if body_id != id:
            raise _Refusal(
                400,
                "invalid",
                "the resource id must be present and equal the id in the URL",
                Rule.ID_MISMATCH,
                expression="Immunization.id",
            )
        if_match = self._if_match(request)
        current = self.store.read(id)
        if current is None:
            raise _Refusal(
                404,
                "not-found",
                f"Immunization/{id} does not exist; create records with POST (the server assigns ids)",
                Rule.NOT_FOUND,
            )
        old_ssin = _patient_ssin(current.resource)
        self._check_patient(principal, old_ssin)
        outcome = self._validate_resource(exchange, resource)
        new_ssin = _patient_ssin(resource)
        if new_ssin != old_ssin:
            raise _Refusal(
                422,
                "business-rule",
                "a record's patient cannot change: cancel it (status entered-in-error) and record it for "
                "the right patient",
                Rule.PATIENT_CHANGED,
                expression="Immunization.patient",
            )
        self._check_recorder(resource, principal)
        self._check_transition(current.status, resource.get("status"))
        self._check_dates(resource)
        stored = self._store_update(id, resource, if_match, exchange.subject)
        exchange.committed = True
        return self._resource_response(exchange, stored, 200, outcome=outcome, action="updated")

    def _check_transition(self, old: str | None, new: Any) -> None:
        if not self.config.may_change_status(old, new if isinstance(new, str) else None):
            allowed = sorted({to for frm, to in self.config.status_transitions if frm == old})
            raise _Refusal(
                422,
                "business-rule",
                f"status cannot change from {old} to {new}; allowed: "
                f"{', '.join([str(old), *allowed])}. To replace a record, cancel it (entered-in-error) "
                "and record a new one",
                Rule.STATUS_TRANSITION,
                expression="Immunization.status",
            )

    def _store_update(
        self, id: str, resource: dict[str, Any], if_match: int | None, recorder: str | None
    ) -> StoredResource:
        try:
            return self.store.update(id, resource, if_match=if_match, recorder=recorder)
        except VersionConflict as conflict:
            raise _Refusal(
                412,
                "conflict",
                f"Immunization/{id} is at version {conflict.current_version}, not {conflict.expected}: "
                "read it again and retry",
                Rule.VERSION_CONFLICT,
            ) from None
        except IdentifierChanged:
            raise _Refusal(
                422,
                "business-rule",
                "an update must keep the record's business identifier (system and value) unchanged",
                Rule.IDENTIFIER_CHANGED,
                expression="Immunization.identifier",
            ) from None
        except NotFound:
            raise _Refusal(404, "not-found", f"Immunization/{id} does not exist", Rule.NOT_FOUND) from None

    def _if_match(self, request: HttpRequest) -> int | None:
        header = request.headers.get("if-match")
        if header is None or not header.strip():
            if self.config.require_if_match:
                raise _Refusal(
                    428,
                    "required",
                    'send If-Match: W/"<versionId>" with the version you read',
                    Rule.IF_MATCH_REQUIRED,
                )
            return None
        version = _etag_version(header)
        if version is None:
            raise _Refusal(400, "invalid", 'If-Match must be W/"<versionId>"', Rule.INVALID_IF_MATCH)
        return version

    def _delete(self, exchange: _Exchange, principal: Principal, id: str) -> HttpResponse:
        if_match = self._if_match(exchange.request)
        current = self._current(principal, id)
        if current.status != "entered-in-error":
            self._check_transition(current.status, "entered-in-error")
            cancelled = dict(current.resource)
            cancelled["status"] = "entered-in-error"
            current = self._store_update(id, cancelled, if_match, exchange.subject)
            exchange.committed = True
        elif if_match is not None and if_match != current.version:
            raise _Refusal(
                412,
                "conflict",
                f"Immunization/{id} is at version {current.version}, not {if_match}",
                Rule.VERSION_CONFLICT,
            )
        return HttpResponse(204, self._version_headers(current))

    def _validate(self, exchange: _Exchange, principal: Principal) -> HttpResponse:
        data = self._parse_json(exchange.request)
        profile = _first(exchange.request.query, "profile")
        resource: Any = data
        if data.get("resourceType") == "Parameters":
            resource, named_profile = _validate_parameters(data)
            profile = profile or named_profile
        profile = profile or self.config.profile
        try:
            outcome = self.validator.validate(resource, profile)
        except ConfigurationError:
            raise _Refusal(
                400, "not-supported", "the profile named is not known to this register", Rule.UNKNOWN_PROFILE
            ) from None
        exchange.validation = [asdict(issue) for issue in outcome.issues]
        return self._json(exchange, 200, outcome.to_operation_outcome())

    # -- search -------------------------------------------------------------------------------------

    def _search(self, exchange: _Exchange, principal: Principal, form: list[tuple[str, str]]) -> HttpResponse:
        request = exchange.request
        pairs = [(name, value) for name, values in request.query.items() for value in values] + form
        lenient = self.config.search_handling == "lenient" or _prefer(request, "handling") == "lenient"
        search = self._parse_search(pairs, lenient=lenient)
        patient = None
        if search.patient is not None:
            self._check_patient(principal, search.patient)
            patient = (SSIN, search.patient)
        criteria = {
            "patient_identifier": patient,
            "identifier": search.identifier,
            "status": search.status,
            "date_ranges": search.dates,
            "sort": search.sort,
        }
        try:
            if patient is not None:  # everything of a patient one may see is visible
                page, total = self.store.search(**criteria, count=search.count, offset=search.offset)
            else:
                matches, _ = self.store.search(**criteria)
                visible = [stored for stored in matches if self._visible(principal, stored)]
                total = len(visible)
                page = visible[search.offset : search.offset + search.count] if search.count else []
        except InvalidSearch as error:
            raise _Refusal(400, "invalid", error.message, Rule.INVALID_SEARCH) from None
        entries = [
            {
                "fullUrl": f"{self.fhir_url}/Immunization/{stored.id}",
                "resource": stored.resource,
                "search": {"mode": "match"},
            }
            for stored in page
        ]
        bundle = self._bundle("searchset", total, entries, self._search_links(search, total))
        if search.ignored:
            exchange.extra["ignored_parameters"] = search.ignored
        return self._json(exchange, 200, bundle)

    def _parse_search(self, pairs: list[tuple[str, str]], *, lenient: bool) -> _Search:
        search = _Search(count=self.config.page_size)
        statuses: set[str] | None = None
        for name, value in pairs:
            if name in _ALWAYS_ALLOWED_PARAMS:
                continue
            if name not in _SEARCH_PARAMS:
                if lenient:
                    search.ignored.append(name)
                    continue
                raise _Refusal(
                    400,
                    "not-supported",
                    f"unknown or unsupported search parameter {_shown(name)}; supported: "
                    f"{', '.join(_SEARCH_PARAMS)} (send Prefer: handling=lenient to ignore unknown ones)",
                    Rule.UNKNOWN_SEARCH_PARAMETER,
                )
            if value == "":
                continue  # FHIR: an empty parameter value is ignored
            if name in _PATIENT_PARAMS:
                ssin = self._patient_parameter(value)
                if search.patient is not None and search.patient != ssin:
                    raise _invalid_search("only one patient can be searched at a time")
                search.patient = ssin
                search.echoed.append(("patient.identifier", f"{SSIN}|{ssin}"))
            elif name == "identifier":
                token = _identifier_parameter(value)
                if search.identifier is not None and search.identifier != token:
                    raise _invalid_search("only one identifier can be searched at a time")
                search.identifier = token
                search.echoed.append((name, value))
            elif name == "status":
                codes = set()
                for item in value.split(","):
                    code = item.removeprefix(EVENT_STATUS + "|")
                    if code not in IMMUNIZATION_STATUSES:
                        raise _invalid_search(
                            f"status {_shown(item)} is not one of {', '.join(IMMUNIZATION_STATUSES)}"
                        )
                    codes.add(code)
                statuses = codes if statuses is None else statuses & codes
                search.echoed.append((name, value))
            elif name == "date":
                search.dates.append(self._date_parameter(value))
                search.echoed.append((name, value))
            elif name == "_count":
                search.count = min(_non_negative(name, value), self.config.max_page_size)
            elif name == "_offset":
                search.offset = _non_negative(name, value)
            elif name == "_sort":
                if value not in ("date", "-date"):
                    raise _invalid_search("_sort supports date and -date only")
                search.sort = value
                search.echoed.append((name, value))
        if statuses is not None:
            search.status = sorted(statuses)
        return search

    def _patient_parameter(self, value: str) -> str:
        system, bar, ssin = value.rpartition("|")
        if not bar or system != SSIN:
            raise _invalid_search(f"patient.identifier must be {SSIN}|<SSIN>")
        if check_ssin(ssin) is not None:
            raise _invalid_search("patient.identifier does not hold a valid SSIN or BIS number")
        return ssin

    def _date_parameter(self, value: str) -> tuple[str, str]:
        prefix, text = ("eq", value)
        if value[:2] in DATE_PREFIXES:
            prefix, text = value[:2], value[2:]
        if "," in text:
            raise _invalid_search("date takes one value per parameter (repeat date= for a range)")
        try:
            date_range(text, self._tz)
        except ValueError:
            raise _invalid_search(
                f"date={_shown(value)} is not a FHIR date with an optional prefix"
            ) from None
        return prefix, text

    def _search_links(self, search: _Search, total: int) -> list[tuple[str, str]]:
        def url(offset: int) -> str:
            query = [*search.echoed, ("_count", str(search.count)), ("_offset", str(offset))]
            return f"{self.fhir_url}/Immunization?{urlencode(query)}"

        links = [("self", url(search.offset)), ("first", url(0))]
        if search.count and search.offset > 0:
            links.append(("previous", url(max(0, search.offset - search.count))))
        if search.count and search.offset + search.count < total:
            links.append(("next", url(search.offset + search.count)))
        return links

    def _only_control_params(self, exchange: _Exchange) -> bool:
        return all(name in _ALWAYS_ALLOWED_PARAMS for name in exchange.request.query)

    # -- responses ----------------------------------------------------------------------------------

    def _bundle(
        self, kind: str, total: int, entries: list[dict[str, Any]], links: Iterable[tuple[str, str]]
    ) -> dict[str, Any]:
        return {
            "resourceType": "Bundle",
            "id": uuid.uuid4().hex,
            "meta": {"lastUpdated": _instant(self.config.now())},
            "type": kind,
            "total": total,
            "link": [{"relation": relation, "url": url} for relation, url in links],
            "entry": entries,
        }

    def _version_headers(self, stored: StoredResource) -> dict[str, str]:
        return {"ETag": stored.etag, "Last-Modified": format_datetime(stored.last_updated, usegmt=True)}

    def _resource_response(
        self,
        exchange: _Exchange,
        stored: StoredResource,
        status: int,
        *,
        location: bool = True,
        outcome: Outcome | None = None,
        action: str = "",
    ) -> HttpResponse:
        """A resource answer with ETag, Last-Modified, Location (writes) and the Prefer'd body."""
        headers = self._version_headers(stored)
        if location:
            headers["Location"] = f"{self.fhir_url}/Immunization/{stored.id}/_history/{stored.version}"
        if not location:  # reads always return the resource
            return self._json(exchange, status, stored.resource, headers)
        preference = _prefer(exchange.request, "return")
        if preference == "minimal":
            headers["Preference-Applied"] = "return=minimal"
            return HttpResponse(status, headers)
        if preference is not None and preference.lower() == "operationoutcome":
            headers["Preference-Applied"] = "return=OperationOutcome"
            text = {
                "created": "created",
                "exists": "already exists (conditional create); nothing was created",
                "updated": "updated",
            }.get(action, action)
            issues = [
                {
                    "severity": "information",
                    "code": "informational",
                    "details": {"text": f"Immunization/{stored.id} version {stored.version} {text}"},
                }
            ]
            if outcome is not None:
                issues += [issue.to_fhir() for issue in outcome.sorted_issues()]
            return self._json(
                exchange, status, {"resourceType": "OperationOutcome", "issue": issues}, headers
            )
        if preference == "representation":
            headers["Preference-Applied"] = "return=representation"
        return self._json(exchange, status, stored.resource, headers)

    def _json(
        self, exchange: _Exchange, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> HttpResponse:
        data = orjson.dumps(body, option=orjson.OPT_INDENT_2 if exchange.pretty else 0)
        all_headers = {"Content-Type": FHIR_CONTENT_TYPE}
        all_headers.update(headers or {})
        return HttpResponse(status, all_headers, data)

    def _refusal_response(self, exchange: _Exchange, refusal: _Refusal) -> HttpResponse:
        """An OperationOutcome whose first issue carries the refusal's code, text and rule coding."""
        exchange.rule = refusal.rule.value
        issue: dict[str, Any] = {
            "severity": "error",
            "code": refusal.code,
            "details": {
                "coding": [{"system": RULES_SYSTEM, "code": refusal.rule.value}],
                "text": refusal.text,
            },
        }
        if refusal.expression:
            issue["expression"] = [refusal.expression]
        issues = [issue]
        if refusal.outcome is not None:
            issues += refusal.outcome.get("issue", [])
        body = {"resourceType": "OperationOutcome", "issue": issues}
        return self._json(exchange, refusal.status, body, refusal.headers)

    # -- CapabilityStatement ------------------------------------------------------------------------

    def capability_statement(self) -> dict[str, Any]:
        """The CapabilityStatement ``GET /metadata`` answers: exactly what this API implements."""
        interactions = ["read", "vread", "update", "history-instance", "create", "search-type"]
        if self.config.delete_policy == "allow":
            interactions.append("delete")
        ssin_doc = f"patient.identifier (also patient:identifier) = {SSIN}|<SSIN>"
        return {
            "resourceType": "CapabilityStatement",
            "id": "vaccicard-simulator",
            "url": f"{self.fhir_url}/metadata",
            "version": __version__,
            "name": "VaccicardSimulator",
            "title": "Vaccicard register simulator (vaccicard-conformance)",
            "status": "active",
            "experimental": True,
            "date": _instant(self._started),
            "publisher": "vaccicard-conformance",
            "description": (
                "Simulated Vaccicard vaccination register for conformance testing. The real API is "
                "documented privately by RSW: every behaviour here is an assumed default."
            ),
            "kind": "instance",
            "software": {"name": "vaccicard-conformance simulator", "version": __version__},
            "implementation": {"description": "Vaccicard simulator FHIR API", "url": self.fhir_url},
            "fhirVersion": "4.0.1",
            "format": ["application/fhir+json", "json"],
            "rest": [
                {
                    "mode": "server",
                    "documentation": (
                        "JSON only. Every request except metadata needs an IAM Connect access token "
                        f"(Bearer) whose audience is {self.audience}. Records are cancelled with an "
                        "update to status entered-in-error."
                    ),
                    "security": {
                        "cors": False,
                        "service": [
                            {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                        "code": "SMART-on-FHIR",
                                    }
                                ],
                                "text": "OAuth2 bearer token from eHealth IAM Connect (token exchange)",
                            }
                        ],
                        "extension": [
                            {
                                "url": SMART_OAUTH_URIS,
                                "extension": [
                                    {"url": "token", "valueUri": self.iam.endpoint(HEALTHCARE, "token")},
                                    {"url": "authorize", "valueUri": self.iam.endpoint(HEALTHCARE, "auth")},
                                ],
                            }
                        ],
                        "description": (
                            "Professionals log in to realm healthcare (authorization code with PKCE S256) "
                            f"and exchange the token (RFC 8693) for audience {self.audience}."
                        ),
                    },
                    "resource": [
                        {
                            "type": "Immunization",
                            "profile": self.config.profile.split("|", 1)[0],
                            "supportedProfile": [self.config.profile],
                            "documentation": (
                                f"Search paging: _count (default {self.config.page_size}, max "
                                f"{self.config.max_page_size}), _offset, _sort=date|-date. Unknown search "
                                f"parameters: 400 ({self.config.search_handling}; Prefer: handling=lenient "
                                "ignores them). Conditional create on the business identifier: "
                                "If-None-Exist: identifier=system|value."
                            ),
                            "interaction": [{"code": code} for code in interactions],
                            "versioning": "versioned-update" if self.config.require_if_match else "versioned",
                            "readHistory": True,
                            "updateCreate": False,
                            "conditionalCreate": True,
                            "conditionalRead": "not-match",
                            "conditionalUpdate": False,
                            "conditionalDelete": "not-supported",
                            "searchParam": [
                                {
                                    "name": "patient",
                                    "definition": "http://hl7.org/fhir/SearchParameter/clinical-patient",
                                    "type": "reference",
                                    "documentation": ssin_doc,
                                },
                                {
                                    "name": "identifier",
                                    "definition": "http://hl7.org/fhir/SearchParameter/clinical-identifier",
                                    "type": "token",
                                    "documentation": "system|value, |value or value",
                                },
                                {
                                    "name": "status",
                                    "definition": "http://hl7.org/fhir/SearchParameter/Immunization-status",
                                    "type": "token",
                                },
                                {
                                    "name": "date",
                                    "definition": "http://hl7.org/fhir/SearchParameter/clinical-date",
                                    "type": "date",
                                    "documentation": "occurrenceDateTime; prefixes eq ne gt lt ge le sa eb",
                                },
                            ],
                            "operation": [{"name": "validate", "definition": VALIDATE_OPERATION}],
                        }
                    ],
                }
            ],
        }


# --- helpers -----------------------------------------------------------------------------------------


def _first(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _check_id(value: str, what: str) -> None:
    if not 1 <= len(value) <= 64 or not set(value) <= _ID_CHARS or value.strip(".") == "":
        raise _Refusal(
            400,
            "invalid",
            f"the {what} in the path is not a FHIR id (1-64 of A-Z a-z 0-9 - .)",
            Rule.INVALID_ID,
        )


def _shown(text: str) -> str:
    """A client-supplied value safe to quote in a message (short, printable)."""
    clean = "".join(c for c in text[:64] if c.isprintable())
    return repr(clean + ("…" if len(text) > 64 else ""))


def _invalid_search(text: str) -> _Refusal:
    return _Refusal(400, "invalid", text, Rule.INVALID_SEARCH)


def _non_negative(name: str, value: str) -> int:
    if not value.isdigit() or len(value) > 9:
        raise _invalid_search(f"{name} must be a whole number >= 0")
    return int(value)


def _identifier_parameter(value: str) -> tuple[str | None, str]:
    if "," in value:
        raise _invalid_search("identifier takes one value (no comma-separated list)")
    system, bar, code = value.partition("|")
    if not bar:
        return None, value
    if not code:
        raise _invalid_search("identifier needs a value: system|value")
    return system, code


def _media_type(header: str) -> tuple[str, dict[str, str]]:
    media, *raw_params = header.split(";")
    params = {}
    for item in raw_params:
        name, _, value = item.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return media.strip().lower(), params


def _accepts_json(accept: str) -> bool:
    for item in accept.split(","):
        media, params = _media_type(item)
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 1.0
        if quality <= 0:
            continue
        version = params.get("fhirversion")
        if media in _ACCEPTABLE and (version is None or version.startswith("4.0")):
            return True
    return False


def _prefer(request: HttpRequest, name: str) -> str | None:
    header = request.headers.get("prefer")
    if not header:
        return None
    for item in header.split(","):
        key, _, value = item.split(";", 1)[0].partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"')
    return None


def _etag_version(header: str) -> int | None:
    text = header.strip()
    text = text.removeprefix("W/")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if not text.isdigit() or len(text) > 9:
        return None
    return int(text)


def _etag_matches(header: str | None, version: int) -> bool:
    if not header:
        return False
    return any(_etag_version(item) == version or item.strip() == "*" for item in header.split(","))


def _if_none_exist(header: str) -> tuple[str, str]:
    try:
        pairs = parse_qsl(header.strip().lstrip("?").removeprefix("Immunization?"), keep_blank_values=True)
    except ValueError:
        pairs = []
    if len(pairs) != 1 or pairs[0][0] != "identifier" or "|" not in pairs[0][1]:
        raise _Refusal(
            400,
            "invalid",
            "If-None-Exist supports exactly identifier=system|value",
            Rule.INVALID_IF_NONE_EXIST,
        )
    system, _, value = pairs[0][1].partition("|")
    if not system or not value:
        raise _Refusal(
            400, "invalid", "If-None-Exist needs identifier=system|value", Rule.INVALID_IF_NONE_EXIST
        )
    return system, value


def _validate_parameters(data: dict[str, Any]) -> tuple[Any, str | None]:
    """The ``resource`` and ``profile`` of a ``$validate`` Parameters; 400 when there is no resource."""
    resource = None
    profile = None
    parameters = data.get("parameter")
    for item in parameters if isinstance(parameters, list) else []:
        if not isinstance(item, dict):
            continue
        if item.get("name") == "resource" and isinstance(item.get("resource"), dict):
            resource = item["resource"]
        elif item.get("name") == "profile":
            for key in ("valueUri", "valueCanonical", "valueString"):
                if isinstance(item.get(key), str):
                    profile = item[key]
    if resource is None:
        raise _Refusal(
            400,
            "required",
            "$validate takes the resource, or a Parameters with a 'resource' parameter",
            Rule.INVALID_PARAMETERS,
        )
    return resource, profile


def _json_problem(value: Any, limit: int) -> Rule | None:
    """Nesting deeper than ``limit`` (checked iteratively), or a ``null`` property (FHIR JSON forbids it)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    null_property = False
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
            null_property = null_property or any(child is None for child in children)
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return Rule.JSON_TOO_DEEP
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return Rule.INVALID_JSON if null_property else None


def _patient_ssin(resource: dict[str, Any]) -> str | None:
    patient = resource.get("patient")
    identifier = patient.get("identifier") if isinstance(patient, dict) else None
    if isinstance(identifier, dict) and identifier.get("system") == SSIN:
        value = identifier.get("value")
        return value if isinstance(value, str) else None
    return None


def _identities(principal: Principal) -> set[tuple[str, str]]:
    """The (system, value) identifiers that name this professional in a recorder reference."""
    found: set[tuple[str, str]] = set()
    if principal.ssin:
        found.add((SSIN, principal.ssin))
    numbers = {principal.nihii11} | {d.nihii11 for d in principal.disciplines}
    for number in numbers:
        if number:
            for system in (NIHDI, NIHDI_PROFESSIONAL):
                found.add((system, number))
                found.add((system, number[:8]))
    return found


def _recorder_identifiers(resource: dict[str, Any]) -> list[tuple[str, str]]:
    """Identifiers the recorder extension names, directly or through a contained Practitioner(Role)."""
    contained = (
        {
            item.get("id"): item
            for item in resource.get("contained", [])
            if isinstance(item, dict) and isinstance(item.get("id"), str)
        }
        if isinstance(resource.get("contained"), list)
        else {}
    )
    found: list[tuple[str, str]] = []

    def from_reference(reference: Any, hops: int = 0) -> None:
        if not isinstance(reference, dict) or hops > 2:
            return
        found.extend(_pairs([reference.get("identifier")]))
        target = reference.get("reference")
        if isinstance(target, str) and target.startswith("#"):
            item = contained.get(target[1:])
            if isinstance(item, dict) and item.get("resourceType") == "Practitioner":
                identifiers = item.get("identifier")
                found.extend(_pairs(identifiers if isinstance(identifiers, list) else []))
            elif isinstance(item, dict) and item.get("resourceType") == "PractitionerRole":
                from_reference(item.get("practitioner"), hops + 1)

    extensions = resource.get("extension")
    for extension in extensions if isinstance(extensions, list) else []:
        if isinstance(extension, dict) and extension.get("url") == RECORDER_EXTENSION:
            from_reference(extension.get("valueReference"))
    return found


def _pairs(identifiers: Iterable[Any]) -> list[tuple[str, str]]:
    return [
        (item["system"], item["value"])
        for item in identifiers
        if isinstance(item, dict)
        and isinstance(item.get("system"), str)
        and isinstance(item.get("value"), str)
    ]


def _subject(principal: Principal) -> str:
    """How the traffic recorder names the principal: ``nihdi:<nihii11>``, ``cbe:<cbe>`` or ``sub:<uuid>``."""
    if principal.kind == "organisation" and principal.cbe:
        return f"cbe:{principal.cbe}"
    if principal.nihii11:
        return f"nihdi:{principal.nihii11}"
    return f"sub:{principal.subject}"


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
