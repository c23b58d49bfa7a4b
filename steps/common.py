"""Steps shared by every area: who is logged in, which patient, what the software reported."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from pytest_bdd import given, parsers, then

from conformance.suite import checks
from conformance.suite.endpoint import Endpoint
from conformance.suite.results import judges
from conformance.suite.software import Action


def person(testdata: Any, name: str, kind: str) -> Any:
    """The test professional or patient called ``name`` (given and family name)."""
    people = testdata.professionals if kind == "professional" else testdata.patients
    for candidate in people:
        if f"{candidate.given_name} {candidate.family_name}".casefold() == name.strip().casefold():
            return candidate
    known = ", ".join(f"{p.given_name} {p.family_name}" for p in people)
    raise pytest.UsageError(f"no test {kind} called {name!r}; known: {known}")


@given("the register is Vaccicard")
def register(endpoint: Endpoint) -> Endpoint:
    return endpoint


@given(parsers.parse("{name} is logged in to the software"), target_fixture="professional")
def logged_in(testdata: Any, name: str) -> Any:
    return person(testdata, name, "professional")


@given(parsers.re(r"the patient is (?P<name>[^,]+)$"), target_fixture="patient")
def the_patient(testdata: Any, name: str) -> Any:
    return person(testdata, name, "patient")


@given(parsers.parse("the patient has the SSIN {ssin}, unknown to the register"), target_fixture="patient")
def unknown_patient(testdata: Any, ssin: str) -> Any:
    from conformance.simulator.testdata import Patient

    assert testdata.patient(ssin) is None, f"{ssin} is a known test patient"
    return Patient(ssin, "Unknown", "Patient", datetime.date(1985, 7, 30), "other", True)


@then(
    parsers.re(r"the software reported the (?P<what>vaccination|correction|cancellation) as (recorded|done)")
)
def reported_done(action: Action, what: str) -> None:
    checks.reported_success(action, f"the {what}")


@then("the software did not report the vaccination as recorded")
def not_reported(action: Action) -> None:
    checks.did_not_report_success(action)


@then(parsers.parse("the register refused with rule {rule}"))
def refused_with(action: Action, rule: str) -> None:
    checks.refused_with_rule(action, rule)


@then("the software showed the register's reason to the user")
def showed_reason(action: Action) -> None:
    checks.showed_reason(action)


@then("the software did not send the refused request again")
def not_again(action: Action) -> None:
    checks.not_sent_again(action)


@then("the software showed no vaccination")
def no_vaccination(action: Action) -> None:
    checks.showed_no_vaccination(action)


@then("the software's messages do not quote the patient's SSIN")
@judges("VC-SEC-01")
def no_ssin(action: Action, patient: Any) -> None:
    checks.messages_without_ssin(action, patient.ssin)


@then("the register holds exactly one vaccination with that business identifier")
@judges(
    "VC-REG-02",
    "VC-RES-01",
    "VC-RES-02",
    "VC-RES-03",
    "VC-RES-04",
    "VC-RES-05",
    "VC-COR-04",
    "VC-CON-04",
    "VC-REJ-02",
    "VC-ETE-04",
)
def holds_one(action: Action, endpoint: Endpoint) -> None:
    checks.register_holds_one(endpoint, action.business_identifier)


@then("the software asked the register about no other patient")
@judges("VC-ACC-03")
def only_this_patient(action: Action, patient: Any) -> None:
    checks.only_patient(action, patient.ssin)
