"""``report.html``: one self-contained page a reviewer reads, prints or attaches to a ticket.

No scripts and no external resources: the page carries a Content-Security-Policy that forbids every
fetch, its CSS is inline, and links to the IG are plain links. Every text the harness writes is present
in the four languages; radio buttons and CSS show one of them (the run's language first), so the
language switch works without JavaScript and the printout shows the chosen language. Scenario and step
texts stay as written in the features.

The summary comes first (ready or not, the blocking items, counts, the verdict of every evaluation
item per area), then a drill-down per item and scenario: steps, the failure, the FHIR issues, the
HTTP exchanges, a ``curl`` command replaying the failing request and the IG rules. Exchanges of failing
scenarios are shown in full (headers, pretty-printed bodies cut at ``MAX_BODY`` bytes) while the page's
``BODY_BUDGET`` lasts, the replayed request of each failing scenario first; every other exchange is one
line, its full content being in ``evidence.ndjson``. That keeps a run of 1,000 scenarios and 10,000
exchanges under 20 MB even when every scenario fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache, lru_cache
from typing import Any

import orjson
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from conformance.evaluation_items import LANGUAGES
from conformance.report.build import VERDICTS
from conformance.report.curl import curl_command
from conformance.report.i18n import LANGUAGE_NAMES, Messages
from conformance.report.source import ReportSource
from conformance.traffic.recorder import Exchange

__all__ = ["BODY_BUDGET", "MAX_BODY", "PAGE_LIMIT", "render_html"]

MAX_BODY = 64 * 1024
"""Bytes of a body shown in the page; longer bodies are cut, with a pointer to the evidence file."""
BODY_BUDGET = 12 * 1024 * 1024
"""Characters of exchanges (headers, bodies, curl commands) the page shows in full, all scenarios together."""
PAGE_LIMIT = 19 * 1024 * 1024
"""Bytes a page may reach; a longer first rendering is redone with a budget smaller by the excess."""
_MARKUP_PER_EXCHANGE = 400  # the <details> around an exchange shown in full
_RETRIES = 3


@dataclass(frozen=True)
class ExchangeView:
    """One exchange as the page shows it: one line, or in full (``request``/``response`` blocks)."""

    id: int
    method: str
    url: str
    status: int | None
    duration_ms: float
    error: str | None
    failing: bool
    full: bool = False
    request: Markup | None = None
    """Request line, headers and body, escaped for a ``<pre>``."""
    response: Markup | None = None
    request_cut: int = 0
    """Size of the whole request body when it was cut, else 0."""
    response_cut: int = 0

    @property
    def size(self) -> int:
        """Characters the full blocks add to the page."""
        return len(self.request or "") + len(self.response or "")


@dataclass(frozen=True)
class ScenarioView:
    """One scenario with the exchanges that show what happened."""

    anchor: str
    entry: Mapping[str, Any]
    home: str | None
    """The item under which the scenario is shown in full (its first catalogue item); None: unmapped."""
    detailed: bool
    exchanges: Sequence[ExchangeView]
    missing: Sequence[int]
    curl: Markup | None


@dataclass(frozen=True)
class _Draft:
    index: int
    entry: Mapping[str, Any]
    exchanges: list[Exchange]
    missing: list[int]
    failing: list[bool]
    culprit: int | None
    """Position of the exchange the curl command replays (failing scenarios only)."""


def _pre(text: str) -> Markup:
    """Text for a ``<pre>`` element: only ``&``, ``<`` and ``>`` need escaping there (JSON quotes stay)."""
    return Markup(text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def _is_failing(exchange: Exchange) -> bool:
    errors = any(issue.get("severity") in ("fatal", "error") for issue in exchange.validation)
    return bool(exchange.error) or errors or (exchange.response_status or 0) >= 400


def _body(body: Any) -> tuple[str | None, int]:
    if body is None:
        return None, 0
    if isinstance(body, dict | list):
        data = orjson.dumps(body, option=orjson.OPT_INDENT_2)
    else:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return f"<{len(body)} bytes of binary content>", 0
        data = body
    if len(data) <= MAX_BODY:
        return data.decode("utf-8"), 0
    return data[:MAX_BODY].decode("utf-8", errors="ignore"), len(data)


def _block(first_line: str, headers: Sequence[tuple[str, str]], body: Any) -> tuple[Markup, int]:
    text, cut = _body(body)
    lines = [first_line, *(f"{name}: {value}" for name, value in headers)]
    return _pre("\n".join(lines) + (f"\n\n{text}" if text is not None else "")), cut


def _line(exchange: Exchange, failing: bool) -> ExchangeView:
    return ExchangeView(
        id=exchange.id,
        method=exchange.method,
        url=exchange.url,
        status=exchange.response_status,
        duration_ms=exchange.duration_ms,
        error=exchange.error,
        failing=failing,
    )


def _full(exchange: Exchange, failing: bool) -> ExchangeView:
    request, request_cut = _block(
        f"{exchange.method} {exchange.url}", exchange.request_headers, exchange.request_body
    )
    response, response_cut = None, 0
    if exchange.response_status is not None:
        response, response_cut = _block(
            str(exchange.response_status), exchange.response_headers, exchange.response_body
        )
    return replace(
        _line(exchange, failing),
        full=True,
        request=request,
        response=response,
        request_cut=request_cut,
        response_cut=response_cut,
    )


def _draft(source: ReportSource, index: int, entry: Mapping[str, Any]) -> _Draft:
    """The scenario's exchanges and the one its curl command replays.

    That is the last exchange the failing check judged, else the last that failed (an HTTP error, a
    fault, validation errors), else the last one.
    """
    exchanges, missing = source.exchanges_of(entry)
    failing = [_is_failing(exchange) for exchange in exchanges]
    culprit = None
    if entry["status"] == "failed" and exchanges:
        judged = set(entry["failed_evidence"])
        candidates = [i for i, x in enumerate(exchanges) if x.id in judged] or [
            i for i, flag in enumerate(failing) if flag
        ]
        culprit = max(candidates, default=len(exchanges) - 1)
    return _Draft(index, entry, exchanges, missing, failing, culprit)


def _scenarios(source: ReportSource, known: Mapping[str, Any], budget: int) -> tuple[list[ScenarioView], int]:
    """Scenario views, and the budget used: exchanges of failing scenarios are shown in full while it lasts.

    The replayed (culprit) exchange of every failing scenario gets the budget first, then the other
    exchanges of failing scenarios, in report order; what does not fit is shown as one line.
    """
    drafts = [_draft(source, index, entry) for index, entry in enumerate(source.report["scenarios"], start=1)]
    insecure = source.report["run"]["target"]["insecure"]
    order = [(d, d.culprit) for d in drafts if d.culprit is not None]
    order += [
        (d, i) for d in drafts if d.culprit is not None for i in range(len(d.exchanges)) if i != d.culprit
    ]
    full: dict[tuple[int, int], ExchangeView] = {}
    curls: dict[int, Markup] = {}
    remaining = budget
    for draft, position in order:
        view = _full(draft.exchanges[position], draft.failing[position])
        curl = (
            _pre(curl_command(draft.exchanges[position], insecure=insecure))
            if position == draft.culprit
            else None
        )
        cost = view.size + len(curl or "") + _MARKUP_PER_EXCHANGE
        if cost <= remaining:
            remaining -= cost
            full[draft.index, position] = view
            if curl is not None:
                curls[draft.index] = curl
    views = []
    for d in drafts:
        exchanges = [
            full.get((d.index, i)) or _line(exchange, d.failing[i]) for i, exchange in enumerate(d.exchanges)
        ]
        home = next((item_id for item_id in d.entry["items"] if item_id in known), None)
        detailed = d.entry["status"] == "failed"
        views.append(
            ScenarioView(f"s{d.index}", d.entry, home, detailed, exchanges, d.missing, curls.get(d.index))
        )
    return views, budget - remaining


# -- text helpers for the template ------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _translated(key: str, values: tuple[tuple[str, Any], ...]) -> Markup:
    return _spans(Messages.load().all(key, **dict(values)))


def _spans(texts: Mapping[str, str]) -> Markup:
    """Text in every language, the CSS showing the chosen one (plain text when all are equal)."""
    distinct = {texts[lang] for lang in LANGUAGES}
    if len(distinct) == 1:
        return escape(distinct.pop())
    inner = "".join(f'<span lang="{lang}">{escape(texts[lang])}</span>' for lang in LANGUAGES)
    return Markup(f'<span class="i18n">{inner}</span>')


def t(key: str, **values: Any) -> Markup:
    """A harness message in every language."""
    return _translated(key, tuple(sorted(values.items())))


def duration(seconds: float) -> str:
    """Seconds in a short human form: 850 ms, 12.4 s, 3 min 05 s."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def when(value: str | None) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM:SS ±HH:MM`` (UTC shown as ``UTC``)."""
    if not value:
        return ""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    offset = moment.strftime("%z")
    zone = "UTC" if offset == "+0000" else f"{offset[:3]}:{offset[3:]}"
    return moment.strftime("%Y-%m-%d %H:%M:%S ") + zone


