"""The command line: version, exit codes, one-line errors, configuration precedence, packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conformance import __version__
from conformance.cli import main
from conformance.fhir.packages import CACHE_ENV


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and __version__ in out


@pytest.mark.parametrize(
    "command",
    ["run", "validate", "serve", "proxy", "packages", "report", "verify-report", "packages install"],
)
def test_every_command_has_help(capsys, command: str) -> None:
    code, out, _ = run(capsys, *command.split(), "--help")
    assert code == 0 and "Usage:" in out


def test_run_exit_codes(capsys, package_cache) -> None:
    cache = ["--package-cache", str(package_cache.root)]
    code, out, err = run(capsys, *cache, "run", "-q", "--items", "VC-HIS-03")
    assert code == 0 and "1 scenario(s): 1 passed" in out
    code, out, _ = run(
        capsys, *cache, "run", "-q", "--items", "VC-HIS-03", "--adapter", "faulty:first-page-only"
    )
    assert code == 1 and "FAILED history.feature::A history longer than one page [VC-HIS-03]" in out
    code, _, err = run(capsys, *cache, "run", "--adapter", "faulty:nope")
    assert code == 2 and err.count("\n") == 1 and "unknown defect 'nope'" in err
    code, _, err = run(capsys, *cache, "run", "--adapter", "telepathy")
    assert code == 2 and "unknown adapter kind 'telepathy'" in err


def test_run_without_the_packages_says_how_to_install_them(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "--package-cache", str(tmp_path), "run")
    assert code == 2 and err.count("\n") == 1 and "packages install" in err


def test_bad_package_reference_is_one_line_and_exit_2(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "--package-cache", str(tmp_path), "packages", "install", "nonsense")
    assert code == 2
    assert err.count("\n") == 1 and "not a package reference" in err


def test_unknown_option_is_a_usage_error(capsys) -> None:
    code, _, err = run(capsys, "packages", "install", "--bogus")
    assert code == 2 and "No such option" in err


def test_packages_install_and_list(capsys, tmp_path: Path, fhir_package_source: Path) -> None:
    cache = tmp_path / "cache"
    code, out, err = run(
        capsys, "--package-cache", str(cache), "packages", "install", "--from", str(fhir_package_source)
    )
    assert code == 0
    assert "installed hl7.fhir.be.vaccination#1.1.2" in out and "installed hl7.fhir.r4.core#4.0.1" in out
    assert "warning: hl7.terminology#3.1.0 (needed by hl7.fhir.be.medication#1.0.0)" in err
    code, out, _ = run(capsys, "--package-cache", str(cache), "packages", "list")
    assert code == 0
    assert "hl7.fhir.be.vaccination#1.1.2" in out
    assert "    -> hl7.fhir.be.core#2.1.2" in out
    assert "    -> hl7.terminology#3.1.0  (MISSING)" in out
    assert "warning: hl7.terminology#3.1.0 (needed by hl7.fhir.be.medication#1.0.0)" in out


def test_install_one_tgz_without_ids_installs_that_package(
    capsys, tmp_path: Path, fhir_package_source: Path
) -> None:
    code, out, _ = run(
        capsys,
        "--package-cache",
        str(tmp_path),
        "packages",
        "install",
        "--from",
        str(fhir_package_source / "hl7.fhir.r4.core#4.0.1.tgz"),
    )
    assert code == 0 and out.splitlines()[0] == "installed hl7.fhir.r4.core#4.0.1"


def test_missing_package_in_folder_is_exit_2(capsys, tmp_path: Path) -> None:
    code, _, err = run(
        capsys, "--package-cache", str(tmp_path / "c"), "packages", "install", "--from", str(tmp_path)
    )
    assert code == 2 and "hl7.fhir.be.vaccination#1.1.2, was not found in folder" in err


def test_cache_precedence_flag_over_env_over_config(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vaccicard.toml").write_text(f'package-cache = "{tmp_path / "from-toml"}"\n')
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert f"package cache: {tmp_path / 'from-toml'}" in run(capsys, "packages", "list")[1]
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "from-env"))
    assert f"package cache: {tmp_path / 'from-env'}" in run(capsys, "packages", "list")[1]
    out = run(capsys, "--package-cache", str(tmp_path / "from-flag"), "packages", "list")[1]
    assert f"package cache: {tmp_path / 'from-flag'}" in out


def test_broken_config_file_is_one_line_and_exit_2(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vaccicard.toml").write_text("package-cache = [unclosed\n")
    code, _, err = run(capsys, "packages", "list")
    assert code == 2 and "vaccicard.toml: not valid TOML" in err and err.count("\n") == 1


def test_console_script_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "conformance.cli", "--version"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and __version__ in result.stdout


def test_run_against_an_unreachable_target_is_one_line_and_exit_3(
    capsys, package_cache, tmp_path: Path
) -> None:
    code, _, err = run(
        capsys,
        "--package-cache",
        str(package_cache.root),
        "run",
        "--target",
        "http://127.0.0.1:1/fhir",
        "--report-dir",
        str(tmp_path / "report"),
    )
    assert code == 3 and err.count("\n") == 1 and "unreachable at http://127.0.0.1:1/fhir/metadata" in err
    assert not (tmp_path / "report").exists()
