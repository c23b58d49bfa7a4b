"""Tests of the results model the plugin hands to the report: checks on construction and JSON shape."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from conformance.errors import ConfigurationError
from conformance.fhir.outcome import Issue
from conformance.report import FhirIssue, PackageInfo, ScenarioResult, StepResult
from tests.report_fixtures import START, make_run


def test_run_to_json_shape() -> None:
    data = make_run(insecure=True, adapter_kind="faulty", adapter_argument="no-recorder").to_json()
    assert data["started"] == "2025-11-20T09:30:00Z"
    assert data["duration_seconds"] == 432.0
    assert data["target"] == {"kind": "simulator", "url": "http://127.0.0.1:8080/fhir", "insecure": True}
    assert data["adapter"] == {"kind": "faulty", "argument": "no-recorder"}
    assert data["packages"][0] == {"id": "hl7.fhir.be.vaccination", "version": "1.1.2", "sha256": "ab" * 32}
    assert data["redacted"] is True


def test_run_keeps_offsets_of_aware_datetimes() -> None:
    brussels = timezone(timedelta(hours=1))
    data = make_run(started=START.astimezone(brussels), finished=START.astimezone(brussels)).to_json()
    assert data["started"] == "2025-11-20T10:30:00+01:00"


def test_packages_as_tuples_become_package_info() -> None:
    run = make_run(packages=[("a", "1", "00")])
    assert run.packages == (PackageInfo("a", "1", "00"),)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("language", "es", "report language 'es' is not one of en, fr, nl, de"),
        ("target_kind", "staging", "target kind 'staging'"),
        ("adapter_kind", "magic", "adapter kind 'magic'"),
        ("started", datetime(2025, 1, 1), "run start must be a timezone-aware datetime"),
        ("finished", START - timedelta(seconds=1), "run finish is before run start"),
    ],
)
def test_run_rejects_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_run(**{field: value})


def test_scenario_takes_items_from_tags_and_freezes_sequences() -> None:
    result = ScenarioResult(
        id="f.feature::s",
        feature="F",
        feature_file="features/f.feature",
        name="s",
        status="failed",
        tags=["item:VC-REG-01", "@item:VC-REG-02", "req-reg"],
        steps=[StepResult("Given", "x", "passed"), StepResult("When", "y", "failed", 0.1, "boom")],
        evidence=["3", 4],
        issues=[Issue("error", "invariant", "Immunization.status", "bad", "be-rule-vaccination-1", "p")],
    )
    assert result.items == ("VC-REG-01", "VC-REG-02")
    assert result.evidence == (3, 4)
    assert result.issues == (
        FhirIssue("error", "invariant", "Immunization.status", "bad", "be-rule-vaccination-1", "p"),
    )
    assert result.failing_step == StepResult("When", "y", "failed", 0.1, "boom")
    assert isinstance(result.tags, tuple) and isinstance(result.steps, tuple)


def test_explicit_items_win_over_tags() -> None:
    result = ScenarioResult("i", "F", "f", "s", "passed", tags=["item:VC-REG-01"], items=["VC-CON-01"])
    assert result.items == ("VC-CON-01",)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ScenarioResult("i", "F", "f", "s", "broken"),
        lambda: StepResult("Given", "x", "pending"),
        lambda: FhirIssue("severe", "x", "y", "z"),
    ],
)
def test_statuses_and_severities_are_checked(make) -> None:
    with pytest.raises(ConfigurationError, match="is not one of"):
        make()


def test_issues_as_dicts_and_failed_evidence_joins_the_evidence() -> None:
    issue = {"severity": "error", "code": "value", "expression": "Immunization.status", "message": "bad"}
    result = ScenarioResult(
        "i", "F", "f", "s", "failed", issues=[issue], evidence=[5, 6], failed_evidence=[7, 6]
    )
    assert result.issues == (FhirIssue("error", "value", "Immunization.status", "bad", None, None),)
    assert result.evidence == (5, 6, 7) and result.failed_evidence == (7, 6)
    assert result.to_json()["failed_evidence"] == [7, 6]
