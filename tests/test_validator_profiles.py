"""The validator's generic profile mechanisms, each proven on a small hand-made profile.

The BeVaccination profiles use few of them, so every mechanism gets its own profile derived from an R4
core snapshot (``tests/profiles.py``) and a check: a resource that passes (no error, and not the
expected issue) and one that fails with exactly the expected (severity, expression, rule) and no other
error. Expressions follow the HL7 validator: ``Patient.identifier[1]``, choices as
``Observation.value.ofType(Quantity)``, a missing element reported on its parent.

Where the validator is wrong the check still asserts the correct FHIR behaviour and is marked
``xfail(strict=True)`` with a one-line diagnosis.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conformance.fhir.definitions import PackageSet
from conformance.fhir.outcome import Outcome
from conformance.fhir.validator import Validator
from tests.profiles import CORE, EXAMPLE, Profile, extension_definition, register

NS = "http://example.org/fhir/NamingSystem/"
SSIN, MRN, OTHER = NS + "ssin", NS + "mrn", NS + "other"
VS = "http://hl7.org/fhir/ValueSet/"
MARITAL = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v2-0131"
SCT, LOINC, UCUM = "http://snomed.info/sct", "http://loinc.org", "http://unitsofmeasure.org"
EN_QUALIFIER = CORE + "iso21090-EN-qualifier"
BIRTH_TIME = CORE + "patient-birthTime"
UUID_A = "urn:uuid:8f1c4e56-7e0b-4d0a-9d5b-3c6f0b9c1a11"
UUID_B = "urn:uuid:8f1c4e56-7e0b-4d0a-9d5b-3c6f0b9c1a12"
UUID_C = "urn:uuid:8f1c4e56-7e0b-4d0a-9d5b-3c6f0b9c1a13"


def url(name: str) -> str:
    return EXAMPLE + name


# -- the profiles -------------------------------------------------------------------------------


def definitions(packages: PackageSet) -> list[dict]:
    """Every StructureDefinition the checks use."""
    sds: list[Profile] = []

    def profile(base: str, name: str) -> Profile:
        p = Profile(packages, base, name)
        sds.append(p)
        return p

    # 1. slicing ---------------------------------------------------------------------------------
    for name, rules, ordered in (
        ("SliceValue", "open", False),
        ("SliceClosed", "closed", False),
        ("SliceOrdered", "open", True),
        ("SliceOpenAtEnd", "openAtEnd", False),
    ):
        p = profile("Patient", name).slicing(
            "Patient.identifier", ("value", "system"), rules=rules, ordered=ordered
        )
        p.slice("Patient.identifier", "ssin", 1, "1")
        p.set("Patient.identifier:ssin.system", min=1, fixedUri=SSIN)
        p.set("Patient.identifier:ssin.value", min=1)  # the slice narrows a child of its own
        p.slice("Patient.identifier", "mrn", 0, "1")
        p.set("Patient.identifier:mrn.system", min=1, fixedUri=MRN)

    p = profile("Patient", "SliceExists").slicing("Patient.identifier", ("exists", "period"))
    p.slice("Patient.identifier", "temporary", 0, "*")
    p.set("Patient.identifier:temporary.period", min=1)
    p.slice("Patient.identifier", "permanent", 1, "1")
    p.set("Patient.identifier:permanent.period", max="0")

    p = profile("Observation", "SlicePattern")
    p.slicing("Observation.category", ("pattern", "$this"))
    p.slice(
        "Observation.category",
        "vitals",
        1,
        "1",
        patternCodeableConcept={"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}]},
    )
    p.slicing("Observation.code.coding", ("pattern", "$this"))
    p.slice("Observation.code.coding", "loinc", 1, "1", patternCoding={"system": LOINC})

    p = profile("Observation", "SliceType")
    p.slicing("Observation.value[x]", ("type", "$this"), rules="closed")
    p.slice("Observation.value[x]", "valueQuantity", 0, "1", type=[{"code": "Quantity"}])
    p.set("Observation.value[x]:valueQuantity.system", min=1)
    p.slicing("Observation.effective[x]", ("type", "$this"))
    p.slice("Observation.effective[x]", "effectiveDateTime", 1, "1", type=[{"code": "dateTime"}])

    p = profile("Observation", "SliceComponent").slicing("Observation.component", ("pattern", "code"))
    for name, code in (("systolic", "8480-6"), ("diastolic", "8462-4")):
        p.slice("Observation.component", name, 1, "1")
        p.set(
            f"Observation.component:{name}.code",
            patternCodeableConcept={"coding": [{"system": LOINC, "code": code}]},
        )

    p = profile("Patient", "SliceResolve")
    p.slicing("Patient.generalPractitioner", ("type", "resolve()"), rules="closed")
    p.slice("Patient.generalPractitioner", "practitioner", 0, "1")
    p.types("Patient.generalPractitioner:practitioner", "Reference", targets=[CORE + "Practitioner"])
    p.slice("Patient.generalPractitioner", "organization", 0, "1")
    p.types("Patient.generalPractitioner:organization", "Reference", targets=[CORE + "Organization"])

    p = profile("Patient", "PatientWithBirthDate").set("Patient.birthDate", min=1)

    p = profile("Bundle", "SliceBundleType").slicing("Bundle.entry", ("type", "resource"), rules="closed")
    p.slice("Bundle.entry", "patient", 1, "1")
    p.types("Bundle.entry:patient.resource", "Patient")
    p.slice("Bundle.entry", "observation", 0, "*")
    p.types("Bundle.entry:observation.resource", "Observation")

    p = profile("Bundle", "SliceBundleProfile").slicing("Bundle.entry", ("profile", "resource"))
    p.slice("Bundle.entry", "born", 1, "1")
    p.types("Bundle.entry:born.resource", "Patient", profile=url("PatientWithBirthDate"))

    eye = extension_definition(packages, "eye-colour", value_types=("string", "CodeableConcept"))
    sds.append(eye)
    p = profile("Patient", "SliceExtension").slicing("Patient.extension", ("value", "url"))
    p.slice("Patient.extension", "eyeColour", 0, "1", unroll=False)
    p.types("Patient.extension:eyeColour", "Extension", profile=eye.url)

    # 2. fixed and pattern -----------------------------------------------------------------------
    p = profile("Patient", "FixedPattern")
    p.set("Patient.gender", fixedCode="female")
    p.set("Patient.active", patternBoolean=True)
    p.set("Patient.maritalStatus", fixedCodeableConcept={"coding": [{"system": MARITAL, "code": "M"}]})
    p.set("Patient.identifier", patternIdentifier={"system": MRN})
    p.set(
        "Patient.identifier.type",
        patternCodeableConcept={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203"}]},
    )
    p.set(
        "Patient.contact.relationship",
        patternCodeableConcept={"coding": [{"system": ROLE_CODE, "code": "C"}]},
    )
    p.set("Patient.contact.name.use", fixedCode="official")

    p = profile("Observation", "FixedPatternQuantity")
    p.types("Observation.value[x]", "Quantity")
    p.set("Observation.value[x]", patternQuantity={"system": UCUM, "code": "mg"})
    p.set("Observation.referenceRange.low", patternQuantity={"system": UCUM, "code": "mg"})
    p.set("Observation.referenceRange.high.unit", fixedString="mg")

    # 3. cardinality -----------------------------------------------------------------------------
    p = profile("Patient", "Cardinality")
    p.set("Patient.name", max="1")
    p.set("Patient.name.family", min=1)
    p.set("Patient.name.suffix", max="0")
    p.set("Patient.contact.name", min=1)
    p.set("Patient.contact.name.family", min=1)
    p.set("Patient.contact.gender", max="0")

    # 4. type profiles and restricted choices -----------------------------------------------------
    given = Profile(packages, "HumanName", "NameWithGiven").set("HumanName.given", min=1)
    sds.append(given)
    p = profile("Patient", "TypeProfile")
    p.types("Patient.name", "HumanName", profile=given.url)
    p.types("Patient.contact.name", "HumanName", profile=given.url)
    p.types("Patient.deceased[x]", "boolean")
    profile("Observation", "QuantityOnly").types("Observation.value[x]", "Quantity")
    profile("Observation", "SimpleValue").types(
        "Observation.value[x]", "Quantity", profile=CORE + "SimpleQuantity"
    )

    # 5. bindings --------------------------------------------------------------------------------
    for code_type in ("code", "Coding", "CodeableConcept"):
        valueset = VS + ("administrative-gender" if code_type == "code" else "marital-status")
        for strength in ("required", "extensible", "preferred", "example"):
            ext = extension_definition(packages, f"bound-{code_type}-{strength}", value_types=(code_type,))
            ext.binding("Extension.value[x]", strength, valueset)
            sds.append(ext)
    p = profile("Patient", "Bindings")
    p.binding("Patient.maritalStatus", "required", VS + "marital-status")
    p.binding("Patient.contact.relationship", "required", VS + "patient-contactrelationship")
    p = profile("Observation", "SnomedBinding").binding(
        "Observation.code", "required", VS + "clinical-findings"
    )

    # 6. extensions ------------------------------------------------------------------------------
    sds.append(
        extension_definition(
            packages,
            "lot",
            sub_extensions=(("lotNumber", ("string",), 1, "1"), ("expiry", ("date",), 0, "1")),
        )
    )
    sds.append(extension_definition(packages, "do-not-use", value_types=("boolean",), is_modifier=True))

    # 7. references ------------------------------------------------------------------------------
    p = profile("Observation", "SubjectWithBirthDate")
    p.types("Observation.subject", "Reference", targets=[url("PatientWithBirthDate")])
    p = profile("Observation", "SubjectPatient")
    p.types("Observation.subject", "Reference", targets=[CORE + "Patient"])

    # 8. contentReference ------------------------------------------------------------------------
    profile("Questionnaire", "ItemText").set("Questionnaire.item.text", min=1)

    # 10. invariants -----------------------------------------------------------------------------
    p = profile("Patient", "Invariants")
    p.invariant("Patient.name", "inv-name", "family.exists() or given.exists()")
    p.invariant("Patient", "inv-birth", "birthDate.exists()", severity="warning")
    p.invariant("Patient.birthDate", "inv-date", "$this >= @1900-01-01")
    p.invariant("Patient.contact.name", "inv-contact", "family.exists()")
    p.invariant("Patient.contact", "inv-resource", "%resource.name.exists()")
    profile("Patient", "BrokenInvariant").invariant("Patient", "inv-broken", "name.where(family = ")

    return [s.build() for s in sds]


@pytest.fixture(scope="module")
def local_packages(package_set: PackageSet, tmp_path_factory: pytest.TempPathFactory) -> PackageSet:
    folder: Path = tmp_path_factory.mktemp("profiles")
    return register(package_set, folder, definitions(package_set))


@pytest.fixture(scope="module")
def validator(local_packages: PackageSet) -> Validator:
    return Validator(local_packages)


# -- the checks ---------------------------------------------------------------------------------

Mutation = Callable[[dict], Any]
Expected = tuple[str, str, str] | None  # None: the failing resource has no error and no warning


@dataclass(frozen=True)
class Check:
    """A passing resource (``base``, then ``good``) and a failing one (``base``, then ``bad``)."""

    name: str
    profile: str | None
    base: Callable[[], dict]
    good: Mutation | None
    bad: Mutation
    expected: Expected
    xfail: str | None = None
    also: tuple[tuple[str, str, str], ...] = ()  # further errors the same defect rightly causes


def found(outcome: Outcome) -> list[tuple[str, str, str | None]]:
    return [(i.severity, i.expression, i.rule) for i in outcome.issues]


def shown(outcome: Outcome) -> str:
    return "\n".join(i.to_text() for i in outcome.issues)


def patient(**extra: Any) -> dict:
    return {"resourceType": "Patient", "id": "p1", **extra}


def observation(**extra: Any) -> dict:
    return {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "29463-7"}]},
        **extra,
    }


def sliced_patient() -> dict:
    return patient(identifier=[{"system": SSIN, "value": "1"}, {"system": MRN, "value": "2"}])


def add(key: str, *values: Any) -> Mutation:
    """Append to an array of the resource."""

    def mutate(r: dict) -> None:
        r.setdefault(key, []).extend(copy.deepcopy(list(values)))

    return mutate


def put(**values: Any) -> Mutation:
    def mutate(r: dict) -> None:
        r.update(copy.deepcopy(values))

    return mutate


def at(path: str, **values: Any) -> Mutation:
    """Update the object at a dotted path (numbers index arrays)."""

    def mutate(r: dict) -> None:
        node: Any = r
        for part in path.split("."):
            node = node[int(part)] if part.isdigit() else node[part]
        node.update(copy.deepcopy(values))

    return mutate


def drop(path: str) -> Mutation:
    def mutate(r: dict) -> None:
        *parents, last = path.split(".")
        node: Any = r
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        del node[int(last) if last.isdigit() else last]

    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(r: dict) -> None:
        for m in mutations:
            m(r)

    return mutate


# 1. slicing -------------------------------------------------------------------------------------


def patterned_observation() -> dict:
    return observation(
        category=[{"coding": [{"system": OBS_CATEGORY, "code": "vital-signs"}]}],
        code={"coding": [{"system": SCT, "code": "27113001"}, {"system": LOINC, "code": "29463-7"}]},
    )


def exists_patient() -> dict:
    return patient(identifier=[{"system": OTHER, "value": "1"}])


def bundle(*entries: tuple[str, dict], kind: str = "collection") -> Callable[[], dict]:
    def make() -> dict:
        return {
            "resourceType": "Bundle",
            "type": kind,
            "entry": [{"fullUrl": full_url, "resource": copy.deepcopy(r)} for full_url, r in entries],
        }

    return make


def entry(full_url: str, resource: dict) -> Mutation:
    def mutate(r: dict) -> None:
        r["entry"].append({"fullUrl": full_url, "resource": copy.deepcopy(resource)})

    return mutate


PERIOD = {"start": "2020-01-01"}
SLICING = [
    Check(
        "value discriminator: a matching slice, open slicing admits others",
        url("SliceValue"),
        sliced_patient,
        add("identifier", {"system": OTHER, "value": "3"}),
        drop("identifier.0"),
        ("error", "Patient", "slice-cardinality"),
    ),
    Check(
        "value discriminator: slice max",
        url("SliceValue"),
        sliced_patient,
        None,
        add("identifier", {"system": SSIN, "value": "4"}),
        ("error", "Patient", "slice-cardinality"),
    ),
    Check(
        "a slice's own constraint on a child (ssin.value 1..1)",
        url("SliceValue"),
        sliced_patient,
        None,
        drop("identifier.0.value"),
        ("error", "Patient.identifier[0]", "cardinality"),
    ),
    Check(
        "closed slicing: an element matching no slice",
        url("SliceClosed"),
        sliced_patient,
        None,
        add("identifier", {"system": OTHER, "value": "3"}),
        ("error", "Patient.identifier[2]", "slicing-closed"),
    ),
    Check(
        "ordered slicing: slices out of order",
        url("SliceOrdered"),
        sliced_patient,
        add("identifier", {"system": OTHER, "value": "3"}),
        lambda r: r["identifier"].reverse(),
        ("error", "Patient.identifier[1]", "slicing-order"),
    ),
    Check(
        "openAtEnd: unsliced elements only after the slices",
        url("SliceOpenAtEnd"),
        sliced_patient,
        add("identifier", {"system": OTHER, "value": "3"}),
        lambda r: r["identifier"].insert(1, {"system": OTHER, "value": "3"}),
        ("error", "Patient.identifier[2]", "slicing-order"),
    ),
    Check(
        "exists discriminator: the slice without period is required",
        url("SliceExists"),
        exists_patient,
        add("identifier", {"system": OTHER, "value": "2", "period": PERIOD}),
        at("identifier.0", period=PERIOD),
        ("error", "Patient", "slice-cardinality"),
    ),
    Check(
        "exists discriminator: slice max of the slice without period",
        url("SliceExists"),
        exists_patient,
        None,
        add("identifier", {"system": OTHER, "value": "2"}),
        ("error", "Patient", "slice-cardinality"),
    ),
    Check(
        "pattern discriminator on a CodeableConcept",
        url("SlicePattern"),
        patterned_observation,
        add("category", {"coding": [{"system": OBS_CATEGORY, "code": "laboratory"}]}),
        at("category.0.coding.0", code="laboratory"),
        ("error", "Observation", "slice-cardinality"),
    ),
    Check(
        "pattern discriminator on a Coding inside a datatype",
        url("SlicePattern"),
        patterned_observation,
        None,
        lambda r: r["code"]["coding"].pop(),
        ("error", "Observation.code", "slice-cardinality"),
    ),
    Check(
        "type discriminator on value[x]: closed, a type with no slice",
        url("SliceType"),
        lambda: observation(
            effectiveDateTime="2020-01-01", valueQuantity={"value": 1, "system": UCUM, "code": "mg"}
        ),
        None,
        both(drop("valueQuantity"), put(valueString="one")),
        ("error", "Observation.value.ofType(string)", "slicing-closed"),
    ),
    Check(
        "type discriminator on value[x]: the type slice's own constraint",
        url("SliceType"),
        lambda: observation(
            effectiveDateTime="2020-01-01", valueQuantity={"value": 1, "system": UCUM, "code": "mg"}
        ),
        None,
        both(drop("valueQuantity.system"), drop("valueQuantity.code")),
        ("error", "Observation.value.ofType(Quantity)", "cardinality"),
    ),
    Check(
        "type discriminator on effective[x]: required type slice",
        url("SliceType"),
        lambda: observation(effectiveDateTime="2020-01-01"),
        None,
        both(drop("effectiveDateTime"), put(effectivePeriod=PERIOD)),
        ("error", "Observation", "slice-cardinality"),
    ),
    Check(
        "type discriminator on Bundle.entry.resource: closed",
        url("SliceBundleType"),
        bundle((UUID_A, patient()), (UUID_B, observation())),
        None,
        entry(UUID_C, {"resourceType": "Organization", "id": "org", "name": "x"}),
        ("error", "Bundle.entry[2]", "slicing-closed"),
    ),
    Check(
        "type discriminator on Bundle.entry.resource: required slice",
        url("SliceBundleType"),
        bundle((UUID_A, patient()), (UUID_B, observation())),
        None,
        drop("entry.0"),
        ("error", "Bundle", "slice-cardinality"),
    ),
    Check(
        "profile discriminator on Bundle.entry.resource",
        url("SliceBundleProfile"),
        bundle((UUID_A, patient(birthDate="1990-01-01")), (UUID_B, patient(id="p2"))),
        None,
        drop("entry.0.resource.birthDate"),
        ("error", "Bundle", "slice-cardinality"),
    ),
    Check(
        "pattern discriminator on a backbone element's child (component.code)",
        url("SliceComponent"),
        lambda: observation(
            component=[
                {"code": {"coding": [{"system": LOINC, "code": code}]}, "valueQuantity": {"value": 80}}
                for code in ("8480-6", "8462-4")
            ]
        ),
        add("component", {"code": {"text": "pulse"}, "valueQuantity": {"value": 60}}),
        at("component.1.code.coding.0", code="8867-4"),
        ("error", "Observation", "slice-cardinality"),
    ),
    Check(
        "type discriminator through resolve(): the target's type chooses the slice",
        url("SliceResolve"),
        lambda: patient(
            contained=[
                {"resourceType": "Practitioner", "id": "gp", "name": [{"family": "Gee"}]},
                {"resourceType": "Organization", "id": "org", "name": "Practice"},
            ],
            generalPractitioner=[{"reference": "#gp"}, {"reference": "#org"}],
        ),
        None,
        both(
            add("contained", {"resourceType": "PractitionerRole", "id": "role", "active": True}),
            add("generalPractitioner", {"reference": "#role"}),
        ),
        ("error", "Patient.generalPractitioner[2]", "slicing-closed"),
    ),
    Check(
        "value discriminator on extension url: the slice's definition applies",
        url("SliceExtension"),
        lambda: patient(extension=[{"url": url("eye-colour"), "valueString": "brown"}]),
        None,
        both(drop("extension.0.valueString"), at("extension.0", valueBoolean=True)),
        ("error", "Patient.extension[0]", "unknown-element"),
        also=(("error", "Patient.extension[0]", "cardinality"),),  # the definition's value[x] is 1..1
    ),
    Check(
        "value discriminator on extension url: slice max",
        url("SliceExtension"),
        lambda: patient(extension=[{"url": url("eye-colour"), "valueString": "brown"}]),
        None,
        add("extension", {"url": url("eye-colour"), "valueString": "blue"}),
        ("error", "Patient", "slice-cardinality"),
    ),
]

# 2. fixed and pattern ---------------------------------------------------------------------------


def fixed_patient() -> dict:
    return patient(
        gender="female",
        active=True,
        maritalStatus={"coding": [{"system": MARITAL, "code": "M"}]},
        identifier=[
            {
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]
                },
                "system": MRN,
                "value": "1",
            }
        ],
        contact=[
            {
                "relationship": [{"coding": [{"system": ROLE_CODE, "code": "C"}], "text": "emergency"}],
                "name": {"use": "official", "family": "Doe"},
            }
        ],
    )


def quantity_observation() -> dict:
    return observation(
        valueQuantity={"value": 5, "unit": "mg", "system": UCUM, "code": "mg"},
        referenceRange=[
            {
                "low": {"value": 1, "system": UCUM, "code": "mg"},
                "high": {"value": 9, "unit": "mg", "system": UCUM, "code": "mg"},
            }
        ],
    )


FIXED_AND_PATTERN = [
    Check(
        "fixed code",
        url("FixedPattern"),
        fixed_patient,
        None,
        put(gender="male"),
        ("error", "Patient.gender", "fixed"),
    ),
    Check(
        "pattern boolean",
        url("FixedPattern"),
        fixed_patient,
        None,
        put(active=False),
        ("error", "Patient.active", "pattern"),
    ),
    Check(
        "fixed CodeableConcept: nothing may be added",
        url("FixedPattern"),
        fixed_patient,
        None,
        at("maritalStatus", text="married"),
        ("error", "Patient.maritalStatus", "fixed"),
    ),
    Check(
        "pattern Identifier on an array element",
        url("FixedPattern"),
        fixed_patient,
        at("identifier.0", use="official"),
        at("identifier.0", system=OTHER),
        ("error", "Patient.identifier[0]", "pattern"),
    ),
    Check(
        "pattern CodeableConcept inside a datatype (Identifier.type)",
        url("FixedPattern"),
        fixed_patient,
        None,
        at("identifier.0.type.coding.0", system="http://example.org/codes"),
        ("error", "Patient.identifier[0].type", "pattern"),
    ),
    Check(
        "pattern CodeableConcept inside a backbone element, extra codings allowed",
        url("FixedPattern"),
        fixed_patient,
        lambda r: r["contact"][0]["relationship"][0]["coding"].append({"system": ROLE_CODE, "code": "N"}),
        at("contact.0.relationship.0.coding.0", code="N"),
        ("error", "Patient.contact[0].relationship[0]", "pattern"),
    ),
    Check(
        "fixed code inside a datatype inside a backbone element",
        url("FixedPattern"),
        fixed_patient,
        None,
        at("contact.0.name", use="usual"),
        ("error", "Patient.contact[0].name.use", "fixed"),
    ),
    Check(
        "pattern Quantity on a choice",
        url("FixedPatternQuantity"),
        quantity_observation,
        None,
        at("valueQuantity", code="g", unit="g"),
        ("error", "Observation.value.ofType(Quantity)", "pattern"),
    ),
    Check(
        "pattern Quantity inside a backbone element",
        url("FixedPatternQuantity"),
        quantity_observation,
        None,
        at("referenceRange.0.low", code="g"),
        ("error", "Observation.referenceRange[0].low", "pattern"),
    ),
    Check(
        "fixed string inside a datatype inside a backbone element",
        url("FixedPatternQuantity"),
        quantity_observation,
        None,
        at("referenceRange.0.high", unit="milligram"),
        ("error", "Observation.referenceRange[0].high.unit", "fixed"),
    ),
]

# 3. cardinality ---------------------------------------------------------------------------------


def cardinality_patient() -> dict:
    return patient(name=[{"family": "Doe", "given": ["Jane"]}], contact=[{"name": {"family": "Roe"}}])


CARDINALITY = [
    Check(
        "backbone element child required (Patient.contact.name)",
        url("Cardinality"),
        cardinality_patient,
        None,
        both(drop("contact.0.name"), at("contact.0", telecom=[{"system": "phone", "value": "1"}])),
        ("error", "Patient.contact[0]", "cardinality"),
    ),
    Check(
        "datatype child required by the profile (HumanName.family)",
        url("Cardinality"),
        cardinality_patient,
        None,
        drop("name.0.family"),
        ("error", "Patient.name[0]", "cardinality"),
    ),
    Check(
        "datatype child required inside a backbone element",
        url("Cardinality"),
        cardinality_patient,
        None,
        both(at("contact.0.name", given=["Rick"]), drop("contact.0.name.family")),
        ("error", "Patient.contact[0].name", "cardinality"),
    ),
    Check(
        "0..0 on a backbone element's child",
        url("Cardinality"),
        cardinality_patient,
        None,
        at("contact.0", gender="male"),
        ("error", "Patient.contact[0]", "cardinality"),
    ),
    Check(
        "0..0 on a datatype's child",
        url("Cardinality"),
        cardinality_patient,
        None,
        at("name.0", suffix=["Jr"]),
        ("error", "Patient.name[0]", "cardinality"),
    ),
    Check(
        "profile max 1 on a repeating element: two are too many",
        url("Cardinality"),
        cardinality_patient,
        None,
        add("name", {"family": "Smith"}),
        ("error", "Patient", "cardinality"),
    ),
    Check(
        "profile max 1 on a repeating element: the JSON stays an array",
        url("Cardinality"),
        cardinality_patient,
        None,
        lambda r: r.update(name=r["name"][0]),
        ("error", "Patient.name", "json-array"),
    ),
]

# 4. type profiles and restricted choices --------------------------------------------------------

TYPES = [
    Check(
        "type profile on a datatype element (HumanName.given required)",
        url("TypeProfile"),
        lambda: patient(name=[{"family": "Doe", "given": ["Jane"]}]),
        None,
        drop("name.0.given"),
        ("error", "Patient.name[0]", "cardinality"),
    ),
    Check(
        "type profile on a datatype inside a backbone element",
        url("TypeProfile"),
        lambda: patient(contact=[{"name": {"family": "Roe", "given": ["Rick"]}}]),
        None,
        drop("contact.0.name.given"),
        ("error", "Patient.contact[0].name", "cardinality"),
    ),
    Check(
        "choice restricted by the profile: a removed type is an unknown property",
        url("QuantityOnly"),
        lambda: observation(valueQuantity={"value": 1}),
        None,
        both(drop("valueQuantity"), put(valueString="one")),
        ("error", "Observation", "unknown-element"),
    ),
    Check(
        "type profile on a choice type (SimpleQuantity: no comparator)",
        url("SimpleValue"),
        lambda: observation(valueQuantity={"value": 1, "system": UCUM, "code": "mg"}),
        None,
        at("valueQuantity", comparator="<"),
        ("error", "Observation.value.ofType(Quantity)", "cardinality"),
        also=(("error", "Observation.value.ofType(Quantity)", "sqty-1"),),
    ),
    Check(
        "choice restricted by the profile: deceased[x] boolean only",
        url("TypeProfile"),
        lambda: patient(deceasedBoolean=False),
        None,
        both(drop("deceasedBoolean"), put(deceasedDateTime="2020-01-01")),
        ("error", "Patient", "unknown-element"),
    ),
]

# 5. bindings ------------------------------------------------------------------------------------

GOOD_CODES: dict[str, Any] = {
    "code": "female",
    "Coding": {"system": MARITAL, "code": "M"},
    "CodeableConcept": {"coding": [{"system": MARITAL, "code": "M"}]},
}
BAD_CODES: dict[str, Any] = {
    "code": "woman",
    "Coding": {"system": "http://example.org/codes", "code": "married"},
    "CodeableConcept": {"coding": [{"system": "http://example.org/codes", "code": "married"}]},
}


def bound_extension_check(code_type: str, strength: str) -> Check:
    ext = url(f"bound-{code_type}-{strength}")
    key = "value" + code_type[0].upper() + code_type[1:]
    path = f"Patient.extension[0].value.ofType({code_type})"
    expected: Expected = {
        "required": ("error", path, "binding"),
        "extensible": ("warning", path, "binding"),
    }.get(strength)
    return Check(
        f"{strength} binding on {code_type}",
        None,
        lambda: patient(extension=[{"url": ext, key: copy.deepcopy(GOOD_CODES[code_type])}]),
        None,
        lambda r: r["extension"][0].update({key: copy.deepcopy(BAD_CODES[code_type])}),
        expected,
    )


def bindings_patient() -> dict:
    return patient(
        maritalStatus={"coding": [{"system": MARITAL, "code": "M", "display": "Married"}]},
        contact=[
            {"relationship": [{"coding": [{"system": ROLE_CODE, "code": "N"}]}], "name": {"text": "Rick"}}
        ],
    )


BINDINGS = [
    *(
        bound_extension_check(code_type, strength)
        for code_type in ("code", "Coding", "CodeableConcept")
        for strength in ("required", "extensible", "preferred", "example")
    ),
    Check(
        "required binding tightened by the profile (extensible in R4)",
        url("Bindings"),
        bindings_patient,
        None,
        both(
            at("maritalStatus.coding.0", system="http://example.org/codes", code="wed"),
            drop("maritalStatus.coding.0.display"),
        ),
        ("error", "Patient.maritalStatus", "binding"),
    ),
    Check(
        "required binding inside a backbone element",
        url("Bindings"),
        bindings_patient,
        None,
        at("contact.0.relationship.0.coding.0", system="http://example.org/codes"),
        ("error", "Patient.contact[0].relationship[0]", "binding"),
    ),
    Check(
        "wrong display is a warning",
        url("Bindings"),
        bindings_patient,
        None,
        at("maritalStatus.coding.0", display="Wed"),
        ("warning", "Patient.maritalStatus.coding[0].display", "display"),
    ),
    Check(
        "a code from a system outside a SNOMED value set is still an error",
        url("SnomedBinding"),
        lambda: observation(code={"text": "fever", "coding": [{"system": SCT, "code": "386661006"}]}),
        None,
        at("code.coding.0", system="http://example.org/codes"),
        ("error", "Observation.code", "binding"),
    ),
]

# 6. extensions ----------------------------------------------------------------------------------


def lot_patient() -> dict:
    return patient(
        extension=[
            {
                "url": url("lot"),
                "extension": [
                    {"url": "lotNumber", "valueString": "AB12"},
                    {"url": "expiry", "valueDate": "2030-01-01"},
                ],
            }
        ]
    )


EXTENSIONS = [
    Check(
        "profile-defined extension used unsliced: value type restricted",
        None,
        lambda: patient(extension=[{"url": url("eye-colour"), "valueCodeableConcept": {"text": "brown"}}]),
        None,
        both(drop("extension.0.valueCodeableConcept"), at("extension.0", valueInteger=3)),
        ("error", "Patient.extension[0]", "unknown-element"),
        also=(("error", "Patient.extension[0]", "cardinality"),),
    ),
    Check(
        "profile-defined extension used outside its context",
        None,
        lambda: patient(extension=[{"url": url("eye-colour"), "valueString": "brown"}]),
        None,
        lambda r: r.update(resourceType="Group", type="person", actual=True),
        ("error", "Group.extension[0]", "extension-context"),
    ),
    Check(
        "unknown extension is a warning",
        None,
        lambda: patient(extension=[{"url": url("eye-colour"), "valueString": "brown"}]),
        None,
        at("extension.0", url="http://example.org/unknown-extension"),
        ("warning", "Patient.extension[0]", "unknown-extension"),
    ),
    Check(
        "unknown modifier extension is an error",
        None,
        lambda: patient(modifierExtension=[{"url": url("do-not-use"), "valueBoolean": True}]),
        None,
        at("modifierExtension.0", url="http://example.org/unknown-modifier"),
        ("error", "Patient.modifierExtension[0]", "unknown-extension"),
    ),
    Check(
        "modifier extension used as a plain extension",
        None,
        lambda: patient(modifierExtension=[{"url": url("do-not-use"), "valueBoolean": True}]),
        None,
        lambda r: r.update(extension=r.pop("modifierExtension")),
        ("error", "Patient.extension[0]", "extension-modifier"),
    ),
    Check(
        "complex extension: a sub-extension with the wrong value type",
        None,
        lot_patient,
        None,
        both(drop("extension.0.extension.0.valueString"), at("extension.0.extension.0", valueInteger=12)),
        ("error", "Patient.extension[0].extension[0]", "unknown-element"),
        also=(("error", "Patient.extension[0].extension[0]", "cardinality"),),
    ),
    Check(
        "complex extension: a required sub-extension is missing",
        None,
        lot_patient,
        lambda r: r["extension"][0]["extension"].pop(),
        lambda r: r["extension"][0]["extension"].pop(0),
        ("error", "Patient.extension[0]", "slice-cardinality"),
    ),
    Check(
        "complex extension: its own value is not allowed",
        None,
        lot_patient,
        None,
        at("extension.0", valueString="x"),
        ("error", "Patient.extension[0]", "cardinality"),
        also=(("error", "Patient.extension[0]", "ext-1"),),
    ),
    Check(
        "complex extension: a sub-extension url the definition does not define",
        None,
        lot_patient,
        None,
        lambda r: r["extension"][0]["extension"].append({"url": "colour", "valueString": "red"}),
        ("error", "Patient.extension[0].extension[2]", "unknown-extension"),
    ),
    Check(
        "ext-1: an extension with a value and sub-extensions",
        None,
        lambda: patient(extension=[{"url": "http://example.org/unknown-extension", "valueString": "x"}]),
        None,
        at("extension.0", extension=[{"url": "part", "valueString": "y"}]),
        ("error", "Patient.extension[0]", "ext-1"),
    ),
]

# 7. references ----------------------------------------------------------------------------------

BORN = {"resourceType": "Patient", "id": "p", "birthDate": "1990-01-01"}

REFERENCES = [
    Check(
        "reference target type not allowed by the profile",
        url("SubjectWithBirthDate"),
        lambda: observation(subject={"reference": "Patient/123"}),
        None,
        at("subject", reference="Group/123"),
        ("error", "Observation.subject", "reference-target"),
    ),
    Check(
        "contained target does not conform to the target profile",
        url("SubjectWithBirthDate"),
        lambda: observation(contained=[copy.deepcopy(BORN)], subject={"reference": "#p"}),
        None,
        drop("contained.0.birthDate"),
        ("error", "Observation.subject", "reference-target-profile"),
    ),
    Check(
        "Reference.type does not match the reference",
        url("SubjectPatient"),
        lambda: observation(subject={"reference": "Patient/123", "type": "Patient"}),
        None,
        at("subject", type="Group"),
        ("error", "Observation.subject.type", "reference"),
    ),
    Check(
        "Reference.type (identifier only) not allowed by the profile",
        url("SubjectPatient"),
        lambda: observation(subject={"identifier": {"system": MRN, "value": "1"}, "type": "Patient"}),
        None,
        at("subject", type="Group"),
        ("error", "Observation.subject.type", "reference-target"),
    ),
    Check(
        "'#' refers to the container",
        None,
        lambda: patient(
            contained=[
                {
                    "resourceType": "Observation",
                    "id": "o",
                    "status": "final",
                    "code": {"text": "x"},
                    "subject": {"reference": "#"},
                }
            ]
        ),
        None,
        lambda r: r.update(resourceType="Practitioner"),
        ("error", "Practitioner.contained[0].subject", "reference-target"),
    ),
    Check(
        "urn:uuid resolved through Bundle.entry.fullUrl",
        None,
        bundle(
            (UUID_A, patient()),
            (
                UUID_B,
                observation(meta={"profile": [url("SubjectPatient")]}, subject={"reference": UUID_A}),
            ),
        ),
        None,
        at("entry.0.resource", resourceType="Group", type="person", actual=True),
        ("error", "Bundle.entry[1].resource.subject", "reference-target"),
    ),
    Check(
        "a Bundle entry target does not conform to the target profile",
        None,
        bundle(
            (UUID_A, copy.deepcopy(BORN)),
            (
                UUID_B,
                observation(meta={"profile": [url("SubjectWithBirthDate")]}, subject={"reference": UUID_A}),
            ),
        ),
        None,
        drop("entry.0.resource.birthDate"),
        ("error", "Bundle.entry[1].resource.subject", "reference-target-profile"),
    ),
    Check(
        "urn:uuid that is not in the Bundle",
        None,
        bundle((UUID_A, patient()), (UUID_B, observation(subject={"reference": UUID_A}))),
        None,
        at("entry.1.resource.subject", reference=UUID_C),
        ("error", "Bundle.entry[1].resource.subject", "bundle-reference"),
    ),
    Check(
        "malformed urn:uuid",
        None,
        lambda: observation(subject={"reference": UUID_A}),
        None,
        at("subject", reference="urn:uuid:not-a-uuid"),
        ("error", "Observation.subject", "reference"),
    ),
]

# 8. contentReference ----------------------------------------------------------------------------


def questionnaire() -> dict:
    return {
        "resourceType": "Questionnaire",
        "id": "q",
        "status": "draft",
        "item": [
            {
                "linkId": "1",
                "text": "Group",
                "type": "group",
                "item": [
                    {
                        "linkId": "1.1",
                        "text": "Inner",
                        "type": "group",
                        "item": [{"linkId": "1.1.1", "text": "Q", "type": "string"}],
                    }
                ],
            }
        ],
    }


CONTENT_REFERENCE = [
    Check(
        "unknown property in a nested item",
        url("ItemText"),
        questionnaire,
        None,
        at("item.0.item.0", colour="blue"),
        ("error", "Questionnaire.item[0].item[0]", "unknown-element"),
    ),
    Check(
        "unknown property two levels down",
        url("ItemText"),
        questionnaire,
        None,
        at("item.0.item.0.item.0", colour="blue"),
        ("error", "Questionnaire.item[0].item[0].item[0]", "unknown-element"),
    ),
    Check(
        "base cardinality in a nested item (linkId)",
        url("ItemText"),
        questionnaire,
        None,
        drop("item.0.item.0.item.0.linkId"),
        ("error", "Questionnaire.item[0].item[0].item[0]", "cardinality"),
    ),
    Check(
        "the profile's constraint reaches nested items (text 1..1)",
        url("ItemText"),
        questionnaire,
        None,
        drop("item.0.item.0.text"),
        ("error", "Questionnaire.item[0].item[0]", "cardinality"),
    ),
    Check(
        "an invariant of the item (que-6) at the top level",
        url("ItemText"),
        lambda: {**questionnaire(), "item": [{"linkId": "1", "text": "Note", "type": "display"}]},
        None,
        at("item.0", required=True),
        ("error", "Questionnaire.item[0]", "que-6"),
    ),
    Check(
        "an invariant of the referenced element (que-6) in a nested item",
        url("ItemText"),
        questionnaire,
        at("item.0.item.0.item.0", required=True),
        at("item.0.item.0.item.0", type="display", required=True),
        ("error", "Questionnaire.item[0].item[0].item[0]", "que-6"),
    ),
]

# 9. primitive extensions ------------------------------------------------------------------------


def qualifier() -> dict:
    return {"extension": [{"url": EN_QUALIFIER, "valueCode": "BR"}]}


def named_patient() -> dict:
    return patient(name=[{"family": "Doe", "given": ["Jane", None], "_given": [None, qualifier()]}])


PRIMITIVE_EXTENSIONS = [
    Check(
        "nulls aligned: an entry with neither value nor extension",
        None,
        named_patient,
        None,
        at("name.0", _given=[None, None]),
        ("error", "Patient.name[0].given[1]", "json-null"),
    ),
    Check(
        "'_given' longer than 'given'",
        None,
        named_patient,
        None,
        at("name.0", _given=[None, qualifier(), qualifier()]),
        ("error", "Patient.name[0].given", "json-primitive"),
    ),
    Check(
        "'_given' shorter than 'given'",
        None,
        named_patient,
        None,
        at("name.0", given=["Jane", "Ann", "Bo"]),
        ("error", "Patient.name[0].given", "json-primitive"),
    ),
    Check(
        "the extension inside '_given' is validated where it stands",
        None,
        named_patient,
        both(drop("name.0.given"), at("name.0", _given=[qualifier()])),
        lambda r: r["name"][0]["_given"][1]["extension"][0].update(valueCode="XX"),
        ("error", "Patient.name[0].given[1].extension[0].value.ofType(code)", "binding"),
    ),
    Check(
        "a '_birthDate' without birthDate: its extension is checked",
        None,
        lambda: patient(
            _birthDate={"extension": [{"url": BIRTH_TIME, "valueDateTime": "1990-01-01T10:00:00Z"}]}
        ),
        None,
        both(drop("_birthDate.extension.0.valueDateTime"), at("_birthDate.extension.0", valueString="ten")),
        ("error", "Patient.birthDate.extension[0]", "unknown-element"),
        also=(("error", "Patient.birthDate.extension[0]", "cardinality"),),
    ),
    Check(
        "an id alone is not content (ele-1)",
        None,
        lambda: patient(
            _active={"id": "a1", "extension": [{"url": "http://example.org/x", "valueBoolean": True}]}
        ),
        None,
        lambda r: r["_active"].pop("extension"),
        ("error", "Patient.active", "ele-1"),
    ),
    Check(
        "'_family' must not be an array when family is not",
        None,
        lambda: patient(name=[{"family": "Doe", "_family": qualifier()}]),
        None,
        at("name.0", _family=[qualifier()]),
        ("error", "Patient.name[0].family", "json-array"),
    ),
]

# 10. invariants ---------------------------------------------------------------------------------


def invariant_patient() -> dict:
    return patient(birthDate="1990-01-01", name=[{"given": ["Jane"]}], contact=[{"name": {"family": "Roe"}}])


INVARIANTS = [
    Check(
        "profile invariant using %resource from a backbone element",
        url("Invariants"),
        invariant_patient,
        None,
        drop("name"),
        ("error", "Patient.contact[0]", "inv-resource"),
    ),
    Check(
        "profile invariant on a datatype element (error)",
        url("Invariants"),
        invariant_patient,
        None,
        both(at("name.0", text="Jane"), drop("name.0.given")),
        ("error", "Patient.name[0]", "inv-name"),
    ),
    Check(
        "profile invariant of severity warning",
        url("Invariants"),
        invariant_patient,
        None,
        drop("birthDate"),
        ("warning", "Patient", "inv-birth"),
    ),
    Check(
        "profile invariant on a primitive",
        url("Invariants"),
        invariant_patient,
        None,
        put(birthDate="1850-05-01"),
        ("error", "Patient.birthDate", "inv-date"),
    ),
    Check(
        "profile invariant on a datatype inside a backbone element",
        url("Invariants"),
        invariant_patient,
        None,
        both(at("contact.0.name", given=["Rick"]), drop("contact.0.name.family")),
        ("error", "Patient.contact[0].name", "inv-contact"),
    ),
]

CHECKS = [
    *SLICING,
    *FIXED_AND_PATTERN,
    *CARDINALITY,
    *TYPES,
    *BINDINGS,
    *EXTENSIONS,
    *REFERENCES,
    *CONTENT_REFERENCE,
    *PRIMITIVE_EXTENSIONS,
    *INVARIANTS,
]


def _params() -> list[Any]:
    return [
        pytest.param(c, id=c.name, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else [])
        for c in CHECKS
    ]


@pytest.mark.parametrize("check", _params())
def test_mechanism(validator: Validator, check: Check) -> None:
    good = check.base()
    if check.good is not None:
        check.good(good)
    bad = check.base()
    check.bad(bad)
    assert good != bad

    passing = validator.validate(good, check.profile)
    assert [i for i in passing.issues if i.is_error] == [], shown(passing)
    if check.expected is not None:
        assert check.expected not in found(passing), shown(passing)

    failing = validator.validate(bad, check.profile)
    if check.expected is None:  # preferred and example bindings: nothing to say
        loud = [
            i for i in failing.issues if i.severity in ("fatal", "error", "warning") and i.rule != "dom-6"
        ]
        assert loud == [], shown(failing)
        return
    assert check.expected in found(failing), shown(failing)
    others = [f for f in found(failing) if f[0] in ("fatal", "error") and f != check.expected]
    assert sorted(others) == sorted(check.also), shown(failing)


# -- checks that do not fit the table -------------------------------------------------------------


def test_snomed_under_a_filtered_value_set_is_a_warning_never_an_error(validator: Validator) -> None:
    for code in ("386661006", "999999999"):  # a real finding, and a code that does not exist
        resource = observation(code={"coding": [{"system": SCT, "code": code}]})
        outcome = validator.validate(resource, url("SnomedBinding"))
        assert outcome.ok, shown(outcome)
        assert ("warning", "Observation.code.coding[0]", "binding") in found(outcome), shown(outcome)


def test_a_wrong_display_is_reported_once(validator: Validator) -> None:
    resource = bindings_patient()
    resource["maritalStatus"]["coding"][0]["display"] = "Wed"
    outcome = validator.validate(resource, url("Bindings"))
    displays = [i for i in outcome.issues if i.rule == "display"]
    assert [(i.severity, i.expression) for i in displays] == [
        ("warning", "Patient.maritalStatus.coding[0].display")
    ], shown(outcome)


def test_a_constraint_that_does_not_parse_is_a_warning_naming_its_key(validator: Validator) -> None:
    for resource in (patient(), patient(name=[{"family": "Doe"}])):
        outcome = validator.validate(resource, url("BrokenInvariant"))
        assert outcome.ok, shown(outcome)
        warnings = [i for i in outcome.issues if i.rule == "inv-broken"]
        assert [(i.severity, i.expression) for i in warnings] == [("warning", "Patient")], shown(outcome)
        assert "inv-broken" in warnings[0].message


def test_the_helper_writes_snapshots_as_generators_do(local_packages: PackageSet) -> None:
    sd = local_packages.resolve(url("SliceValue"))
    assert sd is not None and sd["derivation"] == "constraint"
    assert sd["baseDefinition"] == CORE + "Patient"
    ids = [e["id"] for e in sd["snapshot"]["element"]]
    start = ids.index("Patient.identifier")
    assert ids[start : start + 3] == [
        "Patient.identifier",
        "Patient.identifier:ssin",
        "Patient.identifier:ssin.id",
    ]
    assert ids.index("Patient.identifier:mrn") == ids.index("Patient.identifier:ssin.assigner") + 1
    assert ids[ids.index("Patient.identifier:mrn.assigner") + 1] == "Patient.active"
    ssin_system = sd["snapshot"]["element"][ids.index("Patient.identifier:ssin.system")]
    assert ssin_system["path"] == "Patient.identifier.system" and ssin_system["fixedUri"] == SSIN
    lot = local_packages.resolve(url("lot"))
    assert lot is not None
    lot_ids = [e["id"] for e in lot["snapshot"]["element"]]
    assert "Extension.extension:lotNumber.value[x]" in lot_ids
    assert lot["context"] == [{"type": "element", "expression": "Patient"}]
