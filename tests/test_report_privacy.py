"""Privacy: no SSIN, BIS, test-person name or credential of a run reaches any file of its report directory.

The scan reads every file as written and also as a reader would decode it: HTML entities unescaped,
URL encoding undone, JSON strings (``\\u00e8`` escapes) decoded, and base64 evidence bodies decoded.
Names and numbers are searched as whole words, case-insensitively (what the redactor promises);
credentials as plain substrings. The same scan over an unredacted report must find every kind of
leak, which proves the scan can fail.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote_plus

import pytest

from conformance.report import Redactor, build_report, write_report
from conformance.report.model import ScenarioResult
from tests.report_fixtures import catalogue, formatted_ssin, make_run, people, personal_data, synthetic_run


def _strings(value: object) -> Iterator[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def readings(path: Path) -> Iterator[str]:
    """Every way a reader could see the file's content."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    yield text
    yield html.unescape(text)
    yield unquote_plus(text)
    documents = []
    if path.suffix == ".json":
        documents.append(json.loads(text))
    elif path.suffix == ".ndjson":
        documents += [json.loads(line) for line in text.splitlines() if line.strip()]
    for document in documents:
        yield "\n".join(_strings(document))
        if isinstance(document, dict):
            for key in ("request_body", "response_body"):
                if document.get(f"{key}_encoding") == "base64":
                    body = base64.b64decode(document[key]).decode("utf-8", errors="replace")
                    yield body
                    yield unquote_plus(body)


def scan(directory: Path, words: list[str], secrets: list[str]) -> list[tuple[str, str]]:
    """(file, value) for every personal value or secret found in the directory."""
    by_fold = {word.casefold(): word for word in words}
    alternatives = "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))
    pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
    hits = set()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory).as_posix()
        for reading in readings(path):
            hits.update((name, by_fold[found.casefold()]) for found in pattern.findall(reading))
            hits.update((name, secret) for secret in secrets if secret in reading)
    return sorted(hits)


@pytest.fixture(scope="module")
def synthetic():
    run = synthetic_run(70, 5, fail_every=3, skip_every=0)
    extra = ScenarioResult(
        id="manual.feature::Operator reads the history",
        feature="Manual",
        feature_file="features/manual.feature",
        name="Operator reads the history of Marie Voorbeeld",
        status="failed",
        tags=("item:VC-HIS-01",),
        confirmations=("Dupont typed: patient 87.11.04-002.36 seen",),
        message="operator Dupont saw SSIN 87110400236 and token " + run.secrets[0],
    )
    return run.__class__(
        make_run(
            operator="Dupont",
            command_line=["vaccicard-conformance", "run", "--admin-token", "adm-secret-1234"],
        ),
        [*run.scenarios, extra],
        run.exchanges,
        [*run.secrets, "adm-secret-1234"],
    )


@pytest.fixture(scope="module")
def needles() -> list[str]:
    return [*personal_data(), "Dupont"]


def write(folder: Path, synthetic, redactor: Redactor | None) -> Path:
    report = build_report(synthetic.run, synthetic.scenarios, catalogue())
    return write_report(folder, report, synthetic.exchanges, redactor=redactor, allure=True)


def test_a_redacted_report_directory_holds_no_personal_data_or_secret(
    tmp_path: Path, synthetic, needles: list[str]
) -> None:
    folder = write(tmp_path / "report", synthetic, Redactor.for_run(extra_names=["Dupont"]))
    assert scan(folder, needles, synthetic.secrets) == []


def test_the_scan_catches_every_kind_of_leak_in_an_unredacted_report(
    tmp_path: Path, synthetic, needles: list[str]
) -> None:
    folder = write(tmp_path / "report", synthetic, None)
    hits = scan(folder, needles, synthetic.secrets)
    found = {value for _, value in hits}
    patients = people().patients
    assert patients[0].ssin in found and formatted_ssin(patients[0].ssin) in found
    assert patients[-1].ssin in found  # a BIS number
    assert patients[0].family_name in found and people().professionals[0].given_name in found
    assert "Dupont" in found
    assert "adm-secret-1234" in found and synthetic.secrets[0] in found
    files = {name for name, _ in hits}
    assert {"report.json", "evidence.ndjson", "report.html", "junit.xml"} <= files


def test_the_scan_decodes_base64_bodies(tmp_path: Path) -> None:
    (tmp_path / "evidence.ndjson").write_text(
        json.dumps(
            {"request_body": base64.b64encode(b"name=Exemple").decode(), "request_body_encoding": "base64"}
        )
    )
    assert scan(tmp_path, ["Exemple"], []) == [("evidence.ndjson", "Exemple")]


def test_the_scan_decodes_json_and_html_escapes(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"family": "Mod\\u00e8le"}')
    (tmp_path / "b.html").write_text("<p>Mod&egrave;le</p>")
    assert scan(tmp_path, ["Modèle"], []) == [("a.json", "Modèle"), ("b.html", "Modèle")]
