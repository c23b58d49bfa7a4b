"""Tests of the renderings of report.json: HTML, JUnit XML, the ticket summary, curl, messages."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import pytest

from conformance.errors import ConfigurationError
from conformance.evaluation_items import LANGUAGES
from conformance.report import (
    Redactor,
    build_report,
    load_directory,
    parse_waivers,
    render,
    write_report,
)
from conformance.report.curl import curl_command
from conformance.report.html import MAX_BODY, render_html
from conformance.report.i18n import Messages
from conformance.report.model import StepResult
from conformance.traffic.recorder import Exchange
from tests.report_fixtures import catalogue, make_run, scenario, synthetic_run

WAIVED_ITEM = catalogue().ids()[6]  # the item of the fixture's first failing scenario (number 6)
VOID = {"meta", "input", "br", "hr", "img", "link", "col", "wbr", "source"}


class Page(HTMLParser):
    """Collects what the tests check: external references, tag balance, text, elements by id."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.external: list[tuple[str, str]] = []
        self.ids: set[str] = set()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.tags.append((tag, values))
        if values.get("id"):
            if values["id"] in self.ids:
                self.problems.append(f"duplicate id {values['id']}")
            self.ids.add(str(values["id"]))
        for name in ("src", "href", "action", "poster", "data"):
            value = values.get(name) or ""
            if re.match(r"\s*(https?:)?//", value):
                self.external.append((tag, value))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    synthetic = synthetic_run(40, 5)
    waivers = parse_waivers(
        f'[[waiver]]\nitem = "{WAIVED_ITEM}"\nreason = "Token exchange ships in 4.2"\nticket = "RSW-9|1"\nexpires = 2030-01-01\n',
        catalogue(),
    )
    report = build_report(
        make_run(insecure=True, target_kind="production", target_url="https://vaccicard.example/fhir"),
        synthetic.scenarios,
        catalogue(),
        waivers=waivers,
    )
    folder = tmp_path_factory.mktemp("renderings") / "vaxdesk-4.1.0"
    return write_report(folder, report, synthetic.exchanges, redactor=Redactor.for_run())


@pytest.fixture(scope="module")
def html(directory: Path) -> str:
    return (directory / "report.html").read_text(encoding="utf-8")


# -- HTML ------------------------------------------------------------------------------------------------


def test_html_is_self_contained_and_well_formed(html: str) -> None:
    page = parse(html)
    assert page.problems == [] and page.stack == []
    assert all(tag == "a" for tag, _ in page.external), page.external
    assert "<script" not in html.lower() and "@import" not in html and "url(" not in html
    csp = next(v for t, v in page.tags if t == "meta" and v.get("http-equiv") == "Content-Security-Policy")
    assert csp["content"].startswith("default-src 'none'")
    assert "@media print" in html


def test_html_summary_comes_first_and_answers_the_question(html: str) -> None:
    assert html.index('id="ready"') < html.index('id="summary-table"') < html.index('id="details"')
    assert "Ready to request the evaluation session?" in html
    page = parse(html)
    rows = [values for tag, values in page.tags if tag == "tr" and "item-row" in (values.get("class") or "")]
    assert [row["data-item"] for row in rows] == catalogue().ids()


def test_html_banners(html: str, directory: Path) -> None:
    assert 'id="banner-production"' in html and 'id="banner-insecure"' in html
    assert 'id="banner-not-redacted"' not in html


def test_html_drill_down_of_a_failing_item(html: str, directory: Path) -> None:
    report = load_directory(directory).report
    failing = next(s for s in report["scenarios"] if s["status"] == "failed" and not s["waived"])
    assert failing["failure"] and failing["failure"].split(";")[0] in html.replace("&#39;", "'")
    assert "Immunization.patient.identifier.value" in html  # the FHIR issue's expression
    assert "patient-no-consent" in html and "be-vaccination" in html
    assert "curl --silent --show-error --include --insecure --request POST" in html
    assert (
        "--header &#34;Authorization: Bearer $TOKEN&#34;" in html
        or '--header "Authorization: Bearer $TOKEN"' in html
    )
    assert "StructureDefinition-be-vaccination-definitions.html#Immunization" in html


