"""A faithful mock of eHealth's IAM Connect (Keycloak) for the simulator: realms ``healthcare`` and ``M2M``.

``IamConnect.handle(request)`` answers the Keycloak paths under ``{issuer_base}/realms/{realm}/``
(discovery, JWKS, the authorization endpoint with a small login page listing the test professionals,
the token endpoint and userinfo) from plain ``HttpRequest`` objects, and ``verify_access_token`` is what
the simulated FHIR API calls to authenticate a bearer token.

What it enforces, as IAM Connect does (see FACTS, "eHealth IAM Connect"):

* realm ``healthcare``: authorization code with PKCE ``S256`` only (``plain`` refused), ``state``
  required, one-time codes living 60 s bound to client, redirect URI and challenge; refresh tokens;
  RFC 8693 token exchange of an access token of this realm for one whose ``aud`` is the Vaccicard client.
* realm ``M2M``: ``client_credentials`` authenticated with ``private_key_jwt``: an RS256 assertion with
  ``kid``, ``iss = sub = client id``, ``aud`` the realm URL (or its token endpoint), at most 5 minutes
  between ``iat`` and ``exp``, a ``jti`` never seen before, signed by the organisation's registered
  certificate key.
* access tokens are RS256 JWTs signed with a per-realm key generated at start-up, carrying the claims
  eHealth tokens carry (``ssin``, names, ``userProfile`` with one ``{recognised, nihii11}`` entry per
  discipline, ``resource_access``; the CBE for an organisation), 300 s by default.

Errors are answered the way Keycloak answers them: ``400 {"error": "invalid_grant", ...}``,
``401 invalid_client`` for failed client authentication, an HTML error page (never a redirect) for an
unknown client or redirect URI, a redirect carrying ``error`` for other bad authorization requests.

Assumed defaults, all configurable: the public vendor client and the Vaccicard audience come from the
test data; the access-token lifetime (300 s), code lifetime (60 s), SSO session idle / refresh-token
lifetime (1800 s), maximum client-assertion lifetime (300 s); ``sub`` is a UUID derived from the realm and
SSIN (or client id); ``userProfile`` names are ``firstName``/``lastName``; ``preferred_username`` is the
SSIN; the token obtained with the code has ``aud`` = the requesting client, so only the exchanged token
is accepted by the Vaccicard API; token exchange returns no refresh token (Keycloak's standard token
exchange default); M2M tokens carry ``aud`` = the Vaccicard audience and a ``cbe`` claim. ``login_hint``
(an SSIN or NIHDI number) logs the professional in without showing the page, for automated clients.

Tokens, codes and client assertions are never logged; rejection messages never quote them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from cryptography import x509
from joserfc import jws, jwt
from joserfc.errors import (
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
)
from joserfc.jwk import KeySet, RSAKey
from joserfc.jwt import JWTClaimsRegistry

from conformance.errors import ConformanceError
from conformance.simulator.http import HttpRequest, HttpResponse, form, json_response
from conformance.simulator.testdata import HealthcareClient, KeyRing, Professional, TestData

__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "GRANT_TOKEN_EXCHANGE",
    "HEALTHCARE",
    "M2M",
    "REALMS",
    "TOKEN_TYPE_ACCESS",
    "Discipline",
    "IamConnect",
    "InvalidAccessTokenError",
    "Principal",
    "TokenRejection",
    "pkce_challenge",
]

HEALTHCARE = "healthcare"
M2M = "M2M"
REALMS: tuple[str, ...] = (HEALTHCARE, M2M)

GRANT_AUTHORIZATION_CODE = "authorization_code"
GRANT_REFRESH_TOKEN = "refresh_token"
GRANT_CLIENT_CREDENTIALS = "client_credentials"
GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TOKEN_TYPE_ACCESS = "urn:ietf:params:oauth:token-type:access_token"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

_REALM_GRANTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        HEALTHCARE: (GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN, GRANT_TOKEN_EXCHANGE),
        M2M: (GRANT_CLIENT_CREDENTIALS,),
    }
)
_REALM_AUTH_METHODS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {HEALTHCARE: ("none",), M2M: ("private_key_jwt",)}
)

_ALG = "RS256"
_MAX_TOKEN_CHARS = 16_384
_PKCE_RE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_OAUTH_AUTH_PARAMS = (
    "client_id",
    "redirect_uri",
    "response_type",
    "response_mode",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
)
_NO_STORE: Mapping[str, str] = MappingProxyType({"Cache-Control": "no-store", "Pragma": "no-cache"})
_AUTH_PATH = "protocol/openid-connect/"

_log = logging.getLogger(__name__)


# --- public result and error types -----------------------------------------------------------------


class TokenRejection(StrEnum):
    """Why an access token was refused (each turns into a 401 with ``WWW-Authenticate``)."""

    MISSING = "missing"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    INVALID_CLAIMS = "invalid_claims"


class InvalidAccessTokenError(ConformanceError):
    """An access token was refused; ``reason`` says why, ``detail`` explains (never quoting the token)."""

    def __init__(self, reason: TokenRejection, detail: str) -> None:
        super().__init__(f"access token refused ({reason.value}): {detail}")
        self.reason = reason
        self.detail = detail

    def www_authenticate(self, realm: str = "Vaccicard") -> str:
        """The RFC 6750 ``WWW-Authenticate`` value for a 401 answering this rejection."""
        if self.reason is TokenRejection.MISSING:
            return f'Bearer realm="{_header_safe(realm)}"'
        return (
            f'Bearer realm="{_header_safe(realm)}", error="invalid_token", '
            f'error_description="{_header_safe(self.detail)}"'
        )


@dataclass(frozen=True)
class Discipline:
    """One ``userProfile`` discipline entry of a professional's token."""

    name: str
    recognised: bool
    nihii11: str | None


