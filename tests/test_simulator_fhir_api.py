"""Tests of the simulated Vaccicard FHIR API: every status code, token failure, register rule and bad input.

Everything runs in process through ``FhirApi.handle`` (no sockets). Tokens come from the simulated IAM
Connect (``issue_professional_token``) or are signed here with the realm keys the fixture owns, to make
each kind of bad token. The register's clock is pinned to 2026-12-01 12:00 UTC.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import RSAKey

from conformance import __version__
from conformance.belgium.identifiers import NIHDI, NIHDI_PROFESSIONAL, SSIN
from conformance.errors import ConfigurationError
from conformance.fhir.definitions import PackageSet
from conformance.fhir.validator import Validator
from conformance.simulator.config import SimulatorConfig
from conformance.simulator.faults import FaultPlan
from conformance.simulator.fhir_api import RECORDER_EXTENSION, RULES_SYSTEM, FhirApi, Rule
from conformance.simulator.http import HttpRequest, HttpResponse
from conformance.simulator.iam import HEALTHCARE, M2M, IamConnect
from conformance.simulator.store import ImmunizationStore
from conformance.simulator.testdata import KeyRing, TestData

BASE_URL = "http://127.0.0.1:8080"
AUTH_BASE = BASE_URL + "/auth"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
FHIR_JSON = "application/fhir+json"
VACC = "https://www.ehealth.fgov.be/standards/fhir/vaccination/"
BE_VACCINATION = VACC + "StructureDefinition/be-vaccination"
PRODUCT = VACC + "StructureDefinition/be-ext-administeredProduct"
CNK = "https://www.ehealth.fgov.be/standards/fhir/medication/NamingSystem/be-ns-cnk-codes"
SCT = "http://snomed.info/sct"
VENDOR_IDS = "https://www.example.org/vendor/vaccinations"

# professionals (see conformance/simulator/testdata.json)
PHYSICIAN = "75040201177"  # Luc, nihii 10000106003
PHYSICIAN_NIHII = "10000106003"
PHARMACIST = "82081901232"  # Petra, nihii 50010131000
MIDWIFE = "88022701468"
DENTIST = "69101001540"  # recognised, may not record
UNRECOGNISED = "79070701726"
NO_RELATION = "84050501681"  # nobody's professional
# patients
JEAN = "58032100126"  # consent; Luc, Petra, Nadir, Marc, Thomas
MARIE = "87110400236"  # consent; Luc, Julie
PAUL = "72063000369"  # no consent
LOTTE = "95011700433"  # consent, no relationship
UNKNOWN_PATIENT = "94021300145"  # valid SSIN, not a test patient

ORG_CLIENT = "cbe-0987654394"


def immunization(
    key: str = "vac-1",
    *,
    patient: str = JEAN,
    recorder: str = PHYSICIAN_NIHII,
    status: str = "completed",
    occurrence: str = "2026-11-20T10:00:00+01:00",
    recorded: str = "2026-11-20T10:05:00+01:00",
) -> dict[str, Any]:
    """A valid BeVaccination record (fictitious people) for ``patient`` recorded by NIHDI ``recorder``."""
    resource: dict[str, Any] = {
        "resourceType": "Immunization",
        "meta": {"profile": [BE_VACCINATION]},
        "extension": [
            {
                "url": RECORDER_EXTENSION,
                "valueReference": {"identifier": {"system": NIHDI_PROFESSIONAL, "value": recorder}},
            },
            {
                "url": PRODUCT,
                "extension": [
                    {
                        "url": "coded",
                        "valueCodeableConcept": {"coding": [{"system": CNK, "code": "1234567"}]},
                    },
                    {"url": "lotNumber", "valueString": "AB1234"},
                ],
            },
        ],
        "identifier": [{"system": VENDOR_IDS, "value": key}],
        "status": status,
        "vaccineCode": {"coding": [{"system": SCT, "code": "871717007"}]},
        "patient": {"identifier": {"system": SSIN, "value": patient}},
        "occurrenceDateTime": occurrence,
        "recorded": recorded,
    }
    if status == "not-done":
        resource["statusReason"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "PATOBJ"}]
        }
    return resource


# --- fixtures ---------------------------------------------------------------------------------------


class Clock:
    """A settable UNIX clock for IAM Connect."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture(scope="module")
def data() -> TestData:
    return TestData.load()


@pytest.fixture(scope="module")
def realm_keys() -> dict[str, RSAKey]:
    return {
        realm: RSAKey.generate_key(2048, parameters={"alg": "RS256", "use": "sig"}, auto_kid=True)
        for realm in (HEALTHCARE, M2M)
    }


@pytest.fixture(scope="module")
def org_keys(data: TestData) -> KeyRing:
    return data.generate_keys()


@pytest.fixture(scope="module")
def iam_clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def iam(data: TestData, org_keys: KeyRing, realm_keys: dict[str, RSAKey], iam_clock: Clock) -> IamConnect:
    return IamConnect(data, AUTH_BASE, clock=iam_clock, organisation_keys=org_keys, realm_keys=realm_keys)


@pytest.fixture(scope="module")
def validator(package_set: PackageSet) -> Validator:
    return Validator(package_set)


@dataclass
class Harness:
    """One API over a fresh in-memory register, with helpers to call it."""

    api: FhirApi
    store: ImmunizationStore
    faults: FaultPlan
    iam: IamConnect
    sleeps: list[float] = field(default_factory=list)
    _tokens: dict[str, str] = field(default_factory=dict)

    def token(self, ssin: str = PHYSICIAN) -> str:
        if ssin not in self._tokens:
            self._tokens[ssin] = self.iam.issue_professional_token(ssin)
        return self._tokens[ssin]

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | bytes | None = None,
        *,
        as_: str | None = PHYSICIAN,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        content_type: str | None = FHIR_JSON,
    ) -> HttpResponse:
        parts = urlsplit(path)
        query = parse_qs(parts.query, keep_blank_values=True)
        all_headers: dict[str, str] = {}
        if token is not None:
            all_headers["authorization"] = f"Bearer {token}"
        elif as_ is not None:
            all_headers["authorization"] = f"Bearer {self.token(as_)}"
        raw = orjson.dumps(body) if isinstance(body, dict) else (body or b"")
        if raw and content_type:
            all_headers["content-type"] = content_type
        all_headers.update({k.lower(): v for k, v in (headers or {}).items()})
        response = self.api.handle(HttpRequest(method, parts.path, query, all_headers, raw))
        assert response.annotations.get("rule") != Rule.INTERNAL_ERROR, response.body
        assert set(response.annotations) >= {
            "operation",
            "resource_type",
            "resource_id",
            "subject",
            "validation",
            "fault",
        }
        return response

    def create(self, resource: dict[str, Any], **kwargs: Any) -> HttpResponse:
        return self.call("POST", "/fhir/Immunization", resource, **kwargs)

    def created(self, key: str = "vac-1", **kwargs: Any) -> dict[str, Any]:
        """Create a record through the API and return it (asserting 201)."""
        response = self.create(immunization(key, **kwargs))
        assert response.status == 201, response.body
        return body(response)


def make_config(**changes: Any) -> SimulatorConfig:
    return SimulatorConfig(clock=lambda: NOW, **changes)


