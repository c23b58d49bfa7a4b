"""FHIR R4 primitive datatype checks: table-driven cases per type, and equivalence with the R4 regexes."""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from conformance.fhir.definitions import PackageSet
from conformance.fhir.primitives import PRIMITIVE_CHECKS, check_primitive, is_primitive, primitive_check

XHTML = 'xmlns="http://www.w3.org/1999/xhtml"'


def div(inner: str, attributes: str = "") -> str:
    return f"<div {XHTML}{attributes}>{inner}</div>"


VALID: list[tuple[str, object]] = [
    # boolean
    ("boolean", True),
    ("boolean", False),
    # integer family
    ("integer", 0),
    ("integer", -2147483648),
    ("integer", 2147483647),
    ("unsignedInt", 0),
    ("unsignedInt", 2147483647),
    ("positiveInt", 1),
    ("positiveInt", 2147483647),
    # decimal
    ("decimal", 0),
    ("decimal", -1.5),
    ("decimal", 1e2),  # JSON 1e2 parses to the float 100.0
    ("decimal", 10**30),  # big JSON integers are still valid decimals
    ("decimal", Decimal("3.14159265358979323846264338327950288")),
    ("decimal", Decimal("1E+999")),
    # string and markdown
    ("string", "a"),
    ("string", " leading and trailing whitespace is allowed in a string "),
    ("string", "line\nbreaks\r\nand\ttabs"),
    ("string", "Vaccin contre la grippe – Grippe-Impfstoff 💉 ünïcödé"),
    ("string", "x" * (1024 * 1024)),
    ("string", "\u00a0"),  # a non-breaking space is not a control character
    ("markdown", "# Title\n\n* item"),
    # id
    ("id", "a"),
    ("id", "be-vaccination.example-01"),
    ("id", "A" * 64),
    # code
    ("code", "completed"),
    ("code", "entered-in-error"),
    ("code", "a b c"),  # single inner spaces are allowed
    ("code", "été"),
    # uri family
    ("uri", "https://www.ehealth.fgov.be/standards/fhir/core/NamingSystem/ssin"),
    ("uri", "urn:oid:2.16.840.1.113883.6.96"),
    ("uri", "urn:uuid:3e1b2a64-4f7c-4c1e-9b67-2f1a0c5d9e11"),
    ("uri", "#contained"),
    ("uri", "urn:ietf:rfc:3986"),
    ("url", "http://example.org/fhir/Patient/1"),
    (
        "canonical",
        "https://www.ehealth.fgov.be/standards/fhir/vaccination/StructureDefinition/be-vaccination|1.1.2",
    ),
    ("oid", "urn:oid:1.2.840.10008"),
    ("oid", "urn:oid:0.0"),
    ("uuid", "urn:uuid:00000000-0000-0000-0000-000000000000"),
    # date
    ("date", "2021"),
    ("date", "2021-02"),
    ("date", "2021-02-28"),
    ("date", "2024-02-29"),  # leap year
    ("date", "2000-02-29"),  # divisible by 400
    ("date", "0001-01-01"),
    ("date", "9999-12-31"),
    ("date", "2021-04-30"),
    # dateTime
    ("dateTime", "2021"),
    ("dateTime", "2021-07"),
    ("dateTime", "2021-07-05"),
    ("dateTime", "2021-07-05T10:30:00Z"),
    ("dateTime", "2021-07-05T10:30:00+02:00"),
    ("dateTime", "2021-07-05T10:30:00-00:00"),  # accepted by the R4 regex
    ("dateTime", "2021-07-05T10:30:00+14:00"),
    ("dateTime", "2021-07-05T10:30:00-13:59"),
    ("dateTime", "2021-07-05T10:30:00.1Z"),
    ("dateTime", "2021-07-05T10:30:00.123456789+01:00"),
    ("dateTime", "2016-12-31T23:59:60Z"),  # leap second
    ("dateTime", "2024-02-29T00:00:00Z"),
    # instant
    ("instant", "2021-07-05T10:30:00Z"),
    ("instant", "2021-07-05T10:30:00.000+02:00"),
    # time
    ("time", "00:00:00"),
    ("time", "23:59:59"),
    ("time", "10:30:00.5"),
    # base64Binary
    ("base64Binary", "QUJD"),
    ("base64Binary", "QUI="),
    ("base64Binary", "QQ=="),
    ("base64Binary", "QUJD\nREVG\n"),  # line-wrapped content
    ("base64Binary", "+/+/"),
    # xhtml
    ("xhtml", div("Vaccination record")),
    ("xhtml", div('<p>Dose <b>1</b> of <i>2</i></p><img src="#logo" alt=""/>')),
    ("xhtml", div('<table class="grid"><tr><td colspan="2" style="color:red">x</td></tr></table>')),
    ("xhtml", div('<a href="https://www.vaccination-info.be">link</a>')),
    ("xhtml", div('<p xml:lang="fr" lang="fr">Grippe &amp; COVID-19 &#233;t&#xE9; &lt;3</p>')),
    ("xhtml", div("<!-- a comment --><span>é</span>")),
    ("xhtml", div('<img src="data:image/png;base64,iVBORw0KGgo="/>')),  # an image alone is content
    ("xhtml", div("<ul><li>a</li></ul><h1>t</h1><pre>p</pre><br/><hr/>")),
    # FHIRPath system types used in R4 snapshots
    ("http://hl7.org/fhirpath/System.String", "x"),
    ("http://hl7.org/fhirpath/System.Boolean", True),
    ("http://hl7.org/fhirpath/System.Integer", 5),
    ("http://hl7.org/fhirpath/System.Decimal", 1.5),
    ("http://hl7.org/fhirpath/System.Date", "2021-01-01"),
    ("http://hl7.org/fhirpath/System.DateTime", "2021-01-01T00:00:00Z"),
    ("http://hl7.org/fhirpath/System.Time", "12:00:00"),
]

