"""Builders of synthetic run results for the report tests and the report benchmark.

``synthetic_run`` makes a run as the pytest plugin would hand it over, deliberately full of what must
never reach a shared report: the test patients' and professionals' SSINs (bare and formatted) and names
in step texts, messages, URLs, headers and bodies, and raw credentials (JWTs, client assertions,
authorization codes, PKCE verifiers, refresh tokens, cookies, an API key) in headers, form bodies, JSON
bodies and query strings. ``SECRETS`` lists every raw credential it uses.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from conformance.evaluation_items import Catalogue
from conformance.report.model import FhirIssue, RunInfo, ScenarioResult, SoftwareUnderTest, StepResult
from conformance.simulator.testdata import TestData
from conformance.traffic.recorder import Exchange

START = datetime(2025, 11, 20, 9, 30, tzinfo=UTC)
BASE = "http://127.0.0.1:8080"
SSIN_SYSTEM = "https://www.ehealth.fgov.be/standards/fhir/core/NamingSystem/ssin"
NIHDI_SYSTEM = "https://www.ehealth.fgov.be/standards/fhir/core/NamingSystem/nihdi-professional"
PROFILE = "https://www.ehealth.fgov.be/standards/fhir/vaccination/StructureDefinition/be-vaccination"


@cache
def catalogue() -> Catalogue:
    """The shipped catalogue of evaluation items."""
    return Catalogue.load()


@cache
def people() -> TestData:
    """The simulator's fictitious patients and professionals."""
    return TestData.load()


def formatted_ssin(ssin: str) -> str:
    """An SSIN written the way people write it: 58.03.21-001.26."""
    return f"{ssin[0:2]}.{ssin[2:4]}.{ssin[4:6]}-{ssin[6:9]}.{ssin[9:11]}"


