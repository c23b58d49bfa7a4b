"""FHIR R4 primitive datatypes: is a parsed JSON value a valid representation of a primitive type?

``check_primitive(type_code, value)`` returns None when ``value`` (as ``json``/``orjson`` parsed it)
is valid for the R4 primitive ``type_code``, else one short message. The JSON type must fit first
(``true``/``false`` for boolean, a number for integer and decimal, a string for everything else);
then the lexical rules of https://hl7.org/fhir/R4/datatypes.html apply. The regexes are those of the
``http://hl7.org/fhir/StructureDefinition/regex`` extension in the R4 core StructureDefinitions,
rewritten with capture groups (equivalence is tested), plus what a regex cannot say:

* real calendar dates (2021-02-30 is invalid, 2000-02-29 is valid, 1900-02-29 is not); leap seconds
  (``:60``) and the ``-00:00`` offset are accepted because the R4 regexes accept them;
* integers within -2147483648..2147483647; decimals finite (``json`` can produce NaN/Infinity);
  ``decimal.Decimal`` is accepted for decimal, for parsers run with ``parse_float=Decimal``;
* strings: not empty, at most 1,048,576 characters for ``string``, no control characters other than
  tab, CR and LF (the R4 regex excludes VT and FF, the text says strings SHOULD NOT contain the rest)
  and no lone surrogates;
* code: the definition's "no leading or trailing whitespace, no whitespace other than single spaces"
  (the R4 regex would also let a single tab through; the definition is followed);
* uri: no whitespace, and a ``urn:oid:``/``urn:uuid:`` value must be a valid oid/uuid;
* base64Binary: whitespace (allowed by the R4 regex for line-wrapped content) is ignored, the rest
  must decode strictly (alphabet, length, padding);
* xhtml: a ``<div>`` in the XHTML namespace, well-formed XML (parsed with expat; DOCTYPE, entity
  declarations and processing instructions are rejected, and HTML named entities such as ``&nbsp;``
  are undefined in XML), only the elements and attributes of the R4 txt-1 xpath (plus ``xml:lang``),
  no ``javascript:`` links, and some non-whitespace text or an image (txt-2).

Unknown type codes raise ``ValueError``: a caller passing one has a bug, not an invalid resource.
``PRIMITIVE_CHECKS`` also answers the FHIRPath system types that R4 snapshots use for ``id``,
``Extension.url`` and primitive ``value`` elements (``http://hl7.org/fhirpath/System.String`` ...);
when an element carries the ``structuredefinition-fhir-type`` extension, check that type instead.

The module is on the validator's hot path: regexes are compiled once, each type is a small function
found by one dict look-up, and the valid path raises no exception.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from types import MappingProxyType
from xml.parsers import expat

__all__ = ["PRIMITIVE_CHECKS", "PrimitiveCheck", "check_primitive", "is_primitive", "primitive_check"]

PrimitiveCheck = Callable[[object], str | None]

INT_MIN = -2_147_483_648
INT_MAX = 2_147_483_647
MAX_STRING_LENGTH = 1024 * 1024

# --- messages (error path only) ---------------------------------------------------------------------


def _show(value: object) -> str:
    if isinstance(value, str):
        text = json.dumps(value[:60], ensure_ascii=False)
        if len(value) > 60:
            text = text[:-1] + '..."'
        # Lone surrogates would make the message itself unencodable.
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return repr(value)


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _not_a_string(value: object) -> str:
    return f"expected a string, found {_json_kind(value)} ({_show(value)})"


def _invalid(value: str, type_code: str, why: str = "") -> str:
    return f"{_show(value)} is not a valid {type_code}" + (f": {why}" if why else "")


_EMPTY = "empty string: a value must have at least one character (omit the element instead)"

# --- strings ----------------------------------------------------------------------------------------

# Control characters other than tab, LF, CR, and lone surrogates (json.loads lets "\ud800" through).
_BAD_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]").search


def _bad_char(value: str, type_code: str, found: re.Match[str]) -> str:
    char = found.group()
    what = "a lone surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
    return _invalid(value, type_code, f"contains {what} (U+{ord(char):04X})")


def _check_string(value: object) -> str | None:
    if type(value) is not str:
        return _not_a_string(value)
    if not value:
        return _EMPTY
    if len(value) > MAX_STRING_LENGTH:
        return f"string of {len(value)} characters exceeds the maximum of {MAX_STRING_LENGTH} (1 MB)"
    found = _BAD_CHAR(value)
    return None if found is None else _bad_char(value, "string", found)


def _check_markdown(value: object) -> str | None:
    if type(value) is not str:
        return _not_a_string(value)
    if not value:
        return _EMPTY
    if len(value) > MAX_STRING_LENGTH:  # markdown is a string, and strings are at most 1 MB
        return f"markdown of {len(value)} characters exceeds the maximum of {MAX_STRING_LENGTH} (1 MB)"
    found = _BAD_CHAR(value)
    return None if found is None else _bad_char(value, "markdown", found)


def _pattern_check(type_code: str, pattern: str, why: str = "") -> PrimitiveCheck:
    """Make a check for a string type defined by one regex (no control characters can match it)."""
    fullmatch = re.compile(pattern).fullmatch

    def check(value: object) -> str | None:
        if type(value) is not str:
            return _not_a_string(value)
        if fullmatch(value) is not None:
            return None
        return _EMPTY if not value else _invalid(value, type_code, why)

    check.__name__ = f"_check_{type_code}"
    check.__doc__ = f"Check a FHIR {type_code}."
    return check


_check_id = _pattern_check("id", r"[A-Za-z0-9\-.]{1,64}", "1 to 64 of A-Z a-z 0-9 - .")
_check_oid = _pattern_check("oid", r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+", "expected urn:oid:<digits and dots>")
_UUID = r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_check_uuid = _pattern_check("uuid", _UUID, "expected urn:uuid: and a lower-case UUID")

# \s and \S are Unicode-aware on str patterns: no kind of whitespace is allowed where the spec says none.
_CODE = re.compile(r"[^\s\x00-\x1f]+( [^\s\x00-\x1f]+)*").fullmatch
_URI = re.compile(r"[^\s\x00-\x1f]+").fullmatch
_URN_OID = re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+").fullmatch
_URN_UUID = re.compile(_UUID).fullmatch


def _check_code(value: object) -> str | None:
    if type(value) is not str:
        return _not_a_string(value)
    if _CODE(value) is not None:
        return None
    if not value:
        return _EMPTY
    return _invalid(value, "code", "no leading, trailing or repeated whitespace, and only single spaces")


def _uri_like(type_code: str) -> PrimitiveCheck:
    def check(value: object) -> str | None:
        if type(value) is not str:
            return _not_a_string(value)
        if _URI(value) is None:
            return (
                _EMPTY
                if not value
                else _invalid(value, type_code, "contains whitespace or control characters")
            )
        if value.startswith("urn:") and type_code == "uri":
            if value.startswith("urn:oid:") and _URN_OID(value) is None:
                return _invalid(value, type_code, "not a valid urn:oid: (digits and dots)")
            if value.startswith("urn:uuid:") and _URN_UUID(value) is None:
                return _invalid(value, type_code, "not a valid urn:uuid: (lower-case UUID)")
        return None

    check.__name__ = f"_check_{type_code}"
    check.__doc__ = f"Check a FHIR {type_code}."
    return check


# --- dates and times --------------------------------------------------------------------------------

_YEAR = r"((?!0000)[0-9]{4})"  # the R4 regex: any four digits but 0000
_MONTH = r"(0[1-9]|1[0-2])"
_DAY = r"(0[1-9]|[12][0-9]|3[01])"
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:(?:[0-5][0-9]|60)(?:\.[0-9]+)?"
_TZ = r"(?:Z|[+-](?:(?:0[0-9]|1[0-3]):[0-5][0-9]|14:00))"

_DATE = re.compile(rf"{_YEAR}(?:-{_MONTH}(?:-{_DAY})?)?").fullmatch
_DATETIME = re.compile(rf"{_YEAR}(?:-{_MONTH}(?:-{_DAY}(?:T{_TIME}{_TZ})?)?)?").fullmatch
_INSTANT = re.compile(rf"{_YEAR}-{_MONTH}-{_DAY}T{_TIME}{_TZ}").fullmatch
_TIME_ONLY = re.compile(_TIME).fullmatch
# Error-path hints only.
_LOOKS_LIKE_DATETIME_NO_TZ = re.compile(rf"{_YEAR}-{_MONTH}-{_DAY}T{_TIME}").fullmatch

_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _bad_day(match: re.Match[str]) -> str | None:
    """Return why the day of a matched date does not exist, or None (a cheap test first)."""
    day = match.group(3)
    if day is None or day <= "28":
        return None
    month = int(match.group(2))
    if int(day) <= _DAYS_IN_MONTH[month]:
        if month != 2 or day != "29":
            return None
        year = int(match.group(1))
        if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
            return None
        return f"{match.group(1)} is not a leap year"
    return f"month {match.group(2)} has no day {day}"


def _date_like(type_code: str, fullmatch: Callable[[str], re.Match[str] | None]) -> PrimitiveCheck:
    def check(value: object) -> str | None:
        if type(value) is not str:
            return _not_a_string(value)
        match = fullmatch(value)
        if match is not None:
            why = _bad_day(match)
            return None if why is None else _invalid(value, type_code, why)
        return _date_hint(value, type_code)

    check.__name__ = f"_check_{type_code}"
    check.__doc__ = f"Check a FHIR {type_code}."
    return check


def _date_hint(value: str, type_code: str) -> str:
    if not value:
        return _EMPTY
    if type_code != "date" and _LOOKS_LIKE_DATETIME_NO_TZ(value):
        return _invalid(value, type_code, "a time needs a timezone (Z or +hh:mm/-hh:mm)")
    if type_code == "date" and "T" in value:
        return _invalid(value, type_code, "a date has no time part")
    if type_code == "instant" and _DATE(value):
        return _invalid(value, type_code, "an instant needs a full date, time and timezone")
    return _invalid(value, type_code)


_check_date = _date_like("date", _DATE)
_check_datetime = _date_like("dateTime", _DATETIME)
_check_instant = _date_like("instant", _INSTANT)


def _check_time(value: object) -> str | None:
    if type(value) is not str:
        return _not_a_string(value)
    if _TIME_ONLY(value) is not None:
        return None
    return (
        _EMPTY
        if not value
        else _invalid(value, "time", "expected hh:mm:ss with optional fraction, no timezone")
    )


# --- booleans and numbers ---------------------------------------------------------------------------


def _check_boolean(value: object) -> str | None:
    if value is True or value is False:
        return None
    return f"expected a boolean (true or false), found {_json_kind(value)} ({_show(value)})"


def _not_an_integer(value: object, type_code: str) -> str:
    if isinstance(value, float | Decimal):
        return f"{value!r} is not a valid {type_code}: a JSON number with a fraction or exponent"
    return f"expected an integer, found {_json_kind(value)} ({_show(value)})"


def _integer_like(type_code: str, low: int) -> PrimitiveCheck:
    def check(value: object) -> str | None:
        if type(value) is not int:  # also rejects bool, whose type is bool
            return _not_an_integer(value, type_code)
        if low <= value <= INT_MAX:
            return None
        return f"{value} is out of range for {type_code} ({low}..{INT_MAX})"

    check.__name__ = f"_check_{type_code}"
    check.__doc__ = f"Check a FHIR {type_code}."
    return check


_check_integer = _integer_like("integer", INT_MIN)
_check_unsigned_int = _integer_like("unsignedInt", 0)
_check_positive_int = _integer_like("positiveInt", 1)


def _check_decimal(value: object) -> str | None:
    kind = type(value)
    if kind is int:
        return None
    if kind is float:
        return None if math.isfinite(value) else f"{value!r} is not a valid decimal: not a finite number"
    if kind is Decimal:
        return None if value.is_finite() else f"{value!r} is not a valid decimal: not a finite number"
    return f"expected a number, found {_json_kind(value)} ({_show(value)})"


# --- base64Binary -----------------------------------------------------------------------------------

_ASCII_WHITESPACE = re.compile(r"[ \t\r\n\f\v]+")


def _check_base64(value: object) -> str | None:
    if type(value) is not str:
        return _not_a_string(value)
    data = _ASCII_WHITESPACE.sub("", value) if _ASCII_WHITESPACE.search(value) else value
    if not data:
        return _EMPTY if not value else _invalid(value, "base64Binary", "only whitespace")
    try:
        binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError) as error:
        why = str(error).rstrip(".")
        return _invalid(value, "base64Binary", why[:1].lower() + why[1:])
    return None


# --- xhtml ------------------------------------------------------------------------------------------

_XHTML_NS = "http://www.w3.org/1999/xhtml"
_XML_NS = "http://www.w3.org/XML/1998/namespace"
# txt-1 as the R4 xpath spells it; xml:lang is added, as the HL7 validator allows it.
_TXT1_ELEMENTS = (
    "a abbr acronym b big blockquote br caption cite code col colgroup dd dfn div dl dt em h1 h2 h3 h4 "
    "h5 h6 hr i img li ol p pre q samp small span strong sub sup table tbody td tfoot th thead tr tt ul "
    "var"
)
_TXT1_ATTRIBUTES = (
    "abbr accesskey align alt axis bgcolor border cellhalign cellpadding cellspacing cellvalign char "
    "charoff charset cite class colspan compact coords dir frame headers height href hreflang hspace id "
    "lang longdesc name nowrap rel rev rowspan rules scope shape span src start style summary tabindex "
    "title type valign value vspace width"
)
_ELEMENTS = frozenset(_TXT1_ELEMENTS.split())
_ATTRIBUTES = frozenset([*_TXT1_ATTRIBUTES.split(), "xml:lang"])
_SCRIPT_URL = re.compile(r"[\x00-\x20]*(?:javascript|vbscript)\s*:", re.IGNORECASE).match


class _Stop(Exception):
    """Raised from an expat handler to end parsing at the first problem."""


class _XhtmlScan:
    __slots__ = ("content", "root_seen")

    def __init__(self) -> None:
        self.content = False
        self.root_seen = False

    def start(self, name: str, attributes: dict[str, str]) -> None:
        namespace, _, local = name.rpartition(" ")
        if not self.root_seen:
            self.root_seen = True
            if name != f"{_XHTML_NS} div":
                raise _Stop(f'the root must be <div xmlns="{_XHTML_NS}">')
        elif namespace != _XHTML_NS:
            raise _Stop(f"element <{local}> is not in the XHTML namespace")
        if local not in _ELEMENTS:
            raise _Stop(f"element <{local}> is not allowed in a narrative (txt-1)")
        for attribute, text in attributes.items():
            attr_ns, _, attr = attribute.rpartition(" ")
            if attr_ns:
                attr = "xml:" + attr if attr_ns == _XML_NS else f"{{{attr_ns}}}{attr}"
            if attr not in _ATTRIBUTES:
                if attr[:2].lower() == "on":
                    raise _Stop(f"event attribute {attr} on <{local}> is not allowed (txt-1)")
                raise _Stop(f"attribute {attr} on <{local}> is not allowed in a narrative (txt-1)")
            if (attr == "href" or attr == "src") and _SCRIPT_URL(text):
                raise _Stop(f"script URL in {attr} on <{local}> is not allowed")
        if local == "img" and "src" in attributes:
            self.content = True

    def text(self, data: str) -> None:
        if not self.content and not data.isspace():
            self.content = True

    @staticmethod
    def doctype(*_: object) -> None:
        raise _Stop("a DOCTYPE is not allowed")

    @staticmethod
    def entity_declaration(*_: object) -> None:
        raise _Stop("entity declarations are not allowed")

    @staticmethod
    def processing_instruction(*_: object) -> None:
        raise _Stop("processing instructions are not allowed")


def _check_xhtml(value: object) -> str | None:
    if type(value) is not str:
        return _not_a_string(value)
    if not value.startswith("<div"):
        return (
            _EMPTY if not value else f'xhtml must start with <div xmlns="{_XHTML_NS}">, found {_show(value)}'
        )
    scan = _XhtmlScan()
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.buffer_text = True
    parser.StartElementHandler = scan.start
    parser.CharacterDataHandler = scan.text
    parser.StartDoctypeDeclHandler = scan.doctype
    parser.EntityDeclHandler = scan.entity_declaration
    parser.ProcessingInstructionHandler = scan.processing_instruction
    try:
        parser.Parse(value, True)
    except _Stop as stop:
        return f"invalid xhtml: {stop}"
    except expat.ExpatError as error:
        where = f"line {error.lineno}, column {error.offset}"
        message = f"xhtml is not well-formed XML: {expat.ErrorString(error.code)} at {where}"
        if error.code == expat.errors.codes[expat.errors.XML_ERROR_UNDEFINED_ENTITY]:
            message += " (only &lt; &gt; &amp; &quot; &apos; and numeric references exist in XML)"
        elif error.code == expat.errors.codes[expat.errors.XML_ERROR_UNBOUND_PREFIX]:
            message += " (undeclared namespace prefix)"
        return message
    if not scan.content:
        return "invalid xhtml: the narrative has no non-whitespace content (txt-2)"
    return None


# --- dispatch ---------------------------------------------------------------------------------------

_FHIRPATH = "http://hl7.org/fhirpath/System."

PRIMITIVE_CHECKS: Mapping[str, PrimitiveCheck] = MappingProxyType(
    {
        "boolean": _check_boolean,
        "integer": _check_integer,
        "positiveInt": _check_positive_int,
        "unsignedInt": _check_unsigned_int,
        "decimal": _check_decimal,
        "string": _check_string,
        "markdown": _check_markdown,
        "id": _check_id,
        "code": _check_code,
        "uri": _uri_like("uri"),
        "url": _uri_like("url"),
        "canonical": _uri_like("canonical"),
        "oid": _check_oid,
        "uuid": _check_uuid,
        "date": _check_date,
        "dateTime": _check_datetime,
        "instant": _check_instant,
        "time": _check_time,
        "base64Binary": _check_base64,
        "xhtml": _check_xhtml,
        _FHIRPATH + "String": _check_string,
        _FHIRPATH + "Boolean": _check_boolean,
        _FHIRPATH + "Integer": _check_integer,
        _FHIRPATH + "Decimal": _check_decimal,
        _FHIRPATH + "Date": _check_date,
        _FHIRPATH + "DateTime": _check_datetime,
        _FHIRPATH + "Time": _check_time,
    }
)
"""Type code → check; read-only. Bind the function once (``primitive_check``) in compiled plans."""


def is_primitive(type_code: str) -> bool:
    """Tell whether ``type_code`` is an R4 primitive type (or FHIRPath system type) this module checks."""
    return type_code in PRIMITIVE_CHECKS


def primitive_check(type_code: str) -> PrimitiveCheck:
    """Return the check function for ``type_code``; ValueError if it is not a primitive type."""
    check = PRIMITIVE_CHECKS.get(type_code)
    if check is None:
        raise ValueError(f"not a FHIR R4 primitive type: {type_code!r}")
    return check


def check_primitive(type_code: str, value: object) -> str | None:
    """Check a parsed JSON value against an R4 primitive type: None if valid, else a short message."""
    check = PRIMITIVE_CHECKS.get(type_code)
    if check is None:
        raise ValueError(f"not a FHIR R4 primitive type: {type_code!r}")
    return check(value)
