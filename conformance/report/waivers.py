"""Waivers: known failures the vendor and RSW agreed to accept until a date (``waivers.toml``).

Each ``[[waiver]]`` table names an evaluation ``item`` (a VC id of the catalogue), optionally one
``scenario`` (its id ``<feature file>::<name>`` or just its name; without it the waiver covers every
scenario of the item), and requires a ``reason``, an RSW or vendor ``ticket`` and an ``expires`` date
(TOML date or ``YYYY-MM-DD``; the waiver holds through that day)::

    [[waiver]]
    item = "VC-REG-05"
    scenario = "registration.feature::Record the route and the body site"
    reason = "The body-site picker ships in 4.2; the route is already sent."
    ticket = "RSW-1234"
    expires = 2026-03-31

Every problem of the file (missing or unknown keys, bad dates, unknown item ids with close
suggestions) is listed in one ``ConfigurationError`` naming the waiver's number and line. How waivers
apply to a run is decided by ``build_report``: an expired waiver covers nothing and fails the run; an
unexpired one that matches no failure is reported as unused.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from conformance.errors import ConfigurationError
from conformance.evaluation_items import Catalogue
from conformance.report.model import ScenarioResult

__all__ = ["Waiver", "Waivers", "load_waivers", "parse_waivers"]

_REQUIRED = ("item", "reason", "ticket", "expires")
_KEYS = frozenset({*_REQUIRED, "scenario"})
_HEADER = re.compile(r"^\s*\[\[\s*waiver\s*\]\]")


@dataclass(frozen=True)
class Waiver:
    """One accepted failure: of an item (all its scenarios, or one), for a reason, until a date."""

    number: int
    """Position in the file, from 1."""
    item: str
    reason: str
    ticket: str
    expires: date
    scenario: str | None = None
    line: int | None = None

    def expired(self, today: date) -> bool:
        """True after the expiry date (the waiver holds through ``expires``)."""
        return today > self.expires

    def matches(self, item_id: str, scenario: ScenarioResult) -> bool:
        """True when this waiver names ``item_id`` and (if it names one) this scenario, by id or name."""
        if item_id != self.item:
            return False
        return self.scenario is None or self.scenario in (scenario.id, scenario.name)

    def to_json(self) -> dict[str, Any]:
        """The waiver as report.json lists it (without the status the report adds)."""
        return {
            "number": self.number,
            "item": self.item,
            "scenario": self.scenario,
            "reason": self.reason,
            "ticket": self.ticket,
            "expires": self.expires.isoformat(),
        }


@dataclass(frozen=True)
class Waivers:
    """The waivers of one file, in file order."""

    waivers: tuple[Waiver, ...]
    source: str = "waivers.toml"

    def __iter__(self) -> Iterator[Waiver]:
        return iter(self.waivers)

    def __len__(self) -> int:
        return len(self.waivers)


def load_waivers(path: str | Path, catalogue: Catalogue) -> Waivers:
    """Read and check a waivers file; ConfigurationError listing every problem found."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"waivers file not found: {source}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read waivers file {source}: {exc}") from None
    return parse_waivers(text, catalogue, source=str(source))


def parse_waivers(text: str, catalogue: Catalogue, *, source: str = "waivers.toml") -> Waivers:
    """Parse waivers from TOML text and check them against the catalogue."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{source}: not valid TOML: {exc}") from None
    problems: list[str] = []
    extra = sorted(set(data) - {"waiver"})
    if extra:
        problems.append(f"unknown top-level key(s) {', '.join(extra)}: waivers are [[waiver]] tables")
    tables = data.get("waiver", [])
    if not isinstance(tables, list):
        problems.append("waiver must be an array of tables: write [[waiver]]")
        tables = []
    lines = _header_lines(text)
    waivers = []
    for number, table in enumerate(tables, start=1):
        line = lines[number - 1] if number <= len(lines) else None
        where = f"waiver {number}" + (f" (line {line})" if line else "")
        waiver = _parse_one(table, number, line, where, catalogue, problems)
        if waiver is not None:
            waivers.append(waiver)
    if problems:
        raise ConfigurationError(f"{source}: {len(problems)} problem(s): " + "; ".join(problems))
    return Waivers(tuple(waivers), source=source)


def _header_lines(text: str) -> list[int]:
    return [number for number, line in enumerate(text.splitlines(), start=1) if _HEADER.match(line)]


def _parse_one(
    table: Any, number: int, line: int | None, where: str, catalogue: Catalogue, problems: list[str]
) -> Waiver | None:
    if not isinstance(table, dict):
        problems.append(f"{where}: must be a table")
        return None
    before = len(problems)
    missing = [key for key in _REQUIRED if key not in table]
    if missing:
        problems.append(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        problems.append(f"{where}: unknown key(s) {', '.join(unknown)}")
    for key in ("item", "reason", "ticket", "scenario"):
        if key in table and (not isinstance(table[key], str) or not table[key].strip()):
            problems.append(f"{where}: {key} must be a non-empty string")
    item = table.get("item")
    if isinstance(item, str) and item.strip() and item not in catalogue:
        try:
            catalogue.get(item)
        except ConfigurationError as exc:
            problems.append(f"{where}: {exc.message}")
    expires = _date(table.get("expires"), where, problems) if "expires" in table else None
    if len(problems) > before or expires is None:
        return None
    return Waiver(
        number=number,
        item=item,
        reason=table["reason"].strip(),
        ticket=table["ticket"].strip(),
        expires=expires,
        scenario=table["scenario"].strip() if "scenario" in table else None,
        line=line,
    )


def _date(value: Any, where: str, problems: list[str]) -> date | None:
    if isinstance(value, date) and not hasattr(value, "hour"):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    problems.append(f"{where}: expires must be a date such as 2026-03-31, got {value!r}")
    return None
