"""Correcting and cancelling a record the software made."""

from __future__ import annotations

from typing import Any

from pytest_bdd import given, parsers, then, when

from conformance.adapters.intents import (
    AdministeredProduct,
    CancelVaccination,
    CorrectVaccination,
    Identifier,
)
from conformance.suite import checks
from conformance.suite.endpoint import Endpoint
from conformance.suite.results import judges
from conformance.suite.software import Action, Software
from steps.registration import _RECORD_ROWS, table, vaccination

_CORRECTION_ROWS = {"given on", "lot number", "lot expiry", "CNK", "note"}


@given("the professional recorded a vaccination:", target_fixture="recorded")
def recorded(
    software: Software,
    endpoint: Endpoint,
    datatable: list[list[str]],
    vocabulary: Any,
    patient: Any,
    professional: Any,
    run_id: str,
) -> dict[str, Any]:
    intent = vaccination(table(datatable, _RECORD_ROWS), vocabulary, patient, professional, run_id)
    action = software.perform(intent)
    checks.reported_success(action, "the vaccination the scenario starts from")
    return checks.register_holds_one(endpoint, action.business_identifier)


@when("the professional corrects that vaccination:", target_fixture="action")
def corrects(
    software: Software, recorded: dict[str, Any], datatable: list[list[str]], professional: Any
) -> Action:
    rows = table(datatable, _CORRECTION_ROWS)
    product = None
    if {"CNK", "lot number", "lot expiry"} & set(rows):
        product = AdministeredProduct(rows.get("CNK"), rows.get("lot number"), rows.get("lot expiry"))
    [identifier] = recorded["identifier"]
    intent = CorrectVaccination(
        business_identifier=Identifier(identifier["system"], identifier["value"]),
        occurrence=rows.get("given on"),
        product=product,
        note=rows.get("note"),
        professional=professional.ssin,
    )
    return software.perform(intent)


def _cancel(software: Software, recorded: dict[str, Any], reason: str, professional: Any) -> Action:
    [identifier] = recorded["identifier"]
    key = Identifier(identifier["system"], identifier["value"])
    return software.perform(CancelVaccination(key, reason, professional=professional.ssin))


@when(parsers.parse('the professional cancels that vaccination because "{reason}"'), target_fixture="action")
def cancels(software: Software, recorded: dict[str, Any], reason: str, professional: Any) -> Action:
    return _cancel(software, recorded, reason, professional)


@given(parsers.parse('the professional cancelled that vaccination because "{reason}"'))
def cancelled(software: Software, recorded: dict[str, Any], reason: str, professional: Any) -> None:
    checks.reported_success(_cancel(software, recorded, reason, professional), "the cancellation")


@then("the software updated the record with PUT on the same record")
@judges("VC-COR-01")
def same_record(action: Action, recorded: dict[str, Any]) -> None:
    checks.updated_in_place(action, recorded["id"])


@then("every update carried If-Match with the version the software last read")
@judges("VC-COR-02", "VC-COR-03")
def if_match(action: Action) -> None:
    checks.if_match_current(action)


@then("the update kept the business identifier and the patient")
@judges("VC-COR-01", "VC-CAN-02")
def kept(action: Action, recorded: dict[str, Any]) -> None:
    checks.kept_identity(action, recorded)


@then("the update conforms to be-vaccination")
@judges("VC-COR-01", "VC-CAN-02")
def update_conforms(action: Action, suite_validator: Any) -> None:
    checks.conforms(suite_validator, *checks.last_received(action, "update"))


@then("the register's current version has the corrected values")
@judges("VC-COR-04")
def corrected(action: Action, endpoint: Endpoint) -> None:
    record = checks.register_holds_one(endpoint, action.business_identifier)
    checks.current_has(record, action.intent)  # type: ignore[arg-type]


@then("the software read the record again after the 412 before writing again")
@judges("VC-COR-03")
def reread(action: Action) -> None:
    checks.reread_after_conflict(action)


@then("the software did not send DELETE")
@judges("VC-CAN-01")
def no_delete(action: Action) -> None:
    checks.no_delete(action)


@then("the software updated the record to entered-in-error with If-Match")
@judges("VC-CAN-01")
def to_entered_in_error(action: Action) -> None:
    checks.entered_in_error(*checks.last_received(action, "update"))
    checks.if_match_current(action)