@pytest.fixture
def make_harness(validator: Validator, iam: IamConnect, data: TestData) -> Iterator[Callable[..., Harness]]:
    stores: list[ImmunizationStore] = []

    def make(**changes: Any) -> Harness:
        store = ImmunizationStore()
        stores.append(store)
        faults = FaultPlan()
        sleeps: list[float] = []
        config = make_config(sleep=sleeps.append, **changes)
        api = FhirApi(
            validator=validator,
            store=store,
            iam=iam,
            testdata=data,
            faults=faults,
            config=config,
            base_url=BASE_URL,
        )
        return Harness(api, store, faults, iam, sleeps)

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def h(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()


def body(response: HttpResponse) -> dict[str, Any]:
    assert response.headers.get("Content-Type") == "application/fhir+json; charset=utf-8"
    return orjson.loads(response.body)


def rule_of(response: HttpResponse) -> str:
    """The register-rule code of an error answer (and the OperationOutcome's shape)."""
    outcome = body(response)
    assert outcome["resourceType"] == "OperationOutcome"
    first = outcome["issue"][0]
    assert first["severity"] == "error" and first["code"] and first["details"]["text"]
    codings = first["details"]["coding"]
    assert codings[0]["system"] == RULES_SYSTEM
    assert response.annotations["rule"] == codings[0]["code"]
    return codings[0]["code"]


def text_of(response: HttpResponse) -> str:
    return body(response)["issue"][0]["details"]["text"]


# --- metadata -----------------------------------------------------------------------------------------


def test_metadata_needs_no_token_and_states_what_is_implemented(h: Harness, validator: Validator) -> None:
    response = h.call("GET", "/fhir/metadata", as_=None)
    assert response.status == 200
    cs = body(response)
    assert cs["resourceType"] == "CapabilityStatement"
    assert (cs["status"], cs["kind"], cs["fhirVersion"]) == ("active", "instance", "4.0.1")
    assert cs["software"] == {"name": "vaccicard-conformance simulator", "version": __version__}
    assert cs["implementation"]["url"] == BASE_URL + "/fhir"
    assert "application/fhir+json" in cs["format"]
    rest = cs["rest"][0]
    (resource,) = rest["resource"]
    assert resource["type"] == "Immunization"
    assert [i["code"] for i in resource["interaction"]] == [
        "read",
        "vread",
        "update",
        "history-instance",
        "create",
        "search-type",
    ]
    assert resource["conditionalCreate"] is True
    assert {p["name"] for p in resource["searchParam"]} == {"patient", "identifier", "status", "date"}
    assert resource["operation"] == [
        {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}
    ]
    security = rest["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert uris["token"] == h.iam.endpoint(HEALTHCARE, "token")
    assert response.annotations["operation"] == "capabilities"
    assert validator.validate(cs).ok, [i.to_text() for i in validator.validate(cs).errors()]


def test_metadata_lists_delete_only_when_allowed(make_harness: Callable[..., Harness]) -> None:
    cs = body(make_harness(delete_policy="allow").call("GET", "/fhir/metadata", as_=None))
    assert "delete" in [i["code"] for i in cs["rest"][0]["resource"][0]["interaction"]]


# --- create, read, vread, update, history ----------------------------------------------------------------


def test_create_answers_201_with_location_etag_last_modified_and_annotations(h: Harness) -> None:
    response = h.create(immunization())
    assert response.status == 201
    created = body(response)
    id = created["id"]
    assert response.headers["Location"] == f"{BASE_URL}/fhir/Immunization/{id}/_history/1"
    assert response.headers["ETag"] == 'W/"1"'
    assert parsedate_to_datetime(response.headers["Last-Modified"]).tzinfo is not None
    assert created["meta"]["versionId"] == "1"
    notes = response.annotations
    assert notes["operation"] == "create"
    assert notes["resource_type"] == "Immunization"
    assert notes["resource_id"] == id
    assert notes["subject"] == f"nihdi:{PHYSICIAN_NIHII}"
    assert notes["fault"] is None
    assert notes["committed"] is True
    assert isinstance(notes["validation"], list)
    assert all(i["severity"] not in ("error", "fatal") for i in notes["validation"])
    stored = h.store.read(id)
    assert stored is not None and stored.recorder == f"nihdi:{PHYSICIAN_NIHII}"


def test_create_ignores_a_client_id(h: Harness) -> None:
    resource = immunization()
    resource["id"] = "client-chosen"
    created = body(h.create(resource))
    assert created["id"] != "client-chosen"


@pytest.mark.parametrize(
    ("prefer", "applied"),
    [(None, None), ("return=representation", "return=representation"), ('return="representation"', None)],
)
def test_prefer_representation_is_the_default(h: Harness, prefer: str | None, applied: str | None) -> None:
    headers = {"Prefer": prefer} if prefer else {}
    response = h.create(immunization(), headers=headers)
    assert response.status == 201
    assert body(response)["resourceType"] == "Immunization"
    if applied:
        assert response.headers["Preference-Applied"] == applied


def test_prefer_minimal_answers_headers_only(h: Harness) -> None:
    response = h.create(immunization(), headers={"Prefer": "return=minimal"})
    assert response.status == 201
    assert response.body == b""
    assert response.headers["Location"].endswith("/_history/1")
    assert response.headers["ETag"] == 'W/"1"'
    assert response.headers["Preference-Applied"] == "return=minimal"


def test_prefer_operation_outcome_answers_an_outcome(h: Harness) -> None:
    response = h.create(immunization(), headers={"Prefer": "handling=strict, return=OperationOutcome"})
    assert response.status == 201
    outcome = body(response)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "information"
    assert "created" in outcome["issue"][0]["details"]["text"]
    assert response.headers["Location"]


def test_read_vread_and_conditional_read(h: Harness) -> None:
    id = h.created()["id"]
    response = h.call("GET", f"/fhir/Immunization/{id}")
    assert response.status == 200
    assert body(response)["id"] == id
    assert response.headers["ETag"] == 'W/"1"'
    assert "Last-Modified" in response.headers
    assert response.annotations["operation"] == "read"
    assert response.annotations["resource_id"] == id
    version = h.call("GET", f"/fhir/Immunization/{id}/_history/1")
    assert version.status == 200 and body(version)["meta"]["versionId"] == "1"
    assert version.annotations["operation"] == "vread"
    not_modified = h.call("GET", f"/fhir/Immunization/{id}", headers={"If-None-Match": 'W/"1"'})
    assert not_modified.status == 304 and not_modified.body == b""


@pytest.mark.parametrize("suffix", ["", "/_history", "/_history/1"])
def test_unknown_record_is_404(h: Harness, suffix: str) -> None:
    response = h.call("GET", f"/fhir/Immunization/doesnotexist{suffix}")
    assert response.status == 404
    assert rule_of(response) == Rule.NOT_FOUND


def test_unknown_version_is_404(h: Harness) -> None:
    id = h.created()["id"]
    for version in ("2", "0", "x1"):
        response = h.call("GET", f"/fhir/Immunization/{id}/_history/{version}")
        assert response.status in (400, 404), version
        assert rule_of(response) in (Rule.NOT_FOUND, Rule.INVALID_ID)


def update(h: Harness, record: dict[str, Any], *, if_match: str | None = None, **kwargs: Any) -> HttpResponse:
    headers = dict(kwargs.pop("headers", {}))
    if if_match is not None:
        headers["If-Match"] = if_match
    return h.call("PUT", f"/fhir/Immunization/{record['id']}", record, headers=headers, **kwargs)


def test_update_with_if_match_makes_a_new_version_and_a_stale_one_gets_412(h: Harness) -> None:
    record = h.created()
    record["note"] = [{"text": "second dose planned"}]
    response = update(h, record, if_match='W/"1"')
    assert response.status == 200
    assert response.headers["ETag"] == 'W/"2"'
    assert response.headers["Location"].endswith("/_history/2")
    assert response.annotations["operation"] == "update"
    stale = update(h, record, if_match='W/"1"')
    assert stale.status == 412
    assert rule_of(stale) == Rule.VERSION_CONFLICT
    assert body(stale)["issue"][0]["code"] == "conflict"


def test_update_without_if_match_is_allowed_by_default_and_428_when_required(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness()
    record = h.created()
    assert update(h, record).status == 200
    strict = make_harness(require_if_match=True)
    record = strict.created()
    response = update(strict, record)
    assert response.status == 428
    assert rule_of(response) == Rule.IF_MATCH_REQUIRED
    assert update(strict, record, if_match='"1"').status == 200
    cs = body(strict.call("GET", "/fhir/metadata", as_=None))
    assert cs["rest"][0]["resource"][0]["versioning"] == "versioned-update"


def test_update_refusals(h: Harness) -> None:
    record = h.created()
    id = record["id"]
    bad = update(h, record, if_match="version one")
    assert (bad.status, rule_of(bad)) == (400, Rule.INVALID_IF_MATCH)
    other = dict(record, id="someone-else")
    response = h.call("PUT", f"/fhir/Immunization/{id}", other)
    assert (response.status, rule_of(response)) == (400, Rule.ID_MISMATCH)
    no_id = {k: v for k, v in record.items() if k != "id"}
    response = h.call("PUT", f"/fhir/Immunization/{id}", no_id)
    assert (response.status, rule_of(response)) == (400, Rule.ID_MISMATCH)
    missing = dict(record, id="nosuchrecord")
    response = h.call("PUT", "/fhir/Immunization/nosuchrecord", missing)
    assert (response.status, rule_of(response)) == (404, Rule.NOT_FOUND)
    changed = copy.deepcopy(record)
    changed["identifier"] = [{"system": VENDOR_IDS, "value": "another-key"}]
    response = update(h, changed)
    assert (response.status, rule_of(response)) == (422, Rule.IDENTIFIER_CHANGED)
    moved = copy.deepcopy(record)
    moved["patient"]["identifier"]["value"] = MARIE
    response = update(h, moved)
    assert (response.status, rule_of(response)) == (422, Rule.PATIENT_CHANGED)
    invalid = copy.deepcopy(record)
    del invalid["vaccineCode"]
    response = update(h, invalid)
    assert (response.status, rule_of(response)) == (422, Rule.PROFILE_INVALID)
    assert h.store.read(id).version == 1  # type: ignore[union-attr]


def test_cancel_is_an_update_to_entered_in_error_and_status_transitions_are_checked(h: Harness) -> None:
    record = h.created()
    to_not_done = copy.deepcopy(record)
    to_not_done["status"] = "not-done"
    to_not_done["statusReason"] = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "PATOBJ"}]
    }
    response = update(h, to_not_done)
    assert (response.status, rule_of(response)) == (422, Rule.STATUS_TRANSITION)
    cancelled = dict(record, status="entered-in-error")
    response = update(h, cancelled, if_match='W/"1"')
    assert response.status == 200
    assert body(response)["status"] == "entered-in-error"
    reinstated = dict(record, status="completed")
    assert update(h, reinstated, if_match='W/"2"').status == 200
    refusal = h.created("refusal-1", status="not-done")
    assert update(h, dict(refusal, status="entered-in-error")).status == 200


