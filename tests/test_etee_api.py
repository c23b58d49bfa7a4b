"""Tests of the encrypted endpoint: sealed round trips, every refusal, and the real FHIR create behind it."""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from conformance.etee.errors import UnsealProblem
from conformance.etee.etk import build_etk, parse_etk
from conformance.etee.pki import Credentials
from conformance.etee.seal import seal
from conformance.simulator.etee_api import (
    ETEE_CREATE_PATH,
    PKCS7_MIME,
    EteeApi,
    EteeClient,
    EteeConfig,
    fhir_create,
)
from conformance.simulator.etk_depot import EtkDepot
from conformance.simulator.fhir_api import RULES_SYSTEM
from conformance.simulator.http import HttpRequest, HttpResponse
from tests.test_etee_pki import LUC_SSIN, World, etee_world

RESOURCE = {"resourceType": "Immunization", "status": "completed"}
CREATED = {"resourceType": "Immunization", "id": "abc", "status": "completed"}


@pytest.fixture
def world() -> World:
    return etee_world()


@dataclass
class FakeFhir:
    """Stands for the FHIR create: records what it got, answers ``status`` with ``answer``."""

    status: int = 201
    answer: dict[str, Any] = field(default_factory=lambda: dict(CREATED))
    calls: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)

    def __call__(self, body: bytes, headers: dict[str, str]) -> HttpResponse:
        self.calls.append((body, headers))
        response = HttpResponse(
            self.status,
            {
                "Content-Type": "application/fhir+json; charset=utf-8",
                "Location": "http://x/fhir/Immunization/abc/_history/1",
                "Content-Length": "9",
            },
            orjson.dumps(self.answer),
        )
        response.annotations = {
            "operation": "create",
            "resource_type": "Immunization",
            "resource_id": "abc",
            "subject": "nihdi:10000106003",
        }
        return response


def make_api(world: World, process: FakeFhir | None = None, **config: Any) -> tuple[EteeApi, FakeFhir]:
    fake = process or FakeFhir()
    return EteeApi(world.depot, fake, config=EteeConfig(**config)), fake


def client(world: World, **kwargs: Any) -> EteeClient:
    kwargs.setdefault("trust", world.depot.trust_anchors)
    return EteeClient(world.luc, world.depot.register_etk, **kwargs)


def outcome_rule(response: HttpResponse) -> str:
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    outcome = json.loads(response.body)
    assert outcome["resourceType"] == "OperationOutcome"
    (issue,) = outcome["issue"]
    (coding,) = issue["details"]["coding"]
    assert coding["system"] == RULES_SYSTEM and issue["details"]["text"]
    assert response.annotations["rule"] == coding["code"]
    return coding["code"]


# --- round trips ----------------------------------------------------------------------------------------


def test_sealed_create_round_trip(world: World) -> None:
    api, fake = make_api(world)
    answer = client(world).send(
        api.handle, orjson.dumps(RESOURCE), {"Authorization": "Bearer t0ken", "Accept": PKCS7_MIME}
    )
    assert answer.status == 201 and answer.json() == CREATED
    assert answer.response.headers["Content-Type"] == PKCS7_MIME
    assert answer.response.headers["Location"].endswith("/_history/1")
    assert "Content-Length" not in answer.response.headers
    assert (
        answer.unsealed is not None
        and answer.unsealed.sender_certificate == world.register.authentication.certificate
    )
    ((body, headers),) = fake.calls
    assert json.loads(body) == RESOURCE
    assert headers == {
        "authorization": "Bearer t0ken",
        "content-type": "application/fhir+json",
        "accept": "application/fhir+json",
    }
    notes = answer.response.annotations
    assert notes["operation"] == "create" and notes["resource_id"] == "abc"
    assert notes["etee"]["inner_scheme"] == notes["etee"]["outer_scheme"] == "pss"
    assert notes["etee"]["sender"].startswith("SSIN holder, certificate serial ")
    assert LUC_SSIN not in json.dumps(notes)


def test_json_transport(world: World) -> None:
    api, _ = make_api(world, transport="json")
    c = client(world, transport="json")
    request = c.request(orjson.dumps(RESOURCE))
    assert request.headers["content-type"] == "application/json" and "sealed" in json.loads(request.body)
    response = api.handle(request)
    assert response.headers["Content-Type"] == "application/json"
    answer = c.read(response)
    assert answer.status == 201 and answer.json() == CREATED and answer.unsealed is not None


def test_organisation_sender_is_named_in_annotations(world: World) -> None:
    api, _ = make_api(world)
    answer = EteeClient(world.pharmacy, world.depot.register_etk).send(api.handle, orjson.dumps(RESOURCE))
    assert answer.status == 201
    assert answer.response.annotations["etee"]["sender"] == "CBE=0987654394"


