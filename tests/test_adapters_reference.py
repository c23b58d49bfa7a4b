"""The reference adapter against a running simulator on 127.0.0.1, as vendor software would behave."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from conformance.adapters.intents import (
    AdministeredProduct,
    BodySite,
    CancelVaccination,
    CareSetting,
    Coding,
    CorrectVaccination,
    Identifier,
    Reaction,
    ReadHistory,
    RecordNotDone,
    RecordVaccination,
)
from conformance.adapters.reference import (
    ADMINISTERED_PRODUCT,
    NIHDI_PROFESSIONAL,
    RECORDER,
    SSIN_SYSTEM,
    ReferenceAdapter,
)
from conformance.errors import ConfigurationError, TargetUnreachableError
from conformance.simulator.config import BE_VACCINATION_PROFILE
from conformance.simulator.faults import Fault

PHYSICIAN_SSIN = "75040201177"
PHYSICIAN_NIHDI = "10000106003"
DENTIST_SSIN = "69101001540"  # recognised, may not record vaccinations
PATIENT = "58032100126"
IDS = "https://vendor.example.org/vaccinations"
SCT = "http://snomed.info/sct"
MEASLES = Coding(SCT, "871765008", "Measles")
HEP_B = Coding(SCT, "871822003", "Hepatitis B")


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def adapter(simulator: Any, waits: list[float]) -> Iterator[ReferenceAdapter]:
    with ReferenceAdapter(
        simulator.fhir_base_url, simulator.base_url + "/auth", professional=PHYSICIAN_SSIN, sleep=waits.append
    ) as client:
        yield client


def full_record(key: str = "ref-1", **changes: Any) -> RecordVaccination:
    values: dict[str, Any] = {
        "patient": PATIENT,
        "vaccine": MEASLES,
        "occurrence": "2026-01-20T10:00:00+01:00",
        "product": AdministeredProduct(cnk="1234567", lot_number="AB1234", expiry="2027-06-30"),
        "route": Coding(
            "https://www.ehealth.fgov.be/standards/fhir/vaccination/CodeSystem/be-cs-vaccination-administration-route",
            "IM",
        ),
        "body_site": BodySite(Coding(SCT, "35259002", "Deltoid muscle"), "left"),
        "care_setting": CareSetting("medical-center", "Cabinet du Parc"),
        "reaction": Reaction("2026-01-21"),
        "business_identifier": Identifier(IDS, key),
    }
    values.update(changes)
    return RecordVaccination(**values)


def creates(simulator: Any) -> list[Any]:
    return simulator.traffic.exchanges(operation="create")


def test_record_sends_exactly_one_valid_immunization(simulator: Any, adapter: ReferenceAdapter) -> None:
    result = adapter.perform(full_record())
    assert result.outcome == "succeeded", result.message
    assert result.business_identifiers == (Identifier(IDS, "ref-1"),)
    [create] = creates(simulator)
    assert create.response_status == 201
    assert not [i for i in create.validation if i.get("severity") in ("error", "fatal")]
    sent = create.request_json
    outcome = simulator.validator.validate(sent, profile=BE_VACCINATION_PROFILE)
    assert outcome.ok, outcome.errors()
    assert create.request_header("if-none-exist") == f"identifier={IDS}|ref-1"
    assert "lotNumber" not in sent and "expirationDate" not in sent
    [recorder] = [e for e in sent["extension"] if e["url"] == RECORDER]
    assert recorder["valueReference"]["identifier"] == {
        "system": NIHDI_PROFESSIONAL,
        "value": PHYSICIAN_NIHDI,
    }
    [product] = [e for e in sent["extension"] if e["url"] == ADMINISTERED_PRODUCT]
    assert {p["url"] for p in product["extension"]} == {"coded", "lotNumber", "expirationDate"}
    assert sent["patient"] == {"identifier": {"system": SSIN_SYSTEM, "value": PATIENT}}
    assert {c["resourceType"] for c in sent["contained"]} == {"Encounter", "Location"}
    assert sent["encounter"] == {"reference": "#encounter"}
    assert sent["reaction"] == [{"date": "2026-01-21"}]
    assert result.record_ids == (create.response_json["id"],)


def test_record_a_reported_vaccination_with_occurrence_string(
    simulator: Any, adapter: ReferenceAdapter
) -> None:
    intent = RecordVaccination(patient=PATIENT, vaccine=HEP_B, occurrence_text="as a child, in 1990")
    result = adapter.perform(intent)
    assert result.outcome == "succeeded", result.message
    [create] = creates(simulator)
    assert create.response_status == 201
    assert create.request_json["occurrenceString"] == "as a child, in 1990"
    assert result.business_identifiers[0].value  # made up once, reported back


def test_record_a_reaction_with_its_detail(simulator: Any, adapter: ReferenceAdapter) -> None:
    fever = Coding(SCT, "386661006", "Fever")
    result = adapter.perform(full_record("reaction-1", reaction=Reaction("2026-01-21T08:00:00+01:00", fever)))
    assert result.outcome == "succeeded", result.message
    [create] = creates(simulator)
    assert create.response_status == 201
    sent = create.request_json
    assert sent["reaction"] == [{"date": "2026-01-21T08:00:00+01:00", "detail": {"reference": "#reaction"}}]
    [observation] = [c for c in sent["contained"] if c["resourceType"] == "Observation"]
    assert observation["code"]["coding"][0]["code"] == "386661006"


def test_record_not_done(simulator: Any, adapter: ReferenceAdapter) -> None:
    intent = RecordNotDone(
        patient=PATIENT,
        vaccine=HEP_B,
        status_reason=Coding("http://terminology.hl7.org/CodeSystem/v3-ActReason", "MEDPREC"),
        kind="contraindication",
        occurrence="2026-01-20",
        business_identifier=Identifier(IDS, "nd-1"),
    )
    result = adapter.perform(intent)
    assert result.outcome == "succeeded", result.message
    [create] = creates(simulator)
    assert create.response_status == 201
    assert create.request_json["status"] == "not-done"
    assert create.request_json["statusReason"]["coding"][0]["code"] == "MEDPREC"
    history = adapter.perform(ReadHistory(PATIENT))
    assert [v.status for v in history.vaccinations] == ["not-done"]


def test_history_follows_next_links(simulator: Any, adapter: ReferenceAdapter) -> None:
    count = simulator.config.page_size + 5
    for number in range(count):
        assert adapter.perform(full_record(f"page-{number}", care_setting=None)).succeeded
    result = adapter.perform(ReadHistory(PATIENT))
    assert result.outcome == "succeeded"
    assert len(result.vaccinations) == count
    assert {v.business_identifier.value for v in result.vaccinations if v.business_identifier} == {
        f"page-{n}" for n in range(count)
    }
    searches = simulator.traffic.exchanges(operation="search")
    assert len(searches) >= 2  # the second page was fetched through the next link


def test_correction_keeps_the_identifier_and_bumps_the_version(
    simulator: Any, adapter: ReferenceAdapter
) -> None:
    assert adapter.perform(full_record("corr-1")).succeeded
    result = adapter.perform(
        CorrectVaccination(
            business_identifier=Identifier(IDS, "corr-1"),
            occurrence="2026-01-19T09:30:00+01:00",
            product=AdministeredProduct(cnk="1234567", lot_number="ZZ9999", expiry="2027-06-30"),
        )
    )
    assert result.outcome == "succeeded", result.message
    [update] = simulator.traffic.exchanges(operation="update")
    assert update.response_status == 200
    assert update.request_header("if-match") == 'W/"1"'
    body = update.response_json
    assert body["meta"]["versionId"] == "2"
    assert body["identifier"] == [{"system": IDS, "value": "corr-1"}]
    assert body["occurrenceDateTime"] == "2026-01-19T09:30:00+01:00"
    assert "lotNumber" not in body
    assert len(creates(simulator)) == 1
    assert len(adapter.perform(ReadHistory(PATIENT)).vaccinations) == 1


def test_cancel_is_an_update_and_shows_as_cancelled(simulator: Any, adapter: ReferenceAdapter) -> None:
    assert adapter.perform(full_record("cancel-1")).succeeded
    result = adapter.perform(CancelVaccination(Identifier(IDS, "cancel-1"), reason="wrong patient"))
    assert result.outcome == "succeeded", result.message
    assert not [e for e in simulator.traffic.exchanges() if e.method == "DELETE"]
    [update] = simulator.traffic.exchanges(operation="update")
    assert update.request_json["status"] == "entered-in-error"
    [shown] = adapter.perform(ReadHistory(PATIENT)).vaccinations
    assert shown.status == "cancelled"


def test_a_422_comes_back_as_rejected_with_the_message(simulator: Any, adapter: ReferenceAdapter) -> None:
    intent = full_record("bad-1", occurrence="2099-01-01T10:00:00+01:00")  # in the future
    result = adapter.perform(intent)
    assert result.outcome == "rejected"
    assert result.issues and result.issues[0].text
    assert "422" in (result.message or "") and result.issues[0].text in (result.message or "")


def test_a_403_comes_back_as_rejected_with_the_message(simulator: Any, waits: list[float]) -> None:
    with ReferenceAdapter(
        simulator.fhir_base_url, simulator.base_url + "/auth", professional=DENTIST_SSIN, sleep=waits.append
    ) as dentist:
        result = dentist.perform(full_record("dentist-1"))
    assert result.outcome == "rejected"
    assert "403" in (result.message or "")
    [create] = creates(simulator)
    assert create.tags.get("rule") == "discipline-may-not-record"
    assert result.issues[0].text in (result.message or "")


def test_two_503_then_success(simulator: Any, adapter: ReferenceAdapter) -> None:
    simulator.faults.add(Fault.status_error(503), "create", times=2)
    result = adapter.perform(full_record("retry-1"))
    assert result.outcome == "succeeded", result.message
    statuses = [e.response_status for e in creates(simulator)]
    assert statuses == [503, 503, 201]
    keys = {e.request_header("if-none-exist") for e in creates(simulator)}
    assert keys == {f"identifier={IDS}|retry-1"}


def test_429_honours_retry_after(simulator: Any, adapter: ReferenceAdapter, waits: list[float]) -> None:
    simulator.faults.add(Fault.status_error(429, retry_after=7), "create")
    result = adapter.perform(full_record("throttled-1"))
    assert result.outcome == "succeeded", result.message
    assert waits == [7.0]
    assert [e.response_status for e in creates(simulator)] == [429, 201]


def test_unavailable_register_is_a_failure_not_a_success(simulator: Any, adapter: ReferenceAdapter) -> None:
    simulator.faults.add(Fault.status_error(503), "create", times=None)
    result = adapter.perform(full_record("down-1"))
    assert result.outcome == "failed"
    assert len(creates(simulator)) == adapter.max_attempts


def test_commit_then_drop_ends_with_exactly_one_record(simulator: Any, adapter: ReferenceAdapter) -> None:
    simulator.faults.add(Fault.commit_then_drop(), "create")
    result = adapter.perform(full_record("lost-1"))
    assert result.outcome == "succeeded", result.message
    exchanges = creates(simulator)
    assert len(exchanges) == 2 and exchanges[0].error and exchanges[1].response_status == 200
    history = adapter.perform(ReadHistory(PATIENT))
    assert [v.business_identifier for v in history.vaccinations] == [Identifier(IDS, "lost-1")]


def test_token_is_renewed_before_expiry(simulator: Any, waits: list[float]) -> None:
    now = [0.0]
    with ReferenceAdapter(
        simulator.fhir_base_url,
        simulator.base_url + "/auth",
        professional=PHYSICIAN_SSIN,
        sleep=waits.append,
        clock=lambda: now[0],
    ) as client:
        assert client.perform(ReadHistory(PATIENT)).succeeded
        first = client._tokens[PHYSICIAN_SSIN]
        now[0] += 10_000  # far past expiry
        assert client.perform(ReadHistory(PATIENT)).succeeded
        assert client._tokens[PHYSICIAN_SSIN] is not first
    tokens = [e for e in simulator.traffic.exchanges() if e.path.endswith("/token")]
    assert len(tokens) >= 3  # code, exchange, then a renewal and a new exchange


def test_cancel_whose_answer_is_lost_makes_one_new_version(simulator: Any, adapter: ReferenceAdapter) -> None:
    assert adapter.perform(full_record("lost-cancel-1")).succeeded
    simulator.faults.add(Fault.commit_then_drop(), "update")
    result = adapter.perform(CancelVaccination(Identifier(IDS, "lost-cancel-1"), reason="duplicate entry"))
    assert result.outcome == "succeeded", result.message
    updates = simulator.traffic.exchanges(operation="update")
    assert updates[0].error and [e.response_status for e in updates[1:]] == [412]
    assert result.message and result.message.endswith("version 2")
    [shown] = adapter.perform(ReadHistory(PATIENT)).vaccinations
    assert shown.status == "cancelled"


def test_a_refused_login_is_a_rejection(simulator: Any, waits: list[float]) -> None:
    with ReferenceAdapter(
        simulator.fhir_base_url, simulator.base_url + "/auth", professional="00000000000", sleep=waits.append
    ) as unknown:
        result = unknown.perform(ReadHistory(PATIENT))
    assert result.outcome == "rejected"
    assert "IAM Connect refused the login" in (result.message or "")
    assert not simulator.traffic.exchanges(operation="search")


def test_unreachable_iam_is_a_clear_error() -> None:
    with socket.socket() as probe:  # a free port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    with (
        ReferenceAdapter(base + "/fhir", base + "/auth", professional=PHYSICIAN_SSIN) as client,
        pytest.raises(TargetUnreachableError, match="IAM Connect is unreachable"),
    ):
        client.perform(ReadHistory(PATIENT))


def test_an_invalid_intent_is_refused_before_anything_is_sent(
    simulator: Any, adapter: ReferenceAdapter
) -> None:
    with pytest.raises(ConfigurationError, match=r"\$\.patient"):
        adapter.perform(ReadHistory("123"))
    assert simulator.traffic.exchanges() == []
