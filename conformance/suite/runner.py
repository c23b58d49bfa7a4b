"""Running the evaluation suite: the features through pytest-bdd, the results collected.

``run_suite(RunOptions(...))`` finds the suite (``features/`` and ``steps/`` beside the installed
package, or ``suite_root``), runs it with pytest in this process and returns the exit code with the
``ResultCollector``: 0 every selected scenario passed, 1 some failed, 2 a usage or configuration
problem (an unknown adapter, no scenario selected, a scenario naming an unknown item ...).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import conformance
from conformance.errors import EXIT_FAILURES, EXIT_OK, ConfigurationError
from conformance.suite.results import ResultCollector

__all__ = ["RunOptions", "find_suite", "run_suite"]


@dataclass(frozen=True)
class RunOptions:
    """What ``vaccicard-conformance run`` was asked to do."""

    adapter: str = "reference"
    target: str = "simulator"
    professional: str | None = None
    lang: str = "en"
    items: str | None = None
    tags: str | None = None
    package_cache: str | None = None
    simulator_port: int = 0
    suite_root: Path | None = None
    target_config: str | None = None
    ca_bundle: str | None = None
    insecure: bool = False
    allow_writes: bool = False
    quiet: bool = False
    extra_args: Sequence[str] = field(default_factory=tuple)


def find_suite(root: Path | None = None) -> Path:
    """The folder holding ``features/`` and ``steps/`` (by default, the checkout the package runs from)."""
    folder = root or Path(conformance.__file__).resolve().parent.parent
    if not (folder / "features").is_dir() or not (folder / "steps").is_dir():
        raise ConfigurationError(
            f"the evaluation suite (features/ and steps/) is not in {folder}: install the harness from its "
            "checkout (pip install -e .) or pass --suite DIR"
        )
    return folder


def pytest_args(options: RunOptions, root: Path) -> list[str]:
    """The pytest command line for ``options``."""
    args = [
        str(root / "steps"),
        "--rootdir",
        str(root),
        "-p",
        "no:cacheprovider",
        "--adapter",
        options.adapter,
        "--target",
        options.target,
        "--lang",
        options.lang,
        "--simulator-port",
        str(options.simulator_port),
    ]
    if options.professional:
        args += ["--professional", options.professional]
    if options.package_cache:
        args += ["--package-cache", options.package_cache]
    if options.target_config:
        args += ["--target-config", options.target_config]
    if options.ca_bundle:
        args += ["--ca-bundle", options.ca_bundle]
    args += ["--insecure"] if options.insecure else []
    args += ["--allow-writes"] if options.allow_writes else []
    if options.items:
        args += ["--items", options.items]
    if options.tags:
        args += ["--tags", options.tags]
    if options.adapter.strip() == "manual":
        args += ["--capture=no"]  # the operator talks to the terminal
    args += ["-q"] if options.quiet else ["-v"]
    return [*args, *options.extra_args]


def run_suite(options: RunOptions) -> tuple[int, ResultCollector]:
    """Run the suite; the exit code (0, 1 or 2) and the collected results."""
    root = find_suite(options.suite_root)
    collector = ResultCollector()
    output = io.StringIO()
    with contextlib.redirect_stdout(output) if options.quiet else contextlib.nullcontext():
        code = pytest.main(pytest_args(options, root), plugins=[collector])
    if code == pytest.ExitCode.OK:
        return EXIT_OK, collector
    if code == pytest.ExitCode.TESTS_FAILED:
        return EXIT_FAILURES, collector
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        raise ConfigurationError("no scenario was selected: check --items and --tags")
    detail = output.getvalue().strip().splitlines()[-3:] if options.quiet else []
    raise ConfigurationError(
        f"the evaluation suite could not run (pytest exit code {int(code)})"
        + (": " + " / ".join(detail) if detail else "")
    )
