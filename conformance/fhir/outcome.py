"""Validation results: issues with severity, IssueType code, FHIRPath location, rule and profile.

An ``Outcome`` is the list of issues found in one resource; it serialises to a FHIR
OperationOutcome (the location goes to ``expression``, the rule and profile to extensions-free text
fields the HL7 validator also uses: ``diagnostics`` carries ``rule`` and ``profile``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

SEVERITIES = ("fatal", "error", "warning", "information")
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


@dataclass(frozen=True, slots=True)
class Issue:
    """One finding: what (message), how bad (severity), which kind (IssueType code), where, why."""

    severity: str
    code: str
    expression: str
    message: str
    rule: str | None = None
    profile: str | None = None

    @property
    def is_error(self) -> bool:
        """Fatal and error issues make a resource invalid."""
        return self.severity in ("fatal", "error")

    def to_fhir(self) -> dict:
        """This issue as an OperationOutcome.issue element."""
        issue: dict = {"severity": self.severity, "code": self.code, "details": {"text": self.message}}
        notes = [f"rule: {self.rule}"] if self.rule else []
        if self.profile:
            notes.append(f"profile: {self.profile}")
        if notes:
            issue["diagnostics"] = "; ".join(notes)
        if self.expression:
            issue["expression"] = [self.expression]
        return issue

    def to_text(self) -> str:
        """One line for a terminal: severity, location, message, [rule]."""
        where = f" {self.expression}:" if self.expression else ""
        rule = f" [{self.rule}]" if self.rule else ""
        return f"{self.severity.upper():<11}{where} {self.message}{rule}"


@dataclass
class Outcome:
    """The issues found in one resource (or one input that could not be read as one)."""

    issues: list[Issue] = field(default_factory=list)
    label: str = ""  # what was validated, e.g. "Immunization/abc" or "file.json line 3"

    @property
    def ok(self) -> bool:
        """True when there is no error or fatal issue."""
        return not any(issue.is_error for issue in self.issues)

    def errors(self) -> list[Issue]:
        """The error and fatal issues."""
        return [issue for issue in self.issues if issue.is_error]

    def warnings(self) -> list[Issue]:
        """The warnings."""
        return [issue for issue in self.issues if issue.severity == "warning"]

    def count(self, severity: str) -> int:
        """How many issues have this severity."""
        return sum(1 for issue in self.issues if issue.severity == severity)

    def sorted_issues(self) -> list[Issue]:
        """Issues, most severe first, then by location."""
        return sorted(self.issues, key=lambda i: (_RANK.get(i.severity, 9), i.expression))

    def __iter__(self) -> Iterator[Issue]:
        return iter(self.issues)

    def to_operation_outcome(self) -> dict:
        """A FHIR OperationOutcome; an empty outcome says so with one information issue."""
        issues = [issue.to_fhir() for issue in self.sorted_issues()]
        if not issues:
            issues = [{"severity": "information", "code": "informational", "details": {"text": "No issues"}}]
        return {"resourceType": "OperationOutcome", "issue": issues}


def deduplicate(issues: Iterable[Issue]) -> list[Issue]:
    """Issues in order, each (severity, location, message) once."""
    seen: set[tuple[str, str, str]] = set()
    result = []
    for issue in issues:
        key = (issue.severity, issue.expression, issue.message)
        if key not in seen:
            seen.add(key)
            result.append(issue)
    return result
