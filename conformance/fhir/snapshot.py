"""Snapshots generated from differentials, following the FHIR R4 profiling rules.

``generate_snapshot(sd, resolve)`` takes a StructureDefinition that has a ``differential`` and returns
a copy with ``snapshot.element`` filled in, plus a list of problems found on the way (a
differential element that matches nothing, a cardinality or binding that widens the base, a type
the base does not allow ...). The base definition's snapshot is the starting point (a base that is
itself differential-only is generated first); each differential element is then merged into the
snapshot element with the same id, unrolling datatype children from the type's own snapshot when
the differential goes below the depth the base snapshot shows, and creating slices (a copy of the
sliced element and its children) when it names a new one. The HL7 Java snapshot generator's
behaviour decides edge cases where the specification is silent; where the result would let a
resource through that the base forbids (a widened cardinality, a loosened binding, a type the base
does not allow), the base's stricter statement is kept and the differential's is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson

from conformance.errors import ConfigurationError

CORE = "http://hl7.org/fhir/StructureDefinition/"
_SYSTEM = "http://hl7.org/fhirpath/System."
Resolver = Callable[[str], "dict | None"]

_STRENGTH = {"example": 0, "preferred": 1, "extensible": 2, "required": 3}
_SLICING_RULES = {"closed": 0, "openAtEnd": 1, "open": 2}
_EXTENSION_SLICING = {
    "discriminator": [{"type": "value", "path": "url"}],
    "description": "Extensions are always sliced by (at least) url",
    "rules": "open",
}
# Java writes type slicing as closed and then adds an implied slice for every type left over, which
# lets the other types through exactly as an open slicing does.
_TYPE_SLICING = {"discriminator": [{"type": "type", "path": "$this"}], "ordered": False, "rules": "open"}
# Element extensions that describe the definition they appear in, not what derives from it.
_NOT_INHERITED = frozenset(
    CORE + name
    for name in (
        "structuredefinition-standards-status",
        "structuredefinition-normative-version",
        "structuredefinition-fmm",
        "structuredefinition-wg",
    )
)
_NOT_MERGED = frozenset({"id", "path", "base", "contentReference"})
# Lists where the differential adds to what the base says rather than replacing it.
_ACCUMULATED = frozenset({"alias", "condition", "mapping"})


def _copy(value: Any) -> Any:
    """A deep copy of JSON data (several times faster than ``copy.deepcopy``)."""
    return orjson.loads(orjson.dumps(value))


class _Node:
    """One snapshot element with its children and its slices (a slice's re-slices included)."""

    __slots__ = ("children", "element", "new_slice", "own", "slices")

    def __init__(self, element: dict) -> None:
        self.element = element
        self.children: list[_Node] = []
        self.slices: list[_Node] = []
        self.new_slice = False  # created by this profile (not inherited from the base)
        self.own = False  # an element a specialization defines: its children come from the differential

    @property
    def id(self) -> str:
        return self.element["id"]

    def child(self, name: str) -> _Node | None:
        prefix_len = len(self.id) + 1
        for child in self.children:
            if child.id[prefix_len:] == name:
                return child
        return None

    def slice(self, name: str) -> _Node | None:
        for node in self.slices:
            if node.element.get("sliceName") == name:
                return node
        return None

    def flatten(self, out: list[dict]) -> list[dict]:
        """The elements of this subtree in snapshot order: itself, its children, then its slices."""
        out.append(self.element)
        for child in self.children:
            child.flatten(out)
        for node in self.slices:
            node.flatten(out)
        return out


def generate_snapshot(sd: dict, resolve: Resolver) -> tuple[dict, list[str]]:
    """A copy of ``sd`` with ``snapshot.element`` generated from its differential, and the problems found.

    ``resolve(canonical)`` returns a StructureDefinition by canonical URL (``url`` or ``url|version``)
    or None. Raises ConfigurationError only when the base definition cannot be found (or its
    baseDefinition chain loops); every other fault of the input is reported in the problems.
    """
    return SnapshotGenerator(resolve).generate(sd)


def ensure_snapshot(sd: dict, resolve: Resolver, problems: list[str] | None = None) -> dict:
    """``sd`` itself when it has a snapshot, else a copy with one generated (problems appended to ``problems``)."""
    if (sd.get("snapshot") or {}).get("element"):
        return sd
    generated, found = generate_snapshot(sd, resolve)
    if problems is not None:
        problems.extend(found)
    return generated


class SnapshotGenerator:
    """Generates snapshots; keeps those it had to generate for bases and type profiles, by URL."""

    def __init__(self, resolve: Resolver) -> None:
        self.resolve = resolve
        self._generated: dict[str, list[dict]] = {}
        self._in_progress: set[str] = set()
        self._ancestors: dict[str, frozenset[str]] = {}

    # -- entry point ---------------------------------------------------------------------------

    def generate(self, sd: dict) -> tuple[dict, list[str]]:
        """A copy of ``sd`` with its snapshot generated from its differential, and the problems found."""
        url = str(sd.get("url") or sd.get("id") or "(StructureDefinition without url)")
        problems: list[str] = []
        self._in_progress.add(url)
        try:
            base_url, base_elements = self._base_snapshot(sd, url, problems)
            elements = _Build(self, sd, url, base_url, base_elements, problems).run()
        finally:
            self._in_progress.discard(url)
        result = dict(sd)
        result["snapshot"] = {"element": elements}
        return result, problems

    # -- definitions -----------------------------------------------------------------------------

    def _base_snapshot(self, sd: dict, url: str, problems: list[str]) -> tuple[str, list[dict]]:
        """The canonical URL of the base definition and its snapshot elements."""
        base_url = sd.get("baseDefinition")
        if not isinstance(base_url, str) or not base_url:
            raise ConfigurationError(
                f"StructureDefinition {url} has no baseDefinition, so its snapshot cannot be generated"
            )
        if base_url.partition("|")[0] in self._in_progress:
            raise ConfigurationError(
                f"StructureDefinition {url}: its base {base_url} derives from it again "
                "(a baseDefinition loop), so no snapshot can be generated"
            )
        base = self.resolve(base_url)
        if base is None and base_url.partition("|")[0] == CORE + "Base":
            # R4 has no StructureDefinition for Base, the abstract root logical models may derive from
            root: dict[str, Any] = {"id": "Base", "path": "Base", "min": 0, "max": "*"}
            root["base"] = {"path": "Base", "min": 0, "max": "*"}
            element = self.snapshot_of(CORE + "Element") or [{}]
            if element[0].get("constraint"):
                root["constraint"] = element[0]["constraint"]  # as SUSHI does: the root is an Element too
            return CORE + "Base", [root]
        if not isinstance(base, dict) or base.get("resourceType") != "StructureDefinition":
            raise ConfigurationError(
                f"StructureDefinition {url}: its base definition {base_url} cannot be found"
            )
        elements = self.snapshot_of(base_url, base, problems)
        if not elements:
            raise ConfigurationError(
                f"StructureDefinition {url}: its base definition {base_url} has neither a snapshot nor "
                "a differential to generate one from"
            )
        return str(base.get("url") or base_url.partition("|")[0]), elements

    def snapshot_of(
        self, url: str, sd: dict | None = None, problems: list[str] | None = None
    ) -> list[dict] | None:
        """The snapshot elements of the definition ``url`` (shared, never to be changed), generating
        them when it ships only a differential; None when it is unknown or cannot be generated."""
        if sd is None:
            sd = self.resolve(url)
            if not isinstance(sd, dict) or sd.get("resourceType") != "StructureDefinition":
                return None
        shipped = (sd.get("snapshot") or {}).get("element")
        if shipped:
            return shipped
        key = str(sd.get("url") or url)
        if key in self._generated:
            return self._generated[key]
        if key in self._in_progress or not (sd.get("differential") or {}).get("element"):
            return None
        generated, found = self.generate(sd)
        if problems is not None:
            problems.extend(f"(generating the snapshot of {key}) {p}" for p in found)
        self._generated[key] = generated["snapshot"]["element"]
        return self._generated[key]

    def ancestors(self, url: str) -> frozenset[str]:
        """``url`` and the URLs of its baseDefinition chain (empty when ``url`` is unknown)."""
        key = url.partition("|")[0]
        if key in self._ancestors:
            return self._ancestors[key]
        self._ancestors[key] = frozenset()  # a loop ends here
        chain: list[str] = []
        current: str | None = url
        seen: set[str] = set()
        while current and current.partition("|")[0] not in seen:
            seen.add(current.partition("|")[0])
            sd = self.resolve(current)
            if not isinstance(sd, dict):
                if not chain:
                    return frozenset()
                break
            chain.append(str(sd.get("url") or current.partition("|")[0]))
            current = sd.get("baseDefinition")
        self._ancestors[key] = frozenset(chain)
        return self._ancestors[key]


class _Build:
    """The generation of one snapshot: the working tree, the differential walk and the merge."""

    def __init__(
        self,
        generator: SnapshotGenerator,
        sd: dict,
        url: str,
        base_url: str,
        base: list[dict],
        problems: list[str],
    ) -> None:
        self.gen = generator
        self.sd = sd
        self.url = url
        self.problems = problems
        self.specialization = sd.get("derivation") == "specialization"
        diff = (sd.get("differential") or {}).get("element") or []
        self.diff: list[dict] = [e for e in diff if isinstance(e, dict)]
        if len(self.diff) != len(diff):
            problems.append("differential elements that are not objects were ignored")
        root_element, rest = self._rebased_base(base, base_url)
        self.root = _Node(root_element)
        _attach(self.root, rest, problems)

    def _rebased_base(self, base: list[dict], base_url: str) -> tuple[dict, list[dict]]:
        """A copy of the base snapshot; for a specialization, with the new type's root name."""
        elements = _copy(base)
        _inherit(elements, base_url)
        if not self.specialization:
            return elements[0], elements[1:]
        old_root = elements[0]["path"]
        first = self.diff[0] if self.diff else {}
        new_root = first.get("path") or str(self.sd.get("type") or old_root).rsplit("/", 1)[-1]
        new_root = new_root.split(".", 1)[0]
        old_id = elements[0].get("id") or old_root
        for element in elements:
            element["id"] = new_root + (element.get("id") or element["path"])[len(old_id) :]
            element["path"] = new_root + element["path"][len(old_root) :]
        root = elements[0]
        root["base"] = {"path": new_root, "min": root.get("min", 0), "max": root.get("max", "*")}
        return root, elements[1:]

    # -- the walk ----------------------------------------------------------------------------

    def run(self) -> list[dict]:
        for diff_id, element in zip(_element_ids(self.diff), self.diff, strict=True):
            node = self._locate(diff_id, element)
            if node is not None:
                self._merge(node, element, diff_id)
        return self.root.flatten([])

    def _locate(self, diff_id: str, element: dict) -> _Node | None:
        """The snapshot node ``diff_id`` names, unrolling and slicing as needed; None (and a problem)
        when it matches nothing."""
        segments = _segments(diff_id, str(element.get("path") or ""))
        root_name, root_slice = segments[0]
        if root_name != self.root.id or root_slice:
            self._nothing(diff_id, f"the snapshot's root is {self.root.id}")
            return None
        node = self.root
        last = len(segments) - 1
        for depth, (name, slice_name) in enumerate(segments[1:], start=1):
            is_last = depth == last
            child = self._child(node, name, diff_id, element if is_last and not slice_name else None)
            if child is None:
                if self.specialization and is_last and not slice_name:
                    return self._new_element(node, name, diff_id, element)
                self._nothing(diff_id)
                return None
            node = child
            if slice_name:
                node = self._slice(node, slice_name, diff_id, element if is_last else None)
                if node is None:
                    return None
        return node

    def _nothing(self, diff_id: str, why: str = "") -> None:
        self.problems.append(
            f"differential element {diff_id} matches nothing in the base snapshot"
            + (f" ({why})" if why else "")
        )

    def _child(self, node: _Node, name: str, diff_id: str, diff: dict | None) -> _Node | None:
        """The child ``name`` of ``node`` (unrolled from the node's type if needed), resolving a
        choice element named by one of its types (``valueQuantity`` for ``value[x]``)."""
        if not node.children and not node.own:
            self._unroll(node, diff_id)
        child = node.child(name)
        if child is not None:
            return child
        for candidate in node.children:
            own = candidate.id[len(node.id) + 1 :]
            if not own.endswith("[x]") or not name.startswith(own[:-3]) or ":" in own:
                continue
            suffix = name[len(own) - 3 :]
            matching = [t for t in candidate.element.get("type") or () if _suffix(t) == suffix]
            if not matching:
                continue
            # the older renamed form: it constrains the choice element to this one type
            if diff is None or not diff.get("type"):
                candidate.element["type"] = _copy(matching)
            return candidate
        return None

    def _new_element(self, parent: _Node, name: str, diff_id: str, diff: dict) -> _Node:
        """A new element of a specialization (a logical model or a new type)."""
        path = str(diff.get("path") or diff_id)
        element: dict[str, Any] = {"id": diff_id, "path": path}
        element["base"] = {"path": path, "min": diff.get("min", 0), "max": diff.get("max", "*")}
        types = diff.get("type") or []
        if not types or not all(
            isinstance(t, dict) and str(t.get("code", "")).startswith(_SYSTEM) for t in types
        ):
            element["constraint"] = self._element_constraints()  # every element is an Element (ele-1)
        node = _Node(element)
        node.new_slice = node.own = True  # nothing inherited to narrow, nothing to unroll
        parent.children.append(node)
        return node

    def _element_constraints(self) -> list[dict]:
        element = self.gen.snapshot_of(CORE + "Element")
        return _copy(element[0].get("constraint") or []) if element else []

    # -- slices ------------------------------------------------------------------------------

    def _slice(self, head: _Node, slice_name: str, diff_id: str, diff: dict | None) -> _Node | None:
        """The slice ``slice_name`` of ``head`` (``a/b`` for the re-slice b of slice a), created when the
        differential defines it."""
        owner = head
        parent_name, sep, own_name = slice_name.rpartition("/")
        if sep:
            owner = self._find_slice(head, parent_name)
            if owner is None:
                self.problems.append(
                    f"differential element {diff_id} re-slices {head.id}:{parent_name}, which is not defined"
                )
                return None
        existing = owner.slice(slice_name)
        if existing is not None:
            return existing
        is_choice = head.id.endswith("[x]")
        type_slice = _type_slice_entries(head, slice_name) if is_choice else None
        if diff is None and not type_slice:
            self.problems.append(
                f"differential element {diff_id} refers to the slice {slice_name} of {head.id} "
                "before the differential defines it"
            )
            return None
        if is_choice and type_slice is None:
            self.problems.append(
                f"differential element {diff_id}: {slice_name} names no type of {head.id}; "
                "a choice element can only be sliced by type"
            )
            return None
        if not owner.element.get("slicing") and owner is head:
            if head.id.rsplit(".", 1)[-1] in ("extension", "modifierExtension"):
                head.element["slicing"] = _copy(_EXTENSION_SLICING)
            elif is_choice:
                head.element["slicing"] = _copy(_TYPE_SLICING)
            elif str(head.element.get("max", "*")) == "1":
                self.problems.append(
                    f"differential element {diff_id} slices {head.id}, which cannot repeat and is not "
                    "sliced; the slice's constraints were applied to the element itself"
                )
                return head
            else:
                self.problems.append(
                    f"differential element {diff_id} defines a slice of {head.id}, which has no slicing"
                )
        node = _copy_subtree(owner, owner.id, f"{owner.id}{':' if owner is head else '/'}{own_name}")
        node.element.pop("slicing", None)
        node.element.pop("mustSupport", None)
        node.element["sliceName"] = slice_name
        node.element["min"] = 0  # a slice is only mandatory when the differential says so
        node.new_slice = True
        if type_slice and (diff is None or not diff.get("type")):
            node.element["type"] = _copy(type_slice)
        owner.slices.append(node)
        return node

    def _find_slice(self, head: _Node, name: str) -> _Node | None:
        """The slice (``a``) or re-slice (``a/b``) ``name`` of ``head``."""
        parts = name.split("/")
        node: _Node | None = head
        for depth in range(len(parts)):
            if node is None:
                return None
            node = node.slice("/".join(parts[: depth + 1]))
        return node

    # -- unrolling ---------------------------------------------------------------------------

    def _unroll(self, node: _Node, diff_id: str) -> None:
        """Give ``node`` the children of its type (from the type's or type profile's snapshot)."""
        element = node.element
        reference = element.get("contentReference")
        if isinstance(reference, str) and reference:
            found = self._content_reference(reference)
            if found is None:
                self.problems.append(
                    f"differential element {diff_id}: the contentReference {reference} of {node.id} "
                    "cannot be followed"
                )
                return
            source_url, source = found
        else:
            types = [t for t in element.get("type") or () if isinstance(t, dict) and t.get("code")]
            codes = {t["code"] for t in types}
            if not codes:
                return
            source_url = CORE + "Element"
            if len(codes) == 1:
                code = types[0]["code"]
                source_url = code if "/" in code else CORE + code
                profiles = types[0].get("profile") or [] if len(types) == 1 else []
                if len(profiles) == 1:
                    if self.gen.snapshot_of(profiles[0], problems=self.problems) is not None:
                        source_url = profiles[0]
                    else:
                        self.problems.append(
                            f"differential element {diff_id}: the type profile {profiles[0]} of {node.id} "
                            f"is unknown or has no snapshot (a definition that uses itself?); its children "
                            f"were unrolled from {code}"
                        )
            source = self.gen.snapshot_of(source_url) or []
        if len(source) < 2:
            return
        old_id = source[0].get("id") or source[0]["path"]
        old_path = source[0]["path"]
        path = element["path"]
        children = _copy(source[1:])
        for child in children:
            child["id"] = node.id + (child.get("id") or child["path"])[len(old_id) :]
            child["path"] = path + child["path"][len(old_path) :]
        _inherit(children, source_url.partition("|")[0])
        _attach(node, children, self.problems)

    def _content_reference(self, reference: str) -> tuple[str, list[dict]] | None:
        """The definition holding a contentReference's target, and the target and its descendants."""
        url, _, target = reference.partition("#")
        if not target:
            return None
        candidates = [url] if url else [CORE + target.split(".", 1)[0]]
        for candidate in candidates:
            elements = self.gen.snapshot_of(candidate) or []
            found = [e for e in elements if (e.get("id") or e.get("path")) == target]
            if found:
                return candidate, found + [
                    e for e in elements if (e.get("id") or "").startswith(target + ".")
                ]
        if not url:  # a reference inside the definition being built (a logical model)
            elements = self.root.flatten([])
            found = [e for e in elements if e["id"] == target]
            if found:
                return self.url, found + [e for e in elements if e["id"].startswith(target + ".")]
        return None

    # -- merging -----------------------------------------------------------------------------

    def _merge(self, node: _Node, diff: dict, diff_id: str) -> None:
        element = node.element
        where = f"{diff_id}:"
        for key, value in diff.items():
            if key in _NOT_MERGED or value is None:
                continue
            if key == "sliceName" and element.get("sliceName") != value:
                continue  # a slice the generator applied to the element itself (reported)
            if key == "min":
                self._merge_min(element, value, node.new_slice, where)
            elif key == "max":
                self._merge_max(element, value, where)
            elif key == "type":
                self._merge_types(element, value, where)
            elif key.startswith(("fixed", "pattern")):
                self._merge_fixed(element, key, value, where)
            elif key == "binding":
                self._merge_binding(element, value, where)
            elif key == "constraint":
                self._merge_constraints(element, value, where)
            elif key == "slicing":
                self._merge_slicing(element, value, where)
            elif key == "maxLength":
                base = element.get("maxLength")
                if isinstance(base, int) and isinstance(value, int) and value > base:
                    self.problems.append(f"{where} maxLength {value} is above the base's {base}")
                else:
                    element[key] = value
            elif key == "isModifier":
                if element.get("isModifier") is True and value is False:
                    self.problems.append(f"{where} a profile cannot make a modifier element a non-modifier")
                else:
                    element[key] = value
            elif key in _ACCUMULATED and isinstance(value, list):
                merged = list(element.get(key) or [])
                merged += [_copy(v) for v in value if v not in merged]
                element[key] = merged
            else:
                element[key] = _copy(value)
        minimum, maximum = element.get("min"), _max(element.get("max"))
        if isinstance(minimum, int) and maximum is not None and minimum > maximum:
            self.problems.append(f"{where} min {minimum} is above max {element.get('max')}")

    def _merge_min(self, element: dict, value: Any, new: bool, where: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            self.problems.append(f"{where} min {value!r} is not a non-negative integer")
            return
        base = element.get("min")
        if not new and isinstance(base, int) and value < base:
            self.problems.append(f"{where} min {value} widens the base's min {base}")
            return
        element["min"] = value

    def _merge_max(self, element: dict, value: Any, where: str) -> None:
        wanted = _max(value)
        if wanted is None and value != "*":
            self.problems.append(f"{where} max {value!r} is neither a non-negative integer nor *")
            return
        base = _max(element.get("max"))
        if base is not None and (wanted is None or wanted > base):
            self.problems.append(f"{where} max {value} widens the base's max {element.get('max')}")
            return
        element["max"] = value

    def _merge_types(self, element: dict, value: Any, where: str) -> None:
        if not isinstance(value, list) or not all(isinstance(t, dict) and t.get("code") for t in value):
            self.problems.append(f"{where} type must be a list of types with a code")
            return
        base_types: list[dict] = element.get("type") or []
        if not base_types:
            element["type"] = _copy(value)
            return
        allowed: list[dict] = []
        for wanted in value:
            base = self._base_type(base_types, wanted["code"])
            if base is None:
                codes = ", ".join(sorted({t.get("code", "?") for t in base_types}))
                self.problems.append(f"{where} type {wanted['code']} is not in the base's types ({codes})")
                continue
            merged = _copy(wanted)
            for key in ("profile", "targetProfile"):
                inherited = base.get(key) or []
                if key not in merged:
                    if inherited and base.get("code") == wanted["code"]:
                        merged[key] = list(inherited)
                    continue
                for profile in merged[key]:
                    if inherited and not self._derives(profile, inherited):
                        self.problems.append(
                            f"{where} {key} {profile} of type {wanted['code']} does not derive from the base's "
                            f"{', '.join(inherited)}"
                        )
            allowed.append(merged)
        if allowed:
            element["type"] = allowed

    def _base_type(self, base_types: list[dict], code: str) -> dict | None:
        """The base's type entry that allows ``code`` (the same code, or an ancestor type of it)."""
        for base in base_types:
            if base.get("code") == code:
                return base
        if "/" in code:
            return None
        ancestors = self.gen.ancestors(CORE + code)
        for base in base_types:
            base_code = base.get("code", "")
            if (base_code if "/" in base_code else CORE + base_code) in ancestors:
                return base
        return None

    def _derives(self, profile: str, bases: list[str]) -> bool:
        """Whether ``profile`` is one of ``bases`` or derives from one (true when it cannot be looked up)."""
        if any(b.partition("|")[0] in (CORE + "Resource", CORE + "DomainResource") for b in bases):
            return True
        ancestors = self.gen.ancestors(profile)
        if not ancestors:
            return True
        return any(b.partition("|")[0] in ancestors for b in bases)

    def _merge_fixed(self, element: dict, key: str, value: Any, where: str) -> None:
        fixed = [k for k in element if k.startswith("fixed")]
        if fixed:
            same_type = (
                fixed[0][len("fixed") :] == key[len("fixed" if key.startswith("fixed") else "pattern") :]
            )
            restated = element[fixed[0]] == value or (
                key.startswith("pattern") and _contains(value, element[fixed[0]])
            )
            if not (same_type and restated):
                self.problems.append(f"{where} {key} changes the base's fixed value ({fixed[0]})")
            return
        patterns = [k for k in element if k.startswith("pattern")]
        for old in patterns:
            if old[len("pattern") :] != key[len("fixed" if key.startswith("fixed") else "pattern") :] or not (
                _contains(element[old], value)
            ):
                self.problems.append(f"{where} {key} does not conform to the base's {old}")
                return
        for old in patterns:
            del element[old]
        element[key] = _copy(value)

    def _merge_binding(self, element: dict, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            self.problems.append(f"{where} binding must be an object")
            return
        base = element.get("binding") or {}
        base_rank = _STRENGTH.get(base.get("strength", ""), -1)
        rank = _STRENGTH.get(value.get("strength", ""), -1)
        if base_rank >= _STRENGTH["extensible"] and rank < base_rank:
            self.problems.append(
                f"{where} binding strength {value.get('strength')} loosens the base's {base.get('strength')}"
            )
            return
        merged = dict(base)
        if value.get("valueSet") not in (None, base.get("valueSet")):
            # the base's description and binding name describe the value set that was replaced
            merged.pop("description", None)
            merged.pop("extension", None)
        merged.update(_copy(value))
        element["binding"] = merged

    def _merge_constraints(self, element: dict, value: Any, where: str) -> None:
        if not isinstance(value, list):
            self.problems.append(f"{where} constraint must be a list")
            return
        constraints = list(element.get("constraint") or [])
        by_key = {c.get("key"): c for c in constraints if isinstance(c, dict)}
        for constraint in value:
            if not isinstance(constraint, dict) or not constraint.get("key"):
                self.problems.append(f"{where} a constraint without a key was ignored")
                continue
            inherited = by_key.get(constraint["key"])
            if inherited is not None:
                if inherited.get("expression") != constraint.get("expression"):
                    self.problems.append(
                        f"{where} constraint {constraint['key']} redefines an inherited constraint; "
                        "the inherited one was kept"
                    )
                continue
            added = _copy(constraint)
            added.setdefault("source", self.url)
            constraints.append(added)
            by_key[added["key"]] = added
        element["constraint"] = constraints

    def _merge_slicing(self, element: dict, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            self.problems.append(f"{where} slicing must be an object")
            return
        base = element.get("slicing")
        merged = _copy(value)
        if base:
            if base.get("discriminator") and value.get("discriminator") not in (None, base["discriminator"]):
                self.problems.append(f"{where} slicing changes the base's discriminator; the base's was kept")
                merged["discriminator"] = base["discriminator"]
            if _SLICING_RULES.get(value.get("rules", ""), -1) > _SLICING_RULES.get(base.get("rules", ""), 9):
                self.problems.append(
                    f"{where} slicing rules {value.get('rules')} loosen the base's {base.get('rules')}"
                )
                merged["rules"] = base["rules"]
            if base.get("ordered") and value.get("ordered") is False:
                self.problems.append(f"{where} slicing cannot stop being ordered")
                merged["ordered"] = True
            merged = {**base, **merged}
        element["slicing"] = merged


# -- helpers ------------------------------------------------------------------------------------


def _attach(parent: _Node, elements: list[dict], problems: list[str]) -> None:
    """Place ``elements`` (in snapshot order, ids under ``parent``'s) into ``parent``'s subtree."""
    stack: list[_Node] = [parent]
    for element in elements:
        element_id = element.get("id")
        if not isinstance(element_id, str):
            element_id = element["id"] = element.get("path", "")
        while len(stack) > 1 and not element_id.startswith(
            (stack[-1].id + ".", stack[-1].id + ":", stack[-1].id + "/")
        ):
            stack.pop()
        top = stack[-1]
        node = _Node(element)
        rest = element_id[len(top.id) :]
        if not rest:
            problems.append(f"snapshot element {element_id} appears twice; the second was dropped")
            continue
        if rest[:1] == ".":
            top.children.append(node)
        elif rest[:1] in (":", "/"):
            top.slices.append(node)
        else:
            problems.append(f"snapshot element {element_id} has no parent in the snapshot; it was dropped")
            continue
        stack.append(node)


def _inherit(elements: list[dict], url: str) -> None:
    """Prepare copied elements of the definition ``url`` for a derived snapshot, as Java does: name
    ``url`` as the source of constraints that name none, drop the extensions that are not inherited."""
    for element in elements:
        extensions = element.get("extension")
        if extensions:
            kept = [e for e in extensions if not (isinstance(e, dict) and e.get("url") in _NOT_INHERITED)]
            if kept:
                element["extension"] = kept
            else:
                del element["extension"]
        for constraint in element.get("constraint") or ():
            if isinstance(constraint, dict) and "source" not in constraint:
                constraint["source"] = url


def _copy_subtree(node: _Node, old_prefix: str, new_prefix: str) -> _Node:
    """A copy of ``node``'s element and children (not its slices) with ids moved to ``new_prefix``."""
    root = _copy(node.element)
    root["id"] = new_prefix
    descendants = _copy([e for child in node.children for e in child.flatten([])])
    for element in descendants:
        element["id"] = new_prefix + element["id"][len(old_prefix) :]
    copied = _Node(root)
    _attach(copied, descendants, [])
    return copied


def _element_ids(elements: list[dict]) -> Iterator[str]:
    """The id of each element; when absent, built from the path and the slice the element sits in."""
    stack: list[tuple[str, str]] = []  # (path, id) of the enclosing elements
    for element in elements:
        path = str(element.get("path") or "")
        while stack and not path.startswith(stack[-1][0] + "."):
            stack.pop()
        element_id = element.get("id")
        if not isinstance(element_id, str) or not element_id:
            if stack:
                parent_path, parent_id = stack[-1]
                element_id = parent_id + path[len(parent_path) :]
            else:
                element_id = path
            if element.get("sliceName"):
                element_id += ":" + str(element["sliceName"])
        stack.append((path, element_id))
        yield element_id


def _segments(element_id: str, path: str) -> list[tuple[str, str | None]]:
    """``Patient.identifier:ssin.system`` as ``[(Patient, None), (identifier, ssin), (system, None)]``;
    the path tells where a slice name (which may contain dots) ends."""
    if ":" not in element_id:
        return [(part, None) for part in element_id.split(".")]
    names = path.split(".")
    result: list[tuple[str, str | None]] = []
    pos = 0
    for i, name in enumerate(names):
        if not element_id.startswith(name, pos):
            return _naive_segments(element_id)
        pos += len(name)
        slice_name: str | None = None
        if element_id[pos : pos + 1] == ":":
            if i + 1 < len(names):
                nxt = "." + names[i + 1]
                end = element_id.find(nxt, pos + 1)
                while end != -1 and element_id[end + len(nxt) : end + len(nxt) + 1] not in ("", ".", ":"):
                    end = element_id.find(nxt, end + 1)
                if end == -1:
                    return _naive_segments(element_id)
            else:
                end = len(element_id)
            slice_name, pos = element_id[pos + 1 : end], end
        result.append((name, slice_name))
        if i + 1 < len(names):
            if element_id[pos : pos + 1] != ".":
                return _naive_segments(element_id)
            pos += 1
    return result if pos == len(element_id) else _naive_segments(element_id)


def _naive_segments(element_id: str) -> list[tuple[str, str | None]]:
    result: list[tuple[str, str | None]] = []
    for part in element_id.split("."):
        name, sep, slice_name = part.partition(":")
        result.append((name, slice_name if sep else None))
    return result


def _suffix(type_entry: dict) -> str:
    code = str(type_entry.get("code", ""))
    return code[:1].upper() + code[1:]


def _type_slice_entries(head: _Node, slice_name: str) -> list[dict] | None:
    """The head's type entries a type slice ``value[x]:valueQuantity`` stands for, or None."""
    stem = head.id.rsplit(".", 1)[-1][:-3]
    if not slice_name.startswith(stem):
        return None
    suffix = slice_name[len(stem) :]
    entries = [t for t in head.element.get("type") or () if _suffix(t) == suffix]
    return entries or None


def _max(value: Any) -> int | None:
    """A max as a number; None for ``*`` (and for anything that is not a max)."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _contains(pattern: Any, value: Any) -> bool:
    """Whether ``value`` has everything ``pattern`` has (the FHIR pattern[x] rule)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            k in value and _contains(v, value[k]) for k, v in pattern.items()
        )
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_contains(p, v) for v in value) for p in pattern)
    return pattern == value
