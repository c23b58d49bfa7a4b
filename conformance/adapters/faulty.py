"""Faulty adapters: the reference client with exactly one deliberate defect each.

``FaultyAdapter(defect, fhir_base_url, iam_base_url, professional=...)`` behaves like
``ReferenceAdapter`` except for the one thing its ``defect`` names. The suite runs every check against
these to prove each check can fail: a check that passes with a faulty adapter is a defect of ours.
``DEFECTS`` maps each defect name to a one-line description (listed by ``run --help`` as
``faulty:<name>``). The ``etee-*`` defects live in the sealing transport of the encrypted variant
(``FaultyEtee``): they change nothing without ``etee`` options, and the register refuses each of their
sealed messages with the unsealing rule of the defect; ``etee-etk-unchecked`` seals like the reference
client while the depot's ETK is sound, and for a flawed one (short key, untrusted signer) it seals anyway.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import httpx
from asn1crypto import cms

from conformance.adapters.etee_client import EteeFailure, EteeOptions, SealingTransport
from conformance.adapters.intents import (
    AdapterResult,
    CancelVaccination,
    Identifier,
    Intent,
    ReadHistory,
    RecordNotDone,
    RecordVaccination,
)
from conformance.adapters.reference import (
    ADMINISTERED_PRODUCT,
    RECORDER,
    RETRY_STATUSES,
    SSIN_SYSTEM,
    ReferenceAdapter,
    RegisterUnavailable,
    displayed_vaccination,
    raise_for_refusal,
    recorder_extension,
)
from conformance.errors import ConfigurationError
from conformance.etee.cms import sign, verify_signed
from conformance.etee.etk import Etk
from conformance.etee.pki import Credentials, Holder, TestPki
from conformance.etee.seal import seal

__all__ = [
    "DEFECTS",
    "OTHER_PROFESSIONAL_NIHDI",
    "OTHER_PROFESSIONAL_SSIN",
    "WRONG_SSIN_SYSTEM",
    "FaultyAdapter",
]

DEFECTS: Mapping[str, str] = MappingProxyType(
    {
        "lot-in-lotNumber": "puts the lot number in Immunization.lotNumber, not the administered-product extension",
        "no-recorder": "sends no recorder extension",
        "recorder-other-professional": "names another professional (not the logged-in one) as recorder",
        "wrong-patient-identifier": "identifies the patient by SSIN in a wrong naming system",
        "no-business-identifier": "records without a business identifier (and so without conditional create)",
        "duplicate-on-retry": "retries a create without conditional create, under a new key: a lost answer makes two records",
        "no-retry": "gives up at the first 503/lost answer and reports success (the record is dropped)",
        "ignores-operation-outcome": "reports success when the register refuses with a 4xx OperationOutcome",
        "delete-to-cancel": "cancels a record with DELETE instead of an entered-in-error update",
        "stale-if-match": "corrects with PUT without If-Match (no check of the version it read)",
        "new-identifier-on-correction": "corrects by creating a second record with a new identifier",
        "cancelled-shown-as-valid": "shows entered-in-error records as completed in the history",
        "first-page-only": "shows only the first page of the history (ignores next links)",
        "status-reason-unbound": "records not-done with a local reason code outside the bound value set",
        "lot-expiry-lost": "drops the lot's expiry date from the administered product",
        "ignores-retry-after": "retries a 429/503 after its own short back-off, not the Retry-After delay",
        "ssin-in-error-message": "quotes the patient's SSIN in the message it shows after a refusal or outage",
        "token-in-url": "also sends the access token as an access_token query parameter on writes",
        "tls-verify-off": "accepts any TLS certificate (verification switched off)",
        "own-records-only": "shows in the history only the vaccinations this software recorded itself",
        "retries-refusals": "sends a request the register refused (403, 409, 422) again, as if it were an outage",
        "undeclared-search-parameter": "searches with _lastUpdated, which the CapabilityStatement does not state",
        "etee-wrong-recipient": "seals the encrypted variant for the professional's own ETK, not Vaccicard's",
        "etee-tampered": "flips a ciphertext byte after sealing and signs the envelope again (tampered ciphertext)",
        "etee-signer-mismatch": "signs the inner layer with another professional's key than the outer layer",
        "etee-expired-certificate": "seals with the professional's expired eHealth certificate",
        "etee-stale-signing-time": "seals with a signing time ten minutes in the past (a clock running late)",
        "etee-etk-unchecked": "seals for Vaccicard's ETK from the depot as it comes, without checking it",
    }
)

OTHER_PROFESSIONAL_NIHDI = "40020121401"
"""The recorder named by ``recorder-other-professional`` (a nurse of the simulator's test data)."""
WRONG_SSIN_SYSTEM = "https://www.ehealth.fgov.be/standards/fhir/NamingSystem/ssin"
"""The naming system ``wrong-patient-identifier`` uses (an outdated path: not core's ssin)."""
LOCAL_REASONS = "https://vendor.example.org/CodeSystem/not-done-reasons"
OTHER_PROFESSIONAL_SSIN = "90120101388"
"""Whose key ``etee-signer-mismatch`` signs the inner layer with (the same nurse of the test data)."""
STALE_BY = dt.timedelta(minutes=10)
"""How far in the past ``etee-stale-signing-time`` signs."""


class FaultyAdapter(ReferenceAdapter):
    """``ReferenceAdapter`` with one deliberate defect (a key of ``DEFECTS``)."""

    def __init__(self, defect: str, fhir_base_url: str, iam_base_url: str, **options: Any) -> None:
        """``options`` are ``ReferenceAdapter``'s; an unknown ``defect`` raises ``ConfigurationError``."""
        if defect not in DEFECTS:
            raise ConfigurationError(
                f"unknown defect {defect!r}; known defects: {', '.join(sorted(DEFECTS))}"
            )
        if defect == "tls-verify-off":
            options["verify"] = False
        if defect.startswith("etee-") and options.get("etee") is not None:
            options["etee"] = FaultyEtee.of(options["etee"], defect)
        super().__init__(fhir_base_url, iam_base_url, **options)
        self.defect = defect
        if defect == "no-retry":
            self.max_attempts = 1
        if defect == "retries-refusals":
            self.retry_statuses = self.retry_statuses | {403, 409, 422}

    # --- the Adapter protocol ---------------------------------------------------------------------

    def perform(self, intent: Intent) -> AdapterResult:
        result = super().perform(intent)
        refused = result.outcome == "rejected" and (result.message or "").startswith("The register refused")
        if self.defect == "ignores-operation-outcome" and refused:
            return AdapterResult(outcome="succeeded", message="Done")
        gave_up = result.outcome == "failed" and isinstance(intent, RecordVaccination | RecordNotDone)
        if self.defect == "no-retry" and gave_up:
            return AdapterResult(outcome="succeeded", message="Vaccination recorded")
        patient = getattr(intent, "patient", None)
        if self.defect == "ssin-in-error-message" and not result.succeeded and patient:
            return dataclasses.replace(result, message=f"Patient {patient}: {result.message}")
        return result

    def _wait(self, retry_after: str | None, attempt: int) -> None:
        super()._wait(None if self.defect == "ignores-retry-after" else retry_after, attempt)

    # --- building the Immunization ----------------------------------------------------------------

    def build_immunization(
        self, intent: RecordVaccination | RecordNotDone, identifier: Identifier
    ) -> dict[str, Any]:
        resource = super().build_immunization(intent, identifier)
        if self.defect == "lot-in-lotNumber":
            _move_lot_number(resource)
        elif self.defect == "lot-expiry-lost":
            _drop_expiry(resource)
        elif self.defect in ("no-recorder", "recorder-other-professional"):
            self._set_recorder(resource)
        elif self.defect == "wrong-patient-identifier":
            _rename_ssin_system(resource)
        elif self.defect == "no-business-identifier":
            resource.pop("identifier", None)
        elif self.defect == "status-reason-unbound" and isinstance(intent, RecordNotDone):
            resource["statusReason"] = {"coding": [{"system": LOCAL_REASONS, "code": intent.kind}]}
        return resource

    def _set_recorder(self, resource: dict[str, Any]) -> None:
        if self.defect == "no-recorder":
            resource["extension"] = [e for e in resource.get("extension", []) if e.get("url") != RECORDER]
            return
        if self.defect == "recorder-other-professional":
            extensions = [e for e in resource.get("extension", []) if e.get("url") != RECORDER]
            resource["extension"] = [recorder_extension(OTHER_PROFESSIONAL_NIHDI), *extensions]
            return
        super()._set_recorder(resource)

    # --- requests -------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        url: str,
        *,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        if headers is not None and self.defect in ("duplicate-on-retry", "no-business-identifier"):
            headers = {k: v for k, v in headers.items() if k.lower() != "if-none-exist"}
        if headers is not None and self.defect == "stale-if-match":
            headers = {k: v for k, v in headers.items() if k.lower() != "if-match"}
        if (
            self.defect == "undeclared-search-parameter"
            and params is not None
            and "patient.identifier" in params
        ):
            params = {**params, "_lastUpdated": "ge2000-01-01"}
            headers = {**(headers or {}), "Prefer": "handling=lenient"}
        if self.defect == "token-in-url" and method != "GET":  # searches would be refused outright
            params = {**(params or {}), "access_token": self._access_token().access}
        if self.defect == "duplicate-on-retry" and method == "POST" and body is not None:
            return self._send_without_checking(url, body, headers or {})
        return super()._send(method, url, body=body, headers=headers, params=params)

    def _send_without_checking(self, url: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> Any:
        """Retry a create as a new submission: the software mints a new record key for each try."""
        attempts, self.max_attempts = self.max_attempts, 1
        try:
            for attempt in range(1, attempts + 1):
                try:
                    response = super()._send("POST", url, body=body, headers=headers)
                except RegisterUnavailable:
                    response = None
                if response is not None and response.status_code not in RETRY_STATUSES:
                    return response
                body = {
                    **body,
                    "identifier": [{"system": self.identifier_system, "value": str(uuid.uuid4())}],
                }
                if attempt < attempts:
                    self._wait(None, attempt)
        finally:
            self.max_attempts = attempts
        raise RegisterUnavailable(f"the register did not answer POST {url} after {attempts} attempts")

    # --- actions ----------------------------------------------------------------------------------

    def _update(
        self, identifier: Identifier, change: Callable[[dict[str, Any]], None], doing: str
    ) -> AdapterResult:
        if self.defect != "new-identifier-on-correction":
            return super()._update(identifier, change, doing)
        record_id = self._find(identifier)
        current = self._send("GET", f"{self.fhir_base_url}/Immunization/{record_id}")
        raise_for_refusal(current, doing)
        resource = copy.deepcopy(current.json())
        change(resource)
        self._set_recorder(resource)
        for key in ("id", "meta", "text"):
            resource.pop(key, None)
        new = Identifier(self.identifier_system, str(uuid.uuid4()))
        resource["identifier"] = [{"system": new.system, "value": new.value}]
        response = self._send("POST", f"{self.fhir_base_url}/Immunization", body=resource)
        raise_for_refusal(response, doing)
        stored = response.json()
        return self._updated(doing, str(stored.get("id")), stored.get("meta", {}).get("versionId"), new)

    def _cancel(self, intent: CancelVaccination) -> AdapterResult:
        if self.defect != "delete-to-cancel":
            return super()._cancel(intent)
        record_id = self._find(intent.business_identifier)
        response = self._send("DELETE", f"{self.fhir_base_url}/Immunization/{record_id}")
        raise_for_refusal(response, "cancelling the vaccination")
        return AdapterResult(
            outcome="succeeded",
            message=f"Cancelling the vaccination done: Immunization/{record_id} deleted",
            record_ids=(record_id,),
            business_identifiers=(intent.business_identifier,),
        )

    def _history(self, intent: ReadHistory) -> AdapterResult:
        if self.defect == "own-records-only":
            result = super()._history(intent)
            own = tuple(
                v
                for v in result.vaccinations
                if v.business_identifier is not None
                and v.business_identifier.system == self.identifier_system
            )
            return dataclasses.replace(
                result, vaccinations=own, record_ids=tuple(v.record_id for v in own if v.record_id)
            )
        if self.defect == "cancelled-shown-as-valid":
            result = super()._history(intent)
            shown = tuple(
                dataclasses.replace(v, status="completed") if v.status == "cancelled" else v
                for v in result.vaccinations
            )
            return dataclasses.replace(result, vaccinations=shown)
        if self.defect != "first-page-only":
            return super()._history(intent)
        response = self._send(
            "GET",
            f"{self.fhir_base_url}/Immunization",
            params={"patient.identifier": f"{SSIN_SYSTEM}|{intent.patient}"},
        )
        raise_for_refusal(response, "reading the history")
        shown_list = [
            displayed_vaccination(entry.get("resource", {}))
            for entry in response.json().get("entry", [])
            if entry.get("resource", {}).get("resourceType") == "Immunization"
        ]
        return AdapterResult(
            outcome="succeeded",
            message=f"{len(shown_list)} vaccination(s) in the register",
            record_ids=tuple(v.record_id for v in shown_list if v.record_id),
            vaccinations=tuple(shown_list),
        )


def _product_parts(resource: dict[str, Any]) -> list[dict[str, Any]] | None:
    for extension in resource.get("extension", []):
        if extension.get("url") == ADMINISTERED_PRODUCT:
            return extension.setdefault("extension", [])
    return None


def _prune_empty_product(resource: dict[str, Any]) -> None:
    resource["extension"] = [
        e for e in resource["extension"] if e.get("url") != ADMINISTERED_PRODUCT or e.get("extension")
    ]


def _move_lot_number(resource: dict[str, Any]) -> None:
    parts = _product_parts(resource)
    if parts is None:
        return
    for part in list(parts):
        if part.get("url") == "lotNumber":
            parts.remove(part)
            resource["lotNumber"] = part["valueString"]
    _prune_empty_product(resource)


def _drop_expiry(resource: dict[str, Any]) -> None:
    parts = _product_parts(resource)
    if parts is None:
        return
    parts[:] = [part for part in parts if part.get("url") != "expirationDate"]
    _prune_empty_product(resource)


def _rename_ssin_system(value: Any) -> None:
    """Every SSIN identifier (patient, contained subjects) in the wrong naming system."""
    if isinstance(value, dict):
        if value.get("system") == SSIN_SYSTEM and "value" in value:
            value["system"] = WRONG_SSIN_SYSTEM
        for item in value.values():
            _rename_ssin_system(item)
    elif isinstance(value, list):
        for item in value:
            _rename_ssin_system(item)


# --- the encrypted variant -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FaultyEtee(EteeOptions):
    """``EteeOptions`` whose transport seals with one ``etee-*`` defect."""

    defect: str = ""

    @classmethod
    def of(cls, options: EteeOptions, defect: str) -> FaultyEtee:
        """The same options, with ``defect``."""
        values = {f.name: getattr(options, f.name) for f in dataclasses.fields(EteeOptions)}
        return cls(**values, defect=defect)

    def transport(self, inner: httpx.BaseTransport, acting: Callable[[], str]) -> SealingTransport:
        return _FaultySealing(self, inner, acting, self.defect)


class _FaultySealing(SealingTransport):
    """The sealing transport with the one defect its ``FaultyEtee`` names."""

    def __init__(
        self, options: EteeOptions, inner: httpx.BaseTransport, acting: Callable[[], str], defect: str
    ) -> None:
        super().__init__(options, inner, acting)
        self.defect = defect
        self._expired: dict[str, Holder] = {}

    def register_etk(self, extensions: dict[str, object] | None = None) -> Etk:
        if self.defect != "etee-etk-unchecked":
            return super().register_etk(extensions)
        if self._etk is None:  # the first ETK the depot answers: no trust, key, validity or holder check
            fetched = self.fetch_etks(self.options.register, self.options.application_id, extensions)
            if not fetched:
                raise EteeFailure("the ETK depot answered no ETK for Vaccicard: nothing was sealed or sent")
            self._etk = fetched[0]
        return self._etk

    def seal(self, payload: bytes, holder: Holder, etk: Etk) -> bytes:
        now = self.options.clock()
        if self.defect == "etee-etk-unchecked":  # whatever size the ETK's key has
            return seal(payload, sender=holder.credentials(), recipients=[etk], now=now, min_key_bits=0)
        if self.defect == "etee-wrong-recipient":  # the sender's own encryption certificate (its ETK's key)
            return seal(
                payload, sender=holder.credentials(), recipients=[holder.encryption.certificate], now=now
            )
        if self.defect == "etee-signer-mismatch":
            other = self._other_professional(holder)
            sender = Credentials(holder.authentication, signature=other.authentication)
            return seal(payload, sender=sender, recipients=[etk], now=now)
        if self.defect == "etee-expired-certificate":
            return seal(payload, sender=self._expired_holder(holder).credentials(), recipients=[etk], now=now)
        if self.defect == "etee-stale-signing-time":
            return seal(payload, sender=holder.credentials(), recipients=[etk], now=now - STALE_BY)
        sealed = super().seal(payload, holder, etk)
        if self.defect == "etee-tampered":
            return _tamper(sealed, holder, now)
        return sealed

    def _other_professional(self, holder: Holder) -> Holder:
        """Another test professional's keys: the nurse, or the physician when the nurse acts."""
        other = OTHER_PROFESSIONAL_SSIN if holder.id.value != OTHER_PROFESSIONAL_SSIN else "75040201177"
        found = self.options.keys(other)
        if found is None:
            raise EteeFailure("no keys of another professional to sign the inner layer with")
        return found

    def _expired_holder(self, holder: Holder) -> Holder:
        """The same holder with certificates that ended yesterday (from a throw-away test PKI)."""
        key = str(holder.id)
        if key not in self._expired:
            pki = TestPki.generate("Expired credentials CA")
            self._expired[key] = pki.issue_holder(holder.id.type, holder.id.value, holder.name, expired=True)
        return self._expired[key]


def _tamper(sealed: bytes, holder: Holder, now: dt.datetime) -> bytes:
    """Flip a byte of the envelope's ciphertext so the padding fails, then sign the envelope again.

    The byte is the last of the next-to-last AES block: in CBC it flips the padding byte of the last
    plaintext block to a value no valid padding has, so only the decryption fails.
    """
    enveloped = cms.ContentInfo.load(verify_signed(sealed, "the sealed message").content)
    encrypted = enveloped["content"]["encrypted_content_info"]
    ciphertext = bytearray(encrypted["encrypted_content"].native)
    ciphertext[-17] ^= 0xFF
    encrypted["encrypted_content"] = bytes(ciphertext)
    return sign(enveloped.dump(force=True), holder.authentication, signing_time=now)
