"""Tests of the simulated eHealth IAM Connect: PKCE login, token exchange, M2M private_key_jwt, verification.

Everything runs in process through ``IamConnect.handle`` (no network); the clock is injected so tokens,
codes and assertions expire without sleeping.
"""

from __future__ import annotations

import json
import logging
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import KeySet, OctKey, RSAKey

from conformance.simulator.http import HttpRequest, HttpResponse
from conformance.simulator.iam import (
    CLIENT_ASSERTION_TYPE,
    GRANT_TOKEN_EXCHANGE,
    HEALTHCARE,
    M2M,
    TOKEN_TYPE_ACCESS,
    IamConnect,
    InvalidAccessTokenError,
    TokenRejection,
    pkce_challenge,
)
from conformance.simulator.testdata import HealthcareClient, KeyRing, OrganisationCredential, TestData

BASE = "http://127.0.0.1:8080/auth"
T0 = 1_800_000_000.0
CLIENT = "vendor-software"
REDIRECT = "http://127.0.0.1:5173/callback"
PHYSICIAN = "75040201177"
DENTIST = "69101001540"
UNRECOGNISED = "79070701726"
ORG = "cbe-0987654394"
FORM = {"content-type": "application/x-www-form-urlencoded"}


class Clock:
    """A settable clock."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def data() -> TestData:
    return TestData.load()


@pytest.fixture(scope="module")
def org_keys(data: TestData) -> KeyRing:
    return data.generate_keys()


@pytest.fixture(scope="module")
def realm_keys() -> dict[str, RSAKey]:
    return {
        realm: RSAKey.generate_key(2048, parameters={"alg": "RS256", "use": "sig"}, auto_kid=True)
        for realm in (HEALTHCARE, M2M)
    }


@pytest.fixture(scope="module")
def other_key() -> RSAKey:
    return RSAKey.generate_key(2048, auto_kid=True)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def iam(data: TestData, org_keys: KeyRing, realm_keys: dict[str, RSAKey], clock: Clock) -> IamConnect:
    return IamConnect(data, BASE, clock=clock, organisation_keys=org_keys, realm_keys=realm_keys)


# --- helpers ----------------------------------------------------------------------------------------


def get(
    iam: IamConnect, path: str, query: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> HttpResponse:
    response = iam.handle(HttpRequest("GET", path, {k: [v] for k, v in (query or {}).items()}, headers or {}))
    assert response is not None
    return response


def post(
    iam: IamConnect,
    path: str,
    form: dict[str, str] | list[tuple[str, str]],
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    response = iam.handle(HttpRequest("POST", path, {}, headers or FORM, urlencode(form).encode()))
    assert response is not None
    return response


def path(realm: str, endpoint: str) -> str:
    return f"/auth/realms/{realm}/protocol/openid-connect/{endpoint}"


def body(response: HttpResponse) -> dict[str, Any]:
    return json.loads(response.body)


def token_post(iam: IamConnect, realm: str, form: dict[str, str] | list[tuple[str, str]]) -> HttpResponse:
    return post(iam, path(realm, "token"), form)


def claims_of(iam: IamConnect, realm: str, token: str) -> dict[str, Any]:
    """Decode with the realm's published JWKS, as a relying party would."""
    return jwt.decode(token, KeySet.import_key_set(iam.jwks(realm)), algorithms=["RS256"]).claims


def location_params(response: HttpResponse) -> dict[str, str]:
    assert response.status == 302, response.body
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}


@dataclass
class AuthRequest:
    verifier: str
    query: dict[str, str]


def auth_request(**overrides: str | None) -> AuthRequest:
    verifier = secrets.token_urlsafe(48)
    query: dict[str, str | None] = {
        "response_type": "code",
        "client_id": CLIENT,
        "redirect_uri": REDIRECT,
        "code_challenge": pkce_challenge(verifier),
        "code_challenge_method": "S256",
        "state": "st-" + secrets.token_hex(4),
        "scope": "openid",
        "nonce": "n-123",
    }
    query.update(overrides)
    return AuthRequest(verifier, {k: v for k, v in query.items() if v is not None})


def login(iam: IamConnect, ssin: str = PHYSICIAN, **overrides: str | None) -> tuple[AuthRequest, str]:
    """Authorization request with login_hint; returns the request and the code."""
    request = auth_request(**overrides)
    params = location_params(get(iam, path(HEALTHCARE, "auth"), {**request.query, "login_hint": ssin}))
    assert params["state"] == request.query["state"]
    return request, params["code"]


def redeem(iam: IamConnect, request: AuthRequest, code: str, **overrides: str) -> HttpResponse:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": request.query["redirect_uri"],
        "client_id": CLIENT,
        "code_verifier": request.verifier,
        **overrides,
    }
    return token_post(iam, HEALTHCARE, form)


def tokens(iam: IamConnect, ssin: str = PHYSICIAN) -> dict[str, Any]:
    request, code = login(iam, ssin)
    response = redeem(iam, request, code)
    assert response.status == 200, response.body
    return body(response)


def exchange(iam: IamConnect, subject_token: str, **overrides: str) -> HttpResponse:
    form = {
        "grant_type": GRANT_TOKEN_EXCHANGE,
        "client_id": CLIENT,
        "subject_token": subject_token,
        "subject_token_type": TOKEN_TYPE_ACCESS,
        "audience": iam.vaccicard_audience,
        **overrides,
    }
    return token_post(iam, HEALTHCARE, form)


