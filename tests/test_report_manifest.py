"""Tests of the integrity manifest: tampering is found, signatures verify, keys load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conformance.errors import ConfigurationError
from conformance.report import Redactor, build_report, load_public_key, verify_report, write_report
from conformance.report.manifest import canonical_bytes, key_fingerprint, load_private_key
from tests.report_fixtures import catalogue, synthetic_run


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("keys")
    private = Ed25519PrivateKey.generate()
    other = Ed25519PrivateKey.generate()
    paths = {
        "private": folder / "sign.pem",
        "public": folder / "sign.pub.pem",
        "ssh_public": folder / "sign.pub",
        "ssh_private": folder / "sign_ssh",
        "other_public": folder / "other.pub.pem",
        "ec": folder / "ec.pem",
    }
    paths["private"].write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    paths["ssh_private"].write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
    )
    public = private.public_key()
    pem = serialization.Encoding.PEM
    paths["public"].write_bytes(public.public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo))
    paths["ssh_public"].write_bytes(
        public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        + b" ci@vendor\n"
    )
    paths["other_public"].write_bytes(
        other.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    paths["ec"].write_bytes(
        generate_private_key(SECP256R1()).private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Path]) -> dict[str, Path]:
    synthetic = synthetic_run(12, 3)
    report = build_report(synthetic.run, synthetic.scenarios, catalogue())
    folder = tmp_path_factory.mktemp("reports")
    return {
        "plain": write_report(
            folder / "plain", report, synthetic.exchanges, redactor=Redactor.for_run(), allure=True
        ),
        "signed": write_report(
            folder / "signed",
            report,
            synthetic.exchanges,
            redactor=Redactor.for_run(),
            sign_key=keys["private"],
        ),
    }


@pytest.fixture
def copy(tmp_path: Path, written: dict[str, Path]):
    import shutil

    def make(kind: str) -> Path:
        target = tmp_path / kind
        shutil.copytree(written[kind], target)
        return target

    return make


def test_an_untouched_directory_verifies(written: dict[str, Path]) -> None:
    result = verify_report(written["plain"])
    assert result.ok and result.problems == []
    assert result.files == len(json.loads((written["plain"] / "manifest.json").read_text())["files"])
    assert result.notes == [
        "manifest.json is not signed: it shows the files are consistent, not who wrote them"
    ]


def test_one_changed_byte_is_found(copy) -> None:
    folder = copy("plain")
    html = bytearray((folder / "report.html").read_bytes())
    html[len(html) // 2] ^= 0x01
    (folder / "report.html").write_bytes(bytes(html))
    result = verify_report(folder)
    assert not result.ok
    assert result.problems == ["changed: report.html does not match its SHA-256 in manifest.json"]


def test_an_added_file_is_found(copy) -> None:
    folder = copy("plain")
    (folder / "allure-results" / "extra-result.json").write_text("{}")
    assert verify_report(folder).problems == [
        "added: allure-results/extra-result.json is not listed in manifest.json"
    ]


def test_a_removed_file_is_found(copy) -> None:
    folder = copy("plain")
    (folder / "junit.xml").unlink()
    assert verify_report(folder).problems == ["removed: junit.xml is listed in manifest.json but missing"]


def test_a_removed_or_broken_manifest_is_found(copy) -> None:
    folder = copy("plain")
    (folder / "manifest.json").write_text("{broken")
    assert verify_report(folder).problems[0].startswith("changed: manifest.json is not valid JSON")
    (folder / "manifest.json").write_text('{"files": {}}')
    assert verify_report(folder).problems == [
        "changed: manifest.json is not a vaccicard-conformance manifest"
    ]
    (folder / "manifest.json").unlink()
    assert verify_report(folder).problems == ["removed: manifest.json is missing, so nothing can be checked"]


def test_an_edited_manifest_entry_is_found(copy) -> None:
    folder = copy("plain")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["ticket.md"]["sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert verify_report(folder).problems == [
        "changed: ticket.md does not match its SHA-256 in manifest.json"
    ]


def test_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="report directory not found"):
        verify_report(tmp_path / "nope")


# -- signatures -----------------------------------------------------------------------------------------


def test_a_signed_directory_verifies_with_and_without_the_key(
    written: dict[str, Path], keys: dict[str, Path]
) -> None:
    public = load_public_key(keys["public"])
    trusted = verify_report(written["signed"], public)
    assert trusted.ok and trusted.notes == [] and trusted.signed_by == key_fingerprint(public)
    untrusted = verify_report(written["signed"])
    assert untrusted.ok and untrusted.signed_by == key_fingerprint(public)
    assert untrusted.notes[0].startswith(f"signed by key {key_fingerprint(public)}; no public key was given")
    manifest = json.loads((written["signed"] / "manifest.json").read_text())
    assert manifest["signature"]["algorithm"] == "Ed25519"
    assert manifest["signature"]["public_key_fingerprint"] == key_fingerprint(public)
    public.verify(__import__("base64").b64decode(manifest["signature"]["value"]), canonical_bytes(manifest))


def test_a_manifest_edited_after_signing_fails_even_with_matching_hashes(copy, keys: dict[str, Path]) -> None:
    folder = copy("signed")
    (folder / "ticket.md").write_text("All green, trust me.\n")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["ticket.md"]["sha256"] = (
        __import__("hashlib").sha256(b"All green, trust me.\n").hexdigest()
    )
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for key in (None, load_public_key(keys["public"])):
        assert verify_report(folder, key).problems == [
            "bad signature: manifest.json was changed after it was signed"
        ]


def test_a_report_signed_by_another_key_fails_against_the_trusted_key(
    written: dict[str, Path], keys: dict[str, Path]
) -> None:
    result = verify_report(written["signed"], load_public_key(keys["other_public"]))
    assert not result.ok and "is signed by key sha256:" in result.problems[0]


def test_a_public_key_for_an_unsigned_report_is_a_problem(
    written: dict[str, Path], keys: dict[str, Path]
) -> None:
    result = verify_report(written["plain"], load_public_key(keys["public"]))
    assert result.problems == ["not signed: a public key was given but manifest.json carries no signature"]


def test_a_malformed_signature_is_a_problem(copy) -> None:
    folder = copy("signed")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["signature"]["value"] = "not base64!"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert verify_report(folder).problems == ["bad signature: the signature in manifest.json is malformed"]


def test_keys_load_from_pem_openssh_and_private_files(keys: dict[str, Path]) -> None:
    fingerprints = {
        key_fingerprint(load_public_key(keys[name]))
        for name in ("public", "ssh_public", "private", "ssh_private")
    }
    assert len(fingerprints) == 1
    assert key_fingerprint(load_private_key(keys["ssh_private"]).public_key()) in fingerprints


@pytest.mark.parametrize(
    ("name", "loader", "message"),
    [
        ("ec", load_private_key, "is not an Ed25519 key"),
        ("ec", load_public_key, "is not an Ed25519 key"),
        ("missing", load_public_key, "cannot read public key"),
        ("public", load_private_key, "is not an unencrypted PEM or OpenSSH private key"),
    ],
)
def test_bad_keys_are_configuration_errors(
    keys: dict[str, Path], tmp_path: Path, name, loader, message
) -> None:
    path = keys.get(name, tmp_path / "missing.pem")
    with pytest.raises(ConfigurationError, match=message):
        loader(path)
