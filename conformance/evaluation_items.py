"""The catalogue of evaluation items the Gherkin scenarios are tagged with (``@item:VC-REG-01``).

``Catalogue.load()`` reads ``evaluation_items.toml`` (package data) and checks it: unique ids shaped
``VC-<AREA>-<nn>``, the area in the id equal to the item's area and declared among the areas, a
non-empty title in English, French, Dutch and German, a one-sentence English description, a boolean
``blocking``, and register-rule codes that the simulator knows (``conformance.simulator.fhir_api.Rule``).
Any problem refuses the whole catalogue with a ``ConfigurationError`` listing every problem found.
Given a ``PackageSet`` (``Catalogue.load(packages=...)`` or ``catalogue.check_ig(packages)``), the IG
references are checked too: element ids and invariant keys must exist in the be-vaccination snapshot,
and every ``ig_bindings`` element must carry a binding there.

For the suite: ``check_tags(tags)`` lists the problems of a scenario's ``item:`` tags (unknown or
malformed ids) and ``uncovered(tag_sets)`` the items no scenario names.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from conformance.errors import ConfigurationError

if TYPE_CHECKING:
    from conformance.fhir.definitions import PackageSet

__all__ = [
    "ITEM_TAG_PREFIX",
    "LANGUAGES",
    "Area",
    "Catalogue",
    "EvaluationItem",
    "item_ids_in_tags",
    "register_rule_codes",
]

LANGUAGES: tuple[str, ...] = ("en", "fr", "nl", "de")
"""Languages every title is given in, in the order reports list them."""
ITEM_TAG_PREFIX = "item:"
"""Prefix of the scenario tags naming evaluation items (``@item:VC-REG-01``; pytest-bdd drops the ``@``)."""
ID_PATTERN = re.compile(r"^VC-(?P<area>[A-Z]{2,3})-(?P<number>[0-9]{2})$")
RESOURCE = "evaluation_items.toml"

_ITEM_KEYS = frozenset(
    {
        "id",
        "area",
        "blocking",
        "title",
        "description",
        "ig_elements",
        "ig_invariants",
        "ig_bindings",
        "register_rules",
    }
)
_LIST_KEYS = ("ig_elements", "ig_invariants", "ig_bindings", "register_rules")


def register_rule_codes() -> frozenset[str]:
    """The register-rule codes of the simulator (``Rule`` in ``conformance.simulator.fhir_api``)."""
    from conformance.simulator.fhir_api import Rule  # the simulator is heavy; import on use

    return frozenset(rule.value for rule in Rule)


def _title(titles: tuple[tuple[str, str], ...], lang: str, what: str) -> str:
    for code, text in titles:
        if code == lang:
            return text
    raise ConfigurationError(f"unknown language {lang!r} for {what}: choose one of {', '.join(LANGUAGES)}")


@dataclass(frozen=True)
class Area:
    """An evaluation area (CON, REG, ...) with its titles in every language."""

    code: str
    titles: tuple[tuple[str, str], ...]

    def title(self, lang: str = "en") -> str:
        """The area's title in ``lang`` (en, fr, nl, de)."""
        return _title(self.titles, lang, f"area {self.code}")


@dataclass(frozen=True)
class EvaluationItem:
    """One evaluation item: what a reviewer checks in the evaluation session, and by which rules."""

    id: str
    area: str
    titles: tuple[tuple[str, str], ...]
    """(language, title) pairs, one per language of ``LANGUAGES``, in that order."""
    description: str
    blocking: bool
    """True when a failure blocks the request for the evaluation session."""
    ig_elements: tuple[str, ...] = ()
    """be-vaccination snapshot element ids the item checks."""
    ig_invariants: tuple[str, ...] = ()
    """be-vaccination invariant keys (be-rule-vaccination-1..4)."""
    ig_bindings: tuple[str, ...] = ()
    """be-vaccination element ids whose binding the item checks."""
    register_rules: tuple[str, ...] = ()
    """Register-rule codes (the simulator's ``Rule`` values) the item checks."""

    def title(self, lang: str = "en") -> str:
        """The item's title in ``lang`` (en, fr, nl, de); another language is a ConfigurationError."""
        return _title(self.titles, lang, f"item {self.id}")

    @property
    def tag(self) -> str:
        """The scenario tag naming this item, without the ``@``."""
        return ITEM_TAG_PREFIX + self.id


def item_ids_in_tags(tags: Iterable[str]) -> list[str]:
    """The item ids named by ``item:`` tags (with or without ``@``), in order; other tags are ignored."""
    found = []
    for tag in tags:
        name = tag.removeprefix("@")
        if name.startswith(ITEM_TAG_PREFIX):
            found.append(name[len(ITEM_TAG_PREFIX) :])
    return found


