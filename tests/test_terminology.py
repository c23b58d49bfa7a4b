"""Tests of the offline terminology service against the real packages and small hand-made ones."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.fhir.definitions import PackageSet
from conformance.fhir.packages import InstalledPackage, PackageRef
from conformance.fhir.terminology import CodeCheck, Terminology, normalise_display, ucum_syntax_ok

VAC = "https://www.ehealth.fgov.be/standards/fhir/vaccination"
VACCINE_CODE = f"{VAC}/ValueSet/be-vs-vaccine-code"
STATUS_REASON = f"{VAC}/ValueSet/be-vs-vaccination-status-reason"
ROUTE = f"{VAC}/ValueSet/be-vs-vaccination-administration-route"
BODYSITE = f"{VAC}/ValueSet/be-vs-vaccination-bodysite"
TARGET_DISEASE = f"{VAC}/ValueSet/be-vs-vaccine-target-disease"
PRODUCT = f"{VAC}/ValueSet/be-vs-vaccination-product"
CS_VACCINE_CODE = f"{VAC}/CodeSystem/be-cs-vaccine-code"
CS_ROUTE = f"{VAC}/CodeSystem/be-cs-vaccination-administration-route"
CS_STATUS_REASON = f"{VAC}/CodeSystem/be-cs-vaccination-status-reason"
CS_TARGET_DISEASE = f"{VAC}/CodeSystem/be-cs-vaccine-target-disease"
IMMUNIZATION_STATUS = "http://hl7.org/fhir/ValueSet/immunization-status|4.0.1"
GENDER = "http://hl7.org/fhir/ValueSet/administrative-gender"
ROUTE_CODES = "http://hl7.org/fhir/ValueSet/route-codes"  # SNOMED CT is-a 284009009
SCT = "http://snomed.info/sct"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
MEASLES = "871765008"


@pytest.fixture(scope="module")
def term(package_set: PackageSet) -> Terminology:
    return Terminology(package_set)


# -- the real packages -------------------------------------------------------------------------


def test_vaccine_code_expansion(term: Terminology) -> None:
    expansion = term.expansion(VACCINE_CODE)
    assert expansion is not None
    assert expansion.complete and expansion.source == "compose"
    assert len(expansion) == 62
    assert sum(1 for c in expansion if c.system == SCT) == 61
    measles = expansion.lookup(SCT, MEASLES)
    assert measles is not None
    assert measles.version == "http://snomed.info/sct/11000172109"  # the edition, kept from the compose
    assert {d.language for d in measles.designations} == {"fr-BE", "nl-BE", "en"}
    other = expansion.lookup(CS_VACCINE_CODE, "other")
    assert other is not None and other.display == "other"  # from the CodeSystem: the compose has none
    assert not expansion.notes  # agrees with the package's pre-computed expansion


def test_vaccine_code_valid_invalid_and_display(term: Terminology) -> None:
    assert term.validate_code(VACCINE_CODE, SCT, MEASLES).status == "valid"
    ok = term.validate_code(VACCINE_CODE, SCT, MEASLES, "  MEASLES   vaccine ")  # an en designation
    assert (ok.status, ok.display_ok) == ("valid", True)
    assert term.validate_code(VACCINE_CODE, SCT, MEASLES, "Mazelen").display_ok is True  # nl-BE
    wrong = term.validate_code(VACCINE_CODE, SCT, MEASLES, "Rubella vaccine")
    assert wrong.status == "valid" and wrong.display_ok is False
    assert wrong.expected_display and "Measles" in wrong.expected_display
    assert "Rubella vaccine" in wrong.message
    bad = term.validate_code(VACCINE_CODE, SCT, "123456789")
    assert bad.status == "invalid"
    assert "'123456789'" in bad.message and VACCINE_CODE in bad.message and SCT in bad.message
    # the local `other` code, and the right code under the wrong system
    assert term.validate_code(VACCINE_CODE, CS_VACCINE_CODE, "other", "Other").display_ok is True
    assert term.validate_code(VACCINE_CODE, SCT, "other").status == "invalid"
    wrong_system = term.validate_code(VACCINE_CODE, "http://loinc.org", MEASLES)
    assert wrong_system.status == "invalid" and SCT in wrong_system.message


def test_status_reason(term: Terminology) -> None:
    expansion = term.expansion(STATUS_REASON)
    assert expansion is not None and expansion.complete and len(expansion) == 6
    assert term.validate_code(STATUS_REASON, CS_STATUS_REASON, "ALLERGY").status == "valid"
    assert term.validate_code(STATUS_REASON, ACT_REASON, "OSTOCK", "Out of Stock").display_ok is True
    # the CodeSystem's own display is a known display too
    assert term.validate_code(STATUS_REASON, ACT_REASON, "OSTOCK", "product out of stock").display_ok is True
    assert term.validate_code(STATUS_REASON, ACT_REASON, "OSTOCK", "Geen voorraad").display_ok is False
    # in v3-ActReason, but not selected by the value set
    assert term.validate_code(STATUS_REASON, ACT_REASON, "MEDNEC").status == "invalid"


def test_administration_route(term: Terminology) -> None:
    assert term.validate_code(ROUTE, CS_ROUTE, "IM").status == "valid"
    check = term.validate_code(ROUTE, CS_ROUTE, "IM", "Intramusculaire")  # fr-BE designation
    assert check.display_ok is True and check.expected_display == "Instramuscular"  # sic, in the IG
    null_flavor = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
    assert term.validate_code(ROUTE, null_flavor, "OTH").status == "valid"
    assert term.validate_code(ROUTE, null_flavor, "UNK").status == "invalid"
    assert term.validate_code(ROUTE, CS_ROUTE, "im").status == "invalid"  # case-sensitive system


def test_body_site(term: Terminology) -> None:
    expansion = term.expansion(BODYSITE)
    assert expansion is not None and expansion.complete and len(expansion) == 6
    deltoid = term.validate_code(BODYSITE, SCT, "35259002", "Deltoid muscle")
    assert (deltoid.status, deltoid.display_ok) == ("valid", True)
    # an explicit SNOMED list is enumerable: a code outside it is certainly not a member
    assert term.validate_code(BODYSITE, SCT, "368208006").status == "invalid"


def test_immunization_status_code_only(term: Terminology) -> None:
    for code in ("completed", "entered-in-error", "not-done"):
        assert term.validate_code(IMMUNIZATION_STATUS, None, code).status == "valid", code
    # in the event-status CodeSystem but not in the value set
    check = term.validate_code(IMMUNIZATION_STATUS, None, "preparation")
    assert check.status == "invalid" and "http://hl7.org/fhir/event-status" in check.message
    assert term.validate_code(IMMUNIZATION_STATUS, None, "Completed").status == "invalid"
    assert term.validate_code(IMMUNIZATION_STATUS, None, "").status == "invalid"


def test_administrative_gender(term: Terminology) -> None:
    expansion = term.expansion(GENDER)
    assert expansion is not None and expansion.complete
    assert {c.code for c in expansion} == {"male", "female", "other", "unknown"}
    assert term.validate_code(
        GENDER, "http://hl7.org/fhir/administrative-gender", "female", "Female"
    ).display_ok
    assert term.validate_code(GENDER, None, "X").status == "invalid"


def test_snomed_filter_is_unknown_never_invalid(term: Terminology) -> None:
    expansion = term.expansion(ROUTE_CODES)
    assert expansion is not None and not expansion.complete and SCT in expansion.open
    for code in ("26643006", "not-a-snomed-code", "78421000"):
        check = term.validate_code(ROUTE_CODES, SCT, code)
        assert check.status == "unknown", code
        assert "cannot be checked offline" in check.message and SCT in check.message
    assert term.validate_code(ROUTE_CODES, None, "26643006").status == "unknown"
    # a system the value set does not include at all is certainly wrong
    assert term.validate_code(ROUTE_CODES, "http://loinc.org", "1234-5").status == "invalid"
    assert term.member_of({"system": SCT, "code": "26643006"}, ROUTE_CODES) is None


def test_target_disease_empty_code_system_is_unknown(term: Terminology) -> None:
    # be-cs-vaccine-target-disease says content = complete but has no concepts in the IG source
    # (PROVENANCE, "Known gaps"). Read literally, every target disease would be invalid; that would
    # fail every sender for an authoring gap of a draft IG. The honest answer is "unknown", with the
    # reason, so the validator reports it as a warning. A code of another system is still certainly
    # outside the value set (it includes only that one code system).
    expansion = term.expansion(TARGET_DISEASE)
    assert expansion is not None and len(expansion) == 0 and not expansion.complete
    check = term.validate_code(TARGET_DISEASE, CS_TARGET_DISEASE, "measles")
    assert check.status == "unknown"
    assert "defines no concepts" in check.message and CS_TARGET_DISEASE in check.message
    assert term.validate_code(TARGET_DISEASE, None, "measles").status == "unknown"
    assert term.validate_code(TARGET_DISEASE, SCT, "14189004").status == "invalid"
    # the empty pre-computed expansion was not allowed to turn this into "everything is invalid"
    assert expansion.source == "compose" and any("not used" in n for n in expansion.notes)
    assert term.validate_coding_in_system(CS_TARGET_DISEASE, "measles").status == "unknown"


def test_vaccination_product_has_no_definition(term: Terminology) -> None:
    expansion = term.expansion(PRODUCT)
    assert expansion is not None and expansion.source == "none" and None in expansion.open
    check = term.validate_code(PRODUCT, "http://example.org/cnk", "1234567")
    assert check.status == "unknown" and "no compose" in check.message
    assert term.validate_code(PRODUCT, None, "x").status == "unknown"


def test_unknown_value_set(term: Terminology) -> None:
    assert term.expansion("http://example.org/ValueSet/nope") is None
    check = term.validate_code("http://example.org/ValueSet/nope", SCT, "1")
    assert check.status == "unknown" and "http://example.org/ValueSet/nope" in check.message
    assert term.member_of("x", "http://example.org/ValueSet/nope") is None


def test_versioned_canonicals(term: Terminology) -> None:
    versioned = term.expansion(f"{VACCINE_CODE}|1.0.0")  # the FSH gives this ValueSet 1.0.0
    assert versioned is not None and versioned is term.expansion(VACCINE_CODE)
    assert versioned.canonical == f"{VACCINE_CODE}|1.0.0"
    assert term.expansion(f"{VACCINE_CODE}|1.1.2") is None
    assert term.validate_code(f"{VACCINE_CODE}|1.1.2", SCT, MEASLES).status == "unknown"
    assert term.expansion("http://hl7.org/fhir/ValueSet/immunization-status|4.0") is not None  # 4.0.x
    assert term.expansion("http://hl7.org/fhir/ValueSet/immunization-status|3.0.1") is None


def test_member_of(term: Terminology) -> None:
    assert term.member_of("completed", IMMUNIZATION_STATUS) is True
    assert term.member_of("preparation", IMMUNIZATION_STATUS) is False
    assert term.member_of({"system": SCT, "code": MEASLES}, VACCINE_CODE) is True
    assert term.member_of({"system": SCT, "code": "1"}, VACCINE_CODE) is False
    assert term.member_of({"system": SCT}, VACCINE_CODE) is False
    assert term.member_of({"code": MEASLES}, VACCINE_CODE) is None  # no system: cannot tell which
    assert term.member_of({"code": "zzz"}, VACCINE_CODE) is False
    concept = {"coding": [{"system": SCT, "code": "1"}, {"system": SCT, "code": MEASLES}], "text": "x"}
    assert term.member_of(concept, VACCINE_CODE) is True
    assert term.member_of({"coding": [{"system": SCT, "code": "1"}]}, VACCINE_CODE) is False
    assert term.member_of({"text": "measles"}, VACCINE_CODE) is False
    assert term.member_of({"coding": [{"system": SCT, "code": "1"}]}, ROUTE_CODES) is None
    assert term.member_of(42, VACCINE_CODE) is None


def test_validate_coding_in_system(term: Terminology) -> None:
    gender = "http://hl7.org/fhir/administrative-gender"
    assert term.validate_coding_in_system(gender, "male", "Male").display_ok is True
    assert term.validate_coding_in_system(gender, "male", "Man").display_ok is False
    assert term.validate_coding_in_system(gender, "xx").status == "invalid"
    assert term.validate_coding_in_system(gender, "male", version="4.0.1").status == "valid"
    assert term.validate_coding_in_system(gender, "male", version="9.9").status == "unknown"
    # v3-ActReason's OVRER is nested three levels deep
    assert term.validate_coding_in_system(ACT_REASON, "OVRER").status == "valid"
    assert term.validate_coding_in_system(SCT, MEASLES).status == "unknown"  # stub: content = not-present
    assert term.validate_coding_in_system("http://loinc.org", "1234-5").status == "unknown"
    fed_country = "https://www.ehealth.fgov.be/standards/fhir/core/CodeSystem/cd-fed-country"
    assert term.validate_coding_in_system(fed_country, "BE").status == "valid"
    assert term.validate_coding_in_system(fed_country, "NL").status == "unknown"  # content = fragment
    # cd-contact-person is caseSensitive = false
    civil = "https://www.ehealth.fgov.be/standards/fhir/core/CodeSystem/cd-contact-person"
    folded = term.validate_coding_in_system(civil, "FATHER")
    assert folded.status == "valid" and "case" in folded.message
    assert term.validate_coding_in_system("http://unitsofmeasure.org", "mg/").status == "invalid"
    assert term.validate_coding_in_system("http://unitsofmeasure.org", "mg/dL").status == "unknown"


def test_ucum_value_set(term: Terminology) -> None:
    ucum_units = "http://hl7.org/fhir/ValueSet/ucum-units"
    assert term.validate_code(ucum_units, "http://unitsofmeasure.org", "mg/dL").status == "unknown"
    assert term.validate_code(ucum_units, "http://unitsofmeasure.org", "mg..dL").status == "invalid"


def test_case_insensitive_code_system_in_value_set(term: Terminology) -> None:
    civil = "https://www.ehealth.fgov.be/standards/fhir/core/ValueSet/be-contactperson"
    system = "https://www.ehealth.fgov.be/standards/fhir/core/CodeSystem/cd-contact-person"
    assert term.validate_code(civil, system, "Mother").status == "valid"
    # v2-0131 with is-not-a O: the excluded root is not there
    v2 = "http://terminology.hl7.org/CodeSystem/v2-0131"
    assert term.validate_code(civil, v2, "C").status == "valid"
    assert term.validate_code(civil, v2, "O").status == "invalid"


def test_every_belgian_value_set_agrees_with_its_precomputed_expansion(
    term: Terminology, package_set: PackageSet
) -> None:
    for entry in package_set.by_type("ValueSet"):
        if "ehealth.fgov.be" not in (entry.url or ""):
            continue
        expansion = term.expansion(f"{entry.url}|{entry.version}")
        assert expansion is not None
        assert not [n for n in expansion.notes if "differs" in n], entry.url


def test_ig_examples_use_allowed_codes(term: Terminology, package_set: PackageSet) -> None:
    bindings = {"vaccineCode": VACCINE_CODE, "statusReason": STATUS_REASON, "route": ROUTE, "site": BODYSITE}
    checked = 0
    wrong_display = set()
    for entry in package_set.examples():
        if (
            entry.resource_type != "Immunization"
            or entry.package is None
            or entry.package.id != ("hl7.fhir.be.vaccination")
        ):
            continue
        resource = package_set.read(entry)
        assert term.validate_code(IMMUNIZATION_STATUS, None, resource["status"]).status == "valid"
        for element, valueset in bindings.items():
            for coding in (resource.get(element) or {}).get("coding", []):
                check = term.validate_code(valueset, coding["system"], coding["code"], coding.get("display"))
                assert check.status == "valid", (entry.id, element, check.message)
                checked += 1
                if check.display_ok is False:
                    wrong_display.add((coding["code"], coding["display"]))
    assert checked > 35
    # "Rubella" on the human papillomavirus vaccine is a real slip in the IG examples
    assert ("911000221103", "Rubella") in wrong_display


def test_validate_code_is_a_dict_lookup_after_warm_up(term: Terminology) -> None:
    term.validate_code(VACCINE_CODE, SCT, MEASLES, "Measles vaccine")
    rounds = 20_000
    start = time.perf_counter()
    for _ in range(rounds):
        term.validate_code(VACCINE_CODE, SCT, MEASLES, "Measles vaccine")
    per_call = (time.perf_counter() - start) / rounds
    assert per_call < 20e-6, f"{per_call * 1e6:.2f} µs per validate_code"


# -- hand-made packages ------------------------------------------------------------------------

EX = "http://example.org/fhir"
ANIMALS = f"{EX}/CodeSystem/animals"


def _write(folder: Path, name: str, resource: dict) -> Path:
    path = folder / name
    path.write_bytes(orjson.dumps(resource))
    return path


def _vs(name: str, compose: dict | None = None, **extra: object) -> dict:
    resource: dict = {
        "resourceType": "ValueSet",
        "id": name,
        "url": f"{EX}/ValueSet/{name}",
        "version": "1.0",
    }
    if compose is not None:
        resource["compose"] = compose
    resource.update(extra)
    return resource


ANIMALS_CS = {
    "resourceType": "CodeSystem",
    "id": "animals",
    "url": ANIMALS,
    "version": "2.0",
    "content": "complete",
    "caseSensitive": True,
    "hierarchyMeaning": "is-a",
    "property": [
        {"code": "legs", "type": "integer"},
        {"code": "notSelectable", "type": "boolean"},
        {"code": "status", "type": "code"},
        {"code": "child", "type": "code"},
    ],
    "concept": [
        {
            "code": "_group",
            "display": "Grouping",
            "property": [{"code": "notSelectable", "valueBoolean": True}],
            "concept": [
                {
                    "code": "mammal",
                    "display": "Mammal",
                    "concept": [
                        {"code": "dog", "display": "Dog", "property": [{"code": "legs", "valueInteger": 4}]},
                        {"code": "cat", "display": "Cat", "property": [{"code": "legs", "valueInteger": 4}]},
                        {
                            "code": "human",
                            "display": "Human",
                            "property": [{"code": "legs", "valueInteger": 2}],
                        },
                    ],
                    # the polyhierarchy form v3 code systems use: bat is a mammal too
                    "property": [{"code": "child", "valueCode": "bat"}],
                },
                {
                    "code": "bird",
                    "display": "Bird",
                    "concept": [
                        {
                            "code": "eagle",
                            "display": "Eagle",
                            "designation": [{"language": "fr", "value": "Aigle"}],
                        },
                        {
                            "code": "dodo",
                            "display": "Dodo",
                            "property": [{"code": "status", "valueCode": "retired"}],
                        },
                        {"code": "bat", "display": "Bat"},
                    ],
                },
            ],
        }
    ],
}


@pytest.fixture
def made(tmp_path: Path) -> Terminology:
    packages = PackageSet()
    packages.add_resource_file(_write(tmp_path, "cs.json", ANIMALS_CS))
    valuesets = [
        _vs("all", {"include": [{"system": ANIMALS}]}),
        _vs(
            "mammals",
            {
                "include": [
                    {"system": ANIMALS, "filter": [{"property": "concept", "op": "is-a", "value": "mammal"}]}
                ]
            },
        ),
        _vs(
            "below-mammal",
            {
                "include": [
                    {
                        "system": ANIMALS,
                        "filter": [{"property": "concept", "op": "descendent-of", "value": "mammal"}],
                    }
                ]
            },
        ),
        _vs(
            "not-birds",
            {
                "include": [
                    {
                        "system": ANIMALS,
                        "filter": [{"property": "concept", "op": "is-not-a", "value": "bird"}],
                    }
                ]
            },
        ),
        _vs(
            "four-legs",
            {"include": [{"system": ANIMALS, "filter": [{"property": "legs", "op": "=", "value": "4"}]}]},
        ),
        _vs(
            "by-code",
            {"include": [{"system": ANIMALS, "filter": [{"property": "code", "op": "=", "value": "eagle"}]}]},
        ),
        _vs(
            "regex",
            {
                "include": [
                    {"system": ANIMALS, "filter": [{"property": "code", "op": "regex", "value": "d.*"}]}
                ]
            },
        ),
        _vs(
            "in",
            {
                "include": [
                    {"system": ANIMALS, "filter": [{"property": "concept", "op": "in", "value": "dog, cat"}]}
                ]
            },
        ),
        _vs(
            "not-in",
            {
                "include": [
                    {
                        "system": ANIMALS,
                        "filter": [{"property": "concept", "op": "not-in", "value": "dog,cat,_group"}],
                    }
                ]
            },
        ),
        _vs(
            "two-filters",
            {
                "include": [
                    {
                        "system": ANIMALS,
                        "filter": [
                            {"property": "concept", "op": "is-a", "value": "mammal"},
                            {"property": "legs", "op": "=", "value": "4"},
                        ],
                    }
                ]
            },
        ),
        _vs(
            "unsupported-op",
            {
                "include": [
                    {
                        "system": ANIMALS,
                        "filter": [{"property": "concept", "op": "generalizes", "value": "dog"}],
                    }
                ]
            },
        ),
        _vs(
            "undefined-property",
            {"include": [{"system": ANIMALS, "filter": [{"property": "colour", "op": "=", "value": "red"}]}]},
        ),
        _vs(
            "active-only",
            {
                "inactive": False,
                "include": [
                    {"system": ANIMALS, "filter": [{"property": "concept", "op": "is-a", "value": "bird"}]}
                ],
            },
        ),
        _vs(
            "explicit",
            {
                "include": [
                    {
                        "system": ANIMALS,
                        "version": "1.0",
                        "concept": [
                            {"code": "_group"},
                            {"code": "dog", "display": "Doggy"},
                            {"code": "unicorn", "display": "Unicorn"},
                        ],
                    }
                ]
            },
        ),
        # include valueSet + is-a + excludes of a concept and of a filter
        _vs(
            "combined",
            {
                "include": [
                    {"valueSet": [f"{EX}/ValueSet/mammals"]},
                    {"system": ANIMALS, "concept": [{"code": "eagle"}]},
                    {
                        "system": "http://snomed.info/sct",
                        "concept": [{"code": "448169003", "display": "Domestic cat"}],
                    },
                ],
                "exclude": [
                    {"system": ANIMALS, "concept": [{"code": "cat"}]},
                    {"system": ANIMALS, "filter": [{"property": "legs", "op": "=", "value": "2"}]},
                ],
            },
        ),
        # intersection: system + valueSet in one include
        _vs(
            "mammals-with-four-legs",
            {
                "include": [
                    {"system": ANIMALS, "valueSet": [f"{EX}/ValueSet/four-legs", f"{EX}/ValueSet/mammals"]}
                ]
            },
        ),
        # an exclude that cannot be enumerated makes the included codes of that system unsettled
        _vs(
            "exclude-snomed",
            {
                "include": [
                    {"system": "http://snomed.info/sct", "concept": [{"code": "1"}, {"code": "2"}]},
                    {"system": ANIMALS, "concept": [{"code": "dog"}]},
                ],
                "exclude": [
                    {
                        "system": "http://snomed.info/sct",
                        "filter": [{"property": "concept", "op": "is-a", "value": "2"}],
                    }
                ],
            },
        ),
        _vs(
            "missing-include",
            {
                "include": [
                    {"valueSet": [f"{EX}/ValueSet/does-not-exist"]},
                    {"system": ANIMALS, "concept": [{"code": "dog"}]},
                ]
            },
        ),
        # a cycle: a -> b -> a
        _vs("cycle-a", {"include": [{"valueSet": [f"{EX}/ValueSet/cycle-b"]}]}),
        _vs(
            "cycle-b",
            {
                "include": [
                    {"valueSet": [f"{EX}/ValueSet/cycle-a"]},
                    {"system": ANIMALS, "concept": [{"code": "dog"}]},
                ]
            },
        ),
        _vs("self", {"include": [{"valueSet": [f"{EX}/ValueSet/self"]}]}),
        # pre-computed expansions inside the ValueSet resource
        _vs(
            "expansion-only",
            expansion={
                "total": 2,
                "contains": [
                    {
                        "abstract": True,
                        "display": "Group",
                        "contains": [
                            {"system": "http://loinc.org", "code": "1234-5", "display": "Glucose"},
                            {"system": "http://loinc.org", "code": "2345-7", "display": "Sugar"},
                        ],
                    },
                ],
            },
        ),
        _vs(
            "loinc-filter",
            {
                "include": [
                    {
                        "system": "http://loinc.org",
                        "filter": [{"property": "parent", "op": "=", "value": "LP1"}],
                    }
                ]
            },
            expansion={"contains": [{"system": "http://loinc.org", "code": "1234-5"}]},
        ),
        _vs(
            "truncated",
            {
                "include": [
                    {
                        "system": "http://loinc.org",
                        "filter": [{"property": "parent", "op": "=", "value": "LP1"}],
                    }
                ]
            },
            expansion={"total": 500, "contains": [{"system": "http://loinc.org", "code": "1234-5"}]},
        ),
        _vs(
            "stale-expansion",
            {"include": [{"system": ANIMALS, "concept": [{"code": "dog"}]}]},
            expansion={"contains": [{"system": ANIMALS, "code": "cat"}]},
        ),
    ]
    for vs in valuesets:
        packages.add_resource_file(_write(tmp_path, f"vs-{vs['id']}.json", vs))
    return Terminology(packages)


def _codes(term: Terminology, name: str) -> set[str]:
    expansion = term.expansion(f"{EX}/ValueSet/{name}")
    assert expansion is not None
    return {c.code for c in expansion}


def test_filters(made: Terminology) -> None:
    assert _codes(made, "mammals") == {"mammal", "dog", "cat", "human", "bat"}
    assert _codes(made, "below-mammal") == {"dog", "cat", "human", "bat"}
    assert _codes(made, "not-birds") == {"_group", "mammal", "dog", "cat", "human"}
    assert _codes(made, "four-legs") == {"dog", "cat"}
    assert _codes(made, "by-code") == {"eagle"}
    assert _codes(made, "regex") == {"dog", "dodo"}
    assert _codes(made, "in") == {"dog", "cat"}
    assert _codes(made, "not-in") == {"mammal", "human", "bird", "eagle", "dodo", "bat"}
    assert _codes(made, "two-filters") == {"dog", "cat"}
    assert _codes(made, "active-only") == {"bird", "eagle", "bat"}  # dodo is retired
    assert len(_codes(made, "all")) == 9


def test_unsupported_filters_are_unknown(made: Terminology) -> None:
    for name, words in (("unsupported-op", "generalizes"), ("undefined-property", "colour")):
        check = made.validate_code(f"{EX}/ValueSet/{name}", ANIMALS, "dog")
        assert check.status == "unknown" and words in check.message
        # a system the include does not name is still outside the value set
        assert made.validate_code(f"{EX}/ValueSet/{name}", "http://other", "dog").status == "invalid"


def test_abstract_and_inactive(made: Terminology) -> None:
    everything = f"{EX}/ValueSet/all"
    abstract = made.validate_code(everything, ANIMALS, "_group")
    assert abstract.status == "invalid" and "abstract" in abstract.message
    retired = made.validate_code(everything, ANIMALS, "dodo")
    assert retired.status == "valid" and "inactive" in retired.message
    # listed explicitly, an abstract code was chosen on purpose
    assert made.validate_code(f"{EX}/ValueSet/explicit", ANIMALS, "_group").status == "valid"


def test_explicit_concepts_displays_and_notes(made: Terminology) -> None:
    explicit = f"{EX}/ValueSet/explicit"
    expansion = made.expansion(explicit)
    assert expansion is not None and expansion.complete
    dog = expansion.lookup(ANIMALS, "dog")
    assert dog is not None and dog.display == "Doggy" and dog.version == "1.0"
    assert made.validate_code(explicit, ANIMALS, "dog", "dog").display_ok is True  # the CodeSystem's display
    assert made.validate_code(explicit, ANIMALS, "dog", "Hound").display_ok is False
    assert any("'unicorn'" in n for n in expansion.notes)
    assert any("version 1.0" in n and "2.0" in n for n in expansion.notes)
    eagle = made.validate_code(f"{EX}/ValueSet/all", ANIMALS, "eagle", "AIGLE")
    assert eagle.display_ok is True


def test_include_valueset_and_excludes(made: Terminology) -> None:
    combined = f"{EX}/ValueSet/combined"
    assert _codes(made, "combined") == {"mammal", "dog", "bat", "eagle", "448169003"}
    assert made.validate_code(combined, ANIMALS, "dog").status == "valid"
    assert made.validate_code(combined, ANIMALS, "cat").status == "invalid"  # excluded concept
    assert made.validate_code(combined, ANIMALS, "human").status == "invalid"  # excluded by filter
    assert made.validate_code(combined, ANIMALS, "dodo").status == "invalid"
    assert made.validate_code(combined, SCT, "448169003", "domestic CAT").display_ok is True
    assert made.validate_code(combined, SCT, "1").status == "invalid"
    assert made.expansion(combined).complete  # type: ignore[union-attr]
    assert _codes(made, "mammals-with-four-legs") == {"dog", "cat"}


def test_non_enumerable_exclude_leaves_codes_unsettled(made: Terminology) -> None:
    vs = f"{EX}/ValueSet/exclude-snomed"
    assert made.validate_code(vs, SCT, "1").status == "unknown"
    assert made.validate_code(vs, SCT, "3").status == "invalid"  # never included
    assert made.validate_code(vs, ANIMALS, "dog").status == "valid"
    missing = f"{EX}/ValueSet/missing-include"
    assert made.validate_code(missing, ANIMALS, "dog").status == "valid"
    check = made.validate_code(missing, ANIMALS, "cat")
    assert check.status == "unknown" and "does-not-exist" in check.message


def test_cycles_are_detected(made: Terminology) -> None:
    a = made.expansion(f"{EX}/ValueSet/cycle-a")
    assert a is not None and not a.complete
    assert any("cycle" in n for n in a.notes)
    assert made.validate_code(f"{EX}/ValueSet/cycle-a", ANIMALS, "dog").status == "valid"
    assert made.validate_code(f"{EX}/ValueSet/cycle-a", ANIMALS, "cat").status == "unknown"
    itself = made.validate_code(f"{EX}/ValueSet/self", ANIMALS, "dog")
    assert itself.status == "unknown" and "cycle" in itself.message


def test_precomputed_expansions(made: Terminology) -> None:
    only = made.expansion(f"{EX}/ValueSet/expansion-only")
    assert only is not None and only.source == "expansion" and only.complete and len(only) == 2
    assert made.validate_code(
        f"{EX}/ValueSet/expansion-only", "http://loinc.org", "2345-7", "sugar"
    ).display_ok
    assert made.validate_code(f"{EX}/ValueSet/expansion-only", "http://loinc.org", "9").status == "invalid"
    loinc = made.expansion(f"{EX}/ValueSet/loinc-filter")
    assert loinc is not None and loinc.source == "expansion"
    truncated = made.expansion(f"{EX}/ValueSet/truncated")
    assert truncated is not None and truncated.source == "compose" and not truncated.complete
    assert made.validate_code(f"{EX}/ValueSet/truncated", "http://loinc.org", "1234-5").status == "unknown"
    stale = made.expansion(f"{EX}/ValueSet/stale-expansion")
    assert stale is not None and stale.source == "compose" and {c.code for c in stale} == {"dog"}
    assert any("differs from the compose" in n for n in stale.notes)


def test_package_expansions_file(tmp_path: Path) -> None:
    folder = tmp_path / "example.pkg#1.0.0"
    content = folder / "package"
    (content / "other").mkdir(parents=True)
    manifest = {"name": "example.pkg", "version": "1.0.0"}
    _write(content, "package.json", manifest)
    compose = {"include": [{"system": SCT, "filter": [{"property": "concept", "op": "is-a", "value": "1"}]}]}
    vs = _vs("sct", compose)
    _write(content, "ValueSet-sct.json", vs)
    expanded = {
        **vs,
        "expansion": {
            "total": 2,
            "contains": [
                {"system": SCT, "code": "1", "display": "One"},
                {"system": SCT, "code": "2", "display": "Two"},
            ],
        },
    }
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": expanded}]}
    _write(content / "other", "expansions.json", bundle)
    packages = PackageSet([InstalledPackage(PackageRef("example.pkg", "1.0.0"), folder, manifest)])
    term = Terminology(packages)
    expansion = term.expansion(f"{EX}/ValueSet/sct")
    assert expansion is not None and expansion.source == "expansion"
    assert any("example.pkg#1.0.0" in n for n in expansion.notes)
    assert term.validate_code(f"{EX}/ValueSet/sct", SCT, "2", "two").display_ok is True
    assert term.validate_code(f"{EX}/ValueSet/sct", SCT, "3").status == "invalid"


# -- terminology server ------------------------------------------------------------------------


def _parameters(result: bool, message: str | None = None, display: str | None = None) -> dict:
    parameters: list[dict] = [{"name": "result", "valueBoolean": result}]
    if message:
        parameters.append({"name": "message", "valueString": message})
    if display:
        parameters.append({"name": "display", "valueString": display})
    return {"resourceType": "Parameters", "parameter": parameters}


def _fake_tx(request: httpx.Request) -> httpx.Response:
    params = request.url.params
    if request.url.path.endswith("/ValueSet/$validate-code"):
        if params.get("url") == "http://example.org/ValueSet/unknown-to-server":
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "diagnostics": "no such VS"}],
            }
            return httpx.Response(404, json=outcome)
        if params.get("code") == "26643006":
            return httpx.Response(200, json=_parameters(True, display="Oral route"))
        return httpx.Response(
            200, json=_parameters(False, message=f"{params.get('code')} is not in the value set")
        )
    if request.url.path.endswith("/CodeSystem/$validate-code"):
        return httpx.Response(
            200, json=_parameters(params.get("code") == "73211009", display="Diabetes mellitus")
        )
    return httpx.Response(500, text="oops")


def test_tx_server_hit_miss_and_cache(package_set: PackageSet) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _fake_tx(request)

    with Terminology(package_set, "http://tx.example/fhir/", transport=httpx.MockTransport(handler)) as term:
        hit = term.validate_code(ROUTE_CODES, SCT, "26643006", "oral route")
        assert hit == CodeCheck("valid", "", True, "Oral route")
        request = seen[-1]
        assert request.url.path == "/fhir/ValueSet/$validate-code"
        assert dict(request.url.params) == {
            "url": ROUTE_CODES,
            "system": SCT,
            "code": "26643006",
            "display": "oral route",
        }
        miss = term.validate_code(ROUTE_CODES, SCT, "1234")
        assert (
            miss.status == "invalid"
            and "not in the value set" in miss.message
            and "tx.example" in miss.message
        )
        calls = len(seen)
        assert term.validate_code(ROUTE_CODES, SCT, "1234").status == "invalid"
        assert len(seen) == calls  # cached
        # a locally decidable code never reaches the server
        assert term.validate_code(VACCINE_CODE, SCT, MEASLES).status == "valid"
        assert term.validate_code(VACCINE_CODE, SCT, "1").status == "invalid"
        assert len(seen) == calls
        # a versioned canonical is sent as url + valueSetVersion
        term.validate_code(f"{ROUTE_CODES}|4.0.1", SCT, "26643006")
        assert seen[-1].url.params["valueSetVersion"] == "4.0.1"
        assert term.member_of({"system": SCT, "code": "26643006"}, ROUTE_CODES) is True
        # a value set the server does not know
        unknown = term.validate_code("http://example.org/ValueSet/unknown-to-server", SCT, "1")
        assert unknown.status == "unknown" and "no such VS" in unknown.message
        # the CodeSystem operation for code-system checks
        assert term.validate_coding_in_system(SCT, "73211009").status == "valid"
        assert term.validate_coding_in_system(SCT, "0").status == "invalid"
        assert seen[-1].url.path == "/fhir/CodeSystem/$validate-code"


def test_tx_server_down(package_set: PackageSet) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = f"http://127.0.0.1:{port}/fhir"
    with Terminology(package_set, server, timeout=2.0) as term:
        check = term.validate_code(ROUTE_CODES, SCT, "26643006")
        assert check.status == "unknown" and server in check.message and "unreachable" in check.message
        start = time.perf_counter()
        assert term.validate_code(ROUTE_CODES, SCT, "26643007").status == "unknown"
        assert time.perf_counter() - start < 0.5  # the server is not retried at once
        assert term.validate_code(VACCINE_CODE, SCT, MEASLES).status == "valid"


def test_tx_server_garbage_answers(package_set: PackageSet) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>not FHIR</html>")

    with Terminology(package_set, "http://tx.example", transport=httpx.MockTransport(handler)) as term:
        check = term.validate_code(ROUTE_CODES, SCT, "26643006")
        assert check.status == "unknown" and "http://tx.example" in check.message


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = urlparse(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        ok = url.path == "/fhir/ValueSet/$validate-code" and params.get("code") == "26643006"
        body = json.dumps(_parameters(ok, None if ok else "not found", "Oral route" if ok else None)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def real_tx() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    finally:
        server.shutdown()
        server.server_close()


def test_tx_server_over_a_real_socket(package_set: PackageSet, real_tx: str) -> None:
    with Terminology(package_set, real_tx) as term:
        assert term.validate_code(ROUTE_CODES, SCT, "26643006").status == "valid"
        miss = term.validate_code(ROUTE_CODES, SCT, "999")
        assert miss.status == "invalid" and "not found" in miss.message


# -- properties --------------------------------------------------------------------------------


@given(st.text(max_size=30))
def test_ucum_syntax_never_raises(text: str) -> None:
    assert ucum_syntax_ok(text) in (True, False)
    if any(ch.isspace() for ch in text):
        assert not ucum_syntax_ok(text)


@pytest.mark.parametrize(
    "code", ["mg", "kg/m2", "mm[Hg]", "10*3/uL", "/min", "{score}", "%", "ug/(kg.min)", "1", "s-1", "{#}/min"]
)
def test_ucum_good(code: str) -> None:
    assert ucum_syntax_ok(code)


@pytest.mark.parametrize("code", ["", "mg/", "mg..L", "(mg", "mg L", "{a{b}}", "mg)", "mg/()"])
def test_ucum_bad(code: str) -> None:
    assert not ucum_syntax_ok(code)


@given(st.text(max_size=40))
def test_normalise_display_is_idempotent(text: str) -> None:
    once = normalise_display(text)
    assert normalise_display(once) == once


@settings(max_examples=200, deadline=None)
@given(system=st.sampled_from([SCT, CS_VACCINE_CODE, None, "http://x"]), code=st.text(max_size=20))
def test_validate_code_total_and_consistent(term: Terminology, system: str | None, code: str) -> None:
    expansion = term.expansion(VACCINE_CODE)
    assert expansion is not None
    check = term.validate_code(VACCINE_CODE, system, code)
    assert check.status in ("valid", "invalid")  # the vaccine code value set is fully enumerable
    member = code in expansion.by_code if system is None else (system, code) in expansion.members
    assert (check.status == "valid") == member
    assert term.member_of({"system": system, "code": code} if system else code, VACCINE_CODE) is member
