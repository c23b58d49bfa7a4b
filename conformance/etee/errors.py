"""Errors of the ETEE helpers: every one is a ``ConformanceError`` with a user-facing message.

``UnsealError`` (exit 1: the message fails its checks) names the failed check with an
``UnsealProblem`` code, stable across versions, which the simulator records as the exchange's rule.
``EtkError`` (exit 1) is an ETK that cannot be read or fails its checks. ``SealError`` (exit 2) is a
seal that cannot be made with the given credentials or recipients (a configuration problem).
"""

from __future__ import annotations

from enum import StrEnum

from conformance.errors import EXIT_FAILURES, ConfigurationError, ConformanceError

__all__ = ["CmsError", "EteeError", "EtkError", "SealError", "UnsealError", "UnsealProblem"]


class EteeError(ConformanceError):
    """Base of the errors about ETKs and sealed messages that fail their checks (exit 1)."""

    exit_code = EXIT_FAILURES


class CmsError(EteeError):
    """A CMS structure that cannot be read, verified or decrypted; ``kind`` says which step failed.

    Kinds: ``not-signed-data``, ``structure``, ``signature``, ``algorithm``, ``recipient``,
    ``decryption``. The sealed-message and ETK layers turn it into their own error.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class EtkError(EteeError):
    """An ETK (or JWKS key) that cannot be read or fails a check (signature, chain, key size, validity)."""


class SealError(ConfigurationError):
    """A message that cannot be sealed: unusable sender credentials or recipient certificates (exit 2)."""


class UnsealProblem(StrEnum):
    """Why a sealed message was refused; the value is the rule code the simulator records.

    ``etee-not-cms`` (not a CMS SignedData at all), ``etee-malformed`` (CMS, but not the three-layer
    shape), ``etee-unsupported-algorithm`` (digest, signature, key transport or content encryption
    outside SHA-256, RSASSA-PSS/PKCS#1 v1.5, RSA PKCS#1 v1.5, AES-128-CBC), ``etee-outer-signature-invalid``,
    ``etee-weak-recipient-key`` (the recipient's key has fewer than the minimum bits),
    ``etee-wrong-recipient`` (no RecipientInfo names the recipient's certificate),
    ``etee-decryption-failed`` (key transport, padding or the decrypted structure fails: wrong key or
    tampered ciphertext), ``etee-inner-signature-invalid``, ``etee-signer-mismatch`` (inner and outer
    signer are not the same holder), ``etee-signing-time-missing``, ``etee-signing-time-skew``,
    ``etee-certificate-expired`` (a signer certificate not valid at the signing time),
    ``etee-untrusted-sender`` (a signer certificate does not chain to the trust anchors).
    """

    NOT_CMS = "etee-not-cms"
    MALFORMED = "etee-malformed"
    UNSUPPORTED_ALGORITHM = "etee-unsupported-algorithm"
    OUTER_SIGNATURE_INVALID = "etee-outer-signature-invalid"
    WEAK_RECIPIENT_KEY = "etee-weak-recipient-key"
    WRONG_RECIPIENT = "etee-wrong-recipient"
    DECRYPTION_FAILED = "etee-decryption-failed"
    INNER_SIGNATURE_INVALID = "etee-inner-signature-invalid"
    SIGNER_MISMATCH = "etee-signer-mismatch"
    SIGNING_TIME_MISSING = "etee-signing-time-missing"
    SIGNING_TIME_SKEW = "etee-signing-time-skew"
    CERTIFICATE_EXPIRED = "etee-certificate-expired"
    UNTRUSTED_SENDER = "etee-untrusted-sender"


class UnsealError(EteeError):
    """A sealed message that fails a check; ``problem`` names which, ``message`` says how."""

    def __init__(self, problem: UnsealProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem

    @property
    def code(self) -> str:
        """The problem's rule code (``etee-wrong-recipient`` ...)."""
        return self.problem.value
