"""The validator: the IG examples pass; a table of invalid resources fails with the exact issue."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from conformance.errors import ConfigurationError
from conformance.fhir.definitions import PackageSet
from conformance.fhir.outcome import Outcome
from conformance.fhir.validator import Validator

BE_VACCINATION = "https://www.ehealth.fgov.be/standards/fhir/vaccination/StructureDefinition/be-vaccination"
VACC = "https://www.ehealth.fgov.be/standards/fhir/vaccination/"
CORE_BE = "https://www.ehealth.fgov.be/standards/fhir/core/"
RECORDER = CORE_BE + "StructureDefinition/be-ext-recorder"
PRODUCT = VACC + "StructureDefinition/be-ext-administeredProduct"
LATERALITY = "https://www.ehealth.fgov.be/standards/fhir/core-clinical/StructureDefinition/be-ext-laterality"
SSIN = CORE_BE + "NamingSystem/ssin"
NIHDI_PRO = CORE_BE + "NamingSystem/nihdi-professional"
CNK = "https://www.ehealth.fgov.be/standards/fhir/medication/NamingSystem/be-ns-cnk-codes"
SCT = "http://snomed.info/sct"


def valid_immunization() -> dict[str, Any]:
    """A complete, valid BeVaccination record (fictitious patient and professional)."""
    return {
        "resourceType": "Immunization",
        "id": "vc-test-1",
        "meta": {"profile": [BE_VACCINATION]},
        "contained": [
            {
                "resourceType": "Encounter",
                "id": "enc",
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "location": [{"location": {"reference": "#loc"}}],
            },
            {
                "resourceType": "Location",
                "id": "loc",
                "type": [
                    {"coding": [{"system": VACC + "CodeSystem/be-cs-care-location", "code": "hospital"}]}
                ],
            },
        ],
        "extension": [
            {
                "url": RECORDER,
                "valueReference": {"identifier": {"system": NIHDI_PRO, "value": "10828465123"}},
            },
            {
                "url": PRODUCT,
                "extension": [
                    {
                        "url": "coded",
                        "valueCodeableConcept": {"coding": [{"system": CNK, "code": "1234567"}]},
                    },
                    {"url": "lotNumber", "valueString": "AB1234"},
                    {"url": "expirationDate", "valueDate": "2027-06-30"},
                ],
            },
        ],
        "identifier": [
            {"system": "https://www.example.org/vendor/vaccinations", "value": "7d1c0a52-5a3e-4c5f"}
        ],
        "status": "completed",
        "vaccineCode": {"coding": [{"system": SCT, "code": "871717007"}]},
        "patient": {"identifier": {"system": SSIN, "value": "94021300145"}},
        "encounter": {"reference": "#enc"},
        "occurrenceDateTime": "2026-11-20T10:00:00+01:00",
        "recorded": "2026-11-20T10:05:00+01:00",
        "site": {
            "extension": [
                {"url": LATERALITY, "valueCoding": {"system": SCT, "code": "419161000"}},
            ],
            "coding": [{"system": SCT, "code": "35259002"}],
        },
        "route": {
            "coding": [{"system": VACC + "CodeSystem/be-cs-vaccination-administration-route", "code": "IM"}]
        },
        "performer": [{"actor": {"identifier": {"system": NIHDI_PRO, "value": "10828465123"}}}],
        "reaction": [{"date": "2026-11-21"}],
    }


@pytest.fixture(scope="module")
def validator(package_set: PackageSet) -> Validator:
    return Validator(package_set)


@pytest.fixture(scope="module")
def example_validator(package_set: PackageSet) -> Validator:
    """A validator that resolves references to the packages' examples, as the IG Publisher does."""
    return Validator(package_set, resources=(package_set.read(e) for e in package_set.examples()))


def errors_of(outcome: Outcome) -> list[tuple[str, str, str | None]]:
    return [(i.severity, i.expression, i.rule) for i in outcome.issues if i.is_error]


def test_the_valid_base_record_has_no_error(validator: Validator) -> None:
    outcome = validator.validate(valid_immunization())
    assert errors_of(outcome) == [], outcome.issues


def test_all_35_immunization_examples_validate_without_error(
    example_validator: Validator, package_set: PackageSet
) -> None:
    examples = [
        e
        for e in package_set.examples()
        if e.resource_type == "Immunization" and e.package.id == "hl7.fhir.be.vaccination"
    ]
    assert len(examples) == 35
    failures = {}
    for entry in examples:
        outcome = example_validator.validate(package_set.read(entry), BE_VACCINATION)
        if not outcome.ok:
            failures[entry.id] = [i.to_text() for i in outcome.errors()]
    assert failures == {}


