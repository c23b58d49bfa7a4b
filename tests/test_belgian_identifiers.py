"""Belgian identifier checks: worked examples, every error kind, and properties of the check digits."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.belgium import identifiers as ids
from conformance.belgium.identifiers import (
    IDENTIFIER_CHECKS,
    check_cbe,
    check_cnk,
    check_identifier,
    check_nihdi,
    check_ssin,
    make_bis,
    make_cbe,
    make_nihdi,
    make_ssin,
)

# --- worked examples (FACTS, "Belgian identifiers") -------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "94021300145",  # born 1994-02-13
        "06070500252",  # born 2006-07-05: only the from-2000 rule matches
        "85493000163",  # BIS, sex known (month 09 + 40)
        "72230000123",  # BIS, sex unknown (month 03 + 20), day 00
    ],
)
def test_valid_ssin_examples(value: str) -> None:
    assert check_ssin(value) is None
    assert check_identifier(ids.SSIN, value) is None


def test_ig_example_ssin_fails_with_both_expected_check_values() -> None:
    message = check_ssin("79121137740")
    assert message is not None
    assert "SSIN 79121137740" in message
    assert "check digits 40" in message
    assert "66" in message and "95" in message  # before 2000 / from 2000


@pytest.mark.parametrize("value", ["10828465123", "10829059", "71045471"])
def test_valid_nihdi_examples(value: str) -> None:
    assert check_nihdi(value) is None
    for system in (ids.NIHDI, ids.NIHDI_PROFESSIONAL, ids.NIHDI_ORGANIZATION):
        assert check_identifier(system, value) is None


def test_facts_nihdi_examples_fit_the_modulo_97_rule_alone() -> None:
    # Documented in the module docstring: none of the examples needs the modulo-89 variant.
    for value in ["10828465123", "10829059", "71045471"]:
        assert int(value[6:8]) == 97 - int(value[:6]) % 97


def test_valid_cbe_example() -> None:
    assert check_cbe("0406798006") is None
    assert check_identifier(ids.CBE, "0406798006") is None


def test_cnk_both_naming_systems() -> None:
    assert ids.CNK == "https://www.ehealth.fgov.be/standards/fhir/medication/NamingSystem/cnk-codes"
    assert (
        ids.CNK_BE_NS == "https://www.ehealth.fgov.be/standards/fhir/medication/NamingSystem/be-ns-cnk-codes"
    )
    for system in (ids.CNK, ids.CNK_BE_NS):
        assert check_identifier(system, "1234567") is None
        assert check_identifier(system, "123456") is not None


def test_registry_covers_every_naming_system() -> None:
    core = "https://www.ehealth.fgov.be/standards/fhir/core/NamingSystem/"
    assert set(IDENTIFIER_CHECKS) == {
        core + "ssin",
        core + "nihdi",
        core + "nihdi-professional",
        core + "nihdi-organization",
        core + "cbe",
        ids.CNK,
        ids.CNK_BE_NS,
    }
    with pytest.raises(TypeError):
        IDENTIFIER_CHECKS["x"] = check_cnk  # type: ignore[index]


def test_unknown_system_is_not_checked() -> None:
    assert check_identifier("http://example.org/ids", "anything at all") is None


# --- each error kind ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "value", "expected"),
    [
        # wrong length
        (check_ssin, "9402130014", ["SSIN", "11 digits", "found 10"]),
        (check_ssin, "940213001455", ["SSIN", "11 digits", "found 12"]),
        (check_nihdi, "1082846", ["NIHDI", "8 or 11 digits", "found 7"]),
        (check_nihdi, "108284651", ["NIHDI", "8 or 11 digits", "found 9"]),
        (check_cbe, "406798006", ["CBE", "10 digits", "found 9"]),
        (check_cnk, "12345678", ["CNK", "7 digits", "found 8"]),
        # empty
        (check_ssin, "", ["SSIN", "empty"]),
        (check_cnk, "", ["CNK", "empty"]),
        # non-digits (including non-ASCII digits, which str.isdigit would accept)
        (check_ssin, "9402130014X", ["SSIN", "only the digits", "'X'"]),
        (check_ssin, "٩4021300145", ["SSIN", "only the digits"]),
        (check_nihdi, "1082846A", ["NIHDI", "only the digits"]),
        (check_cbe, "BE0406798006", ["CBE", "only the digits", "'B'"]),
        (check_cnk, "12345a7", ["CNK", "only the digits"]),
        # separators
        (check_ssin, "94.02.13-001.45", ["SSIN", "without separators"]),
        (check_ssin, "940213 001 45", ["SSIN", "without separators"]),
        (check_nihdi, "1-08284-65-123", ["NIHDI", "without separators"]),
        (check_cbe, "0406.798.006", ["CBE", "without separators"]),
        # bad check digits
        (check_ssin, "94021300146", ["SSIN 94021300146", "check digits 46", "45"]),
        (check_ssin, "85493000164", ["BIS number, sex known", "check digits 64"]),
        (check_nihdi, "10828466123", ["NIHDI number 10828466123", "check digits 66", "65"]),
        (check_nihdi, "10829058", ["NIHDI", "check digits 58", "59"]),
        (check_cbe, "0406798007", ["CBE number 0406798007", "check digits 07", "06"]),
        # bad date part (SSIN) and bad first digit (CBE)
        (check_ssin, "94130000145", ["SSIN 94130000145", "month digits 13"]),
        (check_ssin, "94330000145", ["month digits 33", "20-32"]),
        (check_ssin, "94530000145", ["month digits 53", "40-52"]),
        (check_ssin, "94023200145", ["SSIN 94023200145", "day digits 32"]),
        (check_ssin, "94429900145", ["BIS number, sex known", "day digits 99"]),
        (check_cbe, "2406798006", ["CBE", "start with 0 or 1"]),
    ],
)
def test_error_messages(check, value: str, expected: list[str]) -> None:
    message = check(value)
    assert message is not None
    for part in expected:
        assert part in message, (part, message)


@pytest.mark.parametrize("check", [check_ssin, check_nihdi, check_cbe, check_cnk])
@pytest.mark.parametrize("value", [None, 94021300145, ["94021300145"]])
def test_non_string_values_are_reported_not_raised(check, value: object) -> None:
    message = check(value)  # type: ignore[arg-type]
    assert message is not None and "must be a string" in message


@pytest.mark.parametrize(
    "first9",
    [
        "940200001",  # day 00 (partly unknown birth date)
        "940000001",  # month and day 00
        "004000005",  # BIS number with an unknown birth date
        "942000005",  # BIS number, sex unknown, month and day unknown
    ],
)
def test_zero_month_and_day_are_plausible(first9: str) -> None:
    value = f"{first9}{97 - int(first9) % 97:02d}"
    assert check_ssin(value) is None


def test_ssin_remainder_zero_gives_97() -> None:
    first9 = 940213000 + (97 - 940213000 % 97) % 97  # same date part, serial adjusted
    assert first9 % 97 == 0 and str(first9).startswith("940213")
    assert check_ssin(f"{first9}97") is None
    assert check_ssin(f"{first9}00") is not None


def test_makers_reject_out_of_range_input() -> None:
    with pytest.raises(ValueError):
        make_ssin(date(1899, 12, 31), 1)
    with pytest.raises(ValueError):
        make_ssin(date(1990, 1, 1), 0)
    with pytest.raises(ValueError):
        make_ssin(date(1990, 1, 1), 999)
    with pytest.raises(ValueError):
        make_nihdi(1_000_000, None)
    with pytest.raises(ValueError):
        make_nihdi(1, "12")
    with pytest.raises(ValueError):
        make_nihdi(1, None, modulus=11)
    with pytest.raises(ValueError):
        make_cbe(20_000_000)


def test_makers_reproduce_the_examples() -> None:
    assert make_ssin(date(1994, 2, 13), 1) == "94021300145"
    assert make_ssin(date(2006, 7, 5), 2) == "06070500252"
    assert make_nihdi(108284, "123") == "10828465123"
    assert make_nihdi(108290, None) == "10829059"
    assert make_cbe(4067980) == "0406798006"
    assert make_bis(date(1985, 9, 30), 1)[:9] == "854930001"


# --- properties --------------------------------------------------------------------------------------

births = st.dates(min_value=date(1900, 1, 1), max_value=date(2099, 12, 31))
ssin_serials = st.integers(min_value=1, max_value=998)
nihdi_numbers = st.integers(min_value=0, max_value=999_999)
qualifications = st.none() | st.from_regex(r"[0-9]{3}", fullmatch=True)
cbe_numbers = st.integers(min_value=0, max_value=19_999_999)


def _mutate(value: str, position: int, delta: int) -> str:
    """Replace the digit at ``position`` by a different digit (``delta`` in 1..9, modulo 10)."""
    digit = (int(value[position]) + delta) % 10
    return value[:position] + str(digit) + value[position + 1 :]


def _ssin_rule_matches(value: str, from_2000: bool) -> bool:
    first9 = int(value[:9]) + (2_000_000_000 if from_2000 else 0)
    return int(value[9:]) == 97 - first9 % 97


@given(births, ssin_serials)
def test_made_ssins_are_valid(birth: date, serial: int) -> None:
    value = make_ssin(birth, serial)
    assert check_ssin(value) is None
    assert value[:6] == birth.strftime("%y%m%d")


@given(st.none() | births, ssin_serials, st.booleans())
def test_made_bis_numbers_are_valid(birth: date | None, serial: int, sex_known: bool) -> None:
    value = make_bis(birth, serial, sex_known=sex_known)
    assert check_ssin(value) is None
    assert int(value[2:4]) - (40 if sex_known else 20) == (0 if birth is None else birth.month)


@given(births, ssin_serials, st.booleans(), st.integers(0, 10), st.integers(1, 9))
def test_changing_one_ssin_digit_breaks_it(
    birth: date, serial: int, bis: bool, position: int, delta: int
) -> None:
    value = make_bis(birth, serial) if bis else make_ssin(birth, serial)
    from_2000 = birth.year >= 2000
    mutated = _mutate(value, position, delta)
    # Under the rule the value was made with, one changed digit always breaks it: a change in the
    # first 9 digits shifts them by delta * 10**k, never a multiple of the prime 97, and a change in
    # the check digits changes them while the expected value stays the same.
    assert not _ssin_rule_matches(mutated, from_2000)
    # check_ssin accepts either century rule (the century is not part of the number), and the mutated
    # value can, about once in 97 cases, land exactly on the *other* rule's check value. Only there the
    # property "fails check_ssin" does not hold mathematically; everywhere else it must.
    if not _ssin_rule_matches(mutated, not from_2000):
        assert check_ssin(mutated) is not None


def test_one_changed_digit_can_land_on_the_other_century_rule() -> None:
    # The exception the property above allows for, shown once: 1996-01-01 made with the before-2000
    # rule; changing the second digit gives a number whose check digits fit the from-2000 rule.
    original, mutated = "96010100152", "90010100152"
    assert make_ssin(date(1996, 1, 1), 1) == original
    assert _ssin_rule_matches(original, from_2000=False)
    assert _ssin_rule_matches(mutated, from_2000=True)
    assert check_ssin(mutated) is None


@given(nihdi_numbers, qualifications, st.sampled_from([97, 89]))
def test_made_nihdi_numbers_are_valid(number6: int, qualification: str | None, modulus: int) -> None:
    value = make_nihdi(number6, qualification, modulus=modulus)
    assert len(value) == (8 if qualification is None else 11)
    assert check_nihdi(value) is None


@given(nihdi_numbers, qualifications, st.sampled_from([97, 89]), st.integers(0, 7), st.integers(1, 9))
def test_changing_one_nihdi_digit_breaks_it(
    number6: int, qualification: str | None, modulus: int, position: int, delta: int
) -> None:
    # Only the first 8 digits (number and check) are checked: the 3-digit qualification code carries
    # no check, so changing it keeps the number valid by design.
    value = make_nihdi(number6, qualification, modulus=modulus)
    mutated = _mutate(value, position, delta)
    number, check = int(mutated[:6]), int(mutated[6:8])
    same_rule = modulus - number % modulus
    other = 89 if modulus == 97 else 97
    # A change shifts the number by delta * 10**k (never a multiple of the primes 97 or 89) or changes
    # the check digits, so the rule the value was made with always fails ...
    assert check != same_rule
    # ... but the other accepted rule can match by chance (about 1 in 89); only there check_nihdi may
    # accept the mutated value.
    if check != other - number % other:
        assert check_nihdi(mutated) is not None


@given(cbe_numbers)
def test_made_cbe_numbers_are_valid(number8: int) -> None:
    value = make_cbe(number8)
    assert len(value) == 10
    assert check_cbe(value) is None


@given(cbe_numbers, st.integers(0, 9), st.integers(1, 9))
def test_changing_one_cbe_digit_breaks_it(number8: int, position: int, delta: int) -> None:
    # One rule only: the property holds for every digit without exception (a first digit of 2-9 is
    # rejected by the "starts with 0 or 1" rule, 0<->1 shifts the number by 10**7).
    mutated = _mutate(make_cbe(number8), position, delta)
    assert check_cbe(mutated) is not None


@given(st.from_regex(r"[0-9]{7}", fullmatch=True))
def test_any_seven_digits_are_a_valid_cnk(value: str) -> None:
    assert check_cnk(value) is None
