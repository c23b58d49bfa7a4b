"""The history: what others recorded (made through the harness's own client) and what the software shows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pytest_bdd import given, parsers, then, when

from conformance.adapters.intents import CancelVaccination, Identifier, ReadHistory, RecordVaccination
from conformance.adapters.reference import ReferenceAdapter
from conformance.suite import checks
from conformance.suite.endpoint import Endpoint
from conformance.suite.results import judges
from conformance.suite.software import Action, Software
from steps.common import person

OTHERS_KEYS = "https://vaccicard-conformance.example/other-software/vaccinations"
"""Naming system of the records the harness makes as 'another software'."""


@pytest.fixture
def others(endpoint: Endpoint, suite: Any) -> Iterator[ReferenceAdapter]:
    """The harness's own correct client, standing for the other professionals and their software.

    It logs in as any test professional, which only a simulator allows: elsewhere the scenario skips.
    """
    if endpoint.environment != "simulator":
        pytest.skip("records by other professionals need their logins: this scenario runs on the simulator")
    with ReferenceAdapter(
        endpoint.fhir_base_url,
        endpoint.iam_base_url,
        professional=suite.professional,
        identifier_system=OTHERS_KEYS,
    ) as client:
        yield client


@pytest.fixture
def made_by_others() -> list[Identifier]:
    """Business identifiers of the records the other professionals made, in order."""
    return []


def _record_as(others: ReferenceAdapter, professional: Any, intent: RecordVaccination) -> Identifier:
    result = others.perform(intent)
    assert result.succeeded, (
        f"the register refused the setup record of {professional.given_name}: {result.message}"
    )
    return result.business_identifiers[0]


@given(
    parsers.re(r"(?P<name>.+) recorded an? (?P<vaccine>.+) for the patient on (?P<day>\d{4}-\d{2}-\d{2})$")
)
def recorded_by(
    others: ReferenceAdapter,
    made_by_others: list[Identifier],
    testdata: Any,
    vocabulary: Any,
    patient: Any,
    name: str,
    vaccine: str,
    day: str,
) -> None:
    professional = person(testdata, name, "professional")
    intent = RecordVaccination(
        patient=patient.ssin,
        vaccine=vocabulary.coding("vaccine", vaccine),
        occurrence=f"{day}T10:00:00+01:00",
        business_identifier=Identifier(OTHERS_KEYS, str(uuid.uuid4())),
        professional=professional.ssin,
    )
    made_by_others.append(_record_as(others, professional, intent))


@given(parsers.parse("the register holds {count:d} vaccinations for the patient recorded by {name}"))
def many_recorded(
    others: ReferenceAdapter,
    made_by_others: list[Identifier],
    testdata: Any,
    vocabulary: Any,
    patient: Any,
    count: int,
    name: str,
) -> None:
    professional = person(testdata, name, "professional")
    vaccine = vocabulary.coding("vaccine", "Influenza vaccine")
    for number in range(count):
        intent = RecordVaccination(
            patient=patient.ssin,
            vaccine=vaccine,
            occurrence=f"{2000 + number % 25}-10-{1 + number % 28:02d}T10:00:00+01:00",
            business_identifier=Identifier(OTHERS_KEYS, f"bulk-{number}-{uuid.uuid4()}"),
            professional=professional.ssin,
        )
        made_by_others.append(_record_as(others, professional, intent))


@given(parsers.parse("{name} cancelled that vaccination as entered in error"))
def others_cancelled(
    others: ReferenceAdapter, made_by_others: list[Identifier], testdata: Any, name: str
) -> None:
    professional = person(testdata, name, "professional")
    result = others.perform(
        CancelVaccination(made_by_others[-1], "entered in error", professional=professional.ssin)
    )
    assert result.succeeded, f"the register refused the setup cancellation: {result.message}"


@given("the professional has opened the vaccination history of the patient", target_fixture="action")
@when("the professional opens the vaccination history of the patient", target_fixture="action")
def opens_history(software: Software, patient: Any, professional: Any) -> Action:
    return software.perform(ReadHistory(patient.ssin, professional=professional.ssin))


@then("the software showed the history")
def showed_history(action: Action) -> None:
    checks.reported_success(action, "the history")


@then("the software searched by the patient's SSIN with parameters the register supports")
@judges("VC-HIS-01")
def searched(action: Action, patient: Any) -> None:
    checks.searched_by_ssin(action, patient.ssin)


@then("the software followed the next links to the last page")
@judges("VC-HIS-03")
def all_pages(action: Action) -> None:
    checks.followed_next(action)


@then("the history shows every vaccination the register holds for the patient, each once")
@judges("VC-HIS-01", "VC-HIS-02", "VC-HIS-03", "VC-HIS-04")
def shows_all(action: Action, endpoint: Endpoint, patient: Any) -> None:
    checks.history_matches_register(action, endpoint, patient.ssin)


@then("the cancelled vaccination is not shown as given")
@judges("VC-HIS-04", "VC-CAN-03")
def cancelled_hidden(action: Action, endpoint: Endpoint, patient: Any) -> None:
    checks.cancelled_not_given(action, endpoint, patient.ssin)
