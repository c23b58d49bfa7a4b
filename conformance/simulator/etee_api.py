"""The encrypted variant of the FHIR create: a sealed BeVaccination Immunization in, a sealed answer out.

``EteeApi.handle`` answers ``POST {config.path}`` (``/etee/fhir/Immunization``):

1. transport (an **assumed** API; configurable): by default the body is the sealed message itself, DER,
   with ``Content-Type: application/pkcs7-mime``; with ``config.transport = "json"`` the body is
   ``{"sealed": "<base64 DER>"}`` (``application/json``) and the answer has the same shape;
2. the message is unsealed with the register's encryption key (``EtkDepot.register``), checking the
   sender against the depot's trust anchors unless ``require_trusted_sender`` is off; a failure is
   answered **400** with a plain (unsealed) OperationOutcome naming the problem, whose
   ``details.coding`` (system ``RULES_SYSTEM``) is the ``UnsealProblem`` code, also recorded as the
   exchange's ``rule`` annotation;
3. the sender's ETK is looked up in the depot by the identity its authentication certificate names;
   none gives **422** (``etee-sender-unknown``), an ETK failing its checks (``Etk.problems``: key
   size, validity, chain to the depot's root) **422** (``etee-sender-etk-invalid``): the register
   could not answer sealed, so it does not process the request;
4. the payload goes to ``process(json_bytes, headers)`` (the FHIR API's create, see ``fhir_create``)
   with the request's headers (``Authorization`` ...) but ``Content-Type``/``Accept`` set to
   ``application/fhir+json``;
5. the FHIR answer's body is sealed by the register for the sender, with the FHIR status and headers
   (``Location``, ``ETag`` ...) kept. Its annotations go to the traffic recorder with an ``etee``
   entry (sender, signing time, schemes); an SSIN sender is shown by certificate serial only.

Other refusals: 404 (``etee-unknown-route``), 405 (``etee-method-not-allowed``), 413
(``etee-payload-too-large``), 415 (``etee-unsupported-media-type``), 400 (``etee-invalid-wrapper``:
the JSON transport's body is not the wrapper).

``EteeClient`` is the vendor side in memory, for tests and the reference adapter: it seals a payload
for the register (``request``), reads a sealed answer (``read``), or both through any handler
(``send``), so a round trip needs no socket.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from cryptography import x509

from conformance.etee.cms import SignatureScheme
from conformance.etee.errors import UnsealError, UnsealProblem
from conformance.etee.etk import Etk
from conformance.etee.pki import Credential, Holder, HolderId
from conformance.etee.seal import DEFAULT_MAX_SKEW, Unsealed, seal, unseal
from conformance.simulator.etk_depot import EtkDepot
from conformance.simulator.fhir_api import RULES_SYSTEM
from conformance.simulator.http import HttpRequest, HttpResponse

__all__ = [
    "ETEE_CREATE_PATH",
    "ETEE_PATH",
    "PKCS7_MIME",
    "EteeAnswer",
    "EteeApi",
    "EteeClient",
    "EteeConfig",
    "Process",
    "fhir_create",
]

ETEE_PATH = "/etee"
"""Path prefix of the encrypted variant (route everything under it to ``EteeApi.handle``)."""
ETEE_CREATE_PATH = ETEE_PATH + "/fhir/Immunization"
PKCS7_MIME = "application/pkcs7-mime"
FHIR_JSON = "application/fhir+json"
_FHIR_CONTENT_TYPE = "application/fhir+json; charset=utf-8"
_DROPPED_HEADERS = frozenset({"content-type", "content-length", "accept", "transfer-encoding"})

Process = Callable[[bytes, dict[str, str]], HttpResponse]
"""Handles the unsealed FHIR JSON (body, lower-case headers) and returns the FHIR answer."""
Transport = Literal["pkcs7", "json"]

_ISSUE_CODES: Mapping[UnsealProblem, str] = {
    UnsealProblem.NOT_CMS: "structure",
    UnsealProblem.MALFORMED: "structure",
    UnsealProblem.UNSUPPORTED_ALGORITHM: "not-supported",
}


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class EteeConfig:
    """Settings of the encrypted endpoint (assumed defaults; see the module docstring)."""

    path: str = ETEE_CREATE_PATH
    """The one path that accepts sealed creates."""
    transport: Transport = "pkcs7"
    """``pkcs7``: the DER message is the body; ``json``: ``{"sealed": "<base64>"}``."""
    max_skew: float = DEFAULT_MAX_SKEW
    """Seconds the inner signing time may differ from the register's clock."""
    require_trusted_sender: bool = True
    """Signer certificates must chain to the depot's root CA."""
    response_scheme: SignatureScheme = "pss"
    """Signature scheme of both layers of the register's sealed answers."""
    max_body_bytes: int = 1_000_000
    clock: Callable[[], dt.datetime] = field(default=_utc_now, compare=False, repr=False)


