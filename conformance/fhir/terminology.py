"""Offline terminology: ValueSet expansion and code validation against the loaded FHIR packages.

``Terminology(packages)`` expands a ValueSet from its ``compose`` (FHIR R4 semantics: explicit concept
lists, whole local CodeSystems, the filters ``is-a``, ``descendent-of``, ``is-not-a``, ``=``, ``in``,
``not-in``, ``regex`` and ``exists`` on loaded CodeSystems, nested ``valueSet`` includes with cycle
detection, and excludes) into an :class:`Expansion` that answers ``(system, code)`` look-ups with one
dict access. Whatever cannot be enumerated offline (SNOMED CT, LOINC or UCUM without an explicit concept
list, an unsupported filter, a fragment or stub CodeSystem, a missing ValueSet) is recorded per code
system, so :meth:`Terminology.validate_code` answers ``unknown`` for those codes, with the reason, and
``invalid`` only where the value set was fully enumerated: never a silent pass, never a false failure.
The compose is the source of truth; the pre-computed ``package/other/expansions.json`` of a package (or an
``expansion`` inside the ValueSet) is cross-checked against it, and used instead only when it enumerates
what the compose could not (a ValueSet without compose, or systems that are not loaded). A CodeSystem that
says ``content = complete`` but defines no concepts is treated as a placeholder: its codes are
``unknown``, not all invalid. An optional terminology server (``tx_server``) is asked, through
``$validate-code``, only when the local answer is ``unknown``; its answers are cached and a network error
gives ``unknown`` naming the server, never an exception.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

import httpx
import orjson

from conformance.errors import PackageError
from conformance.fhir.definitions import PackageSet

__all__ = [
    "CodeCheck",
    "Designation",
    "Expansion",
    "ExpansionConcept",
    "Terminology",
    "normalise_display",
    "ucum_syntax_ok",
]

Status = Literal["valid", "invalid", "unknown"]
Key = tuple[str, str]

UCUM = "http://unitsofmeasure.org"
_EXTERNAL_HINT = "external terminologies such as SNOMED CT, LOINC and UCUM are not available offline"
_RESULT_CACHE_LIMIT = 20_000  # verdicts kept; a register seeing many distinct codes stays bounded
_TX_RETRY_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class CodeCheck:
    """The answer to "is this code allowed here?"; ``unknown`` means it cannot be checked offline."""

    status: Status
    message: str = ""
    display_ok: bool | None = None
    expected_display: str | None = None

    @property
    def valid(self) -> bool:
        """True when the code is known to be allowed."""
        return self.status == "valid"


@dataclass(frozen=True, slots=True)
class Designation:
    """An alternative display of a concept (another language or use)."""

    value: str
    language: str | None = None
    use: str | None = None  # the code of designation.use, e.g. 900000000000003001 (FSN)


@dataclass(frozen=True, slots=True)
class ExpansionConcept:
    """One member of an expansion, with every display known for it."""

    system: str
    code: str
    display: str | None = None
    version: str | None = None
    designations: tuple[Designation, ...] = ()
    abstract: bool = False  # notSelectable: a grouping code, not for use in data
    inactive: bool = False
    in_code_system: bool = False  # the code was confirmed in a loaded CodeSystem
    displays: frozenset[str] = frozenset()  # normalised display and designation values

    def merged(self, other: ExpansionConcept) -> ExpansionConcept:
        """The same concept with the displays and designations of both."""
        designations = self.designations + tuple(d for d in other.designations if d not in self.designations)
        return ExpansionConcept(
            self.system,
            self.code,
            self.display or other.display,
            self.version or other.version,
            designations,
            self.abstract and other.abstract,
            self.inactive or other.inactive,
            self.in_code_system or other.in_code_system,
            self.displays | other.displays,
        )


@dataclass(frozen=True, eq=False)
class Expansion:
    """An expanded ValueSet: members by ``(system, code)``, and what could not be enumerated.

    ``open`` maps a code system (None: any system) to the reason its codes could not all be listed;
    ``doubtful`` holds listed codes whose membership could not be settled (e.g. a non-enumerable
    exclude). ``source`` says where the members come from: the compose, the package's pre-computed
    expansion (used only when it enumerates what the compose could not), or nothing (a ValueSet with
    neither). ``notes`` records oddities met on the way (codes the CodeSystem lacks, version
    mismatches, disagreement with the pre-computed expansion, cycles). Treat the mappings as read-only.
    """

    url: str
    version: str | None
    members: Mapping[Key, ExpansionConcept]
    open: Mapping[str | None, str] = field(default_factory=dict)
    doubtful: Mapping[Key, tuple[ExpansionConcept, str]] = field(default_factory=dict)
    source: Literal["compose", "expansion", "none"] = "compose"
    notes: tuple[str, ...] = ()
    by_code: Mapping[str, tuple[ExpansionConcept, ...]] = field(default_factory=dict)
    case_insensitive: Mapping[Key, ExpansionConcept] = field(default_factory=dict)

    @property
    def canonical(self) -> str:
        """``url|version`` (or the url when the ValueSet has no version)."""
        return f"{self.url}|{self.version}" if self.version else self.url

    @property
    def complete(self) -> bool:
        """True when every include was enumerable: a code not listed is certainly not a member."""
        return not self.open and not self.doubtful

    @property
    def systems(self) -> list[str]:
        """The code systems of the listed members, in first-seen order."""
        return list(dict.fromkeys(system for system, _ in self.members))

    def lookup(self, system: str, code: str) -> ExpansionConcept | None:
        """The member ``system#code``, or None."""
        return self.members.get((system, code))

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[ExpansionConcept]:
        return iter(self.members.values())

    def __contains__(self, key: object) -> bool:
        return key in self.members


