"""Tests of the simulator's fictitious test data and generated organisation keys."""

from __future__ import annotations

import dataclasses
import json
import stat
from importlib import resources
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from joserfc import jwt
from joserfc.jwk import RSAKey

from conformance.belgium.identifiers import check_cbe, check_nihdi, check_ssin
from conformance.errors import ConfigurationError
from conformance.simulator.testdata import DEFAULT_RECORDING_DISCIPLINES, KeyRing, TestData


@pytest.fixture(scope="module")
def data() -> TestData:
    return TestData.load()


@pytest.fixture(scope="module")
def keys(data: TestData) -> KeyRing:
    return data.generate_keys()


def _raw() -> dict:
    text = resources.files("conformance.simulator").joinpath("testdata.json").read_text(encoding="utf-8")
    return json.loads(text)


def test_every_identifier_has_valid_check_digits(data: TestData) -> None:
    for patient in data.patients:
        assert check_ssin(patient.ssin) is None, patient
    for pro in data.professionals:
        assert check_ssin(pro.ssin) is None, pro
        assert len(pro.nihii11) == 11 and check_nihdi(pro.nihii11) is None, pro
        assert check_nihdi(pro.nihii8) is None
    for org in data.organisations:
        assert check_cbe(org.cbe) is None, org
        assert org.client_id == f"cbe-{org.cbe}"


def test_fixture_covers_the_refusal_cases(data: TestData) -> None:
    assert any(not p.consent for p in data.patients), "a patient without consent"
    assert any(p.consent and not p.relationships for p in data.patients), (
        "a consenting patient without relationship"
    )
    assert any(not p.recognised for p in data.professionals), "a professional who is not recognised"
    assert any(p.recognised and p.discipline not in data.recording_disciplines for p in data.professionals), (
        "a recognised professional whose discipline may not record"
    )
    related = {ssin for p in data.patients for ssin in p.relationships}
    assert any(p.ssin not in related for p in data.professionals), "a professional without any patient"
    assert {"physician", "pharmacist", "nurse", "midwife", "dentist"} <= {
        p.discipline for p in data.professionals
    }
    assert any(p.birth_date.year >= 2000 for p in data.patients), "an SSIN using the from-2000 rule"
    assert any(int(p.ssin[2:4]) > 12 for p in data.patients), "a BIS number"
    assert len(data.organisations) >= 1


def test_defaults_and_vaccicard_client(data: TestData) -> None:
    assert data.recording_disciplines == DEFAULT_RECORDING_DISCIPLINES
    assert data.vaccicard.client_id and data.vaccicard.audience
    assert data.vaccicard.roles
    assert data.healthcare_clients and data.healthcare_clients[0].redirect_uris


def test_look_ups(data: TestData) -> None:
    pro = data.professionals[0]
    assert data.professional(pro.ssin) is pro
    assert data.professional_by_nihii(pro.nihii11) is pro
    assert data.professional_by_nihii(pro.nihii8) is pro
    patient = data.patients[0]
    assert data.patient(patient.ssin) is patient
    org = data.organisations[0]
    assert data.organisation(org.client_id) is org
    assert data.organisation_by_cbe(org.cbe) is org
    client = data.healthcare_clients[0]
    assert data.healthcare_client(client.client_id) is client
    assert data.patient("00000000000") is None
    assert data.professional("nope") is None
    assert data.professional_by_nihii("12345678") is None
    assert data.organisation("cbe-0000000097") is None
    assert data.organisation_by_cbe("0000000097") is None
    assert data.healthcare_client("other") is None


def test_relationship_and_recording_rules(data: TestData) -> None:
    patient = next(p for p in data.patients if p.relationships)
    assert data.has_relationship(patient.ssin, patient.relationships[0])
    loner = next(p for p in data.patients if not p.relationships)
    assert not any(data.has_relationship(loner.ssin, pro.ssin) for pro in data.professionals)
    assert not data.has_relationship("00000000000", patient.relationships[0])
    by_discipline = {p.discipline: p for p in data.professionals if p.recognised}
    assert data.may_record(by_discipline["physician"])
    assert not data.may_record(by_discipline["dentist"])
    assert not data.may_record(next(p for p in data.professionals if not p.recognised))


def test_dataclasses_are_frozen(data: TestData) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.patients[0].consent = False  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.vaccicard = None  # type: ignore[misc,assignment]


