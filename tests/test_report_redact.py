"""Tests of the Redactor: SSIN/BIS, names and credentials replaced by stable keyed pseudonyms everywhere."""

from __future__ import annotations

import re
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conformance.belgium.identifiers import make_bis, make_ssin
from conformance.report import Redactor, build_report, simulator_names
from conformance.report.redact import PSEUDONYM
from conformance.traffic.recorder import Exchange
from tests.report_fixtures import catalogue, formatted_ssin, make_jwt, make_run, people, synthetic_run

SECRET = b"0123456789abcdef0123456789abcdef"
NAMES = ["Jean", "Exemple", "Modèle", "Van den Berg"]
JEAN = "58032100126"  # Jean Exemple's SSIN in the test data
BIS = "90451200792"


@pytest.fixture
def redactor() -> Redactor:
    return Redactor(SECRET, NAMES)


# -- SSIN and BIS ---------------------------------------------------------------------------------------


def test_ssin_bare_and_formatted_get_one_pseudonym(redactor: Redactor) -> None:
    text = redactor.text(f"patient {JEAN} alias {formatted_ssin(JEAN)}; BIS {BIS}")
    pseudonym = redactor.pseudonym("SSIN", JEAN)
    assert text == f"patient {pseudonym} alias {pseudonym}; BIS {redactor.pseudonym('BIS', BIS)}"
    assert re.fullmatch(r"SSIN-[0-9a-f]{8}", pseudonym)


def test_numbers_that_are_not_ssins_stay(redactor: Redactor) -> None:
    for text in ("58032100127", "580321001260", "1700000000000", "2025-11-20T09:30:00Z", "0987654394"):
        assert redactor.text(text) == text


def test_pseudonyms_depend_on_the_secret() -> None:
    one, other = Redactor(SECRET), Redactor(b"another secret of 32 bytes......")
    assert one.text(JEAN) == Redactor(SECRET).text(JEAN) != other.text(JEAN)


def test_the_secret_is_not_shown_and_must_be_long_enough() -> None:
    assert SECRET.decode() not in repr(Redactor(SECRET))
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Redactor(b"short")


@given(
    birth=st.dates(min_value=date(1900, 1, 1), max_value=date(2099, 12, 31)),
    serial=st.integers(1, 998),
    bis=st.booleans(),
    before=st.text(max_size=12),
    after=st.text(max_size=12),
    formatted=st.booleans(),
)
def test_any_valid_ssin_or_bis_in_any_text_is_replaced(
    birth: date, serial: int, bis: bool, before: str, after: str, formatted: bool
) -> None:
    number = make_bis(birth, serial) if bis else make_ssin(birth, serial)
    shown = formatted_ssin(number) if formatted else number
    before = before if not before or not before[-1].isdigit() else before + " "
    after = after if not after or not after[0].isdigit() else " " + after
    redacted = Redactor(SECRET).text(before + shown + after)
    assert number not in redacted and shown not in redacted
    assert Redactor(SECRET).pseudonym("BIS" if bis else "SSIN", number) in redacted


@given(st.text(max_size=200))
def test_redacting_twice_changes_nothing(text: str) -> None:
    redactor = Redactor(SECRET, NAMES)
    once = redactor.text(text)
    assert redactor.text(once) == once


# -- names -----------------------------------------------------------------------------------------------


def test_names_whole_words_case_and_accent_insensitive(redactor: Redactor) -> None:
    text = redactor.text("JEAN exemple, Jeanne, Exemplerie, modele and MODÈLE; van  den berg")
    jean, exemple, modele = (redactor.pseudonym("NAME", n) for n in ("jean", "exemple", "modele"))
    assert (
        text
        == f"{jean} {exemple}, Jeanne, Exemplerie, {modele} and {modele}; {redactor.pseudonym('NAME', 'van den berg')}"
    )