INVALID: list[tuple[str, object, str]] = [
    # JSON type mismatches
    ("boolean", "true", "expected a boolean"),
    ("boolean", 1, "expected a boolean"),
    ("boolean", None, "found null"),
    ("integer", "1", "expected an integer, found a string"),
    ("integer", True, "found a boolean"),
    ("integer", 1.0, "not a valid integer"),
    ("integer", 1e2, "fraction or exponent"),
    ("integer", Decimal("1"), "not a valid integer"),
    ("decimal", "1.5", "expected a number, found a string"),
    ("decimal", False, "found a boolean"),
    ("decimal", [1], "found an array"),
    ("string", 42, "expected a string, found a number"),
    ("string", {"value": "x"}, "found an object"),
    ("date", 2021, "expected a string"),
    ("code", True, "expected a string"),
    ("xhtml", None, "expected a string"),
    # integer ranges
    ("integer", 2147483648, "out of range"),
    ("integer", -2147483649, "out of range"),
    ("integer", 10**30, "out of range"),
    ("unsignedInt", -1, "out of range"),
    ("positiveInt", 0, "out of range"),
    ("positiveInt", 2147483648, "out of range"),
    # decimal
    ("decimal", float("nan"), "not a finite number"),
    ("decimal", float("inf"), "not a finite number"),
    ("decimal", Decimal("NaN"), "not a finite number"),
    # strings
    ("string", "", "empty string"),
    ("string", "x" * (1024 * 1024 + 1), "exceeds the maximum"),
    ("string", "nul\x00", "control character (U+0000)"),
    ("string", "bell\x07", "control character (U+0007)"),
    ("string", "form\x0cfeed", "control character (U+000C)"),
    ("string", "lone \ud800 surrogate", "lone surrogate"),
    ("markdown", "", "empty string"),
    ("markdown", "esc\x1b", "control character"),
    ("markdown", "y" * (1024 * 1024 + 1), "exceeds the maximum"),  # markdown is a string: 1 MB at most
    # id
    ("id", "", "empty string"),
    ("id", "A" * 65, "not a valid id"),
    ("id", "has space", "not a valid id"),
    ("id", "under_score", "not a valid id"),
    ("id", "émile", "not a valid id"),
    # code
    ("code", "", "empty string"),
    ("code", " completed", "not a valid code"),
    ("code", "completed ", "not a valid code"),
    ("code", "a  b", "not a valid code"),
    ("code", "a\tb", "not a valid code"),
    ("code", "a\nb", "not a valid code"),
    ("code", "a\u00a0b", "not a valid code"),
    ("code", " ", "not a valid code"),
    # uri family
    ("uri", "", "empty string"),
    ("uri", "http://example.org/a b", "whitespace"),
    ("uri", "urn:uuid:3E1B2A64-4F7C-4C1E-9B67-2F1A0C5D9E11", "urn:uuid"),
    ("uri", "urn:oid:1.02", "urn:oid"),
    ("url", "http://example.org/\ta", "whitespace"),
    ("canonical", "http://x .org", "whitespace"),
    ("oid", "1.2.3", "not a valid oid"),
    ("oid", "urn:oid:3.1", "not a valid oid"),
    ("oid", "urn:oid:1.02", "not a valid oid"),
    ("oid", "urn:oid:1", "not a valid oid"),
    ("uuid", "urn:uuid:3E1B2A64-4F7C-4C1E-9B67-2F1A0C5D9E11", "lower-case"),
    ("uuid", "3e1b2a64-4f7c-4c1e-9b67-2f1a0c5d9e11", "not a valid uuid"),
    # date
    ("date", "", "empty string"),
    ("date", "2021-13-01", '"2021-13-01" is not a valid date'),
    ("date", "2021-00", "not a valid date"),
    ("date", "2021-02-30", "has no day 30"),
    ("date", "2021-02-29", "2021 is not a leap year"),
    ("date", "1900-02-29", "1900 is not a leap year"),
    ("date", "2021-04-31", "has no day 31"),
    ("date", "2021-01-32", "not a valid date"),
    ("date", "0000", "not a valid date"),
    ("date", "21-01-01", "not a valid date"),
    ("date", "2021-1-1", "not a valid date"),
    ("date", "20210101", "not a valid date"),
    ("date", "2021-01-01T00:00:00Z", "no time part"),
    ("date", " 2021", "not a valid date"),
    ("date", "２０２１", "not a valid date"),  # full-width digits
    # dateTime
    ("dateTime", "2021-07-05T10:30:00", "needs a timezone"),
    ("dateTime", "2021-07-05T10:30Z", "not a valid dateTime"),
    ("dateTime", "2021-07-05T24:00:00Z", "not a valid dateTime"),
    ("dateTime", "2021-07-05T10:30:00+15:00", "not a valid dateTime"),
    ("dateTime", "2021-07-05T10:30:00+14:30", "not a valid dateTime"),
    ("dateTime", "2021-07-05T10:30:00+0200", "not a valid dateTime"),
    ("dateTime", "2021-07-05T10:30:00.Z", "not a valid dateTime"),
    ("dateTime", "2021-07-05 10:30:00Z", "not a valid dateTime"),
    ("dateTime", "2021-07-05t10:30:00z", "not a valid dateTime"),
    ("dateTime", "2021-07T10:30:00Z", "not a valid dateTime"),
    ("dateTime", "2023-02-29T10:30:00Z", "not a leap year"),
    # instant
    ("instant", "2021-07-05", "needs a full date, time and timezone"),
    ("instant", "2021-07-05T10:30:00", "needs a timezone"),
    ("instant", "2021-06-31T10:30:00Z", "has no day 31"),
    # time
    ("time", "24:00:00", "not a valid time"),
    ("time", "10:30", "not a valid time"),
    ("time", "10:30:00Z", "not a valid time"),
    ("time", "10:60:00", "not a valid time"),
    # base64Binary
    ("base64Binary", "", "empty string"),
    ("base64Binary", " \n", "only whitespace"),
    ("base64Binary", "QUJ", "padding"),
    ("base64Binary", "QQ=", "padding"),
    ("base64Binary", "QQ==QQ==", "after padding"),
    ("base64Binary", "=QUJD", "not a valid base64Binary"),
    ("base64Binary", "QU*D", "not a valid base64Binary"),
    ("base64Binary", "QUJD-_", "not a valid base64Binary"),  # base64url alphabet is not base64
    ("base64Binary", "ÀÀÀÀ", "not a valid base64Binary"),
    # xhtml
    ("xhtml", "", "empty string"),
    ("xhtml", "plain text", "must start with <div"),
    ("xhtml", " " + div("x"), "must start with <div"),
    ("xhtml", "<div>no namespace</div>", "the root must be"),
    ("xhtml", '<div xmlns="http://www.w3.org/1999/xhtml">unclosed', "not well-formed"),
    ("xhtml", div("a") + "<p>b</p>", "junk after document element"),
    ("xhtml", div("<p>a</b>"), "mismatched tag"),
    ("xhtml", div("caf&eacute; a&nbsp;b"), "undefined entity"),
    ("xhtml", div("<script>alert(1)</script>"), "element <script> is not allowed"),
    ("xhtml", div("<form><p>x</p></form>"), "element <form> is not allowed"),
    ("xhtml", div('<iframe src="https://x"></iframe>'), "element <iframe> is not allowed"),
    ("xhtml", div("<object>x</object>"), "element <object> is not allowed"),
    ("xhtml", div("<style>p{}</style>x"), "element <style> is not allowed"),
    ("xhtml", div("<body>x</body>"), "element <body> is not allowed"),
    ("xhtml", div('<p onclick="alert(1)">x</p>'), "event attribute onclick"),
    ("xhtml", div("x", ' onLoad="alert(1)"'), "event attribute onLoad"),
    ("xhtml", div('<img src="x" onerror="alert(1)"/>'), "event attribute onerror"),
    ("xhtml", div('<a href="javascript:alert(1)">x</a>'), "script URL"),
    ("xhtml", div('<a href=" JavaScript:alert(1)">x</a>'), "script URL"),
    ("xhtml", div('<p data-x="1">x</p>'), "attribute data-x"),
    ("xhtml", div('<svg:svg xmlns:svg="http://www.w3.org/2000/svg"/>x'), "not in the XHTML namespace"),
    ("xhtml", div('<a xmlns:l="http://www.w3.org/1999/xlink" l:href="#x">x</a>'), "xlink"),
    ("xhtml", div('<p x:y="1">x</p>'), "unbound prefix"),
    ("xhtml", div("<?php echo 1; ?>x"), "processing instructions"),
    ("xhtml", div(" \n\t "), "no non-whitespace content (txt-2)"),
    ("xhtml", div("<p> </p><img alt='no src'/>"), "txt-2"),
    ("xhtml", '<divx xmlns="http://www.w3.org/1999/xhtml">x</divx>', "the root must be"),
    ("xhtml", '<div xmlns="http://www.w3.org/2000/svg">x</div>', "the root must be"),
]


