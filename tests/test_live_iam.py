"""The live IAM Connect client against the simulator served over HTTPS with a throw-away CA.

Nothing here is specific to the simulator: the same ``ProfessionalLogin``/``OrganisationLogin`` code
runs against eHealth's acceptance IAM Connect. The test plays the user: its ``open_browser`` follows
the authorization URL (the simulator logs the ``login_hint`` professional in at once) back to the
one-shot listener. Everything talks to 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from conformance.errors import EXIT_UNREACHABLE, ConfigurationError, TargetUnreachableError
from conformance.live.iam import AuthenticationError, OrganisationLogin, ProfessionalLogin, login_provider
from conformance.live.targets import Target
from conformance.simulator.app import Simulator
from conformance.simulator.http import HttpRequest, HttpResponse, json_response
from conformance.simulator.server import SimulatorServer

PHYSICIAN_SSIN = "75040201177"
PHYSICIAN_NIHII = "10000106003"
ORGANISATION = "cbe-0987654394"
P12_PASSWORD = "correct horse battery staple"
PASSWORD_ENV = "TEST_VACCICARD_P12_PASSWORD"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


# --- a throw-away PKI ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A CA, a valid and an expired server certificate for 127.0.0.1, and an unrelated CA (PEM files)."""

    ca_file: Path
    other_ca_file: Path
    server: ssl.SSLContext
    expired_server: ssl.SSLContext


def make_ca(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA (EC P-256: quick to generate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def server_context(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], folder: Path, name: str, *, expired: bool = False
) -> ssl.SSLContext:
    """A server ``SSLContext`` with a certificate for 127.0.0.1 issued by ``ca`` (expired if asked)."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    start, end = (now - dt.timedelta(days=10), now - dt.timedelta(days=1)) if expired else (now, now)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - dt.timedelta(minutes=5))
        .not_valid_after(end if expired else now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = folder / f"{name}.crt.pem", folder / f"{name}.key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


def make_pki(folder: Path) -> Pki:
    """A fresh throw-away PKI in ``folder``."""
    ca, other = make_ca("Test CA"), make_ca("Some other CA")
    ca_file, other_file = folder / "ca.pem", folder / "other-ca.pem"
    ca_file.write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    other_file.write_bytes(other[1].public_bytes(serialization.Encoding.PEM))
    return Pki(
        ca_file=ca_file,
        other_ca_file=other_file,
        server=server_context(ca, folder, "server"),
        expired_server=server_context(ca, folder, "expired", expired=True),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def https_server(pki: Pki, simulator_validator: Any, simulator_keys: Any) -> Iterator[SimulatorServer]:
    """The simulator over HTTPS on an ephemeral 127.0.0.1 port (shared by this module's tests)."""
    simulator = Simulator(simulator_validator, keys=simulator_keys)
    try:
        with SimulatorServer(simulator, ssl_context=pki.server) as server:
            yield server
    finally:
        simulator.close()


@pytest.fixture
def https_simulator(https_server: SimulatorServer) -> Simulator:
    simulator: Simulator = https_server.simulator  # type: ignore[assignment]
    simulator.reset()
    return simulator


def professional_target(base_url: str, ca_file: Path | None, **changes: Any) -> Target:
    """The target a vendor would configure for the simulator at ``base_url`` (realm healthcare)."""
    target = Target(
        name="test",
        fhir_base_url=base_url + "/fhir",
        iam_realm_url=base_url + "/auth/realms/healthcare",
        client_id="vendor-software",
        environment="simulator",
        ca_bundle=ca_file,
        login_hint=PHYSICIAN_SSIN,
        connect_timeout=5,
        read_timeout=10,
    )
    return replace(target, **changes)


def organisation_target(base_url: str, ca_file: Path | None, p12: Path, **changes: Any) -> Target:
    """The target of an organisation (realm M2M) with its ``.p12``."""
    settings: dict[str, Any] = {
        "iam_realm_url": base_url + "/auth/realms/M2M",
        "auth_mode": "organisation",
        "client_id": None,
        "login_hint": None,
        "p12_path": p12,
        "p12_password_env": PASSWORD_ENV,
    }
    return professional_target(base_url, ca_file, **{**settings, **changes})


def browser(ca_file: Path | None, opened: list[str] | None = None) -> Callable[[str], None]:
    """What the user does: open the authorization URL, log in (login_hint), land on the listener."""

    def open_browser(url: str) -> None:
        if opened is not None:
            opened.append(url)
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        with httpx.Client(verify=verify, follow_redirects=True, timeout=10) as user:
            page = user.get(url)
        assert page.status_code == 200, page.text
        assert "close this window" in page.text

    return open_browser


class FakeClock:
    """A monotonic clock the test moves forward."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def p12_file(simulator_keys: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The organisation's eHealth certificate and key as a password-protected ``.p12``."""
    credential = simulator_keys.organisations[ORGANISATION]
    path = tmp_path_factory.mktemp("p12") / f"{ORGANISATION}.p12"
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"authentication",
            credential.private_key,
            credential.certificate,
            None,
            serialization.BestAvailableEncryption(P12_PASSWORD.encode()),
        )
    )
    return path


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- professional login -------------------------------------------------------------------------------


