"""Tests of the evaluation-item catalogue: the shipped items, their checks at load, and scenario tags."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.errors import ConfigurationError
from conformance.evaluation_items import (
    LANGUAGES,
    Catalogue,
    EvaluationItem,
    item_ids_in_tags,
    register_rule_codes,
)
from conformance.simulator.fhir_api import Rule

ISSUE_5_AREAS = ("CON", "REG", "ND", "HIS", "COR", "CAN", "REJ", "RES", "ACC")


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load()


# --- the shipped catalogue ------------------------------------------------------------------------------


def test_shipped_catalogue_size_and_areas(catalogue: Catalogue) -> None:
    assert 35 <= len(catalogue) <= 46
    counts = Counter(item.area for item in catalogue)
    for area in (*ISSUE_5_AREAS, "SEC", "ETE"):
        assert counts[area] >= 2, f"area {area} needs several items"
    assert [area.code for area in catalogue.areas] == [*ISSUE_5_AREAS, "SEC", "ETE"]


def test_ids_are_unique_well_formed_and_numbered_in_order(catalogue: Catalogue) -> None:
    ids = catalogue.ids()
    assert len(ids) == len(set(ids))
    for area in catalogue.areas:
        numbers = [int(item.id.rsplit("-", 1)[1]) for item in catalogue.by_area(area.code)]
        assert numbers == list(range(1, len(numbers) + 1)), area.code
    for item in catalogue:
        assert re.fullmatch(r"VC-[A-Z]{2,3}-\d{2}", item.id)
        assert item.id.split("-")[1] == item.area


def test_titles_in_four_languages_and_translated(catalogue: Catalogue) -> None:
    for item in catalogue:
        assert [lang for lang, _ in item.titles] == list(LANGUAGES)
        english = item.title("en")
        for lang in ("fr", "nl", "de"):
            assert item.title(lang) and item.title(lang) != english, (item.id, lang)
        assert item.description.endswith(".")
    for area in catalogue.areas:
        assert all(area.title(lang) for lang in LANGUAGES)


def test_titles_use_the_register_vocabulary(catalogue: Catalogue) -> None:
    assert catalogue.title("VC-REG-01", "fr").startswith("Enregistre une vaccination")
    assert catalogue.title("VC-REG-01", "nl").startswith("Registreert een")
    assert catalogue.title("VC-REG-01", "de").startswith("Erfasst eine")
    assert "NISS" in catalogue.title("VC-REG-03", "fr")
    assert "INSZ" in catalogue.title("VC-REG-03", "nl")
    assert "relation thérapeutique" in catalogue.title("VC-ACC-02", "fr")


def test_every_register_rule_is_a_simulator_rule(catalogue: Catalogue) -> None:
    codes = {rule.value for rule in Rule}
    assert register_rule_codes() == codes
    used = {code for item in catalogue for code in item.register_rules}
    assert used <= codes
    for needed in (
        "recorder-mismatch",
        "patient-no-consent",
        "no-therapeutic-relationship",
        "duplicate-identifier",
        "version-conflict",
        "occurrence-in-future",
        "token-expired",
        "delete-forbidden",
        "register-unavailable",
    ):
        assert needed in used, needed


def test_every_be_rule_is_checked_by_an_item(catalogue: Catalogue) -> None:
    used = {key for item in catalogue for key in item.ig_invariants}
    assert used == {f"be-rule-vaccination-{n}" for n in range(1, 5)}
    elements = {element for item in catalogue for element in item.ig_elements}
    for forbidden in ("Immunization.lotNumber", "Immunization.expirationDate", "Immunization.location"):
        assert forbidden in elements


def test_ig_references_exist_in_the_be_vaccination_snapshot(catalogue: Catalogue, package_set) -> None:
    catalogue.check_ig(package_set)
    assert len(Catalogue.load(packages=package_set)) == len(catalogue)


def test_blocking_items(catalogue: Catalogue) -> None:
    blocking = catalogue.blocking()
    assert 0 < len(blocking) < len(catalogue)
    assert catalogue.get("VC-REG-01").blocking is True
    assert catalogue.get("VC-CON-01").blocking is False
    assert all(isinstance(item.blocking, bool) for item in catalogue)


# --- the API --------------------------------------------------------------------------------------------


def test_get_by_area_ids_and_title(catalogue: Catalogue) -> None:
    item = catalogue.get("VC-REG-04")
    assert isinstance(item, EvaluationItem)
    assert item.register_rules == ("recorder-mismatch",)
    assert item.ig_elements == ("Immunization.extension:recorder",)
    assert item.tag == "item:VC-REG-04"
    assert "VC-REG-04" in catalogue and "VC-NONE-01" not in catalogue
    assert catalogue.ids()[0] == "VC-CON-01"
    assert [i.id for i in catalogue.by_area("CAN")] == ["VC-CAN-01", "VC-CAN-02", "VC-CAN-03"]
    assert catalogue.title("VC-CAN-01") == catalogue.get("VC-CAN-01").title("en")
    assert catalogue.area("ETE").title("de") == "Ende-zu-Ende-Verschlüsselung"


def test_unknown_language_is_a_configuration_error(catalogue: Catalogue) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown language 'es'.*en, fr, nl, de"):
        catalogue.title("VC-REG-01", "es")
    with pytest.raises(ConfigurationError, match="unknown language"):
        catalogue.area("REG").title("EN")


def test_unknown_item_and_area(catalogue: Catalogue) -> None:
    with pytest.raises(
        ConfigurationError, match=r"unknown evaluation item 'VC-REG-1'.*did you mean VC-REG-01"
    ):
        catalogue.get("VC-REG-1")
    with pytest.raises(ConfigurationError, match="unknown evaluation item"):
        catalogue.title("VC-ZZZ-99", "fr")
    with pytest.raises(ConfigurationError, match=r"unknown evaluation area 'XYZ'"):
        catalogue.by_area("XYZ")


def test_items_are_frozen_and_hashable(catalogue: Catalogue) -> None:
    item = catalogue.get("VC-COR-03")
    with pytest.raises(dataclasses.FrozenInstanceError):
        item.blocking = False  # type: ignore[misc]
    assert len({item, catalogue.get("VC-COR-03")}) == 1


# --- scenario tags --------------------------------------------------------------------------------------


def test_item_ids_in_tags_ignore_other_tags() -> None:
    tags = ["@item:VC-REG-01", "item:VC-REG-02", "@req-record", "slow", "@items:VC-REG-03"]
    assert item_ids_in_tags(tags) == ["VC-REG-01", "VC-REG-02"]


def test_check_tags(catalogue: Catalogue) -> None:
    assert catalogue.check_tags(["@item:VC-REG-01", "item:VC-ACC-02", "@wip"]) == []
    assert catalogue.check_tags([]) == []
    problems = catalogue.check_tags(["@item:VC-REG-99", "@item:vc-reg-01", "@item:", "@item:VC-COR-01"])
    assert len(problems) == 3
    assert problems[0].startswith("@item:VC-REG-99: unknown evaluation item 'VC-REG-99'")
    assert "not an item id shaped VC-<AREA>-<nn>" in problems[1]
    assert problems[2].startswith("@item::")


def test_uncovered(catalogue: Catalogue) -> None:
    everything = [[item.tag] for item in catalogue]
    assert catalogue.uncovered(everything) == []
    assert catalogue.uncovered([]) == catalogue.ids()
    scenarios = [["@item:VC-REG-01", "@item:VC-REG-02"], ["item:VC-CON-01"], ["@smoke"]]
    missing = catalogue.uncovered(scenarios)
    assert "VC-REG-01" not in missing and "VC-CON-01" not in missing
    assert missing[0] == "VC-CON-02"
    assert len(missing) == len(catalogue) - 3


@given(st.lists(st.text(max_size=20), max_size=8))
def test_check_tags_never_raises_and_flags_only_item_tags(tags: list[str]) -> None:
    catalogue = Catalogue.parse(_valid())
    problems = catalogue.check_tags(tags)
    assert len(problems) == sum(1 for i in item_ids_in_tags(tags) if i != "VC-REG-01")


# --- broken catalogues ----------------------------------------------------------------------------------

_AREAS = """
[area.REG]
title.en = "Recording a vaccination"
title.fr = "Enregistrement d'une vaccination"
title.nl = "Registratie van een vaccinatie"
title.de = "Erfassung einer Impfung"
"""

_ITEM = """
[[item]]
id = "{id}"
area = "{area}"
blocking = true
title.en = "Records a vaccination"
title.fr = "Enregistre une vaccination"
title.nl = "Registreert een vaccinatie"
title.de = "Erfasst eine Impfung"
description = "One sentence."
register_rules = ["recorder-mismatch"]
ig_invariants = ["be-rule-vaccination-1"]
"""


def _valid(*extra_items: str) -> str:
    return _AREAS + _ITEM.format(id="VC-REG-01", area="REG") + "".join(extra_items)


def test_a_minimal_catalogue_parses() -> None:
    catalogue = Catalogue.parse(_valid())
    assert catalogue.ids() == ["VC-REG-01"]
    assert catalogue.get("VC-REG-01").ig_invariants == ("be-rule-vaccination-1",)


def test_duplicate_id_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"duplicate id VC-REG-01 \(items 1 and 2\)"):
        Catalogue.parse(_valid(_ITEM.format(id="VC-REG-01", area="REG")), source="broken.toml")


def test_missing_language_is_refused() -> None:
    text = _valid().replace('title.nl = "Registreert een vaccinatie"\n', "")
    with pytest.raises(ConfigurationError, match=r"VC-REG-01: title in 'nl' is missing or empty"):
        Catalogue.parse(text)


def test_empty_language_and_area_language_are_refused() -> None:
    text = (
        _valid().replace('"Erfasst eine Impfung"', '"  "').replace('"Registratie van een vaccinatie"', '""')
    )
    with pytest.raises(ConfigurationError) as caught:
        Catalogue.parse(text, source="broken.toml")
    message = caught.value.message
    assert message.startswith("broken.toml: 2 problem(s) in the evaluation items:")
    assert "area REG: title in 'nl' is missing or empty" in message
    assert "VC-REG-01: title in 'de' is missing or empty" in message


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        ('id = "VC-REG-01"', 'id = "VC-REG-1"', r"VC-REG-1: id must be shaped VC-<AREA>-<nn>"),
        (
            'id = "VC-REG-01"',
            'id = "VC-CON-01"',
            r"VC-CON-01: the id names area CON but the item's area is REG",
        ),
        ('area = "REG"', 'area = "XYZ"', r"VC-REG-01: area 'XYZ' is not one of REG"),
        ("blocking = true", 'blocking = "yes"', r"VC-REG-01: blocking must be true or false"),
        (
            '"recorder-mismatch"',
            '"recorder-missmatch"',
            r"unknown register rule 'recorder-missmatch' \(did you mean recorder-mismatch",
        ),
        ('"be-rule-vaccination-1"', '"ele-1"', r"ig_invariants entry 'ele-1' is not a be-rule-vaccination"),
        ('description = "One sentence."', 'description = ""', r"VC-REG-01: description is missing or empty"),
        (
            'description = "One sentence."',
            'description = "No full stop"',
            r"one sentence ending with a full stop",
        ),
        (
            'title.de = "Erfasst eine Impfung"',
            'title.de = "Erfasst eine Impfung"\ntitle.es = "Registra"',
            r"unsupported language\(s\) es",
        ),
        ("blocking = true", "blocking = true\nowner = 'x'", r"VC-REG-01: unknown key\(s\) owner"),
        (
            'register_rules = ["recorder-mismatch"]',
            'register_rules = "recorder-mismatch"',
            r"register_rules must be a list",
        ),
        ("[[item]]", "[[items]]", r"no \[\[item\]\] tables; unknown top-level key\(s\): items"),
    ],
)
def test_broken_item_is_refused(replace: str, by: str, expected: str) -> None:
    text = _valid()
    assert replace in text
    with pytest.raises(ConfigurationError, match=expected):
        Catalogue.parse(text.replace(replace, by, 1))


def test_invalid_toml_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"bad\.toml: not valid TOML"):
        Catalogue.parse("[[item]\nid = ", source="bad.toml")


def test_no_areas_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"no \[area\.<CODE>\] tables"):
        Catalogue.parse(_ITEM.format(id="VC-REG-01", area="REG"))


def test_register_rules_checked_against_given_codes() -> None:
    with pytest.raises(ConfigurationError, match="unknown register rule 'recorder-mismatch'"):
        Catalogue.parse(_valid(), rule_codes={"other-rule"})


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("ig_elements", "Immunization.lotNumbr", r"element 'Immunization.lotNumbr' is not in be-vaccination"),
        (
            "ig_invariants",
            "be-rule-vaccination-9",
            r"invariant 'be-rule-vaccination-9' is not in be-vaccination",
        ),
        (
            "ig_bindings",
            "Immunization.patient",
            r"element 'Immunization.patient' has no binding in be-vaccination",
        ),
        (
            "ig_bindings",
            "Immunization.sight",
            r"binding element 'Immunization.sight' is not in be-vaccination",
        ),
    ],
)
def test_ig_references_are_checked_against_the_snapshot(
    package_set, key: str, value: str, expected: str
) -> None:
    text = _valid().replace("[[item]]\n", f'[[item]]\n{key} = ["{value}"]\n', 1)
    if key == "ig_invariants":
        text = text.replace('ig_invariants = ["be-rule-vaccination-1"]\n', "")
    catalogue = Catalogue.parse(text)  # without packages, only the shape is checked
    with pytest.raises(ConfigurationError, match=f"VC-REG-01: {expected}"):
        catalogue.check_ig(package_set)
    with pytest.raises(ConfigurationError, match=expected):
        Catalogue.parse(text, packages=package_set)