def test_every_example_of_the_belgian_packages_validates_against_its_profiles(
    example_validator: Validator, package_set: PackageSet
) -> None:
    failures = {}
    for entry in package_set.examples():
        if (
            entry.package.id == "hl7.fhir.r4.core"
            or (str(entry.package), entry.path.name) in KNOWN_INVALID_EXAMPLES
        ):
            continue
        resource = package_set.read(entry)
        outcome = example_validator.validate(resource)
        if not outcome.ok:
            failures[f"{entry.package}/{entry.path.name}"] = [i.to_text() for i in outcome.errors()]
    assert failures == {}


# Examples that break their own profile's rules; each must keep failing exactly so.
KNOWN_INVALID_EXAMPLES = {
    # be-inv-CBE: "CBE contains 10 digits without interpunction"; the example writes "0425.222.333"
    # (fixed in be.core 2.1.2, whose example has no dots).
    ("hl7.fhir.be.core#2.0.0", "Organization-organization1.json"): [
        ("error", "Organization.identifier[0]", "be-inv-CBE")
    ],
}


def test_known_invalid_examples_fail_exactly_as_explained(
    example_validator: Validator, package_set: PackageSet
) -> None:
    found = {}
    for entry in package_set.examples():
        key = (str(entry.package), entry.path.name)
        if key in KNOWN_INVALID_EXAMPLES:
            found[key] = errors_of(example_validator.validate(package_set.read(entry)))
    assert found == KNOWN_INVALID_EXAMPLES


# -- the table of invalid resources ---------------------------------------------------------------

Mutation = Callable[[dict], None]


def drop_extension(url: str) -> Mutation:
    def mutate(r: dict) -> None:
        r["extension"] = [e for e in r["extension"] if e["url"] != url]

    return mutate


def product_extension(r: dict) -> dict:
    return next(e for e in r["extension"] if e["url"] == PRODUCT)


