"""From a run's collected results to its report directory (``conformance.report`` does the rendering).

``write_run_report`` turns the ``ResultCollector``'s outcomes into ``ScenarioResult``s, describes the run
(``RunInfo``: harness, packages, target, adapter, the software under test, ticket, operator), builds the
report with the evaluation-item catalogue, waivers and an optional baseline, and writes it: redacted
unless ``redact`` is off, signed when a key is given, with Allure results. It returns the directory,
the report and the run's exit code: 1 when the report says the run fails (a failed item, an expired
waiver) or, with ``fail_on="warning"``, when any payload drew a validation warning.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from conformance import __version__
from conformance.adapters.registry import AdapterSpec
from conformance.errors import EXIT_FAILURES
from conformance.evaluation_items import Catalogue
from conformance.fhir.packages import PackageCache
from conformance.report import (
    Redactor,
    RunInfo,
    ScenarioResult,
    SoftwareUnderTest,
    StepResult,
    build_report,
    exit_code,
    load_report,
    load_waivers,
    write_report,
)
from conformance.suite.results import ResultCollector, ScenarioOutcome

__all__ = ["ReportOptions", "write_run_report"]


@dataclass(frozen=True)
class ReportOptions:
    """Where and how a run's report is written."""

    directory: Path
    redact: bool = True
    sign_key: str | None = None
    waivers: str | None = None
    baseline: str | None = None
    fail_on: str = "error"
    """``error``: failed items fail the run; ``warning``: validation warnings on any payload too."""
    software: SoftwareUnderTest = field(default_factory=SoftwareUnderTest)
    ticket: str | None = None
    operator: str | None = None


def _scenario(outcome: ScenarioOutcome) -> ScenarioResult:
    status = outcome.status if outcome.status in ("passed", "failed", "skipped") else "skipped"
    return ScenarioResult(
        id=outcome.id,
        feature=outcome.feature,
        feature_file=outcome.feature_file,
        name=outcome.name,
        status=status,
        tags=tuple(outcome.tags),
        items=tuple(outcome.items),
        skip_reason=outcome.skip_reason or ("not run" if outcome.status == "not-run" else None),
        duration=outcome.seconds,
        steps=tuple(StepResult(s.keyword, s.text, s.status, s.seconds, s.message, s.items) for s in outcome.steps),
        issues=tuple(outcome.issues),
        evidence=tuple(outcome.evidence),
        failed_evidence=tuple(outcome.failed_evidence),
        confirmations=tuple(outcome.confirmations),
        message=outcome.message,
    )


def _packages(cache: PackageCache) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Installed packages with the SHA-256 of their ``package.json`` and ``.index.json``; the gaps."""
    found = []
    for package in cache.installed():
        digest = hashlib.sha256()
        for name in ("package.json", ".index.json"):
            path = package.content_dir / name
            if path.is_file():
                digest.update(path.read_bytes())
        found.append((package.ref.id, package.ref.version, digest.hexdigest()))
    return found, [f"{gap.missing} (needed by {gap.needed_by})" for gap in cache.gaps()]


def write_run_report(
    options: ReportOptions,
    results: ResultCollector,
    *,
    adapter: str,
    target_kind: str,
    target_url: str,
    insecure: bool,
    language: str,
    cache: PackageCache,
    started: datetime,
    finished: datetime,
    command_line: Sequence[str],
) -> tuple[Path, dict[str, Any], int]:
    """Write the run's report directory; its path, the report and the run's exit code."""
    catalogue = Catalogue.load()
    spec = AdapterSpec.parse(adapter)
    packages, gaps = _packages(cache)
    run = RunInfo(
        harness_version=__version__,
        started=started,
        finished=finished,
        language=language,
        target_kind=target_kind,
        target_url=target_url,
        insecure=insecure,
        adapter_kind=spec.kind,
        adapter_argument=spec.argument,
        software=options.software,
        ticket=options.ticket,
        operator=options.operator,
        packages=tuple(packages),
        package_gaps=tuple(gaps),
        command_line=tuple(command_line),
        redacted=options.redact,
    )
    report = build_report(
        run,
        [_scenario(o) for o in results.scenarios.values()],
        catalogue,
        waivers=load_waivers(options.waivers, catalogue) if options.waivers else None,
        baseline=load_report(options.baseline) if options.baseline else None,
    )
    redactor = Redactor.for_run() if options.redact else None
    evidence = [results.exchanges[i] for i in sorted(results.exchanges)]
    directory = write_report(
        options.directory, report, evidence, redactor=redactor, sign_key=options.sign_key, allure=True
    )
    code = exit_code(report)
    if options.fail_on == "warning" and any(
        issue.get("severity") == "warning" for exchange in evidence for issue in exchange.validation
    ):
        code = EXIT_FAILURES
    return directory, report, code
