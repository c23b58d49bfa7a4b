"""The checks of the encrypted variant: what the software sealed, for whom, and what the register made of it.

Like ``checks``, each judges an ``Action`` and raises ``CheckFailed`` saying what was expected, what
arrived and where. A sealed message is a ``POST`` with ``Content-Type: application/pkcs7-mime``. Its
outer layers are read without any key (the outer signature, the envelope's recipients and algorithms),
the register's verdict is its answer (sealed when it could unseal the message, else a plain
OperationOutcome whose rule is the failed unsealing check), and the payload is opened with the
register's key through the endpoint, where the endpoint holds it (the simulator).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asn1crypto import cms
from asn1crypto import x509 as ax509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conformance.adapters.etee_client import PKCS7_MIME, REGISTER_APPLICATION_ID, REGISTER_HOLDER
from conformance.etee.cms import PARSE_ERRORS, verify_signed
from conformance.etee.errors import CmsError, EteeError, UnsealError
from conformance.etee.etk import parse_etk, parse_jwks
from conformance.etee.pki import describe_certificate, holder_identity
from conformance.suite.checks import CheckFailed, _request_line, refusal_texts
from conformance.suite.endpoint import Endpoint
from conformance.suite.software import Action
from conformance.traffic.recorder import Exchange

__all__ = [
    "answered_sealed",
    "fetched_offered_etk",
    "fetched_register_etk",
    "last_sealed",
    "sealed_for",
    "sent_no_vaccination",
    "told_etk_untrusted",
    "unsealed_by_register",
    "unsealed_payload",
]

DEPOT_OPERATIONS = frozenset({"etk-lookup", "etk-jwks"})
UNSEALING_CHECKS = (
    "a message the register unseals: sealed for Vaccicard's ETK, both signatures valid, the same signer "
    "inside and out, a signing time within five minutes, signer certificates valid and trusted"
)


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _is_sealed(exchange: Exchange) -> bool:
    return exchange.method == "POST" and _media_type(exchange.request_header("content-type")) == PKCS7_MIME


def _register_query() -> str:
    return (
        f"identifierType={REGISTER_HOLDER.type}&identifierValue={REGISTER_HOLDER.value}"
        f"&applicationId={REGISTER_APPLICATION_ID}"
    )


# --- the sealed message and the register's verdict ----------------------------------------------------


def last_sealed(action: Action) -> Exchange:
    """The action's last sealed message (POST, application/pkcs7-mime)."""
    sealed = [e for e in action.exchanges if _is_sealed(e)]
    if not sealed:
        raise CheckFailed(
            "the software sent no sealed message",
            expected="a POST of the vaccination sealed for Vaccicard (Content-Type application/pkcs7-mime)",
            arrived="; ".join(_request_line(e) for e in action.exchanges) or "no request",
            where="the register's encrypted endpoint",
            evidence=action.exchanges,
        )
    return sealed[-1]


def unsealed_by_register(action: Action) -> Exchange:
    """The register unsealed the last sealed message: it answered sealed, with no etee-* rule."""
    exchange = last_sealed(action)
    rule = exchange.tags.get("rule")
    refused = isinstance(rule, str) and rule.startswith("etee-")
    if not refused and _media_type(exchange.response_header("content-type")) == PKCS7_MIME:
        return exchange
    status = exchange.response_status
    texts = refusal_texts(exchange)
    raise CheckFailed(
        f"the register refused the sealed message with rule {rule}"
        if rule
        else "the register did not unseal the message",
        expected=UNSEALING_CHECKS,
        arrived=f"HTTP {status if status is not None else '(no answer)'}"
        + (f", rule {rule}" if rule else ", a plain answer")
        + (f": {texts[0]}" if texts else ""),
        where=_request_line(exchange),
        evidence=[exchange],
    )


# --- the ETK and the envelope ------------------------------------------------------------------------


def fetched_register_etk(exchanges: Sequence[Exchange], sealed: Exchange) -> list[x509.Certificate]:
    """Before ``sealed``, the software fetched Vaccicard's ETK from the depot; its encryption certificates."""
    lookups = [e for e in exchanges if e.id < sealed.id and e.operation in DEPOT_OPERATIONS]
    found = [
        certificate
        for e in lookups
        if e.response_status == 200 and _asks_for_register(e)
        for certificate in _encryption_certificates(e)
    ]
    if found:
        return found
    raise CheckFailed(
        "the software did not fetch Vaccicard's ETK from the ETK depot before sealing",
        expected=f"GET <depot>/etk?{_register_query()} (or the JWKS form) answered 200, before the sealed message",
        arrived="; ".join(_request_line(e) for e in lookups) or "no request to the ETK depot",
        where="the ETK depot",
        evidence=[*lookups, sealed],
    )


