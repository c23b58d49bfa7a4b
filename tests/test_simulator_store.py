"""Tests of the simulator's register store: versions, identifiers, concurrency, search, crashes."""

from __future__ import annotations

import copy
import sqlite3
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from conformance.errors import ConfigurationError, ConformanceError
from conformance.simulator.store import (
    DuplicateIdentifier,
    IdentifierChanged,
    ImmunizationStore,
    InvalidSearch,
    NotFound,
    StoreError,
    VersionConflict,
    date_range,
)

BK = "https://www.example.org/vaccicard/immunization-id"
SSIN = "https://www.ehealth.fgov.be/standards/fhir/core/NamingSystem/ssin"
PATIENT_A = "94021300145"
PATIENT_B = "06070500252"


def immunization(
    key: str = "vac-1",
    *,
    patient: str = PATIENT_A,
    status: str = "completed",
    occurrence: str | None = "2021-03-04",
    note: str | None = None,
    **extra: object,
) -> dict:
    resource: dict = {
        "resourceType": "Immunization",
        "identifier": [{"system": BK, "value": key}],
        "status": status,
        "vaccineCode": {"coding": [{"system": "http://snomed.info/sct", "code": "836398006"}]},
        "patient": {"identifier": {"system": SSIN, "value": patient}},
        "recorded": "2021-03-04T10:00:00+01:00",
    }
    if occurrence is not None:
        resource["occurrenceDateTime"] = occurrence
    else:
        resource["occurrenceString"] = "spring 2021, date unknown"
    if note is not None:
        resource["note"] = [{"text": note}]
    resource.update(extra)
    return resource


def content(stored_resource: dict) -> dict:
    """The resource without the server-assigned id and meta."""
    return {key: value for key, value in stored_resource.items() if key not in ("id", "meta")}


@pytest.fixture
def store():
    with ImmunizationStore() as db:
        yield db


def create(store: ImmunizationStore, key: str = "vac-1", **kwargs: object):
    return store.create(immunization(key, **kwargs), business_key=(BK, key), recorder="nihdi:10828465123")


# -- create, read, versions ---------------------------------------------------------------------------


def test_create_assigns_id_version_and_meta(store):
    source = immunization(meta={"profile": ["https://example.org/profile"]})
    stored = store.create(source, business_key=(BK, "vac-1"), recorder="nihdi:10828465123")
    assert len(stored.id) == 32 and stored.id.isalnum()
    assert stored.version == 1 and stored.etag == 'W/"1"'
    assert stored.last_updated.tzinfo is not None
    assert stored.recorder == "nihdi:10828465123"
    resource = stored.resource
    assert list(resource)[:3] == ["resourceType", "id", "meta"]
    assert resource["id"] == stored.id
    assert resource["meta"]["versionId"] == "1"
    assert resource["meta"]["profile"] == ["https://example.org/profile"]  # other meta is kept
    assert datetime.fromisoformat(resource["meta"]["lastUpdated"]) == stored.last_updated
    assert resource["meta"]["lastUpdated"].endswith("Z")
    assert "id" not in source and "versionId" not in source["meta"]  # the input is not modified
    assert content(resource) == content(source)


def test_read_returns_a_copy_and_unknown_is_none(store):
    stored = create(store)
    again = store.read(stored.id)
    assert again == stored
    again.resource["status"] = "tampered"
    assert store.read(stored.id).resource["status"] == "completed"
    assert store.read("does-not-exist") is None
    assert store.read("../../etc/passwd") is None


def test_update_vread_and_history(store):
    first = create(store)
    second = store.update(first.id, immunization(note="corrected"), if_match=1, recorder="nihdi:1")
    third = store.update(first.id, immunization(status="entered-in-error"), if_match=None)
    assert (second.version, third.version) == (2, 3)
    assert third.resource["meta"]["versionId"] == "3"
    assert store.read(first.id).version == 3
    assert store.read(first.id).status == "entered-in-error"
    assert store.vread(first.id, 1).resource == first.resource
    assert store.vread(first.id, 2).resource["note"] == [{"text": "corrected"}]
    assert store.vread(first.id, 2).recorder == "nihdi:1"
    assert store.vread(first.id, 4) is None
    assert store.vread("nope", 1) is None
    history = store.history(first.id)
    assert [item.version for item in history] == [3, 2, 1]
    assert [item.last_updated for item in history] == sorted((h.last_updated for h in history), reverse=True)
    assert store.history("nope") == []


