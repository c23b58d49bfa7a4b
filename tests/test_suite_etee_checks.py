"""The checks of the encrypted variant, each shown to pass on a correct sealed exchange and to fail alone."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from conformance.adapters.faulty import FaultyAdapter
from conformance.adapters.reference import ReferenceAdapter
from conformance.simulator.etk_depot import EtkFlaw
from conformance.suite import etee_checks
from conformance.suite.checks import CheckFailed
from conformance.suite.endpoint import ProxyEndpoint, SimulatorEndpoint
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


# --- a flawed Vaccicard ETK: the software must check it and send nothing -------------------------------


@pytest.fixture
def flawed(simulator: Any, endpoint: SimulatorEndpoint) -> Iterator[Callable[[EtkFlaw], None]]:
    """Have the depot offer a flawed Vaccicard ETK; the simulator is reset afterwards (its depot is shared)."""
    yield endpoint.offer_flawed_register_etk
    simulator.reset()


@pytest.mark.parametrize("flaw", ["short-key", "outside-pki"])
def test_a_client_that_checks_the_etk_passes_the_flawed_etk_checks(
    perform: Perform, flawed: Callable[[EtkFlaw], None], flaw: EtkFlaw
) -> None:
    flawed(flaw)
    action = perform()
    [lookup] = etee_checks.fetched_offered_etk(action)
    assert lookup.operation == "etk-lookup"
    etee_checks.sent_no_vaccination(action)
    etee_checks.told_etk_untrusted(action)
    assert "ETK from the depot fails its checks" in (action.result.message or "")


def test_a_client_that_seals_for_a_flawed_etk_fails_the_not_sent_check(
    perform: Perform, flawed: Callable[[EtkFlaw], None]
) -> None:
    flawed("short-key")
    action = perform("etee-etk-unchecked")
    etee_checks.fetched_offered_etk(action)
    message = failure(lambda: etee_checks.sent_no_vaccination(action))
    assert "sent the vaccination although Vaccicard's ETK fails its checks" in message
    assert (
        "POST /etee/fhir/Immunization -> 400 (the register refused with rule etee-wrong-recipient)" in message
    )


def test_a_vaccination_sent_in_the_clear_fails_the_not_sent_check(
    simulator: Any, endpoint: SimulatorEndpoint
) -> None:
    urls = (simulator.fhir_base_url, simulator.base_url + "/auth")
    software = Software(
        ReferenceAdapter(*urls, professional=PHYSICIAN_SSIN, sleep=lambda _seconds: None),
        endpoint,
        builtin=True,
    )
    try:
        action = software.perform(full_record())
    finally:
        software.close()
    message = failure(lambda: etee_checks.sent_no_vaccination(action))
    assert "POST /fhir/Immunization -> 201" in message
    assert "did not fetch Vaccicard's ETK" in failure(lambda: etee_checks.fetched_offered_etk(action))


def test_a_client_that_never_asks_the_depot_fails_the_fetch_check(perform: Perform) -> None:
    action = dataclasses.replace(perform(), exchanges=())
    message = failure(lambda: etee_checks.fetched_offered_etk(action))
    assert (
        "did not fetch Vaccicard's ETK from the ETK depot" in message
        and "no request to the ETK depot" in message
    )


@pytest.mark.parametrize(
    ("outcome", "text"),
    [
        ("succeeded", "Vaccination recorded"),
        ("failed", None),
        ("rejected", "  "),
    ],
)
def test_the_user_must_be_told_about_the_etk(perform: Perform, outcome: str, text: str | None) -> None:
    action = perform()
    shown = dataclasses.replace(action.result, outcome=outcome, message=text)
    message = failure(lambda: etee_checks.told_etk_untrusted(dataclasses.replace(action, result=shown)))
    assert "did not tell the user that the register's encryption key cannot be trusted" in message
    assert f"outcome {outcome}: {text or '(no message)'}" in message


def test_any_message_in_any_language_counts(perform: Perform) -> None:
    action = perform()
    shown = dataclasses.replace(
        action.result, outcome="failed", message="La clé du registre n'est pas fiable"
    )
    etee_checks.told_etk_untrusted(dataclasses.replace(action, result=shown))


def test_reset_restores_the_registers_own_etk(
    simulator: Any, endpoint: SimulatorEndpoint, perform: Perform
) -> None:
    endpoint.offer_flawed_register_etk("outside-pki")
    simulator.reset()
    action = perform()
    etee_checks.unsealed_by_register(action)
    assert action.result.succeeded


def test_a_live_register_cannot_offer_a_flawed_etk() -> None:
    proxy = ProxyEndpoint(None, None, iam_base_url="", environment="acceptance", search=lambda _params: [])
    with pytest.raises(pytest.skip.Exception, match="flawed Vaccicard ETK"):
        proxy.offer_flawed_register_etk("short-key")
