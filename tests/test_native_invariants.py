"""Native ele-1, ext-1 and dom-2..dom-6 agree with the FHIRPath evaluation of the same R4 expressions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance.fhir.definitions import PackageSet
from conformance.fhir.fhirpath import EvalContext, FhirPath
from conformance.fhir.fhirpath_compiled import Node
from conformance.fhir.native_invariants import (
    DOM_2,
    DOM_3,
    DOM_4,
    DOM_5,
    DOM_6,
    ELE_1,
    EXT_1,
    NATIVE,
    _child_type,
    _node_type,
    ele1_primitive,
)
from tests.resolvers import local_resolver

EXPRESSIONS = {
    "ele-1": ELE_1,
    "ext-1": EXT_1,
    "dom-2": DOM_2,
    "dom-3": DOM_3,
    "dom-4": DOM_4,
    "dom-5": DOM_5,
    "dom-6": DOM_6,
}
DOM_KEYS = ("dom-2", "dom-3", "dom-4", "dom-5", "dom-6")
FP = FhirPath(resolver=local_resolver)
SLOW = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def native(key: str, node: object, ctx: EvalContext) -> bool:
    return NATIVE[(key, EXPRESSIONS[key])](node, ctx)


def interpreted(key: str, node: object, ctx: EvalContext) -> bool:
    """The FHIRPath verdict (compiled engine); a ``[value, _name]`` primitive becomes a typed Node."""
    if isinstance(node, list) and len(node) == 2 and (node[1] is None or isinstance(node[1], dict)):
        node = Node(node[0], node[1], ctx.node_type)
    return FP.compile(EXPRESSIONS[key]).is_true(node, ctx)


def at(resource: dict, node_type: str | None = None) -> EvalContext:
    return EvalContext(resource, resource, node_type or resource.get("resourceType"))


def agree(key: str, node: object, ctx: EvalContext) -> bool:
    """Both verdicts, asserted equal; the verdict."""
    verdict = native(key, node, ctx)
    assert interpreted(key, node, ctx) is verdict, (key, node)
    return verdict


# -- the keys are the R4 core texts ---------------------------------------------------------------


def test_keys_are_the_exact_core_expressions(package_set: PackageSet) -> None:
    core = "http://hl7.org/fhir/StructureDefinition/"
    texts: dict[str, set[str]] = {}
    for name in ("Element", "Extension", "DomainResource", "Immunization", "Patient", "CodeableConcept"):
        for element in package_set.resolve(core + name)["snapshot"]["element"]:
            for constraint in element.get("constraint", ()):
                if constraint["key"] in EXPRESSIONS:
                    texts.setdefault(constraint["key"], set()).add(constraint["expression"])
    assert texts == {key: {text} for key, text in EXPRESSIONS.items()}
    assert set(NATIVE) == set(EXPRESSIONS.items())


def test_every_snapshot_uses_the_same_texts(package_set: PackageSet) -> None:
    """No profile in the loaded packages rewrites them (if one did, it would fall back to FHIRPath)."""
    for entry in package_set.by_type("StructureDefinition"):
        for element in package_set.read(entry).get("snapshot", {}).get("element", ()):
            for constraint in element.get("constraint", ()):
                if constraint["key"] in EXPRESSIONS:
                    assert constraint["expression"] == EXPRESSIONS[constraint["key"]], entry.url


# -- ext-1 ----------------------------------------------------------------------------------------


EXT_CTX = at({"resourceType": "Basic"}, "Extension")


@pytest.mark.parametrize(
    ("extension", "expected"),
    [
        ({"url": "a", "valueString": "x"}, True),
        ({"url": "a", "extension": [{"url": "b", "valueString": "x"}]}, True),
        ({"url": "a"}, False),  # neither
        ({"url": "a", "valueString": "x", "extension": [{"url": "b", "valueString": "y"}]}, False),  # both
        (
            {"url": "a", "_valueString": {"extension": [{"url": "b", "valueCode": "c"}]}},
            True,
        ),  # value w/o value
        ({"url": "a", "valueBoolean": False}, True),  # a false value is a value
        ({"url": "a", "valueInteger": 0}, True),
        ({"url": "a", "valueCodeableConcept": {"text": "t"}}, True),
        ({"url": "a", "extension": []}, False),  # an empty array is no extension
        ({"url": "a", "id": "e1", "valueAge": {"value": 1}}, True),
    ],
)
def test_ext1_cases(extension: dict, expected: bool) -> None:
    assert agree("ext-1", extension, EXT_CTX) is expected


REFS = st.sampled_from(
    [
        "#a",
        "#b",
        "#enc",
        "#loc",
        "#",
        "#missing",
        "Patient/1",
        "urn:uuid:1f0e0a3c-2b6d-4e8a-9c1d-000000000001",
    ]
)
IDS = st.sampled_from(["a", "b", "enc", "loc"])
SHORT_TEXT = st.text(alphabet="ab#", max_size=3)
EXT_VALUES = st.one_of(
    st.builds(lambda v: {"valueString": v}, SHORT_TEXT),
    st.builds(lambda v: {"valueBoolean": v}, st.booleans()),
    st.builds(lambda v: {"valueInteger": v}, st.integers(-2, 2)),
    st.builds(lambda r: {"valueReference": {"reference": r}}, REFS),
    st.just({"valueReference": {"display": "only a display"}}),
    st.builds(lambda r: {"valueCanonical": r}, REFS),
    st.builds(lambda r: {"valueUri": r}, REFS),
    st.builds(lambda r: {"valueUrl": r}, REFS),
    st.just({"valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]}}),
    st.just({"valueAge": {"value": 3, "unit": "a"}}),
    st.just({"_valueString": {"extension": [{"url": "x", "valueCode": "unknown"}]}}),
    st.just({"valueString": "v", "_valueString": {"id": "p"}}),
)


def _extension(children: Any = None) -> st.SearchStrategy[dict]:
    parts: dict[str, st.SearchStrategy] = {"url": st.sampled_from(["http://example.org/e", "sub"])}
    optional: dict[str, st.SearchStrategy] = {"id": IDS}
    if children is not None:
        optional["extension"] = st.lists(children, max_size=3)
    return st.tuples(st.fixed_dictionaries(parts, optional=optional), st.one_of(st.none(), EXT_VALUES)).map(
        lambda pair: pair[0] | (pair[1] or {})
    )


EXTENSIONS = st.recursive(_extension(), _extension, max_leaves=8)


@given(EXTENSIONS)
@settings(max_examples=300, deadline=None)
def test_ext1_agrees_with_fhirpath(extension: dict) -> None:
    agree("ext-1", extension, EXT_CTX)


def test_ext1_on_a_non_object() -> None:
    assert agree("ext-1", "not an extension", EXT_CTX) is False


# -- ele-1 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "node_type", "expected"),
    [
        ({"text": "x"}, "CodeableConcept", True),
        ({"id": "c1"}, "CodeableConcept", False),  # only an id
        ({}, "CodeableConcept", False),
        ({"id": "c1", "coding": [{"code": "a"}]}, "CodeableConcept", True),
        ({"coding": []}, "CodeableConcept", False),  # an empty array is no child
        ({"url": "a"}, "Extension", True),  # url is a child (ext-1 is what fails here)
        ({"actor": {"display": "Dr"}}, "Immunization.performer", True),
        ({"extension": [{"url": "a", "valueString": "b"}]}, "HumanName", True),
        ({"family": "Doe", "_family": {"id": "f"}}, "HumanName", True),
        ("1990-01-01", "date", True),
        (False, "boolean", True),
        ({"extension": [{"url": "a", "valueCode": "b"}]}, "date", True),  # '_x' companion alone
        ({"id": "x"}, "date", False),  # companion with only an id
        (["1990-01-01", {"id": "x"}], "date", True),
    ],
)
def test_ele1_cases(node: object, node_type: str, expected: bool) -> None:
    assert agree("ele-1", node, at({"resourceType": "Patient"}, node_type)) is expected


def test_ele1_element_whose_only_child_is_a_primitive_with_only_extensions() -> None:
    """Spec: `{"_family": {...}}` is a HumanName with one child element, family (with an extension but
    no value), so ele-1 holds. fhirpathpy's children() skips '_' properties, finds no child and says
    false: the native verdict follows the specification (and the Java validator)."""
    name = {
        "_family": {
            "extension": [
                {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "masked"}
            ]
        }
    }
    ctx = at({"resourceType": "Patient"}, "HumanName")
    assert native("ele-1", name, ctx) is True
    assert interpreted("ele-1", name, ctx) is True  # fhirpathpy alone said false: children() skips '_'
    given_only = {"given": [None], "_given": [{"extension": [{"url": "u", "valueCode": "masked"}]}]}
    assert native("ele-1", given_only, ctx) is True


@pytest.mark.parametrize(
    ("value", "underscore", "expected"),
    [
        ("x", None, True),
        (0, None, True),
        (False, {"id": "i"}, True),
        (None, {"extension": [{"url": "u", "valueCode": "c"}]}, True),
        (None, {"id": "i"}, False),
        (None, {"extension": []}, False),
        (None, {}, False),
        (None, None, False),
    ],
)
def test_ele1_primitive(value: object, underscore: dict | None, expected: bool) -> None:
    assert ele1_primitive(value, underscore) is expected


PRIMITIVE_VALUES = st.one_of(st.none(), SHORT_TEXT, st.booleans(), st.integers(-3, 3))
UNDERSCORES = st.one_of(
    st.none(),
    st.fixed_dictionaries({}, optional={"id": IDS, "extension": st.lists(EXTENSIONS, max_size=2)}),
)


@given(PRIMITIVE_VALUES, UNDERSCORES, st.sampled_from(["string", "boolean", "integer", "code", "dateTime"]))
@settings(max_examples=200, deadline=None)
def test_ele1_primitive_agrees_with_fhirpath(value: object, underscore: dict | None, node_type: str) -> None:
    """The element as fhirpathpy holds it: the value, the `_name` object, or both as one collection."""
    if value is None and underscore is None:
        return  # no element at all
    node = value if underscore is None else underscore if value is None else [value, underscore]
    ctx = at({"resourceType": "Patient"}, node_type)
    assert interpreted("ele-1", node, ctx) is ele1_primitive(value, underscore)
    assert native("ele-1", node, ctx) is ele1_primitive(value, underscore)


CODINGS = st.fixed_dictionaries(
    {}, optional={"system": st.just("http://snomed.info/sct"), "code": SHORT_TEXT, "id": IDS}
)
COMPLEX = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "id": IDS,
            "coding": st.lists(CODINGS, max_size=2),
            "text": SHORT_TEXT,
            "extension": st.lists(EXTENSIONS, max_size=2),
        },
    ).map(lambda d: ("CodeableConcept", d)),
    st.fixed_dictionaries(
        {},
        optional={"id": IDS, "reference": REFS, "display": SHORT_TEXT, "identifier": st.just({"value": "1"})},
    ).map(lambda d: ("Reference", d)),
    EXTENSIONS.map(lambda d: ("Extension", d)),
)


@given(COMPLEX)
@settings(max_examples=300, deadline=None)
def test_ele1_complex_agrees_with_fhirpath(typed: tuple[str, dict]) -> None:
    node_type, node = typed
    agree("ele-1", node, at({"resourceType": "Basic"}, node_type))


# -- dom-2 .. dom-6 -------------------------------------------------------------------------------


DIV = '<div xmlns="http://www.w3.org/1999/xhtml">text</div>'


def immunization(**fields: Any) -> dict:
    return {
        "resourceType": "Immunization",
        "id": "imm",
        "status": "completed",
        "vaccineCode": {"text": "x"},
        "patient": {"reference": "Patient/1"},
        "occurrenceDateTime": "2024-01-01",
        **fields,
    }


def encounter(rid: str | None = "enc", **fields: Any) -> dict:
    resource = {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, **fields}
    if rid is not None:
        resource["id"] = rid
    return resource


def ext(**value: Any) -> dict:
    return {"url": "http://example.org/e", **value}


DOM_CASES: list[tuple[str, dict, dict[str, bool]]] = [
    (
        "no contained",
        immunization(),
        {"dom-2": True, "dom-3": True, "dom-4": True, "dom-5": True, "dom-6": False},
    ),
    ("narrative", immunization(text={"status": "generated", "div": DIV}), {"dom-6": True}),
    ("narrative without div", immunization(text={"status": "empty"}), {"dom-6": False}),
    ("referenced", immunization(contained=[encounter()], encounter={"reference": "#enc"}), {"dom-3": True}),
    ("unreferenced", immunization(contained=[encounter()]), {"dom-3": False}),
    (
        "dangling reference",
        immunization(contained=[encounter()], encounter={"reference": "#other"}),
        {"dom-3": False},
    ),
    ("no id", immunization(contained=[encounter(None)]), {"dom-3": True}),
    (
        "referenced from another contained resource",
        immunization(
            contained=[
                encounter(location=[{"location": {"reference": "#loc"}}]),
                {"resourceType": "Location", "id": "loc"},
            ],
            encounter={"reference": "#enc"},
        ),
        {"dom-3": True},
    ),
    (
        "only referenced by itself",
        immunization(contained=[encounter(partOf={"reference": "#enc"})]),
        {"dom-3": True},  # '#'+id is among %resource.descendants().reference, which includes itself
    ),
    (
        "refers to the container",
        immunization(contained=[encounter(subject={"reference": "#"})]),
        {"dom-3": True},
    ),
    (
        "refers to the container by canonical",
        immunization(contained=[encounter(extension=[ext(valueCanonical="#")])]),
        {"dom-3": True},
    ),
    (
        "'#' as a uri does not count for the container",
        immunization(contained=[encounter(extension=[ext(valueUri="#")])]),
        {"dom-3": False},
    ),
    (
        "canonical reference",
        immunization(contained=[encounter()], extension=[ext(valueCanonical="#enc")]),
        {"dom-3": True},
    ),
    (
        "uri reference",
        immunization(contained=[encounter()], extension=[ext(valueUri="#enc")]),
        {"dom-3": True},
    ),
    (
        "url reference",
        immunization(contained=[encounter()], extension=[ext(valueUrl="#enc")]),
        {"dom-3": True},
    ),
    (
        "meta.profile is canonical",
        immunization(contained=[encounter()], meta={"profile": ["#enc"]}),
        {"dom-3": True},
    ),
    ("a string does not count", immunization(contained=[encounter()], lotNumber="#enc"), {"dom-3": False}),
    (
        "a string extension does not count",
        immunization(contained=[encounter()], extension=[ext(valueString="#enc")]),
        {"dom-3": False},
    ),
    (
        "inside a primitive's extension",
        immunization(
            contained=[encounter()], _status={"extension": [ext(valueReference={"reference": "#enc"})]}
        ),
        {"dom-3": True},
    ),
    (
        "nested contained",
        immunization(contained=[encounter(contained=[encounter("inner")])], encounter={"reference": "#enc"}),
        {"dom-2": False},
    ),
    (
        "contained versionId",
        immunization(contained=[encounter(meta={"versionId": "1"})], encounter={"reference": "#enc"}),
        {"dom-4": False, "dom-5": True},
    ),
    (
        "contained lastUpdated",
        immunization(
            contained=[encounter(meta={"lastUpdated": "2024-01-01T00:00:00Z"})],
            encounter={"reference": "#enc"},
        ),
        {"dom-4": False},
    ),
    (
        "contained versionId with only an extension",
        immunization(contained=[encounter(meta={"_versionId": {"extension": [ext(valueCode="x")]}})]),
        {"dom-4": False},
    ),
    (
        "contained security",
        immunization(
            contained=[encounter(meta={"security": [{"code": "R"}]})], encounter={"reference": "#enc"}
        ),
        {"dom-5": False, "dom-4": True},
    ),
    (
        "contained profile is fine",
        immunization(contained=[encounter(meta={"profile": ["http://x"]})]),
        {"dom-4": True, "dom-5": True},
    ),
]


@pytest.mark.parametrize(("name", "resource", "expected"), DOM_CASES, ids=[c[0] for c in DOM_CASES])
def test_dom_cases(name: str, resource: dict, expected: dict[str, bool]) -> None:
    ctx = at(resource)
    verdicts = {key: agree(key, resource, ctx) for key in DOM_KEYS}
    assert {key: verdicts[key] for key in expected} == expected


def test_dom3_reference_to_the_container_with_an_extension_on_the_reference() -> None:
    """Spec: `reference` is '#' (its `_reference` only adds an extension), so the contained resource
    refers to its container and dom-3 holds. fhirpathpy returns the value and the `_reference`
    object as two items, so `reference = '#'` compares a two-item collection and is false."""
    contained = encounter(subject={"reference": "#", "_reference": {"extension": [ext(valueCode="x")]}})
    resource = immunization(contained=[contained])
    assert native("dom-3", resource, at(resource)) is True
    assert interpreted("dom-3", resource, at(resource)) is True  # fhirpathpy alone said false


def test_dom3_contained_id_with_only_an_extension() -> None:
    """Spec: an id without a value makes '#'+id empty, so dom-3 does not judge that resource (like a
    resource without id). fhirpathpy's `+` fails on the `_id` object (it looks for a Quantity's
    `system` key in it), so the interpreter cannot evaluate dom-3 here."""
    resource = immunization(contained=[encounter(None, _id={"extension": [ext(valueCode="x")]})])
    assert native("dom-3", resource, at(resource)) is True
    assert interpreted("dom-3", resource, at(resource)) is True  # fhirpathpy alone could not evaluate it


def _link(kind: str, target: str) -> dict:
    """Where a generated resource mentions ``target``: each kind has its own FHIR type."""
    if kind == "reference":
        return {"extension": [ext(valueReference={"reference": target})]}
    if kind == "canonical":
        return {"extension": [ext(valueCanonical=target)]}
    if kind == "uri":
        return {"extension": [ext(valueUri=target)]}
    if kind == "url":
        return {"extension": [ext(valueUrl=target)]}
    if kind == "string":
        return {"extension": [ext(valueString=target)]}
    if kind == "profile":
        return {"meta": {"profile": [target]}}
    if kind == "primitive-extension":
        return {"_language": {"extension": [ext(valueReference={"reference": target})]}}
    raise AssertionError(kind)


LINK_KINDS = st.sampled_from(
    ["reference", "canonical", "uri", "url", "string", "profile", "primitive-extension"]
)
LINKS = st.lists(st.tuples(LINK_KINDS, REFS), max_size=3)
META = st.fixed_dictionaries(
    {},
    optional={
        "versionId": st.just("1"),
        "_versionId": st.just({"extension": [ext(valueCode="x")]}),
        "lastUpdated": st.just("2024-01-01T00:00:00Z"),
        "security": st.just(
            [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]
        ),
        "profile": st.lists(REFS, max_size=1),
        "source": REFS,
    },
)


def _merge(resource: dict, links: list[tuple[str, str]]) -> dict:
    for kind, target in links:
        for key, value in _link(kind, target).items():
            if isinstance(value, list) and key in resource:
                resource[key] = resource[key] + value
            elif isinstance(value, dict) and key in resource:
                resource[key] = resource[key] | value
            else:
                resource[key] = value
    return resource


@st.composite
def contained_resources(draw: st.DrawFn, nested: bool = True) -> dict:
    kind = draw(st.sampled_from(["Encounter", "Location", "Observation", "Medication"]))
    resource: dict[str, Any] = {"resourceType": kind}
    rid = draw(st.one_of(st.none(), IDS))
    if rid is not None:
        resource["id"] = rid
    if draw(st.booleans()):
        resource["meta"] = draw(META)
    if kind == "Encounter" and draw(st.booleans()):
        resource["location"] = [{"location": {"reference": draw(REFS)}}]
    if kind == "Observation" and draw(st.booleans()):
        resource["code"] = {"coding": [{"system": draw(REFS), "code": "x"}]}  # Coding.system is a uri
    if kind == "Location" and draw(st.booleans()):
        resource["name"] = draw(REFS)  # a string: never a reference
    if nested and draw(st.integers(0, 5)) == 0:
        resource["contained"] = [draw(contained_resources(nested=False))]
    if draw(st.integers(0, 3)) == 0:
        resource["text"] = {"status": "generated", "div": DIV}
    return _merge(resource, draw(LINKS))


@st.composite
def domain_resources(draw: st.DrawFn) -> dict:
    resource = immunization()
    if draw(st.booleans()):
        resource["encounter"] = {"reference": draw(REFS)}
    if draw(st.booleans()):
        resource["reaction"] = [{"detail": {"reference": draw(REFS)}}]
    if draw(st.booleans()):
        resource["performer"] = [{"actor": {"reference": draw(REFS)}}]
    if draw(st.booleans()):
        resource["lotNumber"] = draw(REFS)  # a string
    text = draw(st.sampled_from([None, {"status": "generated", "div": DIV}, {"status": "empty"}]))
    if text is not None:
        resource["text"] = text
    contained = draw(st.lists(contained_resources(), max_size=3))
    if contained:
        resource["contained"] = contained
    return _merge(resource, draw(LINKS))


@given(domain_resources())
@SLOW
def test_dom_invariants_agree_with_fhirpath(resource: dict) -> None:
    ctx = at(resource)
    for key in DOM_KEYS:
        agree(key, resource, ctx)


# -- on every example of the packages -------------------------------------------------------------


def _elements(value: dict, value_type: str) -> Iterator[tuple[dict, str]]:
    """Every complex element below a resource with its model type (resources themselves left out)."""
    for key, child in value.items():
        child_type = _child_type(value_type, key)
        for item in child if isinstance(child, list) else (child,):
            if isinstance(item, dict):
                item_type = _node_type(item, child_type)
                if "resourceType" not in item and not key.startswith("_"):
                    yield item, item_type
                yield from _elements(item, item_type)


def test_native_and_fhirpath_agree_on_every_package_example(package_set: PackageSet) -> None:
    checked = 0
    for entry in package_set.examples():
        resource = package_set.read(entry)
        if not isinstance(resource, dict) or "resourceType" not in resource:
            continue
        ctx = at(resource)
        if resource["resourceType"] not in ("Bundle", "Parameters", "Binary"):
            for key in DOM_KEYS:
                agree(key, resource, ctx)
        for element, element_type in _elements(resource, resource["resourceType"]):
            element_ctx = EvalContext(resource, resource, element_type)
            agree("ele-1", element, element_ctx)
            if element_type == "Extension":
                agree("ext-1", element, element_ctx)
            checked += 1
    assert checked > 1000


def test_examples_satisfy_the_core_invariants(package_set: PackageSet) -> None:
    """The vaccination IG's examples pass dom-2..dom-5 (dom-6, a warning, is noted, not required)."""
    for entry in package_set.examples():
        if not (entry.package and entry.package.id == "hl7.fhir.be.vaccination"):
            continue
        resource = package_set.read(entry)
        if resource.get("resourceType") in ("Bundle", "Parameters"):
            continue
        for key in ("dom-2", "dom-3", "dom-4", "dom-5"):
            assert native(key, resource, at(resource)), (entry.path.name, key)