def test_last_updated_never_goes_back_when_the_clock_does():
    moments = iter([datetime(2025, 1, 2, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)])
    with ImmunizationStore(clock=lambda: next(moments)) as db:
        first = db.create(immunization(), business_key=(BK, "vac-1"))
        second = db.update(first.id, immunization(note="x"))
    assert second.last_updated == first.last_updated == datetime(2025, 1, 2, tzinfo=UTC)


def test_update_unknown_id_is_not_found(store):
    with pytest.raises(NotFound) as caught:
        store.update("missing", immunization())
    assert "Immunization/missing" in caught.value.message
    assert isinstance(caught.value, StoreError) and isinstance(caught.value, ConformanceError)


def test_update_with_stale_if_match_is_a_conflict(store):
    stored = create(store)
    store.update(stored.id, immunization(note="one"), if_match=1)
    with pytest.raises(VersionConflict) as caught:
        store.update(stored.id, immunization(note="two"), if_match=1)
    assert caught.value.current_version == 2
    assert "version 2" in caught.value.message
    assert store.read(stored.id).resource["note"] == [{"text": "one"}]
    assert len(store.history(stored.id)) == 2


@pytest.mark.parametrize(
    "identifiers",
    [
        [{"system": BK, "value": "other"}],
        [],
        [{"system": BK, "value": "vac-1"}, {"system": BK, "value": "vac-2"}],
        [{"system": "urn:other", "value": "vac-1"}],
    ],
)
def test_changing_the_business_identifier_is_refused(store, identifiers):
    stored = create(store)
    with pytest.raises(IdentifierChanged) as caught:
        store.update(stored.id, immunization(identifier=identifiers))
    assert caught.value.expected == (BK, "vac-1")
    assert store.read(stored.id).version == 1


def test_other_identifiers_may_be_added_on_update(store):
    stored = create(store)
    extra = [{"system": BK, "value": "vac-1"}, {"system": "urn:vendor", "value": "local-9"}]
    updated = store.update(stored.id, immunization(identifier=extra))
    assert updated.version == 2
    assert [s.id for s in store.search(identifier=("urn:vendor", "local-9"))[0]] == [stored.id]


def test_only_immunizations_and_a_key_the_resource_carries(store):
    with pytest.raises(ValueError, match="Immunization"):
        store.create(
            {"resourceType": "Patient", "identifier": [{"system": BK, "value": "p"}]}, business_key=(BK, "p")
        )
    with pytest.raises(ValueError, match="not one of the resource's identifiers"):
        store.create(immunization("vac-1"), business_key=(BK, "vac-2"))
    assert store.search()[1] == 0