def fhir_create(handle: Callable[[HttpRequest], HttpResponse], path: str = "/fhir/Immunization") -> Process:
    """A ``Process`` that hands the JSON to ``handle`` (``FhirApi.handle``) as ``POST path``."""

    def process(body: bytes, headers: dict[str, str]) -> HttpResponse:
        return handle(HttpRequest("POST", path, {}, headers, body))

    return process


class _Refusal(Exception):
    def __init__(self, status: int, rule: str, issue_code: str, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.rule = rule
        self.issue_code = issue_code
        self.text = text


class EteeApi:
    """The encrypted endpoint (see the module docstring)."""

    def __init__(self, depot: EtkDepot, process: Process, *, config: EteeConfig | None = None) -> None:
        """Answer with ``depot``'s register keys and hand unsealed payloads to ``process``."""
        self.depot = depot
        self.process = process
        self.config = config or EteeConfig()

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one request (a ``DropConnection`` raised by ``process`` passes through)."""
        try:
            return self._handle(request)
        except _Refusal as refusal:
            response = _outcome(refusal.status, refusal.rule, refusal.issue_code, refusal.text)
            if refusal.rule == "etee-unknown-route":
                response.annotations.update(operation=None, resource_type=None)
            return response

    def unseal(self, message: bytes) -> Unsealed:
        """Unseal a message sent to the register with the endpoint's checks; UnsealError if it fails."""
        return unseal(
            message,
            recipient=self.depot.register.encryption,
            trust=self.depot.trust_anchors if self.config.require_trusted_sender else (),
            now=self.config.clock(),
            max_skew=self.config.max_skew,
        )

    def _handle(self, request: HttpRequest) -> HttpResponse:
        if request.path.rstrip("/") != self.config.path:
            raise _Refusal(
                404,
                "etee-unknown-route",
                "not-found",
                f"no such endpoint: sealed creates go to POST {self.config.path}",
            )
        if request.method.upper() != "POST":
            raise _Refusal(
                405, "etee-method-not-allowed", "not-supported", f"{request.method} is not allowed: use POST"
            )
        if len(request.body) > self.config.max_body_bytes:
            raise _Refusal(
                413,
                "etee-payload-too-large",
                "too-costly",
                f"the body has {len(request.body)} bytes: at most {self.config.max_body_bytes} are accepted",
            )
        message = self._message(request)
        try:
            unsealed = self.unseal(message)
        except UnsealError as error:
            response = _outcome(400, error.code, _ISSUE_CODES.get(error.problem, "security"), error.message)
            response.annotations["etee"] = {"problem": error.code}
            return response
        sender = unsealed.sender
        etk = self.depot.etk_for(sender) if sender is not None else None
        if sender is None or etk is None:
            raise _Refusal(
                422,
                "etee-sender-unknown",
                "security",
                f"the depot has no ETK for the sender {sender or '(no identity in its certificate)'}: "
                "the register cannot answer it sealed, so the request was not processed",
            )
        problems = etk.problems(trust=self.depot.trust_anchors, now=self.config.clock())
        if problems:
            raise _Refusal(
                422,
                "etee-sender-etk-invalid",
                "security",
                f"the sender's ETK ({sender}) fails its checks, so the register cannot answer it sealed "
                f"and did not process the request: {'; '.join(problems)}",
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED_HEADERS}
        headers.update({"content-type": FHIR_JSON, "accept": FHIR_JSON})
        answer = self.process(unsealed.payload, headers)
        sealed = seal(
            answer.body,
            sender=self.depot.register.credentials(),
            recipients=[etk],
            signature_scheme=self.config.response_scheme,
            authentication_scheme=self.config.response_scheme,
            now=self.config.clock(),
        )
        response_headers = {k: v for k, v in answer.headers.items() if k.lower() not in _DROPPED_HEADERS}
        response = self._wrap(answer.status, sealed, response_headers)
        response.annotations = {
            **answer.annotations,
            "etee": {
                "sender": _sender_label(sender, unsealed),
                "signing_time": unsealed.signing_time.isoformat().replace("+00:00", "Z"),
                "inner_scheme": unsealed.inner_scheme,
                "outer_scheme": unsealed.outer_scheme,
            },
        }
        return response

    def _message(self, request: HttpRequest) -> bytes:
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        expected = PKCS7_MIME if self.config.transport == "pkcs7" else "application/json"
        if media_type != expected:
            raise _Refusal(
                415,
                "etee-unsupported-media-type",
                "not-supported",
                f"expected Content-Type {expected}, found {media_type or 'none'}",
            )
        if self.config.transport == "pkcs7":
            return request.body
        return _unwrap(request.body)

    def _wrap(self, status: int, sealed: bytes, headers: dict[str, str]) -> HttpResponse:
        if self.config.transport == "pkcs7":
            return HttpResponse(status, {**headers, "Content-Type": PKCS7_MIME}, sealed)
        body = orjson.dumps({"sealed": base64.b64encode(sealed).decode("ascii")})
        return HttpResponse(status, {**headers, "Content-Type": "application/json"}, body)


def _unwrap(body: bytes) -> bytes:
    try:
        data = orjson.loads(body)
        text = data["sealed"] if isinstance(data, dict) else None
        if not isinstance(text, str):
            raise ValueError("no sealed string")
        return base64.b64decode(text, validate=True)
    except (orjson.JSONDecodeError, KeyError, ValueError, binascii.Error) as error:
        raise _Refusal(
            400,
            "etee-invalid-wrapper",
            "structure",
            'the body must be a JSON object {"sealed": "<base64 of the DER sealed message>"}',
        ) from error


def _sender_label(sender: HolderId, unsealed: Unsealed) -> str:
    if sender.type == "SSIN":  # no SSIN in the traffic annotations
        return f"SSIN holder, certificate serial {unsealed.sender_certificate.serial_number:x}"
    return str(sender)


def _outcome(status: int, rule: str, issue_code: str, text: str) -> HttpResponse:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": issue_code,
                "details": {"coding": [{"system": RULES_SYSTEM, "code": rule}], "text": text},
            }
        ],
    }
    response = HttpResponse(status, {"Content-Type": _FHIR_CONTENT_TYPE}, orjson.dumps(body))
    response.annotations = {"operation": "create", "resource_type": "Immunization", "rule": rule}
    return response