def test_professional_login_over_https_with_token_exchange(https_simulator: Simulator, pki: Pki) -> None:
    opened: list[str] = []
    target = professional_target(https_simulator.base_url, pki.ca_file)
    with ProfessionalLogin(target, open_browser=browser(pki.ca_file, opened)) as login:
        token = login.access_token()
        principal = https_simulator.iam.verify_access_token(token, "vaccicard-api")
        assert principal.kind == "professional" and principal.nihii11 == PHYSICIAN_NIHII
        assert login.claims["userProfile"]["physician"]["nihii11"] == PHYSICIAN_NIHII
        assert login.access_token() == token  # cached
    [url] = opened
    assert "code_challenge_method=S256" in url and "login_hint=" + PHYSICIAN_SSIN in url
    assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A" in url
    # the token works on the FHIR API, over the same TLS trust
    with httpx.Client(verify=ssl.create_default_context(cafile=str(pki.ca_file))) as http:
        answer = http.get(
            https_simulator.fhir_base_url + "/Immunization",
            params={"identifier": "https://example.org|x"},
            headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"},
        )
    assert answer.status_code == 200, answer.text
    grants = [e.request_body for e in https_simulator.traffic.exchanges(operation="token")]
    assert [_grant(body) for body in grants] == [
        "authorization_code",
        "urn:ietf:params:oauth:grant-type:token-exchange",
    ]


def test_professional_token_is_renewed_with_the_refresh_token(https_simulator: Simulator, pki: Pki) -> None:
    clock, opened = FakeClock(), []
    target = professional_target(https_simulator.base_url, pki.ca_file)
    with ProfessionalLogin(target, open_browser=browser(pki.ca_file, opened), clock=clock) as login:
        first = login.access_token()
        clock.now += 200
        assert login.access_token() == first  # 300 s token, renewed 30 s before it expires
        clock.now += 71
        second = login.access_token()
        assert second != first
        https_simulator.iam.verify_access_token(second, "vaccicard-api")
        third = login.access_token(force_renew=True)  # what a client does after a 401
        assert third not in (first, second)
    assert len(opened) == 1  # the browser was needed only once
    grants = [_grant(e.request_body) for e in https_simulator.traffic.exchanges(operation="token")]
    assert grants.count("refresh_token") == 2 and grants.count("authorization_code") == 1


def test_callback_with_another_state_is_refused_and_the_login_goes_on(
    https_simulator: Simulator, pki: Pki
) -> None:
    def confused_user(url: str) -> None:
        redirect = re.search(r"redirect_uri=([^&]+)", url)
        assert redirect is not None
        callback = httpx.URL(httpx.QueryParams(f"u={redirect.group(1)}")["u"])
        stray = httpx.get(str(callback), params={"state": "forged", "code": "stolen"})
        assert stray.status_code == 400 and "does not belong" in stray.text
        assert httpx.get(str(callback.copy_with(path="/favicon.ico"))).status_code == 404
        browser(pki.ca_file)(url)

    target = professional_target(https_simulator.base_url, pki.ca_file)
    with ProfessionalLogin(target, open_browser=confused_user) as login:
        assert login.claims["ssin"] == PHYSICIAN_SSIN


def test_login_not_completed_times_out_clearly(https_simulator: Simulator, pki: Pki) -> None:
    target = professional_target(https_simulator.base_url, pki.ca_file)
    with (
        ProfessionalLogin(target, open_browser=lambda url: None, login_timeout=0.2) as login,
        pytest.raises(AuthenticationError, match=r"no login answer within 0.2 s.*127\.0\.0\.1"),
    ):
        login.access_token()


