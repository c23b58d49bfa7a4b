"""From run results to ``report.json``: a verdict per evaluation item, the summary, waivers and baseline.

Verdicts, per evaluation item of the catalogue, from the scenarios of the run that name it:

* ``not-run``: no scenario of the run names the item (filtered out by ``--items``/``--tags``, or none
  exists yet);
* ``failed``: a scenario failed and at least one failing scenario is not covered by an unexpired waiver;
* ``waived``: scenarios failed and every failing one is covered by an unexpired waiver;
* ``skipped``: no scenario failed but at least one was skipped: the evidence is incomplete (this also
  holds when others passed: an item passes only on full evidence);
* ``confirmed``: every scenario passed and at least one carries operator confirmations (manual adapter);
* ``passed``: every scenario passed.

**Ready** to request the evaluation session means: every *blocking* item of the catalogue is passed,
confirmed or waived. A blocking item that failed, was skipped or did not run stops readiness and is
listed in ``summary.blockers``. The run itself *fails* (``exit_code`` 1) when any item failed, a
failing scenario names no catalogue item, or a waiver expired; readiness is stated, not an exit code,
because a filtered run legitimately leaves blocking items not run.

With a baseline (an older report.json, already loaded), items are compared by id: ``new_failures``
(failed now, not failed before), ``fixed`` (failed before, passed or confirmed now),
``unchanged_failures`` and ``unchanged_passes`` (passed or confirmed in both).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any

from conformance.errors import EXIT_FAILURES, EXIT_OK
from conformance.evaluation_items import LANGUAGES, Catalogue, EvaluationItem
from conformance.report.model import SEVERITIES, RunInfo, ScenarioResult, iso
from conformance.report.waivers import Waiver, Waivers

__all__ = [
    "EVIDENCE_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "IG_DEFINITIONS_PAGE",
    "IG_PROFILE_PAGE",
    "PASSING",
    "READY_VERDICTS",
    "VERDICTS",
    "build_report",
    "exit_code",
    "failure_reasons",
]

FORMAT = "vaccicard-conformance-report"
FORMAT_VERSION = 1
EVIDENCE_FILE = "evidence.ndjson"
VERDICTS = ("failed", "waived", "skipped", "not-run", "confirmed", "passed")
"""Every item verdict, most urgent first (the order reports list them in)."""
PASSING = frozenset({"passed", "confirmed"})
READY_VERDICTS = frozenset({"passed", "confirmed", "waived"})
"""Verdicts of a blocking item that allow requesting the evaluation session."""
IG_PROFILE_PAGE = (
    "https://www.ehealth.fgov.be/standards/fhir/vaccination/StructureDefinition-be-vaccination.html"
)
IG_DEFINITIONS_PAGE = IG_PROFILE_PAGE.replace(".html", "-definitions.html")


def build_report(
    run: RunInfo,
    scenarios: Iterable[ScenarioResult],
    catalogue: Catalogue,
    *,
    waivers: Waivers | None = None,
    baseline: Mapping[str, Any] | None = None,
    today: date | None = None,
) -> dict[str, Any]:
    """The report.json content of a run (not redacted: ``write_report`` redacts it).

    ``today`` decides which waivers expired; it defaults to the date the run finished. Scenario ids
    must be unique; a repeated one (the examples of an outline, say) is numbered ``<id> #2``, ``#3``.
    """
    results = _unique_ids(scenarios)
    today = today or run.finished.date()
    listed = list(waivers or ())
    active = [waiver for waiver in listed if not waiver.expired(today)]
    by_item: dict[str, list[ScenarioResult]] = {item.id: [] for item in catalogue}
    for scenario in results:
        for item_id in dict.fromkeys(scenario.items):
            if item_id in by_item:
                by_item[item_id].append(scenario)
    items = [_item(item, by_item[item.id], active) for item in catalogue]
    scenario_entries = [_scenario(scenario, catalogue, active) for scenario in results]
    waiver_entries = [_waiver(waiver, by_item, today) for waiver in listed]
    report: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "generated": iso(datetime.now(UTC)),
        "run": run.to_json(),
        "summary": _summary(items, scenario_entries, waiver_entries, catalogue),
        "areas": [
            {
                "code": area.code,
                "titles": _titles(area.titles),
                "items": [i.id for i in catalogue.by_area(area.code)],
            }
            for area in catalogue.areas
        ],
        "items": items,
        "scenarios": scenario_entries,
        "waivers": {"file": waivers.source if waivers else None, "entries": waiver_entries},
        "evidence": {"file": EVIDENCE_FILE, "referenced": len({e for s in results for e in s.evidence})},
        "baseline": _compare(items, baseline) if baseline is not None else None,
    }
    return report


def _unique_ids(scenarios: Iterable[ScenarioResult]) -> list[ScenarioResult]:
    """The scenarios, a repeated id (e.g. the examples of an outline) numbered ``<id> #2``, ``#3`` ..."""
    seen: dict[str, int] = {}
    results = []
    for scenario in scenarios:
        count = seen[scenario.id] = seen.get(scenario.id, 0) + 1
        results.append(scenario if count == 1 else replace(scenario, id=f"{scenario.id} #{count}"))
    return results


