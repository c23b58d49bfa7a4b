"""The CMS building blocks of ETEE: SignedData and EnvelopedData, built and checked with asn1crypto.

``sign`` makes a DER ``ContentInfo`` holding a SignedData over ``content`` (encapsulated, content type
id-data, SHA-256, RSASSA-PSS with SHA-256/MGF1-SHA-256/32-byte salt or RSA PKCS#1 v1.5, signed
attributes content-type, signing-time and message-digest, the signer certificate and its chain
without the root; the signer is named by issuer and serial number). ``verify_signed`` checks one:
exactly one SignerInfo, its certificate present in the SignedData (by issuer and serial or by subject
key identifier), SHA-256, the content-type and message-digest attributes, and the signature over the
DER SET of the signed attributes as they were received (or over the content when there are none).
``envelope`` makes an EnvelopedData (AES-128-CBC, a random key sent to each recipient with RSA PKCS#1
v1.5, recipients named by issuer and serial number); ``decrypt_enveloped`` reverses it for one
recipient (issuer-and-serial or subject-key-identifier match).

Each failure raises ``CmsError`` whose ``kind`` says which step failed (``not-signed-data``,
``structure``, ``signature``, ``algorithm``, ``recipient``, ``decryption``); nothing else escapes for
malformed input. No openssl process is involved.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, get_args

from asn1crypto import algos, cms, core
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as symmetric_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from conformance.etee.errors import CmsError
from conformance.etee.pki import Credential

__all__ = [
    "PARSE_ERRORS",
    "SIGNATURE_SCHEMES",
    "SignatureScheme",
    "SignedContent",
    "decrypt_enveloped",
    "envelope",
    "load_content_info",
    "sign",
    "verify_signed",
]

SignatureScheme = Literal["pss", "pkcs1v15"]
SIGNATURE_SCHEMES: tuple[str, ...] = get_args(SignatureScheme)

PARSE_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    RecursionError,
)
"""What asn1crypto and cryptography raise on malformed input (turned into ``CmsError``)."""

_PSS_SALT = 32
_AES_128_KEY = 16
_BLOCK = 16
_PKCS1V15_OIDS = frozenset({"rsassa_pkcs1v15", "sha256_rsa"})


@dataclass(frozen=True)
class SignedContent:
    """A verified SignedData: the content, who signed it, how and when (signing-time, if present)."""

    content: bytes
    content_type: str
    signer: x509.Certificate
    certificates: tuple[x509.Certificate, ...]
    scheme: SignatureScheme
    signing_time: dt.datetime | None


@contextmanager
def _structure(what: str) -> Iterator[None]:
    """Turn a parse error of asn1crypto/cryptography inside the block into ``CmsError('structure')``."""
    try:
        yield
    except CmsError:
        raise
    except PARSE_ERRORS as error:
        raise CmsError("structure", f"{what} is malformed ({_reason(error)})") from error


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text[:160]


# --- SignedData -------------------------------------------------------------------------------------


def sign(
    content: bytes,
    signer: Credential,
    *,
    scheme: SignatureScheme = "pss",
    signing_time: dt.datetime | None = None,
    extra_certificates: Sequence[x509.Certificate] = (),
) -> bytes:
    """A DER ContentInfo with a SignedData over ``content`` (encapsulated) by ``signer``.

    ``signing_time`` None means now; it is written to the second (UTCTime).
    """
    if scheme not in SIGNATURE_SCHEMES:
        raise ValueError(f"signature scheme must be one of {SIGNATURE_SCHEMES}, not {scheme!r}")
    moment = (signing_time or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)
    attributes = cms.CMSAttributes(
        [
            cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
            cms.CMSAttribute({"type": "signing_time", "values": [cms.Time({"utc_time": moment})]}),
            cms.CMSAttribute({"type": "message_digest", "values": [hashlib.sha256(content).digest()]}),
        ]
    )
    to_sign = attributes.dump()
    if scheme == "pss":
        signature = signer.private_key.sign(to_sign, _pss(_PSS_SALT), hashes.SHA256())
        algorithm = algos.SignedDigestAlgorithm(
            {
                "algorithm": "rsassa_pss",
                "parameters": algos.RSASSAPSSParams(
                    {
                        "hash_algorithm": {"algorithm": "sha256"},
                        "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}},
                        "salt_length": _PSS_SALT,
                        "trailer_field": "trailer_field_bc",
                    }
                ),
            }
        )
    else:
        signature = signer.private_key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
        algorithm = algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15", "parameters": core.Null()})
    signer_cert = _asn1_cert(signer.certificate)
    signer_info = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                {
                    "issuer_and_serial_number": cms.IssuerAndSerialNumber(
                        {"issuer": signer_cert.issuer, "serial_number": signer_cert.serial_number}
                    )
                }
            ),
            "digest_algorithm": {"algorithm": "sha256"},
            "signed_attrs": attributes,
            "signature_algorithm": algorithm,
            "signature": signature,
        }
    )
    roots = [c for c in signer.chain if c.subject == c.issuer]
    included = [signer.certificate, *(c for c in signer.chain if c not in roots), *extra_certificates]
    signed_data = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [{"algorithm": "sha256"}],
            "encap_content_info": {"content_type": "data", "content": content},
            "certificates": [cms.CertificateChoices({"certificate": _asn1_cert(c)}) for c in included],
            "signer_infos": [signer_info],
        }
    )
    return cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()


def load_content_info(data: bytes, expected: str, what: str) -> cms.ContentInfo:
    """Parse a DER ContentInfo of type ``expected`` (``signed_data``, ``enveloped_data``) or raise CmsError."""
    kind = "not-signed-data" if expected == "signed_data" else "structure"
    label = "a CMS SignedData" if expected == "signed_data" else "a CMS EnvelopedData"
    try:
        info = cms.ContentInfo.load(bytes(data), strict=True)
        content_type = info["content_type"].native
    except PARSE_ERRORS as error:
        raise CmsError(kind, f"{what} is not {label} (not a DER ContentInfo: {_reason(error)})") from error
    if content_type != expected:
        raise CmsError(kind, f"{what} is not {label} (its content type is {content_type})")
    return info


def verify_signed(data: bytes, what: str = "the message") -> SignedContent:
    """Check a DER ContentInfo/SignedData (see the module docstring) and return what it signs."""
    info = load_content_info(data, "signed_data", what)
    with _structure(f"{what} (SignedData)"):
        signed_data = info["content"]
        # asn1crypto reads a version-1 SignedData's content as PKCS#7; read it again as CMS (an OCTET STRING)
        encap = cms.EncapsulatedContentInfo.load(signed_data["encap_content_info"].dump())
        content_type = encap["content_type"].native
        raw_content = encap["content"]
        if raw_content.native is None:
            raise CmsError(
                "structure", f"{what} has no encapsulated content (detached signatures are not used)"
            )
        if not isinstance(raw_content, core.ParsableOctetString):
            raise CmsError("structure", f"{what}: the encapsulated content is not an OCTET STRING")
        content = raw_content.__bytes__()
        signer_infos = list(signed_data["signer_infos"])
        if len(signer_infos) != 1:
            raise CmsError("structure", f"{what} must have exactly one signer, found {len(signer_infos)}")
        signer_info = signer_infos[0]
        certificates = _certificates(signed_data, what)
        signer = _find_signer(signer_info["sid"], certificates, what)
        digest_name = signer_info["digest_algorithm"]["algorithm"].native
        if digest_name != "sha256":
            raise CmsError("algorithm", f"{what} uses digest {digest_name}: SHA-256 is required")
        scheme, signature_padding = _signature_padding(signer_info["signature_algorithm"], what)
        signed_attrs = signer_info["signed_attrs"]
        signing_time = None
        if signed_attrs.native is None or len(signed_attrs) == 0:
            to_verify = content
        else:
            attributes = {attr["type"].native: attr["values"] for attr in signed_attrs}
            digests = attributes.get("message_digest")
            if digests is None or not hmac.compare_digest(
                bytes(digests[0].native), hashlib.sha256(content).digest()
            ):
                raise CmsError(
                    "signature", f"{what}: the message-digest attribute does not match the content"
                )
            types = attributes.get("content_type")
            if types is None or types[0].native != content_type:
                raise CmsError("signature", f"{what}: the content-type attribute does not match the content")
            times = attributes.get("signing_time")
            if times is not None:
                signing_time = _aware(times[0].native)
            to_verify = _der_set(signed_attrs.contents)
        try:
            public_key = signer.public_key()
        except UnsupportedAlgorithm as error:
            raise CmsError("algorithm", f"{what}: the signer's key type is not supported") from error
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise CmsError("algorithm", f"{what}: the signer's key is not an RSA key")
        signature = signer_info["signature"].native
    try:
        public_key.verify(signature, to_verify, signature_padding, hashes.SHA256())
    except (InvalidSignature, ValueError) as error:
        raise CmsError(
            "signature", f"{what}: the signature by {signer.subject.rfc4514_string()} does not verify"
        ) from error
    return SignedContent(content, content_type, signer, tuple(certificates.values()), scheme, signing_time)


def _certificates(signed_data: cms.SignedData, what: str) -> dict[bytes, x509.Certificate]:
    """The certificates of a SignedData by DER (other certificate choices are ignored)."""
    found: dict[bytes, x509.Certificate] = {}
    for choice in signed_data["certificates"] or []:
        if choice.name != "certificate":
            continue
        der = choice.chosen.dump()
        try:
            found[der] = x509.load_der_x509_certificate(der)
        except ValueError as error:
            raise CmsError("structure", f"{what} carries a certificate that cannot be read") from error
    return found


def _find_signer(
    sid: cms.SignerIdentifier, certificates: dict[bytes, x509.Certificate], what: str
) -> x509.Certificate:
    for der, certificate in certificates.items():
        if _identifies(sid, ax509.Certificate.load(der)):
            return certificate
    raise CmsError(
        "signature", f"{what}: the signer's certificate is not included, so the signature cannot be checked"
    )


def _identifies(identifier: Any, certificate: ax509.Certificate) -> bool:
    """Whether a SignerIdentifier/RecipientIdentifier names ``certificate``."""
    if identifier.name == "issuer_and_serial_number":
        chosen = identifier.chosen
        return bool(
            chosen["serial_number"].native == certificate.serial_number
            and chosen["issuer"] == certificate.issuer
        )
    if identifier.name == "subject_key_identifier":
        return (
            certificate.key_identifier is not None and identifier.chosen.native == certificate.key_identifier
        )
    return False


def _signature_padding(
    algorithm: algos.SignedDigestAlgorithm, what: str
) -> tuple[SignatureScheme, padding.AsymmetricPadding]:
    name = algorithm["algorithm"].native
    if name in _PKCS1V15_OIDS:
        return "pkcs1v15", padding.PKCS1v15()
    if name == "rsassa_pss":
        params = algorithm["parameters"]
        hash_name = params["hash_algorithm"]["algorithm"].native
        mgf = params["mask_gen_algorithm"]
        mgf_hash = mgf["parameters"]["algorithm"].native if mgf["parameters"].native is not None else "sha1"
        if hash_name != "sha256" or mgf["algorithm"].native != "mgf1" or mgf_hash != "sha256":
            raise CmsError(
                "algorithm",
                f"{what} uses RSASSA-PSS with {hash_name}/MGF1-{mgf_hash}: SHA-256 with MGF1-SHA-256 is required",
            )
        return "pss", _pss(int(params["salt_length"].native))
    raise CmsError("algorithm", f"{what} is signed with {name}: RSASSA-PSS or RSA PKCS#1 v1.5 is required")


def _pss(salt_length: int) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt_length)


def _der_set(contents: bytes) -> bytes:
    """The DER of a SET with these contents (signed attributes are signed as a SET, not as [0])."""
    return b"\x31" + _der_length(len(contents)) + contents


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(octets)]) + octets


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _asn1_cert(certificate: x509.Certificate) -> ax509.Certificate:
    return ax509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))


# --- EnvelopedData ----------------------------------------------------------------------------------


def envelope(content: bytes, recipients: Sequence[x509.Certificate]) -> bytes:
    """A DER ContentInfo/EnvelopedData of ``content`` for ``recipients`` (AES-128-CBC, RSA PKCS#1 v1.5)."""
    if not recipients:
        raise ValueError("an EnvelopedData needs at least one recipient")
    key = os.urandom(_AES_128_KEY)
    iv = os.urandom(_BLOCK)
    padder = symmetric_padding.PKCS7(128).padder()
    padded = padder.update(content) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    infos = []
    for certificate in recipients:
        public_key = certificate.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise ValueError(f"recipient {certificate.subject.rfc4514_string()} has no RSA key")
        asn1 = _asn1_cert(certificate)
        infos.append(
            cms.RecipientInfo(
                {
                    "ktri": cms.KeyTransRecipientInfo(
                        {
                            "version": "v0",
                            "rid": cms.RecipientIdentifier(
                                {
                                    "issuer_and_serial_number": cms.IssuerAndSerialNumber(
                                        {"issuer": asn1.issuer, "serial_number": asn1.serial_number}
                                    )
                                }
                            ),
                            "key_encryption_algorithm": {
                                "algorithm": "rsaes_pkcs1v15",
                                "parameters": core.Null(),
                            },
                            "encrypted_key": public_key.encrypt(key, padding.PKCS1v15()),
                        }
                    )
                }
            )
        )
    enveloped = cms.EnvelopedData(
        {
            "version": "v0",
            "recipient_infos": infos,
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": {"algorithm": "aes128_cbc", "parameters": iv},
                "encrypted_content": ciphertext,
            },
        }
    )
    return cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump()


def decrypt_enveloped(data: bytes, recipient: Credential, what: str = "the encrypted layer") -> bytes:
    """The content of a DER ContentInfo/EnvelopedData, decrypted with ``recipient``'s key."""
    info = load_content_info(data, "enveloped_data", what)
    own = _asn1_cert(recipient.certificate)
    with _structure(what):
        enveloped = info["content"]
        matching = [
            ri.chosen
            for ri in enveloped["recipient_infos"]
            if ri.name == "ktri" and _identifies(ri.chosen["rid"], own)
        ]
        if not matching:
            count = len(enveloped["recipient_infos"])
            raise CmsError(
                "recipient",
                f"{what} is not for this recipient: none of its {count} recipient(s) names the certificate "
                f"{recipient.certificate.subject.rfc4514_string()} (serial {recipient.certificate.serial_number:x})",
            )
        ktri = matching[0]
        transport = ktri["key_encryption_algorithm"]["algorithm"].native
        if transport != "rsaes_pkcs1v15":
            raise CmsError("algorithm", f"{what} sends its key with {transport}: RSA PKCS#1 v1.5 is required")
        encrypted_key = ktri["encrypted_key"].native
        content_info = enveloped["encrypted_content_info"]
        cipher_name = content_info["content_encryption_algorithm"]["algorithm"].native
        if cipher_name != "aes128_cbc":
            raise CmsError("algorithm", f"{what} is encrypted with {cipher_name}: AES-128-CBC is required")
        iv = content_info["content_encryption_algorithm"]["parameters"].native
        ciphertext = content_info["encrypted_content"].native
        if ciphertext is None:
            raise CmsError("structure", f"{what} has no encrypted content")
        if not isinstance(iv, bytes) or len(iv) != _BLOCK:
            raise CmsError("structure", f"{what}: the AES-128-CBC initialisation vector must be 16 bytes")
    try:
        key = recipient.private_key.decrypt(encrypted_key, padding.PKCS1v15())
    except ValueError as error:
        raise CmsError(
            "decryption", f"{what}: the content key cannot be decrypted with this recipient's key"
        ) from error
    if len(key) != _AES_128_KEY:
        raise CmsError("decryption", f"{what}: the decrypted content key is not an AES-128 key (wrong key?)")
    if len(ciphertext) == 0 or len(ciphertext) % _BLOCK:
        raise CmsError(
            "decryption", f"{what}: the ciphertext is not a whole number of AES blocks (tampered?)"
        )
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = symmetric_padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as error:
        raise CmsError(
            "decryption", f"{what}: bad padding after decryption (tampered ciphertext or wrong key)"
        ) from error
