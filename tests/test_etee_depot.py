"""Tests of the simulator's ETK depot: contents, the JSON ETK form, the JWKS form and errors."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from conformance.belgium.identifiers import check_cbe
from conformance.etee.etk import parse_etk, parse_jwks
from conformance.etee.pki import Credential, HolderId
from conformance.simulator.etk_depot import (
    ETK_DEPOT_PATH,
    JWKS_PATH,
    REGISTER_CBE,
    EtkDepot,
    EtkDepotConfig,
    EtkFlaw,
)
from conformance.simulator.http import HttpRequest, HttpResponse
from conformance.simulator.testdata import TestData
from tests.test_etee_pki import LUC_NIHII11, LUC_SSIN, PHARMACY_CBE, UNKNOWN_CBE, World, etee_world


@pytest.fixture
def world() -> World:
    return etee_world()


def get(depot: EtkDepot, route: str, method: str = "GET", **params: str) -> HttpResponse:
    query = {k: [v] for k, v in params.items()}
    return depot.handle(HttpRequest(method, depot.config.prefix + route, query))


def body(response: HttpResponse) -> Any:
    return json.loads(response.body)


def etk_lookup(depot: EtkDepot, kind: str, value: str, app: str | None = None) -> HttpResponse:
    params = {"identifierType": kind, "identifierValue": value}
    if app is not None:
        params["applicationId"] = app
    return get(depot, "/etk", **params)


# --- contents -------------------------------------------------------------------------------------------


def test_register_cbe_is_valid_and_fictitious() -> None:
    assert check_cbe(REGISTER_CBE) is None
    assert REGISTER_CBE not in {o.cbe for o in TestData.load().organisations}


def test_depot_holds_register_professionals_and_organisations(world: World) -> None:
    depot, data = world.depot, TestData.load()
    assert len(depot.entries) == 1 + len(data.professionals) + len(data.organisations)
    assert depot.register.id == HolderId("CBE", REGISTER_CBE) and depot.register.application_id == "VACCICARD"
    assert depot.register_etk.encryption_certificate == depot.register.encryption.certificate
    for pro in data.professionals:
        by_ssin = depot.lookup(HolderId("SSIN", pro.ssin))
        assert by_ssin and by_ssin == depot.lookup(HolderId("NIHII11", pro.nihii11))
        assert by_ssin == depot.lookup(HolderId("NIHII", pro.nihii8))
    for org in data.organisations:
        assert depot.lookup(HolderId("CBE", org.cbe))
    for entry in depot.entries:
        assert entry.etk.problems(trust=depot.trust_anchors) == []
    assert depot.lookup(HolderId("CBE", REGISTER_CBE), "OTHER") == []
    assert depot.etk_for(HolderId("CBE", UNKNOWN_CBE)) is None
    assert depot.etk_for(HolderId("SSIN", LUC_SSIN)) == world.depot.lookup(HolderId("SSIN", LUC_SSIN))[0].etk
    with pytest.raises(KeyError):
        depot.holder(HolderId("CBE", UNKNOWN_CBE))


def test_write_exports_keys_for_vendors(world: World, tmp_path: Path) -> None:
    written = world.depot.write(tmp_path / "keys", b"pw")
    names = {p.name for p in written}
    assert "root-ca.pem" in names and f"CBE-{REGISTER_CBE}-VACCICARD.enc.p12" in names
    assert f"SSIN-{LUC_SSIN}.auth.p12" in names and f"SSIN-{LUC_SSIN}.etk" in names
    p12 = tmp_path / "keys" / f"SSIN-{LUC_SSIN}.auth.p12"
    assert stat.S_IMODE(p12.stat().st_mode) == 0o600
    loaded = Credential.from_pkcs12(p12.read_bytes(), b"pw")
    assert loaded.certificate == world.luc.authentication.certificate
    assert parse_etk((tmp_path / "keys" / f"SSIN-{LUC_SSIN}.etk").read_bytes()).holder == HolderId(
        "SSIN", LUC_SSIN
    )
    assert world.depot.root_pem() == (tmp_path / "keys" / "root-ca.pem").read_bytes()


# --- the ETK form ---------------------------------------------------------------------------------------


def test_etk_lookup_json(world: World) -> None:
    response = etk_lookup(world.depot, "CBE", REGISTER_CBE, "VACCICARD")
    assert response.status == 200 and response.headers["Content-Type"] == "application/json"
    assert response.annotations == {"operation": "etk-lookup"}
    data = body(response)
    assert data["identifier"] == {"type": "CBE", "value": REGISTER_CBE, "applicationId": "VACCICARD"}
    (item,) = data["etks"]
    assert item["applicationId"] == "VACCICARD"
    etk = parse_etk(base64.b64decode(item["etk"])).verify(trust=[world.root])
    assert etk.encryption_certificate == world.register.encryption.certificate


@pytest.mark.parametrize(
    ("kind", "value"), [("SSIN", LUC_SSIN), ("NIHII11", LUC_NIHII11), ("nihii", LUC_NIHII11[:8])]
)
def test_professional_by_each_identifier(world: World, kind: str, value: str) -> None:
    data = body(etk_lookup(world.depot, kind, value))
    (item,) = data["etks"]
    assert item["applicationId"] is None
    assert parse_etk(base64.b64decode(item["etk"])).holder == HolderId("SSIN", LUC_SSIN)


def test_without_application_id_every_etk_is_returned(world: World) -> None:
    data = body(etk_lookup(world.depot, "CBE", REGISTER_CBE))
    assert [e["applicationId"] for e in data["etks"]] == ["VACCICARD"]


@pytest.mark.parametrize(
    ("params", "status", "rule", "text"),
    [
        ({"identifierType": "CBE", "identifierValue": UNKNOWN_CBE}, 404, "etk-unknown-holder", UNKNOWN_CBE),
        (
            {"identifierType": "CBE", "identifierValue": REGISTER_CBE, "applicationId": "OTHER"},
            404,
            "etk-unknown-holder",
            "for application OTHER",
        ),
        ({"identifierType": "CBE"}, 400, "etk-missing-parameter", "identifierValue"),
        ({}, 400, "etk-missing-parameter", "identifierType, identifierValue"),
        (
            {"identifierType": "CBE", "identifierValue": "0811122216"},
            400,
            "etk-invalid-parameter",
            "check digits",
        ),
        (
            {"identifierType": "IBAN", "identifierValue": "1"},
            400,
            "etk-invalid-parameter",
            "unknown identifier type",
        ),
    ],
)
def test_etk_lookup_errors(world: World, params: dict[str, str], status: int, rule: str, text: str) -> None:
    response = get(world.depot, "/etk", **params)
    assert response.status == status
    data = body(response)
    assert data["error"] == rule and text in data["message"]
    assert response.annotations == {"operation": "etk-lookup", "rule": rule}


def test_method_and_route_errors(world: World) -> None:
    response = get(world.depot, "/etk", method="POST")
    assert response.status == 405 and response.headers["Allow"] == "GET"
    assert body(response)["error"] == "etk-method-not-allowed"
    response = get(world.depot, "/nothing")
    assert response.status == 404 and body(response)["error"] == "etk-unknown-route"
    assert world.depot.handle(HttpRequest("GET", "/elsewhere/etk")).status == 404


def test_der_format_and_ambiguity(world: World) -> None:
    depot = EtkDepot(world.pki, config=EtkDepotConfig(etk_format="der"))
    depot.add_holder(world.pharmacy)
    other_app = world.pki.issue_holder("CBE", PHARMACY_CBE, "Pharmacy", application_id="STOCK", key_size=1024)
    depot.add_holder(other_app)
    response = etk_lookup(depot, "CBE", PHARMACY_CBE, "STOCK")
    assert response.status == 200 and response.headers["Content-Type"] == "application/pkcs7-mime"
    assert parse_etk(response.body).application_id == "STOCK"
    ambiguous = etk_lookup(depot, "CBE", PHARMACY_CBE)
    assert ambiguous.status == 409 and "(none), STOCK" in body(ambiguous)["message"]
    assert depot.etk_for(HolderId("CBE", PHARMACY_CBE)) == depot.lookup(HolderId("CBE", PHARMACY_CBE))[0].etk


# --- the JWKS form --------------------------------------------------------------------------------------


def jwks(depot: EtkDepot, **params: str) -> HttpResponse:
    return get(depot, JWKS_PATH, **params)


def test_jwks_enc(world: World) -> None:
    response = jwks(
        world.depot, identifier=REGISTER_CBE, type="CBE", applicationIdentifier="VACCICARD", use="enc"
    )
    assert response.status == 200 and response.headers["Content-Type"] == "application/jwk-set+json"
    assert response.annotations == {"operation": "etk-jwks"}
    (key,) = parse_jwks(response.body)
    assert key.use == "enc"
    assert key.certificates == (
        world.register.encryption.certificate,
        world.register.authentication.certificate,
        world.root,
    )


def test_jwks_sig_and_both(world: World) -> None:
    (sig,) = parse_jwks(jwks(world.depot, identifier=LUC_SSIN, type="SSIN", use="sig").body)
    assert sig.use == "sig" and sig.certificates == (world.luc.authentication.certificate, world.root)
    both = parse_jwks(jwks(world.depot, identifier=LUC_NIHII11, type="NIHII11").body)
    assert [k.use for k in both] == ["enc", "sig"]


@pytest.mark.parametrize(
    ("params", "status", "rule"),
    [
        ({"identifier": UNKNOWN_CBE, "type": "CBE"}, 404, "etk-unknown-holder"),
        ({"identifier": REGISTER_CBE}, 400, "etk-missing-parameter"),
        ({"identifier": REGISTER_CBE, "type": "CBE", "use": "wrap"}, 400, "etk-invalid-parameter"),
    ],
)
def test_jwks_errors(world: World, params: dict[str, str], status: int, rule: str) -> None:
    response = jwks(world.depot, **params)
    assert response.status == status and body(response)["error"] == rule


def test_default_prefix() -> None:
    assert EtkDepotConfig().prefix == ETK_DEPOT_PATH == "/etkdepot"


# --- a flawed register ETK ------------------------------------------------------------------------------


def own_depot(world: World, **config: Any) -> EtkDepot:
    """A depot of the world's PKI with the register and Luc (the shared world's depot stays untouched)."""
    depot = EtkDepot(world.pki, config=EtkDepotConfig(**config))
    depot.add_holder(world.register)
    depot.add_holder(world.luc)
    return depot


@pytest.mark.parametrize(
    ("flaw", "problem"),
    [
        ("short-key", "the encryption key has 1024 bits: at least 2048 are required"),
        ("outside-pki", "the authentication certificate is not trusted: "),
    ],
)
def test_a_flawed_register_etk_fails_one_check(world: World, flaw: EtkFlaw, problem: str) -> None:
    depot = own_depot(world)
    etk = parse_etk(depot.flawed_register_etk(flaw))
    assert (etk.holder, etk.application_id) == (HolderId("CBE", REGISTER_CBE), "VACCICARD")
    [found] = etk.problems(trust=depot.trust_anchors)
    assert found.startswith(problem)
    assert etk.encryption_certificate != world.register.encryption.certificate
    assert depot.flawed_register_etk(flaw) == etk.der  # made once


def test_the_depot_serves_a_flawed_register_etk_until_told_otherwise(world: World) -> None:
    depot = own_depot(world)
    flawed = depot.flawed_register_etk("outside-pki")
    depot.serve_register_etk(flawed)
    (item,) = body(etk_lookup(depot, "CBE", REGISTER_CBE, "VACCICARD"))["etks"]
    assert base64.b64decode(item["etk"]) == flawed
    (served,) = body(etk_lookup(depot, "CBE", REGISTER_CBE))["etks"]
    assert base64.b64decode(served["etk"]) == flawed
    enc, sig = parse_jwks(jwks(depot, identifier=REGISTER_CBE, type="CBE").body)
    forged = parse_etk(flawed)
    assert enc.certificates[:2] == (forged.encryption_certificate, forged.authentication_certificate)
    assert sig.certificate == forged.authentication_certificate
    (luc,) = body(etk_lookup(depot, "SSIN", LUC_SSIN))["etks"]
    assert parse_etk(base64.b64decode(luc["etk"])).holder == HolderId("SSIN", LUC_SSIN)
    assert (
        depot.register == world.register and depot.register_etk.der != flawed
    )  # the register keeps its keys
    depot.serve_register_etk(None)
    (item,) = body(etk_lookup(depot, "CBE", REGISTER_CBE, "VACCICARD"))["etks"]
    assert (
        parse_etk(base64.b64decode(item["etk"])).encryption_certificate
        == world.register.encryption.certificate
    )


def test_the_der_form_serves_the_flawed_register_etk_too(world: World) -> None:
    depot = own_depot(world, etk_format="der")
    depot.serve_register_etk(depot.flawed_register_etk("short-key"))
    response = etk_lookup(depot, "CBE", REGISTER_CBE, "VACCICARD")
    assert response.status == 200 and parse_etk(response.body).key_size == 1024
