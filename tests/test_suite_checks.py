"""History checks on what an operator reports (no record ids): matched by vaccine and date."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.adapters.intents import AdapterResult, Coding, DisplayedVaccination, ReadHistory
from conformance.suite import checks
from conformance.suite.software import Action

SCT = "http://snomed.info/sct"
HELD = [
    {
        "id": "a",
        "status": "completed",
        "vaccineCode": {"coding": [{"code": "871765008"}]},
        "occurrenceDateTime": "2025-03-01T10:00:00+01:00",
    },
    {
        "id": "b",
        "status": "completed",
        "vaccineCode": {"coding": [{"code": "1181000221105"}]},
        "occurrenceDateTime": "2025-10-15T10:00:00+01:00",
    },
    {
        "id": "c",
        "status": "entered-in-error",
        "vaccineCode": {"coding": [{"code": "871742003"}]},
        "occurrenceDateTime": "2026-01-10T10:00:00+01:00",
    },
]


class Register:
    def records(self, **_: Any) -> list[dict[str, Any]]:
        return HELD


def shown(*lines: tuple[str, str, str]) -> Action:
    vaccinations = tuple(
        DisplayedVaccination(status=status, vaccine=Coding(SCT, code), occurrence=day)  # type: ignore[arg-type]
        for status, code, day in lines
    )
    return Action(ReadHistory("58032100126"), AdapterResult("succeeded", vaccinations=vaccinations), ())


def test_an_operators_history_matches_by_vaccine_and_date() -> None:
    action = shown(("completed", "871765008", "2025-03-01"), ("completed", "1181000221105", "2025-10-15"))
    checks.history_matches_register(action, Register(), "58032100126")  # type: ignore[arg-type]
    checks.cancelled_not_given(action, Register(), "58032100126")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "lines, problem",
    [
        ((("completed", "871765008", "2025-03-01"),), "missing 1"),
        (
            (("completed", "871765008", "2025-03-01"),) * 2 + (("completed", "1181000221105", "2025-10-15"),),
            "unknown 1",
        ),
        (
            (("completed", "871765008", "2025-03-01"), ("completed", "1181000221105", "2025-10-16")),
            "unknown 1",
        ),
    ],
)
def test_an_operators_history_that_differs_fails(
    lines: tuple[tuple[str, str, str], ...], problem: str
) -> None:
    with pytest.raises(checks.CheckFailed, match=problem):
        checks.history_matches_register(shown(*lines), Register(), "58032100126")  # type: ignore[arg-type]


def test_a_cancelled_line_shown_as_given_fails() -> None:
    action = shown(("completed", "871742003", "2026-01-10"))
    with pytest.raises(checks.CheckFailed, match="shown as completed"):
        checks.cancelled_not_given(action, Register(), "58032100126")  # type: ignore[arg-type]