def test_eid_signed_inner_layer(world: World) -> None:
    api, _ = make_api(world)
    answer = client(world, signature=world.luc_eid, scheme="pkcs1v15").send(
        api.handle, orjson.dumps(RESOURCE)
    )
    assert answer.status == 201
    assert answer.response.annotations["etee"]["inner_scheme"] == "pkcs1v15"


def test_fhir_refusals_come_back_sealed(world: World) -> None:
    refusal = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid"}]}
    api, _ = make_api(world, FakeFhir(status=422, answer=refusal))
    answer = client(world).send(api.handle, orjson.dumps(RESOURCE))
    assert answer.status == 422 and answer.json() == refusal and answer.unsealed is not None


def test_pkcs1v15_answers(world: World) -> None:
    api, _ = make_api(world, response_scheme="pkcs1v15")
    answer = client(world).send(api.handle, orjson.dumps(RESOURCE))
    assert answer.unsealed is not None and answer.unsealed.outer_scheme == "pkcs1v15"


# --- refusals -------------------------------------------------------------------------------------------


def post(
    api: EteeApi,
    body: bytes,
    content_type: str = PKCS7_MIME,
    path: str = ETEE_CREATE_PATH,
    method: str = "POST",
) -> HttpResponse:
    return api.handle(HttpRequest(method, path, {}, {"content-type": content_type}, body))


def test_unseal_failures_are_400_and_never_processed(world: World) -> None:
    api, fake = make_api(world)
    cases = {
        UnsealProblem.NOT_CMS: b"not a message",
        UnsealProblem.WRONG_RECIPIENT: seal(
            b"{}", sender=world.luc.credentials(), recipients=[parse_etk(build_etk(world.pharmacy))]
        ),
        UnsealProblem.SIGNING_TIME_SKEW: seal(
            b"{}",
            sender=world.luc.credentials(),
            recipients=[world.depot.register_etk],
            now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
        ),
        UnsealProblem.CERTIFICATE_EXPIRED: seal(
            b"{}", sender=world.expired.credentials(), recipients=[world.depot.register_etk]
        ),
        UnsealProblem.UNTRUSTED_SENDER: seal(
            b"{}", sender=world.stranger.credentials(), recipients=[world.depot.register_etk]
        ),
        UnsealProblem.SIGNER_MISMATCH: seal(
            b"{}",
            sender=Credentials(world.luc.authentication, world.pharmacy.authentication),
            recipients=[world.depot.register_etk],
        ),
    }
    for problem, message in cases.items():
        response = post(api, message)
        assert response.status == 400, problem
        assert outcome_rule(response) == problem.value
        assert response.annotations["etee"] == {"problem": problem.value}
        issue = json.loads(response.body)["issue"][0]
        assert issue["code"] == ("structure" if problem is UnsealProblem.NOT_CMS else "security")
    assert fake.calls == []


def test_untrusted_sender_accepted_when_trust_is_off_but_unknown_to_the_depot(world: World) -> None:
    api, fake = make_api(world, require_trusted_sender=False)
    message = seal(b"{}", sender=world.stranger.credentials(), recipients=[world.depot.register_etk])
    # the stranger claims Luc's SSIN: the answer goes to Luc's ETK, which the stranger cannot open
    assert post(api, message).status == 201
    outsider = seal(b"{}", sender=world.outsider.credentials(), recipients=[world.depot.register_etk])
    response = post(api, outsider)
    assert response.status == 422 and outcome_rule(response) == "etee-sender-unknown"
    assert "CBE=0555123476" in json.loads(response.body)["issue"][0]["details"]["text"]
    assert len(fake.calls) == 1


def test_sender_from_the_pki_but_not_in_the_depot(world: World) -> None:
    api, fake = make_api(world)
    answer = EteeClient(world.outsider, world.depot.register_etk).send(api.handle, b"{}")
    assert answer.status == 422 and answer.unsealed is None
    assert json.loads(answer.payload)["issue"][0]["details"]["coding"][0]["code"] == "etee-sender-unknown"
    assert fake.calls == []


@pytest.mark.parametrize(
    ("kwargs", "status", "rule"),
    [
        ({"path": "/etee/fhir/Patient"}, 404, "etee-unknown-route"),
        ({"method": "GET"}, 405, "etee-method-not-allowed"),
        ({"content_type": "application/fhir+json"}, 415, "etee-unsupported-media-type"),
        ({"content_type": ""}, 415, "etee-unsupported-media-type"),
    ],
)
def test_protocol_refusals(world: World, kwargs: dict[str, str], status: int, rule: str) -> None:
    api, fake = make_api(world)
    response = post(api, b"x", **kwargs)
    assert response.status == status and outcome_rule(response) == rule
    expected_operation = None if rule == "etee-unknown-route" else "create"
    assert response.annotations["operation"] == expected_operation
    assert fake.calls == []


