"""The evaluation suite itself: its tags, a passing run, and every faulty adapter failing where it should.

The table-driven test is the proof that each check can fail: every faulty adapter (one deliberate
defect) must fail exactly the scenarios listed for it, and every scenario must be failed by at least
one defect. Each run is the real suite (pytest-bdd in process) against the embedded simulator.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from pytest_bdd.parser import FeatureParser

from conformance.adapters.faulty import DEFECTS
from conformance.adapters.intents import Coding, Identifier, ReadHistory, RecordVaccination
from conformance.adapters.manual import MESSAGES, ManualAdapter
from conformance.errors import ConfigurationError
from conformance.evaluation_items import Catalogue
from conformance.fhir.packages import PackageCache
from conformance.suite.plugin import pytest_bdd_apply_tag
from conformance.suite.runner import RunOptions, run_suite

ROOT = Path(__file__).resolve().parent.parent
FEATURES = sorted((ROOT / "features").glob("*.feature"))
SEALED = "The software seals the vaccination for Vaccicard with the ETK from the depot"
SEALED_CONFORMS = "The sealed vaccination conforms to BeVaccination and is recorded once"
SEALED_TWICE = "The same sealed vaccination sent twice is stored once"
ENCRYPTED = {SEALED, SEALED_CONFORMS, SEALED_TWICE}
"""The scenarios of the encrypted variant: an etee-* defect makes the register refuse each of them."""
ETK_SHORT_KEY = "The software refuses a Vaccicard ETK whose key is shorter than 2048 bits"
ETK_OUTSIDE_PKI = "The software refuses a Vaccicard ETK signed outside the eHealth PKI"
ETK_REFUSED = {ETK_SHORT_KEY, ETK_OUTSIDE_PKI}
"""The scenarios in which the depot offers a flawed Vaccicard ETK: the software must send nothing."""
NOT_SENT_STEP = "the software did not send the vaccination, sealed or in the clear"
UNSEALED_STEP = (
    "the register unsealed the message: both signatures valid, the same signer, signed within five minutes"
)
ETEE_RULES = {
    "etee-expired-certificate": "etee-certificate-expired",
    "etee-signer-mismatch": "etee-signer-mismatch",
    "etee-stale-signing-time": "etee-signing-time-skew",
    "etee-tampered": "etee-decryption-failed",
    "etee-wrong-recipient": "etee-wrong-recipient",
}
"""The rule the register refuses each etee-* defect's sealed message with."""

REFUSED_403 = "A write refused with 403 for a patient without therapeutic relationship"
RECORDS = {
    "A contraindication: allergy to an ingredient of the vaccine",
    "A patient known by a BIS number",
    "A reaction after the vaccination, with its date",
    "A vaccination dated in the future is refused with 422, fixed and sent again",
    "A vaccination given in the practice, with every detail",
    "A vaccination reported by the patient, whose exact date is unknown",
    "A write refused with 403 for a patient without therapeutic relationship",
    "After the cancellation the history no longer counts the vaccination",
    "An expired token is renewed and the pending vaccination is recorded once",
    "Someone else changed the record in the meantime",
    "The parents refuse the vaccination",
    "The professional cancels a vaccination recorded for the wrong patient",
    "The professional corrects the lot number",
    "The professional logs in through IAM Connect and the token is exchanged for Vaccicard",
    "The register does not answer in time",
    "The register is briefly unavailable (503)",
    "The register stays unavailable, then comes back",
    "The register stored the vaccination but the answer was lost",
    "The register throttles the software (429)",
    "The same vaccination sent twice by the software is stored once",
    "The vaccine was out of stock",
    *ENCRYPTED,
}
"""Every scenario in which the software records a vaccination the register accepts, or must refuse."""