def normalise_display(text: str) -> str:
    """Case-folded text with runs of whitespace reduced to one space, for display comparison."""
    return " ".join(text.split()).casefold()


# -- UCUM syntax ------------------------------------------------------------------------------

# an atom with its prefix and exponent: ASCII 33-126 except . / ( ) { } [ ], or a [bracketed] part
_UCUM_ATOM_RE = re.compile(r"(?:[!-'*-\-0-Z\\^-z|~]|\[[!-\\^-~]*\])+")


def ucum_syntax_ok(code: str) -> bool:
    """True when ``code`` follows the UCUM expression grammar (the units themselves are not checked)."""
    if not code or len(code) > 200:
        return False
    text = code[1:] if code.startswith("/") else code
    position, ok = _ucum_term(text, 0)
    return ok and position == len(text)


def _ucum_term(text: str, position: int) -> tuple[int, bool]:
    position, ok = _ucum_component(text, position)
    while ok and position < len(text) and text[position] in "./":
        position, ok = _ucum_component(text, position + 1)
    return position, ok


def _ucum_component(text: str, position: int) -> tuple[int, bool]:
    if position >= len(text):
        return position, False
    if text[position] == "(":
        position, ok = _ucum_term(text, position + 1)
        if not ok or position >= len(text) or text[position] != ")":
            return position, False
        return position + 1, True
    matched = False
    atom = _UCUM_ATOM_RE.match(text, position)
    if atom:
        position, matched = atom.end(), True
    if position < len(text) and text[position] == "{":
        end = text.find("}", position + 1)
        body = text[position + 1 : end] if end > 0 else ""
        if end < 0 or "{" in body or any(not 33 <= ord(ch) <= 126 for ch in body):
            return position, False
        position, matched = end + 1, True
    return position, matched


# -- CodeSystem index --------------------------------------------------------------------------


@dataclass(slots=True)
class _CSConcept:
    code: str
    display: str | None
    designations: tuple[Designation, ...]
    properties: dict[str, list[str]]
    abstract: bool
    inactive: bool


class _CodeSystemIndex:
    """A loaded CodeSystem, flattened, with its hierarchy (nesting plus parent/child properties)."""

    def __init__(self, resource: dict) -> None:
        self.url: str = resource.get("url") or ""
        self.version: str | None = resource.get("version")
        self.content: str = resource.get("content") or "complete"
        self.case_sensitive: bool = resource.get("caseSensitive") is not False
        self.property_codes = {p.get("code") for p in resource.get("property") or () if p.get("code")}
        self.concepts: dict[str, _CSConcept] = {}
        self.children: dict[str, set[str]] = {}
        self.parents: dict[str, set[str]] = {}
        self._folded: dict[str, str] | None = None
        self._walk(resource.get("concept") or (), None)
        for code, concept in self.concepts.items():
            for child in concept.properties.get("child", ()):
                self._link(code, child)
            for parent in [*concept.properties.get("parent", ()), *concept.properties.get("subsumedBy", ())]:
                self._link(parent, code)

    @property
    def canonical(self) -> str:
        return f"{self.url}|{self.version}" if self.version else self.url

    def _link(self, parent: str, child: str) -> None:
        self.children.setdefault(parent, set()).add(child)
        self.parents.setdefault(child, set()).add(parent)

    def _walk(self, concepts: Iterable[dict], parent: str | None) -> None:
        for raw in concepts:
            code = raw.get("code")
            if not isinstance(code, str):
                continue
            properties: dict[str, list[str]] = {}
            for prop in raw.get("property") or ():
                value = _property_value(prop)
                if prop.get("code") and value is not None:
                    properties.setdefault(prop["code"], []).append(value)
            status = properties.get("status", [])
            concept = _CSConcept(
                code,
                raw.get("display"),
                _designations(raw.get("designation")),
                properties,
                abstract="true" in properties.get("notSelectable", ())
                or "true" in properties.get("abstract", ()),
                inactive="true" in properties.get("inactive", ()) or "retired" in status,
            )
            if code in self.concepts:  # the same code twice (polyhierarchy by repetition): merge
                old = self.concepts[code]
                old.designations += tuple(d for d in concept.designations if d not in old.designations)
                for name, values in properties.items():
                    old.properties.setdefault(name, []).extend(values)
            else:
                self.concepts[code] = concept
            if parent is not None:
                self._link(parent, code)
            self._walk(raw.get("concept") or (), code)

    def find(self, code: str) -> _CSConcept | None:
        concept = self.concepts.get(code)
        if concept is None and not self.case_sensitive:
            if self._folded is None:
                self._folded = {c.casefold(): c for c in self.concepts}
            folded = self._folded.get(code.casefold())
            concept = self.concepts.get(folded) if folded else None
        return concept

    def descendants(self, code: str) -> set[str]:
        found: set[str] = set()
        stack = [code]
        while stack:
            for child in self.children.get(stack.pop(), ()):
                if child not in found:
                    found.add(child)
                    stack.append(child)
        found.discard(code)
        return found

    def property_values(self, concept: _CSConcept, name: str) -> list[str]:
        if name in ("concept", "code"):
            return [concept.code]
        if name == "display":
            return [concept.display] if concept.display else []
        if name == "parent":
            return sorted(self.parents.get(concept.code, ()))
        if name == "child":
            return sorted(self.children.get(concept.code, ()))
        if name == "inactive" and "inactive" not in concept.properties:
            return ["true" if concept.inactive else "false"]
        if name == "notSelectable" and "notSelectable" not in concept.properties:
            return ["true" if concept.abstract else "false"]
        return concept.properties.get(name, [])

    def knows_property(self, name: str) -> bool:
        return name in self.property_codes or name in (
            "concept",
            "code",
            "display",
            "parent",
            "child",
            "inactive",
            "notSelectable",
            "status",
        )

    def apply_filter(self, flt: dict) -> set[str] | str:
        """The codes a compose filter selects, or the reason it cannot be enumerated."""
        prop, op, value = flt.get("property"), flt.get("op"), flt.get("value")
        if not isinstance(prop, str) or not isinstance(op, str) or not isinstance(value, str):
            return f"malformed filter {flt!r}"
        if op in ("is-a", "descendent-of", "is-not-a"):
            if prop != "concept":
                return f"filter '{prop} {op} {value}' is not supported (only on property 'concept')"
            root = self.find(value)
            below = self.descendants(root.code) if root else set()
            if op == "is-a":
                return below | {root.code} if root else set()
            if op == "descendent-of":
                return below
            return set(self.concepts) - below - ({root.code} if root else set())
        if not self.knows_property(prop):
            return f"filter on property '{prop}', which code system {self.canonical} does not define"
        if op == "=":
            return {c.code for c in self.concepts.values() if value in self.property_values(c, prop)}
        if op in ("in", "not-in"):
            wanted = {v.strip() for v in value.split(",")}
            selected = {c.code for c in self.concepts.values() if wanted & set(self.property_values(c, prop))}
            return selected if op == "in" else set(self.concepts) - selected
        if op == "regex":
            try:
                pattern = re.compile(value)
            except re.error as exc:
                return f"filter regex {value!r} is not a valid regular expression: {exc}"
            return {
                c.code
                for c in self.concepts.values()
                if any(pattern.fullmatch(v) for v in self.property_values(c, prop))
            }
        if op == "exists":
            want = value.strip().lower() == "true"
            return {c.code for c in self.concepts.values() if bool(self.property_values(c, prop)) == want}
        return f"filter operator '{op}' is not supported offline"


