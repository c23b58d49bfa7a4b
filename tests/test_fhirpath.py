"""The FHIRPath layer: model typing, added functions, variables, errors, and the BeVaccination rules."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from conformance.fhir import fhirpath as fhirpath_module
from conformance.fhir.definitions import PackageSet
from conformance.fhir.fhirpath import (
    CompiledExpression,
    EvalContext,
    FhirPath,
    FhirPathError,
)
from conformance.fhir.fhirpath_compiled import Node
from tests.resolvers import local_resolver

BE_VACCINATION = "https://www.ehealth.fgov.be/standards/fhir/vaccination/StructureDefinition/be-vaccination"
PRODUCT = (
    "https://www.ehealth.fgov.be/standards/fhir/vaccination/StructureDefinition/be-ext-administeredProduct"
)
CARE_LOCATION_CS = "https://www.ehealth.fgov.be/standards/fhir/vaccination/CodeSystem/be-cs-care-location"
CNK = "https://www.ehealth.fgov.be/standards/fhir/medication/NamingSystem/be-ns-cnk-codes"
SCT = "http://snomed.info/sct"
RULES = ("be-rule-vaccination-1", "be-rule-vaccination-2", "be-rule-vaccination-3", "be-rule-vaccination-4")


# -- helpers and fixtures -------------------------------------------------------------------------


def at(resource: dict, node_type: str | None = None, root: dict | None = None) -> EvalContext:
    """The context of a node in ``resource`` (the resource itself unless ``node_type`` says otherwise)."""
    return EvalContext(
        resource, root if root is not None else resource, node_type or resource.get("resourceType")
    )


class ExpansionMembership:
    """A test memberOf() over the expansions the IG packages ship in ``other/expansions.json``."""

    def __init__(self, package_set: PackageSet) -> None:
        self.codes: dict[str, set[tuple[str | None, str]]] = {}
        for package in package_set.packages:
            path = package.content_dir / "other" / "expansions.json"
            if not path.is_file():
                continue
            for entry in orjson.loads(path.read_bytes()).get("entry", []):
                valueset = entry["resource"]
                contains = valueset.get("expansion", {}).get("contains", [])
                self.codes[valueset["url"]] = {(c.get("system"), c["code"]) for c in contains if "code" in c}

    def __call__(self, node: object, url: str) -> bool | None:
        codes = self.codes.get(url)
        if codes is None:
            return None
        if isinstance(node, str):
            return any(code == node for _, code in codes)
        if not isinstance(node, dict):
            return None
        if "coding" in node:
            return any(self(coding, url) for coding in node["coding"])
        return (node.get("system"), node.get("code")) in codes


@pytest.fixture(scope="session")
def membership(package_set: PackageSet) -> ExpansionMembership:
    return ExpansionMembership(package_set)


@pytest.fixture(scope="session")
def immunization_examples(package_set: PackageSet) -> list[dict]:
    examples = [
        package_set.read(e)
        for e in package_set.examples()
        if e.resource_type == "Immunization" and e.package and e.package.id == "hl7.fhir.be.vaccination"
    ]
    assert len(examples) == 35
    return examples


@pytest.fixture(scope="session")
def example_resolver(package_set: PackageSet) -> Callable[[str, EvalContext], dict | None]:
    """Local references first, then ``Type/id`` among the packages' examples (a stand-in server)."""
    by_id = {f"{e.resource_type}/{e.id}": e for e in package_set.examples()}

    def resolve(reference: str, ctx: EvalContext) -> dict | None:
        found = local_resolver(reference, ctx)
        if found is None and reference in by_id:
            found = package_set.read(by_id[reference])
        return found

    return resolve


@pytest.fixture(scope="session")
def fp(example_resolver, membership) -> FhirPath:
    return FhirPath(resolver=example_resolver, member_of=membership)


