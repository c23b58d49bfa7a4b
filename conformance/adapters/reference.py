"""The reference adapter: a correct built-in Vaccicard client, the baseline every check must pass.

``ReferenceAdapter(fhir_base_url, iam_base_url, professional=<SSIN or NIHDI>)`` does what a good vendor
integration does, over httpx:

* logs the professional in through IAM Connect (realm ``healthcare``): authorization code with PKCE
  S256 (the professional chosen by ``login_hint``: the intent's ``professional``, else the adapter's),
  then an RFC 8693 token exchange to the audience
  ``vaccicard-api``; the token is renewed shortly before it expires (refresh token, else a new login)
  and once more when the API answers 401;
* builds a BeVaccination Immunization from the intent: the recorder extension names the logged-in
  professional's NIHDI number, CNK, lot number and expiry go in ``be-ext-administeredProduct`` (never
  ``lotNumber``), a care setting becomes a contained Encounter and Location, the patient is named by SSIN
  identifier, and the business identifier is stable (taken from the intent or made once per intent);
* creates with conditional create (``If-None-Exist: identifier=system|value``) and retries 503/429
  (honouring ``Retry-After``) and transport errors with the same business identifier, so a lost answer
  never makes a second record;
* reads the history by ``patient.identifier`` following ``next`` links, showing entered-in-error
  records as ``cancelled``; corrects with a read then ``PUT`` with ``If-Match`` (read again on 412);
  cancels with an update to ``entered-in-error`` (never ``DELETE``);
* turns 4xx OperationOutcomes into ``rejected`` results carrying the issues' texts, and a register that
  stays unavailable into ``failed``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import secrets
import ssl
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from conformance.adapters.etee_client import EteeFailure, EteeOptions
from conformance.adapters.intents import (
    AdapterResult,
    AdministeredProduct,
    BodySite,
    CancelVaccination,
    CareSetting,
    Coding,
    CorrectVaccination,
    DisplayedVaccination,
    Identifier,
    Intent,
    Issue,
    Reaction,
    ReadHistory,
    RecordNotDone,
    RecordVaccination,
)
from conformance.errors import ConfigurationError, TargetUnreachableError
from conformance.live.iam import AuthenticationError, TokenProvider

__all__ = [
    "DEFAULT_IDENTIFIER_SYSTEM",
    "ReferenceAdapter",
    "RegisterUnavailable",
    "displayed_vaccination",
    "raise_for_refusal",
    "recorder_extension",
]

CORE = "https://www.ehealth.fgov.be/standards/fhir/core/"
VACCINATION = "https://www.ehealth.fgov.be/standards/fhir/vaccination/"
BE_VACCINATION = VACCINATION + "StructureDefinition/be-vaccination"
RECORDER = CORE + "StructureDefinition/be-ext-recorder"
ADMINISTERED_PRODUCT = VACCINATION + "StructureDefinition/be-ext-administeredProduct"
LATERALITY = "https://www.ehealth.fgov.be/standards/fhir/core-clinical/StructureDefinition/be-ext-laterality"
CARE_LOCATION = VACCINATION + "CodeSystem/be-cs-care-location"
SSIN_SYSTEM = CORE + "NamingSystem/ssin"
NIHDI_PROFESSIONAL = CORE + "NamingSystem/nihdi-professional"
CNK_SYSTEM = "https://www.ehealth.fgov.be/standards/fhir/medication/NamingSystem/be-ns-cnk-codes"
SNOMED = "http://snomed.info/sct"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
LATERALITY_CODES = {"left": ("419161000", "Unilateral left"), "right": ("419465000", "Unilateral right")}
DEFAULT_IDENTIFIER_SYSTEM = "https://vaccicard-conformance.example/reference-adapter/vaccinations"
DEFAULT_CLIENT_ID = "vendor-software"
DEFAULT_REDIRECT_URI = "http://127.0.0.1:53682/callback"
DEFAULT_AUDIENCE = "vaccicard-api"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
FHIR_JSON = "application/fhir+json"
RETRY_STATUSES = frozenset({429, 502, 503, 504})


class RegisterUnavailable(Exception):
    """The register stayed unavailable (or unreachable) after every retry."""


@dataclass
class _Token:
    access: str
    expires_at: float
    refresh: str | None
    claims: dict[str, Any]


class ReferenceAdapter:
    """A correct Vaccicard client carrying out intents (see the module docstring)."""

    def __init__(
        self,
        fhir_base_url: str,
        iam_base_url: str,
        *,
        professional: str,
        client_id: str = DEFAULT_CLIENT_ID,
        redirect_uri: str = DEFAULT_REDIRECT_URI,
        audience: str = DEFAULT_AUDIENCE,
        identifier_system: str = DEFAULT_IDENTIFIER_SYSTEM,
        max_attempts: int = 5,
        max_wait: float = 30.0,
        renew_margin: float = 30.0,
        timeout: float = 30.0,
        verify: bool | str | ssl.SSLContext = True,
        token_provider: TokenProvider | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        etee: EteeOptions | None = None,
    ) -> None:
        """``iam_base_url``: IAM Connect's base (``.../auth``) or the realm's issuer (``.../realms/healthcare``).

        ``professional``: the SSIN or NIHDI number used as ``login_hint``. ``max_attempts``: tries per
        request on 429/5xx/transport errors; ``max_wait``: the longest ``Retry-After`` honoured.
        ``verify``: TLS trust (httpx's: True for the system store, a CA bundle path or an SSLContext).
        ``token_provider``: where tokens come from instead of the built-in login (the live client of
        ``conformance.live.iam``: a browser login at the acceptance environment, or an organisation).
        ``sleep``/``clock`` are injectable so tests need not wait. ``etee``: the encrypted variant (ETK
        depot, encrypted endpoint, the professionals' eHealth keys, trust anchors); without it an
        encrypted intent fails, saying the variant is not configured.
        """
        if max_attempts < 1:
            raise ConfigurationError("max_attempts must be at least 1")
        self.fhir_base_url = fhir_base_url.rstrip("/")
        iam = iam_base_url.rstrip("/")
        self.issuer = iam if "/realms/" in iam else iam + "/realms/healthcare"
        self.professional = professional
        self.client_id = client_id
        self.redirect_uri = redirect_uri
        self.audience = audience
        self.identifier_system = identifier_system
        self.max_attempts = max_attempts
        self.retry_statuses = RETRY_STATUSES
        self.max_wait = max_wait
        self.renew_margin = renew_margin
        self.sleep = sleep
        self.clock = clock
        self.etee = etee
        sealing = etee.transport(httpx.HTTPTransport(verify=verify), lambda: self._acting) if etee else None
        self.http = httpx.Client(timeout=timeout, follow_redirects=False, verify=verify, transport=sealing)
        self.token_provider = token_provider
        self._tokens: dict[str, _Token] = {}
        self._acting = professional
        self._discovery: dict[str, Any] | None = None

    def close(self) -> None:
        """Close the HTTP connections."""
        self.http.close()

    def __enter__(self) -> ReferenceAdapter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the Adapter protocol ---------------------------------------------------------------------

    def perform(self, intent: Intent) -> AdapterResult:
        """Carry out ``intent`` against the register and report what a user would see.

        Register and IAM refusals are ``rejected`` results, a register that stays unavailable a
        ``failed`` one; an invalid intent raises ``ConfigurationError`` and an IAM Connect that cannot
        be reached at all ``TargetUnreachableError``.
        """
        intent.to_json()  # the intent must be valid before anything is sent
        self._acting = intent.professional or self.professional
        try:
            if isinstance(intent, RecordVaccination | RecordNotDone):
                result = self._record(intent)
            elif isinstance(intent, ReadHistory):
                result = self._history(intent)
            elif isinstance(intent, CorrectVaccination):
                result = self._correct(intent)
            elif isinstance(intent, CancelVaccination):
                result = self._cancel(intent)
            else:  # pragma: no cover - every intent type is handled above
                raise ConfigurationError(f"the reference adapter cannot perform {type(intent).__name__}")
        except _Rejected as rejected:
            result = rejected.result
        except RegisterUnavailable as error:
            result = AdapterResult(outcome="failed", message=str(error))
        result.to_json()  # the answer is checked like any adapter's
        return result

    # --- IAM Connect ------------------------------------------------------------------------------

    @property
    def nihdi(self) -> str:
        """The logged-in professional's NIHDI number (11 digits), from the Vaccicard token."""
        claims = self._access_token().claims
        profile = claims.get("userProfile")
        if isinstance(profile, Mapping):
            for value in profile.values():
                if isinstance(value, Mapping) and isinstance(value.get("nihii11"), str):
                    return value["nihii11"]
        raise ConfigurationError("the Vaccicard token does not name the professional's NIHDI number")

    def _endpoints(self) -> dict[str, Any]:
        if self._discovery is None:
            url = self.issuer + "/.well-known/openid-configuration"
            try:
                answer = self.http.get(url)
            except httpx.TransportError as error:
                raise TargetUnreachableError(f"IAM Connect is unreachable at {url}: {error}") from error
            if answer.status_code != 200:
                raise TargetUnreachableError(f"IAM Connect discovery {url} answered {answer.status_code}")
            self._discovery = answer.json()
        return self._discovery

    def _access_token(self) -> _Token:
        if self.token_provider is not None:
            force = self._acting not in self._tokens  # forgotten after a 401: ask for a new one
            try:
                access = self.token_provider.access_token(force_renew=force)
            except AuthenticationError as error:
                raise _Rejected.login(error.message) from None
            token = self._tokens[self._acting] = _Token(
                access, float("inf"), None, dict(self.token_provider.claims)
            )
            return token
        token = self._tokens.get(self._acting)
        if token is None or self.clock() >= token.expires_at - self.renew_margin:
            token = self._tokens[self._acting] = self._renew(token)
        return token

    def _renew(self, old: _Token | None) -> _Token:
        try:
            return self._renew_over_http(old)
        except httpx.TransportError as error:
            raise TargetUnreachableError(f"IAM Connect is unreachable at {self.issuer}: {error}") from error

    def _renew_over_http(self, old: _Token | None) -> _Token:
        subject: dict[str, Any] | None = None
        if old is not None and old.refresh:
            answer = self.http.post(
                self._endpoints()["token_endpoint"],
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": old.refresh,
                    "client_id": self.client_id,
                },
            )
            if answer.status_code == 200:
                subject = answer.json()
        if subject is None:
            subject = self._login()
        return self._exchange(subject)

    def _login(self) -> dict[str, Any]:
        """Authorization code + PKCE S256 with ``login_hint``; the token endpoint's answer."""
        endpoints = self._endpoints()
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state = secrets.token_urlsafe(16)
        redirect = self.http.get(
            endpoints["authorization_endpoint"],
            params={
                "client_id": self.client_id,
                "redirect_uri": self.redirect_uri,
                "response_type": "code",
                "scope": "openid profile",
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "login_hint": self._acting,
            },
        )
        location = redirect.headers.get("location", "")
        answer = parse_qs(urlsplit(location).query)
        if redirect.status_code not in (302, 303) or "code" not in answer:
            reason = answer.get("error_description", answer.get("error", [redirect.text[:200]]))[0]
            raise _Rejected.login(f"IAM Connect refused the login of {self._acting}: {reason}")
        if answer.get("state") != [state]:
            raise _Rejected.login("IAM Connect answered with a different state: login abandoned")
        tokens = self.http.post(
            endpoints["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": answer["code"][0],
                "redirect_uri": self.redirect_uri,
                "client_id": self.client_id,
                "code_verifier": verifier,
            },
        )
        if tokens.status_code != 200:
            raise _Rejected.login(f"IAM Connect refused the authorization code: {_oauth_error(tokens)}")
        return tokens.json()

    def _exchange(self, subject: Mapping[str, Any]) -> _Token:
        answer = self.http.post(
            self._endpoints()["token_endpoint"],
            data={
                "grant_type": TOKEN_EXCHANGE,
                "subject_token": subject["access_token"],
                "subject_token_type": ACCESS_TOKEN_TYPE,
                "audience": self.audience,
                "client_id": self.client_id,
            },
        )
        if answer.status_code != 200:
            raise _Rejected.login(f"IAM Connect refused the token exchange: {_oauth_error(answer)}")
        data = answer.json()
        return _Token(
            access=data["access_token"],
            expires_at=self.clock() + float(data.get("expires_in", 300)),
            refresh=subject.get("refresh_token"),
            claims=_claims(data["access_token"]),
        )

    # --- HTTP with retries ------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        url: str,
        *,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One FHIR request, retried on 429/5xx and transport errors; renews the token once on 401."""
        renewed = False
        last = "no attempt"
        for attempt in range(1, self.max_attempts + 1):
            all_headers = {"Accept": FHIR_JSON, "Authorization": f"Bearer {self._access_token().access}"}
            if body is not None:
                all_headers["Content-Type"] = FHIR_JSON
            all_headers.update(headers or {})
            try:
                response = self.http.request(
                    method,
                    url,
                    params=params,
                    headers=all_headers,
                    content=json.dumps(body).encode() if body is not None else None,
                )
            except httpx.TransportError as error:
                last = f"{type(error).__name__}: {error}"
                self._wait(None, attempt)
                continue
            if response.status_code == 401 and not renewed:
                renewed = True
                self._tokens.pop(self._acting, None)
                continue
            if response.status_code in self.retry_statuses:
                last = f"HTTP {response.status_code}"
                if attempt < self.max_attempts:
                    self._wait(response.headers.get("retry-after"), attempt)
                    continue
            return response
        raise RegisterUnavailable(
            f"the register did not answer {method} {url} after {self.max_attempts} attempts ({last})"
        )

    def _wait(self, retry_after: str | None, attempt: int) -> None:
        seconds = min(2.0 ** (attempt - 1) * 0.1, self.max_wait)
        if retry_after is not None and retry_after.strip().isdigit():
            seconds = min(float(retry_after.strip()), self.max_wait)
        self.sleep(seconds)

    # --- actions ----------------------------------------------------------------------------------

    def _record(self, intent: RecordVaccination | RecordNotDone) -> AdapterResult:
        if intent.encrypted and self.etee is None:
            return AdapterResult(
                outcome="failed", message="The encrypted variant (sealed for Vaccicard) is not configured"
            )
        identifier = intent.business_identifier or Identifier(self.identifier_system, str(uuid.uuid4()))
        resource = self.build_immunization(intent, identifier)
        url = f"{self.fhir_base_url}/Immunization"
        if intent.encrypted and self.etee is not None:  # the sealing transport seals it and opens the answer
            url = self.etee.endpoint_url
        try:
            response = self._send(
                "POST",
                url,
                body=resource,
                headers={"If-None-Exist": f"identifier={identifier.system}|{identifier.value}"},
            )
        except EteeFailure as failure:
            return AdapterResult(outcome="failed", message=f"The encrypted variant failed: {failure}")
        raise_for_refusal(response, "recording the vaccination")
        stored = response.json()
        what = "Vaccination recorded" if isinstance(intent, RecordVaccination) else "Not-done recorded"
        if response.status_code == 200:
            what += " (it was already in the register)"
        return AdapterResult(
            outcome="succeeded",
            message=f"{what}: Immunization/{stored.get('id')}",
            record_ids=(str(stored.get("id")),),
            business_identifiers=(identifier,),
        )

    def _history(self, intent: ReadHistory) -> AdapterResult:
        shown: list[DisplayedVaccination] = []
        url: str | None = f"{self.fhir_base_url}/Immunization"
        params: dict[str, str] | None = {"patient.identifier": f"{SSIN_SYSTEM}|{intent.patient}"}
        pages = 0
        while url is not None:
            pages += 1
            if pages > 1000:
                raise RegisterUnavailable(
                    "the register's history has more than 1000 pages; stopped following next"
                )
            response = self._send("GET", url, params=params)
            raise_for_refusal(response, "reading the history")
            bundle = response.json()
            for entry in bundle.get("entry", []):
                resource = entry.get("resource", {})
                if resource.get("resourceType") == "Immunization":
                    shown.append(displayed_vaccination(resource))
            url = next(
                (link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"), None
            )
            params = None  # the next link carries the query
        return AdapterResult(
            outcome="succeeded",
            message=f"{len(shown)} vaccination(s) in the register",
            record_ids=tuple(v.record_id for v in shown if v.record_id),
            vaccinations=tuple(shown),
        )

    def search(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """Every Immunization a search finds, following next links (for the harness's own checks)."""
        found: list[dict[str, Any]] = []
        url: str | None = f"{self.fhir_base_url}/Immunization"
        query: Mapping[str, str] | None = params
        while url is not None and len(found) < 100_000:
            response = self._send("GET", url, params=query)
            if response.status_code != 200:
                raise TargetUnreachableError(f"searching {url} answered HTTP {response.status_code}")
            bundle = response.json()
            found += [
                e["resource"]
                for e in bundle.get("entry", [])
                if e.get("resource", {}).get("resourceType") == "Immunization"
            ]
            url = next(
                (link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"), None
            )
            query = None
        return found

    def _find(self, identifier: Identifier) -> str:
        response = self._send(
            "GET",
            f"{self.fhir_base_url}/Immunization",
            params={"identifier": f"{identifier.system}|{identifier.value}"},
        )
        raise_for_refusal(response, "finding the record")
        entries = [
            e["resource"]
            for e in response.json().get("entry", [])
            if e.get("resource", {}).get("resourceType") == "Immunization"
        ]
        if len(entries) != 1:
            raise _Rejected(
                AdapterResult(
                    outcome="rejected",
                    message=f"{len(entries)} records have the identifier {identifier.system}|{identifier.value}",
                )
            )
        return str(entries[0]["id"])

    def _update(
        self, identifier: Identifier, change: Callable[[dict[str, Any]], None], doing: str
    ) -> AdapterResult:
        """Read, change, ``PUT`` with ``If-Match``; on 412 read again and apply again.

        After a 412 the change may already be there (our own write committed but its answer was lost):
        then nothing more is written, so a retried correction never makes an extra version.
        """
        record_id = self._find(identifier)
        url = f"{self.fhir_base_url}/Immunization/{record_id}"
        conflicts = 0
        while True:
            current = self._send("GET", url)
            raise_for_refusal(current, doing)
            before = current.json()
            resource = copy.deepcopy(before)
            change(resource)
            self._set_recorder(resource)
            version = before.get("meta", {}).get("versionId")
            if conflicts and _without_meta(resource) == _without_meta(before):
                return self._updated(doing, record_id, version, identifier)
            etag = current.headers.get("etag") or f'W/"{version}"'
            response = self._send("PUT", url, body=resource, headers={"If-Match": etag})
            if response.status_code == 412 and conflicts < 3:  # changed since we read it
                conflicts += 1
                continue
            raise_for_refusal(response, doing)
            version = response.json().get("meta", {}).get("versionId")
            return self._updated(doing, record_id, version, identifier)

    @staticmethod
    def _updated(doing: str, record_id: str, version: Any, identifier: Identifier) -> AdapterResult:
        return AdapterResult(
            outcome="succeeded",
            message=f"{doing.capitalize()} done: Immunization/{record_id} version {version}",
            record_ids=(record_id,),
            business_identifiers=(identifier,),
        )

    def _correct(self, intent: CorrectVaccination) -> AdapterResult:
        def change(resource: dict[str, Any]) -> None:
            _apply(resource, intent)

        return self._update(intent.business_identifier, change, "correcting the vaccination")

    def _cancel(self, intent: CancelVaccination) -> AdapterResult:
        def change(resource: dict[str, Any]) -> None:
            resource["status"] = "entered-in-error"
            note = {"text": f"Cancelled: {intent.reason}"}
            notes = resource.setdefault("note", [])
            if note not in notes:
                notes.append(note)

        return self._update(intent.business_identifier, change, "cancelling the vaccination")

    # --- building the Immunization ----------------------------------------------------------------

    def _set_recorder(self, resource: dict[str, Any]) -> None:
        extensions = [e for e in resource.get("extension", []) if e.get("url") != RECORDER]
        extensions.insert(0, recorder_extension(self.nihdi))
        resource["extension"] = extensions

    def build_immunization(
        self, intent: RecordVaccination | RecordNotDone, identifier: Identifier
    ) -> dict[str, Any]:
        """The BeVaccination Immunization the intent asks to record (no id: the register assigns one)."""
        now = datetime.now(UTC).replace(microsecond=0)
        resource: dict[str, Any] = {
            "resourceType": "Immunization",
            "meta": {"profile": [BE_VACCINATION]},
            "extension": [recorder_extension(self.nihdi)],
            "identifier": [{"system": identifier.system, "value": identifier.value}],
            "status": "completed" if isinstance(intent, RecordVaccination) else "not-done",
            "vaccineCode": {"coding": [_coding(intent.vaccine)]},
            "patient": {"identifier": {"system": SSIN_SYSTEM, "value": intent.patient}},
            "recorded": now.isoformat().replace("+00:00", "Z"),
            "performer": [
                {
                    "actor": {
                        "identifier": {"system": NIHDI_PROFESSIONAL, "value": intent.performer or self.nihdi}
                    }
                }
            ],
        }
        if isinstance(intent, RecordVaccination) and intent.occurrence_text and not intent.occurrence:
            resource["occurrenceString"] = intent.occurrence_text
        else:
            resource["occurrenceDateTime"] = intent.occurrence or resource["recorded"]
        if isinstance(intent, RecordNotDone):
            resource["statusReason"] = {"coding": [_coding(intent.status_reason)]}
        if intent.care_setting is not None:
            _set_care_setting(resource, intent.care_setting, intent.patient)
        if intent.note:
            resource["note"] = [{"text": intent.note}]
        if isinstance(intent, RecordVaccination):
            _set_details(
                resource,
                product=intent.product,
                route=intent.route,
                body_site=intent.body_site,
                reaction=intent.reaction,
            )
        return resource


# --- helpers -------------------------------------------------------------------------------------------


class _Rejected(Exception):
    def __init__(self, result: AdapterResult) -> None:
        super().__init__(result.message)
        self.result = result

    @classmethod
    def login(cls, message: str) -> _Rejected:
        return cls(
            AdapterResult(outcome="rejected", message=message, issues=(Issue("error", "login", message),))
        )


def raise_for_refusal(response: httpx.Response, doing: str) -> None:
    """Turn a 4xx/5xx answer into the result a user sees (``rejected`` or ``failed``), raised."""
    status = response.status_code
    if status < 400:
        return
    issues = _issues(response)
    texts = [issue.text for issue in issues if issue.text] or [f"HTTP {status}"]
    message = f"The register refused {doing} (HTTP {status}): " + "; ".join(texts)
    outcome = "rejected" if status < 500 else "failed"
    raise _Rejected(AdapterResult(outcome=outcome, message=message, issues=tuple(issues)))


def _issues(response: httpx.Response) -> list[Issue]:
    try:
        body = response.json()
    except ValueError:
        return []
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return []
    issues = []
    for item in body.get("issue", []):
        if not isinstance(item, dict):
            continue
        details = item.get("details") if isinstance(item.get("details"), dict) else {}
        text = details.get("text") or item.get("diagnostics") or ""
        expression = item.get("expression") or item.get("location") or [None]
        severity = (
            item.get("severity")
            if item.get("severity") in ("fatal", "error", "warning", "information")
            else "error"
        )
        issues.append(Issue(severity, str(item.get("code", "")), str(text), expression[0]))
    return issues


def _oauth_error(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    return str(data.get("error_description") or data.get("error") or f"HTTP {response.status_code}")


def _claims(token: str) -> dict[str, Any]:
    """The (unverified) claims of a JWT: the client only reads who it is, the API verifies."""
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}


def recorder_extension(nihdi: str) -> dict[str, Any]:
    """The be-ext-recorder extension naming a professional by NIHDI number."""
    return {"url": RECORDER, "valueReference": {"identifier": {"system": NIHDI_PROFESSIONAL, "value": nihdi}}}


def _coding(coding: Coding) -> dict[str, Any]:
    data = {"system": coding.system, "code": coding.code}
    if coding.display:
        data["display"] = coding.display
    return data


def _set_care_setting(resource: dict[str, Any], setting: CareSetting, patient: str) -> None:
    location: dict[str, Any] = {
        "resourceType": "Location",
        "id": "location",
        "type": [{"coding": [{"system": CARE_LOCATION, "code": setting.code}]}],
    }
    if setting.name:
        location["name"] = setting.name
    encounter = {
        "resourceType": "Encounter",
        "id": "encounter",
        "status": "finished",
        "class": {"system": ACT_CODE, "code": "AMB"},
        "subject": {"identifier": {"system": SSIN_SYSTEM, "value": patient}},
        "location": [{"location": {"reference": "#location"}}],
    }
    contained = [c for c in resource.get("contained", []) if c.get("id") not in ("encounter", "location")]
    resource["contained"] = [*contained, encounter, location]
    resource["encounter"] = {"reference": "#encounter"}


def _set_details(
    resource: dict[str, Any],
    *,
    product: AdministeredProduct | None,
    route: Coding | None,
    body_site: BodySite | None,
    reaction: Reaction | None,
) -> None:
    if product is not None:
        parts: list[dict[str, Any]] = []
        if product.cnk:
            parts.append(
                {
                    "url": "coded",
                    "valueCodeableConcept": {"coding": [{"system": CNK_SYSTEM, "code": product.cnk}]},
                }
            )
        if product.lot_number:
            parts.append({"url": "lotNumber", "valueString": product.lot_number})
        if product.expiry:
            parts.append({"url": "expirationDate", "valueDate": product.expiry})
        extensions = [e for e in resource.get("extension", []) if e.get("url") != ADMINISTERED_PRODUCT]
        if parts:
            extensions.append({"url": ADMINISTERED_PRODUCT, "extension": parts})
        resource["extension"] = extensions
        resource.pop("lotNumber", None)
        resource.pop("expirationDate", None)
    if route is not None:
        resource["route"] = {"coding": [_coding(route)]}
    if body_site is not None:
        site: dict[str, Any] = {"coding": [_coding(body_site.site)]}
        if body_site.laterality:
            code, display = LATERALITY_CODES[body_site.laterality]
            site["extension"] = [
                {"url": LATERALITY, "valueCoding": {"system": SNOMED, "code": code, "display": display}}
            ]
        resource["site"] = site
    if reaction is not None:
        entry: dict[str, Any] = {"date": reaction.date}
        contained = [c for c in resource.get("contained", []) if c.get("id") != "reaction"]
        if reaction.detail is not None:
            contained.append(
                {
                    "resourceType": "Observation",
                    "id": "reaction",
                    "status": "final",
                    "code": {"coding": [_coding(reaction.detail)]},
                    "subject": copy.deepcopy(resource["patient"]),
                }
            )
            entry["detail"] = {"reference": "#reaction"}
        if contained:
            resource["contained"] = contained
        else:
            resource.pop("contained", None)
        resource["reaction"] = [entry]


def _apply(resource: dict[str, Any], intent: CorrectVaccination) -> None:
    """Apply a correction's changed fields to the current version."""
    if intent.vaccine is not None:
        resource["vaccineCode"] = {"coding": [_coding(intent.vaccine)]}
    if intent.occurrence is not None:
        resource.pop("occurrenceString", None)
        resource["occurrenceDateTime"] = intent.occurrence
    elif intent.occurrence_text is not None:
        resource.pop("occurrenceDateTime", None)
        resource["occurrenceString"] = intent.occurrence_text
    if intent.note is not None:
        resource["note"] = [{"text": intent.note}]
    _set_details(
        resource,
        product=intent.product,
        route=intent.route,
        body_site=intent.body_site,
        reaction=intent.reaction,
    )


def _without_meta(resource: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in resource.items() if key not in ("meta", "text")}


def displayed_vaccination(resource: Mapping[str, Any]) -> DisplayedVaccination:
    """How the software shows one Immunization in the history (entered-in-error as ``cancelled``)."""
    status = resource.get("status")
    shown = (
        "cancelled" if status == "entered-in-error" else "not-done" if status == "not-done" else "completed"
    )
    identifiers = [
        Identifier(i["system"], i["value"])
        for i in resource.get("identifier", [])
        if isinstance(i, dict) and i.get("system") and i.get("value")
    ]
    codings = resource.get("vaccineCode", {}).get("coding", [])
    vaccine = (
        Coding(codings[0]["system"], codings[0]["code"], codings[0].get("display"))
        if codings and codings[0].get("system") and codings[0].get("code")
        else None
    )
    return DisplayedVaccination(
        status=shown,
        record_id=resource.get("id"),
        business_identifier=identifiers[0] if identifiers else None,
        vaccine=vaccine,
        occurrence=resource.get("occurrenceDateTime") or resource.get("occurrenceString"),
    )
