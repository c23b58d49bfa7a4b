"""The encrypted variant: a vaccination sealed for Vaccicard, and the checks on the sealed exchange."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pytest_bdd import given, then, when

from conformance.suite import checks, etee_checks
from conformance.suite.endpoint import Endpoint
from conformance.suite.software import Action, Software
from steps.registration import _RECORD_ROWS, table, vaccination


@given("the register offers the encrypted variant, with its ETK in the ETK depot")
def offers_encrypted_variant(endpoint: Endpoint) -> None:
    if endpoint.kind != "simulator":  # only there does the harness hold the register's key to judge it
        pytest.skip(
            "the encrypted variant is judged on the simulator (the harness opens the sealed messages with "
            "the register's key) or in the manual session"
        )


@given("the ETK depot offers a Vaccicard ETK whose encryption key has only 1024 bits")
def offers_short_key_etk(endpoint: Endpoint) -> None:
    endpoint.offer_flawed_register_etk("short-key")


@given("the ETK depot offers a Vaccicard ETK signed by an authentication certificate outside the eHealth PKI")
def offers_untrusted_etk(endpoint: Endpoint) -> None:
    endpoint.offer_flawed_register_etk("outside-pki")


@when("the professional records a vaccination through the encrypted variant:", target_fixture="action")
def records_sealed(
    software: Software, datatable: list[list[str]], vocabulary: Any, patient: Any, professional: Any
) -> Action:
    intent = vaccination(table(datatable, _RECORD_ROWS), vocabulary, patient, professional)
    return software.perform(dataclasses.replace(intent, encrypted=True))


@then("the register unsealed the message: both signatures valid, the same signer, signed within five minutes")
def register_unsealed(action: Action) -> None:
    etee_checks.unsealed_by_register(action)


@then("the software fetched Vaccicard's ETK from the ETK depot before sealing")
def fetched_etk(action: Action, software: Software) -> None:
    exchanges = [e for done in software.actions for e in done.exchanges]
    etee_checks.fetched_register_etk(exchanges, etee_checks.last_sealed(action))


@then("the software fetched Vaccicard's ETK from the ETK depot")
def fetched_offered_etk(action: Action) -> None:
    etee_checks.fetched_offered_etk(action)


@then("the software did not send the vaccination, sealed or in the clear")
def sent_no_vaccination(action: Action) -> None:
    etee_checks.sent_no_vaccination(action)


@then("the software told the user the register's encryption key could not be trusted")
def told_etk_untrusted(action: Action) -> None:
    etee_checks.told_etk_untrusted(action)


@then("the message is sealed for the key of that ETK: AES-128-CBC, the key sent with RSA PKCS#1 v1.5")
def sealed_for_etk(action: Action, software: Software) -> None:
    sealed = etee_checks.last_sealed(action)
    exchanges = [e for done in software.actions for e in done.exchanges]
    etee_checks.sealed_for(sealed, etee_checks.fetched_register_etk(exchanges, sealed))


@then("the register answered sealed by Vaccicard, and the software showed the record it created")
def answered_sealed(action: Action, endpoint: Endpoint) -> None:
    etee_checks.answered_sealed(action, etee_checks.last_sealed(action), endpoint)


@then("the unsealed Immunization conforms to be-vaccination")
def unsealed_conforms(action: Action, endpoint: Endpoint, suite_validator: Any) -> None:
    sealed = etee_checks.last_sealed(action)
    checks.conforms(suite_validator, sealed, etee_checks.unsealed_payload(endpoint, sealed))


@then("it names the patient by SSIN, the logged-in professional as recorder and one business identifier")
def unsealed_names(action: Action, endpoint: Endpoint, patient: Any, professional: Any) -> None:
    sealed = etee_checks.last_sealed(action)
    resource = etee_checks.unsealed_payload(endpoint, sealed)
    checks.patient_by_ssin(sealed, resource, patient.ssin)
    checks.recorder_is(sealed, resource, professional.nihii11)
    checks.one_business_identifier(sealed, resource)
