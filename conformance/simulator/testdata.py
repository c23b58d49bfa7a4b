"""Fictitious test data for the simulator: patients, professionals, organisations and their keys.

``TestData.load()`` reads the shipped ``testdata.json`` (or a file of the same shape) into frozen
dataclasses and checks every SSIN, NIHDI and CBE number with the Belgian identifier rules, so a custom
fixture with a typo fails at start-up with a message naming the bad value. The file never holds a private
key: ``TestData.generate_keys()`` makes, for each organisation, an RSA key and a self-signed certificate
standing for its eHealth certificate (used for ``private_key_jwt`` in realm ``M2M``). They live in memory
and are written to disk only when ``KeyRing.write`` is called.

Assumed defaults (nothing public says otherwise; a custom fixture changes them): the Vaccicard client id
and audience ``vaccicard-api`` with roles ``vaccination-read``/``vaccination-write``; the disciplines that
may record vaccinations (physician, pharmacist, nurse, midwife); a public vendor client
``vendor-software`` whose redirect URIs are loopback ones; M2M client ids ``cbe-<CBE>``; the certificate
subject shape and the ``kid`` of an organisation key (its RFC 7638 JWK thumbprint).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import RSAKey

from conformance.belgium.identifiers import check_cbe, check_nihdi, check_ssin
from conformance.errors import ConfigurationError

__all__ = [
    "DEFAULT_RECORDING_DISCIPLINES",
    "HealthcareClient",
    "KeyRing",
    "Organisation",
    "OrganisationCredential",
    "Patient",
    "Professional",
    "TestData",
    "VaccicardClient",
]

DEFAULT_RECORDING_DISCIPLINES: tuple[str, ...] = ("physician", "pharmacist", "nurse", "midwife")
"""Disciplines allowed to record vaccinations unless the fixture says otherwise (assumed)."""

_GENDERS = frozenset({"male", "female", "other", "unknown"})
_CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True)
class Patient:
    """A fictitious patient: identity, consent and the professionals with a therapeutic relationship."""

    ssin: str
    given_name: str
    family_name: str
    birth_date: dt.date
    gender: str
    consent: bool
    relationships: tuple[str, ...] = ()
    """SSINs of the professionals who have a therapeutic relationship with this patient."""


@dataclass(frozen=True)
class Professional:
    """A fictitious healthcare professional as IAM Connect knows them."""

    ssin: str
    given_name: str
    family_name: str
    discipline: str
    nihii11: str
    recognised: bool

    @property
    def nihii8(self) -> str:
        """The 8-digit NIHDI number (without the qualification code)."""
        return self.nihii11[:8]


@dataclass(frozen=True)
class Organisation:
    """A fictitious organisation with its M2M client id (``cbe-<CBE>`` by default)."""

    cbe: str
    name: str
    client_id: str


@dataclass(frozen=True)
class VaccicardClient:
    """The Vaccicard FHIR API as a client of IAM Connect: its id, token audience and granted roles."""

    client_id: str = "vaccicard-api"
    audience: str = "vaccicard-api"
    roles: tuple[str, ...] = ("vaccination-read", "vaccination-write")


@dataclass(frozen=True)
class HealthcareClient:
    """A public client of realm ``healthcare`` (the vendor software) and its allowed redirect URIs."""

    client_id: str
    redirect_uris: tuple[str, ...]


@dataclass(frozen=True)
class TestData:
    """The whole fixture, with look-ups by SSIN, NIHDI number and client id."""

    __test__ = False  # not a pytest test class, whatever its name

    patients: tuple[Patient, ...]
    professionals: tuple[Professional, ...]
    organisations: tuple[Organisation, ...]
    vaccicard: VaccicardClient = field(default_factory=VaccicardClient)
    healthcare_clients: tuple[HealthcareClient, ...] = ()
    recording_disciplines: tuple[str, ...] = DEFAULT_RECORDING_DISCIPLINES
    _patients: Mapping[str, Patient] = field(init=False, repr=False, compare=False)
    _professionals: Mapping[str, Professional] = field(init=False, repr=False, compare=False)
    _by_nihii: Mapping[str, Professional] = field(init=False, repr=False, compare=False)
    _organisations: Mapping[str, Organisation] = field(init=False, repr=False, compare=False)
    _clients: Mapping[str, HealthcareClient] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        errors = _validate(self)
        if errors:
            raise ConfigurationError("invalid simulator test data: " + "; ".join(errors))
        index = {
            "_patients": {p.ssin: p for p in self.patients},
            "_professionals": {p.ssin: p for p in self.professionals},
            "_by_nihii": {p.nihii11: p for p in self.professionals}
            | {p.nihii8: p for p in self.professionals},
            "_organisations": {o.client_id: o for o in self.organisations},
            "_clients": {c.client_id: c for c in self.healthcare_clients},
        }
        for name, mapping in index.items():
            object.__setattr__(self, name, MappingProxyType(mapping))

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> TestData:
        """Load a fixture file (default: the shipped ``testdata.json``); ConfigurationError if invalid."""
        try:
            if path is None:
                text = resources.files(__package__).joinpath("testdata.json").read_text(encoding="utf-8")
                source = "the shipped testdata.json"
            else:
                text = Path(path).read_text(encoding="utf-8")
                source = str(path)
            raw = json.loads(text)
        except OSError as error:
            raise ConfigurationError(f"cannot read simulator test data {path}: {error.strerror}") from error
        except json.JSONDecodeError as error:
            raise ConfigurationError(f"simulator test data {source} is not valid JSON: {error}") from error
        try:
            return cls.from_dict(raw)
        except ConfigurationError as error:
            raise ConfigurationError(f"{source}: {error.message}") from error

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TestData:
        """Build test data from the JSON shape of ``testdata.json``; ConfigurationError if invalid."""
        try:
            vaccicard_raw = raw.get("vaccicard", {})
            vaccicard = VaccicardClient(
                client_id=vaccicard_raw.get("client_id", VaccicardClient.client_id),
                audience=vaccicard_raw.get(
                    "audience", vaccicard_raw.get("client_id", VaccicardClient.audience)
                ),
                roles=tuple(vaccicard_raw.get("roles", VaccicardClient.roles)),
            )
            return cls(
                patients=tuple(
                    Patient(
                        ssin=p["ssin"],
                        given_name=p["given_name"],
                        family_name=p["family_name"],
                        birth_date=dt.date.fromisoformat(p["birth_date"]),
                        gender=p["gender"],
                        consent=bool(p["consent"]),
                        relationships=tuple(p.get("relationships", ())),
                    )
                    for p in raw.get("patients", ())
                ),
                professionals=tuple(
                    Professional(
                        ssin=p["ssin"],
                        given_name=p["given_name"],
                        family_name=p["family_name"],
                        discipline=p["discipline"],
                        nihii11=p["nihii11"],
                        recognised=bool(p["recognised"]),
                    )
                    for p in raw.get("professionals", ())
                ),
                organisations=tuple(
                    Organisation(
                        cbe=o["cbe"], name=o["name"], client_id=o.get("client_id", f"cbe-{o['cbe']}")
                    )
                    for o in raw.get("organisations", ())
                ),
                vaccicard=vaccicard,
                healthcare_clients=tuple(
                    HealthcareClient(client_id=c["client_id"], redirect_uris=tuple(c["redirect_uris"]))
                    for c in raw.get("healthcare_clients", ())
                ),
                recording_disciplines=tuple(raw.get("recording_disciplines", DEFAULT_RECORDING_DISCIPLINES)),
            )
        except KeyError as error:
            raise ConfigurationError(f"missing field {error.args[0]!r}") from error
        except (TypeError, ValueError, AttributeError) as error:
            raise ConfigurationError(f"malformed entry: {error}") from error

    # --- look-ups --------------------------------------------------------------------------------

    def patient(self, ssin: str) -> Patient | None:
        """The patient with this SSIN (or BIS number), or None."""
        return self._patients.get(ssin)

    def professional(self, ssin: str) -> Professional | None:
        """The professional with this SSIN, or None."""
        return self._professionals.get(ssin)

    def professional_by_nihii(self, nihii: str) -> Professional | None:
        """The professional with this NIHDI number (8 or 11 digits), or None."""
        return self._by_nihii.get(nihii)

    def organisation(self, client_id: str) -> Organisation | None:
        """The organisation whose M2M client id is ``client_id``, or None."""
        return self._organisations.get(client_id)

    def organisation_by_cbe(self, cbe: str) -> Organisation | None:
        """The organisation with this CBE number, or None."""
        return next((o for o in self.organisations if o.cbe == cbe), None)

    def healthcare_client(self, client_id: str) -> HealthcareClient | None:
        """The registered public client of realm ``healthcare`` with this id, or None."""
        return self._clients.get(client_id)

    def has_relationship(self, patient_ssin: str, professional_ssin: str) -> bool:
        """Whether the professional has a therapeutic relationship with the patient."""
        patient = self.patient(patient_ssin)
        return patient is not None and professional_ssin in patient.relationships

    def may_record(self, professional: Professional) -> bool:
        """Whether the professional is recognised in a discipline that may record vaccinations."""
        return professional.recognised and professional.discipline in self.recording_disciplines

    # --- keys ------------------------------------------------------------------------------------

    def generate_keys(self, *, key_size: int = 2048, valid_days: int = 365) -> KeyRing:
        """Generate an RSA key and self-signed "eHealth certificate" for every organisation (in memory)."""
        return KeyRing(
            {
                o.client_id: OrganisationCredential.generate(o, key_size=key_size, valid_days=valid_days)
                for o in self.organisations
            }
        )


def _validate(data: TestData) -> list[str]:
    """Every problem in the fixture, as messages naming the bad value."""
    errors: list[str] = []

    def unique(kind: str, values: Sequence[str]) -> None:
        seen: set[str] = set()
        for value in values:
            if value in seen:
                errors.append(f"duplicate {kind} {value}")
            seen.add(value)

    for patient in data.patients:
        if (message := check_ssin(patient.ssin)) is not None:
            errors.append(f"patient {patient.given_name} {patient.family_name}: {message}")
        if patient.gender not in _GENDERS:
            errors.append(
                f"patient {patient.ssin}: gender {patient.gender!r} is not one of {sorted(_GENDERS)}"
            )
    for pro in data.professionals:
        if (message := check_ssin(pro.ssin)) is not None:
            errors.append(f"professional {pro.given_name} {pro.family_name}: {message}")
        if len(pro.nihii11) != 11:
            errors.append(f"professional {pro.ssin}: nihii11 {pro.nihii11!r} must have 11 digits")
        elif (message := check_nihdi(pro.nihii11)) is not None:
            errors.append(f"professional {pro.ssin}: {message}")
    for org in data.organisations:
        if (message := check_cbe(org.cbe)) is not None:
            errors.append(f"organisation {org.name}: {message}")
    unique("patient SSIN", [p.ssin for p in data.patients])
    unique("professional SSIN", [p.ssin for p in data.professionals])
    unique("NIHDI number", [p.nihii8 for p in data.professionals])
    unique("organisation client id", [o.client_id for o in data.organisations])
    unique("healthcare client id", [c.client_id for c in data.healthcare_clients])
    known = {p.ssin for p in data.professionals}
    for patient in data.patients:
        for ssin in patient.relationships:
            if ssin not in known:
                errors.append(f"patient {patient.ssin}: relationship with unknown professional {ssin}")
    if not data.vaccicard.client_id or not data.vaccicard.audience:
        errors.append("vaccicard client_id and audience must not be empty")
    return errors


# --- organisation keys ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OrganisationCredential:
    """An organisation's generated key pair and self-signed certificate; ``kid`` is the JWK thumbprint."""

    client_id: str
    cbe: str
    private_key: rsa.RSAPrivateKey = field(repr=False)
    certificate: x509.Certificate
    kid: str

    @classmethod
    def generate(
        cls, organisation: Organisation, *, key_size: int = 2048, valid_days: int = 365
    ) -> OrganisationCredential:
        """Generate a key and a self-signed certificate whose subject names the organisation's CBE."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "BE"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Federal Government"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "eHealth-platform Belgium"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, organisation.name),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"CBE={organisation.cbe}"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"CBE={organisation.cbe}"),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        kid = RSAKey.import_key(key.public_key()).thumbprint()
        return cls(organisation.client_id, organisation.cbe, key, certificate, kid)

    def public_jwk(self) -> RSAKey:
        """The certificate's public key as a joserfc key (with ``kid``, ``alg`` RS256, ``use`` sig)."""
        return RSAKey.import_key(
            self.certificate.public_key(),  # type: ignore[arg-type]
            {"kid": self.kid, "alg": "RS256", "use": "sig"},
        )

    def private_jwk(self) -> RSAKey:
        """The private key as a joserfc key (with ``kid``), for signing client assertions."""
        return RSAKey.import_key(self.private_key, {"kid": self.kid, "alg": "RS256", "use": "sig"})

    def client_assertion(
        self, audience: str, *, now: float, lifetime: int = 60, jti: str | None = None
    ) -> str:
        """A ``private_key_jwt`` client assertion (RS256, ``kid``) for ``audience`` (the realm URL)."""
        issued = int(now)
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience,
            "iat": issued,
            "exp": issued + lifetime,
            "jti": jti or str(uuid.uuid4()),
        }
        return jwt.encode({"alg": "RS256", "kid": self.kid}, claims, self.private_jwk(), algorithms=["RS256"])

    @property
    def client_assertion_type(self) -> str:
        """The ``client_assertion_type`` to send with the assertion."""
        return _CLIENT_ASSERTION_TYPE


