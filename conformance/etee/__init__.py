"""eHealth end-to-end encryption (ETEE) for a known recipient: ETKs, sealed messages, a test PKI.

``pki`` makes a test PKI in memory (root CA; per holder an authentication and an encryption
certificate named the way eHealth names them) and reads a holder's identity back from a certificate.
``etk`` builds, reads and checks ETKs (CMS SignedData of the encryption certificate, signed with the
authentication key) and their JWKS form. ``cms`` holds the CMS SignedData/EnvelopedData building blocks
(asn1crypto for the structures, cryptography for the primitives, no openssl process). ``seal`` makes
and opens the three-layer sealed messages, refusing each bad message with an ``UnsealError`` whose
``UnsealProblem`` code names the failed check. ``cli`` is the ``etee`` command group.
"""

from conformance.etee.errors import CmsError, EteeError, EtkError, SealError, UnsealError, UnsealProblem
from conformance.etee.etk import Etk, build_etk, build_jwks, certificate_jwk, parse_etk, parse_jwks
from conformance.etee.pki import Credential, Credentials, Holder, HolderId, TestPki, holder_identity
from conformance.etee.seal import Unsealed, same_signer, seal, unseal

__all__ = [
    "CmsError",
    "Credential",
    "Credentials",
    "EteeError",
    "Etk",
    "EtkError",
    "Holder",
    "HolderId",
    "SealError",
    "TestPki",
    "UnsealError",
    "UnsealProblem",
    "Unsealed",
    "build_etk",
    "build_jwks",
    "certificate_jwk",
    "holder_identity",
    "parse_etk",
    "parse_jwks",
    "same_signer",
    "seal",
    "unseal",
]
