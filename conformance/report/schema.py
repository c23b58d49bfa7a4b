"""The JSON Schema of report.json (``schema.json``, 2020-12) and reading a report back.

``load_report(path)`` takes a report directory or its ``report.json`` and returns the parsed report
once the schema accepts it; a missing, unreadable, non-JSON or non-conforming file is a
``ConfigurationError`` naming the file and the first problems with their JSON location.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator

from conformance.errors import ConfigurationError
from conformance.report.build import FORMAT, FORMAT_VERSION

__all__ = ["REPORT_FILE", "load_report", "report_schema", "schema_problems", "validate_report"]

REPORT_FILE = "report.json"
_MAX_LISTED = 5


@cache
def report_schema() -> dict[str, Any]:
    """The JSON Schema of report.json, as shipped with the package."""
    return json.loads(resources.files(__package__).joinpath("schema.json").read_text(encoding="utf-8"))


@cache
def _validator() -> Draft202012Validator:
    schema = report_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def schema_problems(report: Any) -> list[str]:
    """Every schema violation of ``report`` as ``<JSON pointer>: <message>`` (empty when valid)."""
    problems = []
    for error in sorted(_validator().iter_errors(report), key=lambda e: list(e.absolute_path)):
        pointer = "/" + "/".join(str(part) for part in error.absolute_path)
        problems.append(f"{pointer}: {error.message}")
    return problems


def validate_report(report: Any, *, source: str = "report") -> None:
    """Raise ConfigurationError when ``report`` does not follow the schema."""
    problems = schema_problems(report)
    if problems:
        shown = "; ".join(problems[:_MAX_LISTED])
        more = f" (and {len(problems) - _MAX_LISTED} more)" if len(problems) > _MAX_LISTED else ""
        raise ConfigurationError(f"{source} is not a valid vaccicard-conformance report: {shown}{more}")


def load_report(path: str | Path, *, validate: bool = True) -> dict[str, Any]:
    """Read and check a report.json (or the one in a report directory); ``validate=False`` skips the schema."""
    target = Path(path)
    if target.is_dir():
        target = target / REPORT_FILE
    try:
        data = orjson.loads(target.read_bytes())
    except FileNotFoundError:
        raise ConfigurationError(f"report not found: {target}") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read report {target}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigurationError(f"{target} is not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigurationError(f'{target} is not a vaccicard-conformance report (no "format": "{FORMAT}")')
    if data.get("format_version") != FORMAT_VERSION:
        raise ConfigurationError(
            f"{target} has report format version {data.get('format_version')!r}; "
            f"this harness reads version {FORMAT_VERSION}"
        )
    if validate:
        validate_report(data, source=str(target))
    return data
