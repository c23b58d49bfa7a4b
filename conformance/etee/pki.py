"""A test PKI made in memory: a root CA and, per holder, an authentication and an encryption certificate.

``TestPki.generate()`` makes a root CA (RSA, SHA-256). ``TestPki.issue_holder(type, value, name)``
makes a ``Holder``: an **authentication** certificate issued by the root and an **encryption**
certificate issued by the authentication certificate, both with the same subject, as eHealth issues
them (the ETK then carries the encryption certificate signed with the authentication key). Options
make the negative cases: ``expired=True`` (both certificates ended yesterday), ``key_size=1024`` or
``encryption_key_size=1024`` (weak keys), explicit ``not_before``/``not_after``.
``TestPki.issue_signature_credential`` makes an eID-like signature certificate (``serialNumber`` =
SSIN) for senders that sign the inner layer with another certificate than their authentication one.

Subject shape (assumed, modelled on eHealth certificates): ``C=BE, O=Federal Government,
OU=eHealth-platform Belgium, OU=<display name>, OU=<TYPE>=<value>, CN=<TYPE>=<value>[, <APPLICATION
ID>], serialNumber=<value>``. ``holder_identity(certificate)`` reads the holder back: the first
``OU`` (then ``CN``) of the form ``<TYPE>=<value>`` with a known type, else an 11-digit
``serialNumber`` read as an SSIN (the eID convention).

Credentials export to PEM, DER and PKCS#12 (one key per ``.p12``; an eHealth keystore holding both
keys is two files here). Nothing is written to disk unless asked.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from conformance.belgium.identifiers import check_cbe, check_nihdi, check_ssin
from conformance.errors import ConfigurationError

__all__ = [
    "IDENTIFIER_TYPES",
    "Credential",
    "Credentials",
    "Holder",
    "HolderId",
    "TestPki",
    "application_id",
    "chain_problem",
    "check_holder_id",
    "describe_certificate",
    "holder_identity",
    "key_size",
    "valid_at",
    "write_private",
]

IDENTIFIER_TYPES: Mapping[str, tuple[int, Callable[[str], str | None] | None]] = MappingProxyType(
    {
        "SSIN": (11, check_ssin),
        "CBE": (10, check_cbe),
        "EHP": (10, None),
        "NIHII": (8, check_nihdi),
        "NIHII11": (11, check_nihdi),
        "NIHII-PHARMACY": (8, None),
        "NIHII-HOSPITAL": (8, None),
        "NIHII-LABO": (8, None),
    }
)
"""ETK depot identifier types: digits expected and the check-digit rule (None: digits only).

