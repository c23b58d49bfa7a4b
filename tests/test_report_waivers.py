"""Tests of waivers.toml parsing: required keys, unknown items with their line, dates."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from conformance.errors import ConfigurationError
from conformance.report import load_waivers, parse_waivers
from conformance.report.waivers import Waiver
from tests.report_fixtures import catalogue, scenario

GOOD = """\
# accepted until the next release
[[waiver]]
item = "VC-REG-05"
reason = "Lot number arrives in 4.2"
ticket = "RSW-1234"
expires = 2026-03-31

[[waiver]]
item = "VC-REG-06"
scenario = "registration.feature::Record the body site"
reason = "Body-site picker"
ticket = "VAX-77"
expires = "2026-04-30"
"""


def test_parse_good_file() -> None:
    waivers = parse_waivers(GOOD, catalogue(), source="waivers.toml")
    assert len(waivers) == 2
    first, second = waivers
    assert first == Waiver(
        1, "VC-REG-05", "Lot number arrives in 4.2", "RSW-1234", date(2026, 3, 31), None, 2
    )
    assert second.scenario == "registration.feature::Record the body site"
    assert second.expires == date(2026, 4, 30) and second.line == 8


def test_load_from_file_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "waivers.toml"
    path.write_text(GOOD, encoding="utf-8")
    assert load_waivers(path, catalogue()).source == str(path)
    with pytest.raises(ConfigurationError, match="waivers file not found"):
        load_waivers(tmp_path / "nope.toml", catalogue())


def test_unknown_item_is_named_with_its_waiver_number_line_and_suggestions() -> None:
    text = GOOD + '\n[[waiver]]\nitem = "VC-REG-55"\nreason = "r"\nticket = "t"\nexpires = 2026-01-01\n'
    with pytest.raises(ConfigurationError) as caught:
        parse_waivers(text, catalogue(), source="waivers.toml")
    message = caught.value.message
    assert message.startswith(
        "waivers.toml: 1 problem(s): waiver 3 (line 15): unknown evaluation item 'VC-REG-55'"
    )
    assert "did you mean" in message


def test_every_problem_is_listed() -> None:
    text = """
[[waiver]]
item = "VC-REG-05"
ticket = ""
expires = "next spring"
colour = "red"
"""
    with pytest.raises(ConfigurationError) as caught:
        parse_waivers(text, catalogue())
    message = caught.value.message
    for expected in (
        "waiver 1 (line 2): missing reason",
        "unknown key(s) colour",
        "ticket must be a non-empty string",
        "expires must be a date such as 2026-03-31, got 'next spring'",
    ):
        assert expected in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[waiver]\n", "not valid TOML"),
        ("waiver = 3\n", "waiver must be an array of tables"),
        ("[[exemption]]\nitem='VC-REG-01'\n", "unknown top-level key(s) exemption"),
        (
            "[[waiver]]\nitem='VC-REG-01'\nreason='r'\nticket='t'\nexpires=2026-01-01T10:00:00\n",
            "expires must be a date",
        ),
    ],
)
def test_malformed_files(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        parse_waivers(text, catalogue())


def test_expiry_and_matching() -> None:
    waiver = Waiver(1, "VC-REG-05", "r", "t", date(2026, 3, 31), scenario="Record it")
    assert not waiver.expired(date(2026, 3, 31)) and waiver.expired(date(2026, 4, 1))
    assert waiver.matches("VC-REG-05", scenario("Record it", ["VC-REG-05"]))
    assert not waiver.matches("VC-REG-05", scenario("Record another", ["VC-REG-05"]))
    assert not waiver.matches("VC-REG-06", scenario("Record it", ["VC-REG-06"]))