def test_login_cancelled_by_the_user(https_simulator: Simulator, pki: Pki) -> None:
    def cancel(url: str) -> None:
        query = httpx.URL(url).params
        httpx.get(
            query["redirect_uri"],
            params={"state": query["state"], "error": "access_denied", "error_description": "User cancelled"},
        )

    target = professional_target(https_simulator.base_url, pki.ca_file)
    with (
        ProfessionalLogin(target, open_browser=cancel) as login,
        pytest.raises(AuthenticationError, match=r"access_denied.*User cancelled") as caught,
    ):
        login.access_token()
    assert caught.value.error == "access_denied"


def test_refused_token_exchange_carries_the_oauth_description(https_simulator: Simulator, pki: Pki) -> None:
    target = professional_target(https_simulator.base_url, pki.ca_file, audience="not-the-register")
    with (
        ProfessionalLogin(target, open_browser=browser(pki.ca_file)) as login,
        pytest.raises(AuthenticationError, match=r"token exchange.*Audience not found") as caught,
    ):
        login.access_token()
    assert caught.value.error == "invalid_client" and caught.value.exit_code == 2


# --- organisation (M2M) login -------------------------------------------------------------------------


def test_organisation_login_with_private_key_jwt_from_a_p12(
    https_simulator: Simulator, pki: Pki, p12_file: Path
) -> None:
    clock = FakeClock()
    target = organisation_target(https_simulator.base_url, pki.ca_file, p12_file)
    login = login_provider(target, env={PASSWORD_ENV: P12_PASSWORD}, clock=clock)
    assert isinstance(login, OrganisationLogin)
    with login:
        assert login.client_id == ORGANISATION  # from the certificate's CBE
        assert login.kid == https_simulator.keys.organisations[ORGANISATION].kid
        token = login.access_token()
        principal = https_simulator.iam.verify_access_token(token, "vaccicard-api")
        assert principal.kind == "organisation" and principal.cbe == "0987654394"
        assert login.claims["cbe"] == "0987654394"
        clock.now += 271
        renewed = login.access_token()  # a new assertion (new jti) each time
        assert renewed != token
    assert [_grant(e.request_body) for e in https_simulator.traffic.exchanges(operation="token")] == [
        "client_credentials",
        "client_credentials",
    ]


def test_wrong_p12_password_is_a_configuration_error(pki: Pki, p12_file: Path) -> None:
    target = organisation_target("https://127.0.0.1:1", pki.ca_file, p12_file)
    with pytest.raises(
        ConfigurationError, match=rf"cannot open {re.escape(str(p12_file))}: wrong password\?"
    ):
        OrganisationLogin(target, env={PASSWORD_ENV: "wrong"})
    with pytest.raises(ConfigurationError, match=f"environment variable {PASSWORD_ENV}, which is not set"):
        OrganisationLogin(target, env={})
    with pytest.raises(ConfigurationError, match="certificate file not found"):
        OrganisationLogin(replace(target, p12_path=p12_file.with_name("missing.p12")), env={})