@pytest.fixture(scope="session")
def rules(package_set: PackageSet, fp: FhirPath) -> dict[str, CompiledExpression]:
    profile = package_set.resolve(BE_VACCINATION)
    found = {
        c["key"]: fp.compile(c["expression"])
        for element in profile["snapshot"]["element"]
        for c in element.get("constraint", ())
        if c["key"] in RULES
    }
    assert sorted(found) == list(RULES)
    return found


def all_constraints(package_set: PackageSet) -> Iterator[tuple[str, str, str]]:
    for entry in package_set.by_type("StructureDefinition"):
        definition = package_set.read(entry)
        for element in definition.get("snapshot", {}).get("element", ()):
            for constraint in element.get("constraint", ()):
                if constraint.get("expression"):
                    yield definition["url"], constraint["key"], constraint["expression"]


def base_immunization() -> dict[str, Any]:
    return {
        "resourceType": "Immunization",
        "id": "t1",
        "status": "completed",
        "vaccineCode": {"coding": [{"system": SCT, "code": "836398006"}]},
        "patient": {"reference": "Patient/p1"},
        "occurrenceDateTime": "2024-03-01",
        "recorded": "2024-03-01",
    }


# -- typing through the R4 model ------------------------------------------------------------------


def test_as_and_oftype_select_a_choice_value() -> None:
    """Without the model `value as CodeableConcept` silently yields nothing; with it, the value."""
    fp = FhirPath()
    concept = {"coding": [{"system": CNK, "code": "1234567"}]}
    extension = {"url": "coded", "valueCodeableConcept": concept}
    ctx = at({"resourceType": "Basic"}, "Extension")
    assert fp.compile("value as CodeableConcept").evaluate(extension, ctx) == [concept]
    assert fp.compile("value.ofType(CodeableConcept)").evaluate(extension, ctx) == [concept]
    assert fp.compile("value.as(CodeableConcept).coding.code").evaluate(extension, ctx) == ["1234567"]
    assert fp.compile("value is CodeableConcept").evaluate(extension, ctx) == [True]
    assert fp.compile("value as Coding").evaluate(extension, ctx) == []
    assert fp.compile("value.ofType(Reference)").evaluate(extension, ctx) == []
    # a specialisation is its parent type: Age is a Quantity
    age = {"url": "age", "valueAge": {"value": 3, "unit": "a"}}
    assert fp.compile("value.ofType(Quantity).unit").evaluate(age, ctx) == ["a"]
    assert fp.compile("value is Quantity").is_true(age, ctx)
    # a primitive choice
    assert fp.compile("value.ofType(string)").evaluate({"url": "x", "valueString": "s"}, ctx) == ["s"]
    assert fp.compile("value.ofType(boolean)").evaluate({"url": "x", "valueString": "s"}, ctx) == []


def test_oftype_works_before_any_is_or_as_ran() -> None:
    """fhirpathpy only installs its model on is/as; ofType() alone must still see subtypes."""
    fhirpath_module.TypeInfo.model = None
    fp = FhirPath()
    age = {"url": "age", "valueAge": {"value": 3}}
    assert fp.compile("value.ofType(Quantity).value").evaluate(
        age, at({"resourceType": "Basic"}, "Extension")
    ) == [3]


def test_node_type_for_resource_datatype_backbone_and_element_path() -> None:
    fp = FhirPath()
    imm = base_immunization()
    imm["performer"] = [{"actor": {"identifier": {"value": "10829059"}}}]
    assert fp.compile("occurrence.ofType(dateTime)").evaluate(imm, at(imm)) == ["2024-03-01"]
    assert fp.compile("$this is Immunization and $this is DomainResource").is_true(imm, at(imm))
    performer = imm["performer"][0]
    ctx = at(imm, "Immunization.performer")
    assert fp.compile("actor is Reference").is_true(performer, ctx)
    assert fp.compile("actor.identifier.value").evaluate(performer, ctx) == ["10829059"]
    vaccine_code = imm["vaccineCode"]
    for node_type in ("CodeableConcept", "Immunization.vaccineCode"):
        ctx = at(imm, node_type)
        assert fp.compile("$this is CodeableConcept").is_true(vaccine_code, ctx)
        assert fp.compile("coding.ofType(Coding).code").evaluate(vaccine_code, ctx) == ["836398006"]
    # a contained resource is typed by its resourceType whatever node_type says
    encounter = {"resourceType": "Encounter", "id": "e", "status": "finished"}
    assert fp.compile("$this is Encounter").is_true(encounter, at(encounter, "Resource", imm))


