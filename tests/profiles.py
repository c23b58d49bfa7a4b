"""Small hand-made profiles for the validator tests, derived from R4 core snapshots.

A ``Profile`` starts as a copy of a core StructureDefinition's snapshot (``derivation = constraint``)
and is changed element by element the way a snapshot generator would write the result:

- ``set(id, **changes)`` changes one element (``min``, ``max``, ``type``, ``fixedCode``, ``binding`` ...);
  an element inside a datatype (``Patient.name.family``) is unrolled first, with every child of the
  datatype copied from the datatype's own snapshot, as generators do when a profile constrains a child;
- ``slice(id, name, ...)`` adds ``<id>:<name>`` right after the sliced element, its children and the
  slices before it, with the children copied from the sliced element (backbone elements) or unrolled
  from the datatype (``Patient.identifier:ssin.system``);
- ``invariant(id, key, expression)`` adds a constraint.

``extension_definition`` writes an Extension StructureDefinition (simple or complex) the same way.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from conformance.fhir.definitions import PackageSet

CORE = "http://hl7.org/fhir/StructureDefinition/"
EXAMPLE = "http://example.org/fhir/StructureDefinition/"
_DROPPED = ("text", "differential", "mapping", "extension", "meta", "snapshot")
_COMPLEX_NOT_UNROLLED = frozenset({"Resource", "DomainResource"})


class Profile:
    """A constraint StructureDefinition under construction (snapshot only)."""

    def __init__(self, packages: PackageSet, base: str, name: str, *, url: str | None = None) -> None:
        base_url = base if "/" in base else CORE + base
        base_sd = packages.resolve(base_url)
        if base_sd is None:
            raise LookupError(f"no StructureDefinition {base_url}")
        self.packages = packages
        self.url = url or EXAMPLE + name
        self.sd: dict[str, Any] = {k: copy.deepcopy(v) for k, v in base_sd.items() if k not in _DROPPED}
        self.sd.update(
            id=name,
            url=self.url,
            version="0.1.0",
            name=name,
            status="draft",
            derivation="constraint",
            baseDefinition=base_sd["url"],
        )
        self.elements: list[dict] = copy.deepcopy(base_sd["snapshot"]["element"])

    # -- look-ups ----------------------------------------------------------------------------

    def index(self, element_id: str) -> int:
        """Position of the element ``element_id`` in the snapshot (unrolling datatypes if needed)."""
        for i, element in enumerate(self.elements):
            if element["id"] == element_id:
                return i
        parent, sep, _ = element_id.rpartition(".")
        if not sep:
            raise KeyError(element_id)
        self.unroll(parent)
        for i, element in enumerate(self.elements):
            if element["id"] == element_id:
                return i
        raise KeyError(element_id)

    def get(self, element_id: str) -> dict:
        """The element ``element_id`` (unrolling datatypes if needed)."""
        return self.elements[self.index(element_id)]

    def _subtree_end(self, position: int) -> int:
        """The index just after the element at ``position``, its children and its slices."""
        element_id = self.elements[position]["id"]
        end = position + 1
        while end < len(self.elements) and self.elements[end]["id"].startswith(
            (element_id + ".", element_id + ":")
        ):
            end += 1
        return end

    # -- changes -----------------------------------------------------------------------------

    def set(self, element_id: str, **changes: Any) -> Profile:
        """Change an element; a value of None removes the property."""
        element = self.get(element_id)
        for key, value in changes.items():
            if key.startswith(("fixed", "pattern")):
                for old in [k for k in element if k.startswith(("fixed", "pattern"))]:
                    del element[old]
            if value is None:
                element.pop(key, None)
            else:
                element[key] = copy.deepcopy(value)
        return self

    def types(
        self, element_id: str, *codes: str, profile: str | None = None, targets: Iterable[str] = ()
    ) -> Profile:
        """Restrict an element's types (with one type profile or reference target profiles)."""
        result = []
        for code in codes:
            entry: dict[str, Any] = {"code": code}
            if profile:
                entry["profile"] = [profile]
            if targets:
                entry["targetProfile"] = list(targets)
            result.append(entry)
        return self.set(element_id, type=result)

    def binding(self, element_id: str, strength: str, valueset: str) -> Profile:
        """Bind an element to a value set."""
        return self.set(element_id, binding={"strength": strength, "valueSet": valueset})

    def invariant(
        self, element_id: str, key: str, expression: str, severity: str = "error", human: str = ""
    ) -> Profile:
        """Add a constraint (FHIRPath invariant) to an element."""
        element = self.get(element_id)
        element.setdefault("constraint", []).append(
            {
                "key": key,
                "severity": severity,
                "human": human or f"{key} must hold",
                "expression": expression,
                "source": self.url,
            }
        )
        return self

    def slicing(
        self,
        element_id: str,
        *discriminators: tuple[str, str],
        rules: str = "open",
        ordered: bool = False,
    ) -> Profile:
        """Declare the slicing of an element: ``(type, path)`` discriminators, rules, ordered."""
        return self.set(
            element_id,
            slicing={
                "discriminator": [{"type": t, "path": p} for t, p in discriminators],
                "ordered": ordered,
                "rules": rules,
            },
        )

    def slice(
        self, element_id: str, name: str, min: int = 0, max: str = "*", *, unroll: bool = True, **changes: Any
    ) -> Profile:
        """Add the slice ``<element_id>:<name>`` after the sliced element, its children and earlier slices.

        The slice's children are copied from the sliced element's (rewritten to ``<id>:<name>.``); when
        the sliced element has none and ``unroll`` is true, they are unrolled from its datatype.
        """
        position = self.index(element_id)
        sliced = self.elements[position]
        end = self._subtree_end(position)
        slice_id = f"{element_id}:{name}"
        slice_element = copy.deepcopy(sliced)
        slice_element.pop("slicing", None)
        slice_element.update(id=slice_id, sliceName=name, min=min, max=max)
        children = [
            _rebase(e, element_id, slice_id, e["path"])
            for e in self.elements[position + 1 : end]
            if e["id"].startswith(element_id + ".")
        ]
        self.elements[end:end] = [slice_element, *children]
        if changes:
            self.set(slice_id, **changes)
        codes = {t["code"] for t in self.get(slice_id).get("type") or ()}
        if not children and unroll and len(codes) == 1 and not next(iter(codes))[:1].islower():
            self.unroll(slice_id)
        return self

    def unroll(self, element_id: str) -> Profile:
        """Insert the children of an element's datatype (from the datatype's snapshot) after it."""
        position = self.index(element_id)
        element = self.elements[position]
        if any(e["id"].startswith(element_id + ".") for e in self.elements):
            return self  # already unrolled
        types = element.get("type") or []
        codes = {t["code"] for t in types}
        if len(codes) != 1:
            raise ValueError(f"{element_id}: cannot unroll an element with types {sorted(codes)}")
        type_entry = types[0]
        code = type_entry["code"]
        if code in _COMPLEX_NOT_UNROLLED or code[:1].islower():
            raise ValueError(f"{element_id}: {code} is not unrolled")
        source = self.packages.resolve((type_entry.get("profile") or [CORE + code])[0])
        if source is None:
            raise LookupError(f"no StructureDefinition for {code}")
        root = source["snapshot"]["element"][0]["path"]
        children = [
            _rebase(e, root, element_id, element["path"] + e["path"][len(root) :])
            for e in source["snapshot"]["element"][1:]
        ]
        self.elements[position + 1 : position + 1] = children
        return self

    # -- output ------------------------------------------------------------------------------

    def build(self) -> dict:
        """The StructureDefinition (a fresh copy)."""
        sd = copy.deepcopy(self.sd)
        sd["snapshot"] = {"element": copy.deepcopy(self.elements)}
        return sd