Any other ``NIHII-<KIND>`` type is accepted as 8 digits (the depot knows more institution kinds)."""

_TYPE_VALUE = re.compile(r"^([A-Z][A-Z0-9_-]*)=(\d+)$")
_UTC = dt.UTC


@dataclass(frozen=True, order=True)
class HolderId:
    """An ETK holder: identifier type (``SSIN``, ``CBE``, ``NIHII11`` ...) and value (digits)."""

    type: str
    value: str

    def __str__(self) -> str:
        return f"{self.type}={self.value}"

    @classmethod
    def parse(cls, text: str) -> HolderId:
        """Read ``TYPE=value``; ConfigurationError if malformed or the value fails its check."""
        match = _TYPE_VALUE.match(text.strip())
        if match is None:
            raise ConfigurationError(f"holder {text!r} must look like TYPE=digits (e.g. CBE=0811122215)")
        holder = cls(match.group(1), match.group(2))
        if (problem := check_holder_id(holder.type, holder.value)) is not None:
            raise ConfigurationError(problem)
        return holder


def _known_type(kind: str) -> tuple[int, Callable[[str], str | None] | None] | None:
    if kind in IDENTIFIER_TYPES:
        return IDENTIFIER_TYPES[kind]
    if kind.startswith("NIHII-") and len(kind) > len("NIHII-"):
        return (8, None)
    return None


def check_holder_id(kind: str, value: str) -> str | None:
    """None if ``value`` is a valid identifier of type ``kind``, else a message saying what is wrong."""
    known = _known_type(kind)
    if known is None:
        return (
            f"unknown identifier type {kind!r}: expected one of {', '.join(IDENTIFIER_TYPES)} or NIHII-<KIND>"
        )
    digits, check = known
    if not (value.isascii() and value.isdigit() and len(value) == digits):
        return f"{kind} identifier {value!r} must be exactly {digits} digits"
    return check(value) if check is not None else None


def holder_identity(certificate: x509.Certificate) -> HolderId | None:
    """The holder a certificate names (``OU``/``CN`` ``TYPE=value``, else an eID ``serialNumber``)."""
    subject = certificate.subject
    for oid in (NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.COMMON_NAME):
        for attribute in subject.get_attributes_for_oid(oid):
            text = str(attribute.value).split(",", 1)[0].strip()
            match = _TYPE_VALUE.match(text)
            if match and _known_type(match.group(1)) is not None:
                return HolderId(match.group(1), match.group(2))
    for attribute in subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER):
        value = str(attribute.value)
        if check_ssin(value) is None:
            return HolderId("SSIN", value)
    return None


def application_id(certificate: x509.Certificate) -> str | None:
    """The application id of a certificate whose CN is ``TYPE=value, APPLICATION`` (else None)."""
    for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        _, comma, rest = str(attribute.value).partition(",")
        if comma and rest.strip():
            return rest.strip()
    return None


def key_size(certificate: x509.Certificate) -> int | None:
    """The RSA key size in bits of the certificate's public key (None for another key type)."""
    try:
        public_key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return None
    return public_key.key_size if isinstance(public_key, rsa.RSAPublicKey) else None


def valid_at(certificate: x509.Certificate, moment: dt.datetime) -> bool:
    """Whether ``moment`` lies within the certificate's validity period."""
    return certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc


def describe_certificate(certificate: x509.Certificate) -> str:
    """A short description for messages: the holder (or the subject) and the serial number."""
    holder = holder_identity(certificate)
    name = str(holder) if holder is not None else certificate.subject.rfc4514_string()
    return f"{name} (serial {certificate.serial_number:x})"


def chain_problem(
    certificate: x509.Certificate,
    anchors: Sequence[x509.Certificate],
    intermediates: Iterable[x509.Certificate] = (),
    *,
    at: dt.datetime | None = None,
    max_depth: int = 8,
) -> str | None:
    """None if ``certificate`` chains to one of ``anchors`` (each link's signature checked), else why not.

    With ``at``, every issuer on the path must be valid at that moment too.
    """
    anchor_ders = {a.public_bytes(serialization.Encoding.DER) for a in anchors}
    pool = [*anchors, *intermediates]
    current = certificate
    for _ in range(max_depth):
        current_der = current.public_bytes(serialization.Encoding.DER)
        if current_der in anchor_ders:
            return None
        issuer = _issuer_of(current, current_der, pool)
        if issuer is None:
            return f"certificate {describe_certificate(current)} is not issued by a trusted CA"
        if at is not None and not valid_at(issuer, at):
            return f"issuer {issuer.subject.rfc4514_string()} was not valid at {at.isoformat()}"
        if issuer.public_bytes(serialization.Encoding.DER) in anchor_ders:
            return None
        current = issuer
    return f"certificate {describe_certificate(certificate)}: chain longer than {max_depth} certificates"


def _issuer_of(
    certificate: x509.Certificate, der: bytes, pool: Iterable[x509.Certificate]
) -> x509.Certificate | None:
    for candidate in pool:
        if candidate.subject != certificate.issuer:
            continue
        if candidate.public_bytes(serialization.Encoding.DER) == der:
            continue
        try:
            certificate.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        return candidate
    return None


