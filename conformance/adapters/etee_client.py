"""The encrypted variant for the built-in clients: fetch and check Vaccicard's ETK, seal, send, unseal.

``EteeOptions`` says where the ETK depot (its REST form) and the encrypted create are, whose eHealth keys
seal (``keys``: the acting professional's ``Holder`` by SSIN) and which CA certificates are trusted.
``options.transport(inner, acting)`` makes the ``SealingTransport`` a reference client's HTTP client goes
through: a ``POST`` to the encrypted endpoint has its FHIR JSON body sealed for the register and its sealed
answer opened before the client reads it, so the client's retries, token renewal and conditional create
apply unchanged (each attempt is sealed afresh, with its own signing time). Every other request passes
through untouched.

Sealing: Vaccicard's ETK is fetched from ``<depot>/etk?identifierType=CBE&identifierValue=0811122215&
applicationId=VACCICARD`` and used only if it names the register and passes ``Etk.verify`` (its CMS
signature, the encryption certificate issued by the authentication one, RSA keys of at least 2048 bits,
validity, the chain to the trust anchors); it is kept for the transport's life while it stays valid. The
payload is sealed with ``conformance.etee.seal`` (inner and outer signature with the professional's
authentication key, RSASSA-PSS; AES-128-CBC envelope, RSA PKCS#1 v1.5 key transport to the ETK's key). A
sealed answer (``application/pkcs7-mime``) is unsealed with the professional's encryption key, checked
against the trust anchors, and must come from the register; a plain answer (the register could not
unseal the request, or an outage) passes as it is. Whatever stops the exchange raises ``EteeFailure``,
which the client reports as a ``failed`` result.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from cryptography import x509

from conformance.errors import ConfigurationError
from conformance.etee.errors import EtkError, SealError, UnsealError
from conformance.etee.etk import Etk, parse_etk
from conformance.etee.pki import Holder, HolderId
from conformance.etee.seal import seal, unseal

__all__ = [
    "PKCS7_MIME",
    "REGISTER_APPLICATION_ID",
    "REGISTER_HOLDER",
    "EteeFailure",
    "EteeOptions",
    "SealingTransport",
]

PKCS7_MIME = "application/pkcs7-mime"
FHIR_JSON = "application/fhir+json"
REGISTER_HOLDER = HolderId("CBE", "0811122215")
"""The register's ETK holder (the simulator's fictitious enterprise number for the register operator)."""
REGISTER_APPLICATION_ID = "VACCICARD"
_DROPPED_ANSWER_HEADERS = frozenset(
    {"content-type", "content-length", "content-encoding", "transfer-encoding"}
)
_DROPPED_REQUEST_HEADERS = frozenset({"content-type", "content-length", "accept"})


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class EteeFailure(Exception):
    """The sealed exchange could not be made or read: no keys, an ETK failing its checks, a bad answer."""


@dataclass(frozen=True)
class EteeOptions:
    """Where the encrypted variant is and whose keys seal (see the module docstring)."""

    depot_url: str
    """The ETK depot's base URL (its REST form answers ``<depot_url>/etk``)."""
    endpoint_url: str
    """The encrypted create (``<base>/etee/fhir/Immunization``)."""
    keys: Callable[[str], Holder | None] = field(repr=False)
    """The acting professional's eHealth keys by SSIN (None: none configured for them)."""
    trust_anchors: tuple[x509.Certificate, ...] = field(repr=False)
    """The CA certificates the register's ETK and its sealed answers must chain to (at least one)."""
    register: HolderId = REGISTER_HOLDER
    application_id: str | None = REGISTER_APPLICATION_ID
    clock: Callable[[], dt.datetime] = field(default=_utc_now, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.trust_anchors:
            raise ConfigurationError(
                "the encrypted variant needs at least one trust anchor to check Vaccicard's ETK"
            )

    def transport(self, inner: httpx.BaseTransport, acting: Callable[[], str]) -> SealingTransport:
        """The transport that seals for the register over ``inner``; ``acting()`` names who seals (SSIN)."""
        return SealingTransport(self, inner, acting)


class SealingTransport(httpx.BaseTransport):
    """Seals POSTs to the encrypted endpoint and opens their answers (see the module docstring)."""

    def __init__(self, options: EteeOptions, inner: httpx.BaseTransport, acting: Callable[[], str]) -> None:
        self.options = options
        self.inner = inner
        self.acting = acting
        endpoint = httpx.URL(options.endpoint_url)
        self._endpoint = (endpoint.scheme, endpoint.host, endpoint.port, endpoint.path.rstrip("/"))
        self._etk: Etk | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if (
            request.method != "POST"
            or (url.scheme, url.host, url.port, url.path.rstrip("/")) != self._endpoint
        ):
            return self.inner.handle_request(request)
        holder = self.options.keys(self.acting())
        if holder is None:
            raise EteeFailure(
                "no eHealth keys are configured for the logged-in professional: nothing was sealed or sent"
            )
        sealed = self.seal(request.read(), holder, self.register_etk(request.extensions))
        headers = [
            (name, value)
            for name, value in request.headers.multi_items()
            if name.lower() not in _DROPPED_REQUEST_HEADERS
        ]
        headers += [("Content-Type", PKCS7_MIME), ("Accept", PKCS7_MIME)]
        outgoing = httpx.Request("POST", url, headers=headers, content=sealed, extensions=request.extensions)
        return self._open(self.inner.handle_request(outgoing), holder, request)

    def close(self) -> None:
        self.inner.close()

    # --- the register's ETK ------------------------------------------------------------------------

    def register_etk(self, extensions: dict[str, object] | None = None) -> Etk:
        """Vaccicard's ETK, fetched from the depot and checked (kept while it stays valid)."""
        now = self.options.clock()
        if self._etk is not None and not self._etk.problems(trust=self.options.trust_anchors, now=now):
            return self._etk
        problems = []
        for etk in self.fetch_etks(self.options.register, self.options.application_id, extensions):
            found = etk.problems(trust=self.options.trust_anchors, now=now)
            if etk.holder != self.options.register:
                found.append(f"it names the holder {etk.holder or 'none'}, not {self.options.register}")
            if self.options.application_id and etk.application_id != self.options.application_id:
                found.append(f"its application id is {etk.application_id}, not {self.options.application_id}")
            if not found:
                self._etk = etk
                return etk
            problems.append("; ".join(found))
        raise EteeFailure(
            "Vaccicard's ETK from the depot fails its checks, so nothing was sealed for it: "
            + " | ".join(problems)
        )

    def fetch_etks(
        self, holder: HolderId, application_id: str | None, extensions: dict[str, object] | None = None
    ) -> list[Etk]:
        """The ETKs the depot's REST form answers for ``holder`` (CMS signature checked, nothing else)."""
        params = {"identifierType": holder.type, "identifierValue": holder.value}
        if application_id:
            params["applicationId"] = application_id
        url = httpx.URL(self.options.depot_url.rstrip("/") + "/etk", params=params)
        ask = httpx.Request("GET", url, headers={"Accept": "application/json"}, extensions=extensions or {})
        try:
            answer = self.inner.handle_request(ask)
            try:
                body = answer.read()
            finally:
                answer.close()
        except httpx.TransportError as error:
            raise EteeFailure(
                f"the ETK depot cannot be reached ({type(error).__name__}): nothing was sealed or sent"
            ) from error
        if answer.status_code != 200:
            raise EteeFailure(
                f"the ETK depot answered HTTP {answer.status_code} for the ETK of {holder}: nothing was sent"
            )
        try:
            if answer.headers.get("content-type", "").startswith(PKCS7_MIME):
                return [parse_etk(body)]
            return [parse_etk(base64.b64decode(item["etk"], validate=True)) for item in answer.json()["etks"]]
        except (ValueError, KeyError, TypeError, binascii.Error) as error:
            raise EteeFailure(f"the ETK depot's answer for {holder} cannot be read: {error}") from error
        except EtkError as error:
            raise EteeFailure(f"an ETK of {holder} from the depot cannot be read: {error.message}") from error

    # --- sealing and opening ---------------------------------------------------------------------------

    def seal(self, payload: bytes, holder: Holder, etk: Etk) -> bytes:
        """``payload`` sealed for ``etk`` with ``holder``'s keys, signed now."""
        try:
            return seal(payload, sender=holder.credentials(), recipients=[etk], now=self.options.clock())
        except SealError as error:
            raise EteeFailure(f"the message cannot be sealed: {error.message}") from error

    def _open(self, response: httpx.Response, holder: Holder, request: httpx.Request) -> httpx.Response:
        media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type != PKCS7_MIME:
            return response
        try:
            message = response.read()
        finally:
            response.close()
        try:
            opened = unseal(
                message,
                recipient=holder.encryption,
                trust=self.options.trust_anchors,
                now=self.options.clock(),
            )
        except UnsealError as error:
            raise EteeFailure(
                f"the register's sealed answer (HTTP {response.status_code}) fails its checks ({error.code}: "
                f"{error.message}); the vaccination may be recorded: read the history before sending it again"
            ) from error
        if opened.sender != self.options.register:
            raise EteeFailure(
                f"the sealed answer (HTTP {response.status_code}) is signed by {opened.sender or 'an unknown holder'}, "
                f"not by the register {self.options.register}; the vaccination may be recorded"
            )
        headers = [
            (name, value)
            for name, value in response.headers.multi_items()
            if name.lower() not in _DROPPED_ANSWER_HEADERS
        ]
        headers.append(("Content-Type", FHIR_JSON))
        return httpx.Response(response.status_code, headers=headers, content=opened.payload, request=request)
