"""Tests of ETKs (build, read, check) and their JWKS form."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives import serialization

from conformance.etee.errors import EtkError
from conformance.etee.etk import build_etk, build_jwks, certificate_jwk, parse_etk, parse_jwks
from conformance.etee.pki import HolderId
from tests.test_etee_pki import LUC_SSIN, World, etee_world


@pytest.fixture
def world() -> World:
    return etee_world()


def test_build_and_parse(world: World) -> None:
    etk = parse_etk(build_etk(world.register))
    assert etk.encryption_certificate == world.register.encryption.certificate
    assert etk.authentication_certificate == world.register.authentication.certificate
    assert etk.holder == HolderId("CBE", "0811122215")
    assert etk.application_id == "VACCICARD"
    assert etk.key_size == 2048
    assert etk.signing_time is not None
    assert etk.problems(trust=[world.root]) == []
    assert etk.verify(trust=[world.root]) is etk


def test_separate_credential_form(world: World) -> None:
    der = build_etk(
        authentication=world.luc.authentication, encryption_certificate=world.luc.encryption.certificate
    )
    assert parse_etk(der).holder == HolderId("SSIN", LUC_SSIN)
    with pytest.raises(ValueError, match="needs a holder"):
        build_etk()


def test_pem_and_base64_forms(world: World) -> None:
    der = build_etk(world.luc)
    text = base64.b64encode(der)
    pem = b"-----BEGIN PKCS7-----\n" + base64.encodebytes(der) + b"-----END PKCS7-----\n"
    assert parse_etk(text).der == der
    assert parse_etk(text.decode("ascii")).der == der
    assert parse_etk(pem).der == der


@pytest.mark.parametrize(
    "data", [b"", b"not an etk!", b"\x30\x03\x02\x01\x01", base64.b64encode(b"\x04\x02hi")]
)
def test_garbage_is_an_etk_error(data: bytes) -> None:
    with pytest.raises(EtkError):
        parse_etk(data)


def test_tampered_signature_is_refused(world: World) -> None:
    der = bytearray(build_etk(world.luc))
    der[-1] ^= 0x01  # the last byte of the SignerInfo's signature
    with pytest.raises(EtkError, match="does not verify"):
        parse_etk(bytes(der))


def test_content_must_be_a_certificate(world: World) -> None:
    from conformance.etee.cms import sign

    with pytest.raises(EtkError, match=r"not a DER X\.509 certificate"):
        parse_etk(sign(b"hello", world.luc.authentication))


def test_untrusted_expired_weak_and_mismatched(world: World) -> None:
    assert any("not trusted" in p for p in parse_etk(build_etk(world.stranger)).problems(trust=[world.root]))
    assert parse_etk(build_etk(world.stranger)).problems() == []  # no anchor, no chain check
    expired = parse_etk(build_etk(world.expired)).problems()
    assert any("encryption certificate is not valid now" in p for p in expired)
    assert any("authentication certificate is not valid now" in p for p in expired)
    weak = parse_etk(build_etk(world.weak)).problems()
    assert weak == ["the encryption key has 1024 bits: at least 2048 are required"]
    assert parse_etk(build_etk(world.weak)).problems(min_key_bits=1024) == []
    mixed = parse_etk(
        build_etk(
            authentication=world.luc.authentication,
            encryption_certificate=world.pharmacy.encryption.certificate,
        )
    ).problems()
    assert any("not issued by the authentication certificate" in p for p in mixed)
    assert any("names holder CBE=0987654394" in p for p in mixed)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1000)
    assert parse_etk(build_etk(world.luc)).problems(now=later)
    with pytest.raises(EtkError, match="fails its checks"):
        parse_etk(build_etk(world.expired)).verify()


def test_signing_key_usage_is_refused_for_encryption(world: World) -> None:
    # the eID signature certificate only allows non-repudiation: no key encipherment
    etk = parse_etk(build_etk(authentication=world.luc_eid, encryption_certificate=world.luc_eid.certificate))
    assert any("key usage does not allow key encipherment" in p for p in etk.problems())


# --- JWKS -----------------------------------------------------------------------------------------------


def test_jwks_round_trip(world: World) -> None:
    etk = parse_etk(build_etk(world.register))
    keys = parse_jwks(json.dumps(build_jwks([etk.jwk("enc"), etk.jwk("sig")])))
    enc, sig = keys
    assert enc.use == "enc" and sig.use == "sig"
    assert enc.certificate == world.register.encryption.certificate
    assert enc.certificates[1] == world.register.authentication.certificate
    assert sig.certificate == world.register.authentication.certificate
    assert (
        enc.public_key.public_numbers() == world.register.encryption.certificate.public_key().public_numbers()
    )  # type: ignore[union-attr]
    assert enc.kid is not None and enc.kid != sig.kid


def test_jwk_shape(world: World) -> None:
    certificate = world.luc.encryption.certificate
    jwk = certificate_jwk(certificate, use="enc", chain=[world.luc.authentication.certificate, world.root])
    assert set(jwk) == {"kty", "use", "kid", "n", "e", "x5t#S256", "x5c"}
    assert jwk["kty"] == "RSA" and jwk["e"] == "AQAB" and jwk["kid"] == jwk["x5t#S256"]
    assert "=" not in jwk["n"] and "+" not in jwk["n"] and "/" not in jwk["n"]
    assert base64.b64decode(jwk["x5c"][0]) == certificate.public_bytes(serialization.Encoding.DER)
    assert len(jwk["x5c"]) == 3


def test_jwks_without_x5c_and_bytes_input(world: World) -> None:
    jwk = certificate_jwk(world.luc.encryption.certificate, use="enc")
    del jwk["x5c"]
    (key,) = parse_jwks(json.dumps({"keys": [jwk]}).encode())
    assert key.certificate is None and key.use == "enc"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("not json", "not JSON"),
        ({"nokeys": []}, '"keys"'),
        ({"keys": [{"kty": "EC"}]}, "not an RSA key"),
        ({"keys": [{"kty": "RSA", "n": "AQAB"}]}, "malformed"),
        ({"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB", "x5c": ["!!"]}]}, "malformed"),
    ],
)
def test_bad_jwks(document: object, message: str) -> None:
    with pytest.raises(EtkError, match=message):
        parse_jwks(document if isinstance(document, str) else json.dumps(document))


def test_jwk_must_match_its_certificate(world: World) -> None:
    jwk = certificate_jwk(world.luc.encryption.certificate, use="enc")
    other = certificate_jwk(world.pharmacy.encryption.certificate, use="enc")
    jwk["n"] = other["n"]
    with pytest.raises(EtkError, match="do not match"):
        parse_jwks({"keys": [jwk]})
    jwk = certificate_jwk(world.luc.encryption.certificate, use="enc")
    jwk["use"] = "wrap"
    with pytest.raises(EtkError, match='use must be "enc" or "sig"'):
        parse_jwks({"keys": [jwk]})
