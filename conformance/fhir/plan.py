"""Profiles compiled into validation plans.

A StructureDefinition's snapshot becomes a tree of ``ElementRule``s, built once per profile and
kept: each rule knows its JSON name, cardinality, whether its JSON form is an array, its types (and
for a choice element, the JSON name of each type), fixed and pattern values, binding, constraints,
its slicing and slices, and its inline children when the snapshot unrolls them. Children that the
snapshot does not unroll come from the plan of the element's type (or type profile), compiled on
demand by ``PlanCache``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from conformance.errors import ConfigurationError
from conformance.fhir.definitions import PackageSet
from conformance.fhir.snapshot import ensure_snapshot

CORE = "http://hl7.org/fhir/StructureDefinition/"
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
BEST_PRACTICE_EXT = "http://hl7.org/fhir/StructureDefinition/elementdefinition-bestpractice"
SYSTEM_TYPES = {
    "http://hl7.org/fhirpath/System.String": "string",
    "http://hl7.org/fhirpath/System.Boolean": "boolean",
    "http://hl7.org/fhirpath/System.Integer": "integer",
    "http://hl7.org/fhirpath/System.Decimal": "decimal",
    "http://hl7.org/fhirpath/System.Date": "date",
    "http://hl7.org/fhirpath/System.DateTime": "dateTime",
    "http://hl7.org/fhirpath/System.Time": "time",
}
PRIMITIVE_TYPES = frozenset(
    {
        "boolean", "integer", "string", "decimal", "uri", "url", "canonical", "base64Binary", "instant",
        "date", "dateTime", "time", "code", "oid", "id", "markdown", "unsignedInt", "positiveInt", "uuid",
        "xhtml",
    }
)  # fmt: skip


@dataclass(slots=True, eq=False)
class TypeRef:
    """One allowed type of an element, with its profiles and reference target profiles."""

    code: str
    profiles: tuple[str, ...] = ()
    target_profiles: tuple[str, ...] = ()
    is_primitive: bool = field(init=False)  # a FHIR primitive type (a JSON scalar)

    def __post_init__(self) -> None:
        self.is_primitive = self.code in PRIMITIVE_TYPES

    @property
    def json_suffix(self) -> str:
        """The suffix of a choice element's JSON name for this type (``valueCodeableConcept``)."""
        return self.code[0].upper() + self.code[1:]


@dataclass(slots=True, eq=False)
class Constraint:
    """An invariant of an element: a FHIRPath expression that must be true on each instance."""

    key: str
    severity: str
    human: str
    expression: str
    source: str | None
    best_practice: bool = False  # marked with the elementdefinition-bestpractice extension (dom-6 ...)


@dataclass(slots=True, eq=False)
class Discriminator:
    """How slices are told apart: a discriminator type and a path."""

    type: str
    path: str


@dataclass(slots=True, eq=False)
class Slicing:
    """The slicing of a repeating (or choice) element."""

    discriminators: list[Discriminator]
    rules: str = "open"
    ordered: bool = False


@dataclass(slots=True, eq=False)
class ElementRule:
    """What the snapshot says about one element (or one slice of it)."""

    id: str
    path: str
    name: str  # the JSON property name; for a choice element, the name without [x]
    min: int
    max: int | None  # None = unbounded
    array: bool  # the JSON form is an array (the base definition repeats)
    types: list[TypeRef]
    choice: bool = False
    slice_name: str | None = None
    fixed: Any = None
    fixed_key: str | None = None
    pattern: Any = None
    pattern_key: str | None = None
    binding_strength: str | None = None
    binding_valueset: str | None = None
    constraints: list[Constraint] = field(default_factory=list)
    max_length: int | None = None
    is_modifier: bool = False
    content_reference: str | None = None
    children: dict[str, ElementRule] = field(default_factory=dict)
    slicing: Slicing | None = None
    slices: list[ElementRule] = field(default_factory=list)
    # derived once the tree is complete
    json_names: dict[str, tuple[ElementRule, TypeRef]] = field(default_factory=dict)
    type_by_suffix: dict[str, TypeRef] = field(default_factory=dict)
    required: list[ElementRule] = field(default_factory=list)  # children with min > 0

    @property
    def display_max(self) -> str:
        """The max as the FHIR spec writes it."""
        return "*" if self.max is None else str(self.max)