FAILS: dict[str, set[str]] = {
    "cancelled-shown-as-valid": {
        "A vaccination cancelled by another professional",
        "After the cancellation the history no longer counts the vaccination",
    },
    "delete-to-cancel": {
        "After the cancellation the history no longer counts the vaccination",
        "The professional cancels a vaccination recorded for the wrong patient",
    },
    "duplicate-on-retry": {
        SEALED_TWICE,  # without conditional create the second send is refused (409), not "already there"
        "An expired token is renewed and the pending vaccination is recorded once",
        "The register does not answer in time",
        "The register is briefly unavailable (503)",
        "The register stored the vaccination but the answer was lost",
        "The register throttles the software (429)",
    },
    "first-page-only": {
        "A history longer than one page",
    },
    "ignores-operation-outcome": {
        "A professional whose discipline is not recognised is stopped cleanly",
        "A professional whose discipline may not record vaccinations is stopped cleanly",
        "A vaccination dated in the future is refused with 422, fixed and sent again",
        "A write refused with 403 for a patient without therapeutic relationship",
        "A write refused with 409",
        "The patient has not given consent",
        "The register does not know the patient",
        "There is no therapeutic relationship with the patient",
    },
    "ignores-retry-after": {
        "The register is briefly unavailable (503)",
        "The register throttles the software (429)",
    },
    "lot-expiry-lost": {
        "A vaccination given in the practice, with every detail",
    },
    "lot-in-lotNumber": {
        SEALED_CONFORMS,
        "A vaccination given in the practice, with every detail",
        "Someone else changed the record in the meantime",
        "The professional corrects the lot number",
    },
    "new-identifier-on-correction": {
        "Someone else changed the record in the meantime",
        "The professional cancels a vaccination recorded for the wrong patient",
        "The professional corrects the lot number",
    },
    "no-business-identifier": RECORDS - {REFUSED_403},
    "no-recorder": RECORDS,
    "no-retry": {
        *ETK_REFUSED,  # it reports the vaccination as recorded although nothing was sent
        "An expired token is renewed and the pending vaccination is recorded once",
        "The register does not answer in time",
        "The register is briefly unavailable (503)",
        "The register stays unavailable, then comes back",
        "The register stored the vaccination but the answer was lost",
        "The register throttles the software (429)",
    },
    "own-records-only": {
        "A history longer than one page",
        "A vaccination cancelled by another professional",
        "Vaccinations recorded by the professional and by others",
    },
    "recorder-other-professional": RECORDS - {REFUSED_403},
    "retries-refusals": {
        "A professional whose discipline is not recognised is stopped cleanly",
        "A professional whose discipline may not record vaccinations is stopped cleanly",
        "A write refused with 409",
        "The patient has not given consent",
        "There is no therapeutic relationship with the patient",
    },
    "ssin-in-error-message": {
        "A vaccination dated in the future is refused with 422, fixed and sent again",
        "A write refused with 403 for a patient without therapeutic relationship",
        "The register stays unavailable, then comes back",
    },
    "stale-if-match": {
        "Someone else changed the record in the meantime",
        "The professional cancels a vaccination recorded for the wrong patient",
        "The professional corrects the lot number",
    },
    "status-reason-unbound": {
        "A contraindication: allergy to an ingredient of the vaccine",
        "The parents refuse the vaccination",
        "The vaccine was out of stock",
    },
    "tls-verify-off": {
        "The software refuses a register whose certificate it cannot verify",
    },
    "token-in-url": {
        "The professional logs in through IAM Connect and the token is exchanged for Vaccicard",
    },
    "undeclared-search-parameter": {
        "The software uses only what the CapabilityStatement offers",
    },
    **{defect: ENCRYPTED for defect in ETEE_RULES},
    "etee-etk-unchecked": ETK_REFUSED,
    "wrong-patient-identifier": RECORDS,
}

