"""Tests of the ETEE test PKI, and the shared key material of every ``test_etee_*`` module.

RSA key generation is the slow part, so ``etee_world()`` builds one depot (its PKI, the register, the
test professionals and organisations) plus the extra holders the negative tests need, once per process;
the ``world`` fixture hands it out.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from conformance.errors import ConfigurationError
from conformance.etee.pki import (
    Credential,
    Holder,
    HolderId,
    TestPki,
    application_id,
    chain_problem,
    check_holder_id,
    describe_certificate,
    holder_identity,
    key_size,
    valid_at,
)
from conformance.simulator.etk_depot import EtkDepot
from conformance.simulator.testdata import TestData

# identities of the shipped testdata.json
LUC_SSIN = "75040201177"  # physician, NIHII11 10000106003
LUC_NIHII11 = "10000106003"
PETRA_SSIN = "82081901232"  # pharmacist
NADIR_SSIN = "90120101388"  # nurse
PHARMACY_CBE = "0987654394"
UNKNOWN_CBE = "0555123476"  # valid check digits, in no fixture


@dataclass(frozen=True)
class World:
    """Everything the ETEE tests sign, seal and look up with."""

    depot: EtkDepot
    register: Holder
    luc: Holder
    """A test professional (SSIN) in the depot."""
    pharmacy: Holder
    """A test organisation (CBE) in the depot."""
    luc_eid: Credential
    """An eID-like signature certificate for Luc's SSIN (another certificate, same holder)."""
    expired: Holder
    """Petra's certificates, ended yesterday (not in the depot)."""
    weak: Holder
    """Nadir with a 1024-bit encryption key (not in the depot)."""
    stranger: Holder
    """A holder from another, untrusted PKI."""
    outsider: Holder
    """A holder from the depot's PKI that the depot does not know."""

    @property
    def pki(self) -> TestPki:
        return self.depot.pki

    @property
    def root(self) -> x509.Certificate:
        return self.depot.pki.root_certificate


@functools.cache
def etee_world() -> World:
    """Build the shared key material once per process (about a second)."""
    depot = EtkDepot.generate(TestData.load())
    pki = depot.pki
    other = TestPki.generate("Untrusted Test CA")
    return World(
        depot=depot,
        register=depot.register,
        luc=depot.holder(HolderId("SSIN", LUC_SSIN)),
        pharmacy=depot.holder(HolderId("CBE", PHARMACY_CBE)),
        luc_eid=pki.issue_signature_credential(LUC_SSIN, "Luc", "Exemplaire"),
        expired=pki.issue_holder("SSIN", PETRA_SSIN, "Petra Proefmans", expired=True),
        weak=pki.issue_holder("SSIN", NADIR_SSIN, "Nadir Essai", encryption_key_size=1024),
        stranger=other.issue_holder("SSIN", LUC_SSIN, "Luc Exemplaire (forged)"),
        outsider=pki.issue_holder("CBE", UNKNOWN_CBE, "Unknown organisation"),
    )


@pytest.fixture
def world() -> World:
    return etee_world()


# --- identifiers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("SSIN", LUC_SSIN),
        ("CBE", PHARMACY_CBE),
        ("NIHII11", LUC_NIHII11),
        ("NIHII", "10000106"),
        ("EHP", "1234567890"),
        ("NIHII-PHARMACY", "12345678"),
        ("NIHII-PHYSIOTHERAPY", "12345678"),
    ],
)
def test_valid_holder_ids(kind: str, value: str) -> None:
    assert check_holder_id(kind, value) is None
    assert HolderId.parse(f"{kind}={value}") == HolderId(kind, value)


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("SSIN", "75040201178", "check digits"),
        ("CBE", "098765439", "exactly 10 digits"),
        ("PASSPORT", "123", "unknown identifier type"),
        ("NIHII", "1000010a", "exactly 8 digits"),
    ],
)
def test_invalid_holder_ids(kind: str, value: str, message: str) -> None:
    problem = check_holder_id(kind, value)
    assert problem is not None and message in problem
    with pytest.raises(ConfigurationError):
        HolderId.parse(f"{kind}={value}")


def test_holder_id_parse_rejects_other_shapes() -> None:
    with pytest.raises(ConfigurationError, match="TYPE=digits"):
        HolderId.parse("CBE:0987654394")


# --- certificates ---------------------------------------------------------------------------------------


