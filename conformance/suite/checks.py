"""The checks the Then-steps make: small named functions judging an ``Action`` (and the register).

Each check raises ``CheckFailed`` (an ``AssertionError``, so pytest counts a failure, not an error)
whose message says what was expected, what arrived and where (a FHIRPath expression or the HTTP
request), and which carries the FHIR issues and the ids of the exchanges it judged, for the report.
The checks know nothing of Gherkin; the steps only choose which to call.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from conformance.adapters.intents import (
    CorrectVaccination,
    Identifier,
    RecordVaccination,
)
from conformance.adapters.reference import ADMINISTERED_PRODUCT, LATERALITY, RECORDER
from conformance.belgium.identifiers import NIHDI_PROFESSIONAL
from conformance.belgium.identifiers import SSIN as SSIN_SYSTEM
from conformance.fhir.validator import Validator
from conformance.simulator.fhir_api import RULES_SYSTEM
from conformance.suite.endpoint import Endpoint
from conformance.suite.software import Action
from conformance.traffic.recorder import Exchange

__all__ = ["CheckFailed"]

BE_VACCINATION = "https://www.ehealth.fgov.be/standards/fhir/vaccination/StructureDefinition/be-vaccination"
STATUS_REASON_VS = (
    "https://www.ehealth.fgov.be/standards/fhir/vaccination/ValueSet/be-vs-vaccination-status-reason"
)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
_TOKEN_PARAMS = frozenset({"access_token", "token", "id_token", "bearer"})


class CheckFailed(AssertionError):
    """A Then-step's check did not hold: what was expected, what arrived, where."""

    def __init__(
        self,
        what: str,
        *,
        expected: str,
        arrived: str,
        where: str | None = None,
        issues: Sequence[Mapping[str, Any]] = (),
        evidence: Iterable[Exchange] = (),
    ) -> None:
        lines = [what, f"  expected: {expected}", f"  arrived:  {arrived}"]
        if where:
            lines.append(f"  where:    {where}")
        super().__init__("\n".join(lines))
        self.what = what
        self.expected = expected
        self.arrived = arrived
        self.where = where
        self.issues = [dict(issue) for issue in issues]
        self.evidence = [exchange.id for exchange in evidence]


def _request_line(exchange: Exchange) -> str:
    status = exchange.response_status if exchange.response_status is not None else "no answer"
    return f"{exchange.method} {exchange.path}{'?' + exchange.query if exchange.query else ''} -> {status}"


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- what the software reported ---------------------------------------------------------------------


def reported_success(action: Action, what: str) -> None:
    """The software reported the action as done."""
    if not action.result.succeeded:
        raise CheckFailed(
            f"the software did not report {what} as done",
            expected="outcome succeeded",
            arrived=f"outcome {action.result.outcome}: {action.result.message or '(no message)'}",
            where="the adapter's result",
            evidence=action.exchanges,
        )


def did_not_report_success(action: Action) -> None:
    """The software did not claim success."""
    if action.result.succeeded:
        raise CheckFailed(
            "the software reported success although the register did not store the vaccination",
            expected="outcome rejected or failed, so the user knows it is not recorded",
            arrived=f"outcome succeeded: {action.result.message or '(no message)'}",
            where="the adapter's result",
            evidence=action.exchanges,
        )


def told_unavailable(action: Action) -> None:
    """The software told the user the register could not be reached (outcome failed, with a message)."""
    if action.result.outcome != "failed" or not (action.result.message or "").strip():
        raise CheckFailed(
            "the software did not tell the user the register is unavailable",
            expected="outcome failed with a message for the user",
            arrived=f"outcome {action.result.outcome}: {action.result.message or '(no message)'}",
            where="the adapter's result",
            evidence=action.exchanges,
        )


def refusal_texts(exchange: Exchange) -> list[str]:
    """The texts of a refusal's OperationOutcome issues (details.text, else diagnostics)."""
    body = exchange.response_json
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return []
    texts = []
    for issue in body.get("issue", []):
        details = issue.get("details") if isinstance(issue.get("details"), dict) else {}
        text = details.get("text") or issue.get("diagnostics")
        if isinstance(text, str) and text.strip():
            texts.append(text.strip())
    return texts


def refusals(action: Action) -> list[Exchange]:
    """The FHIR exchanges of the action the register refused (4xx but 401, with an OperationOutcome)."""
    return [
        e
        for e in action.fhir_exchanges
        if e.response_status is not None and 400 <= e.response_status < 500 and e.response_status != 401
    ]


RULE_STATUS = {
    "discipline-not-recognised": 403,
    "discipline-may-not-record": 403,
    "patient-unknown": 403,
    "patient-no-consent": 403,
    "no-therapeutic-relationship": 403,
    "recorder-mismatch": 403,
    "occurrence-in-future": 422,
    "profile-invalid": 422,
}
"""The HTTP status of the register rules the scenarios name, for a register that does not name its rules."""


def rule_of(exchange: Exchange) -> str | None:
    """The register rule a refusal names: the simulator's annotation, else its OperationOutcome's coding."""
    if exchange.tags.get("rule"):
        return str(exchange.tags["rule"])
    body = exchange.response_json
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        for issue in body.get("issue", []):
            for coding in (issue.get("details") or {}).get("coding") or []:
                if coding.get("system") == RULES_SYSTEM:
                    return str(coding.get("code"))
    return None