def vaccicard_token(iam: IamConnect, ssin: str = PHYSICIAN) -> str:
    response = exchange(iam, tokens(iam, ssin)["access_token"])
    assert response.status == 200, response.body
    return body(response)["access_token"]


def assertion(
    cred: OrganisationCredential,
    iam: IamConnect,
    *,
    key: RSAKey | None = None,
    header: dict[str, Any] | None = None,
    **claim_overrides: Any,
) -> str:
    """A private_key_jwt client assertion built by hand with joserfc."""
    now = int(iam.now())
    claims: dict[str, Any] = {
        "iss": cred.client_id,
        "sub": cred.client_id,
        "aud": iam.issuer(M2M),
        "iat": now,
        "exp": now + 60,
        "jti": str(uuid.uuid4()),
    }
    claims.update(claim_overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    signing_key = key or RSAKey.import_key(cred.private_key)
    return jwt.encode(header or {"alg": "RS256", "kid": cred.kid}, claims, signing_key, algorithms=["RS256"])


def client_credentials(iam: IamConnect, client_assertion: str, **overrides: str) -> HttpResponse:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": client_assertion,
        **overrides,
    }
    return token_post(iam, M2M, form)


def oauth_error(response: HttpResponse, status: int, error: str) -> str:
    assert response.status == status, response.body
    answer = body(response)
    assert answer["error"] == error, answer
    return answer["error_description"]


# --- discovery and JWKS -----------------------------------------------------------------------------


@pytest.mark.parametrize("realm", [HEALTHCARE, M2M])
def test_discovery_document(iam: IamConnect, realm: str) -> None:
    response = get(iam, f"/auth/realms/{realm}/.well-known/openid-configuration")
    assert response.status == 200 and response.headers["Content-Type"] == "application/json"
    doc = body(response)
    issuer = f"{BASE}/realms/{realm}"
    assert doc["issuer"] == issuer
    for name, endpoint in [
        ("authorization_endpoint", "auth"),
        ("token_endpoint", "token"),
        ("jwks_uri", "certs"),
        ("userinfo_endpoint", "userinfo"),
    ]:
        assert doc[name] == f"{issuer}/protocol/openid-connect/{endpoint}"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_types_supported"] == ["code"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    if realm == HEALTHCARE:
        assert {"authorization_code", "refresh_token", GRANT_TOKEN_EXCHANGE} <= set(
            doc["grant_types_supported"]
        )
    else:
        assert doc["grant_types_supported"] == ["client_credentials"]
        assert "private_key_jwt" in doc["token_endpoint_auth_methods_supported"]
        assert doc["token_endpoint_auth_signing_alg_values_supported"] == ["RS256"]


def test_jwks_shape(iam: IamConnect, realm_keys: dict[str, RSAKey]) -> None:
    for realm in (HEALTHCARE, M2M):
        response = get(iam, path(realm, "certs"))
        assert response.status == 200
        jwks = body(response)
        assert len(jwks["keys"]) == 1
        key = jwks["keys"][0]
        assert key["kty"] == "RSA" and key["alg"] == "RS256" and key["use"] == "sig"
        assert key["kid"] == realm_keys[realm].kid
        assert {"n", "e"} <= set(key) and not {"d", "p", "q", "dp", "dq", "qi"} & set(key)
    healthcare_kid = body(get(iam, path(HEALTHCARE, "certs")))["keys"][0]["kid"]
    assert healthcare_kid != body(get(iam, path(M2M, "certs")))["keys"][0]["kid"]


def test_routing(iam: IamConnect) -> None:
    assert iam.handle(HttpRequest("GET", "/fhir/metadata")) is None
    assert iam.handle(HttpRequest("GET", "/auth")) is None
    assert get(iam, "/auth/realms/master/.well-known/openid-configuration").status == 404
    assert (
        body(get(iam, "/auth/realms/other/protocol/openid-connect/token"))["error"] == "Realm does not exist"
    )
    assert get(iam, "/auth/realms/healthcare/protocol/openid-connect/logout").status == 404
    not_allowed = get(iam, path(HEALTHCARE, "token"))
    assert not_allowed.status == 405 and not_allowed.headers["Allow"] == "POST"


def test_default_keys_are_generated_at_start_up(data: TestData) -> None:
    iam = IamConnect(data, BASE + "/")
    assert iam.issuer(HEALTHCARE) == f"{BASE}/realms/healthcare"
    assert set(iam.organisation_keys) == {o.client_id for o in data.organisations}
    assert body(get(iam, path(M2M, "certs")))["keys"][0]["kid"]


# --- authorization endpoint -------------------------------------------------------------------------


def test_login_page_lists_the_test_professionals(iam: IamConnect, data: TestData) -> None:
    request = auth_request()
    response = get(iam, path(HEALTHCARE, "auth"), request.query)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.headers["X-Frame-Options"] == "DENY" and "Content-Security-Policy" in response.headers
    page = response.body.decode()
    for pro in data.professionals:
        assert f'value="{pro.ssin}"' in page
    assert "may not record vaccinations" in page and "not recognised" in page
    assert f'name="code_challenge" value="{request.query["code_challenge"]}"' in page


