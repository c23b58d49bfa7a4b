"""ETKs (eHealth encryption tokens) and their JWKS form: build, read and check.

An ETK is a CMS SignedData whose encapsulated content is the holder's DER X.509 encryption
certificate, signed with the holder's authentication certificate (``build_etk``). ``parse_etk``
reads one (DER, PEM or base64 text) and verifies its CMS signature; ``Etk.problems`` lists every
failed check and ``Etk.verify`` raises ``EtkError`` naming them:

* the encryption certificate is issued by the authentication certificate (signature checked) and
  names the same holder;
* both RSA keys have at least ``min_key_bits`` (2048) bits; the encryption certificate allows key
  encipherment (when it has a key-usage extension);
* both certificates are valid ``now``;
* with trust anchors, the authentication certificate chains to one of them.

JWKS (the REST depot form, ``.../etee/v1/pubKeys/cacerts/jwks``): ``certificate_jwk`` makes one key
(``kty`` RSA, ``n``, ``e``, ``use`` enc|sig, ``kid`` = ``x5t#S256`` = base64url SHA-256 of the DER
certificate (an assumption), ``x5c`` = the certificate and its chain, standard base64 DER, leaf first);
``parse_jwks`` reads a JWKS back, checking that ``n``/``e`` match the ``x5c`` leaf certificate.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conformance.etee.cms import sign, verify_signed
from conformance.etee.errors import CmsError, EtkError
from conformance.etee.pki import (
    Credential,
    Holder,
    HolderId,
    application_id,
    chain_problem,
    holder_identity,
    key_size,
    valid_at,
)

__all__ = [
    "MIN_KEY_BITS",
    "Etk",
    "JwkKey",
    "KeyUse",
    "build_etk",
    "build_jwks",
    "certificate_jwk",
    "parse_etk",
    "parse_jwks",
]

MIN_KEY_BITS = 2048
KeyUse = Literal["enc", "sig"]

_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)


@dataclass(frozen=True)
class Etk:
    """A read ETK: its DER, the encryption and authentication certificates and the CMS signing time."""

    der: bytes
    encryption_certificate: x509.Certificate
    authentication_certificate: x509.Certificate
    certificates: tuple[x509.Certificate, ...]
    signing_time: dt.datetime | None

    @property
    def holder(self) -> HolderId | None:
        """The holder the encryption certificate names (else the authentication certificate)."""
        return holder_identity(self.encryption_certificate) or holder_identity(
            self.authentication_certificate
        )

    @property
    def application_id(self) -> str | None:
        """The application id the certificates name, if any."""
        return application_id(self.encryption_certificate) or application_id(self.authentication_certificate)

    @property
    def key_size(self) -> int | None:
        """The encryption key's size in bits (None if it is not RSA)."""
        return key_size(self.encryption_certificate)

    def problems(
        self,
        *,
        trust: Sequence[x509.Certificate] = (),
        now: dt.datetime | None = None,
        min_key_bits: int = MIN_KEY_BITS,
    ) -> list[str]:
        """Every check the ETK fails (empty when it is fine); see the module docstring."""
        moment = now or dt.datetime.now(dt.UTC)
        enc, auth = self.encryption_certificate, self.authentication_certificate
        found: list[str] = []
        try:
            enc.verify_directly_issued_by(auth)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            found.append(
                "the encryption certificate is not issued by the authentication certificate that signed the ETK"
            )
        enc_holder, auth_holder = holder_identity(enc), holder_identity(auth)
        if enc_holder is None or enc_holder != auth_holder:
            found.append(
                f"the encryption certificate names holder {enc_holder or 'none'} but the authentication "
                f"certificate names {auth_holder or 'none'}"
            )
        for label, certificate in (("encryption", enc), ("authentication", auth)):
            bits = key_size(certificate)
            if bits is None:
                found.append(f"the {label} key is not an RSA key")
            elif bits < min_key_bits:
                found.append(f"the {label} key has {bits} bits: at least {min_key_bits} are required")
            if not valid_at(certificate, moment):
                found.append(
                    f"the {label} certificate is not valid now (valid {_day(certificate.not_valid_before_utc)} "
                    f"to {_day(certificate.not_valid_after_utc)})"
                )
        if not _allows_key_encipherment(enc):
            found.append("the encryption certificate's key usage does not allow key encipherment")
        if trust:
            problem = chain_problem(auth, trust, self.certificates, at=moment)
            if problem is not None:
                found.append(f"the authentication certificate is not trusted: {problem}")
        return found

    def verify(
        self,
        *,
        trust: Sequence[x509.Certificate] = (),
        now: dt.datetime | None = None,
        min_key_bits: int = MIN_KEY_BITS,
    ) -> Etk:
        """Return self if every check passes, else raise EtkError listing the failed ones."""
        found = self.problems(trust=trust, now=now, min_key_bits=min_key_bits)
        if found:
            raise EtkError(
                f"ETK of {self.holder or 'an unknown holder'} fails its checks: " + "; ".join(found)
            )
        return self

    def jwk(self, use: KeyUse = "enc") -> dict[str, Any]:
        """The encryption (``enc``) or authentication (``sig``) key as a JWK with its ``x5c`` chain."""
        enc, auth = self.encryption_certificate, self.authentication_certificate
        others = [c for c in self.certificates if c not in (enc, auth)]
        if use == "enc":
            return certificate_jwk(enc, use="enc", chain=[auth, *others])
        return certificate_jwk(auth, use="sig", chain=others)