# -- environment variables ------------------------------------------------------------------------


def test_environment_variables() -> None:
    fp = FhirPath()
    encounter = {"resourceType": "Encounter", "id": "enc", "status": "finished"}
    imm = base_immunization() | {"contained": [encounter]}
    ctx = EvalContext(encounter, imm, "Encounter")
    assert fp.compile("%resource.id").evaluate(encounter, ctx) == ["enc"]
    assert fp.compile("%rootResource.id").evaluate(encounter, ctx) == ["t1"]
    assert fp.compile("%rootResource.contained.id").evaluate(encounter, ctx) == ["enc"]
    assert fp.compile("%context.status").evaluate(encounter, ctx) == ["finished"]
    assert fp.compile("%ucum").evaluate(encounter, ctx) == ["http://unitsofmeasure.org"]
    assert fp.compile("%sct").evaluate(encounter, ctx) == [SCT]
    assert fp.compile("%loinc").evaluate(encounter, ctx) == ["http://loinc.org"]
    assert fp.compile("%`vs-administrative-gender`").evaluate(encounter, ctx) == [
        "http://hl7.org/fhir/ValueSet/administrative-gender"
    ]
    assert fp.compile("%`ext-data-absent-reason`").evaluate(encounter, ctx) == [
        "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
    ]


def test_unknown_variable_is_a_compile_error() -> None:
    with pytest.raises(FhirPathError, match=r"%nope .*'%nope.exists\(\)'"):
        FhirPath().compile("%nope.exists()")


# -- hasValue() and primitives --------------------------------------------------------------------


EXT = [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]


@pytest.mark.parametrize(
    ("patient_fields", "expected"),
    [
        ({"birthDate": "1990-01-01"}, True),
        ({"_birthDate": {"extension": EXT}}, False),  # extensions only: no value
        ({"birthDate": "1990-01-01", "_birthDate": {"extension": EXT}}, True),  # value and extensions
        ({}, False),
    ],
)
def test_has_value_on_primitives(patient_fields: dict, expected: bool) -> None:
    fp = FhirPath()
    patient = {"resourceType": "Patient", **patient_fields}
    assert fp.compile("birthDate.hasValue()").is_true(patient, at(patient)) is expected


def test_has_value_on_nodes_passed_directly() -> None:
    fp = FhirPath()
    has_value = fp.compile("hasValue()")
    patient = {"resourceType": "Patient"}
    assert has_value.is_true("1990-01-01", at(patient, "date"))
    assert has_value.is_true(True, at(patient, "boolean"))
    assert not has_value.is_true({"extension": EXT}, at(patient, "date"))  # the '_birthDate' object alone
    assert has_value.is_true(Node("1990-01-01", {"extension": EXT}, "date"), at(patient, "date"))
    assert not has_value.is_true({"text": "x"}, at(patient, "CodeableConcept"))
    assert not has_value.is_true(patient, at(patient))
    assert not fp.compile("name.given.hasValue()").is_true(
        {"resourceType": "Patient", "name": [{"given": ["a", "b"]}]}, at(patient)
    )  # not a single primitive


def test_primitive_extensions_are_reachable_and_hidden_from_results() -> None:
    fp = FhirPath()
    patient = {"resourceType": "Patient", "birthDate": "1990-01-01", "_birthDate": {"extension": EXT}}
    ctx = at(patient)
    assert fp.compile("birthDate").evaluate(patient, ctx) == ["1990-01-01"]
    assert fp.compile("birthDate.extension.value").evaluate(patient, ctx) == ["unknown"]
    assert fp.compile(
        "birthDate.extension('http://hl7.org/fhir/StructureDefinition/data-absent-reason').exists()"
    ).is_true(patient, ctx)