def test_html_shows_bodies_only_for_failing_scenarios(directory: Path) -> None:
    source = load_directory(directory)
    html = render(source, "html").decode()
    passing = next(s for s in source.report["scenarios"] if s["status"] == "passed" and s["evidence"])
    failing = next(s for s in source.report["scenarios"] if s["status"] == "failed")
    rejected = failing["evidence"][-2]  # the fixture's failing scenarios end with a refused create
    assert f'<details class="exchange failing" open>\n<summary class="mono">#{rejected} POST' in html
    assert f"<li>#{passing['evidence'][0]} POST" in html
    assert html.count('<details class="exchange') == sum(
        len(set(s["evidence"])) for s in source.report["scenarios"] if s["status"] == "failed"
    )


def test_exchanges_beyond_the_budget_are_shown_on_one_line(directory: Path) -> None:
    page = render_html(load_directory(directory), "en", body_budget=0)
    assert '<details class="exchange' not in page and '<pre class="curl">' not in page
    assert '<p class="mono xline st-failed">#' in page
    assert "Exchanges shown on one line are in full in evidence.ndjson only" in page


def test_the_replayed_request_gets_the_budget_before_the_others(directory: Path) -> None:
    source = load_directory(directory)
    page = render_html(source, "en", body_budget=8_000)  # room for about one exchange and its curl
    index = next(i for i, s in enumerate(source.report["scenarios"], start=1) if s["status"] == "failed")
    block = page[page.index(f'<details class="scenario" id="s{index}"') :]
    block = block[: block.index('<details class="scenario"', 10)]
    assert '<details class="exchange failing" open>' in block and '<pre class="curl">' in block
    assert '<p class="mono xline">#' in block  # an exchange before it did not fit any more
    assert render_html(source, "en").count('<details class="exchange">') > 0


def test_the_page_limit_is_kept_by_rendering_again(directory: Path) -> None:
    source = load_directory(directory)
    bare = len(render_html(source, "en", body_budget=0).encode())
    full = len(render_html(source, "en").encode())
    limit = (bare + full) // 2
    assert len(render_html(source, "en", page_limit=limit).encode()) <= limit < full


def test_html_waivers_and_waived_verdict(html: str) -> None:
    assert "Token exchange ships in 4.2" in html and "RSW-9|1" in html


def test_html_every_language_present_and_switch_set_to_the_run_language(directory: Path) -> None:
    source = load_directory(directory)
    for lang in LANGUAGES:
        html = render(source, "html", lang).decode()
        assert f'<html lang="{lang}">' in html
        assert re.search(rf'id="lang-{lang}"[^>]*checked', html)
        for other in LANGUAGES:
            assert Messages.load().get(other, "ready_question").replace("'", "&#39;") in html
        page = parse(html)
        assert page.problems == []


def test_html_escapes_what_the_run_wrote(tmp_path: Path) -> None:
    evil = scenario("<script>alert('x')</script>", ["VC-REG-01"], "failed", message="<img src=http://x/y>")
    report = build_report(make_run(), [evil], catalogue())
    target = write_report(tmp_path / "r", report, [], redactor=None)
    html = (target / "report.html").read_text()
    assert "<script>alert" not in html and "<img src=http" not in html
    assert "&lt;script&gt;" in html


def test_html_cuts_very_large_bodies(tmp_path: Path) -> None:
    big = {"resourceType": "Bundle", "entry": [{"fullUrl": "x" * 100} for _ in range(2000)]}
    exchange = Exchange(
        id=1, method="GET", url="http://127.0.0.1/fhir/Immunization", response_status=200, response_body=big
    )
    bad = scenario("big", ["VC-HIS-03"], "failed", evidence=[1])
    target = write_report(
        tmp_path / "r", build_report(make_run(), [bad], catalogue()), [exchange], redactor=None
    )
    html = (target / "report.html").read_text()
    assert "Body cut at 64 KiB" in html and "evidence.ndjson, exchange 1" in html
    assert len(html) < 3 * MAX_BODY + 200_000


def test_the_curl_replays_the_exchange_the_failing_check_judged(tmp_path: Path) -> None:
    exchanges = [
        Exchange(id=1, method="POST", url="http://127.0.0.1/fhir/Immunization", response_status=201),
        Exchange(id=2, method="GET", url="http://127.0.0.1/fhir/Immunization?x=1", response_status=500),
        Exchange(id=3, method="GET", url="http://127.0.0.1/fhir/metadata", response_status=200),
    ]
    judged = scenario("judged", ["VC-REG-01"], "failed", evidence=[1, 2, 3])
    judged = type(judged)(**{**judged.__dict__, "failed_evidence": (1,)})
    guessed = scenario("guessed", ["VC-REG-02"], "failed", evidence=[1, 2, 3])
    report = build_report(make_run(), [judged, guessed], catalogue())
    target = write_report(tmp_path / "r", report, exchanges, redactor=None)
    curls = re.findall(r'<pre class="curl">(.*?)(?:\n|</pre>)', (target / "report.html").read_text())
    assert [c.split("--request ")[1] for c in curls] == [
        "POST http://127.0.0.1/fhir/Immunization",  # the one the check named
        "GET 'http://127.0.0.1/fhir/Immunization?x=1'",  # else the last that failed (500)
    ]