# --- the vendor side, in memory -------------------------------------------------------------------------


@dataclass(frozen=True)
class EteeAnswer:
    """What an ``EteeClient`` read: the status, the FHIR body (unsealed, or the plain error) and checks."""

    status: int
    payload: bytes
    unsealed: Unsealed | None
    response: HttpResponse

    def json(self) -> Any:
        """The FHIR body as JSON."""
        return orjson.loads(self.payload)


class EteeClient:
    """Seals requests for the register and unseals its answers, as vendor software would."""

    def __init__(
        self,
        sender: Holder,
        register_etk: Etk,
        *,
        trust: Sequence[x509.Certificate] = (),
        transport: Transport = "pkcs7",
        path: str = ETEE_CREATE_PATH,
        signature: Credential | None = None,
        scheme: SignatureScheme = "pss",
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        """Act as ``sender`` (its ``signature`` credential on the inner layer when given)."""
        self.sender = sender
        self.register_etk = register_etk
        self.trust = trust
        self.transport = transport
        self.path = path
        self.signature = signature
        self.scheme = scheme
        self.clock = clock

    def request(self, payload: bytes, headers: Mapping[str, str] | None = None) -> HttpRequest:
        """A ``POST`` carrying ``payload`` sealed for the register."""
        sealed = seal(
            payload,
            sender=self.sender.credentials(self.signature),
            recipients=[self.register_etk],
            signature_scheme=self.scheme,
            now=self.clock(),
        )
        all_headers = {k.lower(): v for k, v in (headers or {}).items()}
        if self.transport == "pkcs7":
            all_headers["content-type"] = PKCS7_MIME
            body = sealed
        else:
            all_headers["content-type"] = "application/json"
            body = orjson.dumps({"sealed": base64.b64encode(sealed).decode("ascii")})
        return HttpRequest("POST", self.path, {}, all_headers, body)

    def read(self, response: HttpResponse) -> EteeAnswer:
        """Unseal a sealed answer (UnsealError if it fails its checks); a plain answer is returned as is."""
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if media_type == PKCS7_MIME:
            message: bytes | None = response.body
        elif media_type == "application/json" and self.transport == "json":
            message = _unwrap_answer(response.body)
        else:
            message = None
        if message is None:
            return EteeAnswer(response.status, response.body, None, response)
        unsealed = unseal(message, recipient=self.sender.encryption, trust=self.trust, now=self.clock())
        return EteeAnswer(response.status, unsealed.payload, unsealed, response)

    def send(
        self,
        handle: Callable[[HttpRequest], HttpResponse],
        payload: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> EteeAnswer:
        """Seal, hand the request to ``handle`` (``EteeApi.handle``, ``Simulator.handle``) and read the answer."""
        return self.read(handle(self.request(payload, headers)))


def _unwrap_answer(body: bytes) -> bytes | None:
    try:
        return _unwrap(body)
    except _Refusal:
        return None