# -- added and corrected functions ----------------------------------------------------------------


def test_resolve_through_the_callback() -> None:
    calls: list[tuple[str, EvalContext]] = []
    location = {"resourceType": "Location", "id": "loc", "name": "Crèche"}
    encounter = {"resourceType": "Encounter", "id": "enc", "location": [{"location": {"reference": "#loc"}}]}
    imm = base_immunization() | {"contained": [encounter, location], "encounter": {"reference": "#enc"}}

    def resolver(reference: str, ctx: EvalContext) -> dict | None:
        calls.append((reference, ctx))
        return local_resolver(reference, ctx)

    fp = FhirPath(resolver=resolver)
    ctx = at(imm)
    assert fp.compile("encounter.resolve().location.location.resolve().name").evaluate(imm, ctx) == ["Crèche"]
    assert calls == []  # '#id' references are settled inside the resource, without the callback
    assert fp.compile("encounter.reference.resolve().id").evaluate(imm, ctx) == ["enc"]  # a string
    assert fp.compile("encounter.resolve() is Encounter").is_true(imm, ctx)
    assert fp.compile("patient.resolve()").evaluate(imm, ctx) == []  # not found: empty
    assert ("Patient/p1", ctx) in calls  # other references go to the callback
    assert FhirPath().compile("patient.resolve()").evaluate(imm, ctx) == []  # no resolver: empty
    # '#' from inside a contained resource is the container
    back = {"resourceType": "Observation", "id": "o", "focus": [{"reference": "#"}]}
    imm2 = base_immunization() | {"contained": [back]}
    assert fp.compile("focus.resolve().id").evaluate(back, EvalContext(back, imm2, "Observation")) == ["t1"]


def test_local_resolver_in_a_bundle() -> None:
    patient = {"resourceType": "Patient", "id": "p1"}
    imm = base_immunization()
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:6f1c6d5e-0000-4000-8000-000000000001", "resource": patient},
            {"fullUrl": "urn:uuid:6f1c6d5e-0000-4000-8000-000000000002", "resource": imm},
        ],
    }
    ctx = EvalContext(imm, bundle, "Immunization")
    assert local_resolver("urn:uuid:6f1c6d5e-0000-4000-8000-000000000001", ctx) is patient
    assert local_resolver("Patient/p1", ctx) is patient
    assert local_resolver("Patient/p1/_history/2", ctx) is patient
    assert local_resolver("Patient/p2", ctx) is None
    assert local_resolver("Patient/p1", at(imm)) is None  # no bundle: nothing to look in
    assert local_resolver("#", ctx) is imm


def test_member_of_through_the_callback() -> None:
    seen: list[tuple[object, str]] = []

    def member_of(node: object, url: str) -> bool | None:
        seen.append((node, url))
        if url == "http://example.org/unknown":
            return None
        code = node.get("code") if isinstance(node, dict) else node
        if isinstance(node, dict) and "coding" in node:
            code = node["coding"][0]["code"]
        return code == "yes"

    fp = FhirPath(member_of=member_of)
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": SCT, "code": "yes"}, {"system": SCT, "code": "no"}]},
    }
    ctx = at(obs)
    assert fp.compile("code.memberOf('http://example.org/vs')").evaluate(obs, ctx) == [True]
    assert seen[-1] == (obs["code"], "http://example.org/vs")  # the CodeableConcept itself
    assert fp.compile("code.coding.memberOf('http://example.org/vs')").evaluate(obs, ctx) == [True, False]
    assert fp.compile("status.memberOf('http://example.org/vs')").evaluate(obs, ctx) == [False]
    assert seen[-1] == ("final", "http://example.org/vs")
    assert fp.compile("code.memberOf('http://example.org/unknown')").evaluate(obs, ctx) == []
    assert not fp.compile("code.memberOf('http://example.org/unknown')").is_true(obs, ctx)
    assert FhirPath().compile("code.memberOf('http://example.org/vs')").evaluate(obs, ctx) == []