FAILING_STEP = {
    **{defect: (SEALED, UNSEALED_STEP) for defect in ETEE_RULES},
    "etee-etk-unchecked": (ETK_SHORT_KEY, NOT_SENT_STEP),
    "first-page-only": (
        "A history longer than one page",
        "the software followed the next links to the last page",
    ),
    "tls-verify-off": (
        "The software refuses a register whose certificate it cannot verify",
        "the software did not report the vaccination as recorded",
    ),
    "token-in-url": (
        "The professional logs in through IAM Connect and the token is exchanged for Vaccicard",
        "every request to the register carried that token in the Authorization header only",
    ),
    "undeclared-search-parameter": (
        "The software uses only what the CapabilityStatement offers",
        "every request of the software used an interaction and search parameters the CapabilityStatement states",
    ),
    "lot-expiry-lost": (
        "A vaccination given in the practice, with every detail",
        "the lot number and expiry travel in the administered-product extension, not in lotNumber",
    ),
    "ignores-retry-after": (
        "The register throttles the software (429)",
        "the software waited as Retry-After said before sending again",
    ),
    "stale-if-match": (
        "The professional corrects the lot number",
        "every update carried If-Match with the version the software last read",
    ),
    "delete-to-cancel": (
        "The professional cancels a vaccination recorded for the wrong patient",
        "the software reported the cancellation as done",  # the register refuses the DELETE
    ),
    "cancelled-shown-as-valid": (
        "A vaccination cancelled by another professional",
        "the cancelled vaccination is not shown as given",
    ),
    "ssin-in-error-message": (REFUSED_403, "the software's messages do not quote the patient's SSIN"),
    "own-records-only": (
        "Vaccinations recorded by the professional and by others",
        "the history shows every vaccination the register holds for the patient, each once",
    ),
    "retries-refusals": (
        "The patient has not given consent",
        "the software did not send the refused request again",
    ),
    "no-retry": (
        "The register stays unavailable, then comes back",
        "the software did not report the vaccination as recorded",
    ),
    "duplicate-on-retry": (
        "The register stored the vaccination but the answer was lost",
        "every create the software sent carried the same business identifier",
    ),
    "ignores-operation-outcome": (
        "The patient has not given consent",
        "the software showed the register's reason to the user",
    ),
    "new-identifier-on-correction": (
        "The professional corrects the lot number",
        "the software updated the record with PUT on the same record",
    ),
}


def scenarios() -> list[Any]:
    found = []
    for path in FEATURES:
        feature = FeatureParser(str(path.parent), path.name).parse()
        found += [(feature, scenario) for scenario in feature.scenarios.values()]
    return found


@pytest.fixture(scope="module")
def cache(package_cache: PackageCache) -> str:
    return str(package_cache.root)


def run(cache: str, adapter: str = "reference", **options: Any) -> Any:
    code, results = run_suite(
        RunOptions(adapter=adapter, package_cache=cache, quiet=True, suite_root=ROOT, **options)
    )
    return code, results


# --- tags and the catalogue ------------------------------------------------------------------------


def test_every_scenario_names_known_items_and_every_item_has_a_scenario() -> None:
    catalogue = Catalogue.load()
    tag_sets = []
    for feature, scenario in scenarios():
        tags = scenario.tags | feature.tags
        assert catalogue.check_tags(tags) == [], scenario.name
        assert any(tag.startswith("item:") for tag in tags), f"{scenario.name} names no evaluation item"
        tag_sets.append(tags)
    assert catalogue.uncovered(tag_sets) == []


def test_a_scenario_naming_an_unknown_item_stops_collection() -> None:
    def scenario() -> None: ...

    with pytest.raises(pytest.UsageError, match="VC-REG-99"):
        pytest_bdd_apply_tag("item:VC-REG-99", scenario)
    with pytest.raises(pytest.UsageError, match="unknown evaluation area"):
        pytest_bdd_apply_tag("area:XYZ", scenario)
    assert pytest_bdd_apply_tag("slow", scenario) is None


def test_scenario_names_are_unique() -> None:
    names = [scenario.name for _, scenario in scenarios()]
    assert len(names) == len(set(names))


# --- runs ------------------------------------------------------------------------------------------


def test_the_reference_adapter_passes_every_scenario(cache: str) -> None:
    code, results = run(cache)
    outcomes = list(results.scenarios.values())
    assert code == 0 and len(outcomes) == len(scenarios())
    assert {o.status for o in outcomes} == {"passed"}
    assert all(o.items and o.steps and all(s.status == "passed" for s in o.steps) for o in outcomes)
    assert all(
        o.evidence
        for o in outcomes
        if o.name != "The software refuses a register whose certificate it cannot verify"
    )
    assert set(results.exchanges) >= {i for o in outcomes for i in o.evidence}