def test_concurrent_updates_with_the_same_version_lose_no_update(h: Harness) -> None:
    record = h.created()
    results: list[int] = []
    barrier = threading.Barrier(6)

    def worker(n: int) -> None:
        mine = copy.deepcopy(record)
        mine["note"] = [{"text": f"writer {n}"}]
        barrier.wait()
        results.append(update(h, mine, if_match='W/"1"').status)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [200, 412, 412, 412, 412, 412]
    assert len(h.store.history(record["id"])) == 2


def test_history_is_a_history_bundle_newest_first(h: Harness) -> None:
    record = h.created()
    update(h, dict(record, status="entered-in-error"))
    response = h.call("GET", f"/fhir/Immunization/{record['id']}/_history")
    assert response.status == 200
    bundle = body(response)
    assert (bundle["type"], bundle["total"]) == ("history", 2)
    assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"]] == ["2", "1"]
    assert [e["request"]["method"] for e in bundle["entry"]] == ["PUT", "POST"]
    assert bundle["entry"][0]["response"]["etag"] == 'W/"2"'
    assert response.annotations["operation"] == "history"
    bad = h.call("GET", f"/fhir/Immunization/{record['id']}/_history?_since=2020")
    assert (bad.status, rule_of(bad)) == (400, Rule.UNKNOWN_SEARCH_PARAMETER)


# --- conditional create and duplicates ----------------------------------------------------------------


def if_none_exist(key: str = "vac-1") -> dict[str, str]:
    return {"If-None-Exist": urlencode({"identifier": f"{VENDOR_IDS}|{key}"})}


def test_conditional_create_answers_the_existing_record(h: Harness) -> None:
    first = h.create(immunization(), headers=if_none_exist())
    assert first.status == 201
    assert first.annotations["conditional"] == "created"
    again = h.create(immunization(), headers=if_none_exist())
    assert again.status == 200
    assert body(again)["id"] == body(first)["id"]
    assert again.annotations["conditional"] == "existing"
    assert again.annotations["committed"] is False
    assert again.headers["Location"] == first.headers["Location"]
    assert h.store.search()[1] == 1


def test_conditional_create_must_name_the_business_identifier(h: Harness) -> None:
    response = h.create(immunization(), headers=if_none_exist("another"))
    assert (response.status, rule_of(response)) == (400, Rule.CONDITIONAL_CREATE_MISMATCH)
    for header in ("status=completed", "identifier=just-a-value", "identifier=|x", "", "identifier=a|b&x=y"):
        response = h.create(immunization(), headers={"If-None-Exist": header})
        assert (response.status, rule_of(response)) == (400, Rule.INVALID_IF_NONE_EXIST), header


def test_concurrent_conditional_creates_make_one_record(h: Harness) -> None:
    results: list[tuple[int, str]] = []
    barrier = threading.Barrier(8)
    tokens = h.token()

    def worker() -> None:
        barrier.wait()
        response = h.create(immunization("race-1"), headers=if_none_exist("race-1"), token=tokens)
        results.append((response.status, body(response)["id"]))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(status for status, _ in results) == [200] * 7 + [201]
    assert len({id for _, id in results}) == 1
    assert h.store.search()[1] == 1


def test_the_same_business_identifier_twice_is_409(h: Harness) -> None:
    id = h.created()["id"]
    response = h.create(immunization())
    assert response.status == 409
    assert rule_of(response) == Rule.DUPLICATE_IDENTIFIER
    assert body(response)["issue"][0]["code"] == "duplicate"
    assert id in text_of(response)


def test_a_duplicate_of_a_record_one_may_not_see_does_not_reveal_its_id(h: Harness) -> None:
    id = h.created("shared-key", patient=MARIE)["id"]
    response = h.create(immunization("shared-key", patient=JEAN, recorder="50010131000"), as_=PHARMACIST)
    assert (response.status, rule_of(response)) == (409, Rule.DUPLICATE_IDENTIFIER)
    assert id not in text_of(response)
    conditional = h.create(
        immunization("shared-key", patient=JEAN, recorder="50010131000"),
        as_=PHARMACIST,
        headers=if_none_exist("shared-key"),
    )
    assert (conditional.status, rule_of(conditional)) == (409, Rule.DUPLICATE_IDENTIFIER)


# --- validation and bodies ----------------------------------------------------------------------------


def test_an_invalid_resource_gets_422_with_the_validators_outcome(h: Harness) -> None:
    resource = immunization()
    resource["lotNumber"] = "A1"  # 0..0 in BeVaccination
    del resource["recorded"]
    response = h.create(resource)
    assert response.status == 422
    assert rule_of(response) == Rule.PROFILE_INVALID
    issues = body(response)["issue"]
    texts = " ".join(i["details"]["text"] for i in issues[1:] if i["severity"] == "error")
    assert "lotNumber" in texts and "recorded" in texts
    assert any(i["severity"] == "error" for i in response.annotations["validation"])
    assert h.store.search()[1] == 0


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        (b"{not json", Rule.INVALID_JSON),
        (b"\xff\xfe", Rule.INVALID_JSON),
        (b"[1, 2]", Rule.INVALID_JSON),
        (b"   ", Rule.INVALID_JSON),
        (b'{"resourceType": "Patient"}', Rule.NOT_AN_IMMUNIZATION),
        (b'{"status": "completed"}', Rule.NOT_AN_IMMUNIZATION),
        (b'{"resourceType": "Immunization", "identifier": null}', Rule.INVALID_JSON),
        (b"[" * 100 + b"]" * 100, Rule.JSON_TOO_DEEP),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, Rule.JSON_TOO_DEEP),
    ],
)
def test_malformed_bodies_get_400(h: Harness, raw: bytes, rule: Rule) -> None:
    response = h.create(raw)
    assert response.status == 400
    assert rule_of(response) == rule