def test_simulator_names_cover_every_test_person() -> None:
    names = set(simulator_names())
    for person in [*people().patients, *people().professionals]:
        assert {person.given_name, person.family_name} <= names


def test_for_run_draws_a_fresh_secret_and_adds_extra_names() -> None:
    first, second = Redactor.for_run(["Zorro"]), Redactor.for_run(["Zorro"])
    assert "Zorro" not in first.text("Zorro and Jean")
    assert first.text("Jean") != second.text("Jean")


# -- credentials -------------------------------------------------------------------------------------------


def test_headers(redactor: Redactor) -> None:
    jwt = make_jwt("x", 1)
    assert redactor.header("Authorization", f"Bearer {jwt}") == f"Bearer {redactor.token(jwt)}"
    assert redactor.header("authorization", "sha256:0123456789abcdef") == redactor.token(
        "sha256:0123456789abcdef"
    )
    assert redactor.header("Cookie", "a=1; b=2") == f"a={redactor.token('1')}; b={redactor.token('2')}"
    assert (
        redactor.header("Set-Cookie", "s=abc; Path=/; HttpOnly")
        == f"s={redactor.token('abc')}; Path=/; HttpOnly"
    )
    for name in ("X-Api-Key", "X-Session-Id", "DPoP", "X-Refresh-Token"):
        assert PSEUDONYM.fullmatch(redactor.header(name, "value-1234"))
    assert redactor.header("X-Patient", formatted_ssin(JEAN)) == redactor.pseudonym("SSIN", JEAN)
    assert redactor.header("Content-Type", "application/fhir+json") == "application/fhir+json"


def test_text_quoting_tokens(redactor: Redactor) -> None:
    jwt = make_jwt("x", 2)
    text = (
        f'token {jwt}; Bearer opaque-token-123456789 sent; "refresh_token": "r-1"; '
        "?code=abc123&state=s; access_token=zzz&x=1; basic checks passed; code=invalid"
    )
    redacted = redactor.text(text)
    for secret in (jwt, "opaque-token-123456789", "r-1", "abc123", "zzz"):
        assert secret not in redacted
    assert "basic checks passed" in redacted and "code=invalid" in redacted


def test_urls(redactor: Redactor) -> None:
    url = (
        "https://user:pa55@h.example/fhir/Patient/58032100126/Immunization"
        "?patient.identifier=https%3A%2F%2Fx%2Fssin%7C58032100126&name=Mod%C3%A8le&_count=10"
    )
    redacted = redactor.url(url)
    ssin, name = redactor.pseudonym("SSIN", JEAN), redactor.pseudonym("NAME", "modele")
    assert redacted.startswith(
        f"https://user:{redactor.token('pa55')}@h.example/fhir/Patient/{ssin}/Immunization?"
    )
    assert ssin in redacted.split("?")[1] and name in redacted and "_count=10" in redacted
    assert redactor.url("http://h/cb?code=abc&state=s") == f"http://h/cb?code={redactor.token('abc')}&state=s"
    plain = "http://127.0.0.1:8080/fhir/Observation?code=http%3A%2F%2Floinc.org%7C1234-5"
    assert redactor.url(plain) == plain  # FHIR's code parameter and untouched URLs keep their spelling


def test_json_oauth_fields_and_fhir_codes(redactor: Redactor) -> None:
    body = {
        "grant_type": "authorization_code",
        "code": "abc",
        "client_assertion": "eyJx.eyJy.z",
        "coding": [{"code": "871717007", "display": "Jean"}],
        "ssin": 58032100126,
        "count": 58032100127,
        JEAN: True,
    }
    redacted = redactor.json(body)
    assert redacted["code"] == redactor.token("abc")
    assert redacted["client_assertion"] == redactor.token("eyJx.eyJy.z")
    assert redacted["coding"] == [{"code": "871717007", "display": redactor.pseudonym("NAME", "jean")}]
    assert redacted["ssin"] == redactor.pseudonym("SSIN", JEAN) and redacted["count"] == 58032100127
    assert redacted[redactor.pseudonym("SSIN", JEAN)] is True
    assert body["code"] == "abc"  # the input is not changed
    assert redactor.json({"code": "abc"}) == {"code": "abc"}