@pytest.mark.parametrize(("type_code", "value"), VALID, ids=lambda v: repr(v)[:40])
def test_valid(type_code: str, value: object) -> None:
    assert check_primitive(type_code, value) is None


@pytest.mark.parametrize(("type_code", "value", "expected"), INVALID, ids=lambda v: repr(v)[:40])
def test_invalid(type_code: str, value: object, expected: str) -> None:
    message = check_primitive(type_code, value)
    assert message is not None
    assert expected in message, message
    message.encode("utf-8")  # messages stay printable even for lone surrogates


def test_every_r4_primitive_has_valid_and_invalid_cases() -> None:
    r4_types = {code for code in PRIMITIVE_CHECKS if not code.startswith("http")}
    assert len(r4_types) == 20
    assert {t for t, _ in VALID} >= r4_types
    assert {t for t, _, _ in INVALID} >= r4_types


def test_message_quotes_the_value() -> None:
    assert check_primitive("date", "2021-13-01") == '"2021-13-01" is not a valid date'
    long_message = check_primitive("id", "x" * 200)
    assert long_message is not None and len(long_message) < 120 and '..."' in long_message


def test_unknown_type_is_a_programming_error() -> None:
    assert not is_primitive("CodeableConcept")
    assert is_primitive("dateTime")
    with pytest.raises(ValueError, match="not a FHIR R4 primitive type"):
        check_primitive("CodeableConcept", {})
    with pytest.raises(ValueError):
        primitive_check("integer64")  # R5, not R4
    assert primitive_check("date")("2021") is None


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        PRIMITIVE_CHECKS["date"] = lambda value: None  # type: ignore[index]