def refused_with_rule(action: Action, rule: str) -> Exchange:
    """The register refused one of the action's requests with ``rule``; that exchange.

    A register whose refusals name no rule of ours (the real API's codes are not public) passes when
    it refused with the rule's HTTP status.
    """
    for exchange in refusals(action):
        named = rule_of(exchange)
        if named == rule or (named is None and exchange.response_status == RULE_STATUS.get(rule)):
            return exchange
    seen = [f"{_request_line(e)} ({rule_of(e)})" for e in action.fhir_exchanges]
    raise CheckFailed(
        f"the register did not refuse with rule {rule}",
        expected=f"a refusal with register rule {rule}",
        arrived="; ".join(seen) or "no request to the FHIR API",
        evidence=action.exchanges,
    )


def showed_reason(action: Action) -> None:
    """The software showed the user the text of the register's refusal."""
    refused = refusals(action)
    if not refused:
        raise CheckFailed(
            "the register refused nothing in this action",
            expected="a refusal whose reason the software shows",
            arrived="; ".join(_request_line(e) for e in action.fhir_exchanges) or "no request",
            evidence=action.exchanges,
        )
    shown = " ".join([action.result.message or "", *(issue.text for issue in action.result.issues)])
    texts = refusal_texts(refused[-1])
    if not texts or not any(text in shown for text in texts):
        raise CheckFailed(
            "the software did not show the register's reason",
            expected=f"the refusal's text: {_short(texts[0] if texts else '(OperationOutcome issue text)')}",
            arrived=f"the software showed: {_short(shown.strip() or '(nothing)')}",
            where=f"{_request_line(refused[-1])}: OperationOutcome.issue.details.text",
            evidence=refused,
        )


def not_sent_again(action: Action) -> None:
    """A refused request was not sent again (same method and path) after its refusal."""
    for position, exchange in enumerate(action.fhir_exchanges):
        if exchange in refusals(action):
            again = [
                e
                for e in action.fhir_exchanges[position + 1 :]
                if e.method == exchange.method and e.path == exchange.path and e.query == exchange.query
            ]
            if again:
                raise CheckFailed(
                    "the software sent a refused request again",
                    expected="no retry of a request the register refused for good",
                    arrived=f"{len(again)} more: {_request_line(again[0])}",
                    where=_request_line(exchange),
                    evidence=[exchange, *again],
                )


def messages_without_ssin(action: Action, ssin: str) -> None:
    """Nothing the software showed quotes the patient's SSIN."""
    shown = [action.result.message or "", *(issue.text for issue in action.result.issues)]
    if any(ssin in text for text in shown):
        raise CheckFailed(
            "the software's message quotes the patient's SSIN",
            expected="messages that name the patient without the national number",
            arrived="a message containing the SSIN (not reproduced here)",
            where="the adapter's result: message",
        )


def showed_no_vaccination(action: Action) -> None:
    """The software showed no vaccination."""
    if action.result.vaccinations:
        raise CheckFailed(
            "the software showed vaccinations although access was refused",
            expected="no vaccination shown",
            arrived=f"{len(action.result.vaccinations)} vaccination(s) shown",
            where="the adapter's result: vaccinations",
        )


# --- what the register received --------------------------------------------------------------------


def creates(action: Action) -> list[Exchange]:
    """The create requests (POST Immunization) of the action."""
    return action.requests("create")


def one_received(action: Action) -> tuple[Exchange, dict[str, Any]]:
    """Exactly one create request carrying an Immunization; it and its body."""
    sent = [e for e in creates(action) if isinstance(e.request_json, dict)]
    if len(sent) != 1:
        raise CheckFailed(
            "the register did not receive exactly one Immunization",
            expected="one POST Immunization",
            arrived=f"{len(sent)}: " + ("; ".join(_request_line(e) for e in sent) or "none"),
            evidence=action.exchanges,
        )
    return sent[0], sent[0].request_json  # type: ignore[return-value]


def last_received(action: Action, operation: str = "create") -> tuple[Exchange, dict[str, Any]]:
    """The last create (or update) request carrying an Immunization; it and its body."""
    sent = [e for e in action.requests(operation) if isinstance(e.request_json, dict)]
    if not sent:
        raise CheckFailed(
            f"the software sent no {operation}",
            expected=f"an Immunization {operation}",
            arrived="; ".join(_request_line(e) for e in action.fhir_exchanges) or "no FHIR request",
            evidence=action.exchanges,
        )
    return sent[-1], sent[-1].request_json  # type: ignore[return-value]


def conforms(validator: Validator, exchange: Exchange, resource: dict[str, Any]) -> None:
    """The resource conforms to be-vaccination: no error or fatal issue."""
    outcome = validator.validate(resource, BE_VACCINATION)
    errors = [i for i in outcome.issues if i.severity in ("error", "fatal")]
    if errors:
        issues = [
            {
                "severity": i.severity,
                "code": i.code,
                "expression": i.expression,
                "message": i.message,
                "rule": i.rule,
                "profile": i.profile,
            }
            for i in outcome.issues
        ]
        first = errors[0]
        raise CheckFailed(
            "the Immunization does not conform to be-vaccination",
            expected="no error against " + BE_VACCINATION,
            arrived=f"{len(errors)} error(s), first: {first.message}",
            where=first.expression or "Immunization",
            issues=issues,
            evidence=[exchange],
        )