def test_login_page_escapes_reflected_parameters(iam: IamConnect) -> None:
    request = auth_request(state='"><script>alert(1)</script>')
    page = get(iam, path(HEALTHCARE, "auth"), request.query).body.decode()
    assert "<script>" not in page and "&quot;&gt;&lt;script&gt;" in page


def test_full_pkce_flow_by_form_post(iam: IamConnect, data: TestData) -> None:
    request = auth_request()
    # the page's button posts the OAuth parameters back with the chosen professional's SSIN
    response = post(iam, path(HEALTHCARE, "auth"), {**request.query, "ssin": PHYSICIAN})
    params = location_params(response)
    assert response.headers["Location"].startswith(REDIRECT + "?")
    assert params["state"] == request.query["state"]
    assert params["iss"] == iam.issuer(HEALTHCARE)
    token_response = redeem(iam, request, params["code"])
    assert token_response.status == 200, token_response.body
    assert token_response.headers["Cache-Control"] == "no-store"
    answer = body(token_response)
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 300
    assert answer["refresh_token"] and answer["refresh_expires_in"] > 0
    claims = claims_of(iam, HEALTHCARE, answer["access_token"])
    pro = data.professional(PHYSICIAN)
    assert pro is not None
    assert claims["iss"] == iam.issuer(HEALTHCARE)
    assert claims["aud"] == CLIENT and claims["azp"] == CLIENT and claims["typ"] == "Bearer"
    assert claims["exp"] - claims["iat"] == 300 and claims["iat"] == int(T0)
    assert claims["jti"] and claims["sub"] != PHYSICIAN
    assert claims["ssin"] == PHYSICIAN
    assert (claims["given_name"], claims["family_name"]) == (pro.given_name, pro.family_name)
    assert claims["userProfile"]["ssin"] == PHYSICIAN
    assert claims["userProfile"]["physician"] == {"recognised": True, "nihii11": pro.nihii11}
    assert "resource_access" in claims
    id_claims = claims_of(iam, HEALTHCARE, answer["id_token"])
    assert id_claims["aud"] == CLIENT and id_claims["nonce"] == "n-123" and id_claims["typ"] == "ID"


def test_login_hint_accepts_nihdi_number(iam: IamConnect, data: TestData) -> None:
    pro = data.professional(DENTIST)
    assert pro is not None
    request, code = login(iam, pro.nihii11)
    claims = claims_of(iam, HEALTHCARE, body(redeem(iam, request, code))["access_token"])
    assert claims["ssin"] == DENTIST and "dentist" in claims["userProfile"]


def test_unknown_professional_shows_the_page_again(iam: IamConnect) -> None:
    request = auth_request()
    response = post(iam, path(HEALTHCARE, "auth"), {**request.query, "ssin": "94021300145"})
    assert response.status == 200 and "Unknown test professional" in response.body.decode()


def test_wrong_verifier_refused_and_code_consumed(iam: IamConnect) -> None:
    request, code = login(iam)
    wrong = redeem(iam, request, code, code_verifier=secrets.token_urlsafe(48))
    assert "PKCE" in oauth_error(wrong, 400, "invalid_grant")
    assert oauth_error(redeem(iam, request, code), 400, "invalid_grant") == "Code not valid"


def test_missing_or_malformed_verifier_refused(iam: IamConnect) -> None:
    request, code = login(iam)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": CLIENT}
    assert "not specified" in oauth_error(token_post(iam, HEALTHCARE, form), 400, "invalid_grant")
    request, code = login(iam)
    assert "invalid code verifier" in oauth_error(
        redeem(iam, request, code, code_verifier="short"), 400, "invalid_grant"
    )


def test_reused_code_refused(iam: IamConnect) -> None:
    request, code = login(iam)
    assert redeem(iam, request, code).status == 200
    assert oauth_error(redeem(iam, request, code), 400, "invalid_grant") == "Code not valid"


def test_expired_code_refused(iam: IamConnect, clock: Clock) -> None:
    request, code = login(iam)
    clock.advance(59)
    request2, code2 = login(iam)
    clock.advance(2)
    assert oauth_error(redeem(iam, request, code), 400, "invalid_grant") == "Code is expired"
    assert redeem(iam, request2, code2).status == 200


def test_code_bound_to_client_and_redirect_uri(iam: IamConnect) -> None:
    request, code = login(iam)
    wrong_redirect = redeem(iam, request, code, redirect_uri="http://127.0.0.1:5173/other")
    assert oauth_error(wrong_redirect, 400, "invalid_grant") == "Incorrect redirect_uri"
    request, code = login(iam)
    assert oauth_error(redeem(iam, request, code, client_id="someone-else"), 401, "invalid_client")