def make_jwt(subject: str, number: int) -> str:
    """A JWT-shaped token (header.payload.signature), distinct per subject and number."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    signature = base64.urlsafe_b64encode(f"signature-{subject}-{number}".encode()).decode().rstrip("=")
    return f"{part({'alg': 'RS256', 'kid': 'k1'})}.{part({'sub': subject, 'n': number})}.{signature}"


def make_run(**overrides: Any) -> RunInfo:
    """A run against the simulator with the reference adapter; any field can be overridden."""
    values: dict[str, Any] = {
        "harness_version": "0.1.0",
        "started": START,
        "finished": START + timedelta(minutes=7, seconds=12),
        "language": "en",
        "target_kind": "simulator",
        "target_url": f"{BASE}/fhir",
        "adapter_kind": "reference",
        "software": SoftwareUnderTest("Exemplar Health SRL", "VaxDesk", "4.1.0"),
        "ticket": "RSW-INT-2025-042",
        "operator": "integration team",
        "packages": [
            ("hl7.fhir.be.vaccination", "1.1.2", "ab" * 32),
            ("hl7.fhir.be.core", "2.1.2", "cd" * 32),
        ],
        "package_gaps": [
            "hl7.fhir.be.medication#1.0.0 declares hl7.terminology#3.1.0, which is not installed"
        ],
        "command_line": ["vaccicard-conformance", "run", "--target", "simulator"],
    }
    values.update(overrides)
    return RunInfo(**values)


def scenario(
    name: str,
    items: Sequence[str],
    status: str = "passed",
    *,
    feature: str = "registration.feature",
    skip_reason: str | None = None,
    confirmations: Sequence[str] = (),
    evidence: Sequence[int] = (),
    message: str | None = None,
) -> ScenarioResult:
    """A small scenario result whose steps agree with ``status``."""
    steps = [
        StepResult("Given", "a logged-in physician", "passed" if status != "skipped" else "skipped", 0.01)
    ]
    if status == "failed":
        steps += [
            StepResult(
                "When",
                "the software records a vaccination",
                "failed",
                0.2,
                message or "expected 201, got 422",
            ),
            StepResult("Then", "the register accepts it", "not-run"),
        ]
    else:
        steps += [
            StepResult("When", "the software records a vaccination", status, 0.2),
            StepResult("Then", "the register accepts it", status, 0.05),
        ]
    return ScenarioResult(
        id=f"{feature}::{name}",
        feature=feature.removesuffix(".feature").capitalize(),
        feature_file=f"features/{feature}",
        name=name,
        status=status,
        tags=tuple(f"item:{i}" for i in items),
        skip_reason=skip_reason if status == "skipped" else None,
        duration=0.26,
        steps=tuple(steps),
        evidence=tuple(evidence),
        confirmations=tuple(confirmations),
    )


# -- a synthetic run full of personal data and secrets -------------------------------------------------------


@dataclass(frozen=True)
class SyntheticRun:
    """A run, its scenario results, its exchanges and every raw secret they contain."""

    run: RunInfo
    scenarios: list[ScenarioResult]
    exchanges: list[Exchange]
    secrets: list[str]


def _immunization(patient: Any, professional: Any, key: str) -> dict[str, Any]:
    return {
        "resourceType": "Immunization",
        "meta": {"profile": [PROFILE]},
        "identifier": [{"system": "https://vaxdesk.example/immunization-id", "value": key}],
        "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://snomed.info/sct", "code": "871717007"}]},
        "patient": {
            "identifier": {"system": SSIN_SYSTEM, "value": patient.ssin},
            "display": f"{patient.given_name} {patient.family_name}",
        },
        "occurrenceDateTime": "2025-11-20",
        "performer": [
            {
                "actor": {
                    "identifier": {"system": NIHDI_SYSTEM, "value": professional.nihii11},
                    "display": f"Dr {professional.given_name} {professional.family_name.upper()}",
                }
            }
        ],
        "note": [
            {"text": f"Given by {professional.given_name} to {patient.given_name}, SSIN {patient.ssin}"}
        ],
    }


def _exchanges(number: int, first_id: int, count: int, failing: bool, secrets: list[str]) -> list[Exchange]:
    data = people()
    patient = data.patients[number % len(data.patients)]
    professional = data.professionals[number % len(data.professionals)]
    access = make_jwt(professional.ssin, number)
    secrets.append(access)
    moment = START + timedelta(seconds=number)
    result: list[Exchange] = []
    for offset in range(count):
        exchange_id = first_id + offset
        kind = offset % 5
        if kind == 0:
            code, verifier = f"authcode-{number}-x7Qp", f"pkce-verifier-{number}-9dKf3LmZq0wVbT"
            refresh, session = f"refresh-{number}-Zk29sLq", f"session-{number}-AbC123xyz"
            secrets += [code, verifier, refresh, session]
            exchange = Exchange(
                id=exchange_id,
                started=moment,
                method="POST",
                url=f"{BASE}/auth/realms/healthcare/protocol/openid-connect/token",
                request_headers=[
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("Cookie", f"KEYCLOAK_SESSION={session}; theme=light"),
                ],
                request_body=(
                    f"grant_type=authorization_code&code={code}&code_verifier={verifier}"
                    f"&redirect_uri=http%3A%2F%2F127.0.0.1%3A53682%2Fcallback&client_id=vendor-software"
                ).encode(),
                response_status=200,
                response_headers=[
                    ("Content-Type", "application/json"),
                    ("Set-Cookie", f"KC_RESTART={session}; Path=/"),
                ],
                response_body={
                    "access_token": access,
                    "refresh_token": refresh,
                    "id_token": access,
                    "token_type": "Bearer",
                },
            )
        elif kind == 1:
            assertion = make_jwt(f"cbe-{number}", number + 1_000_000)
            secrets.append(assertion)
            exchange = Exchange(
                id=exchange_id,
                started=moment,
                method="POST",
                url=f"{BASE}/auth/realms/healthcare/protocol/openid-connect/token",
                request_headers=[("Content-Type", "application/x-www-form-urlencoded")],
                request_body=(
                    "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange"
                    f"&subject_token={access}&client_assertion={assertion}&audience=vaccicard-api"
                ).encode(),
                response_status=200,
                response_body={
                    "access_token": access,
                    "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                },
            )
        elif kind == 4:
            api_key = f"vendor-api-key-{number}-QwErTy"
            secrets.append(api_key)
            exchange = Exchange(
                id=exchange_id,
                started=moment,
                method="GET",
                url=f"{BASE}/fhir/Immunization?patient.identifier={SSIN_SYSTEM}%7C{patient.ssin}&_count=10",
                request_headers=[("Authorization", f"Bearer {access}"), ("X-Api-Key", api_key)],
                response_status=200,
                response_body={
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "entry": [{"resource": _immunization(patient, professional, f"vac-{number}-{offset}")}],
                },
            )
        else:
            rejected = failing and kind == 3 and offset + 2 >= count  # the last create
            exchange = Exchange(
                id=exchange_id,
                started=moment,
                duration_ms=38.5,
                method="POST",
                url=f"{BASE}/fhir/Immunization",
                request_headers=[
                    ("Authorization", f"Bearer {access}"),
                    ("Content-Type", "application/fhir+json"),
                    ("X-Patient", formatted_ssin(patient.ssin)),
                ],
                request_body=_immunization(patient, professional, f"vac-{number}-{offset}"),
                response_status=422 if rejected else 201,
                response_headers=[("Content-Type", "application/fhir+json")],
                response_body={
                    "resourceType": "OperationOutcome",
                    "issue": [
                        {
                            "severity": "error",
                            "code": "invariant",
                            "details": {
                                "text": f"patient {patient.ssin} ({patient.family_name}) has no consent"
                            },
                        }
                    ],
                }
                if rejected
                else _immunization(patient, professional, f"vac-{number}-{offset}"),
                subject=f"nihdi:{professional.nihii11}",
                validation=[
                    {"severity": "error", "code": "invariant", "message": f"SSIN {patient.ssin} refused"}
                ]
                if rejected
                else [],
            )
        result.append(exchange)
    return result


def synthetic_run(
    scenarios: int = 60,
    exchanges_per_scenario: int = 5,
    *,
    fail_every: int = 7,
    skip_every: int = 11,
    run: RunInfo | None = None,
) -> SyntheticRun:
    """A run of ``scenarios`` scenarios over every catalogue item, each with its exchanges."""
    data = people()
    item_ids = catalogue().ids()
    results, exchanges, secrets = [], [], []
    for number in range(scenarios):
        patient = data.patients[number % len(data.patients)]
        professional = data.professionals[number % len(data.professionals)]
        failing = fail_every > 0 and number % fail_every == fail_every - 1
        skipped = not failing and skip_every > 0 and number % skip_every == skip_every - 1
        first_id = 1 + number * exchanges_per_scenario
        batch = _exchanges(number, first_id, exchanges_per_scenario, failing, secrets)
        exchanges += batch
        who = f"{patient.given_name} {patient.family_name}"
        steps = [
            StepResult(
                "Given",
                f"Dr {professional.given_name} {professional.family_name} is logged in",
                "passed",
                0.4,
            ),
            StepResult(
                "When",
                f"the software records a vaccination for {who} ({formatted_ssin(patient.ssin)})",
                "failed" if failing else "skipped" if skipped else "passed",
                0.3,
                f"the register answered 422: patient {patient.ssin} ({who}) refused; "
                f"token {batch[0].response_json['access_token'] if batch and batch[0].response_json else ''}"
                if failing
                else None,
            ),
            StepResult(
                "Then", "the register holds the record", "not-run" if failing or skipped else "passed", 0.1
            ),
        ]
        issues = (
            [
                FhirIssue(
                    "error",
                    "invariant",
                    "Immunization.patient.identifier.value",
                    f"SSIN {patient.ssin} of {patient.family_name}: consent missing",
                    "patient-no-consent",
                    PROFILE,
                )
            ]
            if failing
            else []
        )
        results.append(
            ScenarioResult(
                id=f"registration.feature::Record a vaccination {number}",
                feature="Recording a vaccination",
                feature_file="features/registration.feature",
                name=f"Record a vaccination {number} for {patient.given_name}",
                status="failed" if failing else "skipped" if skipped else "passed",
                tags=(f"item:{item_ids[number % len(item_ids)]}", "req-reg"),
                skip_reason=f"no ETK depot configured for {professional.family_name}" if skipped else None,
                duration=0.8,
                steps=tuple(steps),
                issues=tuple(issues),
                evidence=tuple(e.id for e in batch),
                confirmations=(f"history shows {who} born {patient.birth_date}",) if number % 13 == 5 else (),
            )
        )
    return SyntheticRun(run or make_run(), results, exchanges, secrets)


def personal_data() -> list[str]:
    """Every SSIN (bare and formatted) and name of the simulator's test data."""
    data = people()
    everyone: Iterable[Any] = [*data.patients, *data.professionals]
    values = []
    for person in everyone:
        values += [person.ssin, formatted_ssin(person.ssin), person.given_name, person.family_name]
    return values