@cache
def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("conformance.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        t=t,
        message=Messages.load().get,
        titles=_spans,
        duration=duration,
        when=when,
        LANGUAGES=LANGUAGES,
        LANGUAGE_NAMES=LANGUAGE_NAMES,
        VERDICTS=VERDICTS,
    )
    return env


def render_html(
    source: ReportSource, lang: str, *, body_budget: int = BODY_BUDGET, page_limit: int = PAGE_LIMIT
) -> str:
    """The report page, its language switch set to ``lang``, at most ``page_limit`` bytes when possible.

    ``body_budget`` bounds the characters of exchanges shown in full. A page over ``page_limit`` is
    rendered again with a budget smaller than what was used by the excess (at most a few times, then
    with no exchange in full): each character less in full exchanges is at least one byte less.
    """
    page, used = _render(source, lang, body_budget)
    for attempt in range(1, _RETRIES + 1):
        excess = len(page.encode("utf-8")) - page_limit
        if excess <= 0 or used == 0:
            break
        page, used = _render(source, lang, max(0, used - excess) if attempt < _RETRIES else 0)
    return page


def _render(source: ReportSource, lang: str, body_budget: int) -> tuple[str, int]:
    report = source.report
    items = {item["id"]: item for item in report["items"]}
    scenarios, used = _scenarios(source, items, body_budget)
    by_id = {view.entry["id"]: view for view in scenarios}
    waivers = {waiver["number"]: waiver for waiver in report["waivers"]["entries"]}
    missing = sorted({i for view in scenarios for i in view.missing})
    template = _environment().get_template("report.html.j2")
    page = template.render(
        r=report,
        run=report["run"],
        summary=report["summary"],
        lang=lang,
        items=items,
        scenarios=scenarios,
        scenario_by_id=by_id,
        waivers=waivers,
        missing_evidence=missing,
    )
    return page, used