# --- credentials -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """A certificate, its RSA private key and the CA certificates above it (nearest first)."""

    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def key_size(self) -> int:
        """The private key's size in bits."""
        return self.private_key.key_size

    def certificate_der(self) -> bytes:
        """The certificate, DER."""
        return self.certificate.public_bytes(serialization.Encoding.DER)

    def certificate_pem(self, *, with_chain: bool = False) -> bytes:
        """The certificate (and its chain when asked), PEM."""
        certs = [self.certificate, *(self.chain if with_chain else ())]
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    def key_pem(self, password: bytes | None = None) -> bytes:
        """The private key, PKCS#8 PEM (encrypted when ``password`` is given)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, _encryption(password)
        )

    def to_pkcs12(self, password: bytes | None, *, name: str = "credential") -> bytes:
        """The key, certificate and chain as a PKCS#12 (``.p12``) file, protected by ``password``."""
        return pkcs12.serialize_key_and_certificates(
            name.encode("utf-8"),
            self.private_key,
            self.certificate,
            list(self.chain) or None,
            _encryption(password),
        )

    @classmethod
    def from_pkcs12(cls, data: bytes, password: bytes | None, *, source: str = "the .p12 file") -> Credential:
        """Load a ``.p12`` holding an RSA key and its certificate; ConfigurationError if it cannot be used."""
        try:
            loaded = pkcs12.load_pkcs12(data, password)
        except (ValueError, TypeError) as error:
            raise ConfigurationError(f"cannot open {source}: wrong password or not a PKCS#12 file") from error
        if loaded.key is None or loaded.cert is None:
            raise ConfigurationError(f"{source} holds no private key with its certificate")
        if not isinstance(loaded.key, rsa.RSAPrivateKey):
            raise ConfigurationError(f"{source}: the private key is not an RSA key")
        certificate = loaded.cert.certificate
        public = certificate.public_key()
        if (
            not isinstance(public, rsa.RSAPublicKey)
            or public.public_numbers() != loaded.key.public_key().public_numbers()
        ):
            raise ConfigurationError(f"{source}: the certificate does not match the private key")
        return cls(certificate, loaded.key, tuple(c.certificate for c in loaded.additional_certs))


@dataclass(frozen=True)
class Credentials:
    """A sender's credentials: the authentication one (outer layer) and the signature one (inner layer).

    ``signature`` None means the authentication credential signs both layers (eHealth certificates).
    """

    authentication: Credential
    signature: Credential | None = None

    @property
    def signer(self) -> Credential:
        """The credential that signs the inner layer."""
        return self.signature or self.authentication


@dataclass(frozen=True)
class Holder:
    """An ETK holder with its keys: identity, display name, application id and both credentials."""

    id: HolderId
    name: str
    application_id: str | None
    authentication: Credential
    encryption: Credential

    def credentials(self, signature: Credential | None = None) -> Credentials:
        """The holder as a sender (authentication key on both layers unless ``signature`` is given)."""
        return Credentials(self.authentication, signature)

    @property
    def label(self) -> str:
        """``TYPE=value`` with ``/APPLICATION`` when the holder has an application id (file names, logs)."""
        return str(self.id) + (f"/{self.application_id}" if self.application_id else "")


# --- the PKI -----------------------------------------------------------------------------------------


class TestPki:
    """A root CA in memory that issues holders' certificates (see the module docstring)."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, root: Credential) -> None:
        self.root = root

    @classmethod
    def generate(
        cls,
        name: str = "Vaccicard Conformance Test Root CA",
        *,
        key_size: int = 2048,
        valid_days: int = 3650,
        now: dt.datetime | None = None,
    ) -> TestPki:
        """A fresh self-signed root CA (RSA ``key_size``, SHA-256), valid from yesterday."""
        moment = now or dt.datetime.now(_UTC)
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "BE"),
                x509.NameAttribute(
                    NameOID.ORGANIZATION_NAME, "vaccicard-conformance (test PKI, not trusted)"
                ),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        certificate = (
            _builder(
                subject,
                subject,
                key.public_key(),
                moment - dt.timedelta(days=1),
                moment + dt.timedelta(days=valid_days),
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(Credential(certificate, key))

    @property
    def root_certificate(self) -> x509.Certificate:
        """The root CA certificate (the trust anchor)."""
        return self.root.certificate

    @property
    def trust_anchors(self) -> tuple[x509.Certificate, ...]:
        """The certificates a relying party trusts: the root CA."""
        return (self.root.certificate,)

    def issue_holder(
        self,
        identifier_type: str,
        identifier_value: str,
        name: str,
        *,
        application_id: str | None = None,
        key_size: int = 2048,
        encryption_key_size: int | None = None,
        expired: bool = False,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        now: dt.datetime | None = None,
    ) -> Holder:
        """A holder with an authentication certificate (from the root) and an encryption certificate.

        ``expired``: both certificates ended yesterday. ``not_before``/``not_after`` override the
        validity (default: from yesterday for two years). ConfigurationError for a bad identifier.
        """
        if (problem := check_holder_id(identifier_type, identifier_value)) is not None:
            raise ConfigurationError(problem)
        moment = now or dt.datetime.now(_UTC)
        start, end = _validity(moment, expired, not_before, not_after)
        holder = HolderId(identifier_type, identifier_value)
        subject = _holder_name(holder, name, application_id)
        auth_key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        auth_cert = (
            _builder(subject, self.root.certificate.subject, auth_key.public_key(), start, end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True, key_encipherment=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(auth_key.public_key()), critical=False)
            .add_extension(_authority_key_id(self.root.certificate), critical=False)
            .sign(self.root.private_key, hashes.SHA256())
        )
        enc_key = rsa.generate_private_key(public_exponent=65537, key_size=encryption_key_size or key_size)
        enc_cert = (
            _builder(subject, subject, enc_key.public_key(), start, end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(key_encipherment=True, data_encipherment=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(enc_key.public_key()), critical=False)
            .add_extension(_authority_key_id(auth_cert), critical=False)
            .sign(auth_key, hashes.SHA256())
        )
        authentication = Credential(auth_cert, auth_key, (self.root.certificate,))
        encryption = Credential(enc_cert, enc_key, (auth_cert, self.root.certificate))
        return Holder(holder, name, application_id, authentication, encryption)

    def issue_signature_credential(
        self,
        ssin: str,
        given_name: str,
        family_name: str,
        *,
        key_size: int = 2048,
        expired: bool = False,
        now: dt.datetime | None = None,
    ) -> Credential:
        """An eID-like signature certificate (``serialNumber`` = SSIN, non-repudiation) from the root."""
        if (problem := check_ssin(ssin)) is not None:
            raise ConfigurationError(problem)
        moment = now or dt.datetime.now(_UTC)
        start, end = _validity(moment, expired, None, None)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "BE"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"{given_name} {family_name} (Signature)"),
                x509.NameAttribute(NameOID.SURNAME, family_name),
                x509.NameAttribute(NameOID.GIVEN_NAME, given_name),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, ssin),
            ]
        )
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
        certificate = (
            _builder(subject, self.root.certificate.subject, key.public_key(), start, end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(content_commitment=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(_authority_key_id(self.root.certificate), critical=False)
            .sign(self.root.private_key, hashes.SHA256())
        )
        return Credential(certificate, key, (self.root.certificate,))


def _holder_name(holder: HolderId, name: str, application: str | None) -> x509.Name:
    common_name = str(holder) + (f", {application}" if application else "")
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "BE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Federal Government"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "eHealth-platform Belgium"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, str(holder)),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, holder.value),
        ]
    )


def _validity(
    moment: dt.datetime, expired: bool, not_before: dt.datetime | None, not_after: dt.datetime | None
) -> tuple[dt.datetime, dt.datetime]:
    if expired:
        start, end = moment - dt.timedelta(days=730), moment - dt.timedelta(days=1)
    else:
        start, end = moment - dt.timedelta(days=1), moment + dt.timedelta(days=730)
    return not_before or start, not_after or end


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: rsa.RSAPublicKey, start: dt.datetime, end: dt.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def _key_usage(**flags: bool) -> x509.KeyUsage:
    names = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    return x509.KeyUsage(**{n: flags.get(n, False) for n in names})


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _encryption(password: bytes | None) -> serialization.KeySerializationEncryption:
    return serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()


def write_private(path: str | os.PathLike[str], data: bytes, mode: int = 0o600) -> Path:
    """Write ``data`` to ``path`` created with ``mode`` (a key file is never briefly world-readable)."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