@dataclass(frozen=True)
class Principal:
    """Who a verified access token authenticates: a professional (realm healthcare) or an organisation."""

    kind: Literal["professional", "organisation"]
    subject: str
    client_id: str
    ssin: str | None = None
    nihii11: str | None = None
    discipline: str | None = None
    recognised: bool = False
    cbe: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    disciplines: tuple[Discipline, ...] = ()
    roles: tuple[str, ...] = ()
    may_record: bool = False
    """A recognised discipline among the test data's recording disciplines (organisations: False)."""
    expires_at: int = 0
    token_id: str = ""


def pkce_challenge(verifier: str) -> str:
    """The PKCE ``S256`` code challenge of ``verifier`` (RFC 7636)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# --- internal state ---------------------------------------------------------------------------------


class _OAuthError(Exception):
    """An OAuth error answer: status, error code, description."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description

    def response(self) -> HttpResponse:
        body = {"error": self.error, "error_description": self.description}
        return json_response(self.status, body, dict(_NO_STORE))


@dataclass
class _Session:
    sid: str
    professional_ssin: str
    client_id: str
    auth_time: int
    expires_at: int


@dataclass(frozen=True)
class _Code:
    client_id: str
    redirect_uri: str
    challenge: str
    sid: str
    scope: str
    nonce: str | None
    expires_at: int


@dataclass(frozen=True)
class _RegisteredKey:
    kid: str
    key: RSAKey


class _Params:
    """OAuth parameters: a repeated parameter is an error (RFC 6749 §3.1), an empty value is absent."""

    def __init__(self, values: Mapping[str, list[str]], repeatable: frozenset[str] = frozenset()) -> None:
        self._values = values
        for name, items in values.items():
            if len(items) > 1 and name not in repeatable:
                raise _OAuthError(400, "invalid_request", f"Duplicated parameter: {name}")

    def get(self, name: str) -> str | None:
        items = self._values.get(name)
        return items[0] if items and items[0] != "" else None

    def getall(self, name: str) -> list[str]:
        return [v for v in self._values.get(name, []) if v != ""]


# --- the mock ---------------------------------------------------------------------------------------