def test_render_rejects_unknown_formats_and_languages(directory: Path) -> None:
    source = load_directory(directory)
    with pytest.raises(ConfigurationError, match="unknown report format"):
        render(source, "pdf")
    with pytest.raises(ConfigurationError, match="unknown language"):
        render(source, "html", "es")


# -- JUnit -----------------------------------------------------------------------------------------------


def test_junit_has_one_testcase_per_scenario(directory: Path) -> None:
    report = load_directory(directory).report
    root = ET.fromstring((directory / "junit.xml").read_bytes())
    assert root.tag == "testsuites"
    cases = root.findall("testsuite/testcase")
    assert len(cases) == len(report["scenarios"]) == int(root.get("tests"))
    failed = [s for s in report["scenarios"] if s["status"] == "failed" and not s["waived"]]
    waived = [s for s in report["scenarios"] if s["waived"]]
    skipped = [s for s in report["scenarios"] if s["status"] == "skipped"]
    assert len(root.findall("testsuite/testcase/failure")) == len(failed) == int(root.get("failures"))
    assert (
        len(root.findall("testsuite/testcase/skipped"))
        == len(skipped) + len(waived)
        == int(root.get("skipped"))
    )
    assert waived, "the fixture should have a waived scenario"
    for suite in root.findall("testsuite"):
        assert int(suite.get("tests")) == len(suite.findall("testcase"))
    first = cases[0]
    assert re.fullmatch(r"[A-Z]{2,3}\.VC-[A-Z]{2,3}-\d{2}", first.get("classname"))
    failure = root.find("testsuite/testcase/failure")
    assert failure.get("message") and "Given" in failure.text
    assert any(s.get("message") == "Failed, waived: waiver 1 (RSW-9|1)" for s in root.iter("skipped"))


def test_junit_survives_control_characters_and_unmapped_scenarios(tmp_path: Path) -> None:
    bad = scenario("control\x01chars", [], "failed", message="bell \x07 and nul \x00 here")
    report = build_report(make_run(), [bad], catalogue())
    target = write_report(tmp_path / "r", report, [], redactor=None)
    root = ET.fromstring((target / "junit.xml").read_bytes())
    case = root.find("testsuite/testcase")
    assert case.get("classname") == "unmapped" and case.get("name") == "controlchars"
    assert case.find("failure").get("message") == "bell  and nul  here"


# -- ticket.md -------------------------------------------------------------------------------------------


def test_ticket_summary(directory: Path) -> None:
    source = load_directory(directory)
    ticket = (directory / "ticket.md").read_text()
    assert ticket.startswith("## Vaccicard conformance report: VaxDesk 4.1.0\n")
    assert "**Ready to request the evaluation session?** **No**" in ticket
    assert "The target of this run is the PRODUCTION register." in ticket
    for item in catalogue():
        assert f"| {item.id} | " in ticket
    assert f"| 1 | {WAIVED_ITEM} | Token exchange ships in 4.2 | RSW-9\\|1 | 2030-01-01 | applied |" in ticket
    assert f"`{source.report_sha256}`" in ticket
    assert "vaxdesk-4.1.0/report.html" in ticket and "verify-report vaxdesk-4.1.0" in ticket
    french = render(source, "md", "fr").decode()
    assert "**Prêt à demander la séance d'évaluation ?** **Non**" in french


# -- curl ------------------------------------------------------------------------------------------------