def one_business_identifier(exchange: Exchange, resource: dict[str, Any]) -> Identifier:
    """Exactly one identifier with a system and a value."""
    identifiers = resource.get("identifier") or []
    if len(identifiers) != 1 or not identifiers[0].get("system") or not identifiers[0].get("value"):
        raise CheckFailed(
            "the Immunization does not carry one business identifier",
            expected="exactly one identifier with system and value",
            arrived=_short(identifiers) if identifiers else "no identifier",
            where="Immunization.identifier",
            evidence=[exchange],
        )
    return Identifier(identifiers[0]["system"], identifiers[0]["value"])


def patient_by_ssin(exchange: Exchange, resource: dict[str, Any], ssin: str) -> None:
    """``patient.identifier`` is the patient's SSIN in the core SSIN naming system."""
    identifier = (resource.get("patient") or {}).get("identifier") or {}
    wanted = {"system": SSIN_SYSTEM, "value": ssin}
    if {k: identifier.get(k) for k in wanted} != wanted:
        shown = (
            {**identifier, "value": "<the selected patient's SSIN>"}
            if identifier.get("value") == ssin
            else identifier
        )
        raise CheckFailed(
            "the patient is not identified by SSIN",
            expected=f"system {SSIN_SYSTEM} and the selected patient's SSIN",
            arrived=_short(shown) if identifier else "no patient.identifier",
            where="Immunization.patient.identifier",
            evidence=[exchange],
        )


def recorder_is(exchange: Exchange, resource: dict[str, Any], nihdi: str) -> None:
    """Exactly one be-ext-recorder, naming the logged-in professional's NIHDI number."""
    recorders = [e for e in resource.get("extension", []) if e.get("url") == RECORDER]
    named = [((e.get("valueReference") or {}).get("identifier") or {}) for e in recorders]
    if len(recorders) != 1 or named[0].get("value") != nihdi or named[0].get("system") != NIHDI_PROFESSIONAL:
        raise CheckFailed(
            "the recorder is not the logged-in professional",
            expected=f"one be-ext-recorder naming NIHDI {nihdi}",
            arrived=_short(named) if recorders else "no be-ext-recorder extension",
            where=f"Immunization.extension('{RECORDER}')",
            evidence=[exchange],
        )


def _product(resource: dict[str, Any]) -> dict[str, Any]:
    for extension in resource.get("extension", []):
        if extension.get("url") == ADMINISTERED_PRODUCT:
            return {part.get("url"): part for part in extension.get("extension", [])}
    return {}


def lot_in_product(exchange: Exchange, resource: dict[str, Any], intent: RecordVaccination) -> None:
    """Lot number and expiry are in be-ext-administeredProduct, never in lotNumber/expirationDate."""
    product = intent.product
    parts = _product(resource)
    misplaced = [name for name in ("lotNumber", "expirationDate") if name in resource]
    missing = []
    if product is not None and product.lot_number and "lotNumber" not in parts:
        missing.append("lotNumber")
    if product is not None and product.expiry and "expirationDate" not in parts:
        missing.append("expirationDate")
    if misplaced or missing:
        raise CheckFailed(
            "the lot is not where BeVaccination wants it",
            expected="lot number and expiry inside be-ext-administeredProduct only",
            arrived=(f"Immunization.{', '.join(misplaced)} used; " if misplaced else "")
            + (f"missing in the extension: {', '.join(missing)}" if missing else ""),
            where=f"Immunization.extension('{ADMINISTERED_PRODUCT}')",
            evidence=[exchange],
        )


def values_equal(exchange: Exchange, resource: dict[str, Any], intent: RecordVaccination) -> None:
    """The values in the Immunization equal what the professional entered."""
    expected: dict[str, Any] = {"vaccineCode.coding.code": intent.vaccine.code}
    if intent.occurrence:
        expected["occurrenceDateTime"] = intent.occurrence
    if intent.occurrence_text and not intent.occurrence:
        expected["occurrenceString"] = intent.occurrence_text
    if intent.product is not None:
        expected["administeredProduct.lotNumber"] = intent.product.lot_number
        expected["administeredProduct.expirationDate"] = intent.product.expiry
        expected["administeredProduct.coded.code"] = intent.product.cnk
    if intent.route is not None:
        expected["route.coding.code"] = intent.route.code
    if intent.body_site is not None:
        expected["site.coding.code"] = intent.body_site.site.code
    if intent.reaction is not None:
        expected["reaction.date"] = intent.reaction.date
    parts = _product(resource)
    codes = lambda value: [c.get("code") for c in (value or {}).get("coding", [])]  # noqa: E731
    arrived = {
        "vaccineCode.coding.code": codes(resource.get("vaccineCode")),
        "occurrenceDateTime": resource.get("occurrenceDateTime"),
        "occurrenceString": resource.get("occurrenceString"),
        "administeredProduct.lotNumber": (parts.get("lotNumber") or {}).get("valueString"),
        "administeredProduct.expirationDate": (parts.get("expirationDate") or {}).get("valueDate"),
        "administeredProduct.coded.code": codes((parts.get("coded") or {}).get("valueCodeableConcept")),
        "route.coding.code": codes(resource.get("route")),
        "site.coding.code": codes(resource.get("site")),
        "reaction.date": [r.get("date") for r in resource.get("reaction", [])],
    }
    for path, value in expected.items():
        if value is None:
            continue
        got = arrived[path]
        if got != value and not (isinstance(got, list) and value in got):
            raise CheckFailed(
                "a value differs from what the professional entered",
                expected=f"{path} = {value!r}",
                arrived=f"{path} = {got!r}",
                where=f"Immunization.{path}",
                evidence=[exchange],
            )