# -- items ------------------------------------------------------------------------------------------


def _titles(titles: Sequence[tuple[str, str]]) -> dict[str, str]:
    found = dict(titles)
    return {lang: found[lang] for lang in LANGUAGES}


def _covering(item_id: str, scenario: ScenarioResult, waivers: Sequence[Waiver]) -> list[int]:
    return [waiver.number for waiver in waivers if waiver.matches(item_id, scenario)]


def item_status(item_id: str, scenario: ScenarioResult) -> str:
    """What one scenario says of one of its items: passed, failed or skipped (not verified).

    A failed scenario fails the item when a failing step judges it (or judges every item of the
    scenario: a step without items, such as a Given that could not set the scene). Otherwise the
    item passed when every step judging it passed, and was not verified when one of them did not run.
    """
    if scenario.status != "failed":
        return scenario.status
    judged_by = [step for step in scenario.steps if not step.items or item_id in step.items]
    if any(step.status == "failed" for step in judged_by):
        return "failed"
    own = [step for step in scenario.steps if item_id in step.items]
    if not own:
        return "failed"  # no step names the item: the scenario's failure is its failure
    return "passed" if all(step.status == "passed" for step in own) else "skipped"


def _verdict(
    item_id: str, scenarios: Sequence[ScenarioResult], active: Sequence[Waiver]
) -> tuple[str, list[int]]:
    if not scenarios:
        return "not-run", []
    statuses = [item_status(item_id, s) for s in scenarios]
    failing = [s for s, status in zip(scenarios, statuses, strict=True) if status == "failed"]
    if failing:
        covers = [_covering(item_id, s, active) for s in failing]
        if all(covers):
            return "waived", sorted({number for numbers in covers for number in numbers})
        return "failed", []
    if "skipped" in statuses:
        return "skipped", []
    return ("confirmed" if any(s.confirmations for s in scenarios) else "passed"), []


def _item(
    item: EvaluationItem, scenarios: Sequence[ScenarioResult], active: Sequence[Waiver]
) -> dict[str, Any]:
    verdict, waived_by = _verdict(item.id, scenarios, active)
    counts = dict.fromkeys(("passed", "failed", "skipped"), 0)
    for scenario in scenarios:
        counts[item_status(item.id, scenario)] += 1
    return {
        "id": item.id,
        "area": item.area,
        "blocking": item.blocking,
        "titles": _titles(item.titles),
        "description": item.description,
        "verdict": verdict,
        "scenarios": [s.id for s in scenarios],
        "counts": counts,
        "skip_reasons": list(
            dict.fromkeys(s.skip_reason for s in scenarios if s.status == "skipped" and s.skip_reason)
        ),
        "waivers": waived_by,
        "ig": {
            "elements": [{"id": e, "url": f"{IG_DEFINITIONS_PAGE}#{e}"} for e in item.ig_elements],
            "invariants": [{"key": k, "url": IG_PROFILE_PAGE} for k in item.ig_invariants],
            "bindings": [{"element": e, "url": f"{IG_DEFINITIONS_PAGE}#{e}"} for e in item.ig_bindings],
        },
        "register_rules": list(item.register_rules),
    }


# -- scenarios and waivers -----------------------------------------------------------------------------


def _scenario(scenario: ScenarioResult, catalogue: Catalogue, active: Sequence[Waiver]) -> dict[str, Any]:
    entry = scenario.to_json()
    known = [item_id for item_id in scenario.items if item_id in catalogue]
    covering = (
        [_covering(item_id, scenario, active) for item_id in known] if scenario.status == "failed" else []
    )
    entry["waived"] = bool(covering) and all(covering)
    entry["waivers"] = sorted({n for numbers in covering for n in numbers}) if entry["waived"] else []
    failing = scenario.failing_step
    entry["failure"] = (failing.message or failing.text) if failing else scenario.message
    if scenario.status != "failed":
        entry["failure"] = None
    return entry


