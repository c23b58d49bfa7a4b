"""Each faulty adapter against a running simulator: its one defect shows in the traffic or the result."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conformance.adapters.faulty import (
    DEFECTS,
    OTHER_PROFESSIONAL_NIHDI,
    WRONG_SSIN_SYSTEM,
    FaultyAdapter,
)
from conformance.adapters.intents import (
    AdministeredProduct,
    CancelVaccination,
    Coding,
    CorrectVaccination,
    Identifier,
    ReadHistory,
    RecordNotDone,
)
from conformance.adapters.reference import (
    ADMINISTERED_PRODUCT,
    RECORDER,
    SSIN_SYSTEM,
)
from conformance.errors import ConfigurationError
from conformance.simulator.etk_depot import EtkFlaw
from conformance.simulator.faults import Fault
from tests.test_adapters_etee_client import etee_options
from tests.test_adapters_reference import (
    HEP_B,
    IDS,
    PATIENT,
    PHYSICIAN_NIHDI,
    PHYSICIAN_SSIN,
    creates,
    full_record,
)

Make = Callable[[str], FaultyAdapter]


@pytest.fixture
def make(simulator: Any) -> Iterator[Make]:
    made: list[FaultyAdapter] = []

    def factory(defect: str) -> FaultyAdapter:
        adapter = FaultyAdapter(
            defect,
            simulator.fhir_base_url,
            simulator.base_url + "/auth",
            professional=PHYSICIAN_SSIN,
            sleep=lambda _seconds: None,
        )
        made.append(adapter)
        return adapter

    yield factory
    for adapter in made:
        adapter.close()


def product_parts(resource: dict[str, Any]) -> set[str]:
    return {
        part["url"]
        for extension in resource.get("extension", [])
        if extension["url"] == ADMINISTERED_PRODUCT
        for part in extension["extension"]
    }


def test_every_defect_has_a_one_line_description() -> None:
    assert len(DEFECTS) >= 15
    for name, description in DEFECTS.items():
        assert name and description and "\n" not in description


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_every_defect_has_its_test(defect: str) -> None:
    name = "test_" + defect.lower().replace("-", "_")
    assert any(key == name or key.startswith(name + "_") for key in globals()), f"no test for {defect}"


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_every_faulty_adapter_still_reads_an_empty_history(simulator: Any, make: Make, defect: str) -> None:
    result = make(defect).perform(ReadHistory(PATIENT))
    assert result.succeeded and result.vaccinations == ()


def test_an_unknown_defect_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown defect 'nope'.*no-recorder"):
        FaultyAdapter("nope", "http://127.0.0.1:1/fhir", "http://127.0.0.1:1/auth", professional="1")


def test_lot_in_lotnumber(simulator: Any, make: Make) -> None:
    make("lot-in-lotNumber").perform(full_record())  # the register may refuse it: the traffic shows why
    [create] = creates(simulator)
    assert create.request_json["lotNumber"] == "AB1234"
    assert "lotNumber" not in product_parts(create.request_json)
    assert (create.response_status, create.tags.get("rule")) == (422, "profile-invalid")


def test_lot_expiry_lost(simulator: Any, make: Make) -> None:
    make("lot-expiry-lost").perform(full_record())
    [create] = creates(simulator)
    assert product_parts(create.request_json) == {"coded", "lotNumber"}
    assert "expirationDate" not in create.request_json


def recorders(resource: dict[str, Any]) -> list[str]:
    return [
        e["valueReference"]["identifier"]["value"]
        for e in resource.get("extension", [])
        if e["url"] == RECORDER
    ]


def test_no_recorder(simulator: Any, make: Make) -> None:
    make("no-recorder").perform(full_record())
    [create] = creates(simulator)
    assert recorders(create.request_json) == []
    assert (create.response_status, create.tags.get("rule")) == (422, "profile-invalid")


def test_recorder_other_professional(simulator: Any, make: Make) -> None:
    make("recorder-other-professional").perform(full_record())
    [create] = creates(simulator)
    assert recorders(create.request_json) == [OTHER_PROFESSIONAL_NIHDI] != [PHYSICIAN_NIHDI]
    assert (create.response_status, create.tags.get("rule")) == (403, "recorder-mismatch")


def test_wrong_patient_identifier(simulator: Any, make: Make) -> None:
    make("wrong-patient-identifier").perform(full_record())
    [create] = creates(simulator)
    assert create.request_json["patient"] == {"identifier": {"system": WRONG_SSIN_SYSTEM, "value": PATIENT}}
    assert SSIN_SYSTEM not in str(create.request_json)
    assert (create.response_status, create.tags.get("rule")) == (422, "patient-identifier-required")


def test_no_business_identifier(simulator: Any, make: Make) -> None:
    make("no-business-identifier").perform(full_record())
    [create] = creates(simulator)
    assert "identifier" not in create.request_json
    assert create.request_header("if-none-exist") is None
    assert (create.response_status, create.tags.get("rule")) == (422, "business-identifier-missing")


def test_duplicate_on_retry(simulator: Any, make: Make) -> None:
    simulator.faults.add(Fault.commit_then_drop(), "create")
    adapter = make("duplicate-on-retry")
    assert adapter.perform(full_record("dup-1")).succeeded
    assert [e.request_header("if-none-exist") for e in creates(simulator)] == [None, None]
    assert [e.response_status for e in creates(simulator)] == [None, 201]
    history = adapter.perform(ReadHistory(PATIENT))
    assert len(history.vaccinations) == 2
    assert Identifier(IDS, "dup-1") in [v.business_identifier for v in history.vaccinations]


def test_no_retry_reports_success_for_a_dropped_record(simulator: Any, make: Make) -> None:
    simulator.faults.add(Fault.status_error(503), "create")
    adapter = make("no-retry")
    result = adapter.perform(full_record("dropped-1"))
    assert result.succeeded
    assert [e.response_status for e in creates(simulator)] == [503]
    assert adapter.perform(ReadHistory(PATIENT)).vaccinations == ()


def test_ignores_operation_outcome(simulator: Any, make: Make) -> None:
    result = make("ignores-operation-outcome").perform(full_record(occurrence="2099-01-01T10:00:00+01:00"))
    [create] = creates(simulator)
    assert create.response_status == 422
    assert result.succeeded and not result.issues


def test_delete_to_cancel(simulator: Any, make: Make) -> None:
    adapter = make("delete-to-cancel")
    assert adapter.perform(full_record("del-1")).succeeded
    adapter.perform(CancelVaccination(Identifier(IDS, "del-1"), reason="wrong patient"))
    assert [e.method for e in simulator.traffic.exchanges(operation="delete")] == ["DELETE"]
    assert simulator.traffic.exchanges(operation="update") == []


def test_stale_if_match(simulator: Any, make: Make) -> None:
    adapter = make("stale-if-match")
    assert adapter.perform(full_record("stale-1")).succeeded
    adapter.perform(CorrectVaccination(Identifier(IDS, "stale-1"), occurrence="2026-01-19T09:30:00+01:00"))
    [update] = simulator.traffic.exchanges(operation="update")
    assert update.request_header("if-match") is None


def test_new_identifier_on_correction(simulator: Any, make: Make) -> None:
    adapter = make("new-identifier-on-correction")
    assert adapter.perform(full_record("corr-1")).succeeded
    result = adapter.perform(
        CorrectVaccination(
            Identifier(IDS, "corr-1"),
            product=AdministeredProduct(cnk="1234567", lot_number="ZZ9999", expiry="2027-06-30"),
        )
    )
    assert result.succeeded and result.business_identifiers != (Identifier(IDS, "corr-1"),)
    assert len(creates(simulator)) == 2
    assert simulator.traffic.exchanges(operation="update") == []
    assert len(adapter.perform(ReadHistory(PATIENT)).vaccinations) == 2


def test_cancelled_shown_as_valid(simulator: Any, make: Make) -> None:
    adapter = make("cancelled-shown-as-valid")
    assert adapter.perform(full_record("c-1")).succeeded
    assert adapter.perform(CancelVaccination(Identifier(IDS, "c-1"), reason="duplicate")).succeeded
    [update] = simulator.traffic.exchanges(operation="update")
    assert update.response_json["status"] == "entered-in-error"
    [shown] = adapter.perform(ReadHistory(PATIENT)).vaccinations
    assert shown.status == "completed"


def test_first_page_only(simulator: Any, make: Make) -> None:
    adapter = make("first-page-only")
    count = simulator.config.page_size + 2
    for number in range(count):
        assert adapter.perform(full_record(f"page-{number}", care_setting=None)).succeeded
    result = adapter.perform(ReadHistory(PATIENT))
    assert len(result.vaccinations) == simulator.config.page_size < count
    [search] = simulator.traffic.exchanges(operation="search")
    assert any(link["relation"] == "next" for link in search.response_json["link"])


def test_status_reason_unbound(simulator: Any, make: Make) -> None:
    make("status-reason-unbound").perform(
        RecordNotDone(
            patient=PATIENT,
            vaccine=HEP_B,
            status_reason=Coding("http://terminology.hl7.org/CodeSystem/v3-ActReason", "PATOBJ"),
            kind="refusal",
            business_identifier=Identifier(IDS, "nd-1"),
        )
    )
    [create] = creates(simulator)
    [coding] = create.request_json["statusReason"]["coding"]
    assert coding["system"] != "http://terminology.hl7.org/CodeSystem/v3-ActReason"
    assert create.request_json["status"] == "not-done"
    assert (create.response_status, create.tags.get("rule")) == (422, "profile-invalid")


def test_ignores_retry_after(simulator: Any, make: Make) -> None:
    waited: list[float] = []
    adapter = make("ignores-retry-after")
    adapter.sleep = waited.append
    simulator.faults.add(Fault.status_error(429, retry_after=7), "create")
    assert adapter.perform(full_record("ra-1")).succeeded
    assert waited and waited[0] < 7


def test_ssin_in_error_message(simulator: Any, make: Make) -> None:
    result = make("ssin-in-error-message").perform(full_record(occurrence="2099-01-01T10:00:00+01:00"))
    assert result.outcome == "rejected" and PATIENT in (result.message or "")


def test_token_in_url(simulator: Any, make: Make) -> None:
    make("token-in-url").perform(full_record("url-1"))
    [create] = creates(simulator)
    assert "access_token" in dict(create.query_params)


def test_tls_verify_off(make: Make) -> None:
    assert make("tls-verify-off").http._transport._pool._ssl_context.verify_mode.name == "CERT_NONE"


def test_retries_refusals(simulator: Any, make: Make) -> None:
    result = make("retries-refusals").perform(full_record(occurrence="2099-01-01T10:00:00+01:00"))
    assert result.outcome == "rejected"
    assert [e.response_status for e in creates(simulator)] == [422] * 5


def test_undeclared_search_parameter(simulator: Any, make: Make) -> None:
    assert make("undeclared-search-parameter").perform(ReadHistory(PATIENT)).succeeded
    [search] = simulator.traffic.exchanges(operation="search")
    assert "_lastUpdated" in dict(search.query_params)


def test_own_records_only(simulator: Any, make: Make) -> None:
    other = make("no-retry")  # a correct recording under another naming system stands for another software
    other.identifier_system = "https://other.example.org/vaccinations"
    assert other.perform(full_record(business_identifier=None)).succeeded
    adapter = make("own-records-only")
    own = Identifier(adapter.identifier_system, "own-1")
    assert adapter.perform(full_record(business_identifier=own)).succeeded
    shown = adapter.perform(ReadHistory(PATIENT)).vaccinations
    assert [v.business_identifier for v in shown] == [own]


# --- the encrypted variant: each defect is refused by the register with its own rule ---------------------


@pytest.fixture
def sealing(simulator: Any) -> Callable[[str], tuple[Any, Any]]:
    """Record the full vaccination sealed with a defect; the result and the one sealed exchange."""

    def record(defect: str) -> tuple[Any, Any]:
        adapter = FaultyAdapter(
            defect,
            simulator.fhir_base_url,
            simulator.base_url + "/auth",
            professional=PHYSICIAN_SSIN,
            sleep=lambda _seconds: None,
            etee=etee_options(simulator),
        )
        try:
            result = adapter.perform(full_record(encrypted=True))
        finally:
            adapter.close()
        [exchange] = [e for e in simulator.traffic.exchanges() if e.path.startswith("/etee/")]
        assert exchange.response_status == 400 and not result.succeeded
        assert simulator.store.search(identifier=(IDS, "ref-1"))[0] == []
        return result, exchange

    return record


def test_etee_wrong_recipient(sealing: Callable[[str], tuple[Any, Any]]) -> None:
    result, exchange = sealing("etee-wrong-recipient")
    assert exchange.tags["rule"] == "etee-wrong-recipient"
    assert result.outcome == "rejected" and "not for this recipient" in (result.message or "")


def test_etee_tampered(sealing: Callable[[str], tuple[Any, Any]]) -> None:
    result, exchange = sealing("etee-tampered")
    assert exchange.tags["rule"] == "etee-decryption-failed"
    assert "padding" in (result.message or "")


def test_etee_signer_mismatch(sealing: Callable[[str], tuple[Any, Any]]) -> None:
    _result, exchange = sealing("etee-signer-mismatch")
    assert exchange.tags["rule"] == "etee-signer-mismatch"


def test_etee_expired_certificate(sealing: Callable[[str], tuple[Any, Any]]) -> None:
    _result, exchange = sealing("etee-expired-certificate")
    assert exchange.tags["rule"] == "etee-certificate-expired"


def test_etee_stale_signing_time(sealing: Callable[[str], tuple[Any, Any]]) -> None:
    result, exchange = sealing("etee-stale-signing-time")
    assert exchange.tags["rule"] == "etee-signing-time-skew"
    assert "behind now" in (result.message or "")


def test_an_etee_defect_without_etee_options_changes_nothing(simulator: Any, make: Make) -> None:
    assert make("etee-tampered").perform(full_record()).succeeded
    assert make("etee-tampered").perform(full_record(encrypted=True)).outcome == "failed"


@pytest.mark.parametrize("flaw", ["short-key", "outside-pki"])
def test_etee_etk_unchecked(simulator: Any, sealing: Callable[[str], tuple[Any, Any]], flaw: EtkFlaw) -> None:
    depot = simulator.etk_depot
    depot.serve_register_etk(depot.flawed_register_etk(flaw))
    try:
        result, exchange = sealing("etee-etk-unchecked")
    finally:
        depot.serve_register_etk(None)  # the depot is shared by the session's simulators
    assert exchange.tags["rule"] == "etee-wrong-recipient"  # sealed for a key the register does not hold
    assert result.outcome == "rejected"


def test_etee_etk_unchecked_seals_like_the_reference_for_a_sound_etk(simulator: Any) -> None:
    adapter = FaultyAdapter(
        "etee-etk-unchecked",
        simulator.fhir_base_url,
        simulator.base_url + "/auth",
        professional=PHYSICIAN_SSIN,
        sleep=lambda _seconds: None,
        etee=etee_options(simulator),
    )
    try:
        result = adapter.perform(full_record(encrypted=True))
    finally:
        adapter.close()
    assert result.succeeded, result.message
    [create] = [e for e in simulator.traffic.exchanges() if e.path.startswith("/etee/")]
    assert create.response_status == 201