def laterality_given(exchange: Exchange, resource: dict[str, Any], intent: RecordVaccination) -> None:
    """The side of the body site is in the bodyLaterality extension of ``site``."""
    if intent.body_site is None or intent.body_site.laterality is None:
        return
    sides = [e for e in (resource.get("site") or {}).get("extension", []) if e.get("url") == LATERALITY]
    if not sides:
        raise CheckFailed(
            "the side of the body site is missing",
            expected=f"site.extension('{LATERALITY}') for the {intent.body_site.laterality} side",
            arrived=_short(resource.get("site")),
            where="Immunization.site.extension",
            evidence=[exchange],
        )


def place_contained(exchange: Exchange, resource: dict[str, Any]) -> None:
    """The place is a contained Encounter with its Location; Immunization.location is not used."""
    contained = {c.get("id"): c for c in resource.get("contained", []) if isinstance(c, dict)}
    reference = ((resource.get("encounter") or {}).get("reference") or "").removeprefix("#")
    encounter = contained.get(reference)
    locations = [
        (loc.get("location") or {}).get("reference", "").removeprefix("#")
        for loc in (encounter or {}).get("location", [])
    ]
    if (
        "location" in resource
        or encounter is None
        or encounter.get("resourceType") != "Encounter"
        or not any(contained.get(ref, {}).get("resourceType") == "Location" for ref in locations)
    ):
        raise CheckFailed(
            "the place of vaccination is not a contained Encounter with its Location",
            expected="encounter -> #contained Encounter whose location -> #contained Location; no Immunization.location",
            arrived=f"encounter={_short(resource.get('encounter'))}, location={_short(resource.get('location'))}",
            where="Immunization.encounter.resolve().location.location",
            evidence=[exchange],
        )


def occurrence_string(exchange: Exchange, resource: dict[str, Any], text: str) -> None:
    """The occurrence is sent as ``occurrenceString`` with the reported text."""
    if resource.get("occurrenceString") != text:
        raise CheckFailed(
            "the reported date is not sent as occurrenceString",
            expected=f"occurrenceString = {text!r}",
            arrived=f"occurrenceString = {resource.get('occurrenceString')!r}, "
            f"occurrenceDateTime = {resource.get('occurrenceDateTime')!r}",
            where="Immunization.occurrence[x]",
            evidence=[exchange],
        )


def reaction_with_detail(exchange: Exchange, resource: dict[str, Any]) -> None:
    """Each reaction has a date and its detail refers to a contained Observation."""
    reactions = resource.get("reaction") or []
    contained = {c.get("id"): c for c in resource.get("contained", []) if isinstance(c, dict)}
    for position, reaction in enumerate(reactions):
        target = ((reaction.get("detail") or {}).get("reference") or "").removeprefix("#")
        if not reaction.get("date") or contained.get(target, {}).get("resourceType") != "Observation":
            raise CheckFailed(
                "the reaction lacks its date or its Observation",
                expected="reaction.date and reaction.detail -> #contained Observation",
                arrived=_short(reaction),
                where=f"Immunization.reaction[{position}]",
                evidence=[exchange],
            )
    if not reactions:
        raise CheckFailed(
            "no reaction was sent",
            expected="Immunization.reaction with a date",
            arrived="no reaction",
            where="Immunization.reaction",
            evidence=[exchange],
        )


def not_done_with_reason(exchange: Exchange, resource: dict[str, Any], code: str) -> None:
    """Status not-done with that statusReason code."""
    codes = [c.get("code") for c in (resource.get("statusReason") or {}).get("coding", [])]
    if resource.get("status") != "not-done" or code not in codes:
        raise CheckFailed(
            "the vaccination not given is not sent as not-done with its reason",
            expected=f"status not-done, statusReason {code}",
            arrived=f"status {resource.get('status')!r}, statusReason {codes}",
            where="Immunization.statusReason",
            evidence=[exchange],
        )


def status_reason_bound(validator: Validator, exchange: Exchange, resource: dict[str, Any]) -> None:
    """Every statusReason coding is in be-vs-vaccination-status-reason."""
    terminology = validator.terminology
    for coding in (resource.get("statusReason") or {}).get("coding", []):
        check = terminology.validate_code(STATUS_REASON_VS, coding.get("system"), coding.get("code"))
        if check.status != "valid":
            raise CheckFailed(
                "the status reason is not in its bound value set",
                expected=f"a code of {STATUS_REASON_VS}",
                arrived=f"{coding.get('system')}|{coding.get('code')}: {check.message}",
                where="Immunization.statusReason.coding",
                evidence=[exchange],
            )


