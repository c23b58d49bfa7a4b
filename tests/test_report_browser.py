"""The report page in a real browser: headless Chromium renders it, and its language switch works.

Chromium is driven by its command line only (``--dump-dom``, ``--screenshot``), so nothing is
downloaded. The report itself has no script; to press the language switch, the test renders a copy of
the page with a probe script appended (and the Content-Security-Policy that forbids scripts removed).
The probe reads what the browser *shows* (``innerText`` follows the CSS), clicks the French label and
reads again, then writes its findings into the DOM that ``--dump-dom`` prints.

Chromium is ``$VACCICARD_CHROMIUM``, else ``chromium`` (or ``chromium-browser``) on the PATH. Without it
the test is skipped, unless ``CI=true``: CI must run it. The screenshot is kept in
``$VACCICARD_TEST_ARTIFACTS`` when set, else in the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conformance.report import Redactor, build_report, load_directory, write_report
from conformance.report.i18n import Messages
from tests.report_fixtures import catalogue, synthetic_run

TIMEOUT = 120
PROBE = """
<script>
(function () {
  const shown = (selector) => { const e = document.querySelector(selector); return e ? e.innerText.trim() : null; };
  const result = {};
  result.question_before = shown('#ready h2');
  result.rows = document.querySelectorAll('#summary-table tr.item-row').length;
  result.verdicts = Array.from(document.querySelectorAll('#summary-table tr.item-row'))
    .map((row) => [row.dataset.item, row.dataset.verdict]);
  const failures = Array.from(document.querySelectorAll('details.scenario[open] pre.failure-message'));
  result.failures_visible = failures.map((e) => e.innerText);
  result.failure_boxes = failures.map((e) => e.getBoundingClientRect().height);
  document.querySelector('label[for=lang-fr]').click();
  result.question_after = shown('#ready h2');
  result.first_title_after = shown('#summary-table tr.item-row td:nth-child(2)');
  result.english_hidden = getComputedStyle(document.querySelector('#ready h2 [lang=en]')).display;
  const out = document.createElement('pre');
  out.id = 'probe-result';
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
})();
</script>
"""


def chromium() -> str:
    """The Chromium executable, or skip (fail on CI) when there is none."""
    found = (
        os.environ.get("VACCICARD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if found:
        return found
    reason = "headless Chromium not found (install the Debian package chromium, or set VACCICARD_CHROMIUM)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + ": CI=true requires the browser test to run")
    pytest.skip(reason)


def run_chromium(executable: str, profile: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    command = [
        executable,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={profile}",
        *arguments,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    synthetic = synthetic_run(60, 4)
    report = build_report(synthetic.run, synthetic.scenarios, catalogue())
    return write_report(
        tmp_path_factory.mktemp("browser") / "report",
        report,
        synthetic.exchanges,
        redactor=Redactor.for_run(),
    )


def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("VACCICARD_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_report_renders_in_chromium_and_the_language_switch_works(report_dir: Path, tmp_path: Path) -> None:
    executable = chromium()
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    csp = re.compile(r'<meta http-equiv="Content-Security-Policy"[^>]*>\n')
    assert csp.search(page), "the report must forbid every fetch"
    probed = tmp_path / "probed.html"
    probed.write_text(csp.sub("", page).replace("</body>", PROBE + "</body>"), encoding="utf-8")

    result = run_chromium(executable, tmp_path / "profile", "--dump-dom", probed.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', result.stdout, re.DOTALL)
    assert found, "the probe did not run: " + result.stdout[-500:]
    probe = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))

    report = load_directory(report_dir).report
    messages = Messages.load()
    assert probe["question_before"] == messages.get("en", "ready_question")
    assert probe["rows"] == len(catalogue())
    assert probe["verdicts"] == [[item["id"], item["verdict"]] for item in report["items"]]
    failures = sorted(s["failure"] for s in report["scenarios"] if s["status"] == "failed")
    assert failures and sorted(probe["failures_visible"]) == failures
    assert all(height > 0 for height in probe["failure_boxes"])
    assert probe["question_after"] == messages.get("fr", "ready_question")
    assert probe["first_title_after"] == report["items"][0]["titles"]["fr"]
    assert probe["english_hidden"] == "none"


def test_report_screenshot_is_kept_as_an_artifact(report_dir: Path, tmp_path: Path) -> None:
    executable = chromium()
    shot = artifacts(tmp_path) / "report-summary.png"
    shot.unlink(missing_ok=True)
    result = run_chromium(
        executable,
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1280,1600",
        "--hide-scrollbars",
        (report_dir / "report.html").as_uri(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
