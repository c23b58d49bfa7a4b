"""The simulator's ETK depot: encryption tokens of the register and of the test data, over HTTP.

``EtkDepot.generate(testdata)`` makes a test PKI (``conformance.etee.pki``) and, from it, a holder
with keys and an ETK for:

* the register itself: ``CBE=0811122215`` (a fictitious enterprise number with valid check digits,
  standing for the register operator), application id ``VACCICARD``;
* every test professional, as a person: ``SSIN=<ssin>``; look-ups by ``NIHII11`` and by the 8-digit
  ``NIHII`` find the same ETK (an assumption: eHealth issues personal certificates by SSIN);
* every test organisation: ``CBE=<cbe>``.

Generating takes about a second (two RSA keys per holder); share one depot between simulators in
tests. The private keys stay in memory (``holder()``, ``register``) so the harness and tests can act as
any of these holders; ``write()`` exports them for vendor developers.

Two HTTP forms under ``config.prefix`` (``/etkdepot``), both ``GET`` only:

* ``<prefix>/etk?identifierType=CBE&identifierValue=0811122215[&applicationId=VACCICARD]``: the
  ETKs as JSON (an **assumed** shape; the real depot is a SOAP service this simulator does not
  reproduce): ``{"identifier": {"type", "value", "applicationId"}, "etks": [{"applicationId",
  "etk"}]}`` with ``etk`` the base64 DER ETK. Without ``applicationId`` every ETK of the holder is
  returned; with it only that application's. ``config.etk_format = "der"`` answers one raw DER ETK
  (``application/pkcs7-mime``) instead, and 409 when the question matches several.
* ``<prefix>/etee/v1/pubKeys/cacerts/jwks?identifier=&type=&applicationIdentifier=&use=enc|sig``: a
  JWKS (``conformance.etee.etk.certificate_jwk``): per matching ETK the encryption key (``use`` enc,
  ``x5c`` = encryption, authentication and root certificates) and/or the authentication key (``use``
  sig, ``x5c`` = authentication and root certificates); without ``use`` both.

A scenario proving that software checks Vaccicard's ETK makes the depot answer a flawed one for the
register (``serve_register_etk(depot.flawed_register_etk(flaw))``, both forms; ``None`` restores the
register's own, as ``Simulator.reset`` does): ``short-key``, its encryption key has 1024 bits (issued in
the depot's PKI, correctly signed), or ``outside-pki``, signed by an authentication certificate of a CA
outside the depot's PKI. The register keeps its own keys, so it cannot unseal what is sealed for them.

Errors are JSON ``{"error": <code>, "message": <text>}``: 400 for a missing or invalid parameter,
404 for an unknown holder (or application), 405 for another method, 404 for another path. The
response annotations give the traffic recorder ``operation`` (``etk-lookup``, ``etk-jwks``) and, for
errors, ``rule`` (``etk-missing-parameter``, ``etk-invalid-parameter``, ``etk-unknown-holder``,
``etk-ambiguous``, ``etk-unknown-route``, ``etk-method-not-allowed``).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conformance.etee.etk import Etk, build_etk, build_jwks, certificate_jwk, parse_etk
from conformance.etee.pki import Holder, HolderId, TestPki, check_holder_id, write_private
from conformance.simulator.http import HttpRequest, HttpResponse, json_response
from conformance.simulator.testdata import TestData

__all__ = [
    "ETK_DEPOT_PATH",
    "JWKS_PATH",
    "REGISTER_APPLICATION_ID",
    "REGISTER_CBE",
    "REGISTER_HOLDER",
    "DepotEntry",
    "EtkDepot",
    "EtkDepotConfig",
    "EtkFlaw",
]

ETK_DEPOT_PATH = "/etkdepot"
JWKS_PATH = "/etee/v1/pubKeys/cacerts/jwks"
REGISTER_CBE = "0811122215"
"""The register operator's enterprise number in the simulator (fictitious, valid check digits)."""
REGISTER_APPLICATION_ID = "VACCICARD"
REGISTER_HOLDER = HolderId("CBE", REGISTER_CBE)
PKCS7_MIME = "application/pkcs7-mime"
SHORT_KEY_BITS = 1024
"""The encryption key size of the ``short-key`` flawed register ETK."""