def test_a_body_over_the_limit_gets_413(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    response = h.create(b" " * 1_000_001)
    assert (response.status, rule_of(response)) == (413, Rule.PAYLOAD_TOO_LARGE)
    small = make_harness(max_body_bytes=100)
    response = small.create(immunization())
    assert (response.status, rule_of(response)) == (413, Rule.PAYLOAD_TOO_LARGE)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/xml",
        "application/fhir+xml",
        "application/x-www-form-urlencoded",
        "application/fhir+json; charset=iso-8859-1",
        "application/fhir+json; fhirVersion=5.0",
    ],
)
def test_a_body_that_is_not_fhir_json_gets_415(h: Harness, content_type: str | None) -> None:
    response = h.create(immunization(), content_type=content_type)
    assert (response.status, rule_of(response)) == (415, Rule.UNSUPPORTED_MEDIA_TYPE)


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/fhir+json; charset=utf-8", "application/fhir+json; fhirVersion=4.0"],
)
def test_json_content_types_are_accepted(h: Harness, content_type: str) -> None:
    assert h.create(immunization(), content_type=content_type).status == 201


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        ("application/fhir+xml", 406),
        ("text/html", 406),
        ("application/xml, text/html;q=0.9", 406),
        ("application/fhir+json;q=0, text/html", 406),
        ("application/fhir+json; fhirVersion=3.0", 406),
        ("*/*", 200),
        ("application/json", 200),
        ("application/fhir+json", 200),
        ("text/html, application/fhir+json;q=0.5", 200),
        ("", 200),
    ],
)
def test_accept_negotiation(h: Harness, accept: str, status: int) -> None:
    response = h.call("GET", "/fhir/metadata", as_=None, headers={"Accept": accept})
    assert response.status == status
    if status == 406:
        assert rule_of(response) == Rule.NOT_ACCEPTABLE


def test_format_parameter_wins_over_accept(h: Harness) -> None:
    xml = {"Accept": "application/fhir+xml"}
    assert h.call("GET", "/fhir/metadata?_format=json", as_=None, headers=xml).status == 200
    assert h.call("GET", "/fhir/metadata?_format=application/fhir%2Bjson", as_=None).status == 200
    assert h.call("GET", "/fhir/metadata?_format=application/fhir+json", as_=None).status == 200
    response = h.call("GET", "/fhir/metadata?_format=xml", as_=None)
    assert (response.status, rule_of(response)) == (406, Rule.NOT_ACCEPTABLE)


def test_pretty_output(h: Harness) -> None:
    response = h.call("GET", "/fhir/metadata?_pretty=true", as_=None)
    assert b"\n  " in response.body


# --- routes and ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/fhir", "/fhir/", "/fhir/Patient", "/fhir/Patient/123", "/fhir/nothing", "/other", "/fhirx/metadata"],
)
def test_unknown_routes_get_404_with_an_outcome(h: Harness, path: str) -> None:
    response = h.call("GET", path)
    assert response.status == 404
    assert rule_of(response) == Rule.UNKNOWN_ROUTE


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/fhir/Immunization/abc", "GET, PUT"),
        ("PATCH", "/fhir/Immunization/abc", "GET, PUT"),
        ("PUT", "/fhir/Immunization", "GET, POST"),
        ("DELETE", "/fhir/Immunization", "GET, POST"),
        ("POST", "/fhir/metadata", "GET"),
        ("GET", "/fhir/Immunization/$validate", "POST"),
        ("BREW", "/fhir/Immunization/abc/_history", "GET"),
    ],
)
def test_wrong_methods_get_405_with_allow(h: Harness, method: str, path: str, allow: str) -> None:
    response = h.call(method, path, immunization() if method in ("POST", "PUT") else None)
    assert response.status == 405
    assert response.headers["Allow"] == allow
    assert rule_of(response) == Rule.METHOD_NOT_ALLOWED


@pytest.mark.parametrize(
    "path",
    [
        "/fhir/Immunization/..",
        "/fhir/Immunization/../metadata",
        "/fhir/../etc/passwd",
        "/fhir/Immunization/%2e%2e",
        "/fhir/Immunization/%2e%2e%2fmetadata",
        "/fhir/Immunization/..%2f..%2fetc",
        "/fhir/Immunization/" + "a" * 65,
        "/fhir/Immunization/abc!def",
        "/fhir/Immunization/abc def",
        "/fhir/Immunization/é",
        "/fhir/Immunization/a\x00b",
        "/fhir/Immunization/...",
        "/fhir/Immunization/abc/_history/..",
        "/fhir/Immunization/abc\\..\\x",
        "/fhir//Immunization",
    ],
)
def test_path_traversal_and_bad_ids_get_400_or_404(h: Harness, path: str) -> None:
    response = h.api.handle(HttpRequest("GET", path, {}, {"authorization": f"Bearer {h.token()}"}, b""))
    assert response.status in (400, 404)
    assert rule_of(response) in (Rule.INVALID_PATH, Rule.INVALID_ID, Rule.UNKNOWN_ROUTE, Rule.NOT_FOUND)
    assert b"Traceback" not in response.body


def test_an_id_of_64_characters_is_fine(h: Harness) -> None:
    response = h.call("GET", "/fhir/Immunization/" + "a" * 64)
    assert (response.status, rule_of(response)) == (404, Rule.NOT_FOUND)


# --- DELETE -------------------------------------------------------------------------------------------


def test_delete_is_refused_by_default_saying_how_to_cancel(h: Harness) -> None:
    id = h.created()["id"]
    response = h.call("DELETE", f"/fhir/Immunization/{id}")
    assert response.status == 405
    assert rule_of(response) == Rule.DELETE_FORBIDDEN
    assert "entered-in-error" in text_of(response)
    assert response.headers["Allow"] == "GET, PUT"
    assert response.annotations["operation"] == "delete"
    assert h.store.read(id).status == "completed"  # type: ignore[union-attr]


def test_delete_allowed_cancels_the_record(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(delete_policy="allow")
    id = h.created()["id"]
    response = h.call("DELETE", f"/fhir/Immunization/{id}")
    assert response.status == 204 and response.body == b""
    assert response.headers["ETag"] == 'W/"2"'
    assert h.store.read(id).status == "entered-in-error"  # type: ignore[union-attr]
    again = h.call("DELETE", f"/fhir/Immunization/{id}")
    assert again.status == 204
    assert h.store.read(id).version == 2  # type: ignore[union-attr]
    assert h.call("DELETE", "/fhir/Immunization/nothere").status == 404
    stale = h.call("DELETE", f"/fhir/Immunization/{id}", headers={"If-Match": 'W/"1"'})
    assert (stale.status, rule_of(stale)) == (412, Rule.VERSION_CONFLICT)
    dentist = h.call("DELETE", f"/fhir/Immunization/{id}", as_=DENTIST)
    assert (dentist.status, rule_of(dentist)) == (403, Rule.DISCIPLINE_MAY_NOT_RECORD)


# --- tokens -------------------------------------------------------------------------------------------


def sign(key: RSAKey, claims: dict[str, Any], kid: str | None = None) -> str:
    return jwt.encode({"alg": "RS256", "kid": kid or key.kid}, claims, key, algorithms=["RS256"])


def claims_of(token: str) -> dict[str, Any]:
    import base64

    payload = token.split(".")[1]
    return orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture(scope="module")
def stranger_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"alg": "RS256", "use": "sig"}, auto_kid=True)