def test_unregistered_certificate_is_refused_with_the_oauth_description(
    https_simulator: Simulator, pki: Pki, tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CBE=0987654394")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    p12 = tmp_path / "impostor.p12"
    p12.write_bytes(
        pkcs12.serialize_key_and_certificates(b"x", key, cert, None, serialization.NoEncryption())
    )
    target = organisation_target(https_simulator.base_url, pki.ca_file, p12, p12_password_env=None)
    with OrganisationLogin(target) as login, pytest.raises(AuthenticationError) as caught:
        login.access_token()
    assert caught.value.error == "invalid_client"
    assert "kid does not match" in caught.value.message


# --- failures: TLS, unreachable, token endpoint down ----------------------------------------------------


def test_untrusted_ca_is_target_unreachable_with_advice(https_simulator: Simulator, pki: Pki) -> None:
    target = professional_target(https_simulator.base_url, pki.other_ca_file)
    with (
        ProfessionalLogin(target, open_browser=browser(pki.ca_file)) as login,
        pytest.raises(TargetUnreachableError) as caught,
    ):
        login.access_token()
    message = caught.value.message
    assert caught.value.exit_code == EXIT_UNREACHABLE == 3
    assert "TLS certificate could not be verified" in message and "ca-bundle" in message
    assert https_simulator.base_url in message and "[target.test]" in message


def test_expired_server_certificate_is_target_unreachable(
    pki: Pki, simulator_validator: Any, simulator_keys: Any
) -> None:
    simulator = Simulator(simulator_validator, keys=simulator_keys)
    try:
        with SimulatorServer(simulator, ssl_context=pki.expired_server) as server:
            target = professional_target(server.base_url, pki.ca_file)
            with ProfessionalLogin(target) as login, pytest.raises(TargetUnreachableError) as caught:
                login.access_token()
    finally:
        simulator.close()
    assert caught.value.exit_code == 3
    assert "could not be verified (certificate has expired)" in caught.value.message


def test_unreachable_iam_names_the_url() -> None:
    base = f"http://127.0.0.1:{closed_port()}"
    target = professional_target(base, None, connect_timeout=2)
    with ProfessionalLogin(target) as login, pytest.raises(TargetUnreachableError) as caught:
        login.access_token()
    assert caught.value.exit_code == 3
    assert (
        f"unreachable at {base}/auth/realms/healthcare/.well-known/openid-configuration"
        in caught.value.message
    )


def test_unknown_realm_is_a_configuration_error(https_simulator: Simulator, pki: Pki) -> None:
    target = professional_target(
        https_simulator.base_url, pki.ca_file, iam_realm_url=https_simulator.base_url + "/auth/realms/nope"
    )
    with ProfessionalLogin(target) as login, pytest.raises(ConfigurationError, match="check iam-realm-url"):
        login.access_token()


class TokenEndpointDown:
    """The simulator, except that its token endpoints answer 503 (a core wrapper, as a server sees it)."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        self.max_body_bytes = simulator.max_body_bytes

    def attach(self, base_url: str) -> None:
        self.simulator.attach(base_url)

    def handle(self, request: HttpRequest) -> HttpResponse:
        if request.path.endswith("/protocol/openid-connect/token"):
            return json_response(503, {"error": "temporarily_unavailable"})
        return self.simulator.handle(request)

    def reject(self, request: HttpRequest, status: int, code: str, diagnostics: str) -> HttpResponse:
        return self.simulator.reject(request, status, code, diagnostics)


def test_token_endpoint_down_is_target_unreachable(
    simulator_validator: Any, simulator_keys: Any, p12_file: Path
) -> None:
    env = {PASSWORD_ENV: P12_PASSWORD}
    simulator = Simulator(simulator_validator, keys=simulator_keys)
    try:
        with SimulatorServer(TokenEndpointDown(simulator)) as server:
            target = organisation_target(server.base_url, None, p12_file)
            with OrganisationLogin(target, env=env) as login, pytest.raises(TargetUnreachableError) as caught:
                login.access_token()
        assert caught.value.exit_code == 3
        assert "token endpoint" in caught.value.message and "HTTP 503" in caught.value.message

        # a token endpoint that stops answering at all (connection refused) after discovery
        with SimulatorServer(simulator) as server:
            target = organisation_target(server.base_url, None, p12_file)
            login = OrganisationLogin(target, env=env)
            login.access_token()
        with login, pytest.raises(TargetUnreachableError, match=r"token endpoint.*unreachable at"):
            login.access_token(force_renew=True)
    finally:
        simulator.close()


# --- secrets stay out of the logs ---------------------------------------------------------------------


def test_no_secret_reaches_the_log(
    https_simulator: Simulator, pki: Pki, p12_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secrets: list[str] = [P12_PASSWORD]

    def keep_secrets(response: httpx.Response) -> None:
        response.read()
        if response.request.url.path.endswith("/token"):
            form = httpx.QueryParams(response.request.content.decode())
            secrets.extend(v for k in ("client_assertion", "code_verifier", "code") if (v := form.get(k)))
            if response.status_code == 200:
                secrets.extend(str(v) for k, v in response.json().items() if k.endswith("token"))

    verify = ssl.create_default_context(cafile=str(pki.ca_file))
    caplog.set_level(logging.DEBUG)
    with httpx.Client(verify=verify, event_hooks={"response": [keep_secrets]}) as http:
        professional = professional_target(https_simulator.base_url, pki.ca_file)
        organisation = organisation_target(https_simulator.base_url, pki.ca_file, p12_file)
        with ProfessionalLogin(professional, open_browser=browser(pki.ca_file), http=http) as login:
            login.access_token()
            login.access_token(force_renew=True)
        with OrganisationLogin(organisation, env={PASSWORD_ENV: P12_PASSWORD}, http=http) as login:
            login.access_token()
    assert len(secrets) >= 8  # password, code, verifier, tokens, assertion
    library_log = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("conformance"))
    assert "IAM Connect: token for target test obtained" in library_log
    for secret in secrets:
        assert secret not in library_log
    assert not JWT.search(library_log)
    for record in caplog.records:
        if record.name.startswith("httpx"):  # httpx logs URLs: no token or assertion is ever in one
            assert not JWT.search(record.getMessage())


def _grant(body: Any) -> str | None:
    text = body.decode() if isinstance(body, bytes) else str(body)
    return httpx.QueryParams(text).get("grant_type")