class Catalogue:
    """The evaluation items, in catalogue order, with their areas."""

    def __init__(self, areas: Iterable[Area], items: Iterable[EvaluationItem]) -> None:
        self._areas: dict[str, Area] = {area.code: area for area in areas}
        self._items: dict[str, EvaluationItem] = {item.id: item for item in items}

    # -- loading --------------------------------------------------------------------------------------

    @classmethod
    def load(cls, *, packages: PackageSet | None = None) -> Catalogue:
        """The catalogue shipped with the package; with ``packages``, IG references are checked too."""
        text = resources.files("conformance").joinpath(RESOURCE).read_text(encoding="utf-8")
        return cls.parse(text, source=f"conformance/{RESOURCE}", packages=packages)

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        source: str = "<catalogue>",
        packages: PackageSet | None = None,
        rule_codes: Iterable[str] | None = None,
    ) -> Catalogue:
        """A catalogue from TOML text, checked; every problem found is listed in one ConfigurationError."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigurationError(f"{source}: not valid TOML: {error}") from None
        known_rules = register_rule_codes() if rule_codes is None else frozenset(rule_codes)
        problems: list[str] = []
        areas = _parse_areas(data.get("area"), problems)
        items = _parse_items(data.get("item"), areas, known_rules, problems)
        unknown_top = sorted(set(data) - {"area", "item"})
        if unknown_top:
            problems.append(f"unknown top-level key(s): {', '.join(unknown_top)}")
        _raise(source, problems)
        catalogue = cls(areas.values(), items)
        if packages is not None:
            catalogue.check_ig(packages, source=source)
        return catalogue

    def check_ig(self, packages: PackageSet, *, source: str = "catalogue") -> None:
        """Check the IG references against the be-vaccination snapshot; ConfigurationError if any is wrong."""
        from conformance.fhir.snapshot import ensure_snapshot
        from conformance.simulator.config import BE_VACCINATION_PROFILE

        sd = packages.resolve(BE_VACCINATION_PROFILE)
        if sd is None:
            raise ConfigurationError(f"{source}: profile {BE_VACCINATION_PROFILE} is not in the packages")
        elements = {e.get("id"): e for e in ensure_snapshot(sd, packages.resolve)["snapshot"]["element"]}
        invariants = {c.get("key") for e in elements.values() for c in e.get("constraint", ())}
        problems = []
        for item in self:
            for element in item.ig_elements:
                if element not in elements:
                    problems.append(f"{item.id}: element {element!r} is not in be-vaccination")
            for key in item.ig_invariants:
                if key not in invariants:
                    problems.append(f"{item.id}: invariant {key!r} is not in be-vaccination")
            for element in item.ig_bindings:
                if element not in elements:
                    problems.append(f"{item.id}: binding element {element!r} is not in be-vaccination")
                elif not elements[element].get("binding"):
                    problems.append(f"{item.id}: element {element!r} has no binding in be-vaccination")
        _raise(source, problems)

    # -- looking up -----------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[EvaluationItem]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def ids(self) -> list[str]:
        """Every item id, in catalogue order."""
        return list(self._items)

    def get(self, item_id: str) -> EvaluationItem:
        """The item with this id; an unknown id is a ConfigurationError that suggests close ids."""
        try:
            return self._items[item_id]
        except KeyError:
            raise ConfigurationError(_unknown(item_id, self._items)) from None

    @property
    def areas(self) -> list[Area]:
        """The evaluation areas, in catalogue order."""
        return list(self._areas.values())

    def area(self, code: str) -> Area:
        """The area with this code (CON, REG, ...); an unknown code is a ConfigurationError."""
        try:
            return self._areas[code]
        except KeyError:
            raise ConfigurationError(
                f"unknown evaluation area {code!r}: choose one of {', '.join(self._areas)}"
            ) from None

    def by_area(self, code: str) -> list[EvaluationItem]:
        """The items of one area, in catalogue order; an unknown area is a ConfigurationError."""
        self.area(code)
        return [item for item in self if item.area == code]

    def blocking(self) -> list[EvaluationItem]:
        """The items whose failure blocks the request for the evaluation session."""
        return [item for item in self if item.blocking]

    def title(self, item_id: str, lang: str = "en") -> str:
        """An item's title in ``lang`` (en, fr, nl, de)."""
        return self.get(item_id).title(lang)

    # -- scenario tags --------------------------------------------------------------------------------

    def check_tags(self, tags: Iterable[str]) -> list[str]:
        """Problems of one scenario's ``item:`` tags: malformed or unknown ids (empty when all is well)."""
        problems = []
        for item_id in item_ids_in_tags(tags):
            if not ID_PATTERN.match(item_id):
                problems.append(f"@{ITEM_TAG_PREFIX}{item_id}: not an item id shaped VC-<AREA>-<nn>")
            elif item_id not in self._items:
                problems.append(f"@{ITEM_TAG_PREFIX}{item_id}: {_unknown(item_id, self._items)}")
        return problems

    def uncovered(self, tag_sets: Iterable[Iterable[str]]) -> list[str]:
        """Ids of the items that no tag set (one per scenario) names, in catalogue order."""
        named: set[str] = set()
        for tags in tag_sets:
            named.update(item_ids_in_tags(tags))
        return [item_id for item_id in self._items if item_id not in named]


