"""The results model the pytest plugin hands to the report: the run, its scenarios, steps and FHIR issues.

Frozen dataclasses, checked on construction: a value outside the allowed sets (language, target kind,
adapter kind, statuses) or a naive datetime is a ``ConfigurationError`` naming the field. Sequences are
stored as tuples, so a ``RunInfo`` or ``ScenarioResult`` can be kept and shared safely. ``to_json``
gives the shape ``report.json`` stores (see ``schema.json``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from conformance.errors import ConfigurationError
from conformance.evaluation_items import LANGUAGES, item_ids_in_tags

__all__ = [
    "ADAPTER_KINDS",
    "SCENARIO_STATUSES",
    "SEVERITIES",
    "STEP_STATUSES",
    "TARGET_KINDS",
    "FhirIssue",
    "PackageInfo",
    "RunInfo",
    "ScenarioResult",
    "SoftwareUnderTest",
    "StepResult",
    "iso",
]

TARGET_KINDS = ("simulator", "acceptance", "production", "proxy")
ADAPTER_KINDS = ("reference", "faulty", "http", "command", "manual")
SCENARIO_STATUSES = ("passed", "failed", "skipped")
STEP_STATUSES = ("passed", "failed", "skipped", "not-run")
SEVERITIES = ("fatal", "error", "warning", "information")


def iso(moment: datetime) -> str:
    """An aware datetime as ISO 8601 with its offset (``Z`` for UTC)."""
    return moment.isoformat().replace("+00:00", "Z")


def _one_of(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ConfigurationError(f"{what} {value!r} is not one of {', '.join(allowed)}")


def _aware(moment: datetime, what: str) -> None:
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise ConfigurationError(f"{what} must be a timezone-aware datetime, got {moment!r}")


def _freeze(obj: object, name: str, values: Iterable[Any]) -> None:
    object.__setattr__(obj, name, tuple(values))


@dataclass(frozen=True)
class SoftwareUnderTest:
    """The vendor software the run evaluated, as the configuration names it."""

    vendor: str | None = None
    product: str | None = None
    version: str | None = None

    def to_json(self) -> dict[str, str | None]:
        """The JSON object report.json stores."""
        return {"vendor": self.vendor, "product": self.product, "version": self.version}


@dataclass(frozen=True)
class PackageInfo:
    """A FHIR package the validator used: id, version and the SHA-256 of its tarball or folder."""

    id: str
    version: str
    sha256: str

    def to_json(self) -> dict[str, str]:
        """The JSON object report.json stores."""
        return {"id": self.id, "version": self.version, "sha256": self.sha256}


@dataclass(frozen=True)
class RunInfo:
    """What was run, against what, by whom and with which packages."""

    harness_version: str
    started: datetime
    finished: datetime
    language: str
    target_kind: str
    target_url: str
    insecure: bool = False
    adapter_kind: str = "reference"
    adapter_argument: str | None = None
    software: SoftwareUnderTest = field(default_factory=SoftwareUnderTest)
    ticket: str | None = None
    operator: str | None = None
    packages: tuple[PackageInfo, ...] = ()
    """Packages as ``PackageInfo`` or ``(id, version, sha256)`` tuples."""
    package_gaps: tuple[str, ...] = ()
    command_line: tuple[str, ...] = ()
    redacted: bool = True
    """False when the run was made with ``--no-redact``: the report then shows a warning banner."""

    def __post_init__(self) -> None:
        _aware(self.started, "run start")
        _aware(self.finished, "run finish")
        if self.finished < self.started:
            raise ConfigurationError("run finish is before run start")
        _one_of(self.language, LANGUAGES, "report language")
        _one_of(self.target_kind, TARGET_KINDS, "target kind")
        _one_of(self.adapter_kind, ADAPTER_KINDS, "adapter kind")
        _freeze(
            self, "packages", (p if isinstance(p, PackageInfo) else PackageInfo(*p) for p in self.packages)
        )
        _freeze(self, "package_gaps", self.package_gaps)
        _freeze(self, "command_line", self.command_line)

    def to_json(self) -> dict[str, Any]:
        """The ``run`` object of report.json."""
        return {
            "harness_version": self.harness_version,
            "started": iso(self.started),
            "finished": iso(self.finished),
            "duration_seconds": round((self.finished - self.started).total_seconds(), 3),
            "language": self.language,
            "target": {"kind": self.target_kind, "url": self.target_url, "insecure": self.insecure},
            "adapter": {"kind": self.adapter_kind, "argument": self.adapter_argument},
            "software": self.software.to_json(),
            "ticket": self.ticket,
            "operator": self.operator,
            "packages": [p.to_json() for p in self.packages],
            "package_gaps": list(self.package_gaps),
            "command_line": list(self.command_line),
            "redacted": self.redacted,
        }


@dataclass(frozen=True)
class StepResult:
    """One Gherkin step as it ran."""

    keyword: str
    text: str
    status: str
    duration: float = 0.0
    """Seconds."""
    message: str | None = None
    """Why the step failed (or was skipped), as the step definition or validator said it."""
    items: tuple[str, ...] = ()
    """The evaluation items this step judges; empty: every item of its scenario."""

    def __post_init__(self) -> None:
        _one_of(self.status, STEP_STATUSES, f"status of step {self.text!r}")
        _freeze(self, "items", self.items)

    def to_json(self) -> dict[str, Any]:
        """The JSON object report.json stores."""
        return {
            "keyword": self.keyword,
            "text": self.text,
            "status": self.status,
            "duration_seconds": round(self.duration, 4),
            "message": self.message,
            "items": list(self.items),
        }


@dataclass(frozen=True)
class FhirIssue:
    """A validation issue a step found, as ``conformance.fhir.outcome.Issue`` carries it."""

    severity: str
    code: str
    expression: str
    message: str
    rule: str | None = None
    profile: str | None = None

    def __post_init__(self) -> None:
        _one_of(self.severity, SEVERITIES, "issue severity")

    @classmethod
    def from_issue(cls, issue: Any) -> FhirIssue:
        """Copy an ``Issue`` of the validator, an object with the same attributes, or a dict of them."""
        if isinstance(issue, Mapping):
            return cls(
                issue["severity"],
                issue.get("code") or "",
                issue.get("expression") or "",
                issue.get("message") or "",
                issue.get("rule"),
                issue.get("profile"),
            )
        return cls(issue.severity, issue.code, issue.expression, issue.message, issue.rule, issue.profile)

    def to_json(self) -> dict[str, Any]:
        """The JSON object report.json stores."""
        return {
            "severity": self.severity,
            "code": self.code,
            "expression": self.expression,
            "message": self.message,
            "rule": self.rule,
            "profile": self.profile,
        }


@dataclass(frozen=True)
class ScenarioResult:
    """One scenario as it ran, with the evaluation items it covers and its evidence."""

    id: str
    """Stable id: ``<feature file name>::<scenario name>``."""
    feature: str
    feature_file: str
    name: str
    status: str
    tags: tuple[str, ...] = ()
    items: tuple[str, ...] = ()
    """Evaluation item ids; when empty, taken from the ``item:`` tags."""
    skip_reason: str | None = None
    duration: float = 0.0
    steps: tuple[StepResult, ...] = ()
    issues: tuple[FhirIssue, ...] = ()
    evidence: tuple[int, ...] = ()
    """Ids of the exchanges (``Exchange.id``) that show what happened."""
    failed_evidence: tuple[int, ...] = ()
    """Ids of the exchanges the failing check judged (the report replays the last); added to ``evidence``."""
    confirmations: tuple[str, ...] = ()
    """What the operator confirmed or typed (manual adapter)."""
    message: str | None = None
    """A failure outside any step (a fixture or hook error), if that is why the scenario failed."""

    def __post_init__(self) -> None:
        _one_of(self.status, SCENARIO_STATUSES, f"status of scenario {self.id!r}")
        _freeze(self, "tags", self.tags)
        _freeze(self, "items", self.items or item_ids_in_tags(self.tags))
        _freeze(self, "steps", self.steps)
        _freeze(
            self, "issues", (i if isinstance(i, FhirIssue) else FhirIssue.from_issue(i) for i in self.issues)
        )
        _freeze(self, "failed_evidence", (int(e) for e in self.failed_evidence))
        _freeze(self, "evidence", dict.fromkeys([*(int(e) for e in self.evidence), *self.failed_evidence]))
        _freeze(self, "confirmations", self.confirmations)

    @property
    def failing_step(self) -> StepResult | None:
        """The first failed step, if any."""
        return next((step for step in self.steps if step.status == "failed"), None)

    def to_json(self) -> dict[str, Any]:
        """The JSON object report.json stores (without the verdict fields the report adds)."""
        return {
            "id": self.id,
            "feature": self.feature,
            "feature_file": self.feature_file,
            "name": self.name,
            "tags": list(self.tags),
            "items": list(self.items),
            "status": self.status,
            "skip_reason": self.skip_reason,
            "message": self.message,
            "duration_seconds": round(self.duration, 4),
            "steps": [step.to_json() for step in self.steps],
            "issues": [issue.to_json() for issue in self.issues],
            "evidence": list(self.evidence),
            "failed_evidence": list(self.failed_evidence),
            "confirmations": list(self.confirmations),
        }