@pytest.mark.parametrize(
    ("overrides", "error", "fragment"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request", "S256"),
        ({"code_challenge_method": None}, "invalid_request", "code_challenge_method"),
        ({"code_challenge": None}, "invalid_request", "code_challenge"),
        ({"code_challenge": "too-short"}, "invalid_request", "code_challenge"),
        ({"state": None}, "invalid_request", "state"),
        ({"response_type": "token"}, "unsupported_response_type", ""),
        ({"response_type": None}, "invalid_request", "response_type"),
        ({"response_mode": "fragment"}, "invalid_request", "response_mode"),
    ],
)
def test_bad_authorization_request_redirects_with_error(
    iam: IamConnect, overrides: dict[str, str | None], error: str, fragment: str
) -> None:
    request = auth_request(**overrides)
    params = location_params(get(iam, path(HEALTHCARE, "auth"), {**request.query, "login_hint": PHYSICIAN}))
    assert params["error"] == error and fragment in params["error_description"]
    assert "code" not in params
    if "state" in request.query:
        assert params["state"] == request.query["state"]


def test_plain_challenge_refused(iam: IamConnect) -> None:
    verifier = secrets.token_urlsafe(48)
    request = auth_request(code_challenge=verifier, code_challenge_method="plain")
    params = location_params(get(iam, path(HEALTHCARE, "auth"), {**request.query, "login_hint": PHYSICIAN}))
    assert params["error"] == "invalid_request" and "code" not in params


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"client_id": "unknown"}, "Client not found"),
        ({"client_id": None}, "client_id"),
        ({"redirect_uri": "https://evil.example/cb"}, "redirect_uri"),
        ({"redirect_uri": "http://127.0.0.1.evil.example/cb"}, "redirect_uri"),
        ({"redirect_uri": "http://127.0.0.1:5173/cb#frag"}, "redirect_uri"),
        ({"redirect_uri": None}, "redirect_uri"),
    ],
)
def test_unknown_client_or_redirect_never_redirects(
    iam: IamConnect, overrides: dict[str, str | None], message: str
) -> None:
    request = auth_request(**overrides)
    response = get(iam, path(HEALTHCARE, "auth"), {**request.query, "login_hint": PHYSICIAN})
    assert response.status == 400 and "Location" not in response.headers
    assert message in response.body.decode()


def test_loopback_redirect_any_port(iam: IamConnect) -> None:
    for uri in ("http://127.0.0.1:49152/cb", "http://localhost:8000/x?keep=1", "http://127.0.0.1/cb"):
        request, code = login(iam, redirect_uri=uri)
        assert redeem(iam, request, code).status == 200


def test_no_interactive_login_in_m2m_realm(iam: IamConnect) -> None:
    request = auth_request()
    response = get(iam, path(M2M, "auth"), {**request.query, "login_hint": PHYSICIAN})
    assert response.status == 400 and "Location" not in response.headers


# --- token endpoint: general ------------------------------------------------------------------------


def test_token_endpoint_request_errors(iam: IamConnect) -> None:
    wrong_type = iam.handle(
        HttpRequest("POST", path(HEALTHCARE, "token"), {}, {"content-type": "application/json"}, b"{}")
    )
    assert wrong_type is not None
    oauth_error(wrong_type, 400, "invalid_request")
    oauth_error(token_post(iam, HEALTHCARE, {"client_id": CLIENT}), 400, "invalid_request")
    oauth_error(token_post(iam, HEALTHCARE, {"grant_type": "password"}), 400, "unsupported_grant_type")
    oauth_error(
        token_post(iam, HEALTHCARE, {"grant_type": "client_credentials"}), 400, "unsupported_grant_type"
    )
    oauth_error(token_post(iam, M2M, {"grant_type": "authorization_code"}), 400, "unsupported_grant_type")
    duplicated = [("grant_type", "authorization_code"), ("code", "a"), ("code", "b")]
    assert "Duplicated" in oauth_error(token_post(iam, HEALTHCARE, duplicated), 400, "invalid_request")
    latin1 = iam.handle(HttpRequest("POST", path(HEALTHCARE, "token"), {}, FORM, b"grant_type=\xff"))
    assert latin1 is not None
    oauth_error(latin1, 400, "invalid_request")


# --- refresh --------------------------------------------------------------------------------------