def test_custom_file_overrides_defaults(tmp_path: Path) -> None:
    raw = _raw()
    raw["recording_disciplines"] = ["physician"]
    raw["vaccicard"] = {"client_id": "other-api", "roles": ["write"]}
    path = tmp_path / "data.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    data = TestData.load(path)
    assert data.recording_disciplines == ("physician",)
    assert data.vaccicard.client_id == data.vaccicard.audience == "other-api"
    assert data.vaccicard.roles == ("write",)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda raw: raw["patients"][0].update(ssin="58032100127"), "58032100127"),
        (lambda raw: raw["professionals"][0].update(nihii11="10000107003"), "10000107003"),
        (lambda raw: raw["professionals"][0].update(nihii11="10000106"), "11 digits"),
        (lambda raw: raw["organisations"][0].update(cbe="0987654395"), "0987654395"),
        (
            lambda raw: raw["patients"][0]["relationships"].append("94021300145"),
            "unknown professional 94021300145",
        ),
        (lambda raw: raw["patients"].append(dict(raw["patients"][0])), "duplicate patient SSIN"),
        (lambda raw: raw["patients"][0].update(gender="x"), "gender"),
        (lambda raw: raw["patients"][0].pop("consent"), "missing field 'consent'"),
        (lambda raw: raw["patients"][0].update(birth_date="21/03/1958"), "malformed"),
    ],
)
def test_invalid_fixture_is_a_configuration_error(mutate, expected: str) -> None:
    raw = _raw()
    mutate(raw)
    with pytest.raises(ConfigurationError, match=expected):
        TestData.from_dict(raw)


def test_unreadable_or_invalid_json_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        TestData.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        TestData.load(bad)


def test_shipped_fixture_holds_no_key_material() -> None:
    text = resources.files("conformance.simulator").joinpath("testdata.json").read_text(encoding="utf-8")
    assert "PRIVATE KEY" not in text and "CERTIFICATE" not in text
    assert '"d"' not in text


def test_generated_keys_and_certificates(data: TestData, keys: KeyRing) -> None:
    assert set(keys) == {o.client_id for o in data.organisations}
    for org in data.organisations:
        cred = keys[org.client_id]
        assert cred.cbe == org.cbe
        public = cred.certificate.public_key()
        assert public.public_numbers() == cred.private_key.public_key().public_numbers()  # type: ignore[union-attr]
        assert cred.certificate.subject == cred.certificate.issuer
        assert f"CBE={org.cbe}" in cred.certificate.subject.rfc4514_string()
        assert cred.private_key.key_size >= 2048
        assert cred.kid == RSAKey.import_key(public).thumbprint()  # type: ignore[arg-type]
        assert cred.public_jwk().kid == cred.kid and not cred.public_jwk().is_private
    assert (
        keys.certificates()[data.organisations[0].client_id]
        is keys[data.organisations[0].client_id].certificate
    )
    assert "PRIVATE" not in repr(keys) and "private_key" not in repr(keys[data.organisations[0].client_id])


def test_client_assertion_helper_signs_with_the_organisation_key(keys: KeyRing) -> None:
    cred = next(iter(keys.values()))
    assertion = cred.client_assertion("http://127.0.0.1/auth/realms/M2M", now=1_800_000_000, lifetime=60)
    token = jwt.decode(assertion, cred.public_jwk(), algorithms=["RS256"])
    assert token.header["kid"] == cred.kid and token.header["alg"] == "RS256"
    assert token.claims["iss"] == token.claims["sub"] == cred.client_id
    assert token.claims["exp"] - token.claims["iat"] == 60
    assert cred.client_assertion_type == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def test_keys_written_only_on_request(keys: KeyRing, tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    paths = keys.write(folder, password=b"test-only")
    assert len(paths) == 3 * len(keys)
    for client_id, cred in keys.items():
        key_file = folder / f"{client_id}.key.pem"
        p12_file = folder / f"{client_id}.p12"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(p12_file.stat().st_mode) == 0o600
        loaded = serialization.load_pem_private_key(key_file.read_bytes(), password=b"test-only")
        assert loaded.public_key().public_numbers() == cred.private_key.public_key().public_numbers()  # type: ignore[union-attr]
        key, cert, _ = pkcs12.load_key_and_certificates(p12_file.read_bytes(), b"test-only")
        assert cert == cred.certificate and key is not None
    assert not list(folder.glob("*.tmp"))