def _property_value(prop: dict) -> str | None:
    for key, value in prop.items():
        if key.startswith("value"):
            if isinstance(value, bool):
                return "true" if value else "false"
            if isinstance(value, dict):  # valueCoding
                return value.get("code")
            return str(value)
    return None


def _designations(raw: object) -> tuple[Designation, ...]:
    if not isinstance(raw, list):
        return ()
    out = []
    for d in raw:
        if isinstance(d, dict) and isinstance(d.get("value"), str):
            use = d.get("use")
            out.append(
                Designation(d["value"], d.get("language"), use.get("code") if isinstance(use, dict) else None)
            )
    return tuple(out)


def _make_concept(
    system: str,
    code: str,
    display: str | None,
    version: str | None,
    designations: tuple[Designation, ...] = (),
    *,
    abstract: bool = False,
    inactive: bool = False,
    in_code_system: bool = False,
) -> ExpansionConcept:
    displays = {normalise_display(d.value) for d in designations}
    if display:
        displays.add(normalise_display(display))
    return ExpansionConcept(
        system, code, display, version, designations, abstract, inactive, in_code_system, frozenset(displays)
    )


# -- partial sets (what a compose part selects, as far as it can be known) ---------------------


class _Set:
    """Members for sure, members perhaps, and systems whose unlisted codes may also be members."""

    __slots__ = ("maybe", "members", "open")

    def __init__(self) -> None:
        self.members: dict[Key, ExpansionConcept] = {}
        self.maybe: dict[Key, tuple[ExpansionConcept, str]] = {}
        self.open: dict[str | None, str] = {}

    @classmethod
    def unknown(cls, system: str | None, reason: str) -> _Set:
        result = cls()
        result.open[system] = reason
        return result

    def state(self, key: Key) -> tuple[int, str]:
        """2 member, 1 perhaps (with the reason), 0 not a member."""
        if key in self.members:
            return 2, ""
        if key in self.maybe:
            return 1, self.maybe[key][1]
        reason = self.open.get(key[0]) or self.open.get(None)
        return (1, reason) if reason else (0, "")

    def concept(self, key: Key) -> ExpansionConcept | None:
        found = self.members.get(key)
        if found is None and key in self.maybe:
            found = self.maybe[key][0]
        return found

    def add(self, concept: ExpansionConcept) -> None:
        key = (concept.system, concept.code)
        old = self.members.get(key)
        self.members[key] = old.merged(concept) if old else concept
        self.maybe.pop(key, None)

    def update(self, other: _Set) -> None:
        """Union in place."""
        for concept in other.members.values():
            self.add(concept)
        for key, (concept, reason) in other.maybe.items():
            if key in self.members:
                self.members[key] = self.members[key].merged(concept)
            elif key not in self.maybe:
                self.maybe[key] = (concept, reason)
        for system, reason in other.open.items():
            self.open.setdefault(system, reason)

    def intersection(self, other: _Set) -> _Set:
        result = _Set()
        keys = dict.fromkeys([*self.members, *self.maybe, *other.members, *other.maybe])
        for key in keys:
            (mine, why_mine), (theirs, why_theirs) = self.state(key), other.state(key)
            a, b = self.concept(key), other.concept(key)
            concept = a.merged(b) if a and b else a or b
            assert concept is not None
            if mine == 2 and theirs == 2:
                result.members[key] = concept
            elif mine and theirs:
                result.maybe[key] = (concept, why_mine or why_theirs)
        for system in dict.fromkeys([*self.open, *other.open]):
            mine_r = self.open.get(system) or self.open.get(None)
            theirs_r = other.open.get(system) or other.open.get(None)
            if system is None:
                mine_r, theirs_r = self.open.get(None), other.open.get(None)
            if mine_r and theirs_r:
                result.open[system] = mine_r
        return result

    def subtract(self, other: _Set) -> None:
        """Difference in place (an exclude)."""
        for key in list(self.members):
            state, reason = other.state(key)
            if state == 2:
                del self.members[key]
            elif state == 1:
                self.maybe[key] = (self.members.pop(key), f"it may be removed by an exclude: {reason}")
        for key in list(self.maybe):
            if other.state(key)[0] == 2:
                del self.maybe[key]