def test_conforms_to_html_checks_and_extension() -> None:
    fp = FhirPath()
    imm = base_immunization() | {
        "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'},
        "extension": [
            {"url": "a", "valueString": "1"},
            {"valueString": "no url"},
            {"url": "a", "valueString": "2"},
        ],
    }
    ctx = at(imm)
    assert fp.compile("conformsTo('http://hl7.org/fhir/StructureDefinition/Immunization')").evaluate(
        imm, ctx
    ) == [True]
    assert fp.compile("conformsTo('http://hl7.org/fhir/StructureDefinition/Patient')").evaluate(imm, ctx) == [
        False
    ]
    assert fp.compile(f"conformsTo('{BE_VACCINATION}')").evaluate(imm, ctx) == []  # cannot tell here
    assert fp.compile("text.`div`.htmlChecks()").is_true(imm, ctx)
    # every matching extension (fhirpathpy keeps only the first and fails on one without url)
    assert fp.compile("extension('a').value").evaluate(imm, ctx) == ["1", "2"]


def test_as_function_filters_a_collection() -> None:
    """as() on several items filters like ofType (the Java engine; dom-3 depends on it)."""
    fp = FhirPath()
    imm = base_immunization() | {"meta": {"profile": [BE_VACCINATION, "http://example.org/p"]}}
    found = fp.compile("descendants().as(canonical)").evaluate(imm, at(imm))
    assert found == [BE_VACCINATION, "http://example.org/p"]
    # canonical is a uri; so is Coding.system
    assert fp.compile("descendants().as(uri)").evaluate(imm, at(imm)) == [*found, SCT]
    # the operator filters too, as the HL7 validator's engine does
    assert fp.compile("meta.profile as canonical").evaluate(imm, at(imm)) == found


def test_trace_does_not_print(capsys: pytest.CaptureFixture[str]) -> None:
    imm = base_immunization()
    assert FhirPath().compile("id.trace('x')").evaluate(imm, at(imm)) == ["t1"]
    assert capsys.readouterr().out == ""


# -- invariant verdicts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("true", True),
        ("false", False),
        ("{}", False),  # empty
        ("id.empty().not() and {}", False),  # empty from three-valued logic
        ("active", True),  # a single boolean element
        ("id", True),  # non-boolean, non-empty: true, as the Java engine's convertToBoolean
        ("true | false", True),  # several items: true, idem
    ],
)
def test_is_true_follows_the_java_engine(expression: str, expected: bool) -> None:
    patient = {"resourceType": "Patient", "id": "p", "active": True}
    assert FhirPath().compile(expression).is_true(patient, at(patient)) is expected


# -- errors and compilation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    ["name.given.where(", "name given", "name..given", "(name", "name.given = 'x", ")", "1 +"],
)
def test_syntax_error_names_the_expression(expression: str) -> None:
    with pytest.raises(FhirPathError) as caught:
        FhirPath().compile(expression)
    assert "syntax error" in caught.value.message
    assert f"'{expression}'" in caught.value.message


def test_unsupported_function_is_a_compile_error() -> None:
    with pytest.raises(
        FhirPathError, match=r"unsupported FHIRPath function frobnicate\(\) in 'name.frobnicate\(\)'"
    ):
        FhirPath().compile("name.frobnicate()")


def test_evaluation_failure_is_a_fhirpath_error() -> None:
    patient = {"resourceType": "Patient", "name": [{"given": ["a", "b"]}]}
    with pytest.raises(FhirPathError, match=r"error evaluating 'name.given.single\(\)'"):
        FhirPath().compile("name.given.single()").evaluate(patient, at(patient))


