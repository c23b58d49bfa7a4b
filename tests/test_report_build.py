"""Tests of build_report: verdicts per item, readiness, summary counts, waivers, baseline, schema."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from conformance.errors import ConfigurationError
from conformance.report import build_report, exit_code, failure_reasons, load_report, parse_waivers
from conformance.report.build import IG_DEFINITIONS_PAGE, IG_PROFILE_PAGE, VERDICTS, item_status
from conformance.report.model import FhirIssue, ScenarioResult, StepResult
from conformance.report.schema import schema_problems
from tests.report_fixtures import catalogue, make_run, scenario, synthetic_run

BLOCKING = [item.id for item in catalogue().blocking()]
NON_BLOCKING = [item.id for item in catalogue() if not item.blocking]


def verdicts(report: dict) -> dict[str, str]:
    return {item["id"]: item["verdict"] for item in report["items"]}


def all_passing(**kwargs) -> list:
    return [scenario(f"covers {item_id}", [item_id], **kwargs) for item_id in catalogue().ids()]


def waivers(text: str):
    return parse_waivers(text, catalogue())


# -- verdicts -------------------------------------------------------------------------------------------


def test_every_item_passed_is_ready() -> None:
    report = build_report(make_run(), all_passing(), catalogue())
    assert set(verdicts(report).values()) == {"passed"}
    assert report["summary"]["ready"] is True and report["summary"]["blockers"] == []
    assert exit_code(report) == 0 and failure_reasons(report) == []
    assert schema_problems(report) == []


def test_one_failing_scenario_fails_its_item_and_stops_readiness() -> None:
    item = BLOCKING[0]
    results = [*all_passing(), scenario("bad one", [item], "failed")]
    report = build_report(make_run(), results, catalogue())
    assert verdicts(report)[item] == "failed"
    assert report["summary"]["ready"] is False
    assert report["summary"]["blockers"] == [{"item": item, "verdict": "failed"}]
    assert exit_code(report) == 1
    assert failure_reasons(report) == [f"1 evaluation item(s) failed: {item}"]


def test_a_failing_non_blocking_item_fails_the_run_but_not_readiness() -> None:
    item = NON_BLOCKING[0]
    report = build_report(make_run(), [*all_passing(), scenario("bad", [item], "failed")], catalogue())
    assert verdicts(report)[item] == "failed"
    assert report["summary"]["ready"] is True
    assert exit_code(report) == 1


def test_items_no_scenario_names_are_not_run_and_blocking_ones_stop_readiness() -> None:
    report = build_report(make_run(), [scenario("only", [NON_BLOCKING[0]])], catalogue())
    assert verdicts(report)[NON_BLOCKING[0]] == "passed"
    assert all(v == "not-run" for i, v in verdicts(report).items() if i != NON_BLOCKING[0])
    assert report["summary"]["ready"] is False
    assert {b["item"] for b in report["summary"]["blockers"]} == set(BLOCKING)
    assert exit_code(report) == 0  # a filtered run is not a failure


def test_skipped_item_keeps_the_reasons_and_a_partial_skip_is_not_a_pass() -> None:
    item, other = BLOCKING[0], BLOCKING[1]
    results = [
        *[s for s in all_passing() if item not in s.items],
        scenario("a", [item], "skipped", skip_reason="no ETK depot configured"),
        scenario("b", [item], "skipped", skip_reason="manual only"),
        scenario("c", [other], "skipped", skip_reason="no ETK depot configured"),
    ]
    report = build_report(make_run(), results, catalogue())
    entry = next(i for i in report["items"] if i["id"] == item)
    assert entry["verdict"] == "skipped"
    assert entry["skip_reasons"] == ["no ETK depot configured", "manual only"]
    assert verdicts(report)[other] == "skipped"  # one passed, one skipped: incomplete evidence
    assert {"item": other, "verdict": "skipped"} in report["summary"]["blockers"]


def test_operator_confirmations_make_a_passed_item_confirmed_which_counts_as_ready() -> None:
    item = BLOCKING[0]
    results = [*all_passing(), scenario("manual", [item], confirmations=["history shows 2 records"])]
    report = build_report(make_run(), results, catalogue())
    assert verdicts(report)[item] == "confirmed"
    assert report["summary"]["ready"] is True
    assert report["summary"]["items"]["confirmed"] == 1


def test_confirmations_do_not_hide_a_failure() -> None:
    item = BLOCKING[0]
    results = [scenario("manual", [item], confirmations=["ok"]), scenario("bad", [item], "failed")]
    assert verdicts(build_report(make_run(), results, catalogue()))[item] == "failed"


def test_a_scenario_naming_two_items_counts_for_both() -> None:
    first, second = BLOCKING[0], BLOCKING[1]
    report = build_report(make_run(), [scenario("two", [first, second], "failed")], catalogue())
    assert verdicts(report)[first] == verdicts(report)[second] == "failed"
    assert report["summary"]["scenarios"] == {"passed": 0, "failed": 1, "skipped": 0, "waived": 0, "total": 1}


def test_a_failing_step_fails_only_the_items_it_judges() -> None:
    first, second, third = "VC-REG-01", "VC-REG-05", "VC-REG-07"
    steps = (
        StepResult("When", "the professional records a vaccination", "passed", 0.1),
        StepResult("Then", "it conforms to be-vaccination", "passed", 0.1, items=(first,)),
        StepResult("And", "the lot travels in the extension", "failed", 0.1, "no lot", items=(second,)),
        StepResult("And", "the place is contained", "not-run", items=(third,)),
    )
    failed = ScenarioResult(
        id="recording.feature::every detail",
        feature="Recording",
        feature_file="features/recording.feature",
        name="every detail",
        status="failed",
        items=(first, second, third),
        steps=steps,
    )
    assert [item_status(i, failed) for i in (first, second, third)] == ["passed", "failed", "skipped"]
    assert item_status("VC-REG-02", failed) == "failed"  # judged by no step: the scenario's failure is its
    report = build_report(make_run(), [failed], catalogue())
    assert [verdicts(report)[i] for i in (first, second, third)] == ["passed", "failed", "skipped"]
    broken_setup = replace(failed, steps=(replace(steps[0], status="failed"), *steps[1:]))
    assert {item_status(i, broken_setup) for i in (first, second, third)} == {"failed"}


def test_item_entry_carries_titles_ig_links_and_register_rules() -> None:
    report = build_report(make_run(), all_passing(), catalogue())
    reg01 = next(i for i in report["items"] if i["id"] == "VC-REG-01")
    source = catalogue().get("VC-REG-01")
    assert reg01["titles"] == dict(source.titles)
    assert [e["id"] for e in reg01["ig"]["elements"]] == list(source.ig_elements)
    assert reg01["ig"]["elements"][0]["url"] == f"{IG_DEFINITIONS_PAGE}#{source.ig_elements[0]}"
    assert [e["key"] for e in reg01["ig"]["invariants"]] == list(source.ig_invariants)
    assert all(e["url"] == IG_PROFILE_PAGE for e in reg01["ig"]["invariants"])
    assert [e["element"] for e in reg01["ig"]["bindings"]] == list(source.ig_bindings)
    assert reg01["register_rules"] == list(source.register_rules)
    assert IG_PROFILE_PAGE.endswith("/vaccination/StructureDefinition-be-vaccination.html")


# -- summary --------------------------------------------------------------------------------------------


def test_summary_counts_items_scenarios_and_issues() -> None:
    issue = FhirIssue("error", "invariant", "Immunization.patient", "no patient", "be-rule", None)
    bad = scenario("bad", [BLOCKING[0]], "failed")
    bad = type(bad)(**{**bad.__dict__, "issues": (issue, FhirIssue("warning", "code", "x", "y"))})
    results = [*all_passing(), bad, scenario("s", [BLOCKING[1]], "skipped", skip_reason="later")]
    summary = build_report(make_run(), results, catalogue())["summary"]
    assert summary["items"]["total"] == len(catalogue())
    assert sum(summary["items"][v] for v in VERDICTS) == len(catalogue())
    assert summary["items"]["failed"] == 1 and summary["items"]["skipped"] == 1
    assert summary["scenarios"]["total"] == len(results)
    assert summary["issues"] == {"fatal": 0, "error": 1, "warning": 1, "information": 0}


def test_scenarios_naming_no_catalogue_item_are_listed_and_fail_the_run_when_failing() -> None:
    results = [*all_passing(), scenario("untagged", []), scenario("typo", ["VC-REG-99"], "failed")]
    report = build_report(make_run(), results, catalogue())
    unmapped = report["summary"]["unmapped_scenarios"]
    assert unmapped == ["registration.feature::untagged", "registration.feature::typo"]
    assert report["summary"]["ready"] is True
    assert failure_reasons(report) == [
        "1 failing scenario(s) name no evaluation item: registration.feature::typo"
    ]


def test_repeated_scenario_ids_are_numbered() -> None:
    results = [scenario("outline", [BLOCKING[0]]), scenario("outline", [BLOCKING[0]], "failed")]
    report = build_report(make_run(), results, catalogue())
    assert [s["id"] for s in report["scenarios"]] == [
        "registration.feature::outline",
        "registration.feature::outline #2",
    ]
    assert next(i for i in report["items"] if i["id"] == BLOCKING[0])["scenarios"] == [
        s["id"] for s in report["scenarios"]
    ]


def test_failure_field_is_the_failing_step_message_or_the_scenario_message() -> None:
    failing = scenario("bad", [BLOCKING[0]], "failed", message="expected 201, got 422: patient unknown")
    hook = type(failing)(**{**failing.__dict__, "steps": (), "message": "fixture simulator failed to start"})
    report = build_report(make_run(), [failing, hook, scenario("ok", [BLOCKING[1]])], catalogue())
    assert [s["failure"] for s in report["scenarios"]] == [
        "expected 201, got 422: patient unknown",
        "fixture simulator failed to start",
        None,
    ]


# -- waivers --------------------------------------------------------------------------------------------

WAIVER = """
[[waiver]]
item = "{item}"
{scenario}reason = "The lot number field ships in 4.2."
ticket = "RSW-1234"
expires = {expires}
"""


def waiver_text(item: str, expires: str = "2026-01-31", scenario_line: str = "") -> str:
    return WAIVER.format(item=item, scenario=scenario_line, expires=expires)


def test_a_waiver_covering_every_failure_makes_the_item_waived_and_ready() -> None:
    item = BLOCKING[0]
    results = [*all_passing(), scenario("bad", [item], "failed")]
    report = build_report(make_run(), results, catalogue(), waivers=waivers(waiver_text(item)))
    entry = next(i for i in report["items"] if i["id"] == item)
    assert entry["verdict"] == "waived" and entry["waivers"] == [1]
    assert report["summary"]["ready"] is True
    assert exit_code(report) == 0
    bad = next(s for s in report["scenarios"] if s["name"] == "bad")
    assert bad["waived"] is True and bad["waivers"] == [1]
    assert report["waivers"]["entries"][0] | {"matches": None} == {
        "number": 1,
        "item": item,
        "scenario": None,
        "reason": "The lot number field ships in 4.2.",
        "ticket": "RSW-1234",
        "expires": "2026-01-31",
        "status": "applied",
        "matches": None,
    }
    assert report["summary"]["scenarios"]["waived"] == 1


def test_a_waiver_for_one_scenario_does_not_cover_another_failure_of_the_item() -> None:
    item = BLOCKING[0]
    text = waiver_text(item, scenario_line='scenario = "bad one"\n')
    results = [scenario("bad one", [item], "failed"), scenario("bad two", [item], "failed")]
    report = build_report(make_run(), results, catalogue(), waivers=waivers(text))
    assert verdicts(report)[item] == "failed"
    assert report["waivers"]["entries"][0]["status"] == "applied"
    assert report["waivers"]["entries"][0]["matches"] == ["registration.feature::bad one"]
    assert [s["waived"] for s in report["scenarios"]] == [True, False]


def test_a_waiver_names_its_scenario_by_id_or_by_name() -> None:
    item = BLOCKING[0]
    for reference in ("bad one", "registration.feature::bad one"):
        text = waiver_text(item, scenario_line=f'scenario = "{reference}"\n')
        report = build_report(
            make_run(), [scenario("bad one", [item], "failed")], catalogue(), waivers=waivers(text)
        )
        assert verdicts(report)[item] == "waived", reference


def test_an_expired_waiver_covers_nothing_and_fails_the_run() -> None:
    item = NON_BLOCKING[0]
    results = [*all_passing(), scenario("bad", [item], "failed")]
    report = build_report(
        make_run(),
        results,
        catalogue(),
        waivers=waivers(waiver_text(item, "2025-11-19")),
        today=date(2025, 11, 20),
    )
    assert verdicts(report)[item] == "failed"
    assert report["summary"]["expired_waivers"] == [1]
    assert report["waivers"]["entries"][0]["status"] == "expired"
    assert (
        failure_reasons(report)[-1]
        == f"1 waiver(s) expired: renew or remove waiver 1 ({item}, expired 2025-11-19)"
    )


def test_an_expired_waiver_fails_the_run_even_when_the_item_now_passes() -> None:
    report = build_report(
        make_run(), all_passing(), catalogue(), waivers=waivers(waiver_text(BLOCKING[0], "2020-01-01"))
    )
    assert report["summary"]["ready"] is True
    assert exit_code(report) == 1


def test_a_waiver_holds_through_its_expiry_date_and_defaults_to_the_run_date() -> None:
    item = BLOCKING[0]
    results = [scenario("bad", [item], "failed")]
    finished_on = make_run().finished.date().isoformat()
    report = build_report(make_run(), results, catalogue(), waivers=waivers(waiver_text(item, finished_on)))
    assert verdicts(report)[item] == "waived"
    later = build_report(
        make_run(),
        results,
        catalogue(),
        waivers=waivers(waiver_text(item, finished_on)),
        today=date(2030, 1, 1),
    )
    assert verdicts(later)[item] == "failed"


def test_a_waiver_matching_no_failure_is_unused() -> None:
    report = build_report(make_run(), all_passing(), catalogue(), waivers=waivers(waiver_text(BLOCKING[0])))
    assert report["summary"]["unused_waivers"] == [1]
    assert report["waivers"]["entries"][0]["status"] == "unused"
    assert exit_code(report) == 0


def test_a_scenario_is_waived_only_when_every_item_it_names_is_covered() -> None:
    first, second = BLOCKING[0], BLOCKING[1]
    report = build_report(
        make_run(),
        [scenario("two", [first, second], "failed")],
        catalogue(),
        waivers=waivers(waiver_text(first)),
    )
    assert verdicts(report)[first] == "waived" and verdicts(report)[second] == "failed"
    assert report["scenarios"][0]["waived"] is False


# -- baseline -------------------------------------------------------------------------------------------


def test_baseline_comparison_by_item(tmp_path: Path) -> None:
    a, b, c, d = BLOCKING[:4]
    before = build_report(
        make_run(),
        [scenario("a", [a], "failed"), scenario("b", [b], "failed"), scenario("c", [c]), scenario("d", [d])],
        catalogue(),
    )
    path = tmp_path / "report.json"
    path.write_text(json.dumps(before))
    now = build_report(
        make_run(),
        [scenario("a", [a]), scenario("b", [b], "failed"), scenario("c", [c], "failed"), scenario("d", [d])],
        catalogue(),
        baseline=load_report(path),
    )
    assert now["baseline"] | {"run": None} == {
        "run": None,
        "new_failures": [c],
        "fixed": [a],
        "unchanged_failures": [b],
        "unchanged_passes": [d],
    }
    assert now["baseline"]["run"]["started"] == before["run"]["started"]
    assert schema_problems(now) == []


# -- schema and load_report -------------------------------------------------------------------------------


def test_a_large_synthetic_report_follows_the_schema() -> None:
    run = synthetic_run(120, 3)
    assert schema_problems(build_report(run.run, run.scenarios, catalogue())) == []


def test_schema_rejects_an_unknown_verdict_and_a_missing_summary() -> None:
    report = build_report(make_run(), all_passing(), catalogue())
    report["items"][0]["verdict"] = "mostly-passed"
    del report["summary"]
    problems = schema_problems(report)
    assert any(p.startswith("/items/0/verdict:") for p in problems)
    assert any("'summary' is a required property" in p for p in problems)


def test_load_report_accepts_a_directory_or_the_file(tmp_path: Path) -> None:
    report = build_report(make_run(), all_passing(), catalogue())
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert load_report(tmp_path) == load_report(tmp_path / "report.json") == report


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "report not found"),
        ("{not json", "is not JSON"),
        ('{"hello": 1}', "is not a vaccicard-conformance report"),
        ('{"format": "vaccicard-conformance-report", "format_version": 9}', "format version 9"),
        (
            '{"format": "vaccicard-conformance-report", "format_version": 1}',
            "is not a valid vaccicard-conformance report",
        ),
    ],
)
def test_load_report_errors_are_configuration_errors(
    tmp_path: Path, content: str | None, message: str
) -> None:
    if content is not None:
        (tmp_path / "report.json").write_text(content)
    with pytest.raises(ConfigurationError, match=message):
        load_report(tmp_path)
