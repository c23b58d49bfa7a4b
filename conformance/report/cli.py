"""The ``report`` and ``verify-report`` commands (registered on the main CLI by ``conformance.cli``).

A report directory is evidence: no command changes it. ``report DIR`` re-renders its report.json (and
evidence) in another language or format to standard output or to ``--output FILE`` outside the
directory, so the manifest and its signature stay valid; it warns when the directory no longer
matches its manifest. ``verify-report DIR`` recomputes the manifest: exit 0 intact, 1 when a file was
changed, added or removed or a signature fails, 2 for usage errors (missing directory, unreadable key).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from conformance.errors import EXIT_FAILURES, ConfigurationError
from conformance.evaluation_items import LANGUAGES
from conformance.report.manifest import MANIFEST_FILE, load_public_key, verify_report
from conformance.report.render import FORMATS, render
from conformance.report.source import load_directory

__all__ = ["COMMANDS", "report_command", "verify_report_command"]


def _write_outside(output: Path, directory: Path, data: bytes) -> None:
    target = output.absolute()
    if target.resolve().is_relative_to(directory.resolve()):
        raise ConfigurationError(
            f"--output {output} is inside the report directory, which would no longer match its manifest: "
            "write the rendering elsewhere"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@click.command("report")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--lang", type=click.Choice(LANGUAGES), help="Language of the rendering (default: the run's).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(FORMATS)),
    default="html",
    show_default=True,
    help="html: the report page; md: the ticket summary; junit: JUnit XML.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write (outside the report directory); default: standard output.",
)
def report_command(directory: Path, lang: str | None, fmt: str, output: Path | None) -> None:
    """Render a report directory's report.json as HTML, Markdown or JUnit, in any report language.

    The directory is not changed (its manifest and signature stay valid): the rendering goes to
    standard output or --output FILE. Exit 0, or 2 when the directory or its report.json is missing or
    invalid.
    """
    source = load_directory(directory)
    check = verify_report(directory)
    if not check.ok:
        click.echo(
            f"warning: {directory} does not match its {MANIFEST_FILE} ({len(check.problems)} problem(s)): "
            f"run `vaccicard-conformance verify-report {directory}`",
            err=True,
        )
    data = render(source, fmt, lang)
    if output is None:
        click.echo(data, nl=False)
    else:
        _write_outside(output, directory, data)
        click.echo(f"wrote {output}", err=True)


@click.command("verify-report")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--public-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Ed25519 public key (PEM or OpenSSH) the manifest must be signed with.",
)
def verify_report_command(directory: Path, public_key: Path | None) -> None:
    """Check a report directory against its integrity manifest (and signature).

    Exit 0 when every file matches manifest.json and any signature verifies; 1 when a file was
    changed, added or removed, or the signature does not verify; 2 for a missing directory or an
    unreadable key.
    """
    key = load_public_key(public_key) if public_key is not None else None
    result = verify_report(directory, key)
    for problem in result.problems:
        click.echo(problem)
    for note in result.notes:
        click.echo(f"note: {note}")
    if not result.ok:
        click.echo(f"NOT INTACT: {directory}: {len(result.problems)} problem(s)")
        raise click.exceptions.Exit(EXIT_FAILURES)
    signed = f", signature valid (key {result.signed_by})" if result.signed_by else ""
    click.echo(f"OK: {directory}: {result.files} file(s) match {MANIFEST_FILE}{signed}")


COMMANDS: tuple[click.Command, ...] = (report_command, verify_report_command)
"""The commands ``conformance.cli`` adds to the main group."""
