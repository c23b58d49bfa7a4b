"""Connection: the CapabilityStatement, the IAM Connect login, tokens, and TLS."""

from __future__ import annotations

from typing import Any

import httpx
from pytest_bdd import given, then

from conformance.suite import checks
from conformance.suite.endpoint import Endpoint, SimulatorEndpoint
from conformance.suite.plugin import SuiteOptions, software_for
from conformance.suite.results import judges
from conformance.suite.software import Action, Software


@given("the professional's IAM Connect session has ended")
def sessions_ended(endpoint: Endpoint) -> None:
    endpoint.end_sessions()


@given("every token the software holds has expired")
def tokens_expired(endpoint: Endpoint) -> None:
    endpoint.expire_tokens()


@given("the register presents a TLS certificate that no trusted authority issued", target_fixture="software")
def untrusted(
    suite: SuiteOptions, untrusted_endpoint: SimulatorEndpoint, builtin_options: dict[str, Any]
) -> Software:
    return software_for(suite, untrusted_endpoint, builtin_options)


@then(
    "every request of the software used an interaction and search parameters the CapabilityStatement states"
)
@judges("VC-CON-01")
def within_capabilities(action: Action, endpoint: Endpoint) -> None:
    capability = httpx.get(endpoint.fhir_base_url + "/metadata", headers={"Accept": "application/fhir+json"})
    capability.raise_for_status()
    checks.within_capabilities(action, capability.json())


@then("the software logged in with the authorisation code flow and PKCE S256")
@judges("VC-CON-02")
def pkce(software: Software) -> None:
    checks.pkce_login([e for a in software.actions for e in a.exchanges])


@then("the software exchanged the token for one meant for Vaccicard")
@judges("VC-CON-03")
def exchanged(software: Software) -> None:
    checks.exchanged_tokens([e for a in software.actions for e in a.exchanges])


@then("every request to the register carried that token in the Authorization header only")
@judges("VC-SEC-02")
def bearer_only(software: Software) -> None:
    exchanges = [e for a in software.actions for e in a.exchanges]
    checks.bearer_only_in_header(exchanges, checks.exchanged_tokens(exchanges))


@then("the register answered the software 401 because the token had expired")
@judges("VC-CON-04")
def answered_401(action: Action) -> None:
    checks.answered_expired(action)


@then("the software renewed its token")
@judges("VC-CON-04")
def renewed(action: Action) -> None:
    checks.renewed_after(action, checks.answered_expired(action))


@then("the register received nothing over that connection")
@judges("VC-SEC-03")
def nothing(action: Action) -> None:
    checks.nothing_received(action)
