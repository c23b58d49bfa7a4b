"""Interoperability with OpenSSL's ``cms`` command, both ways, and the refusals only OpenSSL can make here.

The product never runs openssl; these tests do, to show that a third implementation agrees with it:
messages sealed by ``seal`` pass ``openssl cms -verify`` (outer), ``-decrypt`` and ``-verify`` (inner)
with the test root as ``-CAfile``, and messages made with ``openssl cms -sign`` / ``-encrypt -aes128`` /
``-sign`` are unsealed by ``unseal``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conformance.etee.errors import UnsealError, UnsealProblem
from conformance.etee.etk import build_etk
from conformance.etee.pki import Credential, Holder
from conformance.etee.seal import seal, unseal
from tests.test_etee_pki import World, etee_world

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
PAYLOAD = b'{"resourceType":"Immunization","status":"completed","lotNumber":"AB1234"}\n'

pytestmark = pytest.mark.skipif(not Path(OPENSSL).exists(), reason="openssl is not installed")


@pytest.fixture
def world() -> World:
    return etee_world()


def openssl(*args: object, stdin: bytes | None = None, env: dict[str, str] | None = None) -> bytes:
    result = subprocess.run(
        [OPENSSL, *(str(a) for a in args)],
        input=stdin,
        capture_output=True,
        timeout=30,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


class Files:
    """PEM files of the test PKI for openssl, written once per test into ``tmp_path``."""

    def __init__(self, world: World, folder: Path) -> None:
        self.folder = folder
        self.root = self.write("root.pem", world.depot.root_pem())

    def write(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(data)
        return path

    def credential(self, name: str, credential: Credential) -> tuple[Path, Path]:
        return (
            self.write(f"{name}.crt.pem", credential.certificate_pem()),
            self.write(f"{name}.key.pem", credential.key_pem()),
        )


@pytest.fixture
def files(world: World, tmp_path: Path) -> Files:
    return Files(world, tmp_path)


def openssl_seal(
    files: Files,
    sender: Holder,
    recipient_cert: Path,
    *,
    inner_options: tuple[str, ...] = ("-keyopt", "rsa_padding_mode:pss"),
    encrypt_options: tuple[str, ...] = ("-aes128",),
) -> bytes:
    """A three-layer message made by openssl alone."""
    cert, key = files.credential("sender", sender.authentication)
    payload = files.write("payload.json", PAYLOAD)
    inner, enveloped, outer = (files.folder / n for n in ("inner.der", "enveloped.der", "outer.der"))
    common = ("-outform", "DER", "-nodetach", "-binary", "-md", "sha256")
    openssl(
        "cms", "-sign", "-in", payload, "-signer", cert, "-inkey", key, "-out", inner, *common, *inner_options
    )
    openssl(
        "cms",
        "-encrypt",
        "-in",
        inner,
        "-binary",
        "-outform",
        "DER",
        "-out",
        enveloped,
        "-recip",
        recipient_cert,
        *encrypt_options,
    )
    openssl("cms", "-sign", "-in", enveloped, "-signer", cert, "-inkey", key, "-out", outer, *common)
    return outer.read_bytes()


# --- product → openssl ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["pss", "pkcs1v15"])
def test_openssl_opens_what_the_product_seals(world: World, files: Files, scheme: str) -> None:
    message = files.write(
        "message.der",
        seal(
            PAYLOAD,
            sender=world.luc.credentials(),
            recipients=[world.depot.register_etk],
            signature_scheme=scheme,  # type: ignore[arg-type]
            authentication_scheme=scheme,  # type: ignore[arg-type]
        ),
    )
    enveloped, inner, payload = (files.folder / n for n in ("enveloped.der", "inner.der", "payload.out"))
    verify = ("-inform", "DER", "-binary", "-CAfile", files.root, "-purpose", "any")
    openssl("cms", "-verify", "-in", message, "-out", enveloped, *verify)
    recipient_cert, recipient_key = files.credential("register", world.register.encryption)
    openssl(
        "cms",
        "-decrypt",
        "-inform",
        "DER",
        "-binary",
        "-in",
        enveloped,
        "-recip",
        recipient_cert,
        "-inkey",
        recipient_key,
        "-out",
        inner,
    )
    openssl("cms", "-verify", "-in", inner, "-out", payload, *verify)
    assert payload.read_bytes() == PAYLOAD
    printed = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", enveloped).decode()
    assert "aes-128-cbc" in printed and "rsaEncryption" in printed


def test_openssl_verifies_an_etk(world: World, files: Files) -> None:
    etk = files.write("register.etk", build_etk(world.register))
    content = files.folder / "content.der"
    openssl(
        "cms",
        "-verify",
        "-inform",
        "DER",
        "-binary",
        "-in",
        etk,
        "-out",
        content,
        "-CAfile",
        files.root,
        "-purpose",
        "any",
    )
    assert content.read_bytes() == world.register.encryption.certificate_der()


def test_openssl_reads_the_pkcs12_export(world: World, files: Files) -> None:
    p12 = files.write("luc.p12", world.luc.authentication.to_pkcs12(b"pw", name="authentication"))
    out = openssl("pkcs12", "-in", p12, "-passin", "env:P12_PW", "-nokeys", env={"P12_PW": "pw"})
    assert b"BEGIN CERTIFICATE" in out


# --- openssl → product ----------------------------------------------------------------------------------


def test_product_unseals_what_openssl_seals(world: World, files: Files) -> None:
    recipient_cert, _ = files.credential("register", world.register.encryption)
    message = openssl_seal(files, world.luc, recipient_cert)
    result = unseal(message, recipient=world.register.encryption, trust=[world.root])
    assert result.payload == PAYLOAD
    assert result.inner_scheme == "pss" and result.outer_scheme == "pkcs1v15"
    assert result.sender_certificate == world.luc.authentication.certificate


def test_product_matches_a_recipient_named_by_key_identifier(world: World, files: Files) -> None:
    recipient_cert, _ = files.credential("register", world.register.encryption)
    message = openssl_seal(files, world.luc, recipient_cert, encrypt_options=("-aes128", "-keyid"))
    assert unseal(message, recipient=world.register.encryption, trust=[world.root]).payload == PAYLOAD


def test_oaep_key_transport_is_refused(world: World, files: Files) -> None:
    recipient_cert, _ = files.credential("register", world.register.encryption)
    message = openssl_seal(
        files, world.luc, recipient_cert, encrypt_options=("-aes128", "-keyopt", "rsa_padding_mode:oaep")
    )
    with pytest.raises(UnsealError) as caught:
        unseal(message, recipient=world.register.encryption)
    assert (
        caught.value.problem is UnsealProblem.UNSUPPORTED_ALGORITHM and "rsaes_oaep" in caught.value.message
    )


def test_aes_256_is_refused(world: World, files: Files) -> None:
    recipient_cert, _ = files.credential("register", world.register.encryption)
    message = openssl_seal(files, world.luc, recipient_cert, encrypt_options=("-aes256",))
    with pytest.raises(UnsealError) as caught:
        unseal(message, recipient=world.register.encryption)
    assert (
        caught.value.problem is UnsealProblem.UNSUPPORTED_ALGORITHM and "aes256_cbc" in caught.value.message
    )


def test_inner_signature_without_signing_time_is_refused(world: World, files: Files) -> None:
    """``-noattr``: no signed attributes at all, so no signing time; the signature itself is fine."""
    recipient_cert, _ = files.credential("register", world.register.encryption)
    message = openssl_seal(files, world.luc, recipient_cert, inner_options=("-noattr",))
    with pytest.raises(UnsealError) as caught:
        unseal(message, recipient=world.register.encryption, trust=[world.root])
    assert caught.value.problem is UnsealProblem.SIGNING_TIME_MISSING


def test_sha1_digest_is_refused(world: World, files: Files) -> None:
    recipient_cert, _ = files.credential("register", world.register.encryption)
    message = openssl_seal(files, world.luc, recipient_cert, inner_options=("-md", "sha1"))
    with pytest.raises(UnsealError) as caught:
        unseal(message, recipient=world.register.encryption, now=dt.datetime.now(dt.UTC))
    assert caught.value.problem is UnsealProblem.UNSUPPORTED_ALGORITHM and "sha1" in caught.value.message