def test_every_defect_is_in_the_table() -> None:
    assert set(FAILS) == set(DEFECTS)
    failed_somewhere = set().union(*FAILS.values())
    assert {s.name for _, s in scenarios()} == failed_somewhere, "a scenario no defect can fail"


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_each_faulty_adapter_fails_exactly_its_scenarios(cache: str, defect: str) -> None:
    code, results = run(cache, f"faulty:{defect}")
    failed = {s.name: s for s in results.failed}
    assert code == 1
    assert set(failed) == FAILS[defect]
    for outcome in failed.values():
        assert outcome.message and "\n" in (outcome.message + "\n")
    if defect in FAILING_STEP:
        name, step = FAILING_STEP[defect]
        [failing] = [s for s in failed[name].steps if s.status == "failed"]
        assert failing.text == step
    if defect in ETEE_RULES:  # the failure names the rule the register refused the sealed message with
        assert all(f"rule {ETEE_RULES[defect]}" in (failed[name].message or "") for name in ENCRYPTED)
    if defect == "etee-etk-unchecked":  # sealed for a key the register does not hold: refused, as evidence
        assert all("rule etee-wrong-recipient" in (failed[name].message or "") for name in ETK_REFUSED)


def test_only_selected_items_run(cache: str) -> None:
    code, results = run(cache, items="VC-HIS", tags="not item:VC-HIS-03")
    assert code == 0
    assert {i for o in results.scenarios.values() for i in o.items} == {"VC-HIS-01", "VC-HIS-02", "VC-HIS-04"}
    with pytest.raises(ConfigurationError, match="no scenario was selected"):
        run(cache, items="VC-NOPE")


# --- the manual adapter ------------------------------------------------------------------------------


def test_the_manual_adapter_refuses_to_run_without_a_terminal() -> None:
    with pytest.raises(ConfigurationError, match="interactive terminal"):
        ManualAdapter(stdin=io.StringIO(), stdout=io.StringIO())
    with pytest.raises(ConfigurationError, match="terminal interactif"):
        ManualAdapter(lang="fr", stdin=io.StringIO(), stdout=io.StringIO())


def test_the_manual_adapter_guides_the_operator_in_the_report_language() -> None:
    answers = io.StringIO(
        "\nr\nRefusé : date dans le futur\n\ns\n\n2\ncompleted;871765008;2026-01-20\ncancelled;;\n"
    )
    shown = io.StringIO()
    adapter = ManualAdapter(lang="fr", stdin=answers, stdout=shown, require_terminal=False)
    vaccine = Coding("http://snomed.info/sct", "871765008", "Measles vaccine")
    result = adapter.perform(
        RecordVaccination(patient="58032100126", vaccine=vaccine, occurrence="2099-01-01")
    )
    assert result.outcome == "rejected" and result.message == "Refusé : date dans le futur"
    assert MESSAGES["fr"]["record-vaccination"].format(patient="58032100126") in shown.getvalue()
    history = adapter.perform(ReadHistory("58032100126"))
    assert [v.status for v in history.vaccinations] == ["completed", "cancelled"]
    assert history.vaccinations[0].vaccine.code == "871765008"
    with pytest.raises(ConfigurationError, match="end of file"):
        adapter.perform(ReadHistory("58032100126"))


def test_the_manual_adapter_asks_for_the_encrypted_variant() -> None:
    shown = io.StringIO()
    adapter = ManualAdapter(lang="nl", stdin=io.StringIO("\ns\n\n"), stdout=shown, require_terminal=False)
    vaccine = Coding("http://snomed.info/sct", "871765008", "Measles vaccine")
    intent = RecordVaccination(
        patient="58032100126",
        vaccine=vaccine,
        occurrence="2026-01-20",
        business_identifier=Identifier("https://vendor.example.org/v", "m-1"),
        encrypted=True,
    )
    assert adapter.perform(intent).succeeded
    assert MESSAGES["nl"]["encrypted"] in shown.getvalue()


def test_every_language_has_every_message() -> None:
    assert all(set(texts) == set(MESSAGES["en"]) for texts in MESSAGES.values())