def test_holder_certificates_are_named_like_ehealth(world: World) -> None:
    auth = world.register.authentication.certificate
    enc = world.register.encryption.certificate
    ous = [a.value for a in auth.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    assert "CBE=0811122215" in ous and "eHealth-platform Belgium" in ous
    assert auth.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "0811122215"
    assert auth.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "CBE=0811122215, VACCICARD"
    assert holder_identity(auth) == holder_identity(enc) == HolderId("CBE", "0811122215")
    assert application_id(enc) == "VACCICARD" and application_id(world.luc.encryption.certificate) is None
    assert enc.subject == auth.subject and enc.issuer == auth.subject  # eHealth: same DN, issued by auth
    enc.verify_directly_issued_by(auth)
    auth.verify_directly_issued_by(world.root)
    assert key_size(enc) == key_size(auth) == 2048
    assert world.register.label == "CBE=0811122215/VACCICARD"
    assert describe_certificate(auth).startswith("CBE=0811122215 (serial ")


def test_key_usages(world: World) -> None:
    enc_usage = world.luc.encryption.certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    auth_usage = world.luc.authentication.certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert enc_usage.key_encipherment and not enc_usage.digital_signature
    assert auth_usage.digital_signature


def test_chains(world: World) -> None:
    luc = world.luc.authentication.certificate
    assert chain_problem(luc, [world.root]) is None
    assert chain_problem(world.luc.encryption.certificate, [world.root], [luc]) is None
    assert chain_problem(world.root, [world.root]) is None
    problem = chain_problem(world.stranger.authentication.certificate, [world.root])
    assert problem is not None and "not issued by a trusted CA" in problem
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=5000)
    late = chain_problem(luc, [world.root], at=later)
    assert late is not None and "was not valid" in late


def test_expired_and_weak_options(world: World) -> None:
    now = dt.datetime.now(dt.UTC)
    assert not valid_at(world.expired.authentication.certificate, now)
    assert not valid_at(world.expired.encryption.certificate, now)
    assert valid_at(world.luc.authentication.certificate, now)
    assert world.weak.encryption.key_size == 1024 and world.weak.authentication.key_size == 2048


def test_eid_signature_certificate_names_the_ssin(world: World) -> None:
    certificate = world.luc_eid.certificate
    assert holder_identity(certificate) == HolderId("SSIN", LUC_SSIN)
    assert certificate.extensions.get_extension_for_class(x509.KeyUsage).value.content_commitment
    assert chain_problem(certificate, [world.root]) is None


def test_issue_refuses_a_bad_identifier(world: World) -> None:
    with pytest.raises(ConfigurationError, match="check digits"):
        world.pki.issue_holder("CBE", "0987654395", "Typo")
    with pytest.raises(ConfigurationError):
        world.pki.issue_signature_credential("123", "A", "B")


def test_explicit_validity(world: World) -> None:
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    holder = world.pki.issue_holder(
        "CBE", PHARMACY_CBE, "Later", key_size=1024, not_before=start, not_after=start + dt.timedelta(days=1)
    )
    assert holder.authentication.certificate.not_valid_before_utc == start


# --- export ---------------------------------------------------------------------------------------------


def test_pkcs12_round_trip(world: World) -> None:
    credential = world.luc.encryption
    data = credential.to_pkcs12(b"s3cret", name="encryption")
    loaded = Credential.from_pkcs12(data, b"s3cret")
    assert loaded.certificate == credential.certificate
    assert loaded.private_key.private_numbers() == credential.private_key.private_numbers()
    assert loaded.chain == credential.chain
    with pytest.raises(ConfigurationError, match="wrong password"):
        Credential.from_pkcs12(data, b"wrong")
    with pytest.raises(ConfigurationError, match="not a PKCS#12"):
        Credential.from_pkcs12(b"junk", None)
    unprotected = Credential.from_pkcs12(credential.to_pkcs12(None), None)
    assert unprotected.certificate == credential.certificate


def test_pem_and_der_export(world: World) -> None:
    credential = world.luc.authentication
    assert x509.load_der_x509_certificate(credential.certificate_der()) == credential.certificate
    chain = x509.load_pem_x509_certificates(credential.certificate_pem(with_chain=True))
    assert chain == [credential.certificate, world.root]
    key = serialization.load_pem_private_key(credential.key_pem(b"pw"), b"pw")
    assert key.public_key().public_numbers() == credential.private_key.public_key().public_numbers()  # type: ignore[union-attr]
    assert b"ENCRYPTED" not in credential.key_pem()
