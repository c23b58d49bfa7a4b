"""Bundle rules, reference resolution inside Bundles and Element.id uniqueness, each passing and failing."""

from __future__ import annotations

from typing import Any

import pytest

from conformance.fhir.bundles import BundleIndex, bundle_issues, duplicate_id_issues, resolve_in_bundle
from conformance.fhir.outcome import Issue

BASE = "http://example.org/fhir/"


def urn(n: int) -> str:
    return f"urn:uuid:00000000-0000-4000-8000-{n:012d}"


def found(issues: list[Issue]) -> list[tuple[str, str, str | None]]:
    return sorted((i.severity, i.expression, i.rule) for i in issues)


def codes(issues: list[Issue]) -> list[str]:
    return sorted(i.code for i in issues)


def bundle(btype: str, *entries: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": btype, "entry": list(entries), **extra}


def entry(full_url: str | None, resource: dict[str, Any], **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"resource": resource, **extra}
    if full_url is not None:
        result["fullUrl"] = full_url
    return result


def patient(pid: str = "23", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, **extra}


def observation(oid: str = "1", subject: str | None = None, **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"resourceType": "Observation", "id": oid, "status": "final", **extra}
    if subject is not None:
        result["subject"] = {"reference": subject}
    return result


# -- fullUrl ---------------------------------------------------------------------------------------------


def test_absolute_full_urls_that_agree_with_the_id_pass() -> None:
    b = bundle(
        "collection",
        entry(BASE + "Patient/23", patient("23")),
        entry(urn(1), patient("another-id")),  # a urn:uuid need not repeat the id
        entry("urn:oid:1.2.3.4", patient("x")),
        entry("https://example.org/not/a/rest/url", patient("y")),
    )
    assert bundle_issues(b) == []


def test_relative_full_url_is_an_error() -> None:
    issues = bundle_issues(bundle("collection", entry("Patient/23", patient("23"))))
    assert found(issues) == [("error", "Bundle.entry[0]", "bundle-fullurl")]
    assert codes(issues) == ["invalid"]
    assert "absolute" in issues[0].message


def test_missing_full_url_is_an_error_outside_transactions() -> None:
    issues = bundle_issues(bundle("collection", entry(None, patient())))
    assert found(issues) == [("error", "Bundle.entry[0]", "bundle-fullurl")]


def test_transaction_post_may_omit_full_url_but_put_may_not() -> None:
    b = bundle(
        "transaction",
        entry(None, {"resourceType": "Patient"}, request={"method": "POST", "url": "Patient"}),
        entry(None, patient("9"), request={"method": "PUT", "url": "Patient/9"}),
        {"request": {"method": "DELETE", "url": "Patient/8"}},  # no resource, no fullUrl needed
    )
    assert found(bundle_issues(b)) == [("error", "Bundle.entry[1]", "bundle-fullurl")]


def test_batch_post_and_responses_may_omit_full_url() -> None:
    post = bundle("batch", entry(None, patient(), request={"method": "POST", "url": "Patient"}))
    response = bundle("transaction-response", entry(None, patient(), response={"status": "201 Created"}))
    assert bundle_issues(post) == []
    assert bundle_issues(response) == []


@pytest.mark.parametrize(
    ("full_url", "resource", "words"),
    [
        (BASE + "Patient/24", patient("23"), "/Patient/23"),
        (BASE + "Observation/23", patient("23"), "/Patient/23"),
        (BASE + "Patient/23", {"resourceType": "Patient"}, "has no id"),
    ],
)
def test_restful_full_url_must_agree_with_type_and_id(full_url: str, resource: dict, words: str) -> None:
    issues = bundle_issues(bundle("collection", entry(full_url, resource)))
    assert found(issues) == [("error", "Bundle.entry[0]", "bundle-fullurl")]
    assert words in issues[0].message


def test_what_the_bdl_invariants_say_is_not_repeated() -> None:
    duplicate = bundle("collection", entry(urn(1), patient("a")), entry(urn(1), patient("a")))  # bdl-7
    versioned = bundle("collection", entry(BASE + "Patient/a/_history/1", patient("b")))  # bdl-8
    first = bundle("document", entry(urn(1), patient("a")))  # bdl-11
    assert bundle_issues(duplicate) == []
    assert bundle_issues(versioned) == []
    assert bundle_issues(first) == []


# -- resolution --------------------------------------------------------------------------------------------


def test_relative_reference_resolves_against_the_restful_full_url_base() -> None:
    target = patient("23")
    b = bundle(
        "collection",
        entry(BASE + "Patient/23", target),
        entry(BASE + "Observation/1", observation("1", "Patient/23")),
    )
    assert resolve_in_bundle(b, "Patient/23", BASE + "Observation/1") == [target]
    assert resolve_in_bundle(b, BASE + "Patient/23", urn(5)) == [target]
    assert resolve_in_bundle(b, "Patient/23", "http://elsewhere.org/fhir/Observation/1") == []
    assert bundle_issues(b) == []


def test_relative_reference_does_not_resolve_from_a_urn_full_url() -> None:
    b = bundle("collection", entry(urn(1), patient("23")), entry(urn(2), observation("1", "Patient/23")))
    assert resolve_in_bundle(b, "Patient/23", urn(2)) == []
    assert resolve_in_bundle(b, "Patient/23", None) == []
    assert bundle_issues(b) == []  # a collection's references may point to a server


def test_version_specific_references_match_meta_version_id() -> None:
    v2 = patient("23", meta={"versionId": "2"})
    b = bundle("collection", entry(BASE + "Patient/23", v2))
    assert resolve_in_bundle(b, "Patient/23/_history/2", BASE + "Observation/1") == [v2]
    assert resolve_in_bundle(b, BASE + "Patient/23/_history/2", None) == [v2]
    assert resolve_in_bundle(b, "Patient/23/_history/3", BASE + "Observation/1") == []
    assert resolve_in_bundle(b, BASE + "Patient/23/_history/3", None) == []


def test_two_versions_of_one_full_url_make_an_unversioned_reference_ambiguous() -> None:
    v1, v2 = patient("23", meta={"versionId": "1"}), patient("23", meta={"versionId": "2"})
    b = bundle(
        "collection",
        entry(BASE + "Patient/23", v1),
        entry(BASE + "Patient/23", v2),
        entry(BASE + "Observation/1", observation("1", "Patient/23")),
        entry(BASE + "Observation/2", observation("2", "Patient/23/_history/2")),
    )
    assert resolve_in_bundle(b, "Patient/23", BASE + "Observation/1") == [v1, v2]
    assert resolve_in_bundle(b, "Patient/23/_history/2", BASE + "Observation/1") == [v2]
    issues = bundle_issues(b)
    assert found(issues) == [("error", "Bundle.entry[2].resource.subject", "bundle-reference")]
    assert codes(issues) == ["invalid"]
    assert "entry[0], entry[1]" in issues[0].message


def test_history_bundles_repeat_full_urls_without_ambiguity_errors() -> None:
    b = bundle(
        "history",
        entry(
            BASE + "Patient/23", patient("23", meta={"versionId": "1"}), request={"method": "PUT", "url": "x"}
        ),
        entry(
            BASE + "Patient/23", patient("23", meta={"versionId": "2"}), request={"method": "PUT", "url": "x"}
        ),
        entry(BASE + "Observation/1", observation("1", "Patient/23"), request={"method": "PUT", "url": "y"}),
    )
    assert bundle_issues(b) == []


def test_urn_reference_must_resolve_in_any_bundle() -> None:
    b = bundle("collection", entry(urn(1), observation("1", urn(9))))
    issues = bundle_issues(b)
    assert found(issues) == [("error", "Bundle.entry[0].resource.subject", "bundle-reference")]
    assert codes(issues) == ["not-found"]
    assert "not found in the bundle" in issues[0].message


def test_transaction_references_may_point_to_the_server_but_urns_may_not() -> None:
    b = bundle(
        "transaction",
        entry(urn(1), observation("1", "Patient/123"), request={"method": "POST", "url": "Observation"}),
        entry(
            urn(2),
            observation("2", "Patient?identifier=x|1"),
            request={"method": "POST", "url": "Observation"},
        ),
        entry(urn(3), observation("3", urn(1)), request={"method": "POST", "url": "Observation"}),
        entry(urn(4), observation("4", urn(8)), request={"method": "POST", "url": "Observation"}),
    )
    assert found(bundle_issues(b)) == [("error", "Bundle.entry[3].resource.subject", "bundle-reference")]


def test_reference_paths_follow_extensions_choices_and_contained_resources() -> None:
    obs = observation(
        "1",
        extension=[{"url": "http://example.org/ext", "valueReference": {"reference": urn(7)}}],
        contained=[{"resourceType": "Specimen", "id": "s", "subject": {"reference": urn(8)}}],
        specimen={"reference": "#s"},  # contained: not a Bundle matter
        performer=[{"reference": urn(9)}],
    )
    issues = bundle_issues(bundle("collection", entry(urn(1), obs)))
    assert found(issues) == [
        ("error", "Bundle.entry[0].resource.contained[0].subject", "bundle-reference"),
        ("error", "Bundle.entry[0].resource.extension[0].value.ofType(Reference)", "bundle-reference"),
        ("error", "Bundle.entry[0].resource.performer[0]", "bundle-reference"),
    ]


def test_contained_resources_resolve_against_their_container_entry() -> None:
    obs = observation(
        "1", contained=[{"resourceType": "Specimen", "id": "s", "subject": {"reference": "Patient/23"}}]
    )
    b = bundle("document", *_document_head(), entry(BASE + "Patient/23", patient("23")))
    b["entry"][0]["resource"]["section"][0]["entry"] = [{"reference": "Observation/1"}]
    b["entry"].append(entry(BASE + "Observation/1", obs))
    assert bundle_issues(b) == []


def test_nested_bundle_paths() -> None:
    inner = bundle("collection", entry("Patient/23", patient("23")))
    assert found(bundle_issues(inner, "Bundle.entry[0].resource")) == [
        ("error", "Bundle.entry[0].resource.entry[0]", "bundle-fullurl")
    ]


def test_properties_named_reference_that_are_not_references_are_left_alone() -> None:
    doc = document()
    imm = doc["entry"][3]["resource"]
    imm["education"] = [
        {"reference": "http://example.org/leaflet.pdf"}
    ]  # Immunization.education.reference: uri
    imm["extension"] = [
        {
            "url": "http://example.org/calc",
            "valueExpression": {"language": "text/fhirpath", "reference": "http://example.org/x"},
        }
    ]
    assert bundle_issues(doc) == []


def test_version_mismatch_is_explained() -> None:
    b = bundle(
        "document",
        entry(BASE + "Patient/23", patient("23", meta={"versionId": "1"})),
        entry(BASE + "Observation/1", observation("1", "Patient/23/_history/2")),
    )
    issues = bundle_issues(b)
    assert found(issues) == [("error", "Bundle.entry[1].resource.subject", "bundle-reference")]
    assert "meta.versionId '1', not '2'" in issues[0].message
    assert "no entry has the fullUrl" not in issues[0].message


def test_bundle_index_gives_the_full_url_of_an_entry_resource() -> None:
    target = patient("23")
    index = BundleIndex(bundle("collection", entry(BASE + "Patient/23", target)))
    assert index.full_url_of(target) == BASE + "Patient/23"
    assert index.full_url_of(patient("23")) is None
    assert index.resolve_indices("Patient/23", BASE + "Encounter/e") == [0]


# -- documents -----------------------------------------------------------------------------------------------


def _document_head() -> list[dict[str, Any]]:
    composition = {
        "resourceType": "Composition",
        "id": "c",
        "status": "final",
        "subject": {"reference": "Patient/23"},
        "author": [{"reference": "Practitioner/p"}],
        "section": [{"title": "Vaccinations", "entry": [{"reference": "Immunization/i"}]}],
    }
    return [
        entry(BASE + "Composition/c", composition),
        entry(BASE + "Practitioner/p", {"resourceType": "Practitioner", "id": "p"}),
    ]


def document(*more: dict[str, Any], **extra: Any) -> dict[str, Any]:
    imm = {
        "resourceType": "Immunization",
        "id": "i",
        "patient": {"reference": "Patient/23"},
        "performer": [{"actor": {"reference": "Practitioner/p"}}],
    }
    return bundle(
        "document",
        *_document_head(),
        entry(BASE + "Patient/23", patient("23")),
        entry(BASE + "Immunization/i", imm),
        *more,
        **extra,
    )


def test_complete_document_passes_with_provenance_and_stylesheet() -> None:
    provenance = {"resourceType": "Provenance", "id": "pv", "target": [{"reference": "Immunization/i"}]}
    binary = {"resourceType": "Binary", "id": "css", "contentType": "text/css"}
    doc = document(
        entry(BASE + "Provenance/pv", provenance),
        entry(BASE + "Binary/css", binary),
        link=[{"relation": "stylesheet", "url": "Binary/css"}],
    )
    assert bundle_issues(doc) == []


def test_document_entry_not_reached_from_the_composition_is_a_warning() -> None:
    doc = document(entry(BASE + "Observation/o", observation("o", "Patient/23")))
    issues = bundle_issues(doc)
    assert found(issues) == [("warning", "Bundle.entry[4]", "bundle-document")]
    assert codes(issues) == ["informational"]
    assert BASE + "Observation/o" in issues[0].message


def test_document_reference_from_the_composition_must_be_in_the_bundle() -> None:
    doc = document()
    doc["entry"][0]["resource"]["encounter"] = {"reference": "Encounter/e"}
    issues = bundle_issues(doc)
    assert found(issues) == [("error", "Bundle.entry[0].resource.encounter", "bundle-reference")]
    assert codes(issues) == ["not-found"]


def test_document_references_are_followed_recursively() -> None:
    doc = document()
    doc["entry"][3]["resource"]["location"] = {"reference": "Location/l"}
    assert found(bundle_issues(doc)) == [("error", "Bundle.entry[3].resource.location", "bundle-reference")]


def test_document_relative_reference_from_a_urn_entry_is_not_found_with_a_hint() -> None:
    doc = document()
    doc["entry"][0]["fullUrl"] = urn(1)  # Composition's relative references have no base now
    issues = bundle_issues(doc)
    assert found(issues) == [
        ("error", "Bundle.entry[0].resource.author[0]", "bundle-reference"),
        ("error", "Bundle.entry[0].resource.section[0].entry[0]", "bundle-reference"),
        ("error", "Bundle.entry[0].resource.subject", "bundle-reference"),
        ("warning", "Bundle.entry[1]", "bundle-document"),
        ("warning", "Bundle.entry[2]", "bundle-document"),
        ("warning", "Bundle.entry[3]", "bundle-document"),
    ]
    subject = next(i for i in issues if i.expression.endswith("subject"))
    assert "entry[2] is Patient/23" in subject.message


def test_document_whose_first_entry_is_not_a_composition_is_left_to_bdl_11() -> None:
    doc = document()
    doc["entry"].insert(0, doc["entry"].pop(2))  # Patient first
    assert bundle_issues(doc) == []


# -- messages --------------------------------------------------------------------------------------------------


def message(*more: dict[str, Any]) -> dict[str, Any]:
    header = {
        "resourceType": "MessageHeader",
        "id": "h",
        "eventCoding": {"system": "http://example.org/events", "code": "vaccination"},
        "source": {"endpoint": "http://example.org/app"},
        "sender": {"reference": "Organization/o"},  # may live on a server
        "focus": [{"reference": urn(2)}],
    }
    imm = {"resourceType": "Immunization", "id": "i", "patient": {"reference": urn(3)}}
    return bundle("message", entry(urn(1), header), entry(urn(2), imm), entry(urn(3), patient("p")), *more)


def test_message_with_its_focus_passes() -> None:
    provenance = {"resourceType": "Provenance", "id": "pv", "target": [{"reference": urn(2)}]}
    assert bundle_issues(message(entry(urn(4), provenance))) == []


def test_message_focus_must_be_in_the_bundle() -> None:
    msg = message()
    msg["entry"][0]["resource"]["focus"].append({"reference": "Immunization/j"})
    issues = bundle_issues(msg)
    assert found(issues) == [("error", "Bundle.entry[0].resource.focus[1]", "bundle-reference")]
    assert "focus" in issues[0].message


def test_message_entry_not_reached_from_the_header_is_a_warning() -> None:
    issues = bundle_issues(message(entry(urn(4), observation("o"))))
    assert found(issues) == [("warning", "Bundle.entry[3]", "bundle-message")]


# -- searchsets ------------------------------------------------------------------------------------------------


def searchset(self_url: str | None, *entries: dict[str, Any]) -> dict[str, Any]:
    links = [{"relation": "self", "url": self_url}] if self_url else []
    return bundle("searchset", *entries, link=links)


def match(resource: dict[str, Any], mode: str = "match") -> dict[str, Any]:
    rid = resource.get("id", "x")
    return entry(f"{BASE}{resource['resourceType']}/{rid}", resource, search={"mode": mode})


def test_valid_searchset_passes() -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": []}
    b = searchset(
        BASE + "Immunization?patient=23",
        match({"resourceType": "Immunization", "id": "i"}),
        match(patient("23"), "include"),
        entry(None, outcome, search={"mode": "outcome"}),  # an outcome needs no fullUrl
    )
    assert bundle_issues(b) == []


def test_searchset_without_self_link_is_a_warning() -> None:
    issues = bundle_issues(searchset(None, match(patient())))
    assert found(issues) == [("warning", "Bundle", "bundle-searchset")]


def test_searchset_match_must_have_the_searched_type_and_an_id() -> None:
    no_id = {"resourceType": "Immunization"}
    b = searchset(
        BASE + "Immunization/_search?patient=23",
        match(patient("23")),
        entry(urn(1), no_id, search={"mode": "match"}),
    )
    assert found(bundle_issues(b)) == [
        ("error", "Bundle.entry[0].resource", "bundle-searchset"),
        ("error", "Bundle.entry[1].resource", "bundle-searchset"),
    ]


def test_searchset_types_from_the_type_parameter() -> None:
    b = searchset(
        BASE + "?_type=Patient%2CObservation&name=x",
        match(patient()),
        match(observation()),
        match({"resourceType": "Immunization", "id": "i"}),
    )
    assert found(bundle_issues(b)) == [("error", "Bundle.entry[2].resource", "bundle-searchset")]


def test_searchset_outcome_entry_must_be_an_operation_outcome() -> None:
    b = searchset(BASE + "Patient", match(patient()), match(patient("24"), "outcome"))
    issues = bundle_issues(b)
    assert found(issues) == [("error", "Bundle.entry[1].resource", "bundle-searchset")]
    assert "OperationOutcome" in issues[0].message


def test_searchset_search_mode_missing() -> None:
    some = searchset(BASE + "Patient", match(patient()), entry(BASE + "Patient/24", patient("24")))
    none = searchset(BASE + "Patient", entry(BASE + "Patient/24", patient("24")))
    assert found(bundle_issues(some)) == [("warning", "Bundle.entry[1]", "bundle-searchset")]
    assert found(bundle_issues(none)) == [("warning", "Bundle", "bundle-searchset")]


def test_searchset_references_may_point_to_the_server() -> None:
    b = searchset(BASE + "Observation", match(observation("1", "Patient/404")))
    assert bundle_issues(b) == []


# -- Element.id ------------------------------------------------------------------------------------------------


def test_no_element_ids_no_issues() -> None:
    assert duplicate_id_issues(patient(name=[{"family": "Doe"}]), "Patient") == []


def test_distinct_element_ids_pass_and_resource_id_is_not_an_element_id() -> None:
    p = patient("a", name=[{"id": "a", "family": "Doe"}], telecom=[{"id": "b", "value": "1"}])
    assert duplicate_id_issues(p, "Patient") == []


def test_duplicate_ids_in_datatypes() -> None:
    p = patient(name=[{"id": "n", "family": "Doe"}], telecom=[{"id": "n", "system": "phone", "value": "1"}])
    issues = duplicate_id_issues(p, "Patient")
    assert found(issues) == [("error", "Patient.telecom[0]", "duplicate-id")]
    assert codes(issues) == ["invalid"]
    assert "Patient.name[0]" in issues[0].message


def test_duplicate_ids_in_backbone_elements_one_error_per_repetition() -> None:
    imm = {
        "resourceType": "Immunization",
        "performer": [{"id": "p", "actor": {"reference": "#x"}}, {"id": "p"}],
        "protocolApplied": [{"id": "p", "doseNumberPositiveInt": 1}],
    }
    assert found(duplicate_id_issues(imm, "Immunization")) == [
        ("error", "Immunization.performer[1]", "duplicate-id"),
        ("error", "Immunization.protocolApplied[0]", "duplicate-id"),
    ]


def test_duplicate_ids_on_primitives_and_choices_have_hl7_paths() -> None:
    imm = {
        "resourceType": "Immunization",
        "_occurrenceDateTime": {"id": "d"},
        "doseQuantity": {"id": "d", "value": 1},
        "extension": [{"url": "http://example.org/e", "valueCodeableConcept": {"id": "d"}}],
        "protocolApplied": [{"doseNumberPositiveInt": 1, "_doseNumberPositiveInt": {"id": "d"}}],
        "note": [{"text": "x"}, {"text": "y", "_text": {"id": "d"}}],
    }
    assert found(duplicate_id_issues(imm, "Bundle.entry[0].resource")) == [
        ("error", "Bundle.entry[0].resource.doseQuantity", "duplicate-id"),
        ("error", "Bundle.entry[0].resource.extension[0].value.ofType(CodeableConcept)", "duplicate-id"),
        ("error", "Bundle.entry[0].resource.note[1].text", "duplicate-id"),
        (
            "error",
            "Bundle.entry[0].resource.protocolApplied[0].doseNumber.ofType(positiveInt)",
            "duplicate-id",
        ),
    ]
    obs = observation(valueQuantity={"id": "q"}, component=[{"valueQuantity": {"id": "q"}}])
    assert found(duplicate_id_issues(obs, "Observation")) == [
        ("error", "Observation.component[0].value.ofType(Quantity)", "duplicate-id")
    ]


def test_duplicate_contained_resource_ids() -> None:
    imm = {
        "resourceType": "Immunization",
        "contained": [
            {"resourceType": "Encounter", "id": "c"},
            {"resourceType": "Location", "id": "c"},
            {"resourceType": "Location", "id": "d"},
        ],
    }
    issues = duplicate_id_issues(imm, "Immunization")
    assert found(issues) == [("error", "Immunization.contained[1]", "duplicate-id")]
    assert "contained[0]" in issues[0].message


def test_ids_inside_contained_resources_are_scoped_per_resource() -> None:
    encounter = {
        "resourceType": "Encounter",
        "id": "enc",
        "identifier": [{"id": "x"}],
        "type": [{"id": "x"}],
    }
    imm = {"resourceType": "Immunization", "contained": [encounter], "identifier": [{"id": "x"}]}
    assert duplicate_id_issues(imm, "Immunization") == []  # the container does not see inside
    assert found(duplicate_id_issues(encounter, "Immunization.contained[0]")) == [
        ("error", "Immunization.contained[0].type[0]", "duplicate-id")
    ]


def test_bundle_entries_are_their_own_scopes() -> None:
    b = bundle(
        "collection", entry(urn(1), patient(name=[{"id": "x"}])), entry(urn(2), patient(name=[{"id": "x"}]))
    )
    b["entry"][0]["id"] = "e"
    b["entry"][1]["id"] = "e"
    assert found(duplicate_id_issues(b, "Bundle")) == [("error", "Bundle.entry[1]", "duplicate-id")]


def test_structure_definition_snapshot_and_differential_are_separate_scopes() -> None:
    sd = {
        "resourceType": "StructureDefinition",
        "id": "p",
        "differential": {
            "element": [{"id": "Patient", "path": "Patient"}, {"id": "Patient.name", "path": "x"}]
        },
        "snapshot": {
            "element": [
                {"id": "Patient", "path": "Patient"},
                {"id": "Patient.name", "path": "Patient.name", "binding": {"id": "b"}},
                {"id": "Patient.gender", "path": "Patient.gender", "binding": {"id": "b"}},
            ]
        },
    }
    assert found(duplicate_id_issues(sd, "StructureDefinition")) == [
        ("error", "StructureDefinition.snapshot.element[2].binding", "duplicate-id")
    ]