def bad_tokens(
    h: Harness, realm_keys: dict[str, RSAKey], stranger_key: RSAKey, iam_clock: Clock
) -> dict[str, str]:
    good = h.token()
    claims = claims_of(good)
    healthcare = realm_keys[HEALTHCARE]
    iam_clock.offset = -3600
    try:
        expired = h.iam.issue_professional_token(PHYSICIAN)
    finally:
        iam_clock.offset = 0
    return {
        "malformed": "not-a-jwt",
        "malformed-json": "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln",
        "bad-signature-unknown-key": sign(stranger_key, claims),
        "bad-signature-forged-kid": sign(stranger_key, claims, kid=healthcare.kid),
        "bad-signature-tampered": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "expired": expired,
        "wrong-issuer": sign(healthcare, {**claims, "iss": "https://idp.example/realms/healthcare"}),
        "wrong-audience": h.iam.issue_professional_token(PHYSICIAN, audience="vendor-software"),
        "invalid-claims": sign(healthcare, {**claims, "typ": "Refresh"}),
    }


EXPECTED_TOKEN_RULES = {
    "malformed": Rule.TOKEN_MALFORMED,
    "malformed-json": Rule.TOKEN_MALFORMED,
    "bad-signature-unknown-key": Rule.TOKEN_BAD_SIGNATURE,
    "bad-signature-forged-kid": Rule.TOKEN_BAD_SIGNATURE,
    "bad-signature-tampered": Rule.TOKEN_BAD_SIGNATURE,
    "expired": Rule.TOKEN_EXPIRED,
    "wrong-issuer": Rule.TOKEN_WRONG_ISSUER,
    "wrong-audience": Rule.TOKEN_WRONG_AUDIENCE,
    "invalid-claims": Rule.TOKEN_INVALID_CLAIMS,
}


@pytest.mark.parametrize("path", ["/fhir/Immunization", "/fhir/Immunization/abc"])
def test_every_token_failure_gets_401_with_www_authenticate(
    h: Harness, realm_keys: dict[str, RSAKey], stranger_key: RSAKey, iam_clock: Clock, path: str
) -> None:
    tokens = bad_tokens(h, realm_keys, stranger_key, iam_clock)
    assert set(tokens) == set(EXPECTED_TOKEN_RULES)
    for name, token in tokens.items():
        response = h.call("GET", path, token=token)
        assert response.status == 401, name
        assert rule_of(response) == EXPECTED_TOKEN_RULES[name], name
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="Vaccicard", error="invalid_token", error_description="')
        assert token not in challenge and token not in response.body.decode()
        assert response.annotations["subject"] is None
        code = body(response)["issue"][0]["code"]
        assert code == ("expired" if name == "expired" else "login")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "Token abc"])
def test_a_missing_bearer_token_gets_401_with_a_bare_challenge(h: Harness, header: str | None) -> None:
    headers = {"content-type": FHIR_JSON}
    if header is not None:
        headers["authorization"] = header
    response = h.api.handle(
        HttpRequest("POST", "/fhir/Immunization", {}, headers, orjson.dumps(immunization()))
    )
    assert response.status == 401
    assert rule_of(response) in (Rule.TOKEN_MISSING, Rule.TOKEN_MALFORMED)
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="Vaccicard"')


def test_the_realm_is_configurable(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(realm="Vaccicard acceptance")
    response = h.call("GET", "/fhir/Immunization/abc", as_=None)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="Vaccicard acceptance"'


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    token=st.one_of(
        st.text(max_size=300),
        st.from_regex(r"[A-Za-z0-9_\-]{0,40}\.[A-Za-z0-9_\-]{0,80}\.[A-Za-z0-9_\-]{0,40}", fullmatch=True),
        st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    )
)
def test_garbage_tokens_always_get_401(h: Harness, token: str) -> None:
    response = h.api.handle(
        HttpRequest("GET", "/fhir/Immunization/abc", {}, {"authorization": "Bearer " + token}, b"")
    )
    assert response.status == 401
    assert "WWW-Authenticate" in response.headers


# --- principals and disciplines -----------------------------------------------------------------------


def test_an_organisation_token_may_not_touch_patient_data_but_may_validate(h: Harness) -> None:
    token = h.iam.issue_organisation_token(ORG_CLIENT)
    response = h.call("GET", "/fhir/Immunization?identifier=x", token=token)
    assert (response.status, rule_of(response)) == (403, Rule.PROFESSIONAL_REQUIRED)
    assert response.annotations["subject"] == "cbe:0987654394"
    response = h.call("POST", "/fhir/Immunization/$validate", immunization(), token=token)
    assert response.status == 200


def test_a_discipline_that_may_not_record_gets_403_for_writes_but_may_read(h: Harness) -> None:
    response = h.create(immunization(recorder="30040108001"), as_=DENTIST)
    assert (response.status, rule_of(response)) == (403, Rule.DISCIPLINE_MAY_NOT_RECORD)
    assert body(response)["issue"][0]["code"] == "forbidden"
    id = h.created()["id"]
    assert h.call("GET", f"/fhir/Immunization/{id}", as_=DENTIST).status == 200


def test_an_unrecognised_professional_gets_403_for_reads_and_writes(h: Harness) -> None:
    id = h.created()["id"]
    for response in (
        h.call("GET", f"/fhir/Immunization/{id}", as_=UNRECOGNISED),
        h.call("GET", f"/fhir/Immunization?patient.identifier={SSIN}|{JEAN}", as_=UNRECOGNISED),
        h.create(immunization("x", recorder="10050287003"), as_=UNRECOGNISED),
    ):
        assert (response.status, rule_of(response)) == (403, Rule.DISCIPLINE_NOT_RECOGNISED)


def test_recording_disciplines_are_configurable(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(recording_disciplines=("physician", "dentist"))
    assert h.create(immunization(recorder="30040108001"), as_=DENTIST).status == 201
    response = h.create(immunization("p", recorder="50010131000"), as_=PHARMACIST)
    assert (response.status, rule_of(response)) == (403, Rule.DISCIPLINE_MAY_NOT_RECORD)


# --- register rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patient", "as_", "recorder", "rule"),
    [
        (UNKNOWN_PATIENT, PHYSICIAN, PHYSICIAN_NIHII, Rule.PATIENT_UNKNOWN),
        (PAUL, PHYSICIAN, PHYSICIAN_NIHII, Rule.PATIENT_NO_CONSENT),
        (LOTTE, PHYSICIAN, PHYSICIAN_NIHII, Rule.NO_THERAPEUTIC_RELATIONSHIP),
        (JEAN, NO_RELATION, "10060383003", Rule.NO_THERAPEUTIC_RELATIONSHIP),
        (MARIE, PHARMACIST, "50010131000", Rule.NO_THERAPEUTIC_RELATIONSHIP),
        (JEAN, PHYSICIAN, "50010131000", Rule.RECORDER_MISMATCH),
        (JEAN, PHARMACIST, PHYSICIAN_NIHII, Rule.RECORDER_MISMATCH),
    ],
)
def test_access_rules_on_create_get_403(
    h: Harness, patient: str, as_: str, recorder: str, rule: Rule
) -> None:
    response = h.create(immunization(patient=patient, recorder=recorder), as_=as_)
    assert response.status == 403
    assert rule_of(response) == rule
    assert body(response)["issue"][0]["code"] == "forbidden"
    assert patient not in text_of(response)  # no SSIN in the answer
    assert h.store.search()[1] == 0


@pytest.mark.parametrize(
    "reference",
    [
        {"identifier": {"system": NIHDI_PROFESSIONAL, "value": PHYSICIAN_NIHII[:8]}},
        {"identifier": {"system": NIHDI, "value": PHYSICIAN_NIHII}},
        {"identifier": {"system": SSIN, "value": PHYSICIAN}},
        {"reference": "#rec"},
    ],
)
def test_the_recorder_may_be_named_by_nihdi_8_or_11_ssin_or_a_contained_practitioner(
    h: Harness, reference: dict[str, Any]
) -> None:
    resource = immunization()
    resource["extension"][0]["valueReference"] = reference
    if reference.get("reference") == "#rec":
        resource["contained"] = [
            {
                "resourceType": "Practitioner",
                "id": "rec",
                "identifier": [{"system": NIHDI_PROFESSIONAL, "value": PHYSICIAN_NIHII}],
                "name": [{"family": "Exemplaire", "given": ["Luc"]}],
            }
        ]
    response = h.create(resource)
    assert response.status == 201, body(response)


