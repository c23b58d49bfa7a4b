"""What a run of the evaluation suite found, scenario by scenario, collected as pytest runs it.

``ResultCollector`` is a pytest plugin object: pytest-bdd's hooks give it each scenario's steps with
their status, duration and failure message (a ``CheckFailed`` also brings its FHIR issues and the
exchanges it judged), and the ``software`` fixture gives it every exchange the register received while
the software acted, with the validation issues the register found in their payloads. ``scenarios``
lists the outcomes in the order they ran; ``exchanges`` holds the evidence by exchange id. The report
is built from these alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from conformance.adapters.manual import ManualAdapter
from conformance.evaluation_items import item_ids_in_tags
from conformance.traffic.recorder import Exchange

__all__ = ["ResultCollector", "ScenarioOutcome", "StepOutcome", "judges"]

_ISSUE_KEYS = ("severity", "code", "expression", "message", "rule", "profile")
F = TypeVar("F", bound=Callable[..., Any])


def judges(*items: str) -> Callable[[F], F]:
    """Mark a Then-step with the evaluation items it can judge (those of its scenario count).

    A failing step then fails only those items of its scenario; an unmarked step judges them all.
    """

    def mark(function: F) -> F:
        function.judges = items  # type: ignore[attr-defined]
        return function

    return mark


@dataclass
class StepOutcome:
    """One step as it ran: passed, failed, skipped, or not run after an earlier failure."""

    keyword: str
    text: str
    status: str = "not-run"
    seconds: float = 0.0
    message: str | None = None
    items: tuple[str, ...] = ()
    """The items of its scenario this step judges (empty: all of them)."""


@dataclass
class ScenarioOutcome:
    """One scenario's result."""

    id: str
    nodeid: str
    feature: str
    feature_file: str
    name: str
    tags: list[str]
    items: list[str]
    status: str = "not-run"
    """passed, failed, skipped."""
    skip_reason: str | None = None
    seconds: float = 0.0
    steps: list[StepOutcome] = field(default_factory=list)
    message: str | None = None
    issues: list[dict[str, Any]] = field(default_factory=list)
    evidence: list[int] = field(default_factory=list)
    failed_evidence: list[int] = field(default_factory=list)
    confirmations: list[str] = field(default_factory=list)
    """With the manual adapter: what the operator confirmed the software showed, per action."""