def test_deep_json_is_redacted_without_recursion(redactor: Redactor) -> None:
    deep: dict = {"v": JEAN}
    for _ in range(1500):  # deeper than Python's recursion limit
        deep = {"x": [deep]}
    node = redactor.json(deep)
    for _ in range(1500):
        node = node["x"][0]
    assert node == {"v": redactor.pseudonym("SSIN", JEAN)}


def test_bodies(redactor: Redactor) -> None:
    form = b"grant_type=authorization_code&code=abc&code_verifier=v1&client_id=vendor-software"
    redacted = redactor.body(form, "application/x-www-form-urlencoded").decode()
    assert (
        f"code={redactor.token('abc')}" in redacted
        and "v1" not in redacted
        and "client_id=vendor-software" in redacted
    )
    assert (
        redactor.body(f"note about {JEAN}".encode(), "text/plain")
        == f"note about {redactor.pseudonym('SSIN', JEAN)}".encode()
    )
    binary = bytes(range(256))
    assert redactor.body(binary, "application/octet-stream") == binary
    assert redactor.body(None) is None


def test_exchange_everywhere(redactor: Redactor) -> None:
    jwt = make_jwt("p", 3)
    exchange = Exchange(
        id=7,
        method="GET",
        url=f"http://h/fhir/Immunization?patient.identifier=ssin%7C{JEAN}",
        request_headers=[("Authorization", f"Bearer {jwt}")],
        response_status=200,
        response_body={
            "resourceType": "Bundle",
            "entry": [{"resource": {"patient": {"display": "Jean Exemple"}}}],
        },
        subject=f"ssin:{JEAN}",
        validation=[{"severity": "error", "code": "invalid", "message": f"{JEAN} unknown"}],
        error=f"connection reset while sending {jwt}",
        tags={"access_token": "t0k3n-value"},
    )
    redacted = redactor.exchange(exchange)
    text = str(redacted.to_json())
    for secret in (JEAN, jwt, "Jean", "Exemple", "t0k3n-value"):
        assert secret not in text
    assert redacted.validation[0]["code"] == "invalid"
    assert redacted.id == 7 and redacted.path == "/fhir/Immunization"


def test_command_line(redactor: Redactor) -> None:
    assert redactor.command_line(
        ["run", "--admin-token", "abc", "--client-secret=xyz", "--operator", "Jean", "--items", "VC-REG-01"]
    ) == [
        "run",
        "--admin-token",
        redactor.token("abc"),
        f"--client-secret={redactor.token('xyz')}",
        "--operator",
        redactor.pseudonym("NAME", "jean"),
        "--items",
        "VC-REG-01",
    ]


# -- the report --------------------------------------------------------------------------------------------


def test_report_keeps_catalogue_texts_and_redacts_run_data() -> None:
    synthetic = synthetic_run(14, 2)
    report = build_report(make_run(operator="Luc Exemplaire"), synthetic.scenarios, catalogue())
    redactor = Redactor.for_run()
    redacted = redactor.report(report)
    assert [i["titles"] for i in redacted["items"]] == [i["titles"] for i in report["items"]]
    assert [i["description"] for i in redacted["items"]] == [i["description"] for i in report["items"]]
    assert redacted["areas"] == report["areas"]
    assert redacted["run"]["operator"].startswith("NAME-")
    scenario_ids = {s["id"] for s in redacted["scenarios"]}
    assert {
        s for i in redacted["items"] for s in i["scenarios"]
    } <= scenario_ids  # references stay consistent
    text = str(redacted["scenarios"])
    for person in people().patients:
        assert person.ssin not in text and person.given_name not in text
