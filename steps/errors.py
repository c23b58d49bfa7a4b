"""Refusals and outages: the faults the register is told to produce, and how the software copes."""

from __future__ import annotations

import dataclasses

from pytest_bdd import given, parsers, then, when

from conformance.simulator.faults import Fault
from conformance.suite import checks
from conformance.suite.endpoint import Endpoint
from conformance.suite.results import judges
from conformance.suite.software import Action, Software

TIMEOUT_FAULT_SECONDS = 3.0
"""How long the register keeps a request unanswered: longer than the built-in clients wait."""


@given(parsers.parse("the register will answer the next create with {status:d} and Retry-After {seconds:d}"))
def answers_with(endpoint: Endpoint, status: int, seconds: int) -> None:
    endpoint.add_fault(Fault.status_error(status, retry_after=seconds), "create")


@given("the register will answer every create with 503 until it is back")
def unavailable(endpoint: Endpoint) -> None:
    endpoint.add_fault(Fault.status_error(503), "create", times=None)


@given("the register will not answer the next create in time")
def no_answer(endpoint: Endpoint) -> None:
    endpoint.add_fault(Fault.timeout(TIMEOUT_FAULT_SECONDS), "create")


@given("the register will store the next create and then drop the connection")
def answer_lost(endpoint: Endpoint) -> None:
    endpoint.add_fault(Fault.commit_then_drop(), "create")


@given("the register will answer the next update with 412 because the record changed")
def conflict(endpoint: Endpoint) -> None:
    message = "the record changed since you read it: read it again and re-apply your change"
    endpoint.add_fault(Fault.status_error(412, message=message), "update")


@given(parsers.parse('the register will refuse the next create with {status:d} "{message}"'))
def refuses_next(endpoint: Endpoint, status: int, message: str) -> None:
    endpoint.add_fault(Fault.status_error(status, message=message), "create")


@when(
    "the register is back and the professional sends the pending vaccination again", target_fixture="action"
)
def back_again(endpoint: Endpoint, software: Software, action: Action) -> Action:
    endpoint.reset_faults()
    return software.perform_again(action)


@when(
    parsers.parse("the professional fixes the date to {occurrence} and sends the vaccination again"),
    target_fixture="action",
)
def fixes_date(software: Software, action: Action, occurrence: str) -> Action:
    return software.perform(dataclasses.replace(action.intent, occurrence=occurrence))  # type: ignore[type-var]


@then("the software sent the create again with the same business identifier")
@judges("VC-RES-01")
def sent_again(action: Action) -> None:
    checks.sent_again(action)
    checks.same_identifier_on_creates(action)


@then("the software waited as Retry-After said before sending again")
@judges("VC-RES-01", "VC-RES-02")
def waited(action: Action) -> None:
    checks.waited_retry_after(action)


@then("the software told the user the register is unavailable")
@judges("VC-RES-05")
def told_unavailable(action: Action) -> None:
    checks.told_unavailable(action)