def test_curl_leaves_credentials_out_and_quotes_everything() -> None:
    exchange = Exchange(
        method="POST",
        url="https://vaccicard.example/fhir/Immunization?x=1&y=$(rm -rf ~)",
        request_headers=[
            ("Authorization", "Bearer TOKEN-1234abcd"),
            ("Cookie", "s=TOKEN-1"),
            ("Content-Type", "application/fhir+json"),
            ("X-Note", "it's"),
            ("Host", "vaccicard.example"),
        ],
        request_body={"resourceType": "Immunization", "note": [{"text": "$HOME `id`"}]},
    )
    command = curl_command(exchange, insecure=True)
    assert command.splitlines()[0] == (
        "curl --silent --show-error --include --insecure --request POST "
        "'https://vaccicard.example/fhir/Immunization?x=1&y=$(rm -rf ~)' \\"
    )
    assert '--header "Authorization: Bearer $TOKEN"' in command
    assert "TOKEN-1234abcd" not in command and "Cookie" not in command and "Host" not in command
    assert "--header 'X-Note: it'\"'\"'s'" in command
    assert command.endswith('"text": "$HOME `id`"\n    }\n  ]\n}\nJSON')


def test_curl_form_body() -> None:
    exchange = Exchange(method="POST", url="http://h/token", request_body=b"grant_type=x&code=TOKEN-1")
    assert curl_command(exchange).endswith("--data-binary 'grant_type=x&code=TOKEN-1'")


def test_curl_binary_body_is_read_from_a_file_not_shown() -> None:
    sealed = b"\x30\x82\xff\xfe SSIN=75040201177 Luc Exemplaire \x00\x9f"
    exchange = Exchange(
        method="POST",
        url="http://h/etee/fhir/Immunization",
        request_headers=[("Content-Type", "application/pkcs7-mime")],
        request_body=sealed,
    )
    command = curl_command(exchange)
    assert command.startswith(f"# the request body is {len(sealed)} bytes of binary content")
    assert command.endswith("--data-binary @body.bin") and "75040201177" not in command


# -- messages ---------------------------------------------------------------------------------------------


def test_every_language_has_every_message_with_the_same_placeholders() -> None:
    catalogues = Messages.load().catalogues
    assert all(catalogues[lang].keys() == catalogues["en"].keys() for lang in LANGUAGES)


def test_a_missing_translation_or_placeholder_is_refused() -> None:
    catalogues = {lang: dict(c) for lang, c in Messages.load().catalogues.items()}
    del catalogues["de"]["yes"]
    catalogues["fr"]["ready_no_detail"] = "{nombre} points bloquants"
    with pytest.raises(ConfigurationError) as caught:
        Messages.checked(catalogues)
    assert "de: yes is missing" in caught.value.message
    assert "fr: ready_no_detail has placeholders ['nombre']" in caught.value.message


def test_every_message_is_used() -> None:
    package = resources.files("conformance.report")
    sources = "".join(
        package.joinpath(name).read_text(encoding="utf-8")
        for name in ("html.py", "junit.py", "ticket.py", "templates/report.html.j2")
    )
    dynamic = {
        "verdict_": ["failed", "waived", "skipped", "not-run", "confirmed", "passed"],
        "status_": ["passed", "failed", "skipped", "not-run"],
        "severity_": ["fatal", "error", "warning", "information"],
        "target_": ["simulator", "acceptance", "production", "proxy"],
        "baseline_": ["new_failures", "fixed", "unchanged_failures", "unchanged_passes"],
        "waiver_": ["applied", "unused", "expired"],
    }
    generated = {prefix + value for prefix, values in dynamic.items() for value in values}
    unused = [
        key
        for key in Messages.load().catalogues["en"]
        if key not in generated and f"'{key}'" not in sources and f'"{key}"' not in sources
    ]
    assert unused == []


def test_no_message_contains_a_test_person_name() -> None:
    """The report's own words must survive the privacy scan: no test-data name as a whole word."""
    from tests.report_fixtures import personal_data

    for lang, catalogue_ in Messages.load().catalogues.items():
        for key, text in catalogue_.items():
            for value in personal_data():
                assert not re.search(rf"(?<!\w){re.escape(value)}(?!\w)", text, re.IGNORECASE), (
                    lang,
                    key,
                    value,
                )


def test_steps_render_their_status(tmp_path: Path) -> None:
    base = scenario("steps", ["VC-REG-01"], "failed")
    steps = (*base.steps[:2], StepResult("And", "it is in the history", "skipped", 0, "not reached"))
    changed = type(base)(**{**base.__dict__, "steps": steps})
    target = write_report(tmp_path / "r", build_report(make_run(), [changed], catalogue()), [], redactor=None)
    html = (target / "report.html").read_text()
    assert '<li class="st-skipped"><span class="kw">And</span> it is in the history' in html
    assert "not reached" in html
