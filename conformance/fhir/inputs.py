"""Reading what the user asks to validate: JSON files, NDJSON files (streamed), folders, stdin.

Each input resource becomes an ``InputItem`` with a label that maps it back to where it came from
(``file.ndjson line 3``). Input that cannot be read as JSON becomes an item with a fatal issue
instead of a resource, so one bad line never stops a batch. Files are only ever read.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from conformance.errors import ConfigurationError
from conformance.fhir.outcome import Issue

NDJSON_SUFFIXES = (".ndjson", ".jsonl")
JSON_SUFFIXES = (".json", *NDJSON_SUFFIXES)


@dataclass(slots=True)
class InputItem:
    """One resource to validate, or the reason it could not be read."""

    label: str
    resource: Any = None
    problem: Issue | None = None


def read_inputs(paths: list[str]) -> Iterator[InputItem]:
    """Yield every resource of the given paths in order (``-`` is standard input)."""
    for name in paths:
        if name == "-":
            yield from _from_bytes(sys.stdin.buffer.read(), "stdin", ndjson=None)
            continue
        path = Path(name)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if _is_resource_file(p))
            if not files:
                raise ConfigurationError(f"{path}: no .json or .ndjson file in this folder")
            for file in files:
                yield from _from_file(file)
        elif path.is_file():
            yield from _from_file(path)
        else:
            raise ConfigurationError(f"{path}: no such file or folder")


def _is_resource_file(path: Path) -> bool:
    """JSON and NDJSON files of a folder, less hidden files and NPM package manifests."""
    return (
        path.is_file()
        and path.suffix.lower() in JSON_SUFFIXES
        and not path.name.startswith(".")
        and path.name != "package.json"
    )


def _from_file(path: Path) -> Iterator[InputItem]:
    if path.suffix.lower() in NDJSON_SUFFIXES:
        yield from _ndjson_lines(path)
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    yield from _from_bytes(data, str(path), ndjson=False)


def _ndjson_lines(path: Path) -> Iterator[InputItem]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield _parse(line, f"{path} line {number}")


def _from_bytes(data: bytes, label: str, ndjson: bool | None) -> Iterator[InputItem]:
    text = data.lstrip()
    if not text:
        yield InputItem(label, problem=Issue("fatal", "structure", "", "the input is empty", "json"))
        return
    if text[:1] == b"<":
        yield InputItem(
            label,
            problem=Issue(
                "fatal", "not-supported", "", "this looks like XML; only FHIR JSON is supported", "json"
            ),
        )
        return
    item = _parse(data, label)
    if ndjson is None and item.problem is not None and b"\n" in text.strip():
        # standard input may be NDJSON: one resource per line
        lines = data.splitlines()
        yield from (
            _parse(line, f"{label} line {n}") for n, line in enumerate(lines, start=1) if line.strip()
        )
        return
    yield item


def _parse(data: bytes, label: str) -> InputItem:
    try:
        return InputItem(label, orjson.loads(data))
    except orjson.JSONDecodeError as exc:
        return InputItem(label, problem=parse_error_issue(exc, data))


def parse_error_issue(exc: orjson.JSONDecodeError, data: bytes) -> Issue:
    """An issue for content that is not JSON, with line and column where the parser stopped."""
    reason = exc.msg
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        return Issue("fatal", "structure", "", f"the input is not valid UTF-8 (byte {bad.start})", "json")
    where = f" at line {exc.lineno}, column {exc.colno}" if exc.lineno else ""
    if "recursion" in reason.lower():
        reason = "nested too deeply"
    return Issue("fatal", "structure", "", f"malformed JSON{where}: {reason}", "json")