CASES: list[tuple[str, Mutation, str, str, str | None]] = [
    # (case, mutation, severity, expression, rule)
    ("unknown element", lambda r: r.update(colour="blue"), "error", "Immunization", "unknown-element"),
    (
        "unknown nested element",
        lambda r: r["vaccineCode"].update(colour="blue"),
        "error",
        "Immunization.vaccineCode",
        "unknown-element",
    ),
    ("null array", lambda r: r.update(identifier=None), "error", "Immunization.identifier", "json-null"),
    ("null companion", lambda r: r.update(_recorded=None), "error", "Immunization.recorded", "json-null"),
    (
        "null value",
        lambda r: r.update(primarySource=None),
        "error",
        "Immunization.primarySource",
        "json-null",
    ),
    (
        "empty string",
        lambda r: r["identifier"][0].update(value=""),
        "error",
        "Immunization.identifier[0].value",
        "json-empty",
    ),
    ("empty object", lambda r: r.update(doseQuantity={}), "error", "Immunization.doseQuantity", "json-empty"),
    ("empty array", lambda r: r.update(note=[]), "error", "Immunization.note", "json-empty"),
    (
        "array where single",
        lambda r: r.update(status=["completed"]),
        "error",
        "Immunization.status",
        "json-array",
    ),
    (
        "single where array",
        lambda r: r.update(identifier=r["identifier"][0]),
        "error",
        "Immunization.identifier",
        "json-array",
    ),
    (
        "object where primitive",
        lambda r: r.update(recorded={"value": "2026"}),
        "error",
        "Immunization.recorded",
        "type-dateTime",
    ),
    (
        "bad date",
        lambda r: r.update(recorded="2026-02-30"),
        "error",
        "Immunization.recorded",
        "type-dateTime",
    ),
    (
        "bad boolean",
        lambda r: r.update(primarySource="true"),
        "error",
        "Immunization.primarySource",
        "type-boolean",
    ),
    (
        "bad decimal",
        lambda r: r.update(doseQuantity={"value": "1.0"}),
        "error",
        "Immunization.doseQuantity.value",
        "type-decimal",
    ),
    (
        "bad uri with space",
        lambda r: r["identifier"][0].update(system="http://x y"),
        "error",
        "Immunization.identifier[0].system",
        "type-uri",
    ),
    ("bad id", lambda r: r.update(id="no spaces allowed"), "error", "Immunization.id", "type-id"),
    (
        "two choice types",
        lambda r: r.update(occurrenceString="last spring"),
        "error",
        "Immunization",
        "cardinality",
    ),
    (
        "unknown choice type",
        lambda r: r.update(occurrenceBoolean=True),
        "error",
        "Immunization",
        "unknown-element",
    ),
    ("missing patient", lambda r: r.pop("patient"), "error", "Immunization", "cardinality"),
    ("missing status", lambda r: r.pop("status"), "error", "Immunization", "cardinality"),
    ("missing occurrence", lambda r: r.pop("occurrenceDateTime"), "error", "Immunization", "cardinality"),
    ("missing recorded", lambda r: r.pop("recorded"), "error", "Immunization", "cardinality"),
    ("lotNumber forbidden", lambda r: r.update(lotNumber="AB1234"), "error", "Immunization", "cardinality"),
    (
        "expirationDate forbidden",
        lambda r: r.update(expirationDate="2027-01-01"),
        "error",
        "Immunization",
        "cardinality",
    ),
    (
        "location forbidden",
        lambda r: r.update(location={"reference": "#loc"}),
        "error",
        "Immunization",
        "cardinality",
    ),
    (
        "protocolApplied forbidden",
        lambda r: r.update(protocolApplied=[{"doseNumberPositiveInt": 1}]),
        "error",
        "Immunization",
        "cardinality",
    ),
    (
        "two performers",
        lambda r: r["performer"].append(copy.deepcopy(r["performer"][0])),
        "error",
        "Immunization",
        "cardinality",
    ),
    (
        "performer without actor",
        lambda r: r["performer"][0].pop("actor") and r["performer"][0].update(function={"text": "x"}),
        "error",
        "Immunization.performer[0]",
        "cardinality",
    ),
    (
        "identifier without system",
        lambda r: r["identifier"][0].pop("system"),
        "error",
        "Immunization.identifier[0]",
        "cardinality",
    ),
    ("no recorder", drop_extension(RECORDER), "error", "Immunization", "slice-cardinality"),
    (
        "two recorders",
        lambda r: r["extension"].append(copy.deepcopy(r["extension"][0])),
        "error",
        "Immunization",
        "slice-cardinality",
    ),
    (
        "recorder with a string",
        lambda r: r["extension"][0].update(valueString="dr X") or r["extension"][0].pop("valueReference"),
        "error",
        "Immunization.extension[0]",
        "unknown-element",
    ),
    (
        "wrong fixed url in nested extension",
        lambda r: (
            product_extension(r)["extension"][1].update(valueInteger=3)
            or product_extension(r)["extension"][1].pop("valueString")
        ),
        "error",
        "Immunization.extension[1].extension[1]",
        "unknown-element",
    ),
    (
        "extension without url",
        lambda r: r["extension"].append({"valueString": "x"}),
        "error",
        "Immunization.extension[2]",
        "cardinality",
    ),
    (
        "extension with value and extensions",
        lambda r: product_extension(r).update(valueString="x"),
        "error",
        "Immunization.extension[1]",
        "cardinality",
    ),
    (
        "unknown modifier extension",
        lambda r: r.update(modifierExtension=[{"url": "http://example.org/x", "valueBoolean": True}]),
        "error",
        "Immunization.modifierExtension[0]",
        "unknown-extension",
    ),
    (
        "extension outside its context",
        lambda r: r["vaccineCode"].update(extension=[product_extension(r)]),
        "error",
        "Immunization.vaccineCode.extension[0]",
        "extension-context",
    ),
    (
        "relative Coding.system",
        lambda r: r["vaccineCode"]["coding"][0].update(system="snomed"),
        "error",
        "Immunization.vaccineCode.coding[0].system",
        "coding-system",
    ),
    (
        "a value set as Coding.system",
        lambda r: r["vaccineCode"]["coding"][0].update(system=VACC + "ValueSet/be-vs-vaccine-code"),
        "error",
        "Immunization.vaccineCode.coding[0].system",
        "coding-system",
    ),
    (
        "relative Identifier.system",
        lambda r: r["identifier"][0].update(system="vaccinations"),
        "error",
        "Immunization.identifier[0].system",
        "identifier-system",
    ),
    ("status not in value set", lambda r: r.update(status="done"), "error", "Immunization.status", "binding"),
    (
        "vaccine code not in value set",
        lambda r: r["vaccineCode"]["coding"][0].update(code="12345678"),
        "error",
        "Immunization.vaccineCode",
        "binding",
    ),
    (
        "route not in value set",
        lambda r: r["route"]["coding"][0].update(code="XX"),
        "error",
        "Immunization.route",
        "binding",
    ),
    (
        "status reason not in value set",
        lambda r: r.update(
            status="not-done",
            statusReason={
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "NOPE"}]
            },
        ),
        "error",
        "Immunization.statusReason",
        "binding",
    ),
    (
        "site not in value set",
        lambda r: r["site"]["coding"][0].update(code="1234"),
        "error",
        "Immunization.site",
        "binding",
    ),
    (
        "laterality not in value set",
        lambda r: r["site"]["extension"][0]["valueCoding"].update(code="1"),
        "error",
        "Immunization.site.extension[0].value.ofType(Coding)",
        "binding",
    ),
    (
        "unknown code in a local code system",
        lambda r: r["route"]["coding"][0].update(code="NOPE"),
        "error",
        "Immunization.route.coding[0].code",
        "code-system",
    ),
    (
        "be-rule-vaccination-1: 'other' needs text",
        lambda r: r.update(
            vaccineCode={"coding": [{"system": VACC + "CodeSystem/be-cs-vaccine-code", "code": "other"}]}
        ),
        "error",
        "Immunization",
        "be-rule-vaccination-1",
    ),
    (
        "be-rule-vaccination-2: product code system",
        lambda r: product_extension(r)["extension"][0]["valueCodeableConcept"]["coding"][0].update(
            system="http://example.org/codes"
        ),
        "error",
        "Immunization",
        "be-rule-vaccination-2",
    ),
    (
        "be-rule-vaccination-3: reaction detail",
        lambda r: (
            r.update(reaction=[{"date": "2026-11-21", "detail": {"reference": "#obs"}}])
            or r["contained"].append(
                {
                    "resourceType": "Observation",
                    "id": "obs",
                    "status": "final",
                    "code": {"coding": [{"system": SCT, "code": "999999999"}]},
                }
            )
        ),
        "error",
        "Immunization",
        "be-rule-vaccination-3",
    ),
    (
        "be-rule-vaccination-4: care location type",
        lambda r: r["contained"][1]["type"][0]["coding"][0].update(
            system="http://example.org/places", code="garden"
        ),
        "error",
        "Immunization",
        "be-rule-vaccination-4",
    ),
    (
        "imm-1: education needs document type or reference",
        lambda r: r.update(education=[{"publicationDate": "2020-01-01"}]),
        "error",
        "Immunization.education[0]",
        "imm-1",
    ),
    (
        "dom-3: contained resource not referenced",
        lambda r: r["contained"].append({"resourceType": "Organization", "id": "orphan", "name": "Nobody"}),
        "error",
        "Immunization",
        "dom-3",
    ),
    (
        "dom-2: nested contained",
        lambda r: r["contained"][1].update(
            contained=[{"resourceType": "Organization", "id": "o", "name": "x"}]
        ),
        "error",
        "Immunization",
        "dom-2",
    ),
    (
        "reference to missing contained",
        lambda r: r.update(encounter={"reference": "#nothing"}),
        "error",
        "Immunization.encounter",
        "reference",
    ),
    (
        "malformed reference",
        lambda r: r.update(encounter={"reference": "not a reference"}),
        "error",
        "Immunization.encounter",
        "reference",
    ),
    (
        "reference to the wrong type",
        lambda r: r.update(encounter={"reference": "Patient/123"}),
        "error",
        "Immunization.encounter",
        "reference-target",
    ),
    (
        "reference type mismatch",
        lambda r: r["performer"][0]["actor"].update(reference="Practitioner/p1", type="Organization"),
        "error",
        "Immunization.performer[0].actor.type",
        "reference",
    ),
    (
        "unknown resourceType in contained",
        lambda r: r["contained"].append({"resourceType": "Spaceship", "id": "s"}),
        "error",
        "Immunization.contained[2]",
        "resourceType",
    ),
    (
        "bad primitive extension",
        lambda r: r.update(_recorded={"extension": [{"url": "http://example.org/x"}]}),
        "error",
        "Immunization.recorded.extension[0]",
        "ext-1",
    ),
    (
        "primitive extension as string",
        lambda r: r.update(_recorded="x"),
        "error",
        "Immunization.recorded",
        "json-primitive",
    ),
]


