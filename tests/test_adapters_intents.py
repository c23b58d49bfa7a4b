"""Intents and adapter results: JSON round trips, checked against the shipped JSON Schema both ways."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from conformance.adapters.intents import (
    INTENT_TYPES,
    AdapterResult,
    AdministeredProduct,
    BodySite,
    CancelVaccination,
    CareSetting,
    Coding,
    CorrectVaccination,
    DisplayedVaccination,
    Identifier,
    Issue,
    Reaction,
    ReadHistory,
    RecordNotDone,
    RecordVaccination,
    intent_from_json,
    intent_schema,
)
from conformance.errors import ConfigurationError

PATIENT = "58032100126"
COVID = Coding("http://snomed.info/sct", "1119349007", "COVID-19 mRNA vaccine")
IDS = "https://vendor.example.org/vaccinations"

INTENTS = [
    RecordVaccination(
        patient=PATIENT,
        vaccine=COVID,
        occurrence="2026-01-20T10:00:00+01:00",
        product=AdministeredProduct(cnk="1234567", lot_number="AB1234", expiry="2027-06-30"),
        route=Coding("https://example.org/route", "IM"),
        body_site=BodySite(Coding("http://snomed.info/sct", "35259002", "Deltoid muscle"), "left"),
        performer="10000106003",
        care_setting=CareSetting("medical-center", "Cabinet du Parc"),
        reaction=Reaction("2026-01-21", Coding("http://snomed.info/sct", "386661006", "Fever")),
        business_identifier=Identifier(IDS, "v-1"),
        note="first dose",
    ),
    RecordVaccination(patient=PATIENT, vaccine=COVID, occurrence_text="spring 2016, abroad"),
    RecordNotDone(
        patient=PATIENT,
        vaccine=COVID,
        status_reason=Coding("http://terminology.hl7.org/CodeSystem/v3-ActReason", "PATOBJ"),
        kind="refusal",
    ),
    ReadHistory(patient=PATIENT),
    CorrectVaccination(business_identifier=Identifier(IDS, "v-1"), occurrence="2026-01-19"),
    CancelVaccination(business_identifier=Identifier(IDS, "v-1"), reason="wrong patient"),
]


@pytest.mark.parametrize("intent", INTENTS, ids=lambda i: type(i).__name__)
def test_intents_round_trip_through_json(intent: Any) -> None:
    data = intent.to_json()
    assert data["action"] == intent.action
    text = json.dumps(data)  # plain JSON, as a hook in any language receives it
    assert intent_from_json(json.loads(text)) == intent
    assert type(intent).from_json(data) == intent


def test_every_action_has_a_class_and_a_schema_definition() -> None:
    schema = intent_schema()
    assert set(INTENT_TYPES) == set(schema["$defs"]["Intent"]["properties"]["action"]["enum"])
    shipped = resources.files("conformance.adapters").joinpath("intent.schema.json")
    assert json.loads(shipped.read_text("utf-8")) == schema


def test_a_bad_intent_is_rejected_with_its_json_path() -> None:
    data = INTENTS[0].to_json()
    data["product"]["cnk"] = "12"
    with pytest.raises(ConfigurationError, match=r"\$\.product\.cnk") as error:
        intent_from_json(data)
    assert "12" in error.value.message
    with pytest.raises(ConfigurationError, match=r"\$\.patient"):
        RecordVaccination(patient="not-an-ssin", vaccine=COVID).to_json()
    with pytest.raises(ConfigurationError, match=r"\$\.action"):
        intent_from_json({"action": "delete-everything"})
    with pytest.raises(ConfigurationError, match=r"\$\.kind"):
        intent_from_json({**INTENTS[2].to_json(), "kind": "forgot"})
    with pytest.raises(ConfigurationError, match=r"\$\.body_site\.laterality"):
        intent_from_json({**data, "product": None, "body_site": {"site": COVID.__dict__, "laterality": "up"}})
    with pytest.raises(ConfigurationError, match=r"\$: Additional properties .*'lotNumber'"):
        intent_from_json({**INTENTS[3].to_json(), "lotNumber": "x"})


def test_occurrence_and_occurrence_text_exclude_each_other() -> None:
    both = RecordVaccination(
        patient=PATIENT, vaccine=COVID, occurrence="2026-01-20", occurrence_text="January"
    )
    with pytest.raises(
        ConfigurationError, match=r"\$: occurrence \(a dateTime\) or occurrence_text"
    ) as error:
        both.to_json()
    assert PATIENT not in error.value.message  # messages never quote the whole intent (it holds an SSIN)


def test_wrong_types_are_named_without_quoting_the_value() -> None:
    data = INTENTS[3].to_json()
    with pytest.raises(ConfigurationError, match=r"\$\.patient: must be string, not an object"):
        intent_from_json({**data, "patient": {"ssin": PATIENT}})


def test_from_json_of_one_class_refuses_another_action() -> None:
    with pytest.raises(ConfigurationError, match=r"\$\.action: expected 'read-history'"):
        ReadHistory.from_json(INTENTS[5].to_json())


def test_adapter_results_round_trip_and_are_checked() -> None:
    result = AdapterResult(
        outcome="succeeded",
        message="2 vaccinations",
        issues=(Issue("warning", "informational", "note", "Immunization.note"),),
        record_ids=("a", "b"),
        business_identifiers=(Identifier(IDS, "v-1"),),
        vaccinations=(
            DisplayedVaccination("completed", "a", Identifier(IDS, "v-1"), COVID, "2026-01-20"),
            DisplayedVaccination("cancelled", "b"),
        ),
    )
    data = result.to_json()
    assert AdapterResult.from_json(json.loads(json.dumps(data))) == result
    assert result.succeeded
    with pytest.raises(ConfigurationError, match=r"\$\.outcome"):
        AdapterResult.from_json({**data, "outcome": "maybe"})
    with pytest.raises(ConfigurationError, match=r"\$\.vaccinations\[1\]\.status"):
        AdapterResult.from_json({**data, "vaccinations": [data["vaccinations"][0], {"status": "valid"}]})