# -- parsing helpers ----------------------------------------------------------------------------------


def _raise(source: str, problems: list[str]) -> None:
    if problems:
        listed = "; ".join(problems)
        raise ConfigurationError(f"{source}: {len(problems)} problem(s) in the evaluation items: {listed}")


def _unknown(item_id: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(item_id, list(known), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return f"unknown evaluation item {item_id!r}{hint}"


def _titles(value: Any, where: str, problems: list[str]) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        problems.append(f"{where}: title must be a table with {', '.join(LANGUAGES)}")
        return ()
    titles = []
    for lang in LANGUAGES:
        text = value.get(lang)
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{where}: title in {lang!r} is missing or empty")
        else:
            titles.append((lang, text.strip()))
    extra = sorted(set(value) - set(LANGUAGES))
    if extra:
        problems.append(f"{where}: title in unsupported language(s) {', '.join(extra)}")
    return tuple(titles)


def _parse_areas(value: Any, problems: list[str]) -> dict[str, Area]:
    if not isinstance(value, dict) or not value:
        problems.append("no [area.<CODE>] tables")
        return {}
    areas = {}
    for code, table in value.items():
        where = f"area {code}"
        if not re.fullmatch(r"[A-Z]{2,3}", code):
            problems.append(f"{where}: an area code is 2 or 3 capital letters")
        if not isinstance(table, dict):
            problems.append(f"{where}: must be a table")
            continue
        extra = sorted(set(table) - {"title"})
        if extra:
            problems.append(f"{where}: unknown key(s) {', '.join(extra)}")
        areas[code] = Area(code, _titles(table.get("title"), where, problems))
    return areas


def _parse_items(
    value: Any, areas: Mapping[str, Area], known_rules: frozenset[str], problems: list[str]
) -> list[EvaluationItem]:
    if not isinstance(value, list) or not value:
        problems.append("no [[item]] tables")
        return []
    items = []
    seen: dict[str, int] = {}
    for position, table in enumerate(value, start=1):
        item = _parse_item(table, position, areas, known_rules, problems)
        if item is None:
            continue
        if item.id in seen:
            problems.append(f"duplicate id {item.id} (items {seen[item.id]} and {position})")
            continue
        seen[item.id] = position
        items.append(item)
    return items


def _parse_item(
    table: Any,
    position: int,
    areas: Mapping[str, Area],
    known_rules: frozenset[str],
    problems: list[str],
) -> EvaluationItem | None:
    if not isinstance(table, dict):
        problems.append(f"item {position}: must be a table")
        return None
    item_id = table.get("id")
    if not isinstance(item_id, str):
        problems.append(f"item {position}: id is missing")
        return None
    where = item_id
    before = len(problems)
    match = ID_PATTERN.match(item_id)
    if not match:
        problems.append(f"{where}: id must be shaped VC-<AREA>-<nn> (e.g. VC-REG-01)")
    area = table.get("area")
    if not isinstance(area, str) or area not in areas:
        problems.append(f"{where}: area {area!r} is not one of {', '.join(areas) or 'the declared areas'}")
    elif match and match["area"] != area:
        problems.append(f"{where}: the id names area {match['area']} but the item's area is {area}")
    extra = sorted(set(table) - _ITEM_KEYS)
    if extra:
        problems.append(f"{where}: unknown key(s) {', '.join(extra)}")
    blocking = table.get("blocking")
    if not isinstance(blocking, bool):
        problems.append(f"{where}: blocking must be true or false")
    description = table.get("description")
    if not isinstance(description, str) or not description.strip():
        problems.append(f"{where}: description is missing or empty")
        description = ""
    elif not description.rstrip().endswith("."):
        problems.append(f"{where}: description must be one sentence ending with a full stop")
    titles = _titles(table.get("title"), where, problems)
    lists: dict[str, tuple[str, ...]] = {}
    for key in _LIST_KEYS:
        entries = table.get(key, [])
        if not isinstance(entries, list) or not all(isinstance(e, str) and e for e in entries):
            problems.append(f"{where}: {key} must be a list of non-empty strings")
            entries = []
        elif len(set(entries)) != len(entries):
            problems.append(f"{where}: {key} lists an entry twice")
        lists[key] = tuple(entries)
    for key in lists["ig_invariants"]:
        if not re.fullmatch(r"be-rule-vaccination-[0-9]+", key):
            problems.append(f"{where}: ig_invariants entry {key!r} is not a be-rule-vaccination-<n> key")
    for code in lists["register_rules"]:
        if code not in known_rules:
            close = difflib.get_close_matches(code, sorted(known_rules), n=2)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(f"{where}: unknown register rule {code!r}{hint}")
    if len(problems) > before:
        return None
    return EvaluationItem(
        id=item_id,
        area=str(area),
        titles=titles,
        description=description.strip(),
        blocking=bool(blocking),
        **lists,
    )
