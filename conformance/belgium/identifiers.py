"""Belgian identifiers: naming systems, checks and valid-checksum test values.

Each ``check_xxx(value)`` returns None when ``value`` is a valid FHIR ``Identifier.value`` for that
naming system, else one message saying which kind of identifier is wrong, how, and what was expected.
In FHIR the value is the bare number: separators (dots, dashes, spaces) are an error, not something to
strip. ``IDENTIFIER_CHECKS`` maps each naming-system URL to its check; ``check_identifier`` looks a
system up and returns None for systems that are not Belgian ones.

Rules (see the "Belgian identifiers" section of the project's FACTS):

* SSIN (INSZ/NISS) ``YYMMDDSSSCC``: ``CC = 97 - (YYMMDDSSS mod 97)`` for births before 2000 and
  ``97 - ((2000000000 + YYMMDDSSS) mod 97)`` from 2000. The century is not part of the number, so a
  value is accepted when either rule matches. BIS numbers add 20 (sex unknown) or 40 (sex known) to the
  month. Month 00 and day 00 occur in the register for unknown or partly unknown birth dates, so the
  date part is only checked for plausibility: month 00-12 once a BIS offset is removed, day 00-31.
* NIHDI (RIZIV/INAMI): 6-digit number, 2 check digits, optionally a 3-digit qualification code (not
  checked). ``CC = 97 - (number mod 97)``, or the modulo-89 variant ``89 - (number mod 89)`` that FACTS
  records as assumed for numbers issued since 2013 (nurses, midwives) and 2019 (doctors). The three
  worked examples of FACTS (10828465123, 10829059, 71045471) all satisfy the modulo-97 rule as written;
  none needs the modulo-89 variant. Accepting both rules means a random 8 digits pass with a chance of
  about 2 in 97 instead of 1 in 97.
* CBE (KBO/BCE) enterprise number: 10 digits starting with 0 or 1, ``CC = 97 - (first 8 mod 97)``.
* CNK: exactly 7 digits; there is no public check digit.

A remainder of 0 gives check digits 97 (modulo 97) or 89 (modulo 89), never 00.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date
from types import MappingProxyType

__all__ = [
    "CBE",
    "CNK",
    "CNK_BE_NS",
    "IDENTIFIER_CHECKS",
    "NIHDI",
    "NIHDI_ORGANIZATION",
    "NIHDI_PROFESSIONAL",
    "SSIN",
    "IdentifierCheck",
    "check_cbe",
    "check_cnk",
    "check_identifier",
    "check_nihdi",
    "check_ssin",
    "make_bis",
    "make_cbe",
    "make_nihdi",
    "make_ssin",
]

_CORE_NS = "https://www.ehealth.fgov.be/standards/fhir/core/NamingSystem/"
_MEDICATION_NS = "https://www.ehealth.fgov.be/standards/fhir/medication/NamingSystem/"

SSIN = _CORE_NS + "ssin"
NIHDI = _CORE_NS + "nihdi"
NIHDI_PROFESSIONAL = _CORE_NS + "nihdi-professional"
NIHDI_ORGANIZATION = _CORE_NS + "nihdi-organization"
CBE = _CORE_NS + "cbe"
CNK = _MEDICATION_NS + "cnk-codes"
"""CNK naming system as the medication IG names it."""
CNK_BE_NS = _MEDICATION_NS + "be-ns-cnk-codes"
"""CNK naming system as be-rule-vaccination-2 tests it."""

IdentifierCheck = Callable[[str], str | None]

# Characters people use to make numbers readable; a value made of digits and these is reported as
# "has separators" rather than "has non-digits", which is the more helpful message.
_SEPARATORS = re.compile(r"[.\-/ ]")
_BIS_OFFSETS = {0: "", 20: " (BIS number, sex unknown)", 40: " (BIS number, sex known)"}


def _mod97(number: int) -> int:
    return 97 - number % 97


def _mod89(number: int) -> int:
    return 89 - number % 89


def _is_digits(value: str) -> bool:
    return value.isascii() and value.isdigit()


def _shape_error(kind: str, value: object, lengths: tuple[int, ...]) -> str | None:
    """Say what is wrong with the shape of ``value`` (type, separators, non-digits, length)."""
    expected = " or ".join(str(n) for n in lengths) + " digits"
    if not isinstance(value, str):
        return f"{kind} must be a string of {expected}, found {type(value).__name__} {value!r}"
    if _is_digits(value):
        if len(value) in lengths:
            return None
        return f"{kind} {value!r} must be exactly {expected}, found {len(value)} digits"
    stripped = _SEPARATORS.sub("", value)
    if stripped != value and _is_digits(stripped) and len(stripped) in lengths:
        return f"{kind} {value!r} must be exactly {expected} without separators (no dots, dashes or spaces)"
    if not value:
        return f"{kind} is empty: expected {expected}"
    bad = next(c for c in value if not ("0" <= c <= "9"))
    return f"{kind} {value!r} must contain only the digits 0-9 (found {bad!r}): expected {expected}"


def check_ssin(value: str) -> str | None:
    """Check a Belgian SSIN (INSZ/NISS) or BIS number: 11 digits, plausible date, modulo-97 check."""
    error = _shape_error("SSIN", value, (11,))
    if error is not None:
        return error
    month = int(value[2:4])
    offset = 40 if month >= 40 else 20 if month >= 20 else 0
    kind = "SSIN" + _BIS_OFFSETS[offset]
    if month - offset > 12:
        return (
            f"{kind} {value}: month digits {value[2:4]} are not a month: expected 00-12, "
            "20-32 (BIS number, sex unknown) or 40-52 (BIS number, sex known)"
        )
    if int(value[4:6]) > 31:
        return f"{kind} {value}: day digits {value[4:6]} are not a day: expected 00-31"
    first9 = int(value[:9])
    check = int(value[9:])
    before_2000 = _mod97(first9)
    from_2000 = _mod97(2_000_000_000 + first9)
    if check in (before_2000, from_2000):
        return None
    return (
        f"{kind} {value}: check digits {value[9:]} do not match {before_2000:02d} (born before 2000) "
        f"or {from_2000:02d} (born from 2000), computed as 97 - (first 9 digits mod 97)"
    )


def check_nihdi(value: str) -> str | None:
    """Check a NIHDI (RIZIV/INAMI) number: 8 or 11 digits, modulo-97 (or modulo-89) check digits."""
    error = _shape_error("NIHDI number", value, (8, 11))
    if error is not None:
        return error
    number = int(value[:6])
    check = int(value[6:8])
    by_97 = _mod97(number)
    by_89 = _mod89(number)
    if check in (by_97, by_89):
        return None
    return (
        f"NIHDI number {value}: check digits {value[6:8]} do not match {by_97:02d} "
        f"(97 - (first 6 digits mod 97)) or {by_89:02d} (89 - (first 6 digits mod 89))"
    )


def check_cbe(value: str) -> str | None:
    """Check a CBE (KBO/BCE) enterprise number: 10 digits starting 0 or 1, modulo-97 check."""
    error = _shape_error("CBE number", value, (10,))
    if error is not None:
        return error
    if value[0] not in "01":
        return f"CBE number {value}: must start with 0 or 1, found {value[0]}"
    expected = _mod97(int(value[:8]))
    if int(value[8:]) == expected:
        return None
    return (
        f"CBE number {value}: check digits {value[8:]} do not match {expected:02d} "
        "(97 - (first 8 digits mod 97))"
    )


def check_cnk(value: str) -> str | None:
    """Check a CNK code: exactly 7 digits (no check digit exists)."""
    return _shape_error("CNK code", value, (7,))


IDENTIFIER_CHECKS: Mapping[str, IdentifierCheck] = MappingProxyType(
    {
        SSIN: check_ssin,
        NIHDI: check_nihdi,
        NIHDI_PROFESSIONAL: check_nihdi,
        NIHDI_ORGANIZATION: check_nihdi,
        CBE: check_cbe,
        CNK: check_cnk,
        CNK_BE_NS: check_cnk,
    }
)
"""Naming-system URL → check; read-only."""


def check_identifier(system: str, value: str) -> str | None:
    """Check ``value`` against the Belgian naming system ``system``; None if valid or not Belgian."""
    check = IDENTIFIER_CHECKS.get(system)
    return None if check is None else check(value)


# --- valid-checksum test values ---------------------------------------------------------------------


def _ssin_from_parts(yy: int, mm: int, dd: int, serial: int, from_2000: bool) -> str:
    if not 1 <= serial <= 998:
        raise ValueError(f"SSIN serial must be 1..998, got {serial}")
    first9 = yy * 10_000_000 + mm * 100_000 + dd * 1_000 + serial
    check = _mod97(2_000_000_000 + first9 if from_2000 else first9)
    return f"{first9:09d}{check:02d}"


def _check_birth(birth: date) -> None:
    if not 1900 <= birth.year <= 2099:
        raise ValueError(f"birth year must be 1900..2099, got {birth.year}")


def make_ssin(birth: date, serial: int) -> str:
    """Make a valid SSIN for ``birth`` (1900-2099) and ``serial`` (1..998; odd men, even women)."""
    _check_birth(birth)
    return _ssin_from_parts(birth.year % 100, birth.month, birth.day, serial, birth.year >= 2000)


def make_bis(birth: date | None, serial: int, *, sex_known: bool = True) -> str:
    """Make a valid BIS number (month + 40, or + 20 when the sex is unknown); None: unknown birth date."""
    offset = 40 if sex_known else 20
    if birth is None:
        return _ssin_from_parts(0, offset, 0, serial, False)
    _check_birth(birth)
    return _ssin_from_parts(birth.year % 100, birth.month + offset, birth.day, serial, birth.year >= 2000)


def make_nihdi(number6: int, qualification: str | None = None, *, modulus: int = 97) -> str:
    """Make a valid NIHDI number: 8 digits, or 11 with a 3-digit ``qualification`` code."""
    if not 0 <= number6 <= 999_999:
        raise ValueError(f"NIHDI number must be 0..999999, got {number6}")
    if modulus not in (97, 89):
        raise ValueError(f"NIHDI modulus must be 97 or 89, got {modulus}")
    if qualification is not None and not (len(qualification) == 3 and _is_digits(qualification)):
        raise ValueError(f"NIHDI qualification must be 3 digits, got {qualification!r}")
    check = _mod97(number6) if modulus == 97 else _mod89(number6)
    return f"{number6:06d}{check:02d}{qualification or ''}"


def make_cbe(number8: int) -> str:
    """Make a valid CBE enterprise number from its first 8 digits (0..19999999)."""
    if not 0 <= number8 <= 19_999_999:
        raise ValueError(f"CBE base number must be 0..19999999 (first digit 0 or 1), got {number8}")
    return f"{number8:08d}{_mod97(number8):02d}"
