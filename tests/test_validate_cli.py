"""`vaccicard-conformance validate`: inputs, formats, exit codes and bad input."""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path

import pytest

from conformance.cli import main
from conformance.fhir.packages import PackageCache
from tests.test_validator import BE_VACCINATION, valid_immunization


@pytest.fixture
def run(capsys, package_cache: PackageCache):
    def invoke(*args: str) -> tuple[int, str, str]:
        code = main(["--package-cache", str(package_cache.root), "validate", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def write(path: Path, content: object) -> Path:
    path.write_text(json.dumps(content) if not isinstance(content, str) else content)
    return path


def invalid_immunization() -> dict:
    resource = valid_immunization()
    resource["lotNumber"] = "AB1234"  # forbidden by BeVaccination
    return resource


def test_valid_file_exits_0_with_a_text_summary(run, tmp_path: Path) -> None:
    code, out, _ = run(str(write(tmp_path / "ok.json", valid_immunization())))
    assert code == 0
    assert "ok.json: OK" in out and out.strip().splitlines()[-1].startswith(
        "PASSED: 1 resource(s), 0 error(s)"
    )


def test_invalid_file_exits_1_and_names_the_location(run, tmp_path: Path) -> None:
    code, out, _ = run(str(write(tmp_path / "bad.json", invalid_immunization())))
    assert code == 1
    assert (
        "ERROR       Immunization: Immunization.lotNumber is not allowed (max 0), but found 1 [cardinality]"
        in out
    )
    assert out.strip().splitlines()[-1].startswith("FAILED: 1 resource(s), 1 error(s)")


def test_json_format_is_an_operation_outcome_or_a_bundle(run, tmp_path: Path) -> None:
    one = write(tmp_path / "one.json", invalid_immunization())
    code, out, _ = run("--format", "json", str(one))
    document = json.loads(out)
    assert code == 1 and document["resourceType"] == "OperationOutcome"
    assert any(i["expression"] == ["Immunization"] for i in document["issue"] if i["severity"] == "error")
    two = write(tmp_path / "two.json", valid_immunization())
    _, out, _ = run("--format", "json", str(one), str(two))
    bundle = json.loads(out)
    assert bundle["resourceType"] == "Bundle" and len(bundle["entry"]) == 2


def test_ndjson_maps_back_line_by_line(run, tmp_path: Path) -> None:
    lines = [valid_immunization(), invalid_immunization(), "{broken", valid_immunization()]
    path = tmp_path / "batch.ndjson"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    code, out, _ = run("--format", "ndjson", str(path))
    outcomes = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and len(outcomes) == 4
    severities = [{i["severity"] for i in oo["issue"]} for oo in outcomes]
    assert "error" not in severities[0] and "error" in severities[1]
    assert severities[2] == {"fatal"} and "line 1, column" in outcomes[2]["issue"][0]["details"]["text"]
    assert "error" not in severities[3]


def test_folder_and_bundle_inputs(run, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write(folder / "a.json", valid_immunization())
    bad = invalid_immunization()
    write(folder / "b.json", {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": bad}]})
    code, out, _ = run(str(folder))
    assert code == 1
    assert "a.json: OK" in out and "b.json: INVALID" in out
    assert "Bundle.entry[0].resource: Immunization.lotNumber is not allowed" in out


def test_standard_input(run, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(json.dumps(valid_immunization()).encode())))
    code, out, _ = run("-")
    assert code == 0 and "stdin: OK" in out


def test_explicit_profile_and_profile_file(run, tmp_path: Path, package_cache: PackageCache) -> None:
    resource = valid_immunization()
    del resource["meta"]
    path = write(tmp_path / "r.json", resource)
    assert run(str(path))[0] == 0  # base Immunization
    resource["lotNumber"] = "x"
    write(path, resource)
    assert run(str(path))[0] == 0  # R4 allows lotNumber
    assert run("--profile", BE_VACCINATION, str(path))[0] == 1
    assert run("--profile", BE_VACCINATION + "|1.1.2", str(path))[0] == 1
    sd_file = package_cache.folder_for(
        next(p.ref for p in package_cache.installed() if p.ref.id == "hl7.fhir.be.vaccination")
    )
    profile_file = sd_file / "package" / "StructureDefinition-be-vaccination.json"
    assert run("--profile", str(profile_file), str(path))[0] == 1


def named_patient_profile(package_cache: PackageCache) -> dict:
    """A Patient profile that makes name required (a snapshot copied from R4 core)."""
    base = json.loads(
        (
            package_cache.root / "hl7.fhir.r4.core#4.0.1" / "package" / "StructureDefinition-Patient.json"
        ).read_text()
    )
    base["url"] = "http://example.org/StructureDefinition/named-patient"
    base["derivation"] = "constraint"
    base["baseDefinition"] = "http://hl7.org/fhir/StructureDefinition/Patient"
    next(e for e in base["snapshot"]["element"] if e["id"] == "Patient.name")["min"] = 1
    return base


def test_ig_with_a_single_profile_file(run, tmp_path: Path, package_cache: PackageCache) -> None:
    base = named_patient_profile(package_cache)
    profile = write(tmp_path / "profile.json", base)
    patient = write(tmp_path / "p.json", {"resourceType": "Patient", "meta": {"profile": [base["url"]]}})
    assert run(str(patient))[0] == 0  # profile unknown: a warning only
    code, out, _ = run("--ig", str(profile), str(patient))
    assert code == 1 and "Patient.name: minimum required = 1, but only found 0" in out


def test_ig_as_a_tgz_and_as_a_package_folder(
    capsys, tmp_path: Path, package_cache: PackageCache, fhir_package_source: Path
) -> None:
    import tarfile

    from conformance.fhir.packages import FolderSource, PackageRef, install

    own_cache = PackageCache(tmp_path / "cache")  # the .tgz gets installed: keep the shared cache clean
    install(own_cache, [PackageRef("hl7.fhir.be.vaccination", "1.1.2")], [FolderSource(fhir_package_source)])

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["--package-cache", str(own_cache.root), "validate", *args])
        out, err = capsys.readouterr()
        return code, out, err

    base = named_patient_profile(package_cache)
    folder = tmp_path / "example.profiles" / "package"
    folder.mkdir(parents=True)
    write(folder / "StructureDefinition-named-patient.json", base)
    manifest = {"name": "example.profiles", "version": "1.0.0", "dependencies": {"hl7.fhir.r4.core": "4.0.1"}}
    write(folder / "package.json", manifest)
    archive = tmp_path / "example.profiles#1.0.0.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="package")
    patient = write(tmp_path / "p.json", {"resourceType": "Patient", "meta": {"profile": [base["url"]]}})
    for ig in (archive, folder.parent):
        code, out, _ = run("--ig", str(ig), str(patient))
        assert code == 1 and "Patient.name: minimum required = 1, but only found 0" in out, ig
    assert (own_cache.root / "example.profiles#1.0.0" / "package" / "package.json").is_file()  # installed


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the input is empty"),
        (b"<Immunization xmlns='http://hl7.org/fhir'/>", "looks like XML"),
        (b'{"resourceType": "Immunization",\n "status": completed}', "malformed JSON at line 2, column 12"),
        (b'{"resourceType": "Immun\xe9zation"}', "not valid UTF-8"),
        (b"[" * 10_000 + b"]" * 10_000, "malformed JSON"),
        (b'"just a string"', "not a JSON object"),
    ],
    ids=["empty", "xml", "malformed", "latin-1", "deep", "string"],
)
def test_bad_input_is_one_clear_issue_and_exit_1(run, tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    code, out, err = run(str(path))
    assert code == 1 and message in out and "Traceback" not in out + err
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # the input is never changed


def test_deeply_nested_valid_json_is_reported_not_crashed(run, tmp_path: Path) -> None:
    resource = valid_immunization()
    node = resource["extension"][1]
    for _ in range(200):
        child = {"url": "http://example.org/nested", "extension": []}
        node.setdefault("extension", []).append(child)
        node = child
    node["valueString"] = "bottom"
    code, out, err = run(str(write(tmp_path / "deep.json", resource)))
    assert code == 1 and "nested more than" in out and "Traceback" not in out + err


def test_large_file_is_validated(run, tmp_path: Path) -> None:
    path = tmp_path / "big.ndjson"
    line = json.dumps(valid_immunization()).encode() + b"\n"
    with path.open("wb") as out:
        for _ in range(50 * 1024 * 1024 // len(line) // 10):  # 5 MB here; `bench_validator.py big` runs 50 MB
            out.write(line)
    code, out, _ = run("--format", "ndjson", str(path))
    assert code == 0 and len(out.splitlines()) == 50 * 1024 * 1024 // len(line) // 10


def test_huge_string_value_is_an_issue(run, tmp_path: Path) -> None:
    resource = valid_immunization()
    resource["note"] = [{"text": "x" * (2 * 1024 * 1024)}]
    code, out, _ = run(str(write(tmp_path / "huge.json", resource)))
    assert code == 1 and "Immunization.note[0].text" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profile", "http://example.org/nope"], "unknown profile http://example.org/nope"),
        (["--ig", "example.missing#1.0.0"], "package example.missing#1.0.0 is not in the package cache"),
        (["--ig", "nonsense"], "--ig nonsense: not a file, a folder or an id#version"),
        ([], "nothing to validate"),
        (["/no/such/file.json"], "/no/such/file.json: no such file or folder"),
    ],
)
def test_usage_errors_exit_2_with_one_line(run, tmp_path: Path, args: list[str], message: str) -> None:
    target = (
        [] if not args or args[0].startswith("/") else [str(write(tmp_path / "r.json", valid_immunization()))]
    )
    code, _, err = run(*args, *target)
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_jobs_keep_the_input_order(run, tmp_path: Path) -> None:
    path = tmp_path / "batch.ndjson"
    resources = [invalid_immunization() if i % 3 == 0 else valid_immunization() for i in range(30)]
    path.write_text("\n".join(json.dumps(r) for r in resources))
    code, out, _ = run("--jobs", "2", "--format", "ndjson", str(path))
    verdicts = ["error" in {i["severity"] for i in json.loads(line)["issue"]} for line in out.splitlines()]
    assert code == 1 and verdicts == [i % 3 == 0 for i in range(30)]


def test_best_practice_invariants_are_notes_unless_asked(run, tmp_path: Path) -> None:
    path = write(tmp_path / "r.json", valid_immunization())  # no narrative: dom-6 is a best practice
    _, out, _ = run(str(path))
    assert "INFORMATION Immunization: constraint failed: dom-6" in out
    code, out, _ = run("--best-practice", "error", str(path))
    assert code == 1 and "ERROR       Immunization: constraint failed: dom-6" in out
    _, out, _ = run("--best-practice", "ignore", str(path))
    assert "dom-6" not in out