class IamConnect:
    """eHealth IAM Connect mocked in process: answers Keycloak requests and verifies its access tokens.

    ``issuer_base`` is the public base URL (``http://127.0.0.1:8080/auth``); its path is where ``handle``
    expects requests. ``organisation_keys`` (generated when omitted, kept in ``self.organisation_keys``)
    supply each organisation's registered certificate; ``realm_keys`` (generated when omitted) sign the
    tokens of each realm. Lifetimes are in seconds; ``clock`` returns the current UNIX time.
    """

    def __init__(
        self,
        testdata: TestData,
        issuer_base: str,
        *,
        token_lifetime: int = 300,
        clock: Callable[[], float] = time.time,
        organisation_keys: KeyRing | None = None,
        realm_keys: Mapping[str, RSAKey] | None = None,
        code_lifetime: int = 60,
        refresh_lifetime: int = 1800,
        max_assertion_lifetime: int = 300,
        leeway: int = 0,
    ) -> None:
        self.testdata = testdata
        self.issuer_base = issuer_base.rstrip("/")
        self.token_lifetime = token_lifetime
        self.code_lifetime = code_lifetime
        self.refresh_lifetime = refresh_lifetime
        self.max_assertion_lifetime = max_assertion_lifetime
        self.leeway = leeway
        self._base_clock = clock
        self._clock_offset = 0.0
        self._lock = threading.Lock()
        self._prefix = urlsplit(self.issuer_base).path.rstrip("/") + "/realms/"
        self.organisation_keys: KeyRing = (
            organisation_keys if organisation_keys is not None else testdata.generate_keys()
        )
        self._realm_keys: dict[str, RSAKey] = {}
        for realm in REALMS:
            key = realm_keys[realm] if realm_keys is not None else _generate_realm_key()
            key.ensure_kid()
            self._realm_keys[realm] = key
        self._realm_by_kid = {key.kid: realm for realm, key in self._realm_keys.items()}
        self._client_keys: dict[str, _RegisteredKey] = {}
        for client_id, credential in self.organisation_keys.items():
            self.register_certificate(client_id, credential.certificate, kid=credential.kid)
        self._codes: dict[str, _Code] = {}
        self._sessions: dict[str, _Session] = {}
        self._seen_assertions: dict[tuple[str, str], float] = {}

    # --- configuration and URLs ---------------------------------------------------------------------

    def register_certificate(
        self, client_id: str, certificate: x509.Certificate, *, kid: str | None = None
    ) -> str:
        """Register (or replace) the certificate of an M2M client; return the ``kid`` assertions must use."""
        if self.testdata.organisation(client_id) is None:
            raise ValueError(f"no organisation with M2M client id {client_id!r} in the test data")
        key = RSAKey.import_key(certificate.public_key())  # type: ignore[arg-type]
        key_id = kid or key.thumbprint()
        with self._lock:
            self._client_keys[client_id] = _RegisteredKey(key_id, key)
        return key_id

    def issuer(self, realm: str) -> str:
        """The realm's issuer URL (``{issuer_base}/realms/{realm}``)."""
        return f"{self.issuer_base}/realms/{realm}"

    def endpoint(self, realm: str, name: Literal["auth", "token", "certs", "userinfo"]) -> str:
        """The URL of one of the realm's ``protocol/openid-connect`` endpoints."""
        return f"{self.issuer(realm)}/{_AUTH_PATH}{name}"

    @property
    def vaccicard_audience(self) -> str:
        """The audience the Vaccicard FHIR API accepts (the token-exchange target)."""
        return self.testdata.vaccicard.audience

    def jwks(self, realm: str) -> dict[str, Any]:
        """The realm's public JWKS (RS256 signing key with ``kid``)."""
        return dict(KeySet([self._realm_keys[realm]]).as_dict(private=False))

    def now(self) -> int:
        """The current time of the injected clock, in whole seconds."""
        return int(self._clock())

    def _clock(self) -> float:
        return self._base_clock() + self._clock_offset

    def expire_tokens(self) -> None:
        """Make every access token issued so far expired, as if ``token_lifetime`` had passed.

        IAM Connect's clock moves forward by the token lifetime (plus a second); sessions and refresh
        tokens, which live longer, stay valid, so a client renews the way it would after a long pause.
        """
        with self._lock:
            self._clock_offset += self.token_lifetime + 1

    def end_sessions(self) -> None:
        """Log every professional out: sessions end and access tokens expire, so only a new login works."""
        with self._lock:
            self._sessions.clear()
        self.expire_tokens()

    # --- HTTP --------------------------------------------------------------------------------------

    def handle(self, request: HttpRequest) -> HttpResponse | None:
        """Answer a request under ``.../realms/{realm}/``; None when the path is not an IAM path."""
        if not request.path.startswith(self._prefix):
            return None
        realm, _, rest = request.path[len(self._prefix) :].partition("/")
        if realm not in REALMS:
            return json_response(404, {"error": "Realm does not exist"})
        routes: dict[str, tuple[tuple[str, ...], Callable[[str, HttpRequest], HttpResponse]]] = {
            ".well-known/openid-configuration": (("GET",), self._discovery),
            _AUTH_PATH + "certs": (("GET",), self._certs),
            _AUTH_PATH + "auth": (("GET", "POST"), self._authorize),
            _AUTH_PATH + "token": (("POST",), self._token),
            _AUTH_PATH + "userinfo": (("GET", "POST"), self._userinfo),
        }
        route = routes.get(rest)
        if route is None:
            return json_response(
                404,
                {
                    "error": "Unable to find matching target resource method",
                    "error_description": "For more on this error consult the server log.",
                },
            )
        methods, handler = route
        if request.method.upper() not in methods:
            return json_response(405, {"error": "HTTP 405 Method Not Allowed"}, {"Allow": ", ".join(methods)})
        try:
            return handler(realm, request)
        except _OAuthError as error:
            _log.info("IAM %s %s: %s", realm, rest, error.error)
            return error.response()

    def _discovery(self, realm: str, request: HttpRequest) -> HttpResponse:
        return json_response(200, self.discovery(realm))

    def discovery(self, realm: str) -> dict[str, Any]:
        """The realm's OpenID configuration, advertising exactly what this realm implements."""
        issuer = self.issuer(realm)
        return {
            "issuer": issuer,
            "authorization_endpoint": self.endpoint(realm, "auth"),
            "token_endpoint": self.endpoint(realm, "token"),
            "userinfo_endpoint": self.endpoint(realm, "userinfo"),
            "jwks_uri": self.endpoint(realm, "certs"),
            "grant_types_supported": list(_REALM_GRANTS[realm]),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [_ALG],
            "userinfo_signing_alg_values_supported": ["none"],
            "token_endpoint_auth_methods_supported": list(_REALM_AUTH_METHODS[realm]),
            "token_endpoint_auth_signing_alg_values_supported": [_ALG],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "profile"],
            "claims_supported": [
                "iss",
                "sub",
                "aud",
                "azp",
                "exp",
                "iat",
                "jti",
                "typ",
                "ssin",
                "given_name",
                "family_name",
                "name",
                "preferred_username",
                "userProfile",
                "resource_access",
                "cbe",
            ],
            "claims_parameter_supported": False,
            "request_parameter_supported": False,
            "request_uri_parameter_supported": False,
            "authorization_response_iss_parameter_supported": True,
        }

    def _certs(self, realm: str, request: HttpRequest) -> HttpResponse:
        return json_response(200, self.jwks(realm))

    # --- authorization endpoint ---------------------------------------------------------------------

    def _authorize(self, realm: str, request: HttpRequest) -> HttpResponse:
        values = {k: list(v) for k, v in request.query.items()}
        if request.method.upper() == "POST":
            try:
                for name, value in parse_qsl(_form_text(request), keep_blank_values=True):
                    values.setdefault(name, [])
                    if value not in values[name]:
                        values[name].append(value)
            except ValueError as error:
                return _error_page(400, f"Invalid request: {error}")
        try:
            params = _Params(values)
        except _OAuthError as error:
            return _error_page(400, error.description)
        client_id = params.get("client_id")
        client = self.testdata.healthcare_client(client_id) if realm == HEALTHCARE and client_id else None
        if client is None:
            return _error_page(400, "Client not found." if client_id else "Missing parameter: client_id")
        redirect_uri = params.get("redirect_uri")
        if redirect_uri is None or not _redirect_allowed(redirect_uri, client.redirect_uris):
            return _error_page(400, "Invalid parameter: redirect_uri")
        state = params.get("state")

        def refuse(error: str, description: str) -> HttpResponse:
            answer = {"error": error, "error_description": description, "iss": self.issuer(realm)}
            if state is not None:
                answer["state"] = state
            return _redirect(_with_query(redirect_uri, answer))

        response_type = params.get("response_type")
        if response_type is None:
            return refuse("invalid_request", "Missing parameter: response_type")
        if response_type != "code":
            return refuse(
                "unsupported_response_type",
                "Client is not allowed to initiate browser login with given response_type.",
            )
        if params.get("response_mode") not in (None, "query"):
            return refuse("invalid_request", "Invalid parameter: response_mode")
        if state is None:
            return refuse("invalid_request", "Missing parameter: state")
        challenge = params.get("code_challenge")
        method = params.get("code_challenge_method")
        if challenge is None:
            return refuse("invalid_request", "Missing parameter: code_challenge")
        if method is None:
            return refuse("invalid_request", "Missing parameter: code_challenge_method")
        if method != "S256":
            return refuse(
                "invalid_request",
                "Invalid parameter: code challenge method is not configured one (S256 only)",
            )
        if not _PKCE_RE.fullmatch(challenge):
            return refuse("invalid_request", "Invalid parameter: code_challenge")

        chosen = params.get("ssin") if request.method.upper() == "POST" else None
        chosen = chosen or params.get("login_hint")
        if chosen is None:
            return self._login_page(realm, params, None)
        professional = self.testdata.professional(chosen) or self.testdata.professional_by_nihii(chosen)
        if professional is None:
            return self._login_page(realm, params, "Unknown test professional: choose one from the list.")

        now = self.now()
        sid = str(uuid.uuid4())
        code = secrets.token_urlsafe(32)
        scope = _scope(params.get("scope"))
        with self._lock:
            self._purge(now)
            self._sessions[sid] = _Session(
                sid, professional.ssin, client.client_id, now, now + self.refresh_lifetime
            )
            self._codes[code] = _Code(
                client.client_id,
                redirect_uri,
                challenge,
                sid,
                scope,
                params.get("nonce"),
                now + self.code_lifetime,
            )
        _log.info("IAM %s: login for client %s, code issued", realm, client.client_id)
        answer = {"state": state, "session_state": sid, "iss": self.issuer(realm), "code": code}
        return _redirect(_with_query(redirect_uri, answer))

    def _login_page(self, realm: str, params: _Params, error: str | None) -> HttpResponse:
        hidden = "".join(
            f'<input type="hidden" name="{name}" value="{_h(value)}">'
            for name in _OAUTH_AUTH_PARAMS
            if (value := params.get(name)) is not None
        )
        rows = []
        for pro in self.testdata.professionals:
            notes = [pro.discipline]
            if not pro.recognised:
                notes.append("not recognised")
            if pro.discipline not in self.testdata.recording_disciplines:
                notes.append("may not record vaccinations")
            rows.append(
                '<li><form method="post">'
                f'{hidden}<button type="submit" name="ssin" value="{_h(pro.ssin)}">'
                f"{_h(pro.given_name)} {_h(pro.family_name)}</button> "
                f"({_h(', '.join(notes))}; SSIN {_h(pro.ssin)}, NIHDI {_h(pro.nihii11)})</form></li>"
            )
        banner = f'<p class="error" role="alert">{_h(error)}</p>' if error else ""
        page = (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>IAM Connect (simulated) — realm {_h(realm)}</title>"
            "<style>body{font-family:sans-serif;margin:2em}li{margin:.4em 0}.error{color:#a00}</style>"
            "</head><body>"
            f"<h1>IAM Connect (simulated): log in to realm {_h(realm)}</h1>"
            f"{banner}<p>Choose a fictitious test professional. Automated clients may pass "
            "<code>login_hint=&lt;SSIN or NIHDI number&gt;</code> instead.</p>"
            f"<ul>{''.join(rows)}</ul></body></html>"
        )
        headers = {
            "Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
            "X-Frame-Options": "DENY",
            **_NO_STORE,
        }
        return HttpResponse(200, headers, page.encode("utf-8"))

    # --- token endpoint -----------------------------------------------------------------------------

    def _token(self, realm: str, request: HttpRequest) -> HttpResponse:
        try:
            text = _form_text(request)
            values: dict[str, list[str]] = {}
            for name, value in parse_qsl(text, keep_blank_values=True):
                values.setdefault(name, []).append(value)
        except ValueError as error:
            raise _OAuthError(400, "invalid_request", str(error)) from None
        params = _Params(values, repeatable=frozenset({"audience"}))
        grant = params.get("grant_type")
        if grant is None:
            raise _OAuthError(400, "invalid_request", "Missing form parameter: grant_type")
        if grant not in _REALM_GRANTS[realm]:
            raise _OAuthError(400, "unsupported_grant_type", f"Unsupported grant_type in realm {realm}")
        if grant == GRANT_AUTHORIZATION_CODE:
            body = self._grant_code(realm, params)
        elif grant == GRANT_REFRESH_TOKEN:
            body = self._grant_refresh(realm, params)
        elif grant == GRANT_TOKEN_EXCHANGE:
            body = self._grant_exchange(realm, params)
        else:
            body = self._grant_client_credentials(realm, params)
        _log.info("IAM %s: %s token issued", realm, grant)
        return json_response(200, body, dict(_NO_STORE))

    def _public_client(self, params: _Params) -> HealthcareClient:
        client_id = params.get("client_id")
        if params.get("client_assertion") is not None or params.get("client_secret") is not None:
            raise _OAuthError(401, "invalid_client", "Public clients of realm healthcare do not authenticate")
        client = self.testdata.healthcare_client(client_id) if client_id else None
        if client is None:
            raise _OAuthError(401, "invalid_client", "Invalid client or Invalid client credentials")
        return client

    def _grant_code(self, realm: str, params: _Params) -> dict[str, Any]:
        client = self._public_client(params)
        code = params.get("code")
        if code is None:
            raise _OAuthError(400, "invalid_request", "Missing parameter: code")
        now = self.now()
        with self._lock:
            entry = self._codes.pop(code, None)  # one use, whatever happens next
        if entry is None:
            raise _OAuthError(400, "invalid_grant", "Code not valid")
        if now >= entry.expires_at:
            raise _OAuthError(400, "invalid_grant", "Code is expired")
        if entry.client_id != client.client_id:
            raise _OAuthError(400, "invalid_grant", "Code not valid: issued to another client")
        if params.get("redirect_uri") != entry.redirect_uri:
            raise _OAuthError(400, "invalid_grant", "Incorrect redirect_uri")
        verifier = params.get("code_verifier")
        if verifier is None:
            raise _OAuthError(400, "invalid_grant", "PKCE code verifier not specified")
        if not _PKCE_RE.fullmatch(verifier):
            raise _OAuthError(400, "invalid_grant", "PKCE invalid code verifier")
        if not hmac.compare_digest(pkce_challenge(verifier), entry.challenge):
            raise _OAuthError(400, "invalid_grant", "PKCE verification failed: Code mismatch")
        session = self._live_session(entry.sid, now)
        professional = self._session_professional(session)
        return self._professional_tokens(realm, professional, session, entry.scope, entry.nonce, now)

    def _grant_refresh(self, realm: str, params: _Params) -> dict[str, Any]:
        client = self._public_client(params)
        token = params.get("refresh_token")
        if token is None:
            raise _OAuthError(400, "invalid_request", "Missing parameter: refresh_token")
        try:
            _, claims = self._verify_jwt(token, (realm,))
        except InvalidAccessTokenError as error:
            description = (
                "Token is not active" if error.reason is TokenRejection.EXPIRED else "Invalid refresh token"
            )
            raise _OAuthError(400, "invalid_grant", description) from None
        if claims.get("typ") != "Refresh":
            raise _OAuthError(400, "invalid_grant", "Invalid refresh token")
        if claims.get("azp") != client.client_id:
            raise _OAuthError(
                400, "invalid_grant", "Invalid refresh token. Token client and authorized client don't match"
            )
        now = self.now()
        session = self._live_session(str(claims.get("sid")), now)
        with self._lock:
            session.expires_at = now + self.refresh_lifetime
        professional = self._session_professional(session)
        return self._professional_tokens(
            realm, professional, session, str(claims.get("scope", "profile")), None, now
        )

    def _grant_exchange(self, realm: str, params: _Params) -> dict[str, Any]:
        client = self._public_client(params)
        subject_token = params.get("subject_token")
        if subject_token is None:
            raise _OAuthError(400, "invalid_request", "Missing parameter: subject_token")
        if params.get("subject_token_type") != TOKEN_TYPE_ACCESS:
            raise _OAuthError(
                400, "invalid_request", f"Invalid subject_token_type: expected {TOKEN_TYPE_ACCESS}"
            )
        requested = params.get("requested_token_type")
        if requested not in (None, TOKEN_TYPE_ACCESS):
            raise _OAuthError(400, "invalid_request", "Requested token type not supported")
        audiences = params.getall("audience")
        if not audiences:
            raise _OAuthError(400, "invalid_request", "Missing parameter: audience")
        if len(audiences) > 1:
            raise _OAuthError(400, "invalid_request", "Only one audience may be requested")
        audience = audiences[0]
        if audience != self.vaccicard_audience:
            raise _OAuthError(400, "invalid_client", "Audience not found")
        try:
            _, claims = self._verify_jwt(subject_token, (realm,))
        except InvalidAccessTokenError as error:
            raise _OAuthError(400, "invalid_token", f"Invalid token: {error.detail}") from None
        if claims.get("typ") != "Bearer":
            raise _OAuthError(400, "invalid_token", "Invalid token: not an access token")
        token_aud = claims.get("aud")
        token_auds = token_aud if isinstance(token_aud, list) else [token_aud]
        if claims.get("azp") != client.client_id and client.client_id not in token_auds:
            raise _OAuthError(400, "access_denied", "Client is not within the token audience")
        now = self.now()
        session = self._live_session(str(claims.get("sid")), now)
        professional = self._session_professional(session)
        access = self._professional_access_claims(
            realm,
            professional,
            session,
            client_id=client.client_id,
            audience=audience,
            scope=str(claims.get("scope", "profile")),
            now=now,
        )
        return {
            "access_token": self._sign(realm, access),
            "expires_in": self.token_lifetime,
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "issued_token_type": TOKEN_TYPE_ACCESS,
            "not-before-policy": 0,
            "session_state": session.sid,
            "scope": access["scope"],
        }

    def _grant_client_credentials(self, realm: str, params: _Params) -> dict[str, Any]:
        client_id = self._authenticate_assertion(realm, params)
        organisation = self.testdata.organisation(client_id)
        assert organisation is not None  # registered clients are organisations of the test data
        now = self.now()
        vaccicard = self.testdata.vaccicard
        claims = {
            "exp": now + self.token_lifetime,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer(realm),
            "aud": vaccicard.audience,
            "sub": self._subject(realm, client_id),
            "typ": "Bearer",
            "azp": client_id,
            "scope": "profile",
            "clientId": client_id,
            "preferred_username": f"service-account-{client_id}",
            "cbe": organisation.cbe,
            "resource_access": {vaccicard.client_id: {"roles": list(vaccicard.roles)}},
        }
        return {
            "access_token": self._sign(realm, claims),
            "expires_in": self.token_lifetime,
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": "profile",
        }

    def _authenticate_assertion(self, realm: str, params: _Params) -> str:
        """Verify the ``private_key_jwt`` client assertion; return the authenticated client id."""

        def refuse(description: str) -> _OAuthError:
            return _OAuthError(401, "invalid_client", description)

        if params.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            raise refuse(
                f"Client authentication with private_key_jwt required: client_assertion_type {CLIENT_ASSERTION_TYPE}"
            )
        assertion = params.get("client_assertion")
        if assertion is None:
            raise refuse("Missing parameter: client_assertion")
        if len(assertion) > _MAX_TOKEN_CHARS:
            raise refuse("Client assertion too large")
        try:
            parsed = jws.extract_compact(assertion.encode("ascii"))
            header = parsed.headers()
            claims = json.loads(parsed.payload)
        except (JoseError, ValueError, UnicodeError):
            raise refuse("Malformed client assertion: expected a compact JWS") from None
        if not isinstance(claims, dict):
            raise refuse("Malformed client assertion: payload is not a JSON object")
        if header.get("alg") != _ALG:
            raise refuse(f"Client assertion must be signed with {_ALG}")
        if not header.get("kid"):
            raise refuse("Client assertion has no kid header")
        client_id = claims.get("iss")
        if not isinstance(client_id, str):
            raise refuse("Client assertion has no iss claim")
        form_client = params.get("client_id")
        if form_client is not None and form_client != client_id:
            raise refuse("client_id does not match the client assertion issuer")
        registered = self._client_keys.get(client_id)
        if registered is None:
            raise refuse("Invalid client or Invalid client credentials")
        if header.get("kid") != registered.kid:
            raise refuse("Client assertion kid does not match the registered certificate")
        try:
            valid = jws.validate_compact(parsed, registered.key, algorithms=[_ALG])
        except JoseError:
            valid = False
        if not valid:
            raise refuse("Invalid client assertion signature")
        now = self._base_clock()  # the assertion is dated by the client's clock, not our shifted one
        registry = JWTClaimsRegistry(
            now=lambda: int(self._base_clock()),
            leeway=self.leeway,
            iss={"essential": True, "value": client_id},
            sub={"essential": True, "value": client_id},
            aud={"essential": True, "values": [self.issuer(realm), self.endpoint(realm, "token")]},
            exp={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise refuse("Client assertion is expired (Token is not active)") from None
        except MissingClaimError as error:
            raise refuse(f"Client assertion lacks claim(s): {error.claim}") from None
        except InvalidClaimError as error:
            raise refuse(f"Client assertion has an invalid {error.claim} claim") from None
        exp = claims["exp"]
        start = claims.get("iat", now)  # already checked to be a NumericDate when present
        if exp - start > self.max_assertion_lifetime:
            raise refuse(f"Client assertion lifetime exceeds {self.max_assertion_lifetime} s")
        jti = claims["jti"]
        with self._lock:
            self._purge(now)
            if (client_id, jti) in self._seen_assertions:
                raise refuse("Client assertion already used (jti replayed)")
            self._seen_assertions[(client_id, jti)] = exp + self.leeway
        return client_id

    # --- userinfo -----------------------------------------------------------------------------------

    def _userinfo(self, realm: str, request: HttpRequest) -> HttpResponse:
        authorization = request.headers.get("authorization")
        try:
            token = _bearer(authorization)
            _, claims = self._verify_jwt(token, (realm,))
            if claims.get("typ") != "Bearer":
                raise InvalidAccessTokenError(TokenRejection.INVALID_CLAIMS, "not an access token")
        except InvalidAccessTokenError as error:
            headers = {"WWW-Authenticate": error.www_authenticate(realm), **_NO_STORE}
            body = {"error": "invalid_token", "error_description": error.detail}
            return json_response(401, body, headers)
        keys = (
            ("sub", "ssin", "given_name", "family_name", "name", "preferred_username", "userProfile")
            if realm == HEALTHCARE
            else ("sub", "preferred_username", "clientId", "cbe")
        )
        return json_response(200, {k: claims[k] for k in keys if k in claims}, dict(_NO_STORE))

    # --- verification (the FHIR API's side) -----------------------------------------------------------

    def verify_access_token(self, token: str | None, audience: str) -> Principal:
        """Verify a bearer access token for ``audience``; InvalidAccessTokenError says why not."""
        realm, claims = self._verify_jwt(token, REALMS)
        if claims.get("typ") != "Bearer":
            raise InvalidAccessTokenError(
                TokenRejection.INVALID_CLAIMS, "not an access token (typ is not Bearer)"
            )
        try:
            JWTClaimsRegistry(aud={"essential": True, "value": audience}).validate({"aud": claims.get("aud")})
        except (MissingClaimError, InvalidClaimError):
            raise InvalidAccessTokenError(
                TokenRejection.WRONG_AUDIENCE, f"token audience is not {audience}"
            ) from None
        return self._principal(realm, claims)

    def verify_bearer(self, authorization: str | None, audience: str) -> Principal:
        """Verify an ``Authorization: Bearer ...`` header value for ``audience``."""
        return self.verify_access_token(_bearer(authorization), audience)

    def _verify_jwt(self, token: str | None, realms: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
        """Check shape, signature (realm key by ``kid``), issuer and times; return (realm, claims)."""
        if token is None or (isinstance(token, str) and not token.strip()):
            raise InvalidAccessTokenError(TokenRejection.MISSING, "no access token")
        if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS or token.count(".") != 2:
            raise InvalidAccessTokenError(
                TokenRejection.MALFORMED, "not a compact JWS (header.payload.signature)"
            )
        try:
            parsed = jws.extract_compact(token.encode("ascii"))
            header = parsed.headers()
            claims = json.loads(parsed.payload)
        except (JoseError, ValueError, UnicodeError):
            raise InvalidAccessTokenError(
                TokenRejection.MALFORMED, "header or payload is not base64url JSON"
            ) from None
        if not isinstance(claims, dict):
            raise InvalidAccessTokenError(TokenRejection.MALFORMED, "payload is not a JSON object")
        if header.get("alg") != _ALG:
            raise InvalidAccessTokenError(TokenRejection.BAD_SIGNATURE, f"algorithm is not {_ALG}")
        realm = self._realm_by_kid.get(header.get("kid"))  # type: ignore[arg-type]
        if realm is None:
            raise InvalidAccessTokenError(TokenRejection.BAD_SIGNATURE, "signed by an unknown key")
        try:
            valid = jws.validate_compact(parsed, self._realm_keys[realm], algorithms=[_ALG])
        except JoseError:
            valid = False
        if not valid:
            raise InvalidAccessTokenError(TokenRejection.BAD_SIGNATURE, "signature does not verify")
        expected = " or ".join(self.issuer(r) for r in realms)
        if realm not in realms:
            raise InvalidAccessTokenError(TokenRejection.WRONG_ISSUER, f"issuer is not {expected}")
        try:
            JWTClaimsRegistry(iss={"essential": True, "value": self.issuer(realm)}).validate(
                {"iss": claims.get("iss")}
            )
        except (MissingClaimError, InvalidClaimError):
            raise InvalidAccessTokenError(TokenRejection.WRONG_ISSUER, f"issuer is not {expected}") from None
        times = {k: claims[k] for k in ("exp", "nbf", "iat") if k in claims}
        try:
            JWTClaimsRegistry(
                now=lambda: int(self._clock()), leeway=self.leeway, exp={"essential": True}
            ).validate(times)
        except ExpiredTokenError:
            raise InvalidAccessTokenError(TokenRejection.EXPIRED, "token is expired") from None
        except (MissingClaimError, InvalidClaimError) as error:
            raise InvalidAccessTokenError(
                TokenRejection.INVALID_CLAIMS, f"{error.claim} claim: {error.description}"
            ) from None
        return realm, claims

    def _principal(self, realm: str, claims: dict[str, Any]) -> Principal:
        vaccicard = self.testdata.vaccicard
        access = claims.get("resource_access")
        client_access = access.get(vaccicard.client_id) if isinstance(access, dict) else None
        raw_roles = client_access.get("roles") if isinstance(client_access, dict) else None
        roles = tuple(r for r in raw_roles if isinstance(r, str)) if isinstance(raw_roles, list) else ()
        common = {
            "subject": str(claims.get("sub", "")),
            "client_id": str(claims.get("azp", "")),
            "roles": roles,
            "expires_at": int(claims["exp"]),
            "token_id": str(claims.get("jti", "")),
        }
        if realm == M2M:
            cbe = claims.get("cbe")
            if not isinstance(cbe, str):
                raise InvalidAccessTokenError(
                    TokenRejection.INVALID_CLAIMS, "organisation token without cbe claim"
                )
            return Principal(kind="organisation", cbe=cbe, **common)
        ssin = claims.get("ssin")
        profile = claims.get("userProfile")
        if not isinstance(ssin, str) or not isinstance(profile, dict):
            raise InvalidAccessTokenError(
                TokenRejection.INVALID_CLAIMS, "professional token without ssin or userProfile claim"
            )
        disciplines = tuple(
            Discipline(
                name,
                value.get("recognised") is True,
                value.get("nihii11") if isinstance(value.get("nihii11"), str) else None,
            )
            for name, value in profile.items()
            if isinstance(value, dict) and "recognised" in value
        )
        recording = self.testdata.recording_disciplines
        able = [d for d in disciplines if d.recognised and d.name in recording]
        primary = able[0] if able else (disciplines[0] if disciplines else None)
        return Principal(
            kind="professional",
            ssin=ssin,
            nihii11=primary.nihii11 if primary else None,
            discipline=primary.name if primary else None,
            recognised=primary.recognised if primary else False,
            given_name=_str_or_none(claims.get("given_name")),
            family_name=_str_or_none(claims.get("family_name")),
            disciplines=disciplines,
            may_record=bool(able),
            **common,
        )

    # --- minting (for the simulator's own tests and fixtures) -----------------------------------------

    def issue_professional_token(
        self, professional_ssin: str, *, audience: str | None = None, client_id: str | None = None
    ) -> str:
        """An access token for a test professional as token exchange would give it (default: Vaccicard)."""
        professional = self.testdata.professional(professional_ssin)
        if professional is None:
            raise ValueError("no such test professional")
        client = client_id or (
            self.testdata.healthcare_clients[0].client_id
            if self.testdata.healthcare_clients
            else "vendor-software"
        )
        now = self.now()
        session = _Session(str(uuid.uuid4()), professional.ssin, client, now, now + self.refresh_lifetime)
        with self._lock:
            self._sessions[session.sid] = session
        claims = self._professional_access_claims(
            HEALTHCARE,
            professional,
            session,
            client_id=client,
            audience=audience or self.vaccicard_audience,
            scope="profile",
            now=now,
        )
        return self._sign(HEALTHCARE, claims)

    def issue_organisation_token(self, client_id: str) -> str:
        """An M2M access token for a test organisation, as client_credentials would give it."""
        if self.testdata.organisation(client_id) is None:
            raise ValueError(f"no organisation with M2M client id {client_id!r}")
        credential = self.organisation_keys[client_id]
        assertion = credential.client_assertion(self.issuer(M2M), now=self._base_clock())
        params = _Params(
            {
                "grant_type": [GRANT_CLIENT_CREDENTIALS],
                "client_assertion_type": [CLIENT_ASSERTION_TYPE],
                "client_assertion": [assertion],
            }
        )
        return str(self._grant_client_credentials(M2M, params)["access_token"])

    # --- helpers ------------------------------------------------------------------------------------

    def _subject(self, realm: str, identity: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.issuer(realm)}/users/{identity}"))

    def _sign(self, realm: str, claims: dict[str, Any]) -> str:
        key = self._realm_keys[realm]
        return jwt.encode({"alg": _ALG, "kid": key.kid}, claims, key, algorithms=[_ALG])

    def _live_session(self, sid: str, now: int) -> _Session:
        with self._lock:
            session = self._sessions.get(sid)
        if session is None or now >= session.expires_at:
            raise _OAuthError(400, "invalid_grant", "Session not active")
        return session

    def _session_professional(self, session: _Session) -> Professional:
        professional = self.testdata.professional(session.professional_ssin)
        if professional is None:
            raise _OAuthError(400, "invalid_grant", "User not found")
        return professional

    def _professional_access_claims(
        self,
        realm: str,
        professional: Professional,
        session: _Session,
        *,
        client_id: str,
        audience: str,
        scope: str,
        now: int,
    ) -> dict[str, Any]:
        vaccicard = self.testdata.vaccicard
        resource_access: dict[str, Any] = {}
        if audience == vaccicard.audience:
            resource_access[vaccicard.client_id] = {"roles": list(vaccicard.roles)}
        return {
            "exp": now + self.token_lifetime,
            "iat": now,
            "auth_time": session.auth_time,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer(realm),
            "aud": audience,
            "sub": self._subject(realm, professional.ssin),
            "typ": "Bearer",
            "azp": client_id,
            "sid": session.sid,
            "scope": scope,
            "resource_access": resource_access,
            "ssin": professional.ssin,
            "given_name": professional.given_name,
            "family_name": professional.family_name,
            "name": f"{professional.given_name} {professional.family_name}",
            "preferred_username": professional.ssin,
            "userProfile": {
                "ssin": professional.ssin,
                "firstName": professional.given_name,
                "lastName": professional.family_name,
                professional.discipline: {
                    "recognised": professional.recognised,
                    "nihii11": professional.nihii11,
                },
            },
        }

    def _professional_tokens(
        self,
        realm: str,
        professional: Professional,
        session: _Session,
        scope: str,
        nonce: str | None,
        now: int,
    ) -> dict[str, Any]:
        access = self._professional_access_claims(
            realm,
            professional,
            session,
            client_id=session.client_id,
            audience=session.client_id,
            scope=scope,
            now=now,
        )
        refresh = {
            "exp": session.expires_at,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer(realm),
            "aud": self.issuer(realm),
            "sub": access["sub"],
            "typ": "Refresh",
            "azp": session.client_id,
            "sid": session.sid,
            "scope": scope,
        }
        body: dict[str, Any] = {
            "access_token": self._sign(realm, access),
            "expires_in": self.token_lifetime,
            "refresh_expires_in": session.expires_at - now,
            "refresh_token": self._sign(realm, refresh),
            "token_type": "Bearer",
            "not-before-policy": 0,
            "session_state": session.sid,
            "scope": scope,
        }
        if "openid" in scope.split():
            id_claims = {
                "exp": now + self.token_lifetime,
                "iat": now,
                "auth_time": session.auth_time,
                "jti": str(uuid.uuid4()),
                "iss": self.issuer(realm),
                "aud": session.client_id,
                "sub": access["sub"],
                "typ": "ID",
                "azp": session.client_id,
                "sid": session.sid,
                "ssin": professional.ssin,
                "given_name": professional.given_name,
                "family_name": professional.family_name,
                "name": access["name"],
                "preferred_username": professional.ssin,
            }
            if nonce is not None:
                id_claims["nonce"] = nonce
            body["id_token"] = self._sign(realm, id_claims)
        return body

    def _purge(self, now: float) -> None:
        """Forget expired codes, sessions and assertion ids (call with the lock held)."""
        for code in [c for c, entry in self._codes.items() if entry.expires_at <= now]:
            del self._codes[code]
        for sid in [s for s, session in self._sessions.items() if session.expires_at <= now]:
            del self._sessions[sid]
        for key in [k for k, exp in self._seen_assertions.items() if exp < now]:
            del self._seen_assertions[key]


# --- module helpers ---------------------------------------------------------------------------------


def _generate_realm_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"alg": _ALG, "use": "sig"}, auto_kid=True)


def _bearer(authorization: str | None) -> str:
    if not authorization or not authorization.strip():
        raise InvalidAccessTokenError(TokenRejection.MISSING, "no Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise InvalidAccessTokenError(TokenRejection.MISSING, "Authorization header is not Bearer")
    if not token.strip():
        raise InvalidAccessTokenError(TokenRejection.MALFORMED, "Bearer credentials are empty")
    return token.strip()


def _form_text(request: HttpRequest) -> str:
    form(request)  # raises ValueError for a wrong content type or non-UTF-8 body
    return request.body.decode("utf-8")


def _scope(requested: str | None) -> str:
    return "openid profile" if requested and "openid" in requested.split() else "profile"


def _redirect_allowed(uri: str, registered: tuple[str, ...]) -> bool:
    """Keycloak matching (exact, or a prefix ending in ``*``); loopback URIs match on any port (RFC 8252)."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or parts.fragment or not parts.hostname:
        return False
    candidates = [uri]
    if parts.hostname in _LOOPBACK_HOSTS and port is not None:
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        candidates.append(urlunsplit(parts._replace(netloc=host)))
    for pattern in registered:
        for candidate in candidates:
            if candidate == pattern or (pattern.endswith("*") and candidate.startswith(pattern[:-1])):
                return True
    return False


def _with_query(uri: str, params: Mapping[str, str]) -> str:
    parts = urlsplit(uri)
    extra = urlencode(params)
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


def _redirect(location: str) -> HttpResponse:
    return HttpResponse(302, {"Location": location, **_NO_STORE}, b"")


def _error_page(status: int, message: str) -> HttpResponse:
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>IAM Connect (simulated)</title>'
        f"</head><body><h1>We are sorry...</h1><p>{_h(message)}</p></body></html>"
    )
    headers = {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": "default-src 'none'",
        **_NO_STORE,
    }
    return HttpResponse(status, headers, page.encode("utf-8"))


def _h(value: str) -> str:
    return html.escape(value, quote=True)


def _header_safe(text: str) -> str:
    """Keep only the characters RFC 6750 allows in an ``error_description`` quoted string."""
    return "".join(c for c in text if 0x20 <= ord(c) <= 0x7E and c not in '"\\')


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