def no_product(exchange: Exchange, resource: dict[str, Any]) -> None:
    """A vaccination not given names no administered product."""
    if _product(resource) or "lotNumber" in resource:
        raise CheckFailed(
            "a vaccination not given names an administered product",
            expected="no be-ext-administeredProduct and no lotNumber",
            arrived=_short(_product(resource) or resource.get("lotNumber")),
            where=f"Immunization.extension('{ADMINISTERED_PRODUCT}')",
            evidence=[exchange],
        )


def same_identifier_on_creates(action: Action) -> None:
    """Every create of the action carried the same business identifier."""
    keys = [
        tuple((i.get("system"), i.get("value")) for i in (e.request_json or {}).get("identifier", []))
        for e in creates(action)
        if isinstance(e.request_json, dict)
    ]
    if len(set(keys)) != 1 or keys[0] == ():
        raise CheckFailed(
            "the creates do not all carry the same business identifier",
            expected="one business identifier on every attempt",
            arrived=f"{len(keys)} create(s) with identifiers {_short(keys)}",
            where="Immunization.identifier",
            evidence=creates(action),
        )


def sent_again(action: Action, operation: str = "create") -> None:
    """The software sent the request again after the failure."""
    if len(action.requests(operation)) < 2:
        raise CheckFailed(
            "the software did not send the request again",
            expected=f"a second {operation} after the register's failure",
            arrived="; ".join(_request_line(e) for e in action.fhir_exchanges) or "no request",
            evidence=action.exchanges,
        )


def waited_retry_after(action: Action) -> None:
    """After each 429/503 with Retry-After, the next request came no sooner than it said."""
    exchanges = action.fhir_exchanges
    for position, exchange in enumerate(exchanges[:-1]):
        header = exchange.response_header("retry-after")
        if exchange.response_status not in (429, 503) or not header or not header.strip().isdigit():
            continue
        answered = exchange.started.timestamp() + exchange.duration_ms / 1000.0
        following = exchanges[position + 1]
        waited = following.started.timestamp() - answered
        if waited + 0.05 < float(header):
            raise CheckFailed(
                "the software did not wait as Retry-After said",
                expected=f"the next request at least {header} s after the {exchange.response_status}",
                arrived=f"{_request_line(following)} after {waited:.2f} s",
                where=_request_line(exchange),
                evidence=[exchange, following],
            )
    if not any(e.response_status in (429, 503) for e in exchanges):
        raise CheckFailed(
            "the register answered no 429 or 503 in this action",
            expected="a 429/503 with Retry-After, then a later request",
            arrived="; ".join(_request_line(e) for e in exchanges) or "no request",
            evidence=action.exchanges,
        )


def register_holds_one(endpoint: Endpoint, identifier: Identifier | None) -> dict[str, Any]:
    """The register holds exactly one record with that business identifier; its current version."""
    if identifier is None:
        raise CheckFailed(
            "the software reported no business identifier for the vaccination",
            expected="the record's business identifier, from the intent or the software's answer",
            arrived="none",
            where="the adapter's result: business_identifiers",
        )
    found = endpoint.records(identifier=(identifier.system, identifier.value))
    if len(found) != 1:
        raise CheckFailed(
            "the register does not hold exactly one record for the vaccination",
            expected=f"one record with identifier {identifier.system}|{identifier.value}",
            arrived=f"{len(found)} record(s)",
            where="Immunization?identifier=" + f"{identifier.system}|{identifier.value}",
        )
    return found[0]


# --- login and tokens ------------------------------------------------------------------------------


def _form(exchange: Exchange) -> dict[str, str]:
    from urllib.parse import parse_qsl

    body = exchange.request_body
    if isinstance(body, bytes):
        return dict(parse_qsl(body.decode("utf-8", "replace")))
    return {}


def pkce_login(exchanges: Sequence[Exchange]) -> None:
    """An authorization request with an S256 code challenge, redeemed with a code verifier."""
    authorize = [e for e in exchanges if e.path.endswith("/protocol/openid-connect/auth")]
    tokens = [e for e in exchanges if e.path.endswith("/protocol/openid-connect/token")]
    params = [dict(e.query_params) for e in authorize]
    pkce = [p for p in params if p.get("code_challenge_method") == "S256" and p.get("code_challenge")]
    redeemed = [e for e in tokens if _form(e).get("grant_type") == "authorization_code"]
    if not pkce or not redeemed or not all(_form(e).get("code_verifier") for e in redeemed):
        raise CheckFailed(
            "the professional was not logged in with the authorisation code flow and PKCE S256",
            expected="GET .../auth with code_challenge_method=S256, then a token request with code_verifier",
            arrived=f"{len(authorize)} authorization request(s), {len(redeemed)} code redemption(s)",
            where="IAM Connect realm healthcare",
            evidence=[*authorize, *tokens],
        )