class ResultCollector:
    """Collects ``ScenarioOutcome``s and the evidence while pytest runs the features."""

    def __init__(self) -> None:
        self.scenarios: dict[str, ScenarioOutcome] = {}
        self.exchanges: dict[int, Exchange] = {}
        self._step_started = 0.0

    # -- pytest-bdd hooks ----------------------------------------------------------------------------

    @pytest.hookimpl
    def pytest_bdd_before_scenario(self, request: pytest.FixtureRequest, feature: Any, scenario: Any) -> None:
        tags = sorted(scenario.tags | feature.tags)
        self.scenarios[request.node.nodeid] = ScenarioOutcome(
            id=f"{feature.rel_filename.split('/')[-1]}::{scenario.name}",
            nodeid=request.node.nodeid,
            feature=feature.name,
            feature_file=feature.rel_filename,
            name=scenario.name,
            tags=tags,
            items=item_ids_in_tags(tags),
            steps=[StepOutcome(step.keyword.strip(), step.name) for step in scenario.steps],
        )
        outcome = self.scenarios[request.node.nodeid]
        for position, step in enumerate(scenario.steps):  # what each step judges, run or not
            outcome.steps[position].items = _judged(_step_function(request, step), outcome.items)

    @pytest.hookimpl
    def pytest_bdd_before_step_call(self, request: pytest.FixtureRequest, step: Any, scenario: Any) -> None:
        self._step_started = time.perf_counter()

    @pytest.hookimpl
    def pytest_bdd_after_step(
        self, request: pytest.FixtureRequest, step: Any, scenario: Any, step_func: Any
    ) -> None:
        self._step(request, scenario, step, "passed", None, step_func)

    @pytest.hookimpl
    def pytest_bdd_step_error(
        self, request: pytest.FixtureRequest, scenario: Any, step: Any, step_func: Any, exception: Exception
    ) -> None:
        skipped = isinstance(exception, pytest.skip.Exception)
        self._step(request, scenario, step, "skipped" if skipped else "failed", str(exception), step_func)
        outcome = self.scenarios.get(request.node.nodeid)
        if outcome is not None and not skipped:
            outcome.issues = [*getattr(exception, "issues", []), *outcome.issues]
            outcome.failed_evidence = list(getattr(exception, "evidence", []))

    @pytest.hookimpl
    def pytest_bdd_step_func_lookup_error(
        self, request: pytest.FixtureRequest, scenario: Any, step: Any, exception: Exception
    ) -> None:
        self._step(request, scenario, step, "failed", str(exception), None)

    @pytest.hookimpl
    def pytest_bdd_after_scenario(self, request: pytest.FixtureRequest, feature: Any, scenario: Any) -> None:
        outcome = self.scenarios.get(request.node.nodeid)
        software = _fixture_if_set_up(request, "software")
        if outcome is None or software is None:
            return
        operator = isinstance(software.adapter, ManualAdapter)
        for action in software.actions:
            if operator:
                shown = action.result.message or "(no message)"
                outcome.confirmations.append(f"{action.intent.action}: {action.result.outcome}: {shown}")
            for exchange in action.exchanges:
                self.exchanges[exchange.id] = exchange
                if exchange.id not in outcome.evidence:
                    outcome.evidence.append(exchange.id)
                for issue in exchange.validation:  # what the register's validator said of the payload
                    found = {key: issue.get(key) for key in _ISSUE_KEYS}
                    if found not in outcome.issues:
                        outcome.issues.append(found)

    # -- pytest hooks --------------------------------------------------------------------------------

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        outcome = self.scenarios.get(report.nodeid)
        if outcome is None:
            return
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            outcome.seconds += report.duration
            if report.skipped:
                outcome.status = "skipped"
                outcome.skip_reason = _skip_reason(report)
            else:
                outcome.status = "passed" if report.passed else "failed"
            if report.failed and outcome.message is None:
                outcome.message = _message(report)

    def _step(
        self,
        request: pytest.FixtureRequest,
        scenario: Any,
        step: Any,
        status: str,
        message: str | None,
        step_func: Any,
    ) -> None:
        outcome = self.scenarios.get(request.node.nodeid)
        if outcome is None:
            return
        for position, candidate in enumerate(scenario.steps):
            if candidate is step and position < len(outcome.steps):
                outcome.steps[position].status = status
                outcome.steps[position].seconds = time.perf_counter() - self._step_started
                outcome.steps[position].message = message
                if step_func is not None:
                    outcome.steps[position].items = _judged(step_func, outcome.items)
                return

    @property
    def failed(self) -> list[ScenarioOutcome]:
        """The scenarios that failed."""
        return [s for s in self.scenarios.values() if s.status == "failed"]


def _judged(step_func: Any, items: list[str]) -> tuple[str, ...]:
    """The items of the scenario a step function is marked (``judges``) to judge."""
    return tuple(item for item in getattr(step_func, "judges", ()) if item in items)


def _step_function(request: pytest.FixtureRequest, step: Any) -> Any:
    """The function pytest-bdd will run for ``step`` (None when it has none: that step fails anyway)."""
    from pytest_bdd.scenario import get_step_function

    context = get_step_function(request, step)
    return context.step_func if context is not None else None


def _fixture_if_set_up(request: pytest.FixtureRequest, name: str) -> Any:
    if name not in request.fixturenames:
        return None
    try:
        return request.getfixturevalue(name)
    except Exception:  # a fixture that failed to set up has nothing to show
        return None


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    return str(crash.message) if crash is not None else str(report.longrepr)[-2000:]
