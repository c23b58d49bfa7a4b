"""Renderings of a report directory, each made from its ``ReportSource`` alone.

``render(source, fmt, lang)`` turns a report into ``report.html`` (``html``), ``junit.xml``
(``junit``) or ``ticket.md`` (``md``), in ``lang`` or the run's language. ``write_report`` and the
``report DIR`` command both use it, so a re-rendering in the same language is byte-for-byte what the
run wrote.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from conformance.errors import ConfigurationError
from conformance.evaluation_items import LANGUAGES
from conformance.report.html import render_html
from conformance.report.junit import render_junit
from conformance.report.source import ReportSource
from conformance.report.ticket import render_ticket

__all__ = ["FORMATS", "render"]

FORMATS: Mapping[str, tuple[str, Callable[[ReportSource, str], bytes]]] = {
    "html": ("report.html", lambda source, lang: render_html(source, lang).encode("utf-8")),
    "junit": ("junit.xml", render_junit),
    "md": ("ticket.md", lambda source, lang: render_ticket(source, lang).encode("utf-8")),
}
"""Format name → (file name in the report directory, renderer)."""


def render(source: ReportSource, fmt: str, lang: str | None = None) -> bytes:
    """One rendering of the report, in ``lang`` (default: the run's language)."""
    if fmt not in FORMATS:
        raise ConfigurationError(f"unknown report format {fmt!r}: choose one of {', '.join(FORMATS)}")
    language = lang or source.report["run"]["language"]
    if language not in LANGUAGES:
        raise ConfigurationError(f"unknown language {language!r}: choose one of {', '.join(LANGUAGES)}")
    return FORMATS[fmt][1](source, language)