def exchanged_tokens(exchanges: Sequence[Exchange], audience: str = "vaccicard-api") -> set[str]:
    """The fingerprints of the tokens IAM Connect issued by token exchange for ``audience``."""
    issued = set()
    for exchange in exchanges:
        form = _form(exchange)
        body = exchange.response_json
        if (
            form.get("grant_type") == "urn:ietf:params:oauth:grant-type:token-exchange"
            and form.get("audience") == audience
            and exchange.response_status == 200
            and isinstance(body, dict)
        ):
            issued.add(str(body.get("access_token")))
    if not issued:
        raise CheckFailed(
            "the software did not exchange its token for one meant for Vaccicard",
            expected=f"an RFC 8693 token exchange with audience {audience}",
            arrived="no successful token exchange",
            where="IAM Connect token endpoint",
            evidence=exchanges,
        )
    return issued


def bearer_only_in_header(exchanges: Sequence[Exchange], issued: set[str]) -> None:
    """Every accepted FHIR request carried an exchanged token in Authorization, and none had a token in its URL."""
    for exchange in exchanges:
        if exchange.resource_type is None and exchange.operation != "search":
            continue  # IAM Connect, or the CapabilityStatement (no token needed)
        header = exchange.request_header("authorization") or ""
        names = {name.lower() for name, _ in exchange.query_params}
        in_url = names & _TOKEN_PARAMS or _JWT.search(exchange.url)
        stale = exchange.response_status == 401  # a token from before the login the scenario judges
        if in_url or (not stale and header.removeprefix("Bearer ") not in issued):
            raise CheckFailed(
                "a request did not carry the Vaccicard token in the Authorization header only",
                expected="Authorization: Bearer <the exchanged token>, and no token in the URL",
                arrived=("a token in the URL query" if in_url else f"Authorization: {header or '(none)'}"),
                where=_request_line(exchange),
                evidence=[exchange],
            )


def answered_expired(action: Action) -> Exchange:
    """The register answered one of the action's requests 401 for an expired token; that exchange."""
    expired = [
        e for e in action.exchanges if e.response_status == 401 and e.tags.get("rule") == "token-expired"
    ]
    if not expired:
        raise CheckFailed(
            "the register did not answer 401 for an expired token",
            expected="a 401 with rule token-expired",
            arrived="; ".join(_request_line(e) for e in action.fhir_exchanges) or "no request",
            evidence=action.exchanges,
        )
    return expired[0]


def renewed_after(action: Action, expired: Exchange) -> None:
    """The software asked IAM Connect for a new token after the 401."""
    later = [e for e in action.exchanges if e.id > expired.id and e.path.endswith("/token")]
    if not later:
        raise CheckFailed(
            "the software did not renew its token after the 401",
            expected="a request to the token endpoint after the 401",
            arrived="no token request",
            where=_request_line(expired),
            evidence=[expired],
        )


# --- history ---------------------------------------------------------------------------------------


def searched_by_ssin(action: Action, ssin: str) -> None:
    """The first search named the patient by SSIN (patient.identifier) with supported parameters only."""
    searches = action.requests("search")
    if not searches:
        raise CheckFailed(
            "the software did not search the register",
            expected="GET Immunization?patient.identifier=<SSIN system>|<SSIN>",
            arrived="; ".join(_request_line(e) for e in action.fhir_exchanges) or "no request",
            evidence=action.exchanges,
        )
    first = searches[0]
    params = dict(first.query_params)
    if isinstance(first.request_body, bytes) and first.method == "POST":
        params.update(_form(first))
    named = params.get("patient.identifier") or params.get("patient:identifier")
    if named != f"{SSIN_SYSTEM}|{ssin}" or (first.response_status or 0) >= 400:
        raise CheckFailed(
            "the software did not search by the patient's SSIN with supported parameters",
            expected=f"patient.identifier={SSIN_SYSTEM}|<SSIN>, answered 200",
            arrived=f"{sorted(params)} -> {first.response_status}",
            where=_request_line(first),
            evidence=[first],
        )


def followed_next(action: Action) -> None:
    """Every page of the search was fetched: the last page read has no next link."""
    searches = [e for e in action.requests("search") if isinstance(e.response_json, dict)]
    if not searches:
        raise CheckFailed(
            "no search answer", expected="search pages", arrived="none", evidence=action.exchanges
        )
    bundle = searches[-1].response_json
    total = bundle.get("total")  # type: ignore[union-attr]
    nexts = [link for link in bundle.get("link", []) if link.get("relation") == "next"]  # type: ignore[union-attr]
    if nexts:
        page = max(1, len(bundle.get("entry", [])))  # type: ignore[union-attr]
        raise CheckFailed(
            "the software did not follow the next links to the last page",
            expected=f"{math.ceil((total or 0) / page)} page(s) read",
            arrived=f"{len(searches)} page(s) read; the last one still has a next link",
            where=_request_line(searches[-1]) + ": Bundle.link.where(relation='next')",
            evidence=searches,
        )


def _content_key(vaccine: str | None, occurrence: Any) -> tuple[str | None, str]:
    return vaccine, str(occurrence or "")[:10]