def test_values_parsed_from_json() -> None:
    resource = json.loads(
        '{"a": 1e2, "b": 100, "c": 1.0, "d": true, "e": "2021-02-29", "f": -0, "g": 2147483647}'
    )
    assert check_primitive("decimal", resource["a"]) is None
    assert check_primitive("integer", resource["a"]) is not None  # 1e2 is not an integer lexically
    assert check_primitive("integer", resource["b"]) is None
    assert check_primitive("integer", resource["c"]) is not None
    assert check_primitive("boolean", resource["d"]) is None
    assert check_primitive("date", resource["e"]) is not None
    assert check_primitive("integer", resource["f"]) is None
    assert check_primitive("positiveInt", resource["g"]) is None


def test_xhtml_rejects_entity_expansion_attacks() -> None:
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE div [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
        '<div xmlns="http://www.w3.org/1999/xhtml">&b;</div>'
    )
    assert "must start with <div" in (check_primitive("xhtml", laughs) or "")
    # Even when the string starts with <div, a DOCTYPE can only come as malformed content.
    inner = div('<!DOCTYPE div [<!ENTITY a "x">]>&a;')
    message = check_primitive("xhtml", inner)
    assert message is not None and "not well-formed" in message
    external = div("<p>&ext;</p>") + '<!DOCTYPE x SYSTEM "file:///etc/passwd">'
    assert check_primitive("xhtml", external) is not None


