"""Write a report directory, all or nothing.

``write_report`` writes, into a hidden temporary folder beside the target: ``report.json`` (redacted),
``evidence.ndjson`` (the redacted exchanges the scenarios refer to, one per line, in id order),
``report.html``, ``junit.xml``, ``ticket.md``, optionally ``allure-results/``, and last
``manifest.json`` (signed with ``sign_key`` when given). The renderings are made from the two files
just written, exactly as ``report DIR`` re-renders them. Only then is the folder renamed into place;
a failure on the way removes it, so there is never a half-written report. An existing report directory
at the target is replaced (it is removed once the new one is in place); any other non-empty folder
there is refused.

``redactor`` has no default: pass a ``Redactor`` (the normal case) or ``None`` for ``--no-redact``,
which the report then shows as a banner (``run.redacted`` is set from what was actually done).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from conformance.errors import ConfigurationError
from conformance.report.allure import ALLURE_DIR, allure_results
from conformance.report.manifest import MANIFEST_FILE, build_manifest, load_private_key, manifest_bytes
from conformance.report.redact import Redactor
from conformance.report.render import FORMATS, render
from conformance.report.schema import REPORT_FILE, validate_report
from conformance.report.source import load_directory
from conformance.traffic.recorder import Exchange

__all__ = ["write_report"]


def write_report(
    directory: str | Path,
    report: Mapping[str, Any],
    exchanges: Iterable[Exchange],
    *,
    redactor: Redactor | None,
    sign_key: str | Path | None = None,
    allure: bool = False,
) -> Path:
    """Write the report directory atomically and return its path."""
    target = Path(directory).absolute()
    _check_target(target)
    key = load_private_key(sign_key) if sign_key is not None else None
    final, evidence = _finalise(report, exchanges, redactor)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        (scratch / REPORT_FILE).write_bytes(orjson.dumps(final, option=orjson.OPT_INDENT_2) + b"\n")
        (scratch / final["evidence"]["file"]).write_bytes(
            b"".join(orjson.dumps(exchange.to_json(), default=str) + b"\n" for exchange in evidence)
        )
        # read back what was written (already schema-checked by _finalise): renderings come from the files
        source = dataclasses.replace(load_directory(scratch, validate=False), directory=target)
        for fmt, (name, _) in FORMATS.items():
            (scratch / name).write_bytes(render(source, fmt))
        if allure:
            folder = scratch / ALLURE_DIR
            folder.mkdir()
            for name, content in allure_results(source).items():
                (folder / name).write_bytes(content)
        (scratch / MANIFEST_FILE).write_bytes(manifest_bytes(build_manifest(scratch, key)))
        _move_into_place(scratch, target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return target


def _check_target(target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise ConfigurationError(f"cannot write the report to {target}: it is a file")
    if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST_FILE).is_file():
        raise ConfigurationError(
            f"cannot write the report to {target}: the folder holds files and is not a report directory"
        )


def _finalise(
    report: Mapping[str, Any], exchanges: Iterable[Exchange], redactor: Redactor | None
) -> tuple[dict[str, Any], list[Exchange]]:
    """The report as written (redacted, evidence counted, schema-checked) and its evidence."""
    referenced = {i for scenario in report["scenarios"] for i in scenario["evidence"]}
    kept: dict[int, Exchange] = {}
    for exchange in exchanges:
        if exchange.id in referenced and exchange.id not in kept:
            kept[exchange.id] = redactor.exchange(exchange) if redactor else exchange
    final = redactor.report(dict(report)) if redactor else orjson.loads(orjson.dumps(report))
    final["run"]["redacted"] = redactor is not None
    final["evidence"]["count"] = len(kept)
    final["evidence"]["missing"] = sorted(referenced - set(kept))
    validate_report(final, source="the report being written")
    return final, [kept[i] for i in sorted(kept)]


def _move_into_place(scratch: Path, target: Path) -> None:
    previous = None
    if target.exists():
        previous = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
        os.replace(target, previous / "report")
    try:
        os.replace(scratch, target)
    except BaseException:
        if previous is not None:
            os.replace(previous / "report", target)
        raise
    finally:
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
