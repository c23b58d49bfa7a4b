"""Tests of fault injection: the ``FaultPlan`` itself, and each fault kind applied by the FHIR API.

The API fixtures come from ``test_simulator_fhir_api``; the sleep function is replaced so delay and
timeout faults record how long they would wait instead of waiting.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from conformance.simulator.faults import (
    DEFAULT_TIMEOUT_SECONDS,
    Fault,
    FaultPlan,
    InvalidFault,
    ScheduledFault,
)
from conformance.simulator.fhir_api import Rule
from conformance.simulator.http import DropConnection, HttpRequest
from tests import test_simulator_fhir_api as fhir_tests
from tests.test_simulator_fhir_api import FHIR_JSON, VENDOR_IDS, Harness, body, immunization, rule_of

# the FHIR API tests' fixtures, shared
data = fhir_tests.data
realm_keys = fhir_tests.realm_keys
org_keys = fhir_tests.org_keys
iam_clock = fhir_tests.iam_clock
iam = fhir_tests.iam
validator = fhir_tests.validator
make_harness = fhir_tests.make_harness
h = fhir_tests.h

# --- the plan -----------------------------------------------------------------------------------------


def test_faults_are_taken_in_order_for_their_operation_and_used_up() -> None:
    plan = FaultPlan()
    plan.add(Fault.status_error(503), "create", times=2)
    plan.add(Fault.reset(), "read")
    assert plan.take("search") is None
    assert plan.take("read") == Fault.reset()
    assert plan.take("read") is None
    assert plan.take("create") == Fault.status_error(503)
    assert [entry.times for entry in plan.pending()] == [1]
    assert plan.take("create") == Fault.status_error(503)
    assert plan.take("create") is None
    assert len(plan) == 0


def test_any_matches_every_operation_and_none_times_means_until_cleared() -> None:
    plan = FaultPlan()
    plan.add(Fault.delay(1.5), "any", times=None)
    for operation in ("create", "read", "metadata", "validate"):
        assert plan.take(operation) == Fault.delay(1.5)
    assert len(plan) == 1
    assert plan.clear() == 1
    assert plan.take("create") is None


def test_an_earlier_any_fault_is_taken_before_a_later_specific_one() -> None:
    plan = FaultPlan()
    plan.add(Fault.reset(), "any")
    plan.add(Fault.status_error(500), "create")
    assert plan.take("create") == Fault.reset()
    assert plan.take("create") == Fault.status_error(500)


def test_faults_json_round_trip_and_the_admin_shape() -> None:
    plan = FaultPlan()
    entry = plan.add_json(
        {"operation": "create", "times": 2, "kind": "status", "status": 503, "retry_after": 2}
    )
    assert entry.fault == Fault.status_error(503, retry_after=2)
    assert (entry.operation, entry.times) == ("create", 2)
    plan.add(Fault.timeout(), "update")
    plan.add(Fault.commit_then_drop())
    shape = plan.to_json()
    assert shape[0] == {
        "operation": "create",
        "times": 2,
        "id": 1,
        "kind": "status",
        "status": 503,
        "retry_after": 2,
    }
    assert shape[1]["seconds"] == DEFAULT_TIMEOUT_SECONDS
    copy = FaultPlan.from_json(orjson.loads(orjson.dumps(shape)))
    assert [(e.fault, e.operation, e.times) for e in copy.pending()] == [
        (e.fault, e.operation, e.times) for e in plan.pending()
    ]
    assert ScheduledFault.from_json({"kind": "reset"}).operation == "any"
    assert Fault.from_json(Fault.delay(2).to_json()) == Fault.delay(2)


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "explode"},
        {},
        {"kind": "status"},
        {"kind": "status", "status": 200},
        {"kind": "status", "status": "503"},
        {"kind": "status", "status": 503, "retry_after": -1},
        {"kind": "status", "status": 503, "retry_after": 1.5},
        {"kind": "delay"},
        {"kind": "delay", "seconds": 0},
        {"kind": "delay", "seconds": 1e9},
        {"kind": "delay", "seconds": float("nan")},
        {"kind": "delay", "seconds": True},
        {"kind": "reset", "status": 503},
        {"kind": "reset", "seconds": 3},
        {"kind": "reset", "retry_after": 3},
        {"kind": "reset", "colour": "red"},
        {"kind": "reset", "operation": "delete-everything"},
        {"kind": "reset", "times": 0},
        {"kind": "reset", "times": "2"},
        {"kind": "reset", "message": 5},
        ["reset"],
    ],
)
def test_unusable_fault_descriptions_are_refused(spec: Any) -> None:
    with pytest.raises(InvalidFault):
        FaultPlan().add_json(spec)


def test_the_plan_is_thread_safe() -> None:
    plan = FaultPlan()
    plan.add(Fault.status_error(503), "create", times=500)
    taken: list[Fault | None] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(100):
            fault = plan.take("create")
            with lock:
                taken.append(fault)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(1 for fault in taken if fault is not None) == 500
    assert plan.pending() == []


# --- the API applying them ----------------------------------------------------------------------------


def test_the_next_two_creates_fail_with_503_then_creates_work(h: Harness) -> None:
    h.faults.add(Fault.status_error(503), "create", times=2)
    for _ in range(2):
        response = h.create(immunization())
        assert response.status == 503
        assert rule_of(response) == Rule.FAULT_INJECTED
        assert body(response)["issue"][0]["code"] == "transient"
        assert response.annotations["fault"] == "status"
        assert response.annotations["operation"] == "create"
    assert h.store.search()[1] == 0
    response = h.create(immunization())
    assert response.status == 201
    assert response.annotations["fault"] is None


def test_429_with_retry_after(h: Harness) -> None:
    h.faults.add(Fault.status_error(429, retry_after=2), "create")
    response = h.create(immunization())
    assert response.status == 429
    assert response.headers["Retry-After"] == "2"
    assert body(response)["issue"][0]["code"] == "throttled"


def test_a_status_fault_comes_before_authentication(h: Harness) -> None:
    h.faults.add(Fault.status_error(502, message="bad gateway (simulated)"), "read")
    response = h.call("GET", "/fhir/Immunization/abc", as_=None)
    assert response.status == 502
    assert "bad gateway" in body(response)["issue"][0]["details"]["text"]


def test_a_fault_for_another_operation_does_not_fire(h: Harness) -> None:
    h.faults.add(Fault.status_error(503), "search")
    assert h.create(immunization()).status == 201
    assert len(h.faults) == 1


def test_unrouted_requests_take_no_fault(h: Harness) -> None:
    h.faults.add(Fault.reset(), "any")
    assert h.call("GET", "/fhir/Patient").status == 404
    assert h.call("PATCH", "/fhir/Immunization/abc").status == 405
    assert len(h.faults) == 1


def test_delay_waits_then_processes(h: Harness) -> None:
    h.faults.add(Fault.delay(5), "create")
    response = h.create(immunization())
    assert response.status == 201
    assert h.sleeps == [5]
    assert response.annotations["fault"] == "delay"


def test_metadata_and_validate_can_be_faulted(h: Harness) -> None:
    h.faults.add(Fault.status_error(503), "metadata")
    h.faults.add(Fault.status_error(500), "validate")
    assert h.call("GET", "/fhir/metadata", as_=None).status == 503
    assert h.call("POST", "/fhir/Immunization/$validate", immunization()).status == 500


def raw_create(h: Harness, resource: dict[str, Any], headers: dict[str, str] | None = None) -> HttpRequest:
    all_headers = {"authorization": f"Bearer {h.token()}", "content-type": FHIR_JSON, **(headers or {})}
    return HttpRequest("POST", "/fhir/Immunization", {}, all_headers, orjson.dumps(resource))


def test_reset_drops_the_connection_before_processing(h: Harness) -> None:
    h.faults.add(Fault.reset(), "create")
    with pytest.raises(DropConnection) as dropped:
        h.api.handle(raw_create(h, immunization()))
    assert dropped.value.annotations["fault"] == "reset"
    assert dropped.value.annotations["operation"] == "create"
    assert h.store.search()[1] == 0
    assert h.sleeps == []


def test_timeout_waits_longer_than_the_client_then_drops(h: Harness) -> None:
    h.faults.add(Fault.timeout(), "read")
    with pytest.raises(DropConnection) as dropped:
        h.api.handle(
            HttpRequest("GET", "/fhir/Immunization/abc", {}, {"authorization": f"Bearer {h.token()}"})
        )
    assert h.sleeps == [DEFAULT_TIMEOUT_SECONDS]
    assert dropped.value.annotations["fault"] == "timeout"
    assert dropped.value.annotations["resource_id"] == "abc"


def test_commit_then_drop_keeps_the_record_and_a_retry_shows_why_conditional_create_matters(
    h: Harness,
) -> None:
    h.faults.add(Fault.commit_then_drop(), "create")
    with pytest.raises(DropConnection) as dropped:
        h.api.handle(raw_create(h, immunization("lost-answer")))
    notes = dropped.value.annotations
    assert (notes["fault"], notes["committed"], notes["status"]) == ("commit_then_drop", True, 201)
    records, total = h.store.search()
    assert total == 1 and notes["resource_id"] == records[0].id
    # the client never saw an answer: a blind retry is refused, a conditional one finds the record
    assert h.create(immunization("lost-answer")).status == 409
    retry = h.create(
        immunization("lost-answer"), headers={"If-None-Exist": f"identifier={VENDOR_IDS}|lost-answer"}
    )
    assert retry.status == 200 and body(retry)["id"] == records[0].id
    assert h.store.search()[1] == 1


def test_commit_then_drop_on_a_refused_write_says_nothing_was_committed(h: Harness) -> None:
    h.faults.add(Fault.commit_then_drop(), "create")
    resource = immunization()
    del resource["vaccineCode"]
    with pytest.raises(DropConnection) as dropped:
        h.api.handle(raw_create(h, resource))
    assert dropped.value.annotations["committed"] is False
    assert dropped.value.annotations["status"] == 422
    assert h.store.search()[1] == 0


def test_commit_then_drop_on_an_update(h: Harness) -> None:
    record = h.created()
    h.faults.add(Fault.commit_then_drop(), "update")
    headers = {"authorization": f"Bearer {h.token()}", "content-type": FHIR_JSON}
    cancelled = dict(record, status="entered-in-error")
    request = HttpRequest("PUT", f"/fhir/Immunization/{record['id']}", {}, headers, orjson.dumps(cancelled))
    with pytest.raises(DropConnection) as dropped:
        h.api.handle(request)
    assert dropped.value.annotations["committed"] is True
    assert h.store.read(record["id"]).version == 2  # type: ignore[union-attr]


def test_faults_hit_read_vread_and_history_as_read(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    id = h.created()["id"]
    h.faults.add(Fault.status_error(503), "read", times=3)
    for suffix in ("", "/_history/1", "/_history"):
        assert h.call("GET", f"/fhir/Immunization/{id}{suffix}").status == 503
    assert h.call("GET", f"/fhir/Immunization/{id}").status == 200