class KeyRing(Mapping[str, OrganisationCredential]):
    """Generated organisation credentials by M2M client id; written to disk only on request."""

    def __init__(self, credentials: Mapping[str, OrganisationCredential]) -> None:
        self.credentials: Mapping[str, OrganisationCredential] = MappingProxyType(dict(credentials))

    def __repr__(self) -> str:
        return f"KeyRing({sorted(self.credentials)})"

    def __getitem__(self, client_id: str) -> OrganisationCredential:
        return self.credentials[client_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.credentials)

    def __len__(self) -> int:
        return len(self.credentials)

    def certificates(self) -> dict[str, x509.Certificate]:
        """The registered certificate of each client id (what IAM Connect verifies assertions with)."""
        return {client_id: c.certificate for client_id, c in self.credentials.items()}

    def write(self, directory: str | os.PathLike[str], *, password: bytes | None = None) -> list[Path]:
        """Write ``<client_id>.crt.pem``, ``.key.pem`` and ``.p12`` (keys mode 0600); return the paths."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        )
        written: list[Path] = []
        for client_id, cred in self.credentials.items():
            cert_pem = cred.certificate.public_bytes(serialization.Encoding.PEM)
            key_pem = cred.private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
            )
            p12 = pkcs12.serialize_key_and_certificates(
                client_id.encode("utf-8"), cred.private_key, cred.certificate, None, encryption
            )
            for suffix, data, mode in (
                (".crt.pem", cert_pem, 0o644),
                (".key.pem", key_pem, 0o600),
                (".p12", p12, 0o600),
            ):
                path = folder / f"{client_id}{suffix}"
                _write_private(path, data, mode)
                written.append(path)
        return written


def _write_private(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` created with ``mode`` (never briefly world-readable)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