def test_refresh(iam: IamConnect, clock: Clock) -> None:
    first = tokens(iam)
    clock.advance(301)
    with pytest.raises(InvalidAccessTokenError):
        iam.verify_access_token(first["access_token"], CLIENT)
    response = token_post(
        iam,
        HEALTHCARE,
        {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": CLIENT},
    )
    assert response.status == 200, response.body
    renewed = body(response)
    claims = claims_of(iam, HEALTHCARE, renewed["access_token"])
    assert claims["iat"] == int(clock.now) and claims["ssin"] == PHYSICIAN
    assert claims["sid"] == claims_of(iam, HEALTHCARE, first["refresh_token"])["sid"]
    assert renewed["refresh_token"]
    # the renewed access token can be exchanged for the Vaccicard audience
    assert exchange(iam, renewed["access_token"]).status == 200


def test_refresh_refusals(iam: IamConnect, clock: Clock) -> None:
    first = tokens(iam)

    def refresh(token: str, client_id: str = CLIENT) -> HttpResponse:
        return token_post(
            iam, HEALTHCARE, {"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id}
        )

    assert oauth_error(refresh(first["access_token"]), 400, "invalid_grant") == "Invalid refresh token"
    assert oauth_error(refresh("garbage"), 400, "invalid_grant") == "Invalid refresh token"
    oauth_error(refresh(first["refresh_token"], "unknown-client"), 401, "invalid_client")
    clock.advance(1801)
    assert oauth_error(refresh(first["refresh_token"]), 400, "invalid_grant") == "Token is not active"


def test_refresh_token_of_another_client_refused(
    data: TestData, org_keys: KeyRing, realm_keys: dict[str, RSAKey]
) -> None:
    two = TestData(
        patients=data.patients,
        professionals=data.professionals,
        organisations=data.organisations,
        vaccicard=data.vaccicard,
        healthcare_clients=(*data.healthcare_clients, HealthcareClient("second-software", (REDIRECT,))),
        recording_disciplines=data.recording_disciplines,
    )
    iam = IamConnect(two, BASE, clock=Clock(), organisation_keys=org_keys, realm_keys=realm_keys)
    first = tokens(iam)
    response = token_post(
        iam,
        HEALTHCARE,
        {
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "client_id": "second-software",
        },
    )
    assert "don't match" in oauth_error(response, 400, "invalid_grant")
    assert oauth_error(
        exchange(iam, first["access_token"], client_id="second-software"), 400, "access_denied"
    )


# --- token exchange ---------------------------------------------------------------------------------


def test_token_exchange_to_vaccicard_audience(iam: IamConnect, data: TestData) -> None:
    subject = tokens(iam)["access_token"]
    response = exchange(iam, subject)
    assert response.status == 200, response.body
    answer = body(response)
    assert answer["issued_token_type"] == TOKEN_TYPE_ACCESS and answer["token_type"] == "Bearer"
    assert answer["expires_in"] == 300 and "refresh_token" not in answer
    claims = claims_of(iam, HEALTHCARE, answer["access_token"])
    assert claims["aud"] == data.vaccicard.audience and claims["azp"] == CLIENT
    assert claims["resource_access"][data.vaccicard.client_id]["roles"] == list(data.vaccicard.roles)
    principal = iam.verify_access_token(answer["access_token"], data.vaccicard.audience)
    pro = data.professional(PHYSICIAN)
    assert pro is not None
    assert principal.kind == "professional" and principal.ssin == PHYSICIAN
    assert principal.nihii11 == pro.nihii11 and principal.discipline == "physician"
    assert principal.recognised and principal.may_record
    assert (principal.given_name, principal.family_name) == (pro.given_name, pro.family_name)
    assert principal.client_id == CLIENT and principal.roles == data.vaccicard.roles
    assert principal.expires_at == claims["exp"] and principal.cbe is None
    # the token obtained with the code is not for Vaccicard
    with pytest.raises(InvalidAccessTokenError) as caught:
        iam.verify_access_token(subject, data.vaccicard.audience)
    assert caught.value.reason is TokenRejection.WRONG_AUDIENCE


@pytest.mark.parametrize(("ssin", "recognised"), [(DENTIST, True), (UNRECOGNISED, False)])
def test_principal_of_professional_who_may_not_record(iam: IamConnect, ssin: str, recognised: bool) -> None:
    principal = iam.verify_access_token(vaccicard_token(iam, ssin), iam.vaccicard_audience)
    assert principal.ssin == ssin and principal.recognised is recognised
    assert not principal.may_record


def test_token_exchange_with_foreign_subject_token(
    iam: IamConnect, data: TestData, org_keys: KeyRing, clock: Clock
) -> None:
    foreign = IamConnect(data, BASE, clock=clock, organisation_keys=org_keys)  # same URLs, its own keys
    foreign_token = tokens(foreign)["access_token"]
    assert "Invalid token" in oauth_error(exchange(iam, foreign_token), 400, "invalid_token")
    m2m_token = iam.issue_organisation_token(ORG)
    oauth_error(exchange(iam, m2m_token), 400, "invalid_token")
    refresh_token = tokens(iam)["refresh_token"]
    oauth_error(exchange(iam, refresh_token), 400, "invalid_token")
    oauth_error(exchange(iam, "not-a-token"), 400, "invalid_token")


def test_token_exchange_with_expired_subject_token(iam: IamConnect, clock: Clock) -> None:
    subject = tokens(iam)["access_token"]
    clock.advance(300)
    assert "expired" in oauth_error(exchange(iam, subject), 400, "invalid_token")


def test_token_exchange_request_errors(iam: IamConnect) -> None:
    subject = tokens(iam)["access_token"]
    assert (
        oauth_error(exchange(iam, subject, audience="other-api"), 400, "invalid_client")
        == "Audience not found"
    )
    oauth_error(
        exchange(iam, subject, subject_token_type="urn:ietf:params:oauth:token-type:id_token"),
        400,
        "invalid_request",
    )
    oauth_error(
        exchange(iam, subject, requested_token_type="urn:ietf:params:oauth:token-type:refresh_token"),
        400,
        "invalid_request",
    )
    oauth_error(exchange(iam, subject, audience=""), 400, "invalid_request")
    oauth_error(exchange(iam, subject, client_id="unknown"), 401, "invalid_client")
    two_audiences = [
        ("grant_type", GRANT_TOKEN_EXCHANGE),
        ("client_id", CLIENT),
        ("subject_token", subject),
        ("subject_token_type", TOKEN_TYPE_ACCESS),
        ("audience", iam.vaccicard_audience),
        ("audience", "other"),
    ]
    oauth_error(token_post(iam, HEALTHCARE, two_audiences), 400, "invalid_request")


# --- M2M: client_credentials with private_key_jwt -----------------------------------------------------


def test_m2m_client_credentials(iam: IamConnect, org_keys: KeyRing, data: TestData) -> None:
    cred = org_keys[ORG]
    response = client_credentials(iam, assertion(cred, iam), client_id=ORG)
    assert response.status == 200, response.body
    answer = body(response)
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 300 and "refresh_token" not in answer
    claims = claims_of(iam, M2M, answer["access_token"])
    assert claims["iss"] == iam.issuer(M2M) and claims["azp"] == ORG and claims["cbe"] == cred.cbe
    assert claims["aud"] == data.vaccicard.audience and claims["typ"] == "Bearer"
    principal = iam.verify_access_token(answer["access_token"], data.vaccicard.audience)
    assert principal.kind == "organisation" and principal.cbe == cred.cbe and principal.client_id == ORG
    assert principal.ssin is None and not principal.may_record


def test_m2m_assertion_audience_may_be_the_token_endpoint(iam: IamConnect, org_keys: KeyRing) -> None:
    cred = org_keys[ORG]
    response = client_credentials(iam, assertion(cred, iam, aud=[iam.endpoint(M2M, "token")]))
    assert response.status == 200, response.body


def test_m2m_assertion_replay_refused(iam: IamConnect, org_keys: KeyRing, clock: Clock) -> None:
    cred = org_keys[ORG]
    signed = assertion(cred, iam, jti="fixed-jti")
    assert client_credentials(iam, signed).status == 200
    assert "replayed" in oauth_error(client_credentials(iam, signed), 401, "invalid_client")
    clock.advance(10)
    again = assertion(cred, iam, jti="fixed-jti")
    assert "replayed" in oauth_error(client_credentials(iam, again), 401, "invalid_client")
    other_org = next(c for c in org_keys if c != ORG)
    assert client_credentials(iam, assertion(org_keys[other_org], iam, jti="fixed-jti")).status == 200


def test_m2m_assertion_lifetime_over_five_minutes_refused(iam: IamConnect, org_keys: KeyRing) -> None:
    cred = org_keys[ORG]
    now = iam.now()
    assert client_credentials(iam, assertion(cred, iam, exp=now + 300)).status == 200
    too_long = assertion(cred, iam, exp=now + 301)
    assert "lifetime" in oauth_error(client_credentials(iam, too_long), 401, "invalid_client")
    no_iat = assertion(cred, iam, iat=None, exp=now + 600)
    assert "lifetime" in oauth_error(client_credentials(iam, no_iat), 401, "invalid_client")


def test_m2m_wrong_kid_or_key_refused(iam: IamConnect, org_keys: KeyRing, other_key: RSAKey) -> None:
    cred = org_keys[ORG]
    wrong_kid = assertion(cred, iam, header={"alg": "RS256", "kid": "not-the-registered-kid"})
    assert "kid" in oauth_error(client_credentials(iam, wrong_kid), 401, "invalid_client")
    no_kid = assertion(cred, iam, header={"alg": "RS256"})
    assert "kid" in oauth_error(client_credentials(iam, no_kid), 401, "invalid_client")
    other_key_same_kid = assertion(cred, iam, key=other_key)
    assert "signature" in oauth_error(client_credentials(iam, other_key_same_kid), 401, "invalid_client")
    other_org = org_keys[next(c for c in org_keys if c != ORG)]
    other_orgs_key = assertion(
        cred, iam, key=RSAKey.import_key(other_org.private_key), header={"alg": "RS256", "kid": other_org.kid}
    )
    oauth_error(client_credentials(iam, other_orgs_key), 401, "invalid_client")


def test_m2m_registered_certificate_can_be_replaced(
    iam: IamConnect, org_keys: KeyRing, data: TestData
) -> None:
    organisation = data.organisation(ORG)
    assert organisation is not None
    replacement = OrganisationCredential.generate(organisation)
    assert iam.register_certificate(ORG, replacement.certificate) == replacement.kid
    assert client_credentials(iam, assertion(replacement, iam)).status == 200
    oauth_error(client_credentials(iam, assertion(org_keys[ORG], iam)), 401, "invalid_client")
    with pytest.raises(ValueError):
        iam.register_certificate("cbe-unknown", replacement.certificate)


@pytest.mark.parametrize(
    ("claims", "fragment"),
    [
        ({"aud": "http://127.0.0.1:8080/auth/realms/healthcare"}, "aud"),
        ({"sub": "cbe-0456789133"}, "sub"),
        ({"jti": None}, "jti"),
        ({"exp": None}, "exp"),
        ({"iss": "cbe-0000000097", "sub": "cbe-0000000097"}, "Invalid client"),
    ],
)
def test_m2m_assertion_claims_refused(
    iam: IamConnect, org_keys: KeyRing, claims: dict[str, Any], fragment: str
) -> None:
    signed = assertion(org_keys[ORG], iam, **claims)
    assert fragment in oauth_error(client_credentials(iam, signed), 401, "invalid_client")


def test_m2m_expired_assertion_refused(iam: IamConnect, org_keys: KeyRing, clock: Clock) -> None:
    signed = assertion(org_keys[ORG], iam)
    clock.advance(61)
    assert "expired" in oauth_error(client_credentials(iam, signed), 401, "invalid_client")


def test_m2m_client_authentication_required(iam: IamConnect, org_keys: KeyRing) -> None:
    signed = assertion(org_keys[ORG], iam)
    oauth_error(client_credentials(iam, signed, client_assertion_type="other"), 401, "invalid_client")
    oauth_error(client_credentials(iam, ""), 401, "invalid_client")
    oauth_error(client_credentials(iam, "a.b.c"), 401, "invalid_client")
    oauth_error(client_credentials(iam, signed, client_id="cbe-0456789133"), 401, "invalid_client")
    hs256 = jwt.encode(
        {"alg": "HS256", "kid": org_keys[ORG].kid},
        {"iss": ORG},
        OctKey.import_key(secrets.token_bytes(32)),
        algorithms=["HS256"],
    )
    assert "RS256" in oauth_error(client_credentials(iam, hs256), 401, "invalid_client")


# --- verify_access_token ------------------------------------------------------------------------------


def rejection(iam: IamConnect, token: str | None, audience: str | None = None) -> InvalidAccessTokenError:
    with pytest.raises(InvalidAccessTokenError) as caught:
        iam.verify_access_token(token, audience or iam.vaccicard_audience)
    return caught.value


@pytest.mark.parametrize("token", [None, "", "   "])
def test_verify_missing(iam: IamConnect, token: str | None) -> None:
    error = rejection(iam, token)
    assert error.reason is TokenRejection.MISSING
    assert error.www_authenticate() == 'Bearer realm="Vaccicard"'


@pytest.mark.parametrize(
    "token", ["abc", "a.b", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln", "x" * 20_000, "é.é.é"]
)
def test_verify_malformed(iam: IamConnect, token: str) -> None:
    error = rejection(iam, token)
    assert error.reason is TokenRejection.MALFORMED
    assert 'error="invalid_token"' in error.www_authenticate()


def test_verify_bad_signature(iam: IamConnect, realm_keys: dict[str, RSAKey], other_key: RSAKey) -> None:
    claims = claims_of(iam, HEALTHCARE, vaccicard_token(iam))
    forged = jwt.encode(
        {"alg": "RS256", "kid": realm_keys[HEALTHCARE].kid}, claims, other_key, algorithms=["RS256"]
    )
    assert rejection(iam, forged).reason is TokenRejection.BAD_SIGNATURE
    unknown_kid = jwt.encode({"alg": "RS256", "kid": other_key.kid}, claims, other_key, algorithms=["RS256"])
    assert rejection(iam, unknown_kid).reason is TokenRejection.BAD_SIGNATURE
    hs256 = jwt.encode(
        {"alg": "HS256", "kid": realm_keys[HEALTHCARE].kid},
        claims,
        OctKey.import_key(secrets.token_bytes(32)),
        algorithms=["HS256"],
    )
    assert rejection(iam, hs256).reason is TokenRejection.BAD_SIGNATURE
    header, payload, signature = vaccicard_token(iam).split(".")
    tampered_signature = signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")
    assert rejection(iam, f"{header}.{payload}.{tampered_signature}").reason is TokenRejection.BAD_SIGNATURE
    other_payload = vaccicard_token(iam, DENTIST).split(".")[1]
    assert rejection(iam, f"{header}.{other_payload}.{signature}").reason is TokenRejection.BAD_SIGNATURE


def test_verify_alg_none_refused(iam: IamConnect) -> None:
    payload = vaccicard_token(iam).split(".")[1]
    none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"  # {"alg":"none","typ":"JWT"}
    assert rejection(iam, f"{none_header}.{payload}.").reason is TokenRejection.BAD_SIGNATURE


def test_verify_expired(iam: IamConnect, clock: Clock) -> None:
    token = vaccicard_token(iam)
    clock.advance(299)
    assert iam.verify_access_token(token, iam.vaccicard_audience).ssin == PHYSICIAN
    clock.advance(1)
    error = rejection(iam, token)
    assert error.reason is TokenRejection.EXPIRED and "expired" in error.www_authenticate()


def test_verify_wrong_issuer(
    data: TestData, org_keys: KeyRing, realm_keys: dict[str, RSAKey], iam: IamConnect, clock: Clock
) -> None:
    # same signing keys, another issuer URL (e.g. a token from another environment)
    elsewhere = IamConnect(
        data, "http://127.0.0.1:9999/auth", clock=clock, organisation_keys=org_keys, realm_keys=realm_keys
    )
    token = elsewhere.issue_professional_token(PHYSICIAN)
    assert elsewhere.verify_access_token(token, iam.vaccicard_audience).ssin == PHYSICIAN
    assert rejection(iam, token).reason is TokenRejection.WRONG_ISSUER
    # an M2M-signed token claiming the healthcare issuer
    claims = claims_of(iam, M2M, iam.issue_organisation_token(ORG))
    claims["iss"] = iam.issuer(HEALTHCARE)
    swapped = jwt.encode(
        {"alg": "RS256", "kid": realm_keys[M2M].kid}, claims, realm_keys[M2M], algorithms=["RS256"]
    )
    assert rejection(iam, swapped).reason is TokenRejection.WRONG_ISSUER


def test_verify_wrong_audience(iam: IamConnect) -> None:
    token = vaccicard_token(iam)
    error = rejection(iam, token, "another-api")
    assert error.reason is TokenRejection.WRONG_AUDIENCE and "another-api" in error.detail


def test_verify_refuses_refresh_and_id_tokens(iam: IamConnect) -> None:
    answer = tokens(iam)
    assert rejection(iam, answer["refresh_token"]).reason is TokenRejection.INVALID_CLAIMS
    assert rejection(iam, answer["id_token"], CLIENT).reason is TokenRejection.INVALID_CLAIMS


def test_verify_bearer_header(iam: IamConnect) -> None:
    token = vaccicard_token(iam)
    assert iam.verify_bearer(f"Bearer {token}", iam.vaccicard_audience).ssin == PHYSICIAN
    assert iam.verify_bearer(f"bearer  {token} ", iam.vaccicard_audience).ssin == PHYSICIAN
    for header in (None, "", "Basic dXNlcjpwdw=="):
        with pytest.raises(InvalidAccessTokenError) as caught:
            iam.verify_bearer(header, iam.vaccicard_audience)
        assert caught.value.reason is TokenRejection.MISSING
    with pytest.raises(InvalidAccessTokenError) as caught:
        iam.verify_bearer("Bearer ", iam.vaccicard_audience)
    assert caught.value.reason is TokenRejection.MALFORMED


def test_rejection_never_quotes_the_token(iam: IamConnect, clock: Clock) -> None:
    token = vaccicard_token(iam)
    clock.advance(1000)
    error = rejection(iam, token)
    for text in (str(error), error.detail, error.www_authenticate()):
        assert token not in text and token.split(".")[1] not in text


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=300), st.lists(st.text(max_size=60), min_size=3, max_size=3).map(".".join)))
def test_verify_garbage_only_raises_rejections(iam_for_property: IamConnect, garbage: str) -> None:
    with pytest.raises(InvalidAccessTokenError) as caught:
        iam_for_property.verify_access_token(garbage, "vaccicard-api")
    assert caught.value.reason in {
        TokenRejection.MISSING,
        TokenRejection.MALFORMED,
        TokenRejection.BAD_SIGNATURE,
    }