def _day(moment: dt.datetime) -> str:
    return moment.date().isoformat()


def _allows_key_encipherment(certificate: x509.Certificate) -> bool:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.key_encipherment


def build_etk(
    holder: Holder | None = None,
    *,
    authentication: Credential | None = None,
    encryption_certificate: x509.Certificate | None = None,
    now: dt.datetime | None = None,
) -> bytes:
    """An ETK (DER ContentInfo/SignedData): a holder's encryption certificate signed with its auth key.

    Give a ``Holder``, or ``authentication`` and ``encryption_certificate`` separately.
    """
    if holder is not None:
        authentication = authentication or holder.authentication
        encryption_certificate = encryption_certificate or holder.encryption.certificate
    if authentication is None or encryption_certificate is None:
        raise ValueError(
            "build_etk needs a holder, or an authentication credential and an encryption certificate"
        )
    content = encryption_certificate.public_bytes(serialization.Encoding.DER)
    return sign(content, authentication, scheme="pkcs1v15", signing_time=now)


def parse_etk(data: bytes | str) -> Etk:
    """Read an ETK (DER, PEM or base64 text) and check its CMS signature; EtkError if it cannot."""
    der = _der(data)
    try:
        signed = verify_signed(der, "the ETK")
    except CmsError as error:
        raise EtkError(error.message) from error
    try:
        encryption = x509.load_der_x509_certificate(signed.content)
    except ValueError as error:
        raise EtkError("the ETK's content is not a DER X.509 certificate") from error
    return Etk(der, encryption, signed.signer, signed.certificates, signed.signing_time)


def _der(data: bytes | str) -> bytes:
    raw = data.encode("ascii", "replace") if isinstance(data, str) else bytes(data)
    stripped = raw.strip()
    match = _PEM.search(stripped)
    text = match.group(2) if match else stripped
    if stripped[:1] == b"\x30" and match is None:
        return raw
    try:
        return base64.b64decode(b"".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise EtkError("the ETK is neither DER nor PEM nor base64 text") from error


# --- JWKS -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JwkKey:
    """One key of a JWKS: its id, use, RSA public key and ``x5c`` certificates (leaf first)."""

    kid: str | None
    use: str | None
    public_key: rsa.RSAPublicKey
    certificates: tuple[x509.Certificate, ...]

    @property
    def certificate(self) -> x509.Certificate | None:
        """The leaf certificate of ``x5c`` (None when the JWK has no ``x5c``)."""
        return self.certificates[0] if self.certificates else None


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _uint_b64url(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def certificate_jwk(
    certificate: x509.Certificate, *, use: KeyUse, chain: Iterable[x509.Certificate] = ()
) -> dict[str, Any]:
    """A JWK for the certificate's RSA key with ``use``, ``kid``/``x5t#S256`` and ``x5c`` (leaf first)."""
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise EtkError(f"certificate {certificate.subject.rfc4514_string()} has no RSA key")
    numbers = public_key.public_numbers()
    der = certificate.public_bytes(serialization.Encoding.DER)
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")
    x5c = [
        base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii")
        for c in (certificate, *chain)
    ]
    return {
        "kty": "RSA",
        "use": use,
        "kid": thumbprint,
        "n": _b64url_uint(numbers.n),
        "e": _b64url_uint(numbers.e),
        "x5t#S256": thumbprint,
        "x5c": x5c,
    }


def build_jwks(keys: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A JWK Set ``{"keys": [...]}``."""
    return {"keys": [dict(k) for k in keys]}


def parse_jwks(data: bytes | str | Mapping[str, Any]) -> list[JwkKey]:
    """Read a JWKS (RSA keys only); EtkError if malformed or a key disagrees with its ``x5c`` certificate."""
    try:
        document = data if isinstance(data, Mapping) else json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise EtkError("the JWKS is not JSON") from error
    keys = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(keys, list):
        raise EtkError('the JWKS has no "keys" array')
    return [_parse_jwk(key, index) for index, key in enumerate(keys)]


def _parse_jwk(key: Any, index: int) -> JwkKey:
    where = f"JWKS key {index}"
    if not isinstance(key, Mapping) or key.get("kty") != "RSA":
        raise EtkError(f'{where} is not an RSA key (kty must be "RSA")')
    try:
        public_key = rsa.RSAPublicNumbers(_uint_b64url(key["e"]), _uint_b64url(key["n"])).public_key()
        certificates = tuple(
            x509.load_der_x509_certificate(base64.b64decode(text, validate=True))
            for text in key.get("x5c", [])
        )
    except (KeyError, TypeError, ValueError, binascii.Error) as error:
        raise EtkError(f"{where} is malformed (n, e or x5c): {error}") from error
    if certificates:
        leaf_key = certificates[0].public_key()
        if (
            not isinstance(leaf_key, rsa.RSAPublicKey)
            or leaf_key.public_numbers() != public_key.public_numbers()
        ):
            raise EtkError(f"{where}: n/e do not match the public key of its x5c certificate")
    use = key.get("use")
    if use is not None and use not in ("enc", "sig"):
        raise EtkError(f'{where}: use must be "enc" or "sig", found {use!r}')
    return JwkKey(key.get("kid"), use, public_key, certificates)
