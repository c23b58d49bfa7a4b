"""``junit.xml``: one test case per scenario, for CI (GitLab and GitHub read this shape).

One ``<testsuite>`` per evaluation area; a scenario belongs to the area of its first catalogue item
(``unmapped`` when it names none). ``classname`` is ``<AREA>.<item id>``, ``name`` the scenario name.
A failure carries the failing step's message as ``message`` and the steps, the FHIR issues and the
exchange ids as text; a skipped scenario carries its reason. A failed scenario whose failure is
waived is written as skipped with the waiver, so CI agrees with the run's exit code. Characters XML
1.0 cannot hold are dropped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from conformance.report.i18n import Messages
from conformance.report.source import ReportSource

__all__ = ["render_junit"]

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
UNMAPPED = "unmapped"


def _clean(text: str) -> str:
    return _NOT_XML.sub("", text)


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _details(scenario: Mapping[str, Any]) -> str:
    lines = [f"{step['keyword']} {step['text']} [{step['status']}]" for step in scenario["steps"]]
    for step in scenario["steps"]:
        if step["status"] == "failed" and step["message"]:
            lines += ["", step["message"]]
    if scenario["message"]:
        lines += ["", scenario["message"]]
    for issue in scenario["issues"]:
        rule = f" [{issue['rule']}]" if issue["rule"] else ""
        lines.append(f"{issue['severity'].upper()} {issue['expression']}: {issue['message']}{rule}")
    if scenario["evidence"]:
        lines.append("exchanges: " + ", ".join(f"#{i}" for i in scenario["evidence"]))
    return "\n".join(lines)


def render_junit(source: ReportSource, lang: str) -> bytes:
    """The JUnit XML document of the report."""
    report = source.report
    messages = Messages.load()
    areas = {item["id"]: item["area"] for item in report["items"]}
    waivers = {w["number"]: w for w in report["waivers"]["entries"]}
    suites: dict[str, list[Mapping[str, Any]]] = {area["code"]: [] for area in report["areas"]}
    suites[UNMAPPED] = []
    for scenario in report["scenarios"]:
        home = next((i for i in scenario["items"] if i in areas), None)
        suites[areas[home] if home else UNMAPPED].append(scenario)
    titles = {area["code"]: area["titles"][lang] for area in report["areas"]}
    root = ET.Element(
        "testsuites", name="vaccicard-conformance", time=f"{report['run']['duration_seconds']:.3f}"
    )
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for code, scenarios in suites.items():
        if not scenarios:
            continue
        suite = ET.SubElement(root, "testsuite", name=_clean(f"{code} {titles.get(code, '')}".strip()))
        counts = {"tests": len(scenarios), "failures": 0, "skipped": 0}
        for scenario in scenarios:
            home = next((i for i in scenario["items"] if i in areas), None)
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"{code}.{home}" if home else UNMAPPED,
                name=_clean(scenario["name"]),
                file=_clean(scenario["feature_file"]),
                time=f"{scenario['duration_seconds']:.3f}",
            )
            if scenario["status"] == "failed" and scenario["waived"]:
                numbers = ", ".join(f"{n} ({waivers[n]['ticket']})" for n in scenario["waivers"])
                message = messages.get(lang, "junit_waived", waivers=numbers)
                ET.SubElement(case, "skipped", message=_clean(message)).text = _clean(_details(scenario))
                counts["skipped"] += 1
            elif scenario["status"] == "failed":
                failure = ET.SubElement(
                    case, "failure", message=_clean(_first_line(scenario["failure"] or ""))
                )
                failure.set("type", "ConformanceFailure")
                failure.text = _clean(_details(scenario))
                counts["failures"] += 1
            elif scenario["status"] == "skipped":
                ET.SubElement(case, "skipped", message=_clean(scenario["skip_reason"] or ""))
                counts["skipped"] += 1
            if scenario["confirmations"]:
                ET.SubElement(case, "system-out").text = _clean("\n".join(scenario["confirmations"]))
        suite.set("tests", str(counts["tests"]))
        suite.set("failures", str(counts["failures"]))
        suite.set("errors", "0")
        suite.set("skipped", str(counts["skipped"]))
        suite.set("time", f"{sum(s['duration_seconds'] for s in scenarios):.3f}")
        for key in totals:
            totals[key] += counts[key]
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("errors", "0")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