def test_compiled_once_and_evaluated_without_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    fp = FhirPath()
    compiled = fp.compile("name.given.first()")
    assert fp.compile("name.given.first()") is compiled

    def no_parsing(expression: str) -> dict:
        raise AssertionError("parsed again")

    monkeypatch.setattr(fhirpath_module, "_parse", no_parsing)
    patient = {"resourceType": "Patient", "name": [{"given": ["a", "b"]}]}
    for _ in range(3):
        assert compiled.evaluate(patient, at(patient)) == ["a"]
        assert fp.compile("name.given.first()").evaluate(patient, at(patient)) == ["a"]


def test_every_constraint_in_the_packages_compiles(package_set: PackageSet) -> None:
    fp = FhirPath()
    failures = []
    count = 0
    for url, key, expression in all_constraints(package_set):
        count += 1
        try:
            fp.compile(expression)
        except FhirPathError as exc:
            failures.append(f"{url} {key}: {exc}")
    assert count > 1000
    assert failures == []


# -- the BeVaccination invariants -----------------------------------------------------------------


def test_rules_hold_on_every_immunization_example(immunization_examples, rules) -> None:
    """The 35 IG examples satisfy be-rule-vaccination-1..4 (rule 3 needs the referenced Observation:
    immunization-example-reaction-swelling points at Observation/observation-swelling, a separate
    example, which the test resolver finds)."""
    failures = [
        f"{imm['id']}: {key}"
        for imm in immunization_examples
        for key, rule in rules.items()
        if not rule.is_true(imm, at(imm))
    ]
    assert failures == []


def test_rule_3_fails_when_the_reaction_detail_cannot_be_resolved(
    immunization_examples, rules, membership
) -> None:
    """As in the Java validator: an unresolvable reaction.detail makes resolve() empty, so anyTrue()
    is false and the rule fails."""
    example = next(e for e in immunization_examples if e["id"] == "immunization-example-reaction-swelling")
    alone = FhirPath(resolver=local_resolver, member_of=membership).compile(
        rules["be-rule-vaccination-3"].expression
    )
    assert not alone.is_true(example, at(example))


def test_rule_1_text_for_other_and_generic_codes(rules) -> None:
    rule = rules["be-rule-vaccination-1"]
    imm = base_immunization()
    assert rule.is_true(imm, at(imm))
    imm["vaccineCode"] = {"coding": [{"system": "https://example.org/cs", "code": "other"}]}
    assert not rule.is_true(imm, at(imm))
    imm["vaccineCode"]["text"] = "a vaccine from abroad"
    assert rule.is_true(imm, at(imm))
    imm["vaccineCode"] = {"coding": [{"system": SCT, "code": "787859002"}]}
    assert not rule.is_true(imm, at(imm))
    imm["vaccineCode"] = {"coding": [{"system": "http://example.org", "code": "787859002"}]}
    assert rule.is_true(imm, at(imm))  # the generic code only counts in SNOMED CT


def product(coded: dict | None = None, **extra: Any) -> dict:
    sub = [{"url": "lotNumber", "valueString": "AB12"}]
    if coded is not None:
        sub.append({"url": "coded", "valueCodeableConcept": coded})
    return {"url": PRODUCT, "extension": sub, **extra}


@pytest.mark.parametrize(
    ("coded", "expected"),
    [
        (None, True),  # no coded product
        ({"coding": [{"system": CNK, "code": "1234567"}]}, True),
        (
            {
                "coding": [
                    {
                        "system": "https://www.ehealth.fgov.be/standards/fhir/medication/NamingSystem/be-ns-cti-extended-code",
                        "code": "1",
                    }
                ]
            },
            True,
        ),
        ({"coding": [{"system": "http://whocc.no/atc", "code": "J07BX03"}]}, True),
        ({"coding": [{"system": "http://example.org/products", "code": "x"}]}, False),
        ({"text": "only a text"}, False),
        ({"coding": [{"system": "http://example.org/p", "code": "x"}, {"system": CNK, "code": "1"}]}, True),
    ],
)
def test_rule_2_coded_product_system(rules, coded: dict | None, expected: bool) -> None:
    """Needs the model: without it `value as CodeableConcept` is empty and every case would pass."""
    imm = base_immunization() | {"extension": [product(coded)]}
    assert rules["be-rule-vaccination-2"].is_true(imm, at(imm)) is expected