@dataclass(slots=True, eq=False)
class ProfilePlan:
    """A compiled StructureDefinition: its root element rule and identity."""

    url: str
    version: str | None
    type: str
    kind: str
    derivation: str | None
    root: ElementRule
    by_id: dict[str, ElementRule]
    contexts: list[tuple[str, str]] = field(default_factory=list)  # an extension's (type, expression)

    @property
    def label(self) -> str:
        """``url|version`` as messages cite it."""
        return f"{self.url}|{self.version}" if self.version else self.url


def _type_code(type_element: dict) -> str:
    for ext in type_element.get("extension") or ():
        if ext.get("url") == FHIR_TYPE_EXT and ext.get("valueUrl"):
            return ext["valueUrl"]
    code = type_element.get("code", "")
    return SYSTEM_TYPES.get(code, code)


def _id_segments(element_id: str, path: str) -> list[str]:
    """Split an element id into segments, keeping slice names that contain dots whole."""
    parts = element_id.split(".")
    wanted = path.count(".") + 1
    while len(parts) > wanted:
        for i, part in enumerate(parts):
            if ":" in part and i + 1 < len(parts) and len(parts) > wanted:
                parts[i : i + 2] = [parts[i] + "." + parts[i + 1]]
                break
        else:
            break
    return parts


def _rule(element: dict) -> ElementRule:
    path = element["path"]
    last = path.rsplit(".", 1)[-1]
    choice = last.endswith("[x]")
    base = element.get("base") or {}
    base_max = str(base.get("max", element.get("max", "1")))
    max_text = str(element.get("max", "*"))
    types = [
        TypeRef(_type_code(t), tuple(t.get("profile") or ()), tuple(t.get("targetProfile") or ()))
        for t in element.get("type") or ()
    ]
    rule = ElementRule(
        id=element.get("id") or path,
        path=path,
        name=last[:-3] if choice else last,
        min=int(element.get("min", 0)),
        max=None if max_text == "*" else int(max_text),
        array=base_max != "1" and base_max != "0",
        types=types,
        choice=choice,
        slice_name=element.get("sliceName"),
        max_length=element.get("maxLength"),
        is_modifier=bool(element.get("isModifier")),
        content_reference=element.get("contentReference"),
    )
    for key, value in element.items():
        if key.startswith("fixed"):
            rule.fixed, rule.fixed_key = value, key
        elif key.startswith("pattern"):
            rule.pattern, rule.pattern_key = value, key
    binding = element.get("binding")
    if binding and binding.get("valueSet"):
        rule.binding_strength = binding.get("strength")
        rule.binding_valueset = binding["valueSet"]
    rule.constraints = [
        Constraint(
            c["key"],
            c.get("severity", "error"),
            c.get("human", ""),
            c["expression"],
            c.get("source"),
            any(
                e.get("url") == BEST_PRACTICE_EXT and e.get("valueBoolean") for e in c.get("extension") or ()
            ),
        )
        for c in element.get("constraint") or ()
        if c.get("expression")
    ]
    slicing = element.get("slicing")
    if slicing:
        rule.slicing = Slicing(
            [
                Discriminator(d.get("type", "value"), d.get("path", "$this"))
                for d in slicing.get("discriminator") or ()
            ],
            slicing.get("rules", "open"),
            bool(slicing.get("ordered")),
        )
    rule.type_by_suffix = {t.json_suffix: t for t in types} if choice else {}
    return rule


