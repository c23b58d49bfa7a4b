"""``ticket.md``: the short summary a vendor pastes into the RSW integration ticket.

What was tested (software, harness, packages, target), the answer to "ready to request the evaluation
session?" with the blocking items, a table of item verdicts, the waivers, and where the full report is,
with the SHA-256 of report.json so the reviewer can match the summary to the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conformance.report.build import VERDICTS
from conformance.report.i18n import Messages
from conformance.report.source import ReportSource

__all__ = ["render_ticket"]


def _cell(value: Any) -> str:
    """A Markdown table cell: pipes escaped, line breaks flattened."""
    return " ".join(str(value).split()).replace("|", "\\|") if value not in (None, "") else "—"


def render_ticket(source: ReportSource, lang: str) -> str:
    """The Markdown summary of the report in ``lang``."""
    report = source.report
    run, summary = report["run"], report["summary"]
    messages = Messages.load()

    def m(key: str, **values: Any) -> str:
        """A message in the ticket's language."""
        return messages.get(lang, key, **values)

    software = run["software"]
    name = " ".join(part for part in (software["product"], software["version"]) if part) or m("not_given")
    items = {item["id"]: item for item in report["items"]}
    lines = [f"## {m('report_title')}: {name}", ""]
    lines += _banners(run, summary, m)
    answer = m("yes") if summary["ready"] else m("no")
    lines.append(f"**{m('ready_question')}** **{answer}**")
    if summary["ready"]:
        lines.append(m("ready_yes_detail"))
    else:
        lines.append(m("ready_no_detail", count=len(summary["blockers"])))
        lines += [
            f"- {b['item']} {items[b['item']]['titles'][lang]}: {m('verdict_' + b['verdict'])}"
            for b in summary["blockers"]
        ]
    lines += ["", f"| {m('section_run')} | |", "|---|---|"]
    packages = ", ".join(f"{p['id']}#{p['version']}" for p in run["packages"])
    adapter = run["adapter"]["kind"] + (
        f":{run['adapter']['argument']}" if run["adapter"]["argument"] else ""
    )
    for label, value in (
        (m("software"), " · ".join(_cell(software[k]) for k in ("vendor", "product", "version"))),
        (m("ticket"), _cell(run["ticket"])),
        (m("harness"), f"vaccicard-conformance {run['harness_version']}"),
        (m("target"), f"{m('target_' + run['target']['kind'])} · {_cell(run['target']['url'])}"),
        (m("adapter"), _cell(adapter)),
        (m("packages"), _cell(packages)),
        (m("finished"), _cell(run["finished"])),
    ):
        lines.append(f"| {label} | {value} |")
    counts = ", ".join(f"{m('verdict_' + v)} {summary['items'][v]}" for v in VERDICTS if summary["items"][v])
    lines += ["", f"### {m('section_items')}", "", f"{m('counts_items')}: {counts}.", ""]
    lines += [
        f"| {m('col_item')} | {m('col_title')} | {m('col_blocking')} | {m('col_verdict')} |",
        "|---|---|---|---|",
    ]
    for item in report["items"]:
        blocking = m("yes") if item["blocking"] else ""
        verdict = m("verdict_" + item["verdict"])
        if item["verdict"] in ("failed", "waived"):
            verdict = f"**{verdict}**"
        lines.append(f"| {item['id']} | {_cell(item['titles'][lang])} | {blocking} | {verdict} |")
    lines += _waivers(report["waivers"]["entries"], m)
    folder = source.directory.name
    lines += [
        "",
        f"### {m('ticket_full_report')}",
        "",
        m("ticket_where", path=f"{folder}/report.html"),
        m("ticket_sha", sha=source.report_sha256),
        m("ticket_verify", command=f"vaccicard-conformance verify-report {folder}"),
        "",
    ]
    return "\n".join(lines)


def _banners(run: Mapping[str, Any], summary: Mapping[str, Any], m: Any) -> list[str]:
    lines = []
    if not run["redacted"]:
        lines.append(f"> **{m('banner_not_redacted')}**")
    if run["target"]["kind"] == "production":
        lines.append(f"> **{m('banner_production')}**")
    if run["target"]["insecure"]:
        lines.append(f"> **{m('banner_insecure')}**")
    if summary["expired_waivers"]:
        lines.append(f"> **{m('banner_expired_waivers', count=len(summary['expired_waivers']))}**")
    return [*lines, ""] if lines else []


def _waivers(entries: list[Mapping[str, Any]], m: Any) -> list[str]:
    if not entries:
        return []
    lines = [
        "",
        f"### {m('section_waivers')}",
        "",
        f"| # | {m('col_item')} | {m('waiver_reason')} | {m('waiver_ticket')} | {m('waiver_expires')} | {m('col_status')} |",
        "|---|---|---|---|---|---|",
    ]
    for w in entries:
        status = m("waiver_" + w["status"])
        lines.append(
            f"| {w['number']} | {w['item']} | {_cell(w['reason'])} | {_cell(w['ticket'])} | {w['expires']} | {status} |"
        )
    return lines
