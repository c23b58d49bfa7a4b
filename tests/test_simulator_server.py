"""Tests of the simulator's HTTP adapters (threaded server, ASGI) and of the ``Simulator`` composition.

The transport tests run against a tiny fake core, so they say nothing about FHIR; the composition
tests use the real ``Simulator`` (routing, admin API, traffic capture). Everything talks to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from conformance.errors import ConfigurationError
from conformance.simulator.app import Simulator
from conformance.simulator.faults import Fault
from conformance.simulator.http import DropConnection, HttpRequest, HttpResponse, json_response
from conformance.simulator.server import SimulatorServer, asgi_app
from conformance.traffic.recorder import fingerprint

LIMIT = 1000


class FakeCore:
    """A minimal core: echoes requests, drops, sleeps or fails on demand, records rejections."""

    def __init__(self) -> None:
        self.max_body_bytes = LIMIT
        self.base_url: str | None = None
        self.rejected: list[tuple[HttpRequest, int]] = []
        self.handled: list[HttpRequest] = []

    def attach(self, base_url: str) -> None:
        self.base_url = base_url

    def handle(self, request: HttpRequest) -> HttpResponse:
        self.handled.append(request)
        if request.path == "/drop":
            raise DropConnection("test drop")
        if request.path == "/boom":
            raise RuntimeError("secret internals")
        if request.path == "/slow":
            time.sleep(float(request.query.get("s", ["1"])[0]))
        return json_response(
            200,
            {
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "headers": request.headers,
                "body": request.body.decode("latin-1"),
            },
            {"X-Test": "yes"},
        )

    def reject(self, request: HttpRequest, status: int, code: str, diagnostics: str) -> HttpResponse:
        self.rejected.append((request, status))
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
        }
        return json_response(status, outcome, {"Content-Type": "application/fhir+json"})


@pytest.fixture
def core() -> FakeCore:
    return FakeCore()


@pytest.fixture
def server(core: FakeCore) -> Iterator[SimulatorServer]:
    with SimulatorServer(core, port=0, idle_timeout=5) as running:
        yield running


def _raw(server: SimulatorServer, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or times out); returns what came back."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


# --- the threaded server over a fake core -------------------------------------------------------------


def test_translates_request_and_response(server: SimulatorServer, core: FakeCore) -> None:
    assert core.base_url == server.base_url == f"http://127.0.0.1:{server.port}"
    with httpx.Client(base_url=server.base_url) as client:
        response = client.post(
            "/a%2Fb/c", params=[("x", "1"), ("x", "2"), ("y", "")], content=b"hello", headers={"X-Two": "t"}
        )
    assert response.status_code == 200
    assert response.headers["x-test"] == "yes"
    assert response.headers["server"].startswith("VaccicardSimulator")
    seen = response.json()
    assert seen["method"] == "POST"
    assert seen["path"] == "/a%2Fb/c"  # raw: percent-encoding kept, so %2F is no path separator
    assert seen["query"] == {"x": ["1", "2"], "y": [""]}
    assert seen["headers"]["x-two"] == "t"
    assert seen["body"] == "hello"


def test_keep_alive_reuses_the_connection(server: SimulatorServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request("GET", "/one")
        first = connection.getresponse()
        assert first.status == 200 and first.getheader("Connection") is None
        first.read()
        sock = connection.sock
        connection.request("POST", "/two", body=b"x" * 10)
        second = connection.getresponse()
        second.read()
        assert second.status == 200
        assert connection.sock is sock  # no reconnection happened
    finally:
        connection.close()


def test_http_1_0_closes_the_connection(server: SimulatorServer) -> None:
    answer = _raw(server, b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: close" in answer


def test_dropped_connection_is_a_transport_error(server: SimulatorServer, core: FakeCore) -> None:
    with httpx.Client(base_url=server.base_url) as client, pytest.raises(httpx.TransportError):
        client.post("/drop", content=b"{}")
    assert [r.path for r in core.handled] == ["/drop"]
    # on a raw socket: not a single byte comes back, the connection is reset
    assert _raw(server, b"GET /drop HTTP/1.1\r\nHost: x\r\n\r\n") == b""


def test_server_keeps_serving_after_a_drop(server: SimulatorServer) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        with pytest.raises(httpx.TransportError):
            client.get("/drop")
        assert client.get("/after").status_code == 200


def test_body_over_the_limit_is_refused_unread(server: SimulatorServer, core: FakeCore) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        response = client.post("/big", content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert response.json()["issue"][0]["code"] == "too-costly"
    assert response.headers["connection"] == "close"
    assert core.handled == []  # the core never saw it
    assert [status for _, status in core.rejected] == [413]
    with httpx.Client(base_url=server.base_url) as client:
        assert client.post("/fits", content=b"x" * LIMIT).status_code == 200


def test_chunked_bodies_are_read_and_limited(server: SimulatorServer, core: FakeCore) -> None:
    def chunks(count: int) -> Iterator[bytes]:
        for _ in range(count):
            yield b"y" * 100

    with httpx.Client(base_url=server.base_url) as client:
        small = client.post("/chunked", content=chunks(3))
        assert small.status_code == 200 and small.json()["body"] == "y" * 300
        assert client.post("/chunked", content=chunks(20)).status_code == 413


def test_huge_body_is_not_read_forever(server: SimulatorServer) -> None:
    """50 MB announced and sent: the server answers 413 and stops reading after a bounded drain."""
    started = time.monotonic()
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            status = client.post("/huge", content=b"z" * (50 * 1024 * 1024)).status_code
    except httpx.TransportError:
        status = None  # the server closed before the client finished sending: also a refusal
    assert status in (413, None)
    assert time.monotonic() - started < 8


def test_expect_100_continue_is_refused_before_the_body(server: SimulatorServer) -> None:
    head = b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\nExpect: 100-continue\r\n\r\n"
    answer = _raw(server, head)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in answer


def test_malformed_requests_get_an_operation_outcome(server: SimulatorServer) -> None:
    answer = _raw(server, b"NONSENSE\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    _, _, body = answer.partition(b"\r\n\r\n")
    assert json.loads(body)["resourceType"] == "OperationOutcome"
    answer = _raw(server, b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    smuggle = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert _raw(server, smuggle).startswith(b"HTTP/1.1 400 ")
    assert _raw(server, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 414 ")


def test_core_failure_is_a_500_without_stack_trace(server: SimulatorServer) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "Traceback" not in response.text and "secret internals" not in response.text


def test_a_slow_request_does_not_block_others(server: SimulatorServer) -> None:
    results: dict[str, float] = {}

    def slow() -> None:
        with httpx.Client(base_url=server.base_url) as client:
            client.get("/slow", params={"s": "1.5"})
        results["slow"] = time.monotonic()

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.2)
    with httpx.Client(base_url=server.base_url) as client:
        assert client.get("/fast").status_code == 200
    results["fast"] = time.monotonic()
    thread.join()
    assert results["fast"] < results["slow"]


def test_stop_closes_idle_keep_alive_connections(core: FakeCore) -> None:
    server = SimulatorServer(core).start()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        server.stop()
        server.stop()  # idempotent
        assert time.monotonic() - started < 3
        assert sock.recv(10) == b""  # the server closed it
    finally:
        sock.close()
    with pytest.raises(httpx.TransportError):
        httpx.get(server.base_url + "/x", timeout=2)


def test_port_in_use_is_a_configuration_error(server: SimulatorServer, core: FakeCore) -> None:
    with pytest.raises(ConfigurationError, match="address already in use"):
        SimulatorServer(core, port=server.port)


def test_tls(core: FakeCore, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)
    client_context = ssl.create_default_context(cafile=str(cert_file))
    with SimulatorServer(core, ssl_context=server_context) as server:
        assert server.base_url.startswith("https://127.0.0.1:")
        # a client that fails the handshake does not disturb the server
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as plain:
            plain.sendall(b"GET / HTTP/1.1\r\n\r\n")
            with pytest.raises(OSError):
                if not plain.recv(100):
                    raise ConnectionResetError
        with httpx.Client(base_url=server.base_url, verify=client_context) as client:
            assert client.get("/secure").json()["path"] == "/secure"
            with pytest.raises(httpx.TransportError):
                client.get("/drop")


# --- the ASGI application over the fake core ----------------------------------------------------------


def _asgi(core: Any, *calls: tuple[str, str, bytes]) -> list[httpx.Response | Exception]:
    async def main() -> list[httpx.Response | Exception]:
        results: list[httpx.Response | Exception] = []
        transport = httpx.ASGITransport(app=asgi_app(core))
        async with httpx.AsyncClient(transport=transport, base_url="http://simulator") as client:
            for method, url, body in calls:
                try:
                    results.append(await client.request(method, url, content=body))
                except httpx.TransportError as error:
                    results.append(error)
        return results

    return asyncio.run(main())


def test_asgi_app_in_process(core: FakeCore) -> None:
    ok, drop, big, boom = _asgi(
        core,
        ("POST", "/a%2Fb?x=1&x=2", b"body"),
        ("GET", "/drop", b""),
        ("POST", "/big", b"x" * (LIMIT + 1)),
        ("GET", "/boom", b""),
    )
    assert isinstance(ok, httpx.Response) and ok.status_code == 200
    assert ok.json()["path"] == "/a%2Fb" and ok.json()["query"] == {"x": ["1", "2"]}
    assert ok.json()["body"] == "body"
    assert isinstance(drop, httpx.RemoteProtocolError)
    assert isinstance(big, httpx.Response) and big.status_code == 413
    assert isinstance(boom, httpx.Response) and boom.status_code == 500 and "secret" not in boom.text


def test_asgi_lifespan(core: FakeCore) -> None:
    app = asgi_app(core)
    sent: list[dict[str, Any]] = []
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, Any]:
        return next(incoming)

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(app({"type": "lifespan"}, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# --- the Simulator composition (real core) over a running server ----------------------------------------

PHYSICIAN = "75040201177"
CORE_BE = "https://www.ehealth.fgov.be/standards/fhir/core/"
VACC = "https://www.ehealth.fgov.be/standards/fhir/vaccination/"
SSIN_SYSTEM = CORE_BE + "NamingSystem/ssin"
NIHDI_PRO = CORE_BE + "NamingSystem/nihdi-professional"
RECORDER = CORE_BE + "StructureDefinition/be-ext-recorder"
PRODUCT = VACC + "StructureDefinition/be-ext-administeredProduct"
BE_VACCINATION = VACC + "StructureDefinition/be-vaccination"
CNK = "https://www.ehealth.fgov.be/standards/fhir/medication/NamingSystem/be-ns-cnk-codes"
SCT = "http://snomed.info/sct"
VENDOR_IDS = "https://vendor.example.org/vaccinations"

PHYSICIAN_SSIN, PHYSICIAN_NIHDI = PHYSICIAN, "10000106003"  # Luc Exemplaire (test data)
PATIENT = "58032100126"  # Jean Exemple: consent, relationship with the physician
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def immunization(key: str, *, patient: str = PATIENT, nihdi: str = PHYSICIAN_NIHDI) -> dict[str, Any]:
    """A valid BeVaccination record as vendor software sends it (no id: the register assigns one)."""
    return {
        "resourceType": "Immunization",
        "meta": {"profile": [BE_VACCINATION]},
        "extension": [
            {"url": RECORDER, "valueReference": {"identifier": {"system": NIHDI_PRO, "value": nihdi}}},
            {
                "url": PRODUCT,
                "extension": [
                    {
                        "url": "coded",
                        "valueCodeableConcept": {"coding": [{"system": CNK, "code": "1234567"}]},
                    },
                    {"url": "lotNumber", "valueString": "AB1234"},
                ],
            },
        ],
        "identifier": [{"system": VENDOR_IDS, "value": key}],
        "status": "completed",
        "vaccineCode": {"coding": [{"system": SCT, "code": "871717007"}]},
        "patient": {"identifier": {"system": SSIN_SYSTEM, "value": patient}},
        "occurrenceDateTime": "2026-01-20T10:00:00+01:00",
        "recorded": "2026-01-20T10:05:00+01:00",
        "performer": [{"actor": {"identifier": {"system": NIHDI_PRO, "value": nihdi}}}],
    }


def _admin(simulator: Simulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {simulator.admin_token}"}


def test_routes_to_iam_fhir_and_404(simulator: Simulator) -> None:
    assert simulator.base_url.startswith("http://127.0.0.1:")
    assert simulator.iam.issuer("healthcare") == simulator.base_url + "/auth/realms/healthcare"
    with httpx.Client(base_url=simulator.base_url) as client:
        discovery = client.get("/auth/realms/healthcare/.well-known/openid-configuration")
        assert discovery.status_code == 200
        assert discovery.json()["token_endpoint"] == simulator.token_endpoint()
        metadata = client.get("/fhir/metadata")
        assert metadata.status_code == 200 and metadata.json()["resourceType"] == "CapabilityStatement"
        for path in ("/", "/nowhere", "/fhirish", "/auth", "/auth/other"):
            missing = client.get(path)
            assert missing.status_code == 404, path
            assert missing.json()["resourceType"] == "OperationOutcome"
        assert client.get("/fhir/Immunization").status_code == 401


def test_every_exchange_is_recorded_with_tokens_masked(simulator: Simulator) -> None:
    token = simulator.iam.issue_professional_token(PHYSICIAN)
    with httpx.Client(base_url=simulator.base_url) as client:
        client.get("/auth/realms/healthcare/protocol/openid-connect/certs")
        client.post(
            "/auth/realms/healthcare/protocol/openid-connect/token",
            data={"grant_type": "refresh_token", "client_id": "vendor-software", "refresh_token": token},
        )
        client.get(
            "/fhir/Immunization", params={"status": "completed"}, headers={"Authorization": f"Bearer {token}"}
        )
        client.get("/nowhere")
        client.post("/fhir/Immunization", content=b"x" * (simulator.max_body_bytes + 1))
        client.get("/admin/health", headers=_admin(simulator))  # the control channel is not recorded
    exchanges = simulator.traffic.exchanges()
    assert [(e.method, e.path, e.response_status) for e in exchanges] == [
        ("GET", "/auth/realms/healthcare/protocol/openid-connect/certs", 200),
        ("POST", "/auth/realms/healthcare/protocol/openid-connect/token", 400),
        ("GET", "/fhir/Immunization", 200),
        ("GET", "/nowhere", 404),
        ("POST", "/fhir/Immunization", 413),
    ]
    search = exchanges[2]
    assert search.operation == "search" and search.subject
    assert search.url == simulator.base_url + "/fhir/Immunization?status=completed"
    assert search.request_header("authorization") == f"Bearer {fingerprint(token)}"
    assert search.duration_ms > 0 and search.response_json["resourceType"] == "Bundle"
    assert "refresh_token=" + fingerprint(token) in exchanges[1].request_body.decode()
    assert exchanges[4].error and "exceeds the limit" in exchanges[4].error
    dump = json.dumps([e.to_json() for e in exchanges])
    assert token not in dump and simulator.admin_token not in dump


def test_dropped_connection_is_recorded(simulator: Simulator) -> None:
    simulator.faults.add(Fault.reset(), "search")
    token = simulator.iam.issue_professional_token(PHYSICIAN)
    with httpx.Client(base_url=simulator.base_url) as client, pytest.raises(httpx.TransportError):
        client.get("/fhir/Immunization", headers={"Authorization": f"Bearer {token}"})
    [exchange] = simulator.traffic.exchanges()
    assert exchange.response_status is None
    assert exchange.error and "connection dropped" in exchange.error
    assert exchange.tags.get("fault") == "reset"


def test_admin_api_needs_its_own_token(simulator: Simulator) -> None:
    professional = simulator.iam.issue_professional_token(PHYSICIAN)
    with httpx.Client(base_url=simulator.base_url) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {professional}"}):
            answer = client.get("/admin/health", headers=headers)
            assert answer.status_code == 401
            assert answer.headers["www-authenticate"].startswith("Bearer")
        health = client.get("/admin/health", headers=_admin(simulator))
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert client.get("/admin/nothing", headers=_admin(simulator)).status_code == 404
        assert client.put("/admin/reset", headers=_admin(simulator)).status_code == 405


def test_admin_faults_reset_and_traffic(simulator: Simulator) -> None:
    admin = _admin(simulator)
    token = simulator.iam.issue_professional_token(PHYSICIAN)
    bearer = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=simulator.base_url) as client:
        added = client.post(
            "/admin/faults",
            json=[{"operation": "search", "times": 2, "kind": "status", "status": 503, "retry_after": 2}],
            headers=admin,
        )
        assert added.status_code == 201
        assert added.json()["faults"][0]["times"] == 2
        assert client.post("/admin/faults", json={"kind": "nonsense"}, headers=admin).status_code == 400
        assert client.post("/admin/faults", content=b"{", headers=admin).status_code == 400
        first = client.get("/fhir/Immunization", headers=bearer)
        assert first.status_code == 503 and first.headers["retry-after"] == "2"
        mark = client.get("/admin/traffic", headers=admin).json()["mark"]
        assert client.get("/fhir/Immunization", headers=bearer).status_code == 503
        assert client.get("/fhir/Immunization", headers=bearer).status_code == 200
        since = client.get("/admin/traffic", params={"since": mark}, headers=admin).json()
        assert [e["response_status"] for e in since["exchanges"]] == [503, 200]
        assert since["exchanges"][0]["tags"]["fault"] == "status"
        assert client.get("/admin/traffic", params={"since": "x"}, headers=admin).status_code == 400
        only = client.get("/admin/traffic", params={"operation": "capabilities"}, headers=admin).json()
        assert only["exchanges"] == []
        client.post("/admin/faults", json={"kind": "delay", "seconds": 5}, headers=admin)
        assert client.delete("/admin/faults", headers=admin).json() == {"cleared": 1}
        assert client.get("/admin/faults", headers=admin).json() == {"faults": []}
        simulator.faults.add(Fault.status_error(500), "any")
        assert client.post("/admin/reset", headers=admin).status_code == 200
        assert len(simulator.faults) == 0 and len(simulator.traffic) == 0
        assert client.get("/fhir/metadata").status_code == 200


def test_reset_empties_the_register(simulator: Simulator) -> None:
    headers = {"Authorization": f"Bearer {simulator.iam.issue_professional_token(PHYSICIAN)}"}
    with httpx.Client(base_url=simulator.fhir_base_url, headers=headers) as client:
        created = client.post(
            "/Immunization", json=immunization("reset-1"), headers={"Content-Type": "application/fhir+json"}
        )
        assert created.status_code == 201, created.text
        simulator.reset()
        assert client.get(f"/Immunization/{created.json()['id']}").status_code == 404
        assert len(simulator.traffic) == 1  # only the read after the reset


def test_simulator_in_process_over_asgi(simulator_validator: Any, simulator_keys: Any) -> None:
    with Simulator(simulator_validator, keys=simulator_keys, base_url="http://simulator") as simulator:
        token = simulator.iam.issue_professional_token(PHYSICIAN)
        simulator.faults.add(Fault.commit_then_drop(), "search")
        metadata, drop, missing = _asgi(
            simulator,
            ("GET", "/fhir/metadata", b""),
            ("GET", "/fhir/Immunization", b""),
            ("GET", "/nowhere", b""),
        )
        assert isinstance(metadata, httpx.Response) and metadata.status_code == 200
        assert isinstance(drop, httpx.RemoteProtocolError)
        assert isinstance(missing, httpx.Response) and missing.status_code == 404
        assert [e.response_status for e in simulator.traffic.exchanges()] == [200, None, 404]
        assert simulator.fhir_base_url == "http://simulator/fhir"
        assert token  # a minted token is usable in process as well


def test_explicit_base_url_is_kept_by_the_server(simulator_validator: Any, simulator_keys: Any) -> None:
    simulator = Simulator(simulator_validator, keys=simulator_keys, base_url="https://sim.example/")
    with simulator, SimulatorServer(simulator) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert simulator.base_url == "https://sim.example"
        metadata = httpx.get(server.base_url + "/fhir/metadata").json()
        assert "https://sim.example/fhir" in json.dumps(metadata)


def test_banner_names_urls_professionals_and_login(simulator: Simulator) -> None:
    text = "\n".join(simulator.banner())
    assert simulator.fhir_base_url in text and simulator.token_endpoint() in text
    assert simulator.admin_token in text
    assert "Marc Fictif" in text and "may not record" in text and "not recognised" in text
    assert "token-exchange" in text
    assert "given with --admin-token" in "\n".join(simulator.banner(show_admin_token=False))


def test_admin_expire_tokens_makes_issued_tokens_expired(simulator: Simulator) -> None:
    token = simulator.iam.issue_professional_token(PHYSICIAN)
    search = {"patient.identifier": f"{SSIN_SYSTEM}|58032100126"}
    with httpx.Client(base_url=simulator.base_url) as client:
        before = client.get("/fhir/Immunization", params=search, headers={"Authorization": f"Bearer {token}"})
        assert before.status_code == 200
        assert client.post("/admin/expire-tokens", headers=_admin(simulator)).json() == {"expired": True}
        after = client.get("/fhir/Immunization", params=search, headers={"Authorization": f"Bearer {token}"})
        assert after.status_code == 401 and "expired" in after.headers["WWW-Authenticate"]
        fresh = simulator.iam.issue_professional_token(PHYSICIAN)
        again = client.get("/fhir/Immunization", params=search, headers={"Authorization": f"Bearer {fresh}"})
        assert again.status_code == 200


def test_ending_sessions_forces_a_new_login(simulator: Simulator) -> None:
    from conformance.adapters.intents import ReadHistory
    from conformance.adapters.reference import ReferenceAdapter

    with ReferenceAdapter(
        simulator.fhir_base_url, simulator.base_url + "/auth", professional=PHYSICIAN
    ) as client:
        assert client.perform(ReadHistory("58032100126")).succeeded
        simulator.iam.end_sessions()
        mark = simulator.traffic.mark()
        assert client.perform(ReadHistory("58032100126")).succeeded
    later = simulator.traffic.exchanges(mark)
    assert [e.response_status for e in later if e.path.endswith("/Immunization")] == [401, 200]
    assert any(e.path.endswith("/openid-connect/auth") for e in later)  # a full login, not the old token