@pytest.fixture(scope="module")
def iam_for_property(data: TestData, org_keys: KeyRing, realm_keys: dict[str, RSAKey]) -> IamConnect:
    return IamConnect(data, BASE, organisation_keys=org_keys, realm_keys=realm_keys)


# --- userinfo and minting -------------------------------------------------------------------------


def test_userinfo(iam: IamConnect) -> None:
    access = tokens(iam)["access_token"]
    response = get(iam, path(HEALTHCARE, "userinfo"), headers={"authorization": f"Bearer {access}"})
    assert response.status == 200
    info = body(response)
    assert info["ssin"] == PHYSICIAN and "physician" in info["userProfile"] and info["sub"]
    missing = get(iam, path(HEALTHCARE, "userinfo"))
    assert missing.status == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    m2m = iam.issue_organisation_token(ORG)
    wrong_realm = get(iam, path(HEALTHCARE, "userinfo"), headers={"authorization": f"Bearer {m2m}"})
    assert wrong_realm.status == 401 and 'error="invalid_token"' in wrong_realm.headers["WWW-Authenticate"]
    org_info = body(get(iam, path(M2M, "userinfo"), headers={"authorization": f"Bearer {m2m}"}))
    assert org_info["cbe"] == "0987654394" and org_info["clientId"] == ORG


