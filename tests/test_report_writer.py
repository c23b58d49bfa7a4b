"""Tests of write_report: the files of a report directory, evidence, redaction flag, atomic replacement."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from conformance.errors import ConfigurationError
from conformance.report import (
    Redactor,
    build_report,
    load_directory,
    load_report,
    render,
    verify_report,
    write_report,
)
from conformance.report.schema import schema_problems
from conformance.traffic.recorder import load_ndjson
from tests.report_fixtures import catalogue, synthetic_run

FILES = {"report.json", "evidence.ndjson", "report.html", "junit.xml", "ticket.md", "manifest.json"}


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_run(30, 4)


@pytest.fixture(scope="module")
def report(synthetic) -> dict:
    return build_report(synthetic.run, synthetic.scenarios, catalogue())


def write(target: Path, report: dict, synthetic, **kwargs) -> Path:
    kwargs.setdefault("redactor", Redactor.for_run())
    return write_report(target, report, synthetic.exchanges, **kwargs)


def test_writes_every_file_and_nothing_else(tmp_path: Path, report: dict, synthetic) -> None:
    target = write(tmp_path / "run-1", report, synthetic)
    assert target == tmp_path / "run-1"
    assert {p.name for p in target.iterdir()} == FILES
    assert [p.name for p in tmp_path.iterdir()] == ["run-1"]  # no scratch folder left behind
    assert schema_problems(load_report(target)) == []
    assert verify_report(target).ok


def test_allure_results_are_optional_and_in_the_manifest(tmp_path: Path, report: dict, synthetic) -> None:
    target = write(tmp_path / "r", report, synthetic, allure=True)
    results = sorted((target / "allure-results").iterdir())
    assert len(results) == len(report["scenarios"])
    first = json.loads(results[0].read_text())
    assert {"uuid", "name", "status", "steps", "labels"} <= set(first)
    manifest = json.loads((target / "manifest.json").read_text())
    assert f"allure-results/{results[0].name}" in manifest["files"]


def test_evidence_holds_the_referenced_exchanges_in_id_order(tmp_path: Path, report: dict, synthetic) -> None:
    unreferenced = synthetic.exchanges[0].__class__(id=99_999, method="GET", url="http://127.0.0.1/other")
    target = write_report(
        tmp_path / "r", report, [*reversed(synthetic.exchanges), unreferenced], redactor=None
    )
    exchanges = load_ndjson(target / "evidence.ndjson")
    referenced = sorted({i for s in report["scenarios"] for i in s["evidence"]})
    assert [e.id for e in exchanges] == referenced
    written = load_report(target)
    assert written["evidence"] | {"file": None} == {
        "file": None,
        "referenced": len(referenced),
        "count": len(referenced),
        "missing": [],
    }


def test_missing_evidence_is_recorded(tmp_path: Path, report: dict, synthetic) -> None:
    target = write(
        tmp_path / "r", report, synthetic.__class__(synthetic.run, [], synthetic.exchanges[4:], [])
    )
    written = load_report(target)
    assert written["evidence"]["missing"] == [1, 2, 3, 4]
    assert written["evidence"]["count"] == len(synthetic.exchanges) - 4


def test_redacted_flag_follows_what_was_done(tmp_path: Path, report: dict, synthetic) -> None:
    assert report["run"]["redacted"] is True
    plain = write(tmp_path / "plain", report, synthetic, redactor=None)
    assert load_report(plain)["run"]["redacted"] is False
    assert 'id="banner-not-redacted"' in (plain / "report.html").read_text()
    redacted = write(tmp_path / "redacted", report, synthetic)
    assert load_report(redacted)["run"]["redacted"] is True
    assert 'id="banner-not-redacted"' not in (redacted / "report.html").read_text()


def test_renderings_are_what_report_dir_re_renders(tmp_path: Path, report: dict, synthetic) -> None:
    target = write(tmp_path / "r", report, synthetic)
    source = load_directory(target)
    assert render(source, "html") == (target / "report.html").read_bytes()
    assert render(source, "junit") == (target / "junit.xml").read_bytes()
    assert render(source, "md") == (target / "ticket.md").read_bytes()


def test_an_existing_report_directory_is_replaced(tmp_path: Path, report: dict, synthetic) -> None:
    target = write(tmp_path / "r", report, synthetic)
    (target / "junit.xml").write_text("stale")
    write(target, report, synthetic)
    assert (target / "junit.xml").read_text() != "stale"
    assert verify_report(target).ok
    assert [p.name for p in tmp_path.iterdir()] == ["r"]


def test_refuses_a_folder_that_is_not_a_report(tmp_path: Path, report: dict, synthetic) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(ConfigurationError, match="not a report directory"):
        write(tmp_path / "notes", report, synthetic)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigurationError, match="it is a file"):
        write(tmp_path / "file", report, synthetic)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_a_failure_half_way_leaves_nothing(tmp_path: Path, report: dict, synthetic, monkeypatch) -> None:
    from conformance.report import writer

    def broken(*_args, **_kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(writer, "build_manifest", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write(tmp_path / "r", report, synthetic)
    assert list(tmp_path.iterdir()) == []


def test_a_failure_keeps_the_previous_report(tmp_path: Path, report: dict, synthetic, monkeypatch) -> None:
    from conformance.report import writer

    target = write(tmp_path / "r", report, synthetic)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    monkeypatch.setattr(writer, "render", lambda *a, **k: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError, match="boom"):
        write(target, report, synthetic)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["r"]


def test_an_invalid_report_is_refused_before_writing(tmp_path: Path, report: dict, synthetic) -> None:
    broken = orjson.loads(orjson.dumps(report))
    broken["summary"]["ready"] = "maybe"
    with pytest.raises(ConfigurationError, match="/summary/ready"):
        write(tmp_path / "r", broken, synthetic)
    assert list(tmp_path.iterdir()) == []