# -- the service -------------------------------------------------------------------------------


class Terminology:
    """ValueSet expansion and code validation over a :class:`PackageSet`, optionally backed by a server."""

    def __init__(
        self,
        packages: PackageSet,
        tx_server: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.packages = packages
        self.tx_server = tx_server.rstrip("/") if tx_server else None
        self._transport = transport
        self._timeout = timeout
        self._client: httpx.Client | None = None
        self._tx_down_until = 0.0
        self._tx_last_error = ""
        self._tx_cache: dict[tuple, CodeCheck] = {}
        self._by_name: dict[str, Expansion | None] = {}
        self._by_resource: dict[tuple, Expansion] = {}
        self._code_systems: dict[str, _CodeSystemIndex | None] = {}
        self._shipped: dict[tuple[str, str | None], dict] | None = None
        self._results: dict[tuple, CodeCheck] = {}
        self._cs_results: dict[tuple, CodeCheck] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP client of the terminology server, if one was opened."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Terminology:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- expansions --------------------------------------------------------------------------

    def expansion(self, valueset: str) -> Expansion | None:
        """The expansion of ``url`` or ``url|version`` (memoised); None if the ValueSet is unknown."""
        try:
            return self._by_name[valueset]
        except KeyError:
            pass
        result = self._expand(valueset, ())
        self._by_name[valueset] = result
        return result

    def _expand(self, valueset: str, stack: tuple[str, ...]) -> Expansion | None:
        entry = self.packages.entry(valueset)
        if entry is None or entry.resource_type != "ValueSet":
            return None
        key = (entry.url, entry.version, entry.path)
        done = self._by_resource.get(key)
        if done is not None:
            return done
        resource = self.packages.read(entry)
        url = resource.get("url") or valueset.partition("|")[0]
        version = resource.get("version")
        canonical = f"{url}|{version}" if version else url
        if canonical in stack:
            raise _Cycle([*stack, canonical])
        notes: list[str] = []
        compose = resource.get("compose")
        if isinstance(compose, dict) and (compose.get("include") or compose.get("exclude")):
            result = self._compose(compose, canonical, (*stack, canonical), notes)
            source: Literal["compose", "expansion", "none"] = "compose"
        else:
            result = _Set.unknown(None, f"value set {canonical} has no compose (no definition in its IG)")
            source = "none"
        shipped = self._shipped_expansion(resource, url, version)
        if shipped is not None:
            where, raw_expansion = shipped
            shipped_set, problem = _expansion_set(raw_expansion)
            if problem:
                notes.append(f"pre-computed expansion in {where} not used: {problem}")
            elif result.open or result.maybe:
                if _covers(shipped_set, result):
                    notes.append(
                        f"compose not enumerable offline ({_describe_open(result)}); "
                        f"used the pre-computed expansion in {where}"
                    )
                    result, source = shipped_set, "expansion"
                else:
                    notes.append(
                        f"pre-computed expansion in {where} does not enumerate what the compose could not; "
                        "not used"
                    )
            else:
                only_compose = set(result.members) - set(shipped_set.members)
                only_shipped = set(shipped_set.members) - set(result.members)
                if only_compose or only_shipped:
                    notes.append(
                        f"pre-computed expansion in {where} differs from the compose "
                        f"({len(only_compose)} code(s) only in the compose, e.g. {_sample(only_compose)}; "
                        f"{len(only_shipped)} only in the expansion, e.g. {_sample(only_shipped)}); "
                        "the compose is used"
                    )
        folded_systems = {
            system
            for system in {s for s, _ in result.members}
            if (index := self._code_system(system)) is not None and not index.case_sensitive
        }
        expansion = _freeze(url, version, result, source, notes, folded_systems)
        self._by_resource[key] = expansion
        return expansion

    def _compose(self, compose: dict, canonical: str, stack: tuple[str, ...], notes: list[str]) -> _Set:
        active_only = compose.get("inactive") is False
        result = _Set()
        for include in compose.get("include") or ():
            result.update(self._compose_part(include, canonical, stack, notes, active_only))
        for exclude in compose.get("exclude") or ():
            result.subtract(self._compose_part(exclude, canonical, stack, notes, active_only=False))
        return result

    def _compose_part(
        self, part: dict, canonical: str, stack: tuple[str, ...], notes: list[str], active_only: bool
    ) -> _Set:
        pieces: list[_Set] = []
        system = part.get("system")
        if isinstance(system, str) and system:
            pieces.append(self._system_part(part, system, canonical, notes, active_only))
        for nested in part.get("valueSet") or ():
            pieces.append(self._valueset_part(nested, canonical, stack, notes))
        if not pieces:
            notes.append(f"{canonical}: a compose entry has neither system nor valueSet; ignored")
            return _Set()
        result = pieces[0]
        for piece in pieces[1:]:
            result = result.intersection(piece)
        return result

    def _valueset_part(self, nested: str, canonical: str, stack: tuple[str, ...], notes: list[str]) -> _Set:
        try:
            inner = self._expand(nested, stack)
        except _Cycle as cycle:
            text = " -> ".join(cycle.path)
            notes.append(f"value set cycle: {text}")
            return _Set.unknown(None, f"value set {nested} is part of a cycle ({text})")
        if inner is None:
            return _Set.unknown(
                None, f"value set {nested}, included by {canonical}, is not in the loaded packages"
            )
        part = _Set()
        part.members.update(inner.members)
        part.maybe.update(inner.doubtful)
        part.open.update(inner.open)
        notes.extend(n for n in inner.notes if n not in notes)
        return part

    def _system_part(
        self, part: dict, system: str, canonical: str, notes: list[str], active_only: bool
    ) -> _Set:
        version = part.get("version")
        index = self._code_system_for_include(system, version, canonical, notes)
        listed = part.get("concept")
        filters = part.get("filter") or []
        result = _Set()
        if listed:
            for raw in listed:
                code = raw.get("code") if isinstance(raw, dict) else None
                if not isinstance(code, str):
                    continue
                known = index.find(code) if index is not None and index.content != "not-present" else None
                if index is not None and index.content == "complete" and index.concepts and known is None:
                    notes.append(f"{canonical} lists code '{code}', which {index.canonical} does not define")
                if known is not None and active_only and known.inactive:
                    continue
                designations = _designations(raw.get("designation"))
                if known is not None:
                    designations += tuple(d for d in known.designations if d not in designations)
                    if known.display and raw.get("display") and known.display != raw["display"]:
                        designations += (Designation(known.display),)
                result.add(
                    _make_concept(
                        system,
                        code,
                        raw.get("display") or (known.display if known else None),
                        version or (index.version if index else None),
                        designations,
                        inactive=known.inactive if known else False,
                        in_code_system=known is not None,
                    )
                )
            if not filters:
                return result
        if index is None:
            return _Set.unknown(
                system, f"code system {system} is not in the loaded packages ({_EXTERNAL_HINT})"
            )
        if index.content in ("not-present", "supplement"):
            return _Set.unknown(
                system,
                f"code system {index.canonical} is only a stub in the packages (content = {index.content})",
            )
        if not index.concepts:
            return _Set.unknown(
                system,
                f"code system {index.canonical} declares content = {index.content} but defines no concepts "
                "(a placeholder in its IG), so membership cannot be judged",
            )
        selected: set[str] | None = None
        for flt in filters:
            chosen = index.apply_filter(flt) if isinstance(flt, dict) else f"malformed filter {flt!r}"
            if isinstance(chosen, str):
                return _Set.unknown(system, f"{chosen} (code system {index.canonical})")
            selected = chosen if selected is None else selected & chosen
        codes = list(index.concepts) if selected is None else [c for c in index.concepts if c in selected]
        enumerated = _Set()
        for code in codes:
            concept = index.concepts[code]
            if active_only and concept.inactive:
                continue
            enumerated.add(
                _make_concept(
                    system,
                    code,
                    concept.display,
                    version or index.version,
                    concept.designations,
                    abstract=concept.abstract,
                    inactive=concept.inactive,
                    in_code_system=True,
                )
            )
        if index.content != "complete":
            enumerated.open[system] = (
                f"code system {index.canonical} is only partly in the packages (content = {index.content})"
            )
        return enumerated.intersection(result) if listed else enumerated

    def _code_system_for_include(
        self, system: str, version: str | None, canonical: str, notes: list[str]
    ) -> _CodeSystemIndex | None:
        if version:
            index = self._code_system(f"{system}|{version}")
            if index is not None:
                return index
            index = self._code_system(system)
            if index is not None and index.content not in ("not-present", "supplement"):
                notes.append(
                    f"{canonical} asks for version {version} of {system}; the packages have "
                    f"{index.version or 'an unversioned one'}, which is used"
                )
            return index
        return self._code_system(system)

    def _code_system(self, canonical: str) -> _CodeSystemIndex | None:
        try:
            return self._code_systems[canonical]
        except KeyError:
            pass
        entry = self.packages.entry(canonical)
        index = None
        if entry is not None and entry.resource_type == "CodeSystem":
            index = _CodeSystemIndex(self.packages.read(entry))
        self._code_systems[canonical] = index
        return index

    def _shipped_expansion(self, resource: dict, url: str, version: str | None) -> tuple[str, dict] | None:
        if isinstance(resource.get("expansion"), dict):
            return "the ValueSet resource", resource["expansion"]
        if self._shipped is None:
            self._shipped = {}
            for package in self.packages.packages:
                path = package.content_dir / "other" / "expansions.json"
                if not path.is_file():
                    continue
                try:
                    bundle = orjson.loads(path.read_bytes())
                except (OSError, orjson.JSONDecodeError) as exc:
                    raise PackageError(f"{package.ref}: other/expansions.json is unreadable: {exc}") from exc
                for item in bundle.get("entry") or ():
                    vs = item.get("resource") if isinstance(item, dict) else None
                    if isinstance(vs, dict) and vs.get("url") and isinstance(vs.get("expansion"), dict):
                        where = f"{package.ref} other/expansions.json"
                        self._shipped.setdefault((vs["url"], vs.get("version")), {"where": where, "vs": vs})
        found = self._shipped.get((url, version))
        return (found["where"], found["vs"]["expansion"]) if found else None

    # -- validation --------------------------------------------------------------------------

    def validate_code(
        self, valueset: str, system: str | None, code: str, display: str | None = None
    ) -> CodeCheck:
        """Is ``system#code`` (or a plain ``code`` when system is None) in the value set?"""
        return self._answer(
            self._results,
            (valueset, system, code, display),
            lambda: self._validate_local(valueset, system, code, display),
            lambda local: self._tx_validate_code(valueset, system, code, display, local),
        )

    def _answer(
        self,
        cache: dict,
        key: tuple,
        local: Callable[[], CodeCheck],
        remote: Callable[[CodeCheck], tuple[CodeCheck, bool]],
    ) -> CodeCheck:
        """A cached answer: the local one, or the terminology server's when the local one is unknown."""
        cached = cache.get(key)
        if cached is not None:
            return cached
        result = local()
        cacheable = True
        if result.status == "unknown" and self.tx_server:
            result, cacheable = remote(result)
        if cacheable:
            if len(cache) >= _RESULT_CACHE_LIMIT:
                cache.clear()
            cache[key] = result
        return result

    def _validate_local(self, valueset: str, system: str | None, code: str, display: str | None) -> CodeCheck:
        expansion = self.expansion(valueset)
        if expansion is None:
            return CodeCheck("unknown", f"value set {valueset} is not in the loaded packages")
        if not isinstance(code, str) or not code:
            return CodeCheck("invalid", f"empty code is not in value set {expansion.canonical}")
        if system is None:
            return self._validate_plain_code(expansion, code, display)
        concept = expansion.members.get((system, code))
        where = f"'{code}' from {system}"
        if concept is None:
            doubtful = expansion.doubtful.get((system, code))
            if doubtful is not None:
                return CodeCheck(
                    "unknown",
                    f"code {where}: membership in value set {expansion.canonical} unsettled: {doubtful[1]}",
                )
            reason = expansion.open.get(system) or expansion.open.get(None)
            if reason:
                if system == UCUM and not ucum_syntax_ok(code):
                    return CodeCheck("invalid", f"code {where} is not valid UCUM syntax")
                return CodeCheck(
                    "unknown",
                    f"code {where} cannot be checked offline against value set "
                    f"{expansion.canonical}: {reason}",
                )
            folded = expansion.case_insensitive.get((system, code.casefold()))
            if folded is not None:
                concept = folded
            else:
                hint = ""
                elsewhere = expansion.by_code.get(code)
                if elsewhere:
                    hint = f" (the value set has it from {elsewhere[0].system})"
                return CodeCheck("invalid", f"code {where} is not in value set {expansion.canonical}{hint}")
        return _member_check(concept, display, expansion, where)

    def _validate_plain_code(self, expansion: Expansion, code: str, display: str | None) -> CodeCheck:
        found = expansion.by_code.get(code)
        where = f"'{code}'"
        if not found:
            doubtful = [c for (s, c2), (c, _) in expansion.doubtful.items() if c2 == code]
            if doubtful or expansion.open:
                reasons = "; ".join(dict.fromkeys(expansion.open.values())) or "membership unsettled"
                return CodeCheck(
                    "unknown",
                    f"code {where} cannot be checked offline against value set "
                    f"{expansion.canonical}: {reasons}",
                )
            systems = ", ".join(expansion.systems) or "none"
            return CodeCheck(
                "invalid", f"code {where} is not in value set {expansion.canonical} (systems: {systems})"
            )
        if len(found) == 1:
            return _member_check(found[0], display, expansion, where)
        usable = [c for c in found if not c.abstract] or list(found)
        merged = usable[0]
        for other in usable[1:]:
            merged = merged.merged(other)
        return _member_check(merged, display, expansion, where)

    def validate_coding_in_system(
        self, system: str, code: str, display: str | None = None, version: str | None = None
    ) -> CodeCheck:
        """Is ``code`` defined by the code system itself (whatever value set)?"""
        return self._answer(
            self._cs_results,
            (system, code, display, version),
            lambda: self._validate_in_system_local(system, code, display, version),
            lambda local: self._tx_validate_in_system(system, code, display, version, local),
        )

    def _validate_in_system_local(
        self, system: str, code: str, display: str | None, version: str | None
    ) -> CodeCheck:
        where = f"'{code}' from {system}"
        index = self._code_system(f"{system}|{version}" if version else system)
        if index is None:
            if system == UCUM and code and not ucum_syntax_ok(code):
                return CodeCheck("invalid", f"code {where} is not valid UCUM syntax")
            if version and self._code_system(system) is not None:
                loaded = ", ".join(v or "(none)" for v in self.packages.versions(system))
                return CodeCheck(
                    "unknown", f"version {version} of code system {system} is not loaded (loaded: {loaded})"
                )
            return CodeCheck(
                "unknown", f"code system {system} is not in the loaded packages ({_EXTERNAL_HINT})"
            )
        if index.content in ("not-present", "supplement"):
            return CodeCheck(
                "unknown",
                f"code system {index.canonical} is only a stub in the packages (content = {index.content})",
            )
        if not code:
            return CodeCheck("invalid", f"empty code is not defined in code system {index.canonical}")
        concept = index.find(code)
        if concept is None:
            if index.content != "complete":
                return CodeCheck(
                    "unknown",
                    f"code {where} is not in code system {index.canonical}, which is only partly in the "
                    f"packages (content = {index.content})",
                )
            if not index.concepts:
                return CodeCheck(
                    "unknown",
                    f"code system {index.canonical} declares content = complete but defines no concepts "
                    f"(a placeholder in its IG), so code {code!r} cannot be judged",
                )
            return CodeCheck("invalid", f"code {where} is not defined in code system {index.canonical}")
        member = _make_concept(
            system, concept.code, concept.display, index.version, concept.designations, in_code_system=True
        )
        notes = []
        if concept.code != code:
            notes.append(
                f"code {where} differs in case from '{concept.code}' (the code system is case-insensitive)"
            )
        if concept.inactive:
            notes.append(f"code {where} is inactive")
        return _display_result("valid", member, display, " ".join(notes))

    def member_of(self, node: object, valueset: str) -> bool | None:
        """FHIRPath memberOf(): a code string, Coding or CodeableConcept; None when it cannot be told."""
        node = getattr(node, "data", node)  # fhirpathpy wraps typed nodes
        if isinstance(node, str):
            return _as_bool(self.validate_code(valueset, None, node).status)
        if not isinstance(node, dict):
            return None
        if "coding" in node or ("text" in node and "code" not in node):
            answers = [
                self._coding_member(c, valueset) for c in node.get("coding") or () if isinstance(c, dict)
            ]
            if any(a is True for a in answers):
                return True
            if any(a is None for a in answers):
                return None
            return False
        return self._coding_member(node, valueset)

    def _coding_member(self, coding: dict, valueset: str) -> bool | None:
        code, system = coding.get("code"), coding.get("system")
        if not isinstance(code, str) or not code:
            return False
        if not isinstance(system, str):  # a Coding without system: which system was meant is unknown
            answer = _as_bool(self.validate_code(valueset, None, code).status)
            return None if answer else answer
        return _as_bool(self.validate_code(valueset, system, code).status)

    # -- terminology server ------------------------------------------------------------------

    def _tx_get(self, path: str, params: dict[str, str]) -> tuple[dict | None, str]:
        """GET a $validate-code on the server: (parsed Parameters, "") or (None, why not)."""
        now = time.monotonic()
        if now < self._tx_down_until:
            return None, f"terminology server {self.tx_server} is unreachable ({self._tx_last_error})"
        if self._client is None:
            self._client = httpx.Client(
                transport=self._transport, timeout=self._timeout, headers={"Accept": "application/fhir+json"}
            )
        url = f"{self.tx_server}/{path}"
        try:
            response = self._client.get(url, params=params)
        except httpx.HTTPError as exc:
            self._tx_last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self._tx_down_until = now + _TX_RETRY_SECONDS
            return None, f"terminology server {self.tx_server} is unreachable ({self._tx_last_error})"
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            return (
                None,
                f"terminology server {self.tx_server} answered HTTP {response.status_code} without FHIR JSON",
            )
        if body.get("resourceType") == "OperationOutcome" or response.status_code >= 400:
            issues = body.get("issue") or [{}]
            text = issues[0].get("diagnostics") or (issues[0].get("details") or {}).get("text") or ""
            return (
                None,
                f"terminology server {self.tx_server} answered HTTP {response.status_code}: {text}".rstrip(
                    ": "
                ),
            )
        if body.get("resourceType") != "Parameters":
            return (
                None,
                f"terminology server {self.tx_server} answered a {body.get('resourceType')}, not Parameters",
            )
        return body, ""

    def _tx_validate_code(
        self, valueset: str, system: str | None, code: str, display: str | None, local: CodeCheck
    ) -> tuple[CodeCheck, bool]:
        key = ("vs", valueset, system, code, display)
        if key in self._tx_cache:
            return self._tx_cache[key], True
        url, _, version = valueset.partition("|")
        params = {"url": url, "code": code}
        if version:
            params["valueSetVersion"] = version
        if system:
            params["system"] = system
        if display is not None:
            params["display"] = display
        body, problem = self._tx_get("ValueSet/$validate-code", params)
        if body is None:
            return CodeCheck("unknown", f"{local.message}; {problem}"), False
        result = _parse_tx_answer(body, display, self.tx_server or "")
        self._tx_cache[key] = result
        return result, True

    def _tx_validate_in_system(
        self, system: str, code: str, display: str | None, version: str | None, local: CodeCheck
    ) -> tuple[CodeCheck, bool]:
        key = ("cs", system, code, display, version)
        if key in self._tx_cache:
            return self._tx_cache[key], True
        params = {"url": system, "code": code}
        if version:
            params["version"] = version
        if display is not None:
            params["display"] = display
        body, problem = self._tx_get("CodeSystem/$validate-code", params)
        if body is None:
            return CodeCheck("unknown", f"{local.message}; {problem}"), False
        result = _parse_tx_answer(body, display, self.tx_server or "")
        self._tx_cache[key] = result
        return result, True


# -- helpers -----------------------------------------------------------------------------------


class _Cycle(Exception):
    def __init__(self, path: list[str]) -> None:
        super().__init__(" -> ".join(path))
        self.path = path


def _as_bool(status: Status) -> bool | None:
    return True if status == "valid" else False if status == "invalid" else None


def _member_check(
    concept: ExpansionConcept, display: str | None, expansion: Expansion, where: str
) -> CodeCheck:
    if concept.abstract:
        return CodeCheck(
            "invalid",
            f"code {where} is abstract (notSelectable) in value set {expansion.canonical} "
            "and not allowed in data",
            expected_display=concept.display,
        )
    note = f"code {where} is inactive" if concept.inactive else ""
    return _display_result("valid", concept, display, note)


def _display_result(status: Status, concept: ExpansionConcept, display: str | None, note: str) -> CodeCheck:
    if display is None or not concept.displays:
        return CodeCheck(status, note, None, concept.display)
    if normalise_display(display) in concept.displays:
        return CodeCheck(status, note, True, concept.display)
    known = (
        ""
        if concept.in_code_system
        else " (only the value set's displays are known: the code system is not loaded)"
    )
    expected = f"'{concept.display}'" if concept.display else "one of its designations"
    text = (
        f"display '{display}' for {concept.system}#{concept.code} matches none of its known displays; "
        f"expected {expected}{known}"
    )
    return CodeCheck(status, f"{note}; {text}" if note else text, False, concept.display)


def _parse_tx_answer(body: dict, display: str | None, server: str) -> CodeCheck:
    values: dict[str, object] = {}
    for param in body.get("parameter") or ():
        if isinstance(param, dict) and param.get("name"):
            for k, v in param.items():
                if k.startswith("value"):
                    values.setdefault(param["name"], v)
    result = values.get("result")
    message = values.get("message") if isinstance(values.get("message"), str) else ""
    server_display = values.get("display") if isinstance(values.get("display"), str) else None
    if not isinstance(result, bool):
        return CodeCheck("unknown", f"terminology server {server} gave no result")
    display_ok = None
    if display is not None and server_display:
        display_ok = normalise_display(display) == normalise_display(server_display)
    text = f"{message} (terminology server {server})" if message else ""
    return CodeCheck("valid" if result else "invalid", text, display_ok, server_display)


def _expansion_set(expansion: dict) -> tuple[_Set, str]:
    """The members of a shipped ``ValueSet.expansion``, or why it cannot be trusted."""
    result = _Set()
    names = {p.get("name") for p in expansion.get("parameter") or () if isinstance(p, dict)}
    if "limitedExpansion" in names or expansion.get("offset"):
        return result, "it is a partial (paged or limited) expansion"

    def walk(items: Iterable[dict]) -> None:
        for item in items:
            if isinstance(item, dict):
                if isinstance(item.get("system"), str) and isinstance(item.get("code"), str):
                    result.add(
                        _make_concept(
                            item["system"],
                            item["code"],
                            item.get("display"),
                            item.get("version"),
                            _designations(item.get("designation")),
                            abstract=item.get("abstract") is True,
                            inactive=item.get("inactive") is True,
                        )
                    )
                walk(item.get("contains") or ())

    walk(expansion.get("contains") or ())
    total = expansion.get("total")
    if isinstance(total, int) and total > len(result.members):
        return result, f"it lists {len(result.members)} of {total} codes"
    return result, ""


def _covers(shipped: _Set, composed: _Set) -> bool:
    """Does a shipped expansion enumerate the systems the compose could not?"""
    systems = {s for s, _ in shipped.members}
    for system in composed.open:
        if system is None:
            if not shipped.members:
                return False
        elif system not in systems:
            return False
    return all(key in shipped.members or key[0] in systems for key in composed.maybe)


def _describe_open(result: _Set) -> str:
    return "; ".join(dict.fromkeys([*result.open.values(), *(r for _, r in result.maybe.values())]))


def _sample(keys: set[Key]) -> str:
    return ", ".join(f"{s}#{c}" for s, c in sorted(keys)[:3]) or "-"


def _freeze(
    url: str,
    version: str | None,
    result: _Set,
    source: Literal["compose", "expansion", "none"],
    notes: list[str],
    folded_systems: set[str],
) -> Expansion:
    by_code: dict[str, list[ExpansionConcept]] = {}
    folded: dict[Key, ExpansionConcept] = {}
    for concept in result.members.values():
        by_code.setdefault(concept.code, []).append(concept)
        if concept.system in folded_systems:
            folded.setdefault((concept.system, concept.code.casefold()), concept)
    return Expansion(
        url,
        version,
        result.members,
        result.open,
        result.maybe,
        source,
        tuple(dict.fromkeys(notes)),
        {code: tuple(items) for code, items in by_code.items()},
        folded,
    )