EtkFlaw = Literal["short-key", "outside-pki"]
"""How a flawed register ETK fails its checks (see the module docstring)."""


@dataclass(frozen=True)
class EtkDepotConfig:
    """Settings of the simulated depot (assumed defaults; see the module docstring)."""

    prefix: str = ETK_DEPOT_PATH
    """Path prefix of both forms (no trailing slash)."""
    etk_format: Literal["json", "der"] = "json"
    """Answer of ``<prefix>/etk``: the JSON wrapper with base64 ETKs, or one raw DER ETK."""
    register: HolderId = REGISTER_HOLDER
    register_application_id: str | None = REGISTER_APPLICATION_ID
    register_name: str = "Vaccicard register (simulated)"


@dataclass(frozen=True)
class DepotEntry:
    """One ETK in the depot with the holder (and keys) it was made for."""

    holder: Holder
    etk: Etk

    @property
    def application_id(self) -> str | None:
        """The holder's application id (None for the holder's default ETK)."""
        return self.holder.application_id


class EtkDepot:
    """ETKs by holder identity, answering the depot's HTTP forms (see the module docstring)."""

    def __init__(
        self,
        pki: TestPki,
        entries: Iterable[tuple[DepotEntry, Sequence[HolderId]]] = (),
        *,
        config: EtkDepotConfig | None = None,
    ) -> None:
        """A depot of ``entries`` (each with the extra identities it is found under) from ``pki``."""
        self.pki = pki
        self.config = config or EtkDepotConfig()
        self._entries: list[DepotEntry] = []
        self._index: dict[HolderId, list[DepotEntry]] = {}
        self._flawed: dict[EtkFlaw, bytes] = {}
        self._served: Etk | None = None
        for entry, aliases in entries:
            self.add(entry, aliases)

    @classmethod
    def generate(
        cls,
        testdata: TestData | None = None,
        *,
        pki: TestPki | None = None,
        config: EtkDepotConfig | None = None,
        key_size: int = 2048,
    ) -> EtkDepot:
        """A depot for the register, the test professionals and organisations, with fresh keys."""
        data = testdata or TestData.load()
        settings = config or EtkDepotConfig()
        authority = pki or TestPki.generate(key_size=key_size)
        depot = cls(authority, config=settings)
        register = authority.issue_holder(
            settings.register.type,
            settings.register.value,
            settings.register_name,
            application_id=settings.register_application_id,
            key_size=key_size,
        )
        depot.add_holder(register)
        for pro in data.professionals:
            holder = authority.issue_holder(
                "SSIN", pro.ssin, f"{pro.given_name} {pro.family_name}", key_size=key_size
            )
            depot.add_holder(holder, [HolderId("NIHII11", pro.nihii11), HolderId("NIHII", pro.nihii8)])
        for org in data.organisations:
            depot.add_holder(authority.issue_holder("CBE", org.cbe, org.name, key_size=key_size))
        return depot

    # --- contents ---------------------------------------------------------------------------------

    def add(self, entry: DepotEntry, aliases: Sequence[HolderId] = ()) -> None:
        """Publish an ETK under its holder's identity and ``aliases``."""
        self._entries.append(entry)
        for identity in (entry.holder.id, *aliases):
            self._index.setdefault(identity, []).append(entry)

    def add_holder(self, holder: Holder, aliases: Sequence[HolderId] = ()) -> DepotEntry:
        """Make the holder's ETK and publish it; returns the entry."""
        entry = DepotEntry(holder, parse_etk(build_etk(holder)))
        self.add(entry, aliases)
        return entry

    @property
    def entries(self) -> tuple[DepotEntry, ...]:
        """Every ETK in the depot, in the order added."""
        return tuple(self._entries)

    @property
    def trust_anchors(self) -> tuple[x509.Certificate, ...]:
        """The depot PKI's root certificate(s)."""
        return self.pki.trust_anchors

    def lookup(self, identity: HolderId, application_id: str | None = None) -> list[DepotEntry]:
        """The ETKs of a holder (only those of ``application_id`` when given)."""
        found = self._index.get(identity, [])
        if application_id:
            return [e for e in found if e.application_id == application_id]
        return list(found)

    def holder(self, identity: HolderId, application_id: str | None = None) -> Holder:
        """The holder (with keys) the depot has for this identity; KeyError if none."""
        found = self.lookup(identity, application_id)
        if not found:
            raise KeyError(
                f"no ETK holder {identity}" + (f" for application {application_id}" if application_id else "")
            )
        return found[0].holder

    @property
    def register(self) -> Holder:
        """The register's own holder (its encryption key opens what vendors seal for Vaccicard)."""
        return self.holder(self.config.register, self.config.register_application_id)

    @property
    def register_etk(self) -> Etk:
        """The register's ETK (what vendor software seals for)."""
        return self.lookup(self.config.register, self.config.register_application_id)[0].etk

    # --- a flawed register ETK -------------------------------------------------------------------

    def flawed_register_etk(self, flaw: EtkFlaw) -> bytes:
        """A DER ETK naming the register that fails one check (``flaw``); made once, then kept."""
        if flaw not in self._flawed:
            settings = self.config
            issuer = self.pki if flaw == "short-key" else TestPki.generate("Test CA outside the eHealth PKI")
            holder = issuer.issue_holder(
                settings.register.type,
                settings.register.value,
                settings.register_name,
                application_id=settings.register_application_id,
                encryption_key_size=SHORT_KEY_BITS if flaw == "short-key" else None,
            )
            self._flawed[flaw] = build_etk(holder)
        return self._flawed[flaw]

    def serve_register_etk(self, etk: bytes | None) -> None:
        """Answer ``etk`` (a readable ETK) for the register instead of its own; None: its own again."""
        self._served = parse_etk(etk) if etk is not None else None

    def _answered(self, entry: DepotEntry) -> Etk:
        """The ETK the HTTP forms answer for ``entry`` (a served flawed one for the register)."""
        register = (self.config.register, self.config.register_application_id)
        if self._served is not None and (entry.holder.id, entry.application_id) == register:
            return self._served
        return entry.etk

    def etk_for(self, identity: HolderId) -> Etk | None:
        """The ETK to answer a sender with: the one without application id, else the first, else None."""
        found = self.lookup(identity)
        if not found:
            return None
        return next((e.etk for e in found if e.application_id is None), found[0].etk)

    def write(self, directory: str | os.PathLike[str], password: bytes) -> list[Path]:
        """Export ``root-ca.pem`` and per holder ``<TYPE>-<value>[-<APP>].{auth.p12,enc.p12,etk}``."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        written = [write_private(folder / "root-ca.pem", self.pki.root.certificate_pem(), 0o644)]
        for entry in self._entries:
            holder = entry.holder
            stem = f"{holder.id.type}-{holder.id.value}" + (
                f"-{holder.application_id}" if holder.application_id else ""
            )
            written.append(
                write_private(
                    folder / f"{stem}.auth.p12",
                    holder.authentication.to_pkcs12(password, name="authentication"),
                )
            )
            written.append(
                write_private(
                    folder / f"{stem}.enc.p12", holder.encryption.to_pkcs12(password, name="encryption")
                )
            )
            written.append(write_private(folder / f"{stem}.etk", entry.etk.der, 0o644))
        return written

    # --- HTTP -------------------------------------------------------------------------------------

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one request under ``config.prefix`` (see the module docstring)."""
        route = (
            request.path[len(self.config.prefix) :] if request.path.startswith(self.config.prefix) else None
        )
        handlers = {"/etk": ("etk-lookup", self._etk), JWKS_PATH: ("etk-jwks", self._jwks)}
        if route not in handlers:
            return _error(
                404,
                "etk-unknown-route",
                f"no depot endpoint {request.path}: use {self.config.prefix}/etk or {self.config.prefix}{JWKS_PATH}",
                None,
            )
        operation, handler = handlers[route]
        if request.method.upper() != "GET":
            response = _error(
                405, "etk-method-not-allowed", f"{request.method} is not allowed here: use GET", operation
            )
            response.headers["Allow"] = "GET"
            return response
        try:
            response = handler(request)
        except _DepotRefusal as refusal:
            return _error(refusal.status, refusal.rule, refusal.message, operation)
        response.annotations = {"operation": operation}
        return response

    def _etk(self, request: HttpRequest) -> HttpResponse:
        identity = _identity(request, "identifierType", "identifierValue")
        application = _optional(request, "applicationId")
        entries = self._find(identity, application)
        if self.config.etk_format == "der":
            if len(entries) > 1:
                apps = ", ".join(e.application_id or "(none)" for e in entries)
                raise _DepotRefusal(
                    409,
                    "etk-ambiguous",
                    f"{identity} has several ETKs (applications {apps}): give applicationId",
                )
            return HttpResponse(
                200, {"Content-Type": PKCS7_MIME, "Cache-Control": "no-store"}, self._answered(entries[0]).der
            )
        body = {
            "identifier": {"type": identity.type, "value": identity.value, "applicationId": application},
            "etks": [
                {
                    "applicationId": e.application_id,
                    "etk": base64.b64encode(self._answered(e).der).decode("ascii"),
                }
                for e in entries
            ],
        }
        return json_response(200, body, {"Cache-Control": "no-store"})

    def _jwks(self, request: HttpRequest) -> HttpResponse:
        identity = _identity(request, "type", "identifier")
        application = _optional(request, "applicationIdentifier")
        use = _optional(request, "use")
        if use not in (None, "enc", "sig"):
            raise _DepotRefusal(400, "etk-invalid-parameter", f'use must be "enc" or "sig", not {use!r}')
        keys: list[dict[str, Any]] = []
        root = self.pki.root_certificate
        for entry in self._find(identity, application):
            etk = self._answered(entry)
            auth = etk.authentication_certificate
            if use in (None, "enc"):
                keys.append(certificate_jwk(etk.encryption_certificate, use="enc", chain=[auth, root]))
            if use in (None, "sig"):
                keys.append(certificate_jwk(auth, use="sig", chain=[root]))
        return json_response(
            200, build_jwks(keys), {"Content-Type": "application/jwk-set+json", "Cache-Control": "no-store"}
        )

    def _find(self, identity: HolderId, application: str | None) -> list[DepotEntry]:
        entries = self.lookup(identity, application)
        if not entries:
            suffix = f" for application {application}" if application else ""
            raise _DepotRefusal(404, "etk-unknown-holder", f"the depot has no ETK for {identity}{suffix}")
        return entries

    def root_pem(self) -> bytes:
        """The depot PKI's root certificate, PEM (what a relying party trusts)."""
        return self.pki.root_certificate.public_bytes(serialization.Encoding.PEM)


class _DepotRefusal(Exception):
    def __init__(self, status: int, rule: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.rule = rule
        self.message = message


def _optional(request: HttpRequest, name: str) -> str | None:
    values = request.query.get(name)
    value = values[0].strip() if values else ""
    return value or None


def _identity(request: HttpRequest, type_name: str, value_name: str) -> HolderId:
    kind, value = _optional(request, type_name), _optional(request, value_name)
    if kind is None or value is None:
        missing = [n for n, v in ((type_name, kind), (value_name, value)) if v is None]
        raise _DepotRefusal(400, "etk-missing-parameter", f"missing query parameter(s): {', '.join(missing)}")
    if (problem := check_holder_id(kind.upper(), value)) is not None:
        raise _DepotRefusal(400, "etk-invalid-parameter", problem)
    return HolderId(kind.upper(), value)


def _error(status: int, rule: str, message: str, operation: str | None) -> HttpResponse:
    response = json_response(status, {"error": rule, "message": message}, {"Cache-Control": "no-store"})
    response.annotations = {"operation": operation, "rule": rule}
    return response