def _run_threads(count: int, target) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def wrapped(n: int) -> None:
        barrier.wait()
        try:
            target(n)
        except BaseException as exc:  # pragma: no cover - reported by the caller
            errors.append(exc)

    workers = [threading.Thread(target=wrapped, args=(n,)) for n in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return errors


# -- business identifier: duplicates and conditional create ---------------------------------------------


def test_duplicate_business_identifier_is_refused(store):
    first = create(store)
    with pytest.raises(DuplicateIdentifier) as caught:
        create(store, note="again")
    assert caught.value.existing.id == first.id
    assert f"Immunization/{first.id}" in caught.value.message
    assert store.search()[1] == 1


def test_a_cancelled_record_still_owns_its_identifier(store):
    first = create(store)
    store.update(first.id, immunization(status="entered-in-error"))
    with pytest.raises(DuplicateIdentifier) as caught:
        create(store)
    assert caught.value.existing.status == "entered-in-error"
    assert "cancelled" in caught.value.message
    existing, created = store.create_if_absent(immunization(), (BK, "vac-1"))
    assert (existing.id, existing.version, created) == (first.id, 2, False)


def test_same_value_in_another_system_is_another_record(store):
    create(store)
    other = store.create(
        immunization(identifier=[{"system": "urn:other", "value": "vac-1"}]),
        business_key=("urn:other", "vac-1"),
    )
    assert other.version == 1 and store.search()[1] == 2


def test_conditional_create_returns_the_existing_record(store):
    stored, created = store.create_if_absent(immunization(), (BK, "vac-1"), recorder="nihdi:1")
    assert created and stored.version == 1
    again, created_again = store.create_if_absent(immunization(note="retry"), (BK, "vac-1"))
    assert not created_again and again == stored


def test_conditional_create_race_leaves_exactly_one_record(tmp_path):
    for db_path in (None, tmp_path / "race.db"):
        with ImmunizationStore(db_path) as db:
            results: list = []

            def attempt(n: int, db: ImmunizationStore = db, results: list = results) -> None:
                results.append(db.create_if_absent(immunization("vac-race", note=str(n)), (BK, "vac-race")))

            assert _run_threads(16, attempt) == []
            assert sum(created for _, created in results) == 1
            assert len({stored.id for stored, _ in results}) == 1
            assert db.search(identifier=(BK, "vac-race"))[1] == 1
            assert db.search()[1] == 1


def test_two_connections_on_one_file_keep_the_rules(tmp_path):
    """Two store objects (as two processes would) on one file: one conditional create wins, no lost update."""
    path = tmp_path / "shared.db"
    with ImmunizationStore(path) as one, ImmunizationStore(path) as two:
        stores = (one, two)
        results: list = []

        def attempt(n: int) -> None:
            db = stores[n % 2]
            results.append(db.create_if_absent(immunization("vac-x", note=str(n)), (BK, "vac-x")))
            for _round in range(3):
                while True:
                    current = db.read(results[-1][0].id)
                    value = int(current.resource["note"][0]["text"]) if current.version > 1 else 0
                    try:
                        db.update(
                            current.id, immunization("vac-x", note=str(value + 1)), if_match=current.version
                        )
                        break
                    except VersionConflict:
                        pass

        assert _run_threads(6, attempt) == []
        assert sum(created for _, created in results) == 1
        final = one.read(results[0][0].id)
        assert final.version == 1 + 6 * 3 and final.resource["note"] == [{"text": "18"}]


# -- concurrency ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("file_backed", [False, True])
def test_concurrent_read_modify_write_loses_no_update(tmp_path, file_backed):
    """Each thread increments a counter with If-Match and retries on conflict: no increment is lost."""
    with ImmunizationStore(tmp_path / "c.db" if file_backed else None) as db:
        stored = db.create(immunization(note="0"), business_key=(BK, "vac-1"))
        threads, rounds = 8, 15
        conflicts = []

        def increment(_: int) -> None:
            for _round in range(rounds):
                while True:
                    current = db.read(stored.id)
                    value = int(current.resource["note"][0]["text"])
                    try:
                        db.update(stored.id, immunization(note=str(value + 1)), if_match=current.version)
                        break
                    except VersionConflict:
                        conflicts.append(1)

        assert _run_threads(threads, increment) == []
        final = db.read(stored.id)
        assert final.resource["note"] == [{"text": str(threads * rounds)}]
        assert final.version == 1 + threads * rounds
        assert [h.version for h in db.history(stored.id)] == list(range(final.version, 0, -1))


def test_concurrent_blind_updates_each_get_their_own_version(store):
    stored = create(store)
    threads, rounds = 8, 20

    def write(n: int) -> None:
        for r in range(rounds):
            store.update(stored.id, immunization(note=f"{n}-{r}"))

    assert _run_threads(threads, write) == []
    history = store.history(stored.id)
    assert [h.version for h in history] == list(range(1 + threads * rounds, 0, -1))
    notes = {h.resource["note"][0]["text"] for h in history[:-1]}
    assert notes == {f"{n}-{r}" for n in range(threads) for r in range(rounds)}
    assert store.read(stored.id).resource == history[0].resource


def test_concurrent_creates_of_distinct_records(store):
    def write(n: int) -> None:
        for r in range(10):
            create(store, f"vac-{n}-{r}")

    assert _run_threads(8, write) == []
    records, total = store.search()
    assert total == 80 and len({r.id for r in records}) == 80


# -- search -----------------------------------------------------------------------------------------------


@pytest.fixture
def populated(store):
    ids = {
        "a-2020": create(store, "a-2020", occurrence="2020-12-31").id,
        "a-2021-03": create(store, "a-2021-03", occurrence="2021-03-04").id,
        "a-2021-06": create(store, "a-2021-06", occurrence="2021-06-15T10:30:00+02:00", status="not-done").id,
        "a-2022": create(store, "a-2022", occurrence="2022").id,
        "a-nodate": create(store, "a-nodate", occurrence=None).id,
        "b-2021": create(store, "b-2021", patient=PATIENT_B, occurrence="2021-03-10").id,
    }
    cancelled = store.read(ids["a-2022"]).resource
    store.update(ids["a-2022"], {**cancelled, "status": "entered-in-error"})
    names = {value: key for key, value in ids.items()}
    return store, names


def keys(result, names) -> list[str]:
    records, _total = result
    return [names[record.id] for record in records]


def test_search_by_patient_identifier(populated):
    store, names = populated
    assert keys(store.search(patient_identifier=(SSIN, PATIENT_B)), names) == ["b-2021"]
    assert store.search(patient_identifier=(SSIN, PATIENT_A))[1] == 5
    assert store.search(patient_identifier=(None, PATIENT_A))[1] == 5  # any system
    assert store.search(patient_identifier=("urn:other", PATIENT_A))[1] == 0
    assert store.search(patient_identifier=(SSIN, "00000000000"))[1] == 0


def test_search_by_identifier(populated):
    store, names = populated
    assert keys(store.search(identifier=(BK, "a-2021-03")), names) == ["a-2021-03"]
    assert keys(store.search(identifier=(None, "a-2021-03")), names) == ["a-2021-03"]
    assert store.search(identifier=("", "a-2021-03"))[1] == 0  # "no system" does not match one with a system
    assert store.search(identifier=(BK, "a-2021"))[1] == 0  # exact, not a prefix


def test_search_by_identifier_without_system(store):
    bare = immunization(identifier=[{"system": BK, "value": "k"}, {"value": "loose"}])
    stored = store.create(bare, business_key=(BK, "k"))
    assert [r.id for r in store.search(identifier=("", "loose"))[0]] == [stored.id]


def test_search_by_status(populated):
    store, names = populated
    assert keys(store.search(status=["not-done"]), names) == ["a-2021-06"]
    assert set(keys(store.search(status=["not-done", "entered-in-error"]), names)) == {"a-2021-06", "a-2022"}
    assert store.search(status=["completed"])[1] == 4
    assert store.search(status=[]) == ([], 0)


@pytest.mark.parametrize(
    ("prefix", "value", "expected"),
    [
        ("ge", "2021", {"a-2021-03", "a-2021-06", "a-2022", "b-2021"}),
        ("eq", "2021", {"a-2021-03", "a-2021-06", "b-2021"}),
        ("eq", "2021-03", {"a-2021-03", "b-2021"}),
        ("eq", "2021-03-04", {"a-2021-03"}),
        ("ne", "2021-03", {"a-2020", "a-2021-06", "a-2022"}),
        ("lt", "2021", {"a-2020"}),
        ("le", "2021-03-04", {"a-2020", "a-2021-03"}),
        ("gt", "2021-03-04", {"a-2021-06", "a-2022", "b-2021"}),
        ("gt", "2021", {"a-2022"}),
        ("le", "2020", {"a-2020"}),
        ("ge", "2022-06", {"a-2022"}),  # the year 2022 reaches past June 2022
        ("le", "2022-06", {"a-2020", "a-2021-03", "a-2021-06", "a-2022", "b-2021"}),
        ("sa", "2021-03", {"a-2021-06", "a-2022"}),
        ("eb", "2021-03", {"a-2020"}),
        # values with a time and an offset: 10:30 in Brussels summer time is 08:30 UTC
        ("eq", "2021-06-15T08:30:00Z", {"a-2021-06"}),
        ("ge", "2021-06-15T08:30:00Z", {"a-2021-06", "a-2022"}),
        ("gt", "2021-06-15T08:30:00Z", {"a-2022"}),
        ("lt", "2021-06-15T10:30:00+02:00", {"a-2020", "a-2021-03", "b-2021"}),
        ("eq", "2021-06-15T10:30+02:00", {"a-2021-06"}),  # minute precision holds the instant
        ("eq", "2021-06-15", {"a-2021-06"}),
    ],
)
def test_search_by_date_with_prefixes_and_precision(populated, prefix, value, expected):
    store, names = populated
    assert set(keys(store.search(date_ranges=[(prefix, value)]), names)) == expected


def test_date_filters_combine_and_skip_occurrence_string(populated):
    store, names = populated
    between = [("ge", "2021-01-01"), ("lt", "2021-06")]
    assert set(keys(store.search(date_ranges=between), names)) == {"a-2021-03", "b-2021"}
    for prefix in ("eq", "ne", "ge", "le", "gt", "lt", "sa", "eb"):
        assert "a-nodate" not in keys(store.search(date_ranges=[(prefix, "2021")]), names)


def test_partial_dates_are_local_brussels_time(store):
    late = store.create(immunization(occurrence="2021-12-31T23:30:00Z"), business_key=(BK, "vac-1"))
    # 23:30 UTC on 31 December is 00:30 on 1 January in Brussels
    assert [r.id for r in store.search(date_ranges=[("eq", "2022-01-01")])[0]] == [late.id]
    assert store.search(date_ranges=[("eq", "2021")])[1] == 0
    with ImmunizationStore(local_timezone="UTC") as utc:
        utc.create(immunization(occurrence="2021-12-31T23:30:00Z"), business_key=(BK, "vac-1"))
        assert utc.search(date_ranges=[("eq", "2021")])[1] == 1


def test_combined_criteria(populated):
    store, names = populated
    result = store.search(
        patient_identifier=(SSIN, PATIENT_A), status=["completed"], date_ranges=[("ge", "2021")]
    )
    assert keys(result, names) == ["a-2021-03"]


def test_bad_search_values_raise_invalid_search(store):
    for bad in [("ge", "2021-13"), ("ge", "yesterday"), ("ap", "2021"), ("ge", "2021-02-30")]:
        with pytest.raises(InvalidSearch):
            store.search(date_ranges=[bad])
    with pytest.raises(InvalidSearch):
        store.search(sort="status")
    with pytest.raises(InvalidSearch):
        store.search(count=-1)


def test_sort_and_paging(populated):
    store, names = populated
    assert keys(store.search(), names) == ["a-2020", "a-2021-03", "a-2021-06", "a-2022", "a-nodate", "b-2021"]
    by_date = ["a-2020", "a-2021-03", "b-2021", "a-2021-06", "a-2022", "a-nodate"]
    assert keys(store.search(sort="date"), names) == by_date
    assert keys(store.search(sort="-date"), names) == [*reversed(by_date[:-1]), "a-nodate"]
    pages = [store.search(sort="-date", count=2, offset=offset) for offset in (0, 2, 4, 6)]
    assert [total for _, total in pages] == [6, 6, 6, 6]
    assert [key for page in pages for key in keys(page, names)] == keys(store.search(sort="-date"), names)
    assert pages[-1] == ([], 6)
    assert store.search(count=0) == ([], 6)
    page, total = store.search(patient_identifier=(SSIN, PATIENT_A), sort="date", count=3, offset=1)
    assert total == 5 and [names[r.id] for r in page] == ["a-2021-03", "a-2021-06", "a-2022"]


def test_search_returns_current_versions(populated):
    store, _names = populated
    records, _ = store.search(identifier=(BK, "a-2022"))
    assert records[0].version == 2 and records[0].status == "entered-in-error"


def test_search_is_sql_on_indexed_columns(store):
    create(store)
    plan = store._conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM immunization WHERE patient_value = ? AND patient_system = ?",
        (PATIENT_A, SSIN),
    ).fetchall()
    assert any("immunization_patient" in str(row) for row in plan)