def fetched_offered_etk(action: Action) -> list[Exchange]:
    """During the action the software fetched Vaccicard's ETK from the depot (answered 200); those lookups."""
    lookups = [e for e in action.exchanges if e.operation in DEPOT_OPERATIONS]
    fetched = [e for e in lookups if e.response_status == 200 and _asks_for_register(e)]
    if fetched:
        return fetched
    raise CheckFailed(
        "the software did not fetch Vaccicard's ETK from the ETK depot",
        expected=f"GET <depot>/etk?{_register_query()} (or the JWKS form) answered 200, to check the ETK",
        arrived="; ".join(_request_line(e) for e in lookups) or "no request to the ETK depot",
        where="the ETK depot",
        evidence=action.exchanges,
    )


def _asks_for_register(exchange: Exchange) -> bool:
    params = dict(exchange.query_params)
    kind = params.get("identifierType") or params.get("type") or ""
    value = params.get("identifierValue") or params.get("identifier")
    application = params.get("applicationId") or params.get("applicationIdentifier")
    return (
        kind.upper() == REGISTER_HOLDER.type
        and value == REGISTER_HOLDER.value
        and application in (None, REGISTER_APPLICATION_ID)
    )


def _encryption_certificates(exchange: Exchange) -> list[x509.Certificate]:
    """The encryption certificates a depot answer carries (JSON with base64 ETKs, a DER ETK, or a JWKS)."""
    body = exchange.response_body
    try:
        if isinstance(body, bytes):
            return [parse_etk(body).encryption_certificate]
        if isinstance(body, dict) and isinstance(body.get("etks"), list):
            return [
                parse_etk(base64.b64decode(item["etk"], validate=True)).encryption_certificate
                for item in body["etks"]
            ]
        if isinstance(body, dict) and "keys" in body:
            keys = parse_jwks(body)
            return [k.certificate for k in keys if k.use in (None, "enc") and k.certificate is not None]
    except (EteeError, ValueError, KeyError, TypeError, binascii.Error):
        return []
    return []


def sent_no_vaccination(action: Action) -> None:
    """The software sent the vaccination neither sealed nor in the clear (no sealed POST, no create)."""
    sent = [e for e in action.exchanges if _is_sealed(e) or e.operation == "create"]
    if not sent:
        return
    rules = [rule for e in sent if isinstance(rule := e.tags.get("rule"), str)]
    raise CheckFailed(
        "the software sent the vaccination although Vaccicard's ETK fails its checks",
        expected="no sealed message and no create: the software checks the ETK and stops before sealing",
        arrived="; ".join(_request_line(e) for e in sent)
        + (f" (the register refused with rule {', '.join(rules)})" if rules else ""),
        where=_request_line(sent[0]),
        evidence=sent,
    )


def told_etk_untrusted(action: Action) -> None:
    """The software reported the vaccination as not recorded, with a message for the user.

    The wording is the vendor's (any language): only that there is a message is judged.
    """
    result = action.result
    shown = " ".join([result.message or "", *(issue.text for issue in result.issues)]).strip()
    if not result.succeeded and shown:
        return
    raise CheckFailed(
        "the software did not tell the user that the register's encryption key cannot be trusted",
        expected="outcome failed (or rejected) with a message for the user",
        arrived=f"outcome {result.outcome}: {result.message or '(no message)'}",
        where="the adapter's result",
        evidence=action.exchanges,
    )


@dataclass(frozen=True)
class _Envelope:
    recipients: tuple[tuple[ax509.Name, int], ...]
    key_transports: frozenset[str]
    cipher: str | None


def sealed_for(sealed: Exchange, certificates: Sequence[x509.Certificate]) -> None:
    """The message's envelope names one of ``certificates`` (AES-128-CBC, RSA PKCS#1 v1.5 key transport)."""
    where = f"{_request_line(sealed)}: SignedData > EnvelopedData"
    envelope = _envelope(sealed, where)
    wanted = [_asn1(c) for c in certificates]
    named = [r for r in envelope.recipients for c in wanted if r[0] == c.issuer and r[1] == c.serial_number]
    problems = []
    if not named:
        shown = ", ".join(
            f"serial {serial:x} of {issuer.human_friendly}" for issuer, serial in envelope.recipients
        )
        problems.append(
            f"no recipient names Vaccicard's encryption certificate (recipients: {shown or 'none'})"
        )
    if envelope.key_transports != {"rsaes_pkcs1v15"}:
        problems.append(f"content key sent with {', '.join(sorted(envelope.key_transports)) or 'nothing'}")
    if envelope.cipher != "aes128_cbc":
        problems.append(f"content encrypted with {envelope.cipher}")
    if problems:
        raise CheckFailed(
            "the message is not sealed for the key of Vaccicard's ETK as eHealth seals",
            expected=(
                "an outer SignedData holding an EnvelopedData for "
                + " or ".join(describe_certificate(c) for c in certificates)
                + ": AES-128-CBC, the content key sent with RSA PKCS#1 v1.5"
            ),
            arrived="; ".join(problems),
            where=where,
            evidence=[sealed],
        )


