"""A report directory read back: ``report.json`` (schema-checked) and ``evidence.ndjson``.

Every rendering reads a ``ReportSource`` and nothing else, so ``write_report`` and the ``report DIR``
command produce the same files from the same directory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.errors import ConfigurationError
from conformance.report.schema import REPORT_FILE, load_report
from conformance.traffic.recorder import Exchange, load_ndjson

__all__ = ["ReportSource", "load_directory"]


@dataclass(frozen=True)
class ReportSource:
    """What every rendering reads: the report, its evidence by exchange id, where they are."""

    report: dict[str, Any]
    exchanges: Mapping[int, Exchange]
    directory: Path
    report_sha256: str
    """SHA-256 of report.json as written, quoted by the ticket summary."""

    def exchanges_of(self, scenario: Mapping[str, Any]) -> tuple[list[Exchange], list[int]]:
        """A scenario's exchanges found in the evidence, in id order, and the ids that are missing."""
        found, missing = [], []
        for exchange_id in sorted(set(scenario["evidence"])):
            exchange = self.exchanges.get(exchange_id)
            if exchange is None:
                missing.append(exchange_id)
            else:
                found.append(exchange)
        return found, missing


def load_directory(directory: str | Path, *, validate: bool = True) -> ReportSource:
    """Read a report directory's report.json (schema-checked unless ``validate`` is false) and evidence."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ConfigurationError(f"report directory not found: {folder}")
    report = load_report(folder, validate=validate)
    evidence = folder / report["evidence"]["file"]
    exchanges = {exchange.id: exchange for exchange in load_ndjson(evidence)} if evidence.is_file() else {}
    digest = hashlib.sha256((folder / REPORT_FILE).read_bytes()).hexdigest()
    return ReportSource(report, exchanges, folder, digest)