def test_delete_all_and_reset(store):
    stored = create(store)
    store.delete_all()
    assert store.read(stored.id) is None and store.history(stored.id) == [] and store.search()[1] == 0
    create(store)  # the identifier is free again
    store.reset()
    assert store.search() == ([], 0)


def test_closed_store_raises_store_error():
    db = ImmunizationStore()
    db.close()
    db.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        db.read("x")


# -- persistence and crashes -----------------------------------------------------------------------------


def test_file_store_keeps_data_across_reopen(tmp_path):
    path = tmp_path / "register.db"
    with ImmunizationStore(path) as db:
        assert db._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        stored = create(db)
        db.update(stored.id, immunization(status="entered-in-error"), if_match=1)
    with ImmunizationStore(path) as db:
        assert db.read(stored.id).version == 2
        assert db.vread(stored.id, 1).resource == stored.resource
        assert [h.version for h in db.history(stored.id)] == [2, 1]
        assert db.search(status=["entered-in-error"], patient_identifier=(SSIN, PATIENT_A))[1] == 1
        with pytest.raises(DuplicateIdentifier):
            create(db)


def test_not_a_database_is_a_configuration_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigurationError, match=r"notes\.txt"):
        ImmunizationStore(path)


def test_database_of_another_schema_version_is_refused(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version=99")
    with pytest.raises(ConfigurationError, match="schema 99"):
        ImmunizationStore(path)


class Crash(Exception):
    pass


@pytest.mark.parametrize("step", ["create:indexed", "create:versioned"])
def test_failure_inside_a_create_leaves_nothing(store, step):
    def hook(name: str) -> None:
        if name == step:
            raise Crash(name)

    store._write_hook = hook
    with pytest.raises(Crash):
        create(store)
    store._write_hook = None
    assert store.search() == ([], 0)
    assert store._conn.execute("SELECT COUNT(*) FROM resource_version").fetchone()[0] == 0
    assert store._conn.execute("SELECT COUNT(*) FROM immunization_identifier").fetchone()[0] == 0
    assert create(store).version == 1  # the store still works and the identifier is free


@pytest.mark.parametrize("step", ["update:indexed", "update:versioned"])
def test_failure_inside_an_update_leaves_the_previous_version(store, step):
    stored = create(store)

    def hook(name: str) -> None:
        if name == step:
            raise Crash(name)

    store._write_hook = hook
    with pytest.raises(Crash):
        store.update(stored.id, immunization(status="entered-in-error"), if_match=1)
    store._write_hook = None
    current = store.read(stored.id)
    assert current.version == 1 and current.status == "completed"
    assert [h.version for h in store.history(stored.id)] == [1]
    assert store.search(status=["entered-in-error"])[1] == 0
    assert store.update(stored.id, immunization(note="ok"), if_match=1).version == 2


@pytest.mark.parametrize("step", ["create:indexed", "create:versioned", "update:indexed", "update:versioned"])
def test_process_killed_mid_write_leaves_no_half_record(tmp_path, step):
    """A real crash: the process exits (no rollback, no cleanup) between two statements of a write."""
    path = tmp_path / "crash.db"
    with ImmunizationStore(path) as db:
        first = create(db, "vac-1")
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        from test_simulator_store import BK, immunization
        from conformance.simulator.store import ImmunizationStore
        db = ImmunizationStore({str(path)!r})
        db._write_hook = lambda name: os._exit(17) if name == {step!r} else None
        if {step!r}.startswith("create"):
            db.create(immunization("vac-2"), business_key=(BK, "vac-2"))
        else:
            db.update({first.id!r}, immunization("vac-1", status="entered-in-error"), if_match=1)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 17, done.stderr
    with ImmunizationStore(path) as db:
        assert db.search()[1] == 1
        assert db.read(first.id).version == 1 and db.read(first.id).status == "completed"
        assert db._conn.execute("SELECT COUNT(*) FROM resource_version").fetchone()[0] == 1
        assert db._conn.execute("SELECT COUNT(*) FROM immunization_identifier").fetchone()[0] == 1
        assert create(db, "vac-2").version == 1


# -- date ranges -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "start", "end"),
    [
        ("2021", "2020-12-31T23:00:00.000000Z", "2021-12-31T23:00:00.000000Z"),
        ("2021-07", "2021-06-30T22:00:00.000000Z", "2021-07-31T22:00:00.000000Z"),
        ("2021-03-28", "2021-03-27T23:00:00.000000Z", "2021-03-28T22:00:00.000000Z"),  # 23-hour DST day
        ("2021-03-04T10:00:00Z", "2021-03-04T10:00:00.000000Z", "2021-03-04T10:00:01.000000Z"),
        ("2021-03-04T10:00:00.25+01:00", "2021-03-04T09:00:00.250000Z", "2021-03-04T09:00:00.260000Z"),
        ("2021-03-04T10:00+01:00", "2021-03-04T09:00:00.000000Z", "2021-03-04T09:01:00.000000Z"),
        ("9999", "9998-12-31T23:00:00.000000Z", "9999-12-31T23:59:59.999999Z"),
    ],
)
def test_date_range_by_precision(value, start, end):
    assert date_range(value) == (start, end)


