"""Reports: run results → ``report.json`` → HTML, JUnit, Allure and the ticket summary, with evidence.

The pytest plugin describes a run with the frozen dataclasses of ``model`` (``RunInfo``,
``ScenarioResult``, ``StepResult``, ``FhirIssue``), builds the report with ``build_report`` (a verdict
per evaluation item, readiness for the evaluation session, waivers from ``load_waivers``, a comparison
with a baseline from ``load_report``), and writes it with ``write_report``: redacted by a ``Redactor``,
atomically, with an integrity manifest that ``verify_report`` checks. ``exit_code`` and
``failure_reasons`` say whether the run fails. Everything shown to a reviewer is rendered from
``report.json`` and ``evidence.ndjson`` alone (``render``), so ``report DIR`` re-renders any report in
another language or format.
"""

from conformance.report.build import build_report, exit_code, failure_reasons
from conformance.report.manifest import VerifyResult, load_public_key, verify_report
from conformance.report.model import (
    FhirIssue,
    PackageInfo,
    RunInfo,
    ScenarioResult,
    SoftwareUnderTest,
    StepResult,
)
from conformance.report.redact import Redactor, simulator_names
from conformance.report.render import render
from conformance.report.schema import load_report, validate_report
from conformance.report.source import ReportSource, load_directory
from conformance.report.waivers import Waiver, Waivers, load_waivers, parse_waivers
from conformance.report.writer import write_report

__all__ = [
    "FhirIssue",
    "PackageInfo",
    "Redactor",
    "ReportSource",
    "RunInfo",
    "ScenarioResult",
    "SoftwareUnderTest",
    "StepResult",
    "VerifyResult",
    "Waiver",
    "Waivers",
    "build_report",
    "exit_code",
    "failure_reasons",
    "load_directory",
    "load_public_key",
    "load_report",
    "load_waivers",
    "parse_waivers",
    "render",
    "simulator_names",
    "validate_report",
    "verify_report",
    "write_report",
]