@pytest.mark.parametrize(
    ("case", "mutate", "severity", "expression", "rule"), CASES, ids=[c[0] for c in CASES]
)
def test_invalid_resource_gives_the_exact_issue(
    validator: Validator, case: str, mutate: Mutation, severity: str, expression: str, rule: str | None
) -> None:
    resource = valid_immunization()
    mutate(resource)
    outcome = validator.validate(resource)
    found = [(i.severity, i.expression, i.rule) for i in outcome.issues]
    assert (severity, expression, rule) in found, "\n".join(i.to_text() for i in outcome.issues)


# -- Belgian identifiers ------------------------------------------------------------------------


def test_bad_ssin_check_digits_are_a_warning_by_default_and_an_error_when_strict(
    package_set: PackageSet,
) -> None:
    resource = valid_immunization()
    resource["patient"]["identifier"]["value"] = "79121137740"  # as in the IG examples: check digits fail
    lenient = Validator(package_set).validate(resource)
    assert ("warning", "Immunization.patient.identifier.value", "be-identifier-ssin") in [
        (i.severity, i.expression, i.rule) for i in lenient.issues
    ]
    assert lenient.ok
    strict = Validator(package_set, strict_identifiers=True).validate(resource)
    assert ("error", "Immunization.patient.identifier.value", "be-identifier-ssin") in errors_of(strict)