def test_a_recorder_that_is_an_organisation_is_refused(h: Harness) -> None:
    resource = immunization()
    resource["extension"][0]["valueReference"] = {
        "identifier": {
            "system": "https://www.ehealth.fgov.be/standards/fhir/core/NamingSystem/cbe",
            "value": "0987654394",
        }
    }
    response = h.create(resource)
    assert (response.status, rule_of(response)) == (403, Rule.RECORDER_MISMATCH)


def test_a_patient_not_identified_by_ssin_gets_422(h: Harness) -> None:
    resource = immunization()
    resource["patient"] = {
        "identifier": {
            "system": "https://www.ehealth.fgov.be/standards/fhir/core/NamingSystem/one-patientid",
            "value": "3564564568",
        }
    }
    response = h.create(resource)
    assert (response.status, rule_of(response)) == (422, Rule.PATIENT_IDENTIFIER_REQUIRED)


def test_a_record_without_business_identifier_gets_422(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    resource = immunization()
    del resource["identifier"]
    response = h.create(resource)
    assert (response.status, rule_of(response)) == (422, Rule.BUSINESS_IDENTIFIER_MISSING)
    other_system = make_harness(business_identifier_system="https://register.example/ids")
    response = other_system.create(immunization())
    assert (response.status, rule_of(response)) == (422, Rule.BUSINESS_IDENTIFIER_MISSING)
    resource = immunization()
    resource["identifier"].append({"system": "https://register.example/ids", "value": "R-1"})
    assert other_system.create(resource).status == 201
    assert (
        other_system.create(
            resource, headers={"If-None-Exist": "identifier=https://register.example/ids|R-1"}
        ).status
        == 200
    )


@pytest.mark.parametrize(
    ("recorded", "occurrence", "rule"),
    [
        ("2026-12-02T10:00:00+01:00", "2026-11-20", Rule.RECORDED_IN_FUTURE),
        ("2026-12-01T12:10:00Z", "2026-11-20", Rule.RECORDED_IN_FUTURE),
        ("2026-11-20T10:05:00+01:00", "2026-12-25", Rule.OCCURRENCE_IN_FUTURE),
        ("2026-11-20T10:05:00+01:00", "2027", Rule.OCCURRENCE_IN_FUTURE),
    ],
)
def test_a_date_in_the_future_gets_422(h: Harness, recorded: str, occurrence: str, rule: Rule) -> None:
    response = h.create(immunization(recorded=recorded, occurrence=occurrence))
    assert response.status == 422
    assert rule_of(response) == rule
    assert body(response)["issue"][0]["code"] == "business-rule"


@pytest.mark.parametrize(
    ("recorded", "occurrence"),
    [
        ("2026-12-01T12:04:00Z", "2026-12-01"),  # within the 5-minute tolerance; today
        ("2026-12-01T13:00:00+01:00", "2026-12"),  # now, written in Brussels time; this month
    ],
)
def test_dates_now_or_within_the_tolerance_are_accepted(h: Harness, recorded: str, occurrence: str) -> None:
    response = h.create(immunization(recorded=recorded, occurrence=occurrence))
    assert response.status == 201, body(response)


def test_reads_need_consent_and_a_relationship(h: Harness) -> None:
    paul = h.store.create(immunization("paul-1", patient=PAUL), business_key=(VENDOR_IDS, "paul-1"))
    lotte = h.store.create(immunization("lotte-1", patient=LOTTE), business_key=(VENDOR_IDS, "lotte-1"))
    stranger = h.store.create(
        immunization("unknown-1", patient=UNKNOWN_PATIENT), business_key=(VENDOR_IDS, "unknown-1")
    )
    jean = h.created("jean-1")
    other_id = immunization("no-ssin-1")
    other_id["patient"]["identifier"]["system"] = "https://example.org/patients"
    no_ssin = h.store.create(other_id, business_key=(VENDOR_IDS, "no-ssin-1"))
    cases = [
        (f"/fhir/Immunization/{no_ssin.id}", PHYSICIAN, Rule.PATIENT_UNKNOWN),
        (f"/fhir/Immunization/{paul.id}", PHYSICIAN, Rule.PATIENT_NO_CONSENT),
        (f"/fhir/Immunization/{paul.id}/_history/1", PHYSICIAN, Rule.PATIENT_NO_CONSENT),
        (f"/fhir/Immunization/{paul.id}/_history", PHYSICIAN, Rule.PATIENT_NO_CONSENT),
        (f"/fhir/Immunization/{lotte.id}", PHYSICIAN, Rule.NO_THERAPEUTIC_RELATIONSHIP),
        (f"/fhir/Immunization/{stranger.id}", PHYSICIAN, Rule.PATIENT_UNKNOWN),
        (f"/fhir/Immunization/{jean['id']}", NO_RELATION, Rule.NO_THERAPEUTIC_RELATIONSHIP),
        (f"/fhir/Immunization?patient.identifier={SSIN}|{PAUL}", PHYSICIAN, Rule.PATIENT_NO_CONSENT),
        (
            f"/fhir/Immunization?patient.identifier={SSIN}|{LOTTE}",
            PHYSICIAN,
            Rule.NO_THERAPEUTIC_RELATIONSHIP,
        ),
        (f"/fhir/Immunization?patient:identifier={SSIN}|{UNKNOWN_PATIENT}", PHYSICIAN, Rule.PATIENT_UNKNOWN),
    ]
    for path, who, rule in cases:
        response = h.call("GET", path, as_=who)
        assert (response.status, rule_of(response)) == (403, rule), path
    # updates of a record one may not see are refused before anything else
    response = update(h, dict(jean, status="entered-in-error"), as_=NO_RELATION)
    assert (response.status, rule_of(response)) == (403, Rule.NO_THERAPEUTIC_RELATIONSHIP)


# --- search -------------------------------------------------------------------------------------------


@pytest.fixture
def register(h: Harness) -> Harness:
    """Jean: 5 records in November (one not-done, one cancelled); Marie: one; Paul (no consent): one."""
    for day in range(1, 6):
        status = "not-done" if day == 4 else "completed"
        h.created(f"jean-{day}", occurrence=f"2026-11-{day:02d}T10:00:00+01:00", status=status)
    last = h.store.search(identifier=(VENDOR_IDS, "jean-5"))[0][0]
    update(h, dict(last.resource, status="entered-in-error"))
    h.created("marie-1", patient=MARIE, occurrence="2026-10-15")
    h.store.create(immunization("paul-1", patient=PAUL), business_key=(VENDOR_IDS, "paul-1"))
    return h


def search(h: Harness, query: str, **kwargs: Any) -> dict[str, Any]:
    response = h.call("GET", "/fhir/Immunization" + ("?" + query if query else ""), **kwargs)
    assert response.status == 200, response.body
    assert response.annotations["operation"] == "search"
    return body(response)


def keys(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["identifier"][0]["value"] for e in bundle["entry"]]


JEAN_Q = f"patient.identifier={SSIN}|{JEAN}"


def test_search_by_patient_gives_a_searchset(register: Harness) -> None:
    bundle = search(register, JEAN_Q)
    assert (bundle["type"], bundle["total"]) == ("searchset", 5)
    assert keys(bundle) == [f"jean-{d}" for d in range(1, 6)]
    entry = bundle["entry"][0]
    assert entry["fullUrl"] == f"{BASE_URL}/fhir/Immunization/{entry['resource']['id']}"
    assert entry["search"] == {"mode": "match"}
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert links["self"].startswith(f"{BASE_URL}/fhir/Immunization?")
    assert "next" not in links and "previous" not in links
    same = search(register, f"patient:identifier={SSIN}|{JEAN}")
    assert keys(same) == keys(bundle)


def test_search_by_identifier_status_and_date(register: Harness) -> None:
    assert keys(search(register, f"identifier={VENDOR_IDS}|jean-2")) == ["jean-2"]
    assert keys(search(register, "identifier=jean-3")) == ["jean-3"]
    assert keys(search(register, "identifier=|jean-3")) == []
    assert keys(search(register, f"{JEAN_Q}&status=not-done")) == ["jean-4"]
    assert keys(search(register, f"{JEAN_Q}&status=not-done,entered-in-error")) == ["jean-4", "jean-5"]
    assert keys(search(register, f"{JEAN_Q}&status=completed&status=not-done")) == []
    assert keys(search(register, f"{JEAN_Q}&status=http://hl7.org/fhir/event-status|completed")) == [
        "jean-1",
        "jean-2",
        "jean-3",
    ]
    assert keys(search(register, f"{JEAN_Q}&date=ge2026-11-02&date=le2026-11-03")) == ["jean-2", "jean-3"]
    assert keys(search(register, f"{JEAN_Q}&date=gt2026-11-04")) == ["jean-5"]
    assert keys(search(register, f"{JEAN_Q}&date=lt2026-11-02")) == ["jean-1"]
    assert keys(search(register, f"{JEAN_Q}&date=eq2026-11-03")) == ["jean-3"]
    assert keys(search(register, f"{JEAN_Q}&date=2026-11-03")) == ["jean-3"]
    assert keys(search(register, f"{JEAN_Q}&date=2026-11")) == [f"jean-{d}" for d in range(1, 6)]
    assert keys(search(register, f"{JEAN_Q}&_sort=-date")) == [f"jean-{d}" for d in range(5, 0, -1)]
    assert keys(search(register, f"{JEAN_Q}&_sort=date&status=")) == [f"jean-{d}" for d in range(1, 6)]


def test_search_pages_with_next_previous_and_self_links(register: Harness) -> None:
    bundle = search(register, f"{JEAN_Q}&_count=2&_sort=-date")
    seen = keys(bundle)
    assert bundle["total"] == 5 and len(seen) == 2
    pages = 1
    while True:
        links = {link["relation"]: link["url"] for link in bundle["link"]}
        if "next" not in links:
            break
        url = urlsplit(links["next"])
        assert url.path == "/fhir/Immunization"
        bundle = search(register, url.query)
        assert "previous" in {link["relation"] for link in bundle["link"]}
        seen += keys(bundle)
        pages += 1
    assert pages == 3
    assert seen == [f"jean-{d}" for d in range(5, 0, -1)]
    last_self = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
    assert "_offset=4" in last_self and "_count=2" in last_self and "_sort=-date" in last_self


def test_search_count_limits(register: Harness) -> None:
    summary = search(register, f"{JEAN_Q}&_count=0")
    assert summary["total"] == 5 and summary["entry"] == []
    clamped = search(register, f"{JEAN_Q}&_count=5000")
    assert "_count=100" in clamped["link"][0]["url"]


def test_search_without_patient_shows_only_what_the_professional_may_see(register: Harness) -> None:
    everything = search(register, "")
    assert sorted(keys(everything)) == sorted([*(f"jean-{d}" for d in range(1, 6)), "marie-1"])
    assert everything["total"] == 6
    assert keys(search(register, "", as_=PHARMACIST)) == [f"jean-{d}" for d in range(1, 6)]
    assert keys(search(register, "identifier=paul-1")) == []
    assert keys(search(register, "identifier=marie-1", as_=PHARMACIST)) == []
    page = search(register, "_count=4&_offset=4")
    assert page["total"] == 6 and len(page["entry"]) == 2


@pytest.mark.parametrize(
    ("query", "rule"),
    [
        ("name=Jean", Rule.UNKNOWN_SEARCH_PARAMETER),
        ("_summary=count", Rule.UNKNOWN_SEARCH_PARAMETER),
        ("status:not=completed", Rule.UNKNOWN_SEARCH_PARAMETER),
        ("patient=Patient/123", Rule.UNKNOWN_SEARCH_PARAMETER),
        ("status=done", Rule.INVALID_SEARCH),
        ("date=yesterday", Rule.INVALID_SEARCH),
        ("date=xx2026-01-01", Rule.INVALID_SEARCH),
        ("date=ge2026-01-01,le2026-02-01", Rule.INVALID_SEARCH),
        ("_count=-1", Rule.INVALID_SEARCH),
        ("_count=ten", Rule.INVALID_SEARCH),
        ("_offset=-5", Rule.INVALID_SEARCH),
        ("_sort=vaccine", Rule.INVALID_SEARCH),
        ("identifier=a,b", Rule.INVALID_SEARCH),
        ("identifier=a&identifier=b", Rule.INVALID_SEARCH),
        ("identifier=sys|", Rule.INVALID_SEARCH),
        (f"patient.identifier={JEAN}", Rule.INVALID_SEARCH),
        (f"patient.identifier=urn:other|{JEAN}", Rule.INVALID_SEARCH),
        (f"patient.identifier={SSIN}|12345678901", Rule.INVALID_SEARCH),
        (f"patient.identifier={SSIN}|{JEAN}&patient.identifier={SSIN}|{MARIE}", Rule.INVALID_SEARCH),
    ],
)
def test_bad_search_parameters_get_400(register: Harness, query: str, rule: Rule) -> None:
    response = register.call("GET", "/fhir/Immunization?" + query)
    assert response.status == 400
    assert rule_of(response) == rule


def test_lenient_handling_ignores_unknown_parameters(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    h.created("jean-1")
    lenient = {"Prefer": "handling=lenient"}
    response = h.call("GET", f"/fhir/Immunization?{JEAN_Q}&name=Jean", headers=lenient)
    assert response.status == 200
    assert body(response)["total"] == 1
    assert "name=" not in body(response)["link"][0]["url"]
    assert response.annotations["ignored_parameters"] == ["name"]
    configured = make_harness(search_handling="lenient")
    assert configured.call("GET", "/fhir/Immunization?whatever=1").status == 200


def test_post_search_takes_a_form(register: Harness) -> None:
    form = urlencode({"patient.identifier": f"{SSIN}|{JEAN}", "status": "not-done"}).encode()
    response = register.call(
        "POST", "/fhir/Immunization/_search", form, content_type="application/x-www-form-urlencoded"
    )
    assert response.status == 200
    assert keys(body(response)) == ["jean-4"]
    wrong = register.call("POST", "/fhir/Immunization/_search", {"a": 1})
    assert (wrong.status, rule_of(wrong)) == (415, Rule.UNSUPPORTED_MEDIA_TYPE)


# --- $validate ----------------------------------------------------------------------------------------


def test_validate_answers_the_validators_outcome(h: Harness) -> None:
    response = h.call("POST", "/fhir/Immunization/$validate", immunization())
    assert response.status == 200
    outcome = body(response)
    assert outcome["resourceType"] == "OperationOutcome"
    assert not [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")]
    assert response.annotations["operation"] == "validate"
    invalid = immunization()
    del invalid["vaccineCode"]
    response = h.call("POST", "/fhir/Immunization/$validate", invalid)
    assert response.status == 200
    assert any(i["severity"] == "error" for i in body(response)["issue"])
    assert any(i["severity"] == "error" for i in response.annotations["validation"])
    assert h.store.search()[1] == 0


def test_validate_takes_a_parameters_resource(h: Harness) -> None:
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": immunization()},
            {"name": "mode", "valueCode": "create"},
        ],
    }
    response = h.call("POST", "/fhir/Immunization/$validate", parameters)
    assert response.status == 200
    assert not [i for i in body(response)["issue"] if i["severity"] == "error"]
    empty = h.call("POST", "/fhir/Immunization/$validate", {"resourceType": "Parameters", "parameter": []})
    assert (empty.status, rule_of(empty)) == (400, Rule.INVALID_PARAMETERS)
    unknown = dict(
        parameters, parameter=[*parameters["parameter"], {"name": "profile", "valueUri": "http://x/y"}]
    )
    response = h.call("POST", "/fhir/Immunization/$validate", unknown)
    assert (response.status, rule_of(response)) == (400, Rule.UNKNOWN_PROFILE)


def test_validate_needs_a_token_and_json(h: Harness) -> None:
    response = h.call("POST", "/fhir/Immunization/$validate", immunization(), as_=None)
    assert response.status == 401
    response = h.call(
        "POST", "/fhir/Immunization/$validate", b"<Immunization/>", content_type="application/xml"
    )
    assert response.status == 415
    response = h.call("POST", "/fhir/Immunization/$validate", b"{oops")
    assert response.status == 400


# --- robustness ---------------------------------------------------------------------------------------


def test_an_internal_error_gets_500_without_internals(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    class Broken(ImmunizationStore):
        def read(self, id: str) -> Any:
            raise RuntimeError("secret internal detail")

    broken = Broken()
    h.api.store = broken
    try:
        response = h.api.handle(
            HttpRequest("GET", "/fhir/Immunization/abc", {}, {"authorization": f"Bearer {h.token()}"})
        )
    finally:
        broken.close()
    assert response.status == 500
    text = response.body.decode()
    assert "secret" not in text and "Traceback" not in text and "RuntimeError" not in text
    assert orjson.loads(response.body)["issue"][0]["details"]["coding"][0]["code"] == Rule.INTERNAL_ERROR
    assert "secret internal detail" in caplog.text  # in the server's log only


def test_a_closed_store_gets_503(h: Harness) -> None:
    h.store.close()
    response = h.call("GET", "/fhir/Immunization/abc")
    assert (response.status, rule_of(response)) == (503, Rule.REGISTER_UNAVAILABLE)
    assert response.headers["Retry-After"] == "1"


def test_configuration_is_checked(validator: Validator, iam: IamConnect, data: TestData) -> None:
    with pytest.raises(ConfigurationError):
        SimulatorConfig(fhir_base="fhir/")
    with pytest.raises(ConfigurationError):
        SimulatorConfig(page_size=500)
    with pytest.raises(ConfigurationError):
        SimulatorConfig(delete_policy="maybe")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unknown profile"):
        FhirApi(
            validator=validator,
            store=ImmunizationStore(),
            iam=iam,
            testdata=data,
            faults=FaultPlan(),
            config=SimulatorConfig(profile="https://example.org/StructureDefinition/nothing"),
            base_url=BASE_URL,
        )


def test_config_from_toml() -> None:
    config = SimulatorConfig.from_toml(
        {
            "simulator": {
                "fhir-base": "/api/fhir",
                "delete_policy": "allow",
                "page_size": 10,
                "require-if-match": True,
                "recording_disciplines": ["physician"],
                "status_transitions": [["completed", "entered-in-error"]],
            }
        }
    )
    assert config.fhir_base == "/api/fhir"
    assert (config.delete_policy, config.page_size, config.require_if_match) == ("allow", 10, True)
    assert config.recording_disciplines == ("physician",)
    assert config.may_change_status("completed", "entered-in-error")
    assert not config.may_change_status("entered-in-error", "completed")
    with pytest.raises(ConfigurationError, match="no setting 'page-sise'"):
        SimulatorConfig.from_toml({"page-sise": 3})
    with pytest.raises(ConfigurationError, match="must be an integer"):
        SimulatorConfig.from_toml({"page_size": "3"})
    with pytest.raises(ConfigurationError, match="true or false"):
        SimulatorConfig.from_toml({"require_if_match": "yes"})
    with pytest.raises(ConfigurationError):
        SimulatorConfig.from_toml({"status_transitions": [["completed", "lost"]]})


def test_another_fhir_base(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(fhir_base="/api/fhir")
    response = h.call("POST", "/api/fhir/Immunization", immunization())
    assert response.status == 201
    assert response.headers["Location"].startswith(f"{BASE_URL}/api/fhir/Immunization/")
    assert h.call("GET", "/fhir/metadata", as_=None).status == 404


_METHODS = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "get", "X" * 20])
_PATHS = st.one_of(
    st.sampled_from(
        [
            "/fhir/Immunization",
            "/fhir/Immunization/abc",
            "/fhir/Immunization/abc/_history",
            "/fhir/Immunization/abc/_history/1",
            "/fhir/Immunization/$validate",
            "/fhir/Immunization/_search",
            "/fhir/metadata",
        ]
    ),
    st.text(max_size=80).map(lambda s: "/fhir/" + s),
    st.text(max_size=40).map(lambda s: "/fhir/Immunization/" + s),
)
_BODIES = st.one_of(
    st.binary(max_size=300),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
        ),
        max_leaves=20,
    ).map(lambda value: json.dumps(value).encode()),
    st.builds(
        lambda extra: json.dumps({**immunization(), **extra}).encode(),
        st.dictionaries(
            st.sampled_from(["status", "patient", "identifier", "recorded", "extension", "id", "contained"]),
            st.none() | st.text(max_size=10) | st.integers() | st.lists(st.text(max_size=5), max_size=2),
            max_size=3,
        ),
    ),
)
_HEADER_VALUES = st.text(max_size=60)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=_METHODS,
    path=_PATHS,
    body_bytes=_BODIES,
    query=st.dictionaries(st.text(max_size=12), st.lists(st.text(max_size=20), max_size=2), max_size=3),
    content_type=st.one_of(st.none(), st.sampled_from([FHIR_JSON, "text/plain", ""]), _HEADER_VALUES),
    extra=st.dictionaries(
        st.sampled_from(["accept", "prefer", "if-match", "if-none-exist", "if-none-match"]),
        _HEADER_VALUES,
        max_size=3,
    ),
    authorised=st.booleans(),
)
def test_garbage_never_reaches_the_catch_all(
    h: Harness,
    method: str,
    path: str,
    body_bytes: bytes,
    query: dict[str, list[str]],
    content_type: str | None,
    extra: dict[str, str],
    authorised: bool,
) -> None:
    headers = dict(extra)
    if content_type is not None:
        headers["content-type"] = content_type
    if authorised:
        headers["authorization"] = f"Bearer {h.token()}"
    response = h.api.handle(HttpRequest(method, path, query, headers, body_bytes))
    assert response.status != 500, response.body
    assert response.annotations.get("rule") != Rule.INTERNAL_ERROR
    if response.status >= 400:
        assert orjson.loads(response.body)["resourceType"] == "OperationOutcome"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    changes=st.dictionaries(
        st.sampled_from(
            [
                "status",
                "patient",
                "identifier",
                "recorded",
                "occurrenceDateTime",
                "extension",
                "id",
                "contained",
                "meta",
                "resourceType",
                "vaccineCode",
            ]
        ),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=12),
            lambda children: (
                st.lists(children, max_size=3)
                | st.dictionaries(
                    st.sampled_from(
                        ["identifier", "system", "value", "reference", "url", "valueReference", "id"]
                    ),
                    children,
                    max_size=3,
                )
            ),
            max_leaves=12,
        ),
        max_size=3,
    ),
    method=st.sampled_from(["POST", "PUT"]),
)
def test_garbage_resources_never_reach_the_catch_all(
    h: Harness, changes: dict[str, Any], method: str
) -> None:
    resource = {**immunization(), **changes}
    path = "/fhir/Immunization" if method == "POST" else "/fhir/Immunization/abc"
    headers = {"authorization": f"Bearer {h.token()}", "content-type": FHIR_JSON}
    response = h.api.handle(HttpRequest(method, path, {}, headers, json.dumps(resource).encode()))
    assert response.status in (200, 201, 400, 403, 404, 409, 422), response.body
    assert orjson.loads(response.body)["resourceType"] in ("Immunization", "OperationOutcome")
