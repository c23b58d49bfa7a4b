"""The checks of the encrypted variant, each shown to pass on a correct sealed exchange and to fail alone."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from conformance.adapters.faulty import FaultyAdapter
from conformance.adapters.reference import ReferenceAdapter
from conformance.suite import etee_checks
from conformance.suite.checks import CheckFailed
from conformance.suite.endpoint import SimulatorEndpoint
from conformance.suite.software import Action, Software
from tests.test_adapters_etee_client import etee_options
from tests.test_adapters_reference import PHYSICIAN_SSIN, full_record

Perform = Callable[..., Action]


@pytest.fixture
def endpoint(simulator: Any) -> SimulatorEndpoint:
    return SimulatorEndpoint(simulator)


@pytest.fixture
def perform(simulator: Any, endpoint: SimulatorEndpoint) -> Iterator[Perform]:
    """Record the full vaccination sealed, with the reference client or a faulty one; the Action."""
    made: list[Software] = []

    def run(defect: str | None = None, **changes: Any) -> Action:
        options: dict[str, Any] = {
            "professional": PHYSICIAN_SSIN,
            "sleep": lambda _seconds: None,
            "etee": etee_options(simulator),
        }
        urls = (simulator.fhir_base_url, simulator.base_url + "/auth")
        adapter = FaultyAdapter(defect, *urls, **options) if defect else ReferenceAdapter(*urls, **options)
        software = Software(adapter, endpoint, builtin=True)
        made.append(software)
        return software.perform(full_record(encrypted=True, **changes))

    yield run
    for software in made:
        software.close()


def failure(check: Callable[[], object]) -> str:
    with pytest.raises(CheckFailed) as raised:
        check()
    return str(raised.value)


def test_a_correct_sealed_exchange_passes_every_check(perform: Perform, endpoint: SimulatorEndpoint) -> None:
    action = perform()
    sealed = etee_checks.unsealed_by_register(action)
    certificates = etee_checks.fetched_register_etk(action.exchanges, sealed)
    assert certificates == [endpoint.simulator.etk_depot.register_etk.encryption_certificate]
    etee_checks.sealed_for(sealed, certificates)
    assert etee_checks.unsealed_payload(endpoint, sealed)["resourceType"] == "Immunization"
    etee_checks.answered_sealed(action, sealed, endpoint)


def test_a_refused_message_names_the_register_rule(perform: Perform) -> None:
    message = failure(lambda: etee_checks.unsealed_by_register(perform("etee-signer-mismatch")))
    assert "refused the sealed message with rule etee-signer-mismatch" in message
    assert "HTTP 400, rule etee-signer-mismatch: inner signer" in message
    assert "where:    POST /etee/fhir/Immunization -> 400" in message


def test_a_message_for_another_key_fails_the_envelope_check(perform: Perform) -> None:
    action = perform("etee-wrong-recipient")
    sealed = etee_checks.last_sealed(action)
    certificates = etee_checks.fetched_register_etk(action.exchanges, sealed)
    message = failure(lambda: etee_checks.sealed_for(sealed, certificates))
    assert "no recipient names Vaccicard's encryption certificate (recipients: serial" in message
    assert "SignedData > EnvelopedData" in message


def test_sealing_without_a_depot_lookup_fails(perform: Perform) -> None:
    action = perform()
    sealed = etee_checks.last_sealed(action)
    message = failure(lambda: etee_checks.fetched_register_etk([sealed], sealed))
    assert "did not fetch Vaccicard's ETK" in message and "no request to the ETK depot" in message
    assert "identifierType=CBE&identifierValue=0811122215&applicationId=VACCICARD" in message


def test_the_jwks_form_of_the_depot_counts_as_a_lookup(
    simulator: Any, perform: Perform, endpoint: SimulatorEndpoint
) -> None:
    mark = endpoint.mark()
    query = {"identifier": "0811122215", "type": "CBE", "applicationIdentifier": "VACCICARD", "use": "enc"}
    assert httpx.get(simulator.base_url + "/etkdepot/etee/v1/pubKeys/cacerts/jwks", params=query).is_success
    [jwks] = endpoint.exchanges(mark)
    sealed = etee_checks.last_sealed(perform())
    found = etee_checks.fetched_register_etk([jwks], sealed)
    assert found == [simulator.etk_depot.register_etk.encryption_certificate]


def test_a_tampered_message_cannot_be_opened(perform: Perform, endpoint: SimulatorEndpoint) -> None:
    sealed = etee_checks.last_sealed(perform("etee-tampered"))
    message = failure(lambda: etee_checks.unsealed_payload(endpoint, sealed))
    assert "cannot be opened with Vaccicard's key" in message and "etee-decryption-failed" in message


def test_a_plain_answer_is_not_a_sealed_success(perform: Perform, endpoint: SimulatorEndpoint) -> None:
    action = perform("etee-stale-signing-time")
    sealed = etee_checks.last_sealed(action)
    message = failure(lambda: etee_checks.answered_sealed(action, sealed, endpoint))
    assert "not a sealed success signed by Vaccicard" in message and "HTTP 400" in message


def test_showing_another_record_fails(perform: Perform, endpoint: SimulatorEndpoint) -> None:
    action = perform()
    shown = dataclasses.replace(action.result, record_ids=("not-the-record",))
    wrong = dataclasses.replace(action, result=shown)
    message = failure(lambda: etee_checks.answered_sealed(wrong, etee_checks.last_sealed(wrong), endpoint))
    assert "did not show the record the register created" in message and "not-the-record" in message


def test_an_action_without_a_sealed_message_fails(perform: Perform) -> None:
    action = perform()
    plain = dataclasses.replace(action, exchanges=())
    assert "sent no sealed message" in failure(lambda: etee_checks.last_sealed(plain))