def test_date_range_in_utc():
    assert date_range("2021", "UTC") == ("2021-01-01T00:00:00.000000Z", "2022-01-01T00:00:00.000000Z")


# -- property: the current version is the last write -------------------------------------------------------

NOTES = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
STATUSES = st.sampled_from(["completed", "not-done", "entered-in-error"])
DATES = st.one_of(
    st.none(),
    st.dates(min_value=datetime(1990, 1, 1).date(), max_value=datetime(2030, 1, 1).date()).map(str),
)


class RegisterMachine(RuleBasedStateMachine):
    """Random creates, updates (blind, fresh If-Match, stale If-Match) and duplicates against a model."""

    records = Bundle("records")

    @initialize()
    def start(self) -> None:
        self.store = ImmunizationStore()
        self.model: dict[str, list[dict]] = {}
        self.counter = 0

    def teardown(self) -> None:
        self.store.close()

    @rule(target=records, note=NOTES, status=STATUSES, occurrence=DATES)
    def create(self, note: str, status: str, occurrence: str | None) -> str:
        self.counter += 1
        resource = immunization(f"k{self.counter}", note=note, status=status, occurrence=occurrence)
        stored = self.store.create(copy.deepcopy(resource), business_key=(BK, f"k{self.counter}"))
        self.model[stored.id] = [resource]
        return stored.id

    @rule(id=records, note=NOTES, status=STATUSES, occurrence=DATES, use_if_match=st.booleans())
    def update(self, id: str, note: str, status: str, occurrence: str | None, use_if_match: bool) -> None:
        key = self.model[id][0]["identifier"][0]["value"]
        resource = immunization(key, note=note, status=status, occurrence=occurrence)
        if_match = len(self.model[id]) if use_if_match else None
        stored = self.store.update(id, copy.deepcopy(resource), if_match=if_match)
        self.model[id].append(resource)
        assert stored.version == len(self.model[id])

    @rule(id=records, stale=st.integers(min_value=1, max_value=50))
    def stale_update(self, id: str, stale: int) -> None:
        if stale == len(self.model[id]):
            return
        with pytest.raises(VersionConflict):
            self.store.update(id, immunization("x"), if_match=stale)

    @rule(id=records)
    def duplicate(self, id: str) -> None:
        key = self.model[id][0]["identifier"][0]["value"]
        with pytest.raises(DuplicateIdentifier):
            self.store.create(immunization(key), business_key=(BK, key))

    @invariant()
    def current_is_last_write(self) -> None:
        for id, writes in self.model.items():
            current = self.store.read(id)
            assert current is not None
            assert current.version == len(writes)
            assert content(current.resource) == writes[-1]
            assert [content(h.resource) for h in self.store.history(id)] == writes[::-1]
        assert self.store.search()[1] == len(self.model)


RegisterMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_register_property = RegisterMachine.TestCase


def test_last_updated_is_recent(store):
    stored = create(store)
    assert abs(datetime.now(UTC) - stored.last_updated) < timedelta(minutes=1)
