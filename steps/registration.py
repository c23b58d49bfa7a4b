"""Recording a vaccination (given or not given): the intents from the scenario's table, and the checks
on the Immunization the register received."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_bdd import parsers, then, when

from conformance.adapters.intents import (
    AdministeredProduct,
    BodySite,
    CareSetting,
    Identifier,
    Reaction,
    RecordNotDone,
    RecordVaccination,
)
from conformance.suite import checks
from conformance.suite.results import judges
from conformance.suite.software import Action, Software

SCENARIO_KEYS = "https://vaccicard-conformance.example/scenarios/vaccinations"
"""Naming system of the business identifiers a scenario gives (``| business identifier | ... |``)."""

_RECORD_ROWS = {
    "vaccine",
    "given on",
    "reported date",
    "CNK",
    "lot number",
    "lot expiry",
    "route",
    "body site",
    "side",
    "place",
    "place name",
    "reaction on",
    "reaction",
    "business identifier",
    "note",
}
_NOT_DONE_ROWS = {"vaccine", "kind", "status reason", "date", "business identifier", "note"}


def table(datatable: list[list[str]], allowed: set[str]) -> dict[str, str]:
    """A two-column ``| field | value |`` table as a dict; an unknown field stops the scenario."""
    rows = {row[0].strip(): row[1].strip() for row in datatable}
    unknown = sorted(set(rows) - allowed)
    if unknown:
        raise pytest.UsageError(f"unknown row(s) {unknown} in the table; use {sorted(allowed)}")
    return rows


def key(rows: dict[str, str], run_id: str = "") -> Identifier | None:
    """The business identifier the table gives, made unique to this run with ``run_id``."""
    value = rows.get("business identifier")
    return Identifier(SCENARIO_KEYS, f"{value}-{run_id}" if run_id else value) if value else None


def vaccination(
    rows: dict[str, str], vocabulary: Any, patient: Any, professional: Any, run_id: str = ""
) -> RecordVaccination:
    """The RecordVaccination the table describes."""
    product = None
    if {"CNK", "lot number", "lot expiry"} & set(rows):
        product = AdministeredProduct(rows.get("CNK"), rows.get("lot number"), rows.get("lot expiry"))
    site = None
    if "body site" in rows:
        site = BodySite(vocabulary.coding("body site", rows["body site"]), rows.get("side"))  # type: ignore[arg-type]
    reaction = None
    if "reaction on" in rows:
        detail = vocabulary.coding("reaction", rows["reaction"]) if "reaction" in rows else None
        reaction = Reaction(rows["reaction on"], detail)
    return RecordVaccination(
        patient=patient.ssin,
        vaccine=vocabulary.coding("vaccine", rows["vaccine"]),
        occurrence=rows.get("given on"),
        occurrence_text=rows.get("reported date"),
        product=product,
        route=vocabulary.coding("route", rows["route"]) if "route" in rows else None,
        body_site=site,
        care_setting=CareSetting(rows["place"], rows.get("place name")) if "place" in rows else None,
        reaction=reaction,
        business_identifier=key(rows, run_id),
        note=rows.get("note"),
        professional=professional.ssin,
    )


@when("the professional records a vaccination:", target_fixture="action")
def records(
    software: Software,
    datatable: list[list[str]],
    vocabulary: Any,
    patient: Any,
    professional: Any,
    run_id: str,
) -> Action:
    intent = vaccination(table(datatable, _RECORD_ROWS), vocabulary, patient, professional, run_id)
    return software.perform(intent)


@when("the professional records the same vaccination again", target_fixture="action")
def records_again(software: Software, action: Action) -> Action:
    first = action
    again = software.perform_again(first)
    return Action(
        again.intent, again.result, first.exchanges + again.exchanges, first.seconds + again.seconds
    )


@when("the professional records a vaccination not given:", target_fixture="action")
def records_not_done(
    software: Software,
    datatable: list[list[str]],
    vocabulary: Any,
    patient: Any,
    professional: Any,
    run_id: str,
) -> Action:
    rows = table(datatable, _NOT_DONE_ROWS)
    intent = RecordNotDone(
        patient=patient.ssin,
        vaccine=vocabulary.coding("vaccine", rows["vaccine"]),
        status_reason=vocabulary.coding("status reason", rows["status reason"]),
        kind=rows["kind"],  # type: ignore[arg-type]
        occurrence=rows.get("date"),
        business_identifier=key(rows, run_id),
        note=rows.get("note"),
        professional=professional.ssin,
    )
    return software.perform(intent)


@then("the register received exactly one Immunization")
@judges("VC-REG-01", "VC-ND-01")
def exactly_one(action: Action) -> None:
    checks.one_received(action)


@then("it conforms to be-vaccination")
@judges("VC-REG-01", "VC-REG-03", "VC-REG-08", "VC-REG-09", "VC-ND-01", "VC-ND-02", "VC-ND-03")
def it_conforms(action: Action, suite_validator: Any) -> None:
    checks.conforms(suite_validator, *checks.last_received(action))


@then("it carries one business identifier with a system and a value")
@judges("VC-REG-02")
def one_identifier(action: Action) -> None:
    checks.one_business_identifier(*checks.last_received(action))


@then("the patient is identified by SSIN in patient.identifier")
@judges("VC-REG-03")
def by_ssin(action: Action, patient: Any) -> None:
    checks.patient_by_ssin(*checks.last_received(action), patient.ssin)


@then("the recorder is the logged-in professional")
@judges("VC-REG-04")
def recorder(action: Action, professional: Any) -> None:
    checks.recorder_is(*checks.last_received(action), professional.nihii11)


@then("the lot number and expiry travel in the administered-product extension, not in lotNumber")
@judges("VC-REG-05")
def lot_in_extension(action: Action) -> None:
    checks.lot_in_product(*checks.last_received(action), action.intent)  # type: ignore[arg-type]


@then("the values equal what the professional entered")
@judges("VC-REG-01", "VC-REG-06", "VC-REG-08", "VC-REG-09")
def values(action: Action) -> None:
    exchange, resource = checks.last_received(action)
    checks.values_equal(exchange, resource, action.intent)  # type: ignore[arg-type]
    checks.laterality_given(exchange, resource, action.intent)  # type: ignore[arg-type]


@then("the place is a contained Encounter with its Location, not Immunization.location")
@judges("VC-REG-07")
def place(action: Action) -> None:
    checks.place_contained(*checks.last_received(action))


@then(parsers.parse('the occurrence is sent as occurrenceString "{text}"'))
@judges("VC-REG-08")
def occurrence_text(action: Action, text: str) -> None:
    checks.occurrence_string(*checks.last_received(action), text)


@then("the reaction carries its date and refers to a contained Observation of the reaction")
@judges("VC-REG-09")
def reaction(action: Action) -> None:
    checks.reaction_with_detail(*checks.last_received(action))


@then(parsers.parse('its status is not-done with the status reason "{code}"'))
@judges("VC-ND-01", "VC-ND-02", "VC-ND-03")
def not_done(action: Action, code: str) -> None:
    checks.not_done_with_reason(*checks.last_received(action), code)


@then("the status reason is in its bound value set")
@judges("VC-ND-01", "VC-ND-02", "VC-ND-03")
def reason_bound(action: Action, suite_validator: Any) -> None:
    checks.status_reason_bound(suite_validator, *checks.last_received(action))


@then("it names no administered product")
@judges("VC-ND-02")
def no_product(action: Action) -> None:
    checks.no_product(*checks.last_received(action))


@then("every create the software sent carried the same business identifier")
@judges("VC-REG-02", "VC-RES-03", "VC-RES-04")
def same_key(action: Action) -> None:
    checks.same_identifier_on_creates(action)
