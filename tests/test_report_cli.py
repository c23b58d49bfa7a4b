"""Tests of the ``report`` and ``verify-report`` commands, run through the main CLI's error handling."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conformance import cli as main_cli
from conformance.report import Redactor, build_report, load_directory, render, write_report
from conformance.report.cli import COMMANDS
from tests.report_fixtures import catalogue, synthetic_run


@pytest.fixture(autouse=True)
def commands(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the report commands on the main group, as conformance/cli.py will."""
    for command in COMMANDS:
        monkeypatch.setitem(main_cli.cli.commands, command.name, command)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("keys")
    key = Ed25519PrivateKey.generate()
    private, public = folder / "sign.pem", folder / "sign.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> Path:
    synthetic = synthetic_run(10, 3)
    report = build_report(synthetic.run, synthetic.scenarios, catalogue())
    folder = tmp_path_factory.mktemp("cli") / "report"
    return write_report(folder, report, synthetic.exchanges, redactor=Redactor.for_run(), sign_key=keys[0])


@pytest.fixture
def folder(tmp_path: Path, original: Path) -> Path:
    target = tmp_path / "report"
    shutil.copytree(original, target)
    return target


def run(capsysbinary: pytest.CaptureFixture[bytes], *args: str) -> tuple[int, str, str]:
    code = main_cli.main(list(args))
    out, err = capsysbinary.readouterr()
    return code, out.decode(), err.decode()


def test_verify_report_ok(capsysbinary, folder: Path, keys: tuple[Path, Path]) -> None:
    code, out, _ = run(capsysbinary, "verify-report", str(folder), "--public-key", str(keys[1]))
    assert code == 0
    assert out.startswith(f"OK: {folder}: ") and "signature valid (key sha256:" in out
    code, out, _ = run(capsysbinary, "verify-report", str(folder))
    assert code == 0 and "note: signed by key sha256:" in out


def test_verify_report_tampered_exits_1(capsysbinary, folder: Path) -> None:
    (folder / "ticket.md").write_text("changed")
    (folder / "extra.txt").write_text("added")
    code, out, _ = run(capsysbinary, "verify-report", str(folder))
    assert code == 1
    assert out.splitlines()[:2] == [
        "added: extra.txt is not listed in manifest.json",
        "changed: ticket.md does not match its SHA-256 in manifest.json",
    ]
    assert f"NOT INTACT: {folder}: 2 problem(s)" in out


@pytest.mark.parametrize("problem", ["missing directory", "missing key"])
def test_verify_report_usage_errors_exit_2(capsysbinary, folder: Path, tmp_path: Path, problem: str) -> None:
    if problem == "missing directory":
        args = ["verify-report", str(tmp_path / "nope")]
        expected = "report directory not found"
    else:
        args = ["verify-report", str(folder), "--public-key", str(tmp_path / "none.pem")]
        expected = "cannot read public key"
    code, out, err = run(capsysbinary, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("vaccicard-conformance: error: ") and expected in err


def test_report_renders_to_stdout_in_another_language(capsysbinary, folder: Path) -> None:
    code, out, err = run(capsysbinary, "report", str(folder), "--format", "md", "--lang", "fr")
    assert code == 0 and err == ""
    assert out.startswith("## Rapport de conformité Vaccicard")
    assert out.encode() == render(load_directory(folder), "md", "fr")


def test_report_writes_outside_the_directory_and_leaves_it_intact(
    capsysbinary, folder: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out" / "report.de.html"
    code, _, err = run(capsysbinary, "report", str(folder), "--lang", "de", "-o", str(output))
    assert code == 0 and f"wrote {output}" in err
    assert output.read_bytes() == render(load_directory(folder), "html", "de")
    assert '<html lang="de">' in output.read_text()
    assert run(capsysbinary, "verify-report", str(folder))[0] == 0


def test_report_refuses_to_write_into_the_directory(capsysbinary, folder: Path) -> None:
    code, _, err = run(capsysbinary, "report", str(folder), "-o", str(folder / "report.fr.html"))
    assert code == 2 and "inside the report directory" in err
    assert not (folder / "report.fr.html").exists()


def test_report_warns_about_a_tampered_directory(capsysbinary, folder: Path) -> None:
    (folder / "junit.xml").write_text("changed")
    code, out, err = run(capsysbinary, "report", str(folder), "--format", "junit")
    assert code == 0 and out.startswith("<?xml")
    assert "warning: " in err and "does not match its manifest.json (1 problem(s))" in err


def test_report_without_report_json_exits_2(capsysbinary, tmp_path: Path) -> None:
    code, _, err = run(capsysbinary, "report", str(tmp_path))
    assert code == 2 and "report not found" in err
    code, _, err = run(capsysbinary, "report", str(tmp_path / "missing"))
    assert code == 2 and "report directory not found" in err


def test_commands_have_help(capsysbinary) -> None:
    for name in ("report", "verify-report"):
        code, out, _ = run(capsysbinary, name, "--help")
        assert code == 0 and "Usage:" in out
