"""Configuration: command-line flags over ``VACCICARD_*`` environment variables over ``vaccicard.toml``.

The TOML file mirrors the command line: top-level keys are options of the main command, tables are
sub-commands (``[packages.install]``), keys are option names with dashes or underscores. Click applies
the precedence itself once the file is turned into its ``default_map``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from conformance.errors import ConfigurationError

CONFIG_FILE_NAME = "vaccicard.toml"
ENV_PREFIX = "VACCICARD"


def find_config_file(explicit: str | os.PathLike[str] | None) -> Path | None:
    """Return the configuration file to read: the one named, else ``./vaccicard.toml`` if present."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigurationError(f"configuration file not found: {path}")
        return path
    candidate = Path.cwd() / CONFIG_FILE_NAME
    return candidate if candidate.is_file() else None


def load_default_map(path: Path | None) -> dict[str, Any]:
    """Read a ``vaccicard.toml`` into click's ``default_map`` shape (option names with underscores)."""
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read configuration file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from exc
    return _normalise(data)


def _normalise(table: dict[str, Any]) -> dict[str, Any]:
    """Option keys take underscores as click names them; table keys stay command names."""
    return {
        key if isinstance(value, dict) else key.replace("-", "_"): (
            _normalise(value) if isinstance(value, dict) else value
        )
        for key, value in table.items()
    }