def shown_records(action: Action, held: Sequence[Mapping[str, Any]]) -> list[str | None]:
    """The register record each vaccination the software shows stands for (None: none of them).

    By record id when the software reports one; otherwise (an operator typing what the screen shows)
    by vaccine code and date, each record standing for one line at most.
    """
    ids = {r["id"] for r in held}
    unmatched = {
        r["id"]: _content_key(((r.get("vaccineCode") or {}).get("coding") or [{}])[0].get("code"), _date(r))
        for r in held
    }
    matched: list[str | None] = []
    for shown in action.result.vaccinations:
        if shown.record_id is not None:
            matched.append(shown.record_id if shown.record_id in ids else None)
            unmatched.pop(shown.record_id, None)
            continue
        key = _content_key(shown.vaccine.code if shown.vaccine else None, shown.occurrence)
        found = next((record for record, content in unmatched.items() if content == key), None)
        if found is not None:
            del unmatched[found]
        matched.append(found)
    return matched


def _date(record: Mapping[str, Any]) -> Any:
    return record.get("occurrenceDateTime") or record.get("occurrenceString")


def history_matches_register(action: Action, endpoint: Endpoint, ssin: str) -> None:
    """The software shows each of the patient's records once (cancelled ones only as cancelled)."""
    held = endpoint.records(patient=ssin)
    shown = shown_records(action, held)
    valid = {r["id"] for r in held if r.get("status") != "entered-in-error"}
    missing = sorted(valid - set(shown))
    twice = sorted({record for record in shown if record is not None and shown.count(record) > 1})
    unknown = shown.count(None)
    if missing or twice or unknown:
        raise CheckFailed(
            "the history shown differs from what the register holds",
            expected=f"{len(valid)} valid vaccination(s), each once",
            arrived=f"{len(shown)} shown; missing {len(missing)}, shown twice {len(twice)}, unknown {unknown}",
            where="the adapter's result: vaccinations",
            evidence=action.requests("search"),
        )


def cancelled_not_given(action: Action, endpoint: Endpoint, ssin: str) -> None:
    """Records with status entered-in-error are hidden or shown as cancelled."""
    held = endpoint.records(patient=ssin)
    cancelled = {r["id"] for r in held if r.get("status") == "entered-in-error"}
    if not cancelled:
        raise CheckFailed(
            "the register holds no cancelled vaccination for the patient",
            expected="an entered-in-error record",
            arrived="none",
        )
    pairs = zip(action.result.vaccinations, shown_records(action, held), strict=True)
    wrong = [shown for shown, record in pairs if record in cancelled and shown.status != "cancelled"]
    if wrong:
        raise CheckFailed(
            "a cancelled vaccination is shown as given",
            expected="entered-in-error records hidden or shown as cancelled",
            arrived=f"{len(wrong)} shown as {wrong[0].status}",
            where="the adapter's result: vaccinations[].status",
        )


# --- correction and cancellation --------------------------------------------------------------------


def updated_in_place(action: Action, record_id: str) -> None:
    """The software updated that record with PUT and created no new one."""
    updates = [e for e in action.requests("update") if e.path.endswith(f"/Immunization/{record_id}")]
    if not updates or creates(action):
        raise CheckFailed(
            "the correction is not an update of the same record",
            expected=f"PUT Immunization/{record_id}, and no POST",
            arrived="; ".join(_request_line(e) for e in action.fhir_exchanges) or "no request",
            evidence=action.exchanges,
        )


def if_match_current(action: Action) -> None:
    """Every PUT carried If-Match with the version of the last read of that record."""
    updates = action.requests("update")
    if not updates:
        raise CheckFailed(
            "the software sent no update",
            expected="PUT Immunization/<id> with If-Match",
            arrived="; ".join(_request_line(e) for e in action.fhir_exchanges) or "no request",
            evidence=action.exchanges,
        )
    for update in updates:
        reads = [
            e
            for e in action.exchanges
            if e.id < update.id and e.method == "GET" and e.path == update.path and e.response_status == 200
        ]
        version = (reads[-1].response_json or {}).get("meta", {}).get("versionId") if reads else None  # type: ignore[union-attr]
        header = update.request_header("if-match")
        if header is None or (
            version is not None and header.strip() not in (f'W/"{version}"', f'"{version}"')
        ):
            raise CheckFailed(
                "an update does not name the version the software last read",
                expected=f'If-Match: W/"{version}"' if version else "If-Match with the version read",
                arrived=f"If-Match: {header}" if header else "no If-Match",
                where=_request_line(update),
                evidence=[*reads[-1:], update],
            )


def kept_identity(action: Action, before: dict[str, Any]) -> tuple[Exchange, dict[str, Any]]:
    """The update kept the business identifier and the patient of the record; the update and its body."""
    exchange, resource = last_received(action, "update")
    for path in ("identifier", "patient"):
        if resource.get(path) != before.get(path):
            raise CheckFailed(
                f"the update changed the record's {path}",
                expected=_short(before.get(path)),
                arrived=_short(resource.get(path)),
                where=f"Immunization.{path}",
                evidence=[exchange],
            )
    return exchange, resource