# --- equivalence with the R4 regexes ----------------------------------------------------------------

# The regexes of the `value` elements of the R4 core primitive StructureDefinitions, copied verbatim
# (test_spec_regexes_are_those_of_the_package checks them against the package).
SPEC_REGEX = {
    "boolean": r"true|false",
    "integer": r"-?([0]|([1-9][0-9]*))",
    "positiveInt": r"[1-9][0-9]*",
    "unsignedInt": r"[0]|([1-9][0-9]*)",
    "decimal": r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?",
    "string": r"[ \r\n\t\S]+",
    "markdown": r"[ \r\n\t\S]+",
    "id": r"[A-Za-z0-9\-\.]{1,64}",
    "code": r"[^\s]+(\s[^\s]+)*",
    "uri": r"\S*",
    "url": r"\S*",
    "canonical": r"\S*",
    "oid": r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+",
    "uuid": r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    "date": (
        r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)"
        r"(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?"
    ),
    "dateTime": (
        r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])"
        r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?"
    ),
    "instant": (
        r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])"
        r"T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))"
    ),
    "time": r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?",
    "base64Binary": r"(\s*([0-9a-zA-Z\+/=]){4}\s*)+",
}

REGEX_EXTENSION = "http://hl7.org/fhir/StructureDefinition/regex"