def _waiver(waiver: Waiver, by_item: Mapping[str, Sequence[ScenarioResult]], today: date) -> dict[str, Any]:
    matched = [
        s.id for s in by_item.get(waiver.item, ()) if s.status == "failed" and waiver.matches(waiver.item, s)
    ]
    entry = waiver.to_json()
    entry["status"] = "expired" if waiver.expired(today) else "applied" if matched else "unused"
    entry["matches"] = matched
    return entry


# -- summary and baseline ------------------------------------------------------------------------------


def _summary(
    items: Sequence[dict[str, Any]],
    scenarios: Sequence[dict[str, Any]],
    waivers: Sequence[dict[str, Any]],
    catalogue: Catalogue,
) -> dict[str, Any]:
    item_counts = dict.fromkeys(VERDICTS, 0)
    for item in items:
        item_counts[item["verdict"]] += 1
    scenario_counts = dict.fromkeys(("passed", "failed", "skipped"), 0)
    issues = dict.fromkeys(SEVERITIES, 0)
    for scenario in scenarios:
        scenario_counts[scenario["status"]] += 1
        for issue in scenario["issues"]:
            issues[issue["severity"]] += 1
    blockers = [
        {"item": item["id"], "verdict": item["verdict"]}
        for item in items
        if item["blocking"] and item["verdict"] not in READY_VERDICTS
    ]
    return {
        "ready": not blockers,
        "blockers": blockers,
        "items": {**item_counts, "total": len(items)},
        "scenarios": {
            **scenario_counts,
            "waived": sum(1 for s in scenarios if s["waived"]),
            "total": len(scenarios),
        },
        "issues": issues,
        "expired_waivers": [w["number"] for w in waivers if w["status"] == "expired"],
        "unused_waivers": [w["number"] for w in waivers if w["status"] == "unused"],
        "unmapped_scenarios": [s["id"] for s in scenarios if not any(i in catalogue for i in s["items"])],
    }


def _compare(items: Sequence[dict[str, Any]], baseline: Mapping[str, Any]) -> dict[str, Any]:
    before = {item["id"]: item["verdict"] for item in baseline.get("items", ())}
    now = {item["id"]: item["verdict"] for item in items}
    run = baseline.get("run", {})
    return {
        "run": {
            "started": run.get("started"),
            "harness_version": run.get("harness_version"),
            "software": run.get("software"),
        },
        "new_failures": [i for i, v in now.items() if v == "failed" and before.get(i) != "failed"],
        "fixed": [i for i, v in now.items() if v in PASSING and before.get(i) == "failed"],
        "unchanged_failures": [i for i, v in now.items() if v == "failed" and before.get(i) == "failed"],
        "unchanged_passes": [i for i, v in now.items() if v in PASSING and before.get(i) in PASSING],
    }


# -- the run's outcome -----------------------------------------------------------------------------------


def failure_reasons(report: Mapping[str, Any]) -> list[str]:
    """Why the run fails, one English sentence each (empty when it does not fail)."""
    reasons = []
    failed = [item["id"] for item in report["items"] if item["verdict"] == "failed"]
    if failed:
        reasons.append(f"{len(failed)} evaluation item(s) failed: {', '.join(failed)}")
    unmapped = set(report["summary"]["unmapped_scenarios"])
    loose = [s["id"] for s in report["scenarios"] if s["status"] == "failed" and s["id"] in unmapped]
    if loose:
        reasons.append(f"{len(loose)} failing scenario(s) name no evaluation item: {', '.join(loose)}")
    expired = [w for w in report["waivers"]["entries"] if w["status"] == "expired"]
    if expired:
        listed = ", ".join(f"waiver {w['number']} ({w['item']}, expired {w['expires']})" for w in expired)
        reasons.append(f"{len(expired)} waiver(s) expired: renew or remove {listed}")
    return reasons


def exit_code(report: Mapping[str, Any]) -> int:
    """The run's exit code: 1 (conformance failures) when ``failure_reasons`` says so, else 0."""
    return EXIT_FAILURES if failure_reasons(report) else EXIT_OK