def _rebase(element: dict, old_prefix: str, new_prefix: str, path: str) -> dict:
    copied = copy.deepcopy(element)
    copied["id"] = new_prefix + element["id"][len(old_prefix) :]
    copied["path"] = path
    return copied


def extension_definition(
    packages: PackageSet,
    name: str,
    *,
    value_types: Iterable[str] = (),
    context: Iterable[str] = ("Patient",),
    sub_extensions: Iterable[tuple[str, tuple[str, ...], int, str]] = (),
    is_modifier: bool = False,
) -> Profile:
    """An Extension StructureDefinition: a simple one (``value_types``) or a complex one.

    ``sub_extensions`` are ``(url, value types, min, max)``; with them, the extension's own value is
    forbidden (0..0) and its ``extension`` is sliced by url, one slice per sub-extension, with the
    sub-extension's ``url`` fixed and its own ``extension`` forbidden, as IG tooling writes them.
    """
    profile = Profile(packages, "Extension", name)
    profile.sd["context"] = [{"type": "element", "expression": c} for c in context]
    profile.set("Extension", isModifier=is_modifier or None)
    profile.set("Extension.url", fixedUri=profile.url)
    subs = list(sub_extensions)
    if subs:
        profile.set("Extension.value[x]", min=0, max="0")
        for url, types, min_, max_ in subs:
            slice_id = f"Extension.extension:{url}"
            profile.slice("Extension.extension", url, min_, max_)
            profile.set(f"{slice_id}.extension", max="0")
            profile.set(f"{slice_id}.url", fixedUri=url)
            profile.types(f"{slice_id}.value[x]", *types)
            profile.set(f"{slice_id}.value[x]", min=1)
    else:
        profile.set("Extension.extension", max="0")
        profile.types("Extension.value[x]", *value_types)
        profile.set("Extension.value[x]", min=1)
    return profile


def register(packages: PackageSet, folder: Path, definitions: Iterable[dict]) -> PackageSet:
    """A new PackageSet over the same packages, with ``definitions`` added as single files."""
    local = PackageSet(packages.packages)
    folder.mkdir(parents=True, exist_ok=True)
    for sd in definitions:
        path = folder / f"{sd['resourceType']}-{sd['id']}.json"
        path.write_text(json.dumps(sd, indent=1))
        local.add_resource_file(path)
    return local