def _envelope(sealed: Exchange, where: str) -> _Envelope:
    body = sealed.request_body
    try:
        outer = verify_signed(body if isinstance(body, bytes) else b"", "the sealed message")
        info = cms.ContentInfo.load(outer.content)
        if info["content_type"].native != "enveloped_data":
            raise ValueError(f"the outer layer holds {info['content_type'].native}, not an EnvelopedData")
        enveloped = info["content"]
        recipients = tuple(
            (ri.chosen["rid"].chosen["issuer"], int(ri.chosen["rid"].chosen["serial_number"].native))
            for ri in enveloped["recipient_infos"]
            if ri.name == "ktri" and ri.chosen["rid"].name == "issuer_and_serial_number"
        )
        transports = frozenset(
            ri.chosen["key_encryption_algorithm"]["algorithm"].native
            for ri in enveloped["recipient_infos"]
            if ri.name == "ktri"
        )
        cipher = enveloped["encrypted_content_info"]["content_encryption_algorithm"]["algorithm"].native
    except CmsError as error:
        raise CheckFailed(
            "the sealed message's outer layer is not a valid signed CMS message",
            expected="an outer CMS SignedData whose signature verifies",
            arrived=error.message,
            where=where,
            evidence=[sealed],
        ) from error
    except PARSE_ERRORS as error:
        raise CheckFailed(
            "the sealed message does not hold an EnvelopedData",
            expected="an outer CMS SignedData holding a CMS EnvelopedData",
            arrived=str(error) or type(error).__name__,
            where=where,
            evidence=[sealed],
        ) from error
    return _Envelope(recipients, transports, cipher)


def _asn1(certificate: x509.Certificate) -> ax509.Certificate:
    return ax509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))


# --- the payload and the answer ------------------------------------------------------------------------


def unsealed_payload(endpoint: Endpoint, sealed: Exchange) -> dict[str, Any]:
    """The Immunization inside the sealed message, opened with the register's key as at its arrival."""
    body = sealed.request_body
    where = f"{_request_line(sealed)}: the sealed payload"
    try:
        opened = endpoint.unseal(body if isinstance(body, bytes) else b"", at=sealed.started)
    except UnsealError as error:
        raise CheckFailed(
            "the sealed message cannot be opened with Vaccicard's key",
            expected=UNSEALING_CHECKS,
            arrived=f"{error.code}: {error.message}",
            where=where,
            evidence=[sealed],
        ) from error
    try:
        resource = json.loads(opened.payload)
    except ValueError as error:
        raise CheckFailed(
            "the unsealed payload is not JSON",
            expected="a BeVaccination Immunization as FHIR JSON",
            arrived=f"{len(opened.payload)} bytes that are not JSON",
            where=where,
            evidence=[sealed],
        ) from error
    if not isinstance(resource, dict) or resource.get("resourceType") != "Immunization":
        kind = resource.get("resourceType") if isinstance(resource, dict) else type(resource).__name__
        raise CheckFailed(
            "the unsealed payload is not an Immunization",
            expected="a BeVaccination Immunization as FHIR JSON",
            arrived=f"resourceType {kind}",
            where=where,
            evidence=[sealed],
        )
    return resource


def answered_sealed(action: Action, sealed: Exchange, endpoint: Endpoint) -> None:
    """The register answered sealed by Vaccicard, and the software showed the record it created."""
    where = f"{_request_line(sealed)}: the answer"
    signer = None
    body = sealed.response_body
    if _media_type(sealed.response_header("content-type")) == PKCS7_MIME and isinstance(body, bytes):
        try:
            signer = holder_identity(verify_signed(body, "the sealed answer").signer)
        except CmsError:
            signer = None
    if signer != REGISTER_HOLDER or sealed.response_status not in (200, 201):
        raise CheckFailed(
            "the register's answer is not a sealed success signed by Vaccicard",
            expected=f"HTTP 201 (or 200), application/pkcs7-mime, signed by {REGISTER_HOLDER}",
            arrived=f"HTTP {sealed.response_status}, {sealed.response_header('content-type') or 'no content type'}"
            + (f", signed by {signer}" if signer else ""),
            where=where,
            evidence=[sealed],
        )
    resource = unsealed_payload(endpoint, sealed)
    identifiers = resource.get("identifier") or [{}]
    key = (str(identifiers[0].get("system")), str(identifiers[0].get("value")))
    held = {record.get("id") for record in endpoint.records(identifier=key)}
    shown = set(action.result.record_ids)
    if not action.result.succeeded or not held or (shown and not shown & held):
        raise CheckFailed(
            "the software did not show the record the register created",
            expected=f"a confirmation naming Immunization/{', '.join(sorted(str(i) for i in held)) or '?'}",
            arrived=f"outcome {action.result.outcome}, record ids {sorted(shown) or 'none'}: "
            f"{action.result.message or '(no message)'}",
            where="the adapter's result",
            evidence=[sealed],
        )
