"""``run`` end to end into its report directory: verdicts, integrity, privacy, and Chromium rendering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conformance.cli import main
from conformance.fhir.packages import PackageCache
from conformance.report import load_report, verify_report
from tests.report_fixtures import personal_data
from tests.test_report_browser import chromium, run_chromium
from tests.test_report_privacy import scan


def run(capsys: Any, cache: PackageCache, report: Path, *options: str) -> tuple[int, str]:
    code = main(["--package-cache", str(cache.root), "run", "-q", "--report-dir", str(report), *options])
    out, err = capsys.readouterr()
    return code, out + err


def verdicts(report: dict[str, Any]) -> dict[str, str]:
    return {item["id"]: item["verdict"] for item in report["items"]}


@pytest.fixture(scope="module")
def words() -> list[str]:
    return personal_data()


def test_a_reference_run_writes_an_intact_redacted_report(
    capsys: Any, package_cache: PackageCache, tmp_path: Path, words: list[str]
) -> None:
    folder = tmp_path / "reference"
    code, out = run(capsys, package_cache, folder, "--items", "VC-REG,VC-ACC", "--ticket", "RSW-1234")
    assert code == 0, out
    report = load_report(folder)
    assert report["run"]["ticket"] == "RSW-1234" and report["run"]["adapter"]["kind"] == "reference"
    assert {v for k, v in verdicts(report).items() if k.startswith(("VC-REG", "VC-ACC"))} == {"passed"}
    assert verdicts(report)["VC-HIS-01"] == "not-run"
    assert verify_report(folder).ok
    assert scan(folder, words, []) == []
    junit = (folder / "junit.xml").read_text(encoding="utf-8")
    assert junit.count("<testcase") == len(report["scenarios"])
    assert list((folder / "allure-results").glob("*-result.json"))


def test_a_faulty_run_states_the_failed_items_and_its_evidence(
    capsys: Any, package_cache: PackageCache, tmp_path: Path, words: list[str]
) -> None:
    folder = tmp_path / "faulty"
    code, out = run(capsys, package_cache, folder, "--items", "VC-REG", "--adapter", "faulty:lot-expiry-lost")
    assert code == 1 and "FAILED recording.feature::A vaccination given in the practice" in out
    report = load_report(folder)
    assert verdicts(report)["VC-REG-05"] == "failed" and verdicts(report)["VC-REG-08"] == "passed"
    # item-precise: the scenario covers REG-01..07; only the lot's item failed, the checks before it
    # passed (REG-02..04), and the items judged only by steps after the failure were not verified
    assert [verdicts(report)[f"VC-REG-0{n}"] for n in range(2, 5)] == ["passed"] * 3
    assert verdicts(report)["VC-REG-06"] == "skipped" and verdicts(report)["VC-REG-07"] == "skipped"
    assert not report["summary"]["ready"]
    [failed] = [s for s in report["scenarios"] if s["status"] == "failed"]
    [step] = [s for s in failed["steps"] if s["status"] == "failed"]
    assert "missing in the extension: expirationDate" in step["message"]
    evidence = [
        json.loads(line) for line in (folder / "evidence.ndjson").read_text(encoding="utf-8").splitlines()
    ]
    assert {e["id"] for e in evidence} >= set(failed["evidence"])
    assert verify_report(folder).ok and scan(folder, words, []) == []
    page = run_chromium(chromium(), tmp_path / "profile", "--dump-dom", (folder / "report.html").as_uri())
    assert page.returncode == 0, page.stderr[-500:]
    assert "VC-REG-05" in page.stdout and "missing in the extension: expirationDate" in page.stdout


def test_tampering_with_a_run_report_is_detected(
    capsys: Any, package_cache: PackageCache, tmp_path: Path
) -> None:
    folder = tmp_path / "tampered"
    assert run(capsys, package_cache, folder, "--items", "VC-HIS-03")[0] == 0
    report = folder / "report.json"
    report.write_text(report.read_text(encoding="utf-8").replace('"passed"', '"failed"', 1), encoding="utf-8")
    assert not verify_report(folder).ok
    assert main(["verify-report", str(folder)]) == 1


def test_no_redact_keeps_personal_data_and_says_so(
    capsys: Any, package_cache: PackageCache, tmp_path: Path, words: list[str]
) -> None:
    folder = tmp_path / "debug"
    assert run(capsys, package_cache, folder, "--items", "VC-REG-03", "--no-redact")[0] == 0
    assert load_report(folder)["run"]["redacted"] is False
    assert scan(folder, words, [])  # the scan finds what redaction would have hidden


def test_an_existing_report_directory_is_refused(
    capsys: Any, package_cache: PackageCache, tmp_path: Path
) -> None:
    code, out = run(capsys, package_cache, tmp_path)
    assert code == 2 and "already exists" in out


def test_allure_results_label_area_and_items_and_attach_the_failing_evidence(
    capsys: Any, package_cache: PackageCache, tmp_path: Path
) -> None:
    folder = tmp_path / "allure"
    assert (
        run(
            capsys,
            package_cache,
            folder,
            "--items",
            "VC-REG-08",
            "--adapter",
            "faulty:wrong-patient-identifier",
        )[0]
        == 1
    )
    [result] = [json.loads(p.read_text()) for p in (folder / "allure-results").glob("*-result.json")]
    labels = {(label["name"], label["value"]) for label in result["labels"]}
    assert {("epic", "REG"), ("story", "VC-REG-08")} <= labels
    [failing] = [step for step in result["steps"] if step["status"] == "failed"]
    attached = [
        json.loads((folder / "allure-results" / a["source"]).read_text()) for a in failing["attachments"]
    ]
    assert any(e["method"] == "POST" and e["response_status"] == 422 for e in attached)


def test_the_ci_gate_waivers_baseline_and_fail_on(
    capsys: Any, package_cache: PackageCache, tmp_path: Path
) -> None:
    his = ["--items", "VC-HIS-03"]
    faulty = [*his, "--adapter", "faulty:first-page-only"]
    assert run(capsys, package_cache, tmp_path / "before", *his)[0] == 0
    code, _ = run(capsys, package_cache, tmp_path / "after", *faulty, "--baseline", str(tmp_path / "before"))
    assert code == 1
    assert load_report(tmp_path / "after")["baseline"]["new_failures"] == ["VC-HIS-03"]

    def waivers(expires: str) -> str:
        path = tmp_path / f"waivers-{expires}.toml"
        path.write_text(
            f'[[waiver]]\nitem = "VC-HIS-03"\nreason = "paging ships in 4.3"\nticket = "RSW-77"\nexpires = {expires}\n',
            encoding="utf-8",
        )
        return str(path)

    assert (
        run(capsys, package_cache, tmp_path / "waived", *faulty, "--waivers", waivers("2099-12-31"))[0] == 0
    )
    assert verdicts(load_report(tmp_path / "waived"))["VC-HIS-03"] == "waived"
    assert (
        run(capsys, package_cache, tmp_path / "expired", *faulty, "--waivers", waivers("2020-01-01"))[0] == 1
    )

    nd = ["--items", "VC-ND-03"]  # the IG's display of OSTOCK differs from v3-ActReason's: a warning
    assert run(capsys, package_cache, tmp_path / "errors", *nd)[0] == 0
    assert run(capsys, package_cache, tmp_path / "warnings", *nd, "--fail-on", "warning")[0] == 1