def current_has(record: dict[str, Any], intent: CorrectVaccination) -> None:
    """The register's current version carries the corrected values."""
    parts = _product(record)
    expected = []
    if intent.product is not None and intent.product.lot_number:
        expected.append(
            ("lotNumber", intent.product.lot_number, (parts.get("lotNumber") or {}).get("valueString"))
        )
    if intent.product is not None and intent.product.expiry:
        expected.append(
            ("expirationDate", intent.product.expiry, (parts.get("expirationDate") or {}).get("valueDate"))
        )
    if intent.occurrence:
        expected.append(("occurrenceDateTime", intent.occurrence, record.get("occurrenceDateTime")))
    for name, wanted, got in expected:
        if wanted != got:
            raise CheckFailed(
                "the register's current version lacks the correction",
                expected=f"{name} = {wanted!r}",
                arrived=f"{name} = {got!r}",
                where=f"Immunization/{record.get('id')} version {record.get('meta', {}).get('versionId')}",
            )


def reread_after_conflict(action: Action) -> None:
    """After a 412 the software read the record again before its next write."""
    for position, exchange in enumerate(action.fhir_exchanges):
        if exchange.response_status == 412:
            rest = action.fhir_exchanges[position + 1 :]
            writes = [e for e in rest if e.method in ("PUT", "POST", "PATCH", "DELETE")]
            reads = [e for e in rest if e.method == "GET" and e.path == exchange.path]
            if writes and (not reads or reads[0].id > writes[0].id):
                raise CheckFailed(
                    "the software wrote again after a 412 without reading the record again",
                    expected=f"GET {exchange.path} before the next write",
                    arrived=_request_line(writes[0]),
                    where=_request_line(exchange),
                    evidence=[exchange, writes[0]],
                )
            return
    raise CheckFailed(
        "the register answered no 412 in this action",
        expected="a 412 then a new read",
        arrived="; ".join(_request_line(e) for e in action.fhir_exchanges) or "no request",
        evidence=action.exchanges,
    )


def no_delete(action: Action) -> None:
    """The software sent no HTTP DELETE."""
    deletes = action.requests(method="DELETE")
    if deletes:
        raise CheckFailed(
            "the software cancelled with DELETE",
            expected="an update to status entered-in-error",
            arrived=_request_line(deletes[0]),
            evidence=deletes,
        )


def entered_in_error(exchange: Exchange, resource: dict[str, Any]) -> None:
    """The update sets status entered-in-error."""
    if resource.get("status") != "entered-in-error":
        raise CheckFailed(
            "the cancellation does not set entered-in-error",
            expected="status entered-in-error",
            arrived=f"status {resource.get('status')!r}",
            where="Immunization.status",
            evidence=[exchange],
        )


# --- access and capabilities -------------------------------------------------------------------------


def only_patient(action: Action, ssin: str) -> None:
    """The software asked the register about no patient but ``ssin``."""
    others = set()
    for exchange in action.fhir_exchanges:
        for name, value in exchange.query_params:
            if name in ("patient.identifier", "patient:identifier") and not value.endswith("|" + ssin):
                others.add(exchange.id)
        body = exchange.request_json
        if isinstance(body, dict):
            named = ((body.get("patient") or {}).get("identifier") or {}).get("value")
            if named is not None and named != ssin:
                others.add(exchange.id)
    if others:
        raise CheckFailed(
            "the software asked the register about another patient after the refusal",
            expected="requests about the selected patient only",
            arrived=f"{len(others)} request(s) about another identifier",
            evidence=[e for e in action.exchanges if e.id in others],
        )


def within_capabilities(action: Action, capability: dict[str, Any]) -> None:
    """Every FHIR request used an interaction and search parameters the CapabilityStatement states."""
    resources = {r.get("type"): r for rest in capability.get("rest", []) for r in rest.get("resource", [])}
    interactions = {
        "create": "create",
        "read": "read",
        "update": "update",
        "delete": "delete",
        "search": "search-type",
    }
    for exchange in action.fhir_exchanges:
        if exchange.operation in (None, "metadata") or exchange.resource_type is None:
            continue
        declared = resources.get(exchange.resource_type) or {}
        codes = {i.get("code") for i in declared.get("interaction", [])}
        wanted = interactions.get(exchange.operation, exchange.operation)
        params = {p.get("name") for p in declared.get("searchParam", [])} | {
            "_count",
            "_offset",
            "_sort",
            "_format",
            "_summary",
            "_elements",
        }
        used = {name.split(":")[0] for name, _ in exchange.query_params}
        unknown = sorted(u for u in used if u not in params and u.split(".")[0] not in params)
        if wanted not in codes or (exchange.operation == "search" and unknown):
            raise CheckFailed(
                "the software used something the CapabilityStatement does not state",
                expected=f"interactions {sorted(c for c in codes if c)}; search parameters {sorted(p for p in params if p)}",
                arrived=f"{wanted}" + (f" with {unknown}" if unknown else ""),
                where=_request_line(exchange),
                evidence=[exchange],
            )


def nothing_received(action: Action) -> None:
    """The register received nothing during the action."""
    if action.exchanges:
        raise CheckFailed(
            "the software talked to a register whose certificate it could not verify",
            expected="no request over a connection whose certificate is not trusted",
            arrived=f"{len(action.exchanges)} request(s), first: {_request_line(action.exchanges[0])}",
            evidence=action.exchanges,
        )