def test_bad_nihdi_in_reference_identifier_is_reported(validator: Validator) -> None:
    resource = valid_immunization()
    resource["performer"][0]["actor"]["identifier"]["value"] = "10828400123"  # check digits 00 never occur
    found = [(i.severity, i.expression, i.rule) for i in validator.validate(resource).issues]
    assert (
        "warning",
        "Immunization.performer[0].actor.identifier.value",
        "be-identifier-nihdi-professional",
    ) in found


# -- profiles, unknown things, input forms ------------------------------------------------------


def test_unknown_profile_is_a_configuration_error(validator: Validator) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown profile http://example\.org/nope"):
        validator.validate(valid_immunization(), "http://example.org/nope")


def test_unknown_declared_profile_is_a_warning(validator: Validator) -> None:
    resource = valid_immunization()
    resource["meta"]["profile"] = ["http://example.org/StructureDefinition/unknown"]
    outcome = validator.validate(resource)
    assert ("warning", "Immunization.meta.profile[0]", "meta-profile") in [
        (i.severity, i.expression, i.rule) for i in outcome.issues
    ]


def test_profile_for_another_type_is_an_error(validator: Validator) -> None:
    outcome = validator.validate({"resourceType": "Patient", "id": "p"}, BE_VACCINATION)
    assert [i.rule for i in outcome.errors()] == ["profile-type"]


def test_without_profile_the_base_definition_applies(validator: Validator) -> None:
    resource = valid_immunization()
    del resource["meta"]
    resource.pop("recorded")
    resource["lotNumber"] = "ALLOWED-IN-R4"
    assert validator.validate(resource).ok  # R4 core allows lotNumber and no recorded


def test_unknown_resource_type(validator: Validator) -> None:
    outcome = validator.validate({"resourceType": "Spaceship"})
    assert [(i.severity, i.rule) for i in outcome.issues] == [("error", "resourceType")]
    assert [i.rule for i in validator.validate({"id": "x"}).issues] == ["resourceType"]


def test_malformed_json_has_line_and_column(validator: Validator) -> None:
    outcome = validator.validate(b'{\n  "resourceType": "Immunization",\n  "status": }')
    assert outcome.issues[0].severity == "fatal"
    assert "line 3, column 13" in outcome.issues[0].message


def test_bundle_entries_are_validated(validator: Validator) -> None:
    bad = valid_immunization()
    bad.pop("patient")
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:0f1c4e56-7e0b-4d0a-9d5b-3c6f0b9c1a11", "resource": valid_immunization()},
            {"fullUrl": "urn:uuid:0f1c4e56-7e0b-4d0a-9d5b-3c6f0b9c1a12", "resource": bad},
        ],
    }
    outcome = validator.validate(bundle)
    assert ("error", "Bundle.entry[1].resource", "cardinality") in errors_of(outcome)
    assert not any(i.expression.startswith("Bundle.entry[0]") for i in outcome.errors())