def test_spec_regexes_are_those_of_the_package(package_set: PackageSet) -> None:
    for type_code, expected in SPEC_REGEX.items():
        definition = package_set.resolve(f"http://hl7.org/fhir/StructureDefinition/{type_code}")
        assert definition is not None, type_code
        value = next(e for e in definition["snapshot"]["element"] if e["path"] == f"{type_code}.value")
        found = [
            ext["valueString"]
            for t in value["type"]
            for ext in t.get("extension", [])
            if ext["url"] == REGEX_EXTENSION
        ]
        assert found == [expected], type_code


def _calendar_ok(text: str) -> bool:
    match = re.match(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", text)
    if match is None:
        return True
    year, month, day = (int(g) for g in match.groups())
    return day <= calendar.monthrange(year, month)[1]


def _mutations(draw: Callable[[st.SearchStrategy[Any]], Any], text: str) -> str:
    """Insert, delete or replace one character, from the characters these regexes care about."""
    alphabet = "0123456789-:.TZ+ ze/=AF"
    position = draw(st.integers(0, len(text)))
    op = draw(st.sampled_from(["insert", "delete", "replace"]))
    char = draw(st.sampled_from(alphabet))
    if op == "insert":
        return text[:position] + char + text[position:]
    if op == "delete":
        return text[:position] + text[position + 1 :]
    return text[:position] + char + text[position + 1 :]


LEXICAL_TYPES = ["date", "dateTime", "instant", "time", "id", "oid", "uuid"]


@pytest.mark.parametrize("type_code", LEXICAL_TYPES)
@given(data=st.data())
def test_lexical_types_agree_with_the_r4_regex(type_code: str, data: st.DataObject) -> None:
    spec = re.compile(SPEC_REGEX[type_code], re.ASCII)
    text = data.draw(st.from_regex(spec, fullmatch=True))
    if data.draw(st.booleans()):
        text = _mutations(data.draw, text)
    spec_ok = spec.fullmatch(text) is not None and _calendar_ok(text)
    assert (check_primitive(type_code, text) is None) == spec_ok, text


@pytest.mark.parametrize(
    ("type_code", "low"), [("integer", -(2**31)), ("unsignedInt", 0), ("positiveInt", 1)]
)
@given(data=st.data())
def test_integers_from_the_r4_regex(type_code: str, low: int, data: st.DataObject) -> None:
    text = data.draw(st.from_regex(re.compile(SPEC_REGEX[type_code], re.ASCII), fullmatch=True))
    value = json.loads(text)
    assert (check_primitive(type_code, value) is None) == (low <= value <= 2**31 - 1)


# The R4 decimal regex with exponents of at most 4 digits: Decimal cannot even parse 0E1000000000000000000.
DECIMAL_TEXT = SPEC_REGEX["decimal"].replace(r"([eE][+-]?[0-9]+)?", r"([eE][+-]?[0-9]{1,4})?")


@given(st.from_regex(re.compile(DECIMAL_TEXT, re.ASCII), fullmatch=True))
def test_decimals_from_the_r4_regex(text: str) -> None:
    # parse_float=Decimal keeps 1e999 finite (plain floats would overflow to inf).
    assert check_primitive("decimal", json.loads(text, parse_float=Decimal)) is None


@given(st.binary(max_size=200))
def test_base64_of_any_bytes_is_valid(data: bytes) -> None:
    import base64

    assume(data)
    encoded = base64.b64encode(data).decode("ascii")
    assert check_primitive("base64Binary", encoded) is None
    assert re.fullmatch(SPEC_REGEX["base64Binary"], encoded)


@given(st.text(min_size=1, max_size=50))
def test_strings(text: str) -> None:
    bad = any((ord(c) < 32 and c not in "\t\r\n") or 0xD800 <= ord(c) <= 0xDFFF for c in text)
    assert (check_primitive("string", text) is None) == (not bad)
