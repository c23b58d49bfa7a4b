"""The reference client's encrypted variant against a running simulator: ETK from the depot, sealed create."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conformance.adapters.etee_client import (
    REGISTER_APPLICATION_ID,
    REGISTER_HOLDER,
    EteeOptions,
)
from conformance.adapters.intents import Identifier, RecordNotDone, RecordVaccination
from conformance.adapters.reference import ReferenceAdapter
from conformance.errors import ConfigurationError
from conformance.etee.pki import HolderId, TestPki
from conformance.etee.seal import unseal
from conformance.simulator.etk_depot import REGISTER_APPLICATION_ID as SIMULATOR_APPLICATION_ID
from conformance.simulator.etk_depot import REGISTER_HOLDER as SIMULATOR_REGISTER
from tests.test_adapters_reference import HEP_B, IDS, PATIENT, PHYSICIAN_SSIN, full_record

Make = Callable[..., ReferenceAdapter]


def etee_options(simulator: Any, **changes: Any) -> EteeOptions:
    depot = simulator.etk_depot

    def keys(ssin: str) -> Any:
        found = depot.lookup(HolderId("SSIN", ssin))
        return found[0].holder if found else None

    options = EteeOptions(
        depot_url=simulator.base_url + "/etkdepot",
        endpoint_url=simulator.base_url + "/etee/fhir/Immunization",
        keys=keys,
        trust_anchors=depot.trust_anchors,
    )
    return dataclasses.replace(options, **changes)


@pytest.fixture
def make(simulator: Any) -> Iterator[Make]:
    made: list[ReferenceAdapter] = []

    def factory(**changes: Any) -> ReferenceAdapter:
        etee = changes.pop("etee", etee_options(simulator))
        adapter = ReferenceAdapter(
            simulator.fhir_base_url,
            simulator.base_url + "/auth",
            professional=PHYSICIAN_SSIN,
            sleep=lambda _seconds: None,
            etee=etee,
            **changes,
        )
        made.append(adapter)
        return adapter

    yield factory
    for adapter in made:
        adapter.close()


def sealed(simulator: Any) -> list[Any]:
    return [e for e in simulator.traffic.exchanges() if e.path.startswith("/etee/")]


def depot_lookups(simulator: Any) -> list[Any]:
    return [e for e in simulator.traffic.exchanges() if e.operation == "etk-lookup"]


def test_the_client_knows_the_register_as_the_simulator_publishes_it() -> None:
    assert (REGISTER_HOLDER, REGISTER_APPLICATION_ID) == (SIMULATOR_REGISTER, SIMULATOR_APPLICATION_ID)


def test_an_encrypted_record_is_sealed_for_vaccicard_and_the_answer_opened(
    simulator: Any, make: Make
) -> None:
    result = make().perform(full_record(encrypted=True))
    assert result.outcome == "succeeded", result.message
    [lookup] = depot_lookups(simulator)
    assert dict(lookup.query_params) == {
        "identifierType": "CBE",
        "identifierValue": "0811122215",
        "applicationId": "VACCICARD",
    }
    [create] = sealed(simulator)
    assert lookup.id < create.id and create.response_status == 201
    assert create.request_header("content-type") == "application/pkcs7-mime"
    assert create.request_header("if-none-exist") == f"identifier={IDS}|ref-1"
    assert create.request_header("authorization").startswith("Bearer sha256:")
    assert create.response_header("content-type") == "application/pkcs7-mime"
    assert create.tags["etee"]["inner_scheme"] == "pss" and "rule" not in create.tags
    opened = unseal(create.request_body, recipient=simulator.etk_depot.register.encryption)
    assert b'"resourceType":"Immunization"' in opened.payload.replace(b" ", b"")
    [stored] = simulator.store.search(identifier=(IDS, "ref-1"))[0]
    assert result.record_ids == (stored.resource["id"],)


def test_the_etk_is_fetched_once_and_a_second_send_is_a_conditional_create(
    simulator: Any, make: Make
) -> None:
    adapter = make()
    first = adapter.perform(full_record(encrypted=True))
    again = adapter.perform(full_record(encrypted=True))
    assert first.succeeded and again.succeeded and "already in the register" in (again.message or "")
    assert len(depot_lookups(simulator)) == 1
    assert [e.response_status for e in sealed(simulator)] == [201, 200]
    assert len(simulator.store.search(identifier=(IDS, "ref-1"))[0]) == 1


def test_a_not_done_is_sealed_too(simulator: Any, make: Make) -> None:
    from conformance.adapters.intents import Coding

    intent = RecordNotDone(
        patient=PATIENT,
        vaccine=HEP_B,
        status_reason=Coding("http://terminology.hl7.org/CodeSystem/v3-ActReason", "PATOBJ"),
        kind="refusal",
        business_identifier=Identifier(IDS, "nd-1"),
        encrypted=True,
    )
    result = make().perform(intent)
    assert result.succeeded, result.message
    [create] = sealed(simulator)
    assert create.response_status == 201


def test_a_register_refusal_comes_back_sealed_and_is_shown(simulator: Any, make: Make) -> None:
    result = make().perform(full_record(encrypted=True, occurrence="2099-01-01T10:00:00+01:00"))
    assert result.outcome == "rejected" and "future" in (result.message or "")
    [create] = sealed(simulator)
    assert (
        create.response_status == 422 and create.response_header("content-type") == "application/pkcs7-mime"
    )


def test_without_etee_options_an_encrypted_intent_fails_and_nothing_is_sent(
    simulator: Any, make: Make
) -> None:
    result = make(etee=None).perform(full_record(encrypted=True))
    assert result.outcome == "failed" and "not configured" in (result.message or "")
    assert simulator.traffic.exchanges() == []


def test_an_etk_that_does_not_chain_to_the_trust_anchors_is_not_used(simulator: Any, make: Make) -> None:
    elsewhere = TestPki.generate("Another CA")
    result = make(etee=etee_options(simulator, trust_anchors=elsewhere.trust_anchors)).perform(
        full_record(encrypted=True)
    )
    assert result.outcome == "failed"
    assert "Vaccicard's ETK from the depot fails its checks" in (result.message or "")
    assert "not trusted" in (result.message or "")
    assert len(depot_lookups(simulator)) == 1 and sealed(simulator) == []


def test_an_etk_naming_another_holder_is_not_used(simulator: Any, make: Make) -> None:
    alias = HolderId("NIHII11", "10000106003")  # the depot answers the physician's ETK, named by SSIN
    result = make(etee=etee_options(simulator, register=alias, application_id=None)).perform(
        full_record(encrypted=True)
    )
    assert result.outcome == "failed" and "not NIHII11=10000106003" in (result.message or "")
    assert sealed(simulator) == []


def test_a_professional_without_keys_seals_nothing(simulator: Any, make: Make) -> None:
    result = make(etee=etee_options(simulator, keys=lambda _ssin: None)).perform(full_record(encrypted=True))
    assert result.outcome == "failed" and "no eHealth keys" in (result.message or "")
    assert PHYSICIAN_SSIN not in (result.message or "")
    assert sealed(simulator) == [] and depot_lookups(simulator) == []


def test_an_unreachable_depot_is_a_failure(simulator: Any, make: Make) -> None:
    result = make(etee=etee_options(simulator, depot_url="http://127.0.0.1:9/etkdepot")).perform(
        full_record(encrypted=True)
    )
    assert result.outcome == "failed" and "ETK depot cannot be reached" in (result.message or "")
    assert sealed(simulator) == []


def test_an_unknown_register_in_the_depot_is_a_failure(simulator: Any, make: Make) -> None:
    unknown = HolderId("CBE", "0203201340")
    result = make(etee=etee_options(simulator, register=unknown)).perform(full_record(encrypted=True))
    assert result.outcome == "failed" and "answered HTTP 404" in (result.message or "")


def test_options_without_trust_anchors_are_refused(simulator: Any) -> None:
    with pytest.raises(ConfigurationError, match="trust anchor"):
        etee_options(simulator, trust_anchors=())


def test_plain_requests_pass_through_the_sealing_transport(simulator: Any, make: Make) -> None:
    result = make().perform(RecordVaccination(patient=PATIENT, vaccine=HEP_B, occurrence="2026-01-20"))
    assert result.succeeded and sealed(simulator) == [] and depot_lookups(simulator) == []
    [create] = simulator.traffic.exchanges(operation="create")
    assert create.path == "/fhir/Immunization" and isinstance(create.request_json, dict)
