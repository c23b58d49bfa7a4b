"""An IAM Connect (Keycloak) client for live targets: professionals in the browser, organisations by key.

Two ``TokenProvider`` implementations hand out a Vaccicard access token and its claims:

* ``ProfessionalLogin`` (realm ``healthcare``): authorization code with PKCE ``S256`` in the system
  browser (``open_browser``, ``webbrowser.open`` by default), the answer caught by a one-shot listener
  on ``http://127.0.0.1:<port>/callback`` that accepts exactly one callback carrying the right
  ``state``; then an RFC 8693 token exchange to the target's ``audience``. The refresh token of the
  login renews the session without the browser while it lives.
* ``OrganisationLogin`` (realm ``M2M``): ``client_credentials`` authenticated with ``private_key_jwt``:
  an RS256 assertion (``iss = sub =`` client id, ``aud`` = the realm URL, a fresh ``jti``, ``kid`` the
  RFC 7638 thumbprint of the certificate key unless the target names one) signed with the key of the
  organisation's eHealth certificate, read from its ``.p12`` with the password found in the
  environment variable the target names.

Tokens are cached and renewed ``renew_margin`` seconds before they expire (at most half their life),
counting ``expires_in`` on the local monotonic clock, so a server clock that is off does not matter;
``leeway`` back-dates the assertion's ``iat`` for a server clock running behind. Errors: an IAM Connect
that cannot be reached, answers 5xx or fails TLS verification raises ``TargetUnreachableError`` (exit
3) naming the URL; a refusal (``invalid_grant``, ``invalid_client`` ...) raises ``AuthenticationError``
with the OAuth description; a ``.p12`` that cannot be opened raises ``ConfigurationError``. Tokens,
codes, assertions and passwords are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import os
import secrets
import socketserver
import threading
import time
import uuid
import webbrowser
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol, Self
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from joserfc import jwt
from joserfc.jwk import RSAKey

from conformance.errors import ConfigurationError, ConformanceError, TargetUnreachableError
from conformance.live.targets import Target
from conformance.live.tls import httpx_verify, unreachable

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "CLIENT_ASSERTION_TYPE",
    "TOKEN_EXCHANGE",
    "AuthenticationError",
    "OrganisationLogin",
    "ProfessionalLogin",
    "TokenProvider",
    "login_provider",
    "read_p12",
    "unverified_claims",
]

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CALLBACK_PATH = "/callback"
DEFAULT_LIFETIME = 300.0
"""Assumed token lifetime when IAM Connect states none (Keycloak's default)."""

_log = logging.getLogger(__name__)


class AuthenticationError(ConformanceError):
    """IAM Connect refused a login, grant or client authentication; ``error`` is the OAuth code."""

    def __init__(self, message: str, *, error: str | None = None, description: str | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.description = description


class TokenProvider(Protocol):
    """What a client of the Vaccicard API needs: a valid access token and who it names."""

    def access_token(self, *, force_renew: bool = False) -> str:
        """A Vaccicard access token valid for a while yet (a new one with ``force_renew``, e.g. after a 401)."""
        ...

    @property
    def claims(self) -> Mapping[str, Any]:
        """The claims of the current token (``userProfile`` names a professional's NIHDI number)."""
        ...


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, not verified: the client only reads who it is, the API verifies."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


@dataclass(frozen=True)
class _Token:
    access: str
    expires_at: float
    claims: Mapping[str, Any]


class _IamClient(ABC):
    """Discovery, token-endpoint calls with error translation, and the cached token (thread-safe)."""

    def __init__(
        self,
        target: Target,
        *,
        renew_margin: float,
        leeway: float,
        clock: Callable[[], float],
        http: httpx.Client | None,
    ) -> None:
        self.target = target
        self.renew_margin = renew_margin
        self.leeway = leeway
        self.clock = clock
        self._own_http = http is None
        self.http = http or httpx.Client(
            verify=httpx_verify(target), timeout=target.timeout, follow_redirects=False
        )
        self._discovery: dict[str, Any] | None = None
        self._token: _Token | None = None
        self._lock = threading.RLock()

    # --- the TokenProvider protocol ---------------------------------------------------------------

    def access_token(self, *, force_renew: bool = False) -> str:
        """A Vaccicard access token, renewed when (nearly) expired or when ``force_renew``."""
        with self._lock:
            token = self._token
            if force_renew or token is None or self.clock() >= token.expires_at:
                token = self._token = self._renew()
            return token.access

    @property
    def claims(self) -> Mapping[str, Any]:
        """The claims of the current token (obtaining one first if needed)."""
        self.access_token()
        with self._lock:
            assert self._token is not None
            return self._token.claims

    def close(self) -> None:
        """Close the HTTP connections (only those this client opened)."""
        if self._own_http:
            self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @abstractmethod
    def _renew(self) -> _Token:
        """Obtain a new Vaccicard token (called with the lock held)."""

    # --- HTTP -------------------------------------------------------------------------------------

    def endpoints(self) -> Mapping[str, Any]:
        """The realm's OpenID configuration (fetched once)."""
        if self._discovery is None:
            url = self.target.issuer + "/.well-known/openid-configuration"
            answer = self._send("GET", url, "IAM Connect discovery")
            if answer.status_code == 404:
                raise ConfigurationError(
                    f"target {self.target.name}: no IAM Connect realm at {self.target.issuer} "
                    "(discovery answered 404): check iam-realm-url"
                )
            if answer.status_code != 200:
                raise TargetUnreachableError(
                    f"IAM Connect discovery {url} answered HTTP {answer.status_code}"
                )
            try:
                data = answer.json()
            except ValueError:
                data = None
            if not isinstance(data, dict) or not isinstance(data.get("token_endpoint"), str):
                raise TargetUnreachableError(
                    f"IAM Connect discovery {url} did not answer an OpenID configuration"
                )
            if data.get("issuer") != self.target.issuer:
                _log.warning(
                    "IAM Connect at %s names its issuer %s, not the configured one",
                    self.target.issuer,
                    data.get("issuer"),
                )
            self._discovery = data
        return self._discovery

    def _send(self, method: str, url: str, what: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, url, **kwargs)
        except httpx.TransportError as error:
            raise unreachable(what, url, error, target=self.target.name) from None

    def _grant(self, form: Mapping[str, str], what: str) -> dict[str, Any]:
        """POST ``form`` to the token endpoint; the JSON answer, or the error translated."""
        url = str(self.endpoints()["token_endpoint"])
        answer = self._send("POST", url, f"IAM Connect token endpoint ({what})", data=dict(form))
        try:
            body = answer.json()
        except ValueError:
            body = None
        if answer.status_code >= 500 or (answer.status_code != 200 and not isinstance(body, dict)):
            raise TargetUnreachableError(
                f"IAM Connect token endpoint {url} answered HTTP {answer.status_code} to the {what}"
            )
        if answer.status_code != 200:
            assert isinstance(body, dict)
            error = str(body.get("error") or f"HTTP {answer.status_code}")
            description = str(body.get("error_description") or "")
            raise AuthenticationError(
                f"IAM Connect refused the {what} ({error}){': ' + description if description else ''}",
                error=error,
                description=description,
            )
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise TargetUnreachableError(f"IAM Connect token endpoint {url} answered no access token")
        return body

    def _token_from(self, body: Mapping[str, Any]) -> _Token:
        """Cache entry for a token answer: expiry from ``expires_in`` on the local clock."""
        access = str(body["access_token"])
        claims = unverified_claims(access)
        lifetime = _lifetime(body, claims, self.leeway)
        margin = min(self.renew_margin, lifetime / 2)
        _log.info("IAM Connect: token for target %s obtained, valid %.0f s", self.target.name, lifetime)
        return _Token(access, self.clock() + lifetime - margin, claims)


class ProfessionalLogin(_IamClient):
    """Log a professional in through the browser (PKCE S256), then exchange for a Vaccicard token."""

    def __init__(
        self,
        target: Target,
        *,
        open_browser: Callable[[str], object] = webbrowser.open,
        login_timeout: float = 300.0,
        renew_margin: float = 30.0,
        leeway: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        http: httpx.Client | None = None,
    ) -> None:
        """``open_browser`` shows the authorization URL to the user; ``login_timeout`` bounds the wait."""
        if not target.client_id:
            raise ConfigurationError(f"target {target.name}: professional login needs a client-id")
        super().__init__(target, renew_margin=renew_margin, leeway=leeway, clock=clock, http=http)
        self.open_browser = open_browser
        self.login_timeout = login_timeout
        self._refresh: tuple[str, float] | None = None  # refresh token, local expiry

    def _renew(self) -> _Token:
        subject = self._refreshed() or self._login()
        refresh = subject.get("refresh_token")
        if isinstance(refresh, str):
            lifetime = subject.get("refresh_expires_in")
            expires = (
                self.clock() + float(lifetime) - self.renew_margin if _positive(lifetime) else float("inf")
            )
            self._refresh = (refresh, expires)
        else:
            self._refresh = None
        return self._exchange(str(subject["access_token"]))

    def _refreshed(self) -> dict[str, Any] | None:
        if self._refresh is None or self.clock() >= self._refresh[1]:
            return None
        try:
            return self._grant(
                {
                    "grant_type": "refresh_token",
                    "refresh_token": self._refresh[0],
                    "client_id": str(self.target.client_id),
                },
                "session refresh",
            )
        except AuthenticationError as error:
            _log.info("IAM Connect session ended (%s): logging in again", error.error)
            self._refresh = None
            return None

    def _login(self) -> dict[str, Any]:
        """Authorization code + PKCE S256 through the browser; the token endpoint's answer."""
        endpoints = self.endpoints()
        verifier = secrets.token_urlsafe(64)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state = secrets.token_urlsafe(24)
        with _RedirectListener(self.target.redirect_port, state) as listener:
            params = {
                "client_id": str(self.target.client_id),
                "redirect_uri": listener.redirect_uri,
                "response_type": "code",
                "scope": "openid profile",
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
            if self.target.login_hint:
                params["login_hint"] = self.target.login_hint
            url = f"{endpoints['authorization_endpoint']}?{urlencode(params)}"
            _log.info("IAM Connect: opening the browser to log in; if it does not open, visit %s", url)
            self.open_browser(url)
            answer = listener.wait(self.login_timeout)
        if "error" in answer:
            error, description = answer["error"], answer.get("error_description", "")
            raise AuthenticationError(
                f"IAM Connect refused the login ({error}){': ' + description if description else ''}",
                error=error,
                description=description,
            )
        if not answer.get("code"):
            raise AuthenticationError("IAM Connect answered the login without an authorization code")
        return self._grant(
            {
                "grant_type": "authorization_code",
                "code": answer["code"],
                "redirect_uri": listener.redirect_uri,
                "client_id": str(self.target.client_id),
                "code_verifier": verifier,
            },
            "authorization code",
        )

    def _exchange(self, subject_token: str) -> _Token:
        body = self._grant(
            {
                "grant_type": TOKEN_EXCHANGE,
                "subject_token": subject_token,
                "subject_token_type": ACCESS_TOKEN_TYPE,
                "audience": self.target.audience,
                "client_id": str(self.target.client_id),
            },
            "token exchange",
        )
        return self._token_from(body)


class OrganisationLogin(_IamClient):
    """Authenticate an organisation (realm ``M2M``) with ``private_key_jwt`` from its ``.p12``."""

    def __init__(
        self,
        target: Target,
        *,
        env: Mapping[str, str] | None = None,
        assertion_lifetime: float = 60.0,
        renew_margin: float = 30.0,
        leeway: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        http: httpx.Client | None = None,
    ) -> None:
        """Reads the ``.p12`` now (password from ``env``, default ``os.environ``), so a wrong one fails early."""
        target.check()
        assert target.p12_path is not None  # check() insists on it for organisation targets
        password = _p12_password(target, os.environ if env is None else env)
        key, certificate = read_p12(target.p12_path, password)
        client_id = target.client_id or _client_id_from(certificate, target)
        super().__init__(target, renew_margin=renew_margin, leeway=leeway, clock=clock, http=http)
        self.client_id = client_id
        self.assertion_lifetime = assertion_lifetime
        self.wall_clock = wall_clock
        self.certificate = certificate
        self.kid = target.assertion_kid or RSAKey.import_key(key.public_key()).thumbprint()
        self._key = RSAKey.import_key(key, {"kid": self.kid, "alg": "RS256"})

    def client_assertion(self) -> str:
        """A fresh ``private_key_jwt`` client assertion for the realm (RS256, ``kid``, one-time ``jti``)."""
        now = int(self.wall_clock())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.target.issuer,
            "iat": now - int(self.leeway),
            "exp": now + int(self.assertion_lifetime),
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(
            {"alg": "RS256", "typ": "JWT", "kid": self.kid}, claims, self._key, algorithms=["RS256"]
        )

    def _renew(self) -> _Token:
        body = self._grant(
            {
                "grant_type": "client_credentials",
                "client_id": self.client_id,
                "client_assertion_type": CLIENT_ASSERTION_TYPE,
                "client_assertion": self.client_assertion(),
            },
            f"client authentication of {self.client_id}",
        )
        return self._token_from(body)


def login_provider(target: Target, **options: Any) -> ProfessionalLogin | OrganisationLogin:
    """The token provider the target's ``auth_mode`` calls for (``options`` go to its constructor)."""
    if target.auth_mode == "organisation":
        return OrganisationLogin(target, **options)
    return ProfessionalLogin(target, **options)


def read_p12(path: Path, password: bytes | None) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """The RSA key and certificate of a ``.p12``; ConfigurationError naming the file when it cannot be used."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        bundle = pkcs12.load_pkcs12(data, password)
    except ValueError:
        raise ConfigurationError(f"cannot open {path}: wrong password? (or not a PKCS#12 file)") from None
    key = bundle.key
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError(f"{path} holds no RSA private key (eHealth certificates are RSA)")
    certificate = bundle.cert.certificate if bundle.cert is not None else None
    if certificate is None or certificate.public_key() != key.public_key():
        raise ConfigurationError(f"{path} holds no certificate for its private key")
    now = datetime.now(UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise ConfigurationError(
            f"the certificate in {path} is valid from {certificate.not_valid_before_utc:%Y-%m-%d} "
            f"to {certificate.not_valid_after_utc:%Y-%m-%d}, not now: renew it with eHealth"
        )
    return key, certificate


# --- the one-shot redirect listener -------------------------------------------------------------------


class _RedirectListener:
    """Listens on 127.0.0.1 for the one login callback carrying ``state`` (others get an error page)."""

    def __init__(self, port: int, state: str) -> None:
        self.state = state
        self.answer: dict[str, str] | None = None
        self._done = threading.Event()
        try:
            self._server = _CallbackServer(("127.0.0.1", port), self)
        except OSError as error:
            raise ConfigurationError(
                f"cannot listen for the login answer on 127.0.0.1:{port}: {error.strerror or error} "
                "(set redirect-port to a free port registered for the client, or 0)"
            ) from None
        self.redirect_uri = f"http://127.0.0.1:{self._server.server_address[1]}{CALLBACK_PATH}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )

    def __enter__(self) -> _RedirectListener:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def accept(self, query: str) -> bool:
        """Take the callback if its ``state`` is ours (first one only); whether it was taken."""
        values = {name: items[0] for name, items in parse_qs(query, keep_blank_values=True).items()}
        if self._done.is_set() or values.get("state") != self.state:
            return False
        self.answer = values
        self._done.set()
        return True

    def wait(self, timeout: float) -> dict[str, str]:
        """The callback's parameters; AuthenticationError when none came within ``timeout`` seconds."""
        if not self._done.wait(timeout) or self.answer is None:
            raise AuthenticationError(
                f"no login answer within {timeout:g} s: the login in the browser was not completed "
                f"(it must end by returning to {self.redirect_uri})"
            )
        return self.answer


class _CallbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], listener: _RedirectListener) -> None:
        self.listener = listener
        super().__init__(address, _CallbackHandler)

    def server_bind(self) -> None:
        # skip HTTPServer's reverse DNS look-up of the address
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", int(self.server_address[1])


class _CallbackHandler(BaseHTTPRequestHandler):
    server: _CallbackServer
    timeout = 10

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != CALLBACK_PATH:
            self._page(404, "Not found", "This address only receives the IAM Connect login answer.")
        elif self.server.listener.accept(parts.query):
            self._page(
                200, "Login complete", "You can close this window and return to vaccicard-conformance."
            )
        else:
            self._page(
                400,
                "Unexpected login answer",
                "This answer does not belong to the login in progress (or one was already received).",
            )

    def _page(self, status: int, title: str, text: str) -> None:
        body = (
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"</head><body><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p></body></html>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Never log request lines: the callback's query carries the authorization code."""


# --- helpers -------------------------------------------------------------------------------------------


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _lifetime(body: Mapping[str, Any], claims: Mapping[str, Any], leeway: float) -> float:
    """Seconds the token lives: ``expires_in``, else ``exp`` against the wall clock (less leeway)."""
    if _positive(body.get("expires_in")):
        return float(body["expires_in"])
    if _positive(claims.get("exp")):
        return max(float(claims["exp"]) - time.time() - leeway, 0.0)
    return DEFAULT_LIFETIME


def _p12_password(target: Target, env: Mapping[str, str]) -> bytes | None:
    name = target.p12_password_env
    if name is None:
        return None
    value = env.get(name)
    if value is None:
        raise ConfigurationError(
            f"target {target.name}: the password of {target.p12_path} is read from the environment "
            f"variable {name}, which is not set"
        )
    return value.encode("utf-8")


def _client_id_from(certificate: x509.Certificate, target: Target) -> str:
    """``cbe-<CBE>`` from an eHealth certificate subject naming ``CBE=<number>``."""
    for attribute in certificate.subject:
        if attribute.oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME):
            value = str(attribute.value)
            if value.upper().startswith("CBE="):
                return "cbe-" + value[4:].strip()
    raise ConfigurationError(
        f"target {target.name}: the certificate in {target.p12_path} names no CBE number: set client-id"
    )