def test_body_too_large(world: World) -> None:
    api, _ = make_api(world, max_body_bytes=10)
    response = post(api, b"x" * 11)
    assert response.status == 413 and outcome_rule(response) == "etee-payload-too-large"


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"sealed": 5}', b'{"sealed": "!!!"}', b"{}"])
def test_bad_json_wrapper(world: World, body: bytes) -> None:
    api, _ = make_api(world, transport="json")
    response = post(api, body, content_type="application/json")
    assert response.status == 400 and outcome_rule(response) == "etee-invalid-wrapper"


def test_json_wrapper_with_a_bad_message(world: World) -> None:
    api, _ = make_api(world, transport="json")
    wrapped = json.dumps({"sealed": base64.b64encode(b"junk").decode()}).encode()
    response = post(api, wrapped, content_type="application/json")
    assert response.status == 400 and outcome_rule(response) == UnsealProblem.NOT_CMS.value


def test_clock_is_injectable(world: World) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30)
    api, _ = make_api(world, clock=lambda: later)
    response = client(world).send(api.handle, b"{}").response
    assert response.status == 400 and outcome_rule(response) == UnsealProblem.SIGNING_TIME_SKEW.value


def test_client_reads_plain_answers_as_they_are(world: World) -> None:
    plain = HttpResponse(
        503, {"Content-Type": "application/fhir+json"}, b'{"resourceType":"OperationOutcome"}'
    )
    answer = client(world).read(plain)
    assert (
        answer.status == 503
        and answer.unsealed is None
        and answer.json()["resourceType"] == "OperationOutcome"
    )
    wrapped_error = HttpResponse(400, {"Content-Type": "application/json"}, b'{"error":"x"}')
    assert client(world, transport="json").read(wrapped_error).unsealed is None


# --- with the simulator's FHIR API ----------------------------------------------------------------------


def test_sealed_create_through_the_simulator_fhir_api(
    world: World, simulator_validator: Any, simulator_keys: Any
) -> None:
    from conformance.belgium.identifiers import NIHDI_PROFESSIONAL, SSIN
    from conformance.simulator.app import Simulator
    from conformance.simulator.fhir_api import RECORDER_EXTENSION

    vacc = "https://www.ehealth.fgov.be/standards/fhir/vaccination/StructureDefinition/"
    when = (dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).replace(microsecond=0).isoformat()
    resource = {
        "resourceType": "Immunization",
        "meta": {"profile": [vacc + "be-vaccination"]},
        "extension": [
            {
                "url": RECORDER_EXTENSION,
                "valueReference": {"identifier": {"system": NIHDI_PROFESSIONAL, "value": "10000106003"}},
            },
            {
                "url": vacc + "be-ext-administeredProduct",
                "extension": [
                    {
                        "url": "coded",
                        "valueCodeableConcept": {
                            "coding": [
                                {
                                    "system": "https://www.ehealth.fgov.be/standards/fhir/medication/NamingSystem/be-ns-cnk-codes",
                                    "code": "1234567",
                                }
                            ]
                        },
                    },
                    {"url": "lotNumber", "valueString": "AB1234"},
                ],
            },
        ],
        "identifier": [{"system": "https://www.example.org/vendor/vaccinations", "value": "etee-1"}],
        "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://snomed.info/sct", "code": "871717007"}]},
        "patient": {"identifier": {"system": SSIN, "value": "58032100126"}},
        "occurrenceDateTime": when,
        "recorded": when,
    }
    with Simulator(simulator_validator, keys=simulator_keys) as sim:
        api = EteeApi(world.depot, fhir_create(sim.fhir.handle, sim.config.fhir_base + "/Immunization"))
        token = sim.iam.issue_professional_token(LUC_SSIN)
        answer = client(world).send(api.handle, orjson.dumps(resource), {"Authorization": f"Bearer {token}"})
        assert answer.status == 201, answer.payload
        created = answer.json()
        assert created["resourceType"] == "Immunization" and created["id"]
        assert answer.response.headers["Location"].endswith("/_history/1")
        assert answer.response.annotations["operation"] == "create"
        assert answer.response.annotations["subject"] == "nihdi:10000106003"
        unauthenticated = client(world).send(api.handle, orjson.dumps(resource))
        assert unauthenticated.status == 401 and unauthenticated.unsealed is not None
        assert unauthenticated.response.annotations["rule"] == "token-missing"


def test_sender_whose_etk_fails_its_checks(world: World) -> None:
    depot = EtkDepot(world.pki)
    depot.add_holder(world.register, [])
    depot.add_holder(world.weak)  # a 1024-bit encryption key: the register will not encrypt to it
    fake = FakeFhir()
    api = EteeApi(depot, fake)
    response = EteeClient(world.weak, depot.register_etk).send(api.handle, b"{}").response
    assert response.status == 422 and outcome_rule(response) == "etee-sender-etk-invalid"
    assert "1024 bits" in json.loads(response.body)["issue"][0]["details"]["text"]
    assert fake.calls == []