def compile_structure_definition(sd: dict) -> ProfilePlan:
    """Build the element-rule tree of a StructureDefinition from its snapshot."""
    url = sd.get("url", "")
    snapshot = (sd.get("snapshot") or {}).get("element")
    if not snapshot:
        raise ConfigurationError(
            f"StructureDefinition {url} has no snapshot; it cannot be used for validation"
        )
    root = _rule(snapshot[0])
    by_id: dict[str, ElementRule] = {root.id: root}
    for element in snapshot[1:]:
        rule = _rule(element)
        segments = _id_segments(rule.id, rule.path)
        parent_id = ".".join(segments[:-1])
        last = segments[-1]
        name, _, slice_name = last.partition(":")
        parent = by_id.get(parent_id)
        if parent is None:
            continue  # an element under a part of the tree we could not place (should not happen)
        if slice_name:
            sliced = by_id.get(f"{parent_id}.{name}")
            if sliced is not None:
                sliced.slices.append(rule)
        else:
            parent.children[rule.name] = rule
        by_id[rule.id] = rule
    for rule in by_id.values():  # a contentReference element obeys the invariants of the one it refers to
        target = (
            by_id.get((rule.content_reference or "").rsplit("#", 1)[-1]) if rule.content_reference else None
        )
        if target is not None:
            keys = {c.key for c in rule.constraints}
            rule.constraints += [c for c in target.constraints if c.key not in keys]
    if sd.get("kind") == "resource" and "id" in root.children:
        root.children["id"].types = [TypeRef("id")]  # R4 snapshots type Resource.id as a plain string
    for rule in by_id.values():
        _index_json_names(rule)
    contexts = [
        (c.get("type", ""), c.get("expression", "")) for c in sd.get("context") or () if isinstance(c, dict)
    ]
    return ProfilePlan(
        url,
        sd.get("version"),
        sd.get("type", ""),
        sd.get("kind", ""),
        sd.get("derivation"),
        root,
        by_id,
        contexts,
    )


def _index_json_names(rule: ElementRule) -> None:
    names: dict[str, tuple[ElementRule, TypeRef]] = {}
    for child in rule.children.values():
        if child.choice:
            for type_ref in child.types:
                names[child.name + type_ref.json_suffix] = (child, type_ref)
        elif child.types:
            names[child.name] = (child, child.types[0])
        else:  # contentReference elements take their type from the referenced element
            names[child.name] = (child, TypeRef("BackboneElement"))
    rule.json_names = names
    rule.required = [child for child in rule.children.values() if child.min > 0]


class PlanCache:
    """Compiled plans by canonical URL, built on first use from a PackageSet.

    A profile without a snapshot gets one generated from its differential (``snapshot.py``). A
    definition that cannot be compiled is remembered in ``problems`` and looked up as None, so one
    broken profile makes a finding, never a crash in the middle of a walk.
    """

    def __init__(self, packages: PackageSet) -> None:
        self.packages = packages
        self._plans: dict[str, ProfilePlan | None] = {}
        self.problems: dict[str, str] = {}
        self.snapshot_problems: dict[str, list[str]] = {}  # a generated snapshot's findings, by URL

    def get(self, canonical: str) -> ProfilePlan | None:
        """The plan of the StructureDefinition ``url`` or ``url|version``, or None if unusable."""
        if canonical in self._plans:
            return self._plans[canonical]
        sd = self.packages.resolve(canonical)
        plan = None
        if sd is not None and sd.get("resourceType") == "StructureDefinition":
            try:
                found: list[str] = []
                plan = compile_structure_definition(ensure_snapshot(sd, self.packages.resolve, found))
                if found:
                    self.snapshot_problems[plan.url] = found
            except ConfigurationError as exc:
                self.problems[canonical] = exc.message
        self._plans[canonical] = plan
        return plan

    def base(self, type_code: str) -> ProfilePlan | None:
        """The plan of a core type or resource (``CodeableConcept``, ``Immunization``...)."""
        return self.get(CORE + type_code)