def test_issue_helpers(iam: IamConnect) -> None:
    principal = iam.verify_access_token(iam.issue_professional_token(PHYSICIAN), iam.vaccicard_audience)
    assert principal.ssin == PHYSICIAN and principal.may_record
    with pytest.raises(ValueError):
        iam.issue_professional_token("00000000000")
    with pytest.raises(ValueError):
        iam.issue_organisation_token("cbe-unknown")


def test_token_lifetime_is_configurable(
    data: TestData, org_keys: KeyRing, realm_keys: dict[str, RSAKey], clock: Clock
) -> None:
    iam = IamConnect(
        data, BASE, token_lifetime=60, clock=clock, organisation_keys=org_keys, realm_keys=realm_keys
    )
    answer = tokens(iam)
    assert answer["expires_in"] == 60
    claims = claims_of(iam, HEALTHCARE, answer["access_token"])
    assert claims["exp"] - claims["iat"] == 60


def test_tokens_codes_and_assertions_never_logged(
    iam: IamConnect, org_keys: KeyRing, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    request, code = login(iam)
    answer = body(redeem(iam, request, code))
    exchanged = body(exchange(iam, answer["access_token"]))["access_token"]
    signed = assertion(org_keys[ORG], iam)
    m2m = body(client_credentials(iam, signed))["access_token"]
    client_credentials(iam, signed)  # replay, refused and logged
    redeem(iam, request, code)  # reuse, refused and logged
    secrets_seen = [
        code,
        answer["access_token"],
        answer["refresh_token"],
        exchanged,
        signed,
        m2m,
        request.verifier,
    ]
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert caplog.records, "the flow should log events"
    for secret in secrets_seen:
        assert secret not in logged
    assert PHYSICIAN not in logged


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """These tests never open a socket."""
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access in an in-process IAM test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield
