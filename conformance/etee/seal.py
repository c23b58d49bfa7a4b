"""Sealed messages for a known recipient (eHealth ETEE): ``seal`` and ``unseal``.

A sealed message is three CMS layers, as a DER ContentInfo:

1. inner SignedData over the payload, signed with the sender's signature credential (SHA-256,
   RSASSA-PSS by default or RSA PKCS#1 v1.5 as an eID signs; signing-time attribute);
2. EnvelopedData of the DER inner layer: AES-128-CBC, the content key sent to each recipient's
   encryption certificate (from their ETK) with RSA PKCS#1 v1.5;
3. outer SignedData over the DER EnvelopedData, signed with the sender's authentication credential.

Both SignedData layers encapsulate their content as id-data, as ``openssl cms -sign`` does, so the
layers can be checked one by one with ``openssl cms -verify`` / ``-decrypt``.

``unseal`` checks, in this order, and raises ``UnsealError`` with the ``UnsealProblem`` of the first
failure: a CMS SignedData at all (``etee-not-cms``), the outer signature, an EnvelopedData inside,
the recipient's own key size (``min_key_bits``, 2048), a RecipientInfo naming the recipient's
certificate, the algorithms (RSA PKCS#1 v1.5 key transport, AES-128-CBC; OAEP is refused), the
decryption (padding, key), a SignedData inside, the inner signature, **same signer**, the signing
time (present; within ``max_skew`` seconds of ``now``), both signer certificates valid at the signing
time and, with ``trust``, both chaining to a trust anchor.

**Same signer** (a decision, since eHealth and eID certificates differ): inner and outer signer are
the same when they are the same certificate (issuer and serial number), or when both name the same
holder (``pki.holder_identity``: ``OU=<TYPE>=<value>`` of an eHealth certificate, or the SSIN in the
``serialNumber`` of an eID signature certificate). Matching identities, not certificates, is what lets
an eID-signed inner layer travel inside an eHealth-authenticated outer one; pass ``trust`` so that
both certificates must also come from a trusted CA.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from conformance.etee.cms import (
    PARSE_ERRORS,
    SIGNATURE_SCHEMES,
    SignatureScheme,
    SignedContent,
    decrypt_enveloped,
    envelope,
    load_content_info,
    sign,
    verify_signed,
)
from conformance.etee.errors import CmsError, SealError, UnsealError, UnsealProblem
from conformance.etee.etk import MIN_KEY_BITS, Etk
from conformance.etee.pki import (
    Credential,
    Credentials,
    HolderId,
    chain_problem,
    describe_certificate,
    holder_identity,
    key_size,
    valid_at,
)

__all__ = ["DEFAULT_MAX_SKEW", "Unsealed", "same_signer", "seal", "unseal"]

DEFAULT_MAX_SKEW = 300
"""Seconds the inner signing time may differ from now (5 minutes)."""


@dataclass(frozen=True)
class Unsealed:
    """An unsealed message: the payload, who sealed it and when, and the checks it passed."""

    payload: bytes
    sender_certificate: x509.Certificate
    """The outer (authentication) signer's certificate."""
    signature_certificate: x509.Certificate
    """The inner signer's certificate (the same as ``sender_certificate`` for eHealth senders)."""
    signing_time: dt.datetime
    inner_scheme: SignatureScheme
    outer_scheme: SignatureScheme
    checks: tuple[str, ...]

    @property
    def sender(self) -> HolderId | None:
        """The sender's identity as its authentication certificate names it."""
        return holder_identity(self.sender_certificate) or holder_identity(self.signature_certificate)


def seal(
    payload: bytes,
    *,
    sender: Credentials,
    recipients: Sequence[Etk | x509.Certificate],
    signature_scheme: SignatureScheme = "pss",
    authentication_scheme: SignatureScheme = "pss",
    now: dt.datetime | None = None,
    min_key_bits: int = MIN_KEY_BITS,
) -> bytes:
    """Seal ``payload`` for ``recipients`` (ETKs or encryption certificates): DER ContentInfo.

    ``signature_scheme`` signs the inner layer, ``authentication_scheme`` the outer one. SealError if
    there is no recipient, a recipient key is not RSA or has fewer than ``min_key_bits`` bits, or a
    scheme is unknown. The signing time is ``now`` (default: the current time), to the second.
    """
    for scheme in (signature_scheme, authentication_scheme):
        if scheme not in SIGNATURE_SCHEMES:
            raise SealError(f"signature scheme must be one of {', '.join(SIGNATURE_SCHEMES)}, not {scheme!r}")
    if not recipients:
        raise SealError("a sealed message needs at least one recipient")
    certificates = [r.encryption_certificate if isinstance(r, Etk) else r for r in recipients]
    for certificate in certificates:
        bits = key_size(certificate)
        if bits is None:
            raise SealError(f"recipient {describe_certificate(certificate)} has no RSA encryption key")
        if bits < min_key_bits:
            raise SealError(
                f"recipient {describe_certificate(certificate)} has a {bits}-bit key: at least {min_key_bits} bits are required"
            )
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    inner = sign(payload, sender.signer, scheme=signature_scheme, signing_time=moment)
    enveloped = envelope(inner, certificates)
    return sign(enveloped, sender.authentication, scheme=authentication_scheme, signing_time=moment)


def same_signer(a: x509.Certificate, b: x509.Certificate) -> bool:
    """Whether two signer certificates are the same signer (see the module docstring)."""
    if a == b or (a.issuer == b.issuer and a.serial_number == b.serial_number):
        return True
    first, second = holder_identity(a), holder_identity(b)
    return first is not None and first == second


def unseal(
    message: bytes,
    *,
    recipient: Credential,
    trust: Sequence[x509.Certificate] = (),
    now: dt.datetime | None = None,
    max_skew: float = DEFAULT_MAX_SKEW,
    min_key_bits: int = MIN_KEY_BITS,
) -> Unsealed:
    """Open a sealed message with ``recipient``'s encryption credential and check it (module docstring).

    Raises only ``UnsealError``, whatever the input.
    """
    try:
        return _unseal(message, recipient, tuple(trust), now, max_skew, min_key_bits)
    except UnsealError:
        raise
    except CmsError as error:  # a layer not mapped explicitly below
        raise UnsealError(UnsealProblem.MALFORMED, error.message) from error
    except PARSE_ERRORS as error:
        raise UnsealError(
            UnsealProblem.MALFORMED, f"the message is malformed ({type(error).__name__})"
        ) from error


def _unseal(
    message: bytes,
    recipient: Credential,
    trust: tuple[x509.Certificate, ...],
    now: dt.datetime | None,
    max_skew: float,
    min_key_bits: int,
) -> Unsealed:
    checks: list[str] = []
    try:
        outer = verify_signed(message, "the sealed message")
    except CmsError as error:
        problem = {
            "not-signed-data": UnsealProblem.NOT_CMS,
            "signature": UnsealProblem.OUTER_SIGNATURE_INVALID,
            "algorithm": UnsealProblem.UNSUPPORTED_ALGORITHM,
        }.get(error.kind, UnsealProblem.MALFORMED)
        raise UnsealError(problem, f"outer layer: {error.message}") from error
    checks.append(f"outer signature valid ({_scheme(outer.scheme)}) by {describe_certificate(outer.signer)}")

    try:
        load_content_info(outer.content, "enveloped_data", "the outer layer's content")
    except CmsError as error:
        raise UnsealError(UnsealProblem.MALFORMED, error.message) from error
    bits = recipient.key_size
    if bits < min_key_bits:
        raise UnsealError(
            UnsealProblem.WEAK_RECIPIENT_KEY,
            f"the recipient's encryption key has {bits} bits: at least {min_key_bits} are required",
        )
    try:
        inner_der = decrypt_enveloped(outer.content, recipient, "the encrypted layer")
    except CmsError as error:
        problem = {
            "recipient": UnsealProblem.WRONG_RECIPIENT,
            "algorithm": UnsealProblem.UNSUPPORTED_ALGORITHM,
            "decryption": UnsealProblem.DECRYPTION_FAILED,
        }.get(error.kind, UnsealProblem.MALFORMED)
        raise UnsealError(problem, error.message) from error
    checks.append(
        f"decrypted for {describe_certificate(recipient.certificate)} (AES-128-CBC, RSA PKCS#1 v1.5)"
    )

    try:
        inner = verify_signed(inner_der, "the inner layer")
    except CmsError as error:
        if error.kind == "not-signed-data":
            raise UnsealError(
                UnsealProblem.DECRYPTION_FAILED,
                f"the decrypted content is not a CMS SignedData (tampered ciphertext or wrong key): {error.message}",
            ) from error
        problem = {
            "signature": UnsealProblem.INNER_SIGNATURE_INVALID,
            "algorithm": UnsealProblem.UNSUPPORTED_ALGORITHM,
        }.get(error.kind, UnsealProblem.MALFORMED)
        raise UnsealError(problem, f"inner layer: {error.message}") from error
    checks.append(f"inner signature valid ({_scheme(inner.scheme)}) by {describe_certificate(inner.signer)}")

    if not same_signer(inner.signer, outer.signer):
        raise UnsealError(
            UnsealProblem.SIGNER_MISMATCH,
            f"inner signer {describe_certificate(inner.signer)} and outer signer "
            f"{describe_certificate(outer.signer)} are not the same holder",
        )
    checks.append("inner and outer signer are the same holder")

    signing_time = _check_time(inner, now, max_skew)
    checks.append(f"signing time {signing_time.isoformat()} within {max_skew:g} s of now")

    for label, certificate in (("outer", outer.signer), ("inner", inner.signer)):
        if not valid_at(certificate, signing_time):
            raise UnsealError(
                UnsealProblem.CERTIFICATE_EXPIRED,
                f"the {label} signer's certificate {describe_certificate(certificate)} was not valid at the "
                f"signing time {signing_time.isoformat()} (valid {certificate.not_valid_before_utc.isoformat()} "
                f"to {certificate.not_valid_after_utc.isoformat()})",
            )
    checks.append("signer certificates valid at the signing time")

    if trust:
        for label, signed in (("outer", outer), ("inner", inner)):
            problem = chain_problem(signed.signer, trust, signed.certificates, at=signing_time)
            if problem is not None:
                raise UnsealError(
                    UnsealProblem.UNTRUSTED_SENDER, f"the {label} signer is not trusted: {problem}"
                )
        checks.append("signer certificates chain to a trust anchor")
    return Unsealed(
        payload=inner.content,
        sender_certificate=outer.signer,
        signature_certificate=inner.signer,
        signing_time=signing_time,
        inner_scheme=inner.scheme,
        outer_scheme=outer.scheme,
        checks=tuple(checks),
    )


def _check_time(inner: SignedContent, now: dt.datetime | None, max_skew: float) -> dt.datetime:
    if inner.signing_time is None:
        raise UnsealError(
            UnsealProblem.SIGNING_TIME_MISSING, "the inner signature has no signing-time signed attribute"
        )
    moment = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    skew = (inner.signing_time - moment).total_seconds()
    if abs(skew) > max_skew:
        direction = "ahead of" if skew > 0 else "behind"
        raise UnsealError(
            UnsealProblem.SIGNING_TIME_SKEW,
            f"the signing time {inner.signing_time.isoformat()} is {abs(skew):.0f} s {direction} now "
            f"({moment.replace(microsecond=0).isoformat()}): at most {max_skew:g} s is accepted",
        )
    return inner.signing_time


def _scheme(scheme: SignatureScheme) -> str:
    return "SHA-256, RSASSA-PSS" if scheme == "pss" else "SHA-256, RSA PKCS#1 v1.5"
