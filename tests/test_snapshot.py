"""Snapshot generation from differentials (``conformance.fhir.snapshot``).

Three kinds of checks:

- every StructureDefinition of the Belgian packages that ships a snapshot is regenerated from its
  differential alone and compared with the shipped snapshot on what validation reads: element ids
  (and their order), min/max, type codes/profiles/targetProfiles, fixed[x]/pattern[x], binding
  strength and value set, constraint keys and slicing. The shipped snapshots of profiles and
  extensions come from fhir-snapshot-generator 2.2.2, those of the four logical models from SUSHI
  (see PROVENANCE.md); all of them agree on these properties. Differences that remain outside them,
  all documentation: inherited markdown keeps core's relative links (``[Extensibility](extensibility.html)``)
  where the shipped snapshots make them absolute; for logical models SUSHI writes ``isModifier`` and
  a ``mapping`` on the root and leaves ``source`` off the root's ele-1. The two generator differences
  PROVENANCE.md names (SUSHI unrolling the children of some extension slices in be-patient and
  be-address; the identifier invariants copied into each identifier slice) are differences between
  SUSHI's own snapshots and the shipped ones: the generator here behaves as the shipped ones (no
  unrolling of a slice the differential does not go into; a new slice copies the sliced element
  as the differential left it, invariants included).
- hand-made differentials for each rule of the FHIR profiling page and each kind of problem;
- the regenerated be-vaccination validates the 35 Immunization examples (and broken variants of
  them) exactly as the shipped snapshot does.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from conformance.errors import ConfigurationError
from conformance.fhir.definitions import PackageSet, ResourceEntry
from conformance.fhir.plan import compile_structure_definition
from conformance.fhir.snapshot import SnapshotGenerator, ensure_snapshot, generate_snapshot
from conformance.fhir.validator import Validator
from tests.profiles import CORE, EXAMPLE, Profile

BE_VACCINATION = "https://www.ehealth.fgov.be/standards/fhir/vaccination/StructureDefinition/be-vaccination"
BE_PATIENT = "https://www.ehealth.fgov.be/standards/fhir/core/StructureDefinition/be-patient"
RECORDER = "https://www.ehealth.fgov.be/standards/fhir/core/StructureDefinition/be-ext-recorder"
VS = "http://hl7.org/fhir/ValueSet/"


# -- helpers ------------------------------------------------------------------------------------


def signature(element: dict) -> dict[str, Any]:
    """What validation reads from a snapshot element."""
    binding = element.get("binding") or {}
    return {
        "min": element.get("min"),
        "max": element.get("max"),
        "type": [
            (t.get("code"), tuple(t.get("profile") or ()), tuple(t.get("targetProfile") or ()))
            for t in element.get("type") or ()
        ],
        "fixed": {k: v for k, v in element.items() if k.startswith(("fixed", "pattern"))},
        "binding": (binding.get("strength"), binding.get("valueSet")),
        "constraints": sorted(c.get("key", "") for c in element.get("constraint") or ()),
        "slicing": element.get("slicing"),
        "sliceName": element.get("sliceName"),
    }


def differences(expected: list[dict], actual: list[dict]) -> list[str]:
    """Where two snapshots differ on ids, order and the validation-relevant properties."""
    found = []
    expected_ids = [e["id"] for e in expected]
    actual_ids = [e["id"] for e in actual]
    if expected_ids != actual_ids:
        found.append(
            f"ids: missing {[i for i in expected_ids if i not in actual_ids]}, "
            f"extra {[i for i in actual_ids if i not in expected_ids]}, same set: {set(expected_ids) == set(actual_ids)}"
        )
    by_id = {e["id"]: e for e in actual}
    for element in expected:
        other = by_id.get(element["id"])
        if other is None:
            continue
        want, got = signature(element), signature(other)
        found += [f"{element['id']} {k}: {want[k]!r} != {got[k]!r}" for k in want if want[k] != got[k]]
    return found


def derive(
    base: str, elements: list[dict], name: str = "Test", *, derivation: str = "constraint", **extra: Any
) -> dict:
    """A differential-only StructureDefinition ``name`` on ``base`` (a core type name or a URL)."""
    base_url = base if "/" in base else CORE + base
    root_type = base.rsplit("/", 1)[-1] if "/" not in base else elements[0]["path"].split(".")[0]
    sd = {
        "resourceType": "StructureDefinition",
        "id": name,
        "url": EXAMPLE + name,
        "name": name,
        "status": "draft",
        "kind": "resource",
        "abstract": False,
        "type": root_type,
        "baseDefinition": base_url,
        "derivation": derivation,
        "differential": {"element": elements},
    }
    sd.update(extra)
    return sd


def resolver(packages: PackageSet, *local: dict) -> Callable[[str], dict | None]:
    """``packages.resolve`` with some definitions added on top."""
    by_url = {sd["url"]: sd for sd in local}

    def resolve(canonical: str) -> dict | None:
        return by_url.get(canonical.partition("|")[0]) or packages.resolve(canonical)

    return resolve


def el(element_id: str, **properties: Any) -> dict:
    """A differential element; the path is the id without slice names."""
    path = ".".join(part.partition(":")[0] for part in element_id.split("."))
    return {"id": element_id, "path": path, **properties}


def generate(packages: PackageSet, sd: dict, *local: dict) -> tuple[dict[str, dict], list[str], list[str]]:
    """Generate; returns the elements by id, the ids in order and the problems."""
    result, problems = generate_snapshot(sd, resolver(packages, *local))
    elements = result["snapshot"]["element"]
    return {e["id"]: e for e in elements}, [e["id"] for e in elements], problems


def codes(element: dict) -> list[str]:
    return [t["code"] for t in element.get("type") or ()]


# -- the Belgian packages -------------------------------------------------------------------------


def belgian_definitions(packages: PackageSet) -> list[ResourceEntry]:
    return [
        e
        for e in packages.by_type("StructureDefinition")
        if e.package is not None and e.package.id.startswith("hl7.fhir.be.")
    ]


@pytest.fixture(scope="module")
def shipped(package_set: PackageSet) -> list[tuple[str, dict]]:
    """Every Belgian StructureDefinition that ships a snapshot, by ``package/id``."""
    found = []
    for entry in belgian_definitions(package_set):
        sd = package_set.read(entry)
        if (sd.get("snapshot") or {}).get("element"):
            found.append((f"{entry.package}/{sd['id']}", sd))
    return found


def test_the_belgian_packages_ship_the_expected_definitions(shipped: list[tuple[str, dict]]) -> None:
    kinds = {(sd["derivation"], sd["type"] == "Extension") for _, sd in shipped}
    # 35 profiles and extensions (be.core 2.0.0 and 2.1.2 both count) and 4 logical models
    assert len(shipped) == 39
    assert sum(sd["derivation"] == "specialization" for _, sd in shipped) == 4
    assert kinds == {("constraint", True), ("constraint", False), ("specialization", False)}


def test_every_shipped_snapshot_is_regenerated_from_the_differential(
    package_set: PackageSet, shipped: list[tuple[str, dict]]
) -> None:
    generator = SnapshotGenerator(package_set.resolve)
    report = {}
    for label, sd in shipped:
        stripped = {k: v for k, v in sd.items() if k != "snapshot"}
        result, problems = generator.generate(stripped)
        found = differences(sd["snapshot"]["element"], result["snapshot"]["element"]) + problems
        if found:
            report[label] = found
    assert report == {}


def test_generation_changes_neither_its_input_nor_the_loaded_definitions(package_set: PackageSet) -> None:
    sd = {k: v for k, v in package_set.resolve(BE_VACCINATION).items() if k != "snapshot"}
    before = orjson.dumps(sd)
    core_before = orjson.dumps(package_set.resolve(CORE + "Immunization"))
    result, _ = generate_snapshot(sd, package_set.resolve)
    result["snapshot"]["element"][0]["short"] = "changed"
    assert orjson.dumps(sd) == before
    assert orjson.dumps(package_set.resolve(CORE + "Immunization")) == core_before
    assert "snapshot" not in sd


def test_the_logical_model_without_snapshot_gets_one(package_set: PackageSet) -> None:
    url = "https://www.ehealth.fgov.be/standards/fhir/medication/StructureDefinition/be-model-medication-dispense"
    sd = package_set.resolve(url)
    assert "snapshot" not in sd
    result, problems = generate_snapshot(sd, package_set.resolve)
    elements = result["snapshot"]["element"]
    assert problems == []
    assert [e["id"] for e in elements[:3]] == [
        "BeModelMedicationDispense",
        "BeModelMedicationDispense.id",  # inherited from Element
        "BeModelMedicationDispense.extension",
    ]
    assert len(elements) == 2 + len(sd["differential"]["element"])
    dispenser = next(e for e in elements if e["id"] == "BeModelMedicationDispense.dispenser.organization")
    assert (dispenser["min"], dispenser["max"], codes(dispenser)) == (1, "1", ["Reference"])
    assert dispenser["base"]["path"] == "BeModelMedicationDispense.dispenser.organization"


def test_be_vaccination_is_generated_quickly(package_set: PackageSet) -> None:
    sd = {k: v for k, v in package_set.resolve(BE_VACCINATION).items() if k != "snapshot"}
    generate_snapshot(sd, package_set.resolve)  # the definitions it needs are read once
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        generate_snapshot(sd, package_set.resolve)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.05, timings


# -- the regenerated be-vaccination validates as the shipped one ---------------------------------------


def _broken_variants(resource: dict) -> list[dict]:
    """The example itself and a few broken copies (so that the comparison sees errors too)."""
    no_recorder = copy.deepcopy(resource)
    no_recorder["extension"] = [e for e in no_recorder.get("extension", []) if e.get("url") != RECORDER]
    lot = copy.deepcopy(resource)
    lot["lotNumber"] = "A123"  # max 0 in be-vaccination
    two_performers = copy.deepcopy(resource)
    two_performers["performer"] = (resource.get("performer") or [{"actor": {"display": "x"}}]) * 2
    bad_status = copy.deepcopy(resource)
    bad_status["status"] = "done"
    return [resource, no_recorder, lot, two_performers, bad_status]


def test_the_regenerated_be_vaccination_validates_the_examples_as_the_shipped_one(
    package_set: PackageSet, tmp_path: Path
) -> None:
    shipped_sd = package_set.resolve(BE_VACCINATION)
    generated, problems = generate_snapshot(
        {k: v for k, v in shipped_sd.items() if k != "snapshot"}, package_set.resolve
    )
    assert problems == []
    compile_structure_definition(generated)  # the validator's compiler takes it
    path = tmp_path / "StructureDefinition-be-vaccination.json"
    path.write_text(json.dumps(generated))
    regenerated = PackageSet(package_set.packages)
    regenerated.add_resource_file(path)
    assert regenerated.resolve(BE_VACCINATION)["snapshot"] == generated["snapshot"]

    examples = [package_set.read(e) for e in package_set.examples()]
    with_shipped = Validator(package_set, resources=examples)
    with_generated = Validator(regenerated, resources=examples)
    immunizations = [
        e
        for e in package_set.examples()
        if e.resource_type == "Immunization"
        and e.package is not None
        and e.package.id == "hl7.fhir.be.vaccination"
    ]
    assert len(immunizations) == 35
    compared = errors_seen = 0
    mismatches = {}
    for entry in immunizations:
        for number, resource in enumerate(_broken_variants(package_set.read(entry))):
            expected = with_shipped.validate(resource, BE_VACCINATION)
            actual = with_generated.validate(resource, BE_VACCINATION)
            key = [(i.severity, i.expression, i.rule, i.message) for i in expected.issues]
            if key != [(i.severity, i.expression, i.rule, i.message) for i in actual.issues]:
                mismatches[f"{entry.id}#{number}"] = (key, actual.issues)
            if number == 0:
                assert expected.errors() == [], entry.id  # the examples themselves are valid
            compared += 1
            errors_seen += len(expected.errors())
    assert mismatches == {}
    assert compared == 35 * 5 and errors_seen >= 35 * 4


# -- the rules, on hand-made differentials ----------------------------------------------------------


def test_cardinality_is_narrowed(package_set: PackageSet) -> None:
    sd = derive(
        "Patient", [el("Patient.gender", min=1), el("Patient.name", max="2"), el("Patient.link", max="0")]
    )
    elements, _, problems = generate(package_set, sd)
    assert problems == []
    assert (elements["Patient.gender"]["min"], elements["Patient.gender"]["max"]) == (1, "1")
    assert (elements["Patient.name"]["min"], elements["Patient.name"]["max"]) == (0, "2")
    assert elements["Patient.link"]["max"] == "0"
    assert elements["Patient.gender"]["base"] == {"path": "Patient.gender", "min": 0, "max": "1"}


def test_a_widened_cardinality_is_a_problem_and_the_base_cardinality_stays(package_set: PackageSet) -> None:
    sd = derive(
        "Immunization",
        [
            el("Immunization.status", min=0),
            el("Immunization.recorded", max="*"),
            el("Immunization.note", min=2, max="1"),
        ],
    )
    elements, _, problems = generate(package_set, sd)
    assert elements["Immunization.status"]["min"] == 1
    assert elements["Immunization.recorded"]["max"] == "1"
    assert problems == [
        "Immunization.status: min 0 widens the base's min 1",
        "Immunization.recorded: max * widens the base's max 1",
        "Immunization.note: min 2 is above max 1",
    ]


def test_types_are_narrowed_with_profiles_and_target_profiles(package_set: PackageSet) -> None:
    sd = derive(
        "Observation",
        [
            el(
                "Observation.value[x]",
                type=[{"code": "Quantity", "profile": [CORE + "SimpleQuantity"]}, {"code": "string"}],
            ),
            el("Observation.subject", type=[{"code": "Reference", "targetProfile": [BE_PATIENT]}]),
            el("Observation.hasMember", type=[{"code": "Reference"}]),  # keeps the base's targets
        ],
    )
    elements, _, problems = generate(package_set, sd)
    assert problems == []
    assert elements["Observation.value[x]"]["type"] == [
        {"code": "Quantity", "profile": [CORE + "SimpleQuantity"]},
        {"code": "string"},
    ]
    assert elements["Observation.subject"]["type"] == [{"code": "Reference", "targetProfile": [BE_PATIENT]}]
    assert elements["Observation.hasMember"]["type"][0]["targetProfile"] == [
        CORE + "Observation",
        CORE + "QuestionnaireResponse",
        CORE + "MolecularSequence",
    ]


def test_a_type_may_be_a_specialisation_of_the_base_type(package_set: PackageSet) -> None:
    sd = derive("Bundle", [el("Bundle.entry.resource", type=[{"code": "Patient"}])])
    elements, _, problems = generate(package_set, sd)
    assert problems == []
    assert codes(elements["Bundle.entry.resource"]) == ["Patient"]


def test_a_type_the_base_does_not_allow_is_a_problem(package_set: PackageSet) -> None:
    sd = derive(
        "Observation",
        [
            el("Observation.value[x]", type=[{"code": "Attachment"}, {"code": "string"}]),
            el("Observation.effective[x]", type=[{"code": "Attachment"}]),
            el("Observation.subject", type=[{"code": "Reference", "targetProfile": [CORE + "Practitioner"]}]),
        ],
    )
    elements, _, problems = generate(package_set, sd)
    assert codes(elements["Observation.value[x]"]) == ["string"]
    assert codes(elements["Observation.effective[x]"]) == ["dateTime", "Period", "Timing", "instant"]
    assert problems == [
        "Observation.value[x]: type Attachment is not in the base's types (CodeableConcept, Period, Quantity, "
        "Range, Ratio, SampledData, boolean, dateTime, integer, string, time)",
        "Observation.effective[x]: type Attachment is not in the base's types (Period, Timing, dateTime, instant)",
        f"Observation.subject: targetProfile {CORE}Practitioner of type Reference does not derive from the "
        f"base's {CORE}Patient, {CORE}Group, {CORE}Device, {CORE}Location",
    ]


def test_fixed_and_pattern_values(package_set: PackageSet) -> None:
    concept = {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]}
    sd = derive(
        "Observation",
        [
            el("Observation.code", patternCodeableConcept=concept),
            el("Observation.status", fixedCode="final"),
            el("Observation.identifier.system", fixedUri="urn:ietf:rfc:3986"),
        ],
    )
    elements, _, problems = generate(package_set, sd)
    assert problems == []
    assert elements["Observation.code"]["patternCodeableConcept"] == concept
    assert elements["Observation.status"]["fixedCode"] == "final"
    assert elements["Observation.identifier.system"]["fixedUri"] == "urn:ietf:rfc:3986"

    narrower = {"coding": [{"system": "http://loinc.org", "code": "1234-5", "display": "x"}]}
    child = derive(
        EXAMPLE + "Test",
        [
            el("Observation.code", patternCodeableConcept=narrower),  # fits the base's pattern
            el("Observation.status", fixedCode="amended"),  # changes a fixed value
            el("Observation.identifier.system", patternUri="urn:ietf:rfc:3986"),  # restates one
            el("Observation.category", patternCodeableConcept={"text": "a"}),
        ],
        "Child",
    )
    elements, _, problems = generate(package_set, child, sd)
    assert elements["Observation.code"]["patternCodeableConcept"] == narrower
    assert elements["Observation.status"]["fixedCode"] == "final"
    assert elements["Observation.identifier.system"]["fixedUri"] == "urn:ietf:rfc:3986"
    assert "patternUri" not in elements["Observation.identifier.system"]
    assert elements["Observation.category"]["patternCodeableConcept"] == {"text": "a"}
    assert problems == ["Observation.status: fixedCode changes the base's fixed value (fixedCode)"]

    wrong = derive(
        EXAMPLE + "Test", [el("Observation.code", patternCodeableConcept={"text": "other"})], "Wrong"
    )
    elements, _, problems = generate(package_set, wrong, sd)
    assert elements["Observation.code"]["patternCodeableConcept"] == concept
    assert problems == [
        "Observation.code: patternCodeableConcept does not conform to the base's patternCodeableConcept"
    ]


def test_bindings_may_only_tighten(package_set: PackageSet) -> None:
    sd = derive(
        "Patient",
        [
            el("Patient.language", binding={"strength": "required", "valueSet": VS + "my-languages"}),
            el("Patient.maritalStatus", binding={"strength": "required"}),
            el("Patient.gender", binding={"strength": "example", "valueSet": VS + "other"}),
            el("Patient.contact.relationship", binding={"strength": "preferred", "valueSet": VS + "x"}),
        ],
    )
    elements, _, problems = generate(package_set, sd)
    assert elements["Patient.language"]["binding"]["strength"] == "required"
    assert elements["Patient.language"]["binding"]["valueSet"] == VS + "my-languages"
    assert "description" not in elements["Patient.language"]["binding"]  # it described the old value set
    assert elements["Patient.maritalStatus"]["binding"]["strength"] == "required"
    assert elements["Patient.maritalStatus"]["binding"]["valueSet"] == VS + "marital-status"
    assert elements["Patient.gender"]["binding"]["strength"] == "required"
    assert elements["Patient.gender"]["binding"]["valueSet"] == VS + "administrative-gender|4.0.1"
    assert problems == [
        "Patient.gender: binding strength example loosens the base's required",
        "Patient.contact.relationship: binding strength preferred loosens the base's extensible",
    ]


def test_constraints_are_added_to_the_inherited_ones_with_the_profile_as_source(
    package_set: PackageSet,
) -> None:
    added = {"key": "test-1", "severity": "error", "human": "a name", "expression": "name.exists()"}
    sd = derive(
        "Patient",
        [
            el("Patient", constraint=[added]),
            el(
                "Patient.contact",
                constraint=[{"key": "pat-1", "severity": "error", "human": "x", "expression": "true"}],
            ),
            el("Patient.name", constraint=[{"severity": "error", "human": "no key"}]),
        ],
    )
    elements, _, problems = generate(package_set, sd)
    root = elements["Patient"]["constraint"]
    assert [c["key"] for c in root] == ["dom-2", "dom-3", "dom-4", "dom-5", "dom-6", "test-1"]
    assert root[-1]["source"] == EXAMPLE + "Test"
    assert root[0]["source"] == CORE + "DomainResource"
    contact = {c["key"]: c for c in elements["Patient.contact"]["constraint"]}
    assert contact["pat-1"]["expression"] != "true"
    assert contact["pat-1"]["source"] == CORE + "Patient"  # an inherited constraint names its definition
    assert problems == [
        "Patient.contact: constraint pat-1 redefines an inherited constraint; the inherited one was kept",
        "Patient.name: a constraint without a key was ignored",
    ]


def test_documentation_flags_and_max_length_are_merged(package_set: PackageSet) -> None:
    sd = derive(
        "Patient",
        [
            el("Patient.name", short="The name", definition="Def", comment="Com", mustSupport=True),
            el("Patient.active", isModifier=False),
            el("Patient.name.family", maxLength=30),
        ],
    )
    elements, _, problems = generate(package_set, sd)
    name = elements["Patient.name"]
    assert (name["short"], name["definition"], name["comment"], name["mustSupport"]) == (
        "The name",
        "Def",
        "Com",
        True,
    )
    assert name["base"] == {"path": "Patient.name", "min": 0, "max": "*"}
    assert elements["Patient.active"]["isModifier"] is True
    assert elements["Patient.name.family"]["maxLength"] == 30
    assert problems == ["Patient.active: a profile cannot make a modifier element a non-modifier"]

    child = derive(EXAMPLE + "Test", [el("Patient.name.family", maxLength=40)], "Child")
    elements, _, problems = generate(package_set, child, sd)
    assert elements["Patient.name.family"]["maxLength"] == 30
    assert problems == [  # a base's own problems are reported too
        f"(generating the snapshot of {EXAMPLE}Test) Patient.active: a profile cannot make a modifier element "
        "a non-modifier",
        "Patient.name.family: maxLength 40 is above the base's 30",
    ]


def test_elements_below_the_base_depth_are_unrolled_from_the_type(package_set: PackageSet) -> None:
    sd = derive(
        "Patient", [el("Patient.name.family", min=1), el("Patient.identifier.type.coding.code", min=1)]
    )
    elements, ids, problems = generate(package_set, sd)
    assert problems == []
    start = ids.index("Patient.name")
    assert ids[start : start + 10] == [
        "Patient.name",
        "Patient.name.id",
        "Patient.name.extension",
        "Patient.name.use",
        "Patient.name.text",
        "Patient.name.family",
        "Patient.name.given",
        "Patient.name.prefix",
        "Patient.name.suffix",
        "Patient.name.period",
    ]
    family = elements["Patient.name.family"]
    assert (family["path"], family["min"], family["base"]["path"]) == (
        "Patient.name.family",
        1,
        "HumanName.family",
    )
    assert elements["Patient.identifier.type.coding.code"]["min"] == 1
    assert "Patient.identifier.type.coding.system" in elements
    assert "Patient.telecom.system" not in elements  # only what the differential goes into
    # the same as the tests' own profile builder writes it
    expected = Profile(package_set, "Patient", "Test").set("Patient.name.family", min=1)
    expected.set("Patient.identifier.type.coding.code", min=1)
    assert differences(expected.build()["snapshot"]["element"], list(elements.values())) == []


def test_a_primitive_is_unrolled_for_its_extensions(package_set: PackageSet) -> None:
    sd = derive(
        "Patient",
        [
            el(
                "Patient.birthDate.extension:time",
                sliceName="time",
                type=[{"code": "Extension", "profile": [CORE + "patient-birthTime"]}],
            )
        ],
    )
    elements, ids, problems = generate(package_set, sd)
    assert problems == []
    assert ids[ids.index("Patient.birthDate") :][:5] == [
        "Patient.birthDate",
        "Patient.birthDate.id",
        "Patient.birthDate.extension",
        "Patient.birthDate.extension:time",
        "Patient.birthDate.value",
    ]
    assert elements["Patient.birthDate.extension"]["slicing"]["discriminator"] == [
        {"type": "value", "path": "url"}
    ]


def test_a_content_reference_is_kept_and_unrolled_when_the_differential_goes_into_it(
    package_set: PackageSet,
) -> None:
    sd = derive(
        "Questionnaire",
        [el("Questionnaire.item.item", min=1), el("Questionnaire.item.item.linkId", maxLength=10)],
    )
    elements, ids, problems = generate(package_set, sd)
    assert problems == []
    nested = elements["Questionnaire.item.item"]
    assert (nested["contentReference"], nested["min"]) == ("#Questionnaire.item", 1)
    linked = elements["Questionnaire.item.item.linkId"]
    assert (linked["path"], linked["maxLength"], linked["base"]["path"]) == (
        "Questionnaire.item.item.linkId",
        10,
        "Questionnaire.item.linkId",
    )
    assert "Questionnaire.item.item.item" in elements  # the whole item structure, one level down
    assert "Questionnaire.item.item.enableWhen.question" in elements
    assert ids.index("Questionnaire.item.item.linkId") > ids.index("Questionnaire.item.item")


def test_slices_copy_the_sliced_element_and_its_children_then_apply_the_differential(
    package_set: PackageSet,
) -> None:
    slicing = {"discriminator": [{"type": "value", "path": "system"}], "rules": "open"}
    sd = derive(
        "Patient",
        [
            el("Patient.identifier", slicing=slicing, mustSupport=True),
            el("Patient.identifier.use", min=1),
            el("Patient.identifier:ssin", sliceName="ssin", max="1"),
            el("Patient.identifier:ssin.system", min=1, fixedUri="urn:ssin"),
            el("Patient.identifier:mrn", sliceName="mrn", min=1, max="1"),
            el("Patient.name", min=1),
        ],
    )
    elements, ids, problems = generate(package_set, sd)
    assert problems == []
    start = ids.index("Patient.identifier")
    assert ids[start : start + 27] == [
        "Patient.identifier",
        *(
            f"Patient.identifier.{c}"
            for c in ("id", "extension", "use", "type", "system", "value", "period", "assigner")
        ),
        "Patient.identifier:ssin",
        *(
            f"Patient.identifier:ssin.{c}"
            for c in ("id", "extension", "use", "type", "system", "value", "period", "assigner")
        ),
        "Patient.identifier:mrn",
        *(
            f"Patient.identifier:mrn.{c}"
            for c in ("id", "extension", "use", "type", "system", "value", "period", "assigner")
        ),
    ]
    ssin = elements["Patient.identifier:ssin"]
    assert (ssin["sliceName"], ssin["min"], ssin["max"], ssin["path"]) == (
        "ssin",
        0,
        "1",
        "Patient.identifier",
    )
    assert "slicing" not in ssin and "mustSupport" not in ssin
    assert elements["Patient.identifier:ssin.use"]["min"] == 1  # copied from the sliced element's children
    assert elements["Patient.identifier:ssin.system"]["fixedUri"] == "urn:ssin"
    assert "fixedUri" not in elements["Patient.identifier.system"]
    assert elements["Patient.identifier:mrn"]["min"] == 1
    assert elements["Patient.identifier"]["slicing"] == slicing


def test_a_new_slice_goes_after_the_inherited_ones(package_set: PackageSet) -> None:
    slicing = {"discriminator": [{"type": "value", "path": "system"}], "rules": "open"}
    base = derive(
        "Patient",
        [
            el("Patient.identifier", slicing=slicing),
            el("Patient.identifier:a", sliceName="a", max="1"),
            el("Patient.identifier:a.system", fixedUri="urn:a"),
        ],
        "Base",
    )
    child = derive(
        EXAMPLE + "Base",
        [
            el("Patient.identifier:b", sliceName="b", min=1, max="1"),
            el("Patient.identifier:a", min=1),
            el("Patient.identifier:a.value", min=1),
        ],
        "Child",
    )
    elements, ids, problems = generate(package_set, child, base)
    assert problems == []
    slices = [i for i in ids if i.startswith("Patient.identifier:") and i.count(".") == 1]
    assert slices == ["Patient.identifier:a", "Patient.identifier:b"]
    assert (elements["Patient.identifier:a"]["min"], elements["Patient.identifier:a"]["max"]) == (1, "1")
    assert elements["Patient.identifier:a.system"]["fixedUri"] == "urn:a"
    assert elements["Patient.identifier:a.value"]["min"] == 1
    assert "Patient.identifier:b.system" not in elements  # the base's head was never unrolled


def test_a_re_slice(package_set: PackageSet) -> None:
    slicing = {"discriminator": [{"type": "value", "path": "system"}], "rules": "open"}
    base = derive(
        "Patient",
        [
            el("Patient.identifier", slicing=slicing),
            el("Patient.identifier:a", sliceName="a", slicing=slicing),
        ],
        "Base",
    )
    child = derive(
        EXAMPLE + "Base",
        [
            el("Patient.identifier:a/x", sliceName="a/x", max="1"),
            el("Patient.identifier:a/x.system", fixedUri="urn:x"),
        ],
        "Child",
    )
    elements, ids, problems = generate(package_set, child, base)
    assert problems == []
    assert (
        ids.index("Patient.identifier:a")
        < ids.index("Patient.identifier:a/x")
        < ids.index("Patient.identifier:a/x.system")
    )
    assert elements["Patient.identifier:a/x.system"]["fixedUri"] == "urn:x"


def test_the_renamed_form_of_a_choice_constrains_the_choice_element(package_set: PackageSet) -> None:
    sd = derive(
        "Observation",
        [
            {"id": "Observation.valueQuantity", "path": "Observation.valueQuantity", "min": 1},
            {"id": "Observation.valueQuantity.unit", "path": "Observation.valueQuantity.unit", "min": 1},
        ],
    )
    elements, _, problems = generate(package_set, sd)
    assert problems == []
    value = elements["Observation.value[x]"]
    assert (value["min"], codes(value)) == (1, ["Quantity"])
    assert elements["Observation.value[x].unit"]["min"] == 1
    assert elements["Observation.value[x].unit"]["path"] == "Observation.value[x].unit"
    assert "Observation.valueQuantity" not in elements


def test_type_slices_of_a_choice_element(package_set: PackageSet) -> None:
    sd = derive(
        "Observation",
        [
            el("Observation.value[x]:valueQuantity", sliceName="valueQuantity", min=0, max="1"),
            el("Observation.value[x]:valueQuantity.unit", min=1),
            el(
                "Observation.value[x]:valueString",
                sliceName="valueString",
                type=[{"code": "string"}],
                maxLength=5,
            ),
        ],
    )
    elements, ids, problems = generate(package_set, sd)
    assert problems == []
    head = elements["Observation.value[x]"]
    assert head["slicing"] == {
        "discriminator": [{"type": "type", "path": "$this"}],
        "ordered": False,
        "rules": "open",
    }
    assert len(codes(head)) == 11
    assert codes(elements["Observation.value[x]:valueQuantity"]) == ["Quantity"]
    assert elements["Observation.value[x]:valueQuantity.unit"]["min"] == 1
    assert codes(elements["Observation.value[x]:valueString"]) == ["string"]
    assert ids.index("Observation.value[x]:valueQuantity.unit") < ids.index(
        "Observation.value[x]:valueString"
    )

    wrong = derive("Observation", [el("Observation.value[x]:valueAttachment", sliceName="valueAttachment")])
    _, _, problems = generate(package_set, wrong)
    assert problems == [
        "differential element Observation.value[x]:valueAttachment: valueAttachment names no type of "
        "Observation.value[x]; a choice element can only be sliced by type"
    ]


def test_an_extension_value_type_slice_goes_below_the_base_depth(package_set: PackageSet) -> None:
    sd = derive(
        "Extension",
        [
            el("Extension.url", fixedUri=EXAMPLE + "Test"),
            el("Extension.value[x]", type=[{"code": "CodeableConcept"}]),
            el("Extension.value[x]:valueCodeableConcept", sliceName="valueCodeableConcept"),
            el("Extension.value[x]:valueCodeableConcept.coding", min=1, max="1"),
        ],
        kind="complex-type",
    )
    elements, ids, problems = generate(package_set, sd)
    assert problems == []
    assert ids[-6:] == [
        "Extension.value[x]",
        "Extension.value[x]:valueCodeableConcept",
        "Extension.value[x]:valueCodeableConcept.id",
        "Extension.value[x]:valueCodeableConcept.extension",
        "Extension.value[x]:valueCodeableConcept.coding",
        "Extension.value[x]:valueCodeableConcept.text",
    ]
    coding = elements["Extension.value[x]:valueCodeableConcept.coding"]
    assert (coding["path"], coding["min"], coding["max"]) == ("Extension.value[x].coding", 1, "1")


def test_extension_slices_keep_their_profile_and_are_unrolled_only_when_the_differential_goes_into_them(
    package_set: PackageSet,
) -> None:
    nationality = {"code": "Extension", "profile": [CORE + "patient-nationality"]}
    sd = derive(
        "Patient",
        [
            el(
                "Patient.extension:birthTime",
                sliceName="birthTime",
                max="1",
                type=[{"code": "Extension", "profile": [CORE + "patient-birthPlace"]}],
            ),
            el("Patient.extension:nationality", sliceName="nationality", type=[nationality]),
            el("Patient.extension:nationality.extension:code", min=1),
            el(
                "Patient.extension:nationality.extension:code.value[x]",
                binding={"strength": "required", "valueSet": VS + "c"},
            ),
        ],
    )
    elements, ids, problems = generate(package_set, sd)
    assert problems == []
    assert elements["Patient.extension"]["slicing"]["rules"] == "open"  # the default extension slicing
    birth_time = elements["Patient.extension:birthTime"]
    assert birth_time["type"] == [{"code": "Extension", "profile": [CORE + "patient-birthPlace"]}]
    assert not [i for i in ids if i.startswith("Patient.extension:birthTime.")]
    assert elements["Patient.extension:nationality.extension:code"]["min"] == 1
    assert (
        elements["Patient.extension:nationality.extension:code.url"]["fixedUri"] == "code"
    )  # from the profile
    assert "Patient.extension:nationality.extension:period" in elements
    value = elements["Patient.extension:nationality.extension:code.value[x]"]
    assert value["binding"] == {"strength": "required", "valueSet": VS + "c"}
    assert ids.index("Patient.extension:nationality.extension:code.value[x]") < ids.index(
        "Patient.modifierExtension"
    )


def test_a_differential_without_ids_matches_on_path_and_slice_name(package_set: PackageSet) -> None:
    slicing = {"discriminator": [{"type": "value", "path": "system"}], "rules": "open"}
    sd = derive(
        "Patient",
        [
            {"path": "Patient.identifier", "slicing": slicing},
            {"path": "Patient.identifier", "sliceName": "ssin", "max": "1"},
            {"path": "Patient.identifier.system", "fixedUri": "urn:ssin"},
            {"path": "Patient.identifier", "sliceName": "mrn"},
            {"path": "Patient.identifier.system", "fixedUri": "urn:mrn"},
            {"path": "Patient.name.family", "min": 1},
        ],
    )
    elements, _, problems = generate(package_set, sd)
    assert problems == []
    assert elements["Patient.identifier:ssin.system"]["fixedUri"] == "urn:ssin"
    assert elements["Patient.identifier:mrn.system"]["fixedUri"] == "urn:mrn"
    assert elements["Patient.name.family"]["min"] == 1


def test_a_base_that_is_itself_differential_only_is_generated_first(package_set: PackageSet) -> None:
    base = derive("Patient", [el("Patient.name.family", min=1), el("Patient.gender", min=1)], "Base")
    middle = derive(EXAMPLE + "Base", [el("Patient.name.given", min=1)], "Middle")
    child = derive(EXAMPLE + "Middle", [el("Patient.name", max="1")], "Child")
    elements, _, problems = generate(package_set, child, base, middle)
    assert problems == []
    assert elements["Patient.name.family"]["min"] == 1
    assert elements["Patient.name.given"]["min"] == 1
    assert elements["Patient.gender"]["min"] == 1
    assert elements["Patient.name"]["max"] == "1"


def test_a_type_profile_without_snapshot_is_generated_to_unroll_it(package_set: PackageSet) -> None:
    extension = derive(
        "Extension",
        [el("Extension.url", fixedUri=EXAMPLE + "Ext"), el("Extension.value[x]", type=[{"code": "Coding"}])],
        "Ext",
        kind="complex-type",
    )
    sd = derive(
        "Patient",
        [
            el(
                "Patient.extension:ext",
                sliceName="ext",
                type=[{"code": "Extension", "profile": [EXAMPLE + "Ext"]}],
            ),
            el("Patient.extension:ext.value[x].code", min=1),
        ],
    )
    elements, _, problems = generate(package_set, sd, extension)
    assert problems == []
    assert elements["Patient.extension:ext.url"]["fixedUri"] == EXAMPLE + "Ext"
    assert codes(elements["Patient.extension:ext.value[x]"]) == ["Coding"]
    assert elements["Patient.extension:ext.value[x].code"]["min"] == 1


def test_a_profile_that_uses_itself_does_not_loop(package_set: PackageSet) -> None:
    own = {"code": "Extension", "profile": [EXAMPLE + "Self"]}
    sd = derive(
        "Extension",
        [
            el("Extension.extension:again", sliceName="again", type=[own]),
            el("Extension.extension:again.url", fixedUri="again"),
        ],
        "Self",
        kind="complex-type",
    )
    elements, _, problems = generate(package_set, sd)
    assert elements["Extension.extension:again.url"]["fixedUri"] == "again"  # unrolled from Extension
    assert len(problems) == 1 and "is unknown or has no snapshot" in problems[0]


def test_problems_for_elements_that_match_nothing(package_set: PackageSet) -> None:
    sd = derive(
        "Patient",
        [
            el("Patient.birthDat", min=1),
            el("Patient.name.nickname", min=1),
            el("Observation.status", min=1),
            el("Patient.identifier:ssin.system", min=1),
            el("Patient.gender:male", sliceName="male"),
            el("Patient.gender", min=1),
            el("Patient.name:official", sliceName="official", max="1"),
        ],
    )
    elements, _, problems = generate(package_set, sd)
    assert problems == [
        "differential element Patient.birthDat matches nothing in the base snapshot",
        "differential element Patient.name.nickname matches nothing in the base snapshot",
        "differential element Observation.status matches nothing in the base snapshot (the snapshot's root is Patient)",
        "differential element Patient.identifier:ssin.system refers to the slice ssin of Patient.identifier "
        "before the differential defines it",
        "differential element Patient.gender:male slices Patient.gender, which cannot repeat and is not sliced; "
        "the slice's constraints were applied to the element itself",
        "differential element Patient.name:official defines a slice of Patient.name, which has no slicing",
    ]
    assert elements["Patient.gender"]["min"] == 1  # the rest is still applied
    assert "sliceName" not in elements["Patient.gender"]


def test_slicing_may_not_loosen(package_set: PackageSet) -> None:
    closed = {"discriminator": [{"type": "value", "path": "system"}], "rules": "closed", "ordered": True}
    base = derive("Patient", [el("Patient.identifier", slicing=closed)], "Base")
    child = derive(
        EXAMPLE + "Base",
        [
            el(
                "Patient.identifier",
                slicing={
                    "discriminator": [{"type": "value", "path": "use"}],
                    "rules": "open",
                    "ordered": False,
                },
            )
        ],
        "Child",
    )
    elements, _, problems = generate(package_set, child, base)
    assert elements["Patient.identifier"]["slicing"] == closed
    assert problems == [
        "Patient.identifier: slicing changes the base's discriminator; the base's was kept",
        "Patient.identifier: slicing rules open loosen the base's closed",
        "Patient.identifier: slicing cannot stop being ordered",
    ]


def test_bad_input_is_reported_not_raised(package_set: PackageSet) -> None:
    sd = derive(
        "Patient",
        [
            el(
                "Patient.gender", min="one", max=3, type="code", binding="required", slicing=[], constraint={}
            ),
            "not an element",
        ],
    )
    elements, _, problems = generate(package_set, sd)
    assert elements["Patient.gender"]["min"] == 0 and elements["Patient.gender"]["max"] == "1"
    assert problems == [
        "differential elements that are not objects were ignored",
        "Patient.gender: min 'one' is not a non-negative integer",
        "Patient.gender: max 3 is neither a non-negative integer nor *",
        "Patient.gender: type must be a list of types with a code",
        "Patient.gender: binding must be an object",
        "Patient.gender: slicing must be an object",
        "Patient.gender: constraint must be a list",
    ]


def test_an_unknown_base_is_a_configuration_error_naming_it(package_set: PackageSet) -> None:
    sd = derive(EXAMPLE + "Missing", [el("Patient.gender", min=1)])
    with pytest.raises(ConfigurationError, match=f"its base definition {EXAMPLE}Missing cannot be found"):
        generate_snapshot(sd, package_set.resolve)
    without = derive("Patient", [])
    del without["baseDefinition"]
    with pytest.raises(ConfigurationError, match="has no baseDefinition"):
        generate_snapshot(without, package_set.resolve)


def test_a_base_definition_loop_is_a_configuration_error(package_set: PackageSet) -> None:
    a = derive(EXAMPLE + "B", [el("Patient.gender", min=1)], "A")
    b = derive(EXAMPLE + "A", [el("Patient.name", min=1)], "B")
    with pytest.raises(ConfigurationError, match="baseDefinition loop"):
        generate_snapshot(a, resolver(package_set, a, b))


def test_ensure_snapshot_keeps_a_shipped_snapshot_and_generates_a_missing_one(
    package_set: PackageSet,
) -> None:
    shipped = package_set.resolve(BE_VACCINATION)
    assert ensure_snapshot(shipped, package_set.resolve) is shipped
    sd = derive("Patient", [el("Patient.birthDat", min=1)])
    problems: list[str] = []
    result = ensure_snapshot(sd, package_set.resolve, problems)
    assert result["snapshot"]["element"][0]["id"] == "Patient"
    assert problems == ["differential element Patient.birthDat matches nothing in the base snapshot"]
    plan = compile_structure_definition(result)
    assert plan.url == EXAMPLE + "Test" and "gender" in plan.root.children