def test_operation_outcome_serialisation(validator: Validator) -> None:
    resource = valid_immunization()
    resource.pop("patient")
    oo = validator.validate(resource).to_operation_outcome()
    assert oo["resourceType"] == "OperationOutcome"
    issue = next(i for i in oo["issue"] if i["severity"] == "error")
    assert issue["code"] == "required" and issue["expression"] == ["Immunization"]
    assert "Immunization.patient: minimum required = 1" in issue["details"]["text"]
    assert (
        validator.validate(valid_immunization()).to_operation_outcome()["resourceType"] == "OperationOutcome"
    )
    assert validator.validate(oo).ok  # our own OperationOutcomes are valid FHIR


# -- a terminology server for what cannot be checked offline -------------------------------------

BE_PROBLEM = "https://www.ehealth.fgov.be/standards/fhir/core-clinical/StructureDefinition/be-problem"


@pytest.fixture
def fake_tx():
    """A terminology server on 127.0.0.1 that knows one SNOMED code of be-vs-problem-code."""
    import http.server
    import threading
    from urllib.parse import parse_qs, urlparse

    asked: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
            asked.append(query)
            known = query.get("code") == "38341003"
            body = json.dumps(
                {
                    "resourceType": "Parameters",
                    "parameter": [
                        {"name": "result", "valueBoolean": known},
                        *([] if known else [{"name": "message", "valueString": "not in the value set"}]),
                    ],
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", asked
    server.shutdown()
    server.server_close()


def problem(code: str) -> dict:
    return {
        "resourceType": "Condition",
        "id": "p1",
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
            ]
        },
        "code": {"coding": [{"system": SCT, "code": code}]},
        "subject": {"identifier": {"system": SSIN, "value": "94021300145"}},
    }


def binding_issues(outcome: Outcome) -> list[tuple[str, str]]:
    return [
        (i.severity, i.code)
        for i in outcome.issues
        if i.rule == "binding" and i.expression.startswith("Condition.code")
    ]


def test_offline_unknown_code_is_a_warning_and_a_tx_server_settles_it(
    package_set: PackageSet, fake_tx
) -> None:
    from conformance.fhir.terminology import Terminology

    offline = Validator(package_set).validate(problem("38341003"), BE_PROBLEM)
    assert binding_issues(offline) == [("warning", "not-supported")]  # cannot be checked: never an error
    url, asked = fake_tx
    online = Validator(package_set, terminology=Terminology(package_set, url))
    assert binding_issues(online.validate(problem("38341003"), BE_PROBLEM)) == []
    assert binding_issues(online.validate(problem("99999999"), BE_PROBLEM)) == [("warning", "code-invalid")]
    assert any(q["url"].endswith("be-vs-problem-code") and q["system"] == SCT for q in asked)


def test_attachment_size_and_hash_must_match_the_data(validator: Validator) -> None:
    photo = {
        "contentType": "text/plain",
        "data": "aGVsbG8=",
        "size": 5,
        "hash": "qvTGHdzF6KLavt4PO0gs2a6pQ00=",
    }
    assert validator.validate({"resourceType": "Patient", "photo": [photo]}).ok  # "hello": 5 bytes
    wrong = {**photo, "size": 6, "hash": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="}
    assert errors_of(validator.validate({"resourceType": "Patient", "photo": [wrong]})) == [
        ("error", "Patient.photo[0]", "attachment-size"),
        ("error", "Patient.photo[0]", "attachment-hash"),
    ]


def test_canonical_url_must_be_absolute(validator: Validator) -> None:
    value_set = {"resourceType": "ValueSet", "url": "http://example.org/vs", "status": "draft"}
    assert validator.validate(value_set).ok
    assert ("error", "ValueSet.url", "canonical-url") in errors_of(
        validator.validate({**value_set, "url": "vs1"})
    )


def test_every_issue_names_its_profile(validator: Validator) -> None:
    resource = valid_immunization()
    resource["colour"] = "blue"
    resource["contained"][0]["colour"] = "red"
    issues = validator.validate(resource).issues
    assert issues and all(i.profile for i in issues)
    by_location = {i.expression: i.profile for i in issues if i.rule == "unknown-element"}
    assert by_location["Immunization"] == BE_VACCINATION + "|1.1.2"
    assert (
        by_location["Immunization.contained[0]"] == "http://hl7.org/fhir/StructureDefinition/Encounter|4.0.1"
    )