def test_rule_2_ignores_a_coded_value_of_another_type(rules) -> None:
    imm = base_immunization() | {
        "extension": [{"url": PRODUCT, "extension": [{"url": "coded", "valueString": "not a concept"}]}]
    }
    assert rules["be-rule-vaccination-2"].is_true(imm, at(imm))


def with_reaction(code: str, contained: bool = True) -> dict:
    observation = {
        "resourceType": "Observation",
        "id": "reaction",
        "status": "final",
        "code": {"coding": [{"system": SCT, "code": code}]},
    }
    imm = base_immunization() | {"reaction": [{"date": "2024-03-02", "detail": {"reference": "#reaction"}}]}
    if contained:
        imm["contained"] = [observation]
    return imm


def test_rule_3_reaction_manifestation_codes(rules) -> None:
    rule = rules["be-rule-vaccination-3"]
    good = with_reaction("41291007")  # angioedema, in be-vs-reaction-manifestation-code
    assert rule.is_true(good, at(good))
    bad = with_reaction("22298006")  # myocardial infarction: not a listed manifestation
    assert not rule.is_true(bad, at(bad))
    dangling = with_reaction("41291007", contained=False)
    assert not rule.is_true(dangling, at(dangling))
    none = base_immunization() | {"reaction": [{"date": "2024-03-02"}]}
    assert rule.is_true(none, at(none))


def test_rule_3_needs_member_of(rules, example_resolver) -> None:
    """Without a memberOf answer the rule cannot be satisfied (anyTrue() of empty is false)."""
    blind = FhirPath(resolver=example_resolver).compile(rules["be-rule-vaccination-3"].expression)
    good = with_reaction("41291007")
    assert not blind.is_true(good, at(good))


def with_location(location_type: list | None) -> dict:
    location = {"resourceType": "Location", "id": "loc"}
    if location_type is not None:
        location["type"] = location_type
    encounter = {
        "resourceType": "Encounter",
        "id": "enc",
        "status": "finished",
        "class": {"code": "AMB"},
        "location": [{"location": {"reference": "#loc"}}],
    }
    return base_immunization() | {"contained": [encounter, location], "encounter": {"reference": "#enc"}}


def test_rule_4_care_location_type(rules) -> None:
    rule = rules["be-rule-vaccination-4"]
    cases = [
        (with_location([{"coding": [{"system": CARE_LOCATION_CS, "code": "kind-gezin"}]}]), True),
        (with_location([{"coding": [{"system": CARE_LOCATION_CS, "code": "no-such-place"}]}]), False),
        (with_location([{"coding": [{"system": "http://example.org", "code": "kind-gezin"}]}]), False),
        (with_location(None), True),  # no type: nothing to check
        (
            with_location(
                [
                    {
                        "coding": [
                            {"system": "http://example.org", "code": "x"},
                            {"system": CARE_LOCATION_CS, "code": "school"},
                        ]
                    }
                ]
            ),
            True,
        ),
        (base_immunization(), True),  # no encounter
    ]
    for imm, expected in cases:
        assert rule.is_true(imm, at(imm)) is expected, imm.get("contained")
    no_location = with_location(None)
    del no_location["contained"][0]["location"]
    assert rule.is_true(no_location, at(no_location))


def test_rules_on_a_copy_of_each_example_with_a_bad_location(immunization_examples, rules) -> None:
    """Every example with a typed contained Location fails rule 4 once the type leaves the value set."""
    changed = 0
    for example in immunization_examples:
        imm = copy.deepcopy(example)
        locations = [c for c in imm.get("contained", ()) if c["resourceType"] == "Location" and c.get("type")]
        if not locations:
            continue
        for location in locations:
            location["type"] = [{"coding": [{"system": CARE_LOCATION_CS, "code": "moon-base"}]}]
        changed += 1
        assert not rules["be-rule-vaccination-4"].is_true(imm, at(imm)), imm["id"]
    assert changed >= 15
