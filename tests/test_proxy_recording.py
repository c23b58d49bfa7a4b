"""The recording proxy in front of the simulator, with a FHIR client library as the vendor software.

The vendor software (fhirpy, or httpx for byte-level checks) talks to the proxy on 127.0.0.1; the
proxy forwards to the simulator (plain HTTP, or HTTPS with a throw-away CA). The tests check that
traffic passes unchanged byte for byte, that the evidence is what the software sent, and that upstream
failures reach the software as they are (or as 502/504 OperationOutcomes when there is no answer).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from conformance.errors import ConfigurationError
from conformance.live import httpx_verify, resolve_target
from conformance.proxy.cli import proxy as proxy_command
from conformance.proxy.server import RecordingProxy, _decode, _encode
from conformance.simulator.app import Simulator
from conformance.simulator.faults import Fault
from conformance.simulator.http import HttpRequest, HttpResponse
from conformance.simulator.server import SimulatorServer
from conformance.traffic.recorder import TrafficRecorder, fingerprint, load_ndjson
from tests.test_live_iam import Pki, closed_port, make_pki
from tests.test_simulator_server import PATIENT, PHYSICIAN_SSIN, SSIN_SYSTEM, immunization

try:
    import fhirpy
except ImportError:  # the test extra is not installed
    fhirpy = None

needs_fhirpy = pytest.mark.skipif(fhirpy is None, reason="fhirpy (the test extra) is not installed")
ROOT = Path(__file__).resolve().parent.parent
FHIR_JSON = "application/fhir+json"


@pytest.fixture
def recorder() -> TrafficRecorder:
    return TrafficRecorder()


@pytest.fixture
def proxy(
    simulator: Simulator, recorder: TrafficRecorder, simulator_validator: Any
) -> Iterator[RecordingProxy]:
    with RecordingProxy(
        simulator.fhir_base_url, recorder=recorder, validator=simulator_validator, timeout=10
    ) as running:
        yield running


def token(simulator: Simulator) -> str:
    return simulator.iam.issue_professional_token(PHYSICIAN_SSIN)


def headers(simulator: Simulator, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(simulator)}", "Accept": FHIR_JSON, **extra}


# --- a FHIR client library through the proxy ----------------------------------------------------------


@needs_fhirpy
def test_fhirpy_creates_reads_and_pages_through_the_proxy(
    simulator: Simulator, proxy: RecordingProxy, recorder: TrafficRecorder, tmp_path: Path
) -> None:
    assert proxy.base_url == f"http://127.0.0.1:{proxy.port}/fhir"
    bearer = token(simulator)
    client = fhirpy.SyncFHIRClient(
        proxy.base_url, authorization=f"Bearer {bearer}", extra_headers={"Accept": FHIR_JSON}
    )
    sent = [immunization(f"proxy-{n}") for n in range(3)]
    for body in sent:
        client.resource("Immunization", **body).save()
    created = recorder.exchanges(operation="create")
    assert [e.response_status for e in created] == [201, 201, 201]
    for exchange, body in zip(created, sent, strict=True):
        assert exchange.request_json == body  # the evidence is what the software sent
        assert exchange.subject == "nihdi:10000106003"
        assert exchange.resource_type == "Immunization" and exchange.resource_id
        assert exchange.request_header("authorization") == f"Bearer {fingerprint(bearer)}"
    upstream_creates = simulator.traffic.exchanges(operation="create")
    assert [e.validation for e in created] == [e.validation for e in upstream_creates]
    assert [e.resource_id for e in created] == [e.resource_id for e in upstream_creates]

    read = client.reference("Immunization", created[0].resource_id).to_resource()
    assert read["identifier"][0]["value"] == "proxy-0"
    assert recorder.exchanges(operation="read")[0].response_status == 200

    found = (
        client.resources("Immunization")
        .search(**{"patient.identifier": f"{SSIN_SYSTEM}|{PATIENT}"})
        .limit(1)
        .fetch_all()
    )
    assert sorted(r["identifier"][0]["value"] for r in found) == ["proxy-0", "proxy-1", "proxy-2"]
    searches = recorder.exchanges(operation="search")
    assert len(searches) == 3  # every page came through the proxy: next links were rewritten
    assert all(e.tags.get("rewritten_links") for e in searches)
    assert proxy.upstream_origin in json.dumps(searches[0].response_json)  # evidence: the API's answer
    assert len(simulator.traffic.exchanges(operation="search")) == 3

    evidence = tmp_path / "evidence.ndjson"
    assert recorder.write_ndjson(evidence) == 7
    assert [e.to_json() for e in load_ndjson(evidence)] == [e.to_json() for e in recorder.exchanges()]
    assert bearer not in evidence.read_text(encoding="utf-8")


def test_invalid_immunization_is_validated_as_it_passes(
    simulator: Simulator, proxy: RecordingProxy, recorder: TrafficRecorder
) -> None:
    bad = immunization("proxy-bad")
    bad["lotNumber"] = "forbidden by BeVaccination"
    del bad["meta"]  # no meta.profile: validated against BeVaccination all the same
    answer = httpx.post(
        proxy.base_url + "/Immunization",
        content=json.dumps(bad).encode(),
        headers=headers(simulator, **{"Content-Type": FHIR_JSON}),
    )
    assert answer.status_code == 422
    [exchange] = recorder.exchanges(operation="create")
    assert exchange.response_status == 422
    assert any(
        i["severity"] == "error" and "lotNumber" in i["message"] and "be-vaccination" in i["profile"]
        for i in exchange.validation
    )


# --- byte for byte ------------------------------------------------------------------------------------


class Wiretap:
    """A simulator core wrapper keeping the raw requests and answers the server exchanged."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator
        self.max_body_bytes = simulator.max_body_bytes
        self.seen: list[tuple[HttpRequest, HttpResponse]] = []

    def attach(self, base_url: str) -> None:
        self.simulator.attach(base_url)

    def handle(self, request: HttpRequest) -> HttpResponse:
        response = self.simulator.handle(request)
        self.seen.append((request, response))
        return response

    def reject(self, request: HttpRequest, status: int, code: str, diagnostics: str) -> HttpResponse:
        response = self.simulator.reject(request, status, code, diagnostics)
        self.seen.append((request, response))
        return response


@pytest.fixture
def wiretapped(simulator_validator: Any, simulator_keys: Any) -> Iterator[tuple[Simulator, Wiretap]]:
    simulator = Simulator(simulator_validator, keys=simulator_keys)
    tap = Wiretap(simulator)
    try:
        with SimulatorServer(tap):
            yield simulator, tap
    finally:
        simulator.close()


def test_bodies_and_headers_pass_byte_for_byte(wiretapped: tuple[Simulator, Wiretap]) -> None:
    simulator, tap = wiretapped
    recorder = TrafficRecorder()
    resource = immunization("proxy-bytes")
    body = (
        '{ "status" :"completed",\n\t"resourceType":  "Immunization" ,"note":[{"text":"caf\\u00e9 \u00e9t\u00e9"}],'
        + json.dumps({k: v for k, v in resource.items() if k not in ("status", "resourceType")}, indent=3)[1:]
        + "  \n"
    ).encode()
    with RecordingProxy(simulator.fhir_base_url, recorder=recorder) as proxy:
        answer = httpx.post(
            proxy.base_url + "/Immunization",
            content=body,
            headers=headers(
                simulator,
                **{
                    "Content-Type": FHIR_JSON,
                    "X-Vendor-Trace": 'a;b=c,  d="e f"',
                    "Connection": "keep-alive, X-Hop",
                    "X-Hop": "only for the next hop",
                },
            ),
        )
        query = "identifier=https%3A%2F%2Fvendor.example%2Fids%7Cproxy-bytes&_count=5"
        search = httpx.get(f"{proxy.base_url}/Immunization?{query}", headers=headers(simulator))
    assert answer.status_code == 201, answer.text
    (received, answered), (searched, search_answer) = tap.seen
    assert received.body == body  # the register got exactly the bytes the software sent
    assert received.headers["x-vendor-trace"] == 'a;b=c,  d="e f"'
    assert received.headers["authorization"] == answer.request.headers["authorization"]
    assert "x-hop" not in received.headers and received.headers["host"] == simulator.base_url.split("//")[1]
    assert answer.content == answered.body  # and the software got exactly the register's answer
    assert answer.headers["etag"] == answered.headers["ETag"]
    location = answered.headers["Location"]
    assert location.startswith(simulator.base_url)
    assert answer.headers["location"] == proxy.origin + location[len(simulator.base_url) :]
    assert search.status_code == 200 and searched.query["identifier"] == [
        "https://vendor.example/ids|proxy-bytes"
    ]

    created, found = recorder.exchanges()
    assert created.request_json == json.loads(body)
    assert created.tags["request_body_sha256"] == hashlib.sha256(body).hexdigest()
    assert created.tags["request_body_bytes"] == len(body)
    assert created.tags["response_body_sha256"] == hashlib.sha256(answered.body).hexdigest()
    assert created.response_header("location") == location  # evidence: the register's own header
    assert created.tags["rewritten_headers"] == ["location"]
    assert created.resource_id == location.split("/Immunization/")[1].split("/")[0]
    assert found.query == query and found.operation == "search"
    assert found.response_body == json.loads(search_answer.body)


def test_large_bodies_stream_and_the_evidence_notes_truncation(
    simulator: Simulator, recorder: TrafficRecorder
) -> None:
    body = json.dumps(immunization("proxy-chunked"), indent=2).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 100):
            yield body[start : start + 100]

    huge = 3 * 1024 * 1024
    with RecordingProxy(simulator.fhir_base_url, recorder=recorder, record_limit=256) as proxy:
        created = httpx.post(
            proxy.base_url + "/Immunization",
            content=chunks(),
            headers=headers(simulator, **{"Content-Type": FHIR_JSON}),
        )
        too_big = httpx.post(
            proxy.base_url + "/Immunization",
            content=(b" " * 65536 for _ in range(huge // 65536)),
            headers=headers(simulator, **{"Content-Type": FHIR_JSON}),
            timeout=30,
        )
    assert created.status_code == 201, created.text
    assert too_big.status_code == 413
    first, second = recorder.exchanges(operation="create")
    assert first.tags["request_body_truncated"] and first.tags["request_body_bytes"] == len(body)
    assert first.tags["request_body_sha256"] == hashlib.sha256(body).hexdigest()
    assert first.request_body == body[:256] and first.validation == []
    assert second.response_status == 413 and second.tags["request_body_bytes"] == huge


# --- upstream failures --------------------------------------------------------------------------------


def test_upstream_502_is_passed_through_and_recorded(
    simulator: Simulator, proxy: RecordingProxy, recorder: TrafficRecorder
) -> None:
    simulator.faults.add(Fault.status_error(502), "any")
    answer = httpx.get(proxy.base_url + "/Immunization?identifier=a|b", headers=headers(simulator))
    assert answer.status_code == 502
    [upstream] = simulator.traffic.exchanges()
    [exchange] = recorder.exchanges()
    assert answer.json() == upstream.response_body == exchange.response_body
    assert exchange.response_status == 502 and exchange.error is None
    assert "answered_by" not in exchange.tags


def test_upstream_down_is_502_with_an_operation_outcome(recorder: TrafficRecorder) -> None:
    upstream = f"http://127.0.0.1:{closed_port()}/fhir"
    with RecordingProxy(upstream, recorder=recorder, timeout=2) as proxy:
        answer = httpx.post(
            proxy.base_url + "/Immunization",
            content=b'{"resourceType":"Immunization"}',
            headers={"Content-Type": FHIR_JSON},
        )
        again = httpx.get(proxy.base_url + "/metadata")  # the proxy itself stays up
    assert answer.status_code == 502 and again.status_code == 502
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert f"the upstream {upstream} could not be reached" in outcome["issue"][0]["diagnostics"]
    first, second = recorder.exchanges()
    assert first.error and "could not be reached" in first.error and first.response_status == 502
    assert first.tags["answered_by"] == "proxy" and first.request_json == {"resourceType": "Immunization"}
    assert second.operation == "capabilities"


def test_upstream_too_slow_is_504(simulator: Simulator, recorder: TrafficRecorder) -> None:
    simulator.faults.add(Fault.delay(1.0), "any")
    with RecordingProxy(
        simulator.fhir_base_url, recorder=recorder, timeout=httpx.Timeout(2, read=0.3)
    ) as proxy:
        answer = httpx.get(proxy.base_url + "/Immunization?identifier=a|b", headers=headers(simulator))
    assert answer.status_code == 504
    assert "did not answer in time" in answer.json()["issue"][0]["diagnostics"]
    [exchange] = recorder.exchanges()
    assert exchange.response_status == 504 and "did not answer in time" in (exchange.error or "")


# --- TLS to the upstream ------------------------------------------------------------------------------


def test_proxy_to_an_https_upstream_with_a_ca_bundle(
    tmp_path: Path,
    simulator_validator: Any,
    simulator_keys: Any,
) -> None:
    pki: Pki = make_pki(tmp_path)
    simulator = Simulator(simulator_validator, keys=simulator_keys)
    try:
        with SimulatorServer(simulator, ssl_context=pki.server):
            target = resolve_target(simulator.fhir_base_url, targets={}, overrides={"ca_bundle": pki.ca_file})
            trusted = httpx_verify(target)  # the system store plus the bundle, as `proxy --ca-bundle` does
            untrusted = httpx_verify(replace(target, ca_bundle=pki.other_ca_file))
            recorder = TrafficRecorder()
            with RecordingProxy(simulator.fhir_base_url, recorder=recorder, verify=trusted) as proxy:
                ok = httpx.get(proxy.base_url + "/metadata")
            with RecordingProxy(simulator.fhir_base_url, recorder=recorder, verify=untrusted) as proxy:
                refused = httpx.get(proxy.base_url + "/metadata")
    finally:
        simulator.close()
    assert ok.status_code == 200 and ok.json()["resourceType"] == "CapabilityStatement"
    assert refused.status_code == 502
    assert "TLS certificate could not be verified" in refused.json()["issue"][0]["diagnostics"]
    assert "--ca-bundle" in refused.json()["issue"][0]["diagnostics"]


# --- link rewriting and content codings ---------------------------------------------------------------


def test_only_upstream_origins_are_rewritten(recorder: TrafficRecorder) -> None:
    with RecordingProxy("https://fhir.example/fhir", recorder=recorder) as proxy:
        assert (
            proxy.rewrite("https://fhir.example/fhir/Immunization/1") == proxy.origin + "/fhir/Immunization/1"
        )
        assert proxy.rewrite("https://fhir.example:443/x") == proxy.origin + "/x"
        assert proxy.rewrite("https://fhir.example.evil/x") == "https://fhir.example.evil/x"
        assert proxy.rewrite("urn:uuid:1") == "urn:uuid:1"
        body = b'{"url": "https://fhir.example/fhir/x", "a": "see https://fhir.example/", "b":"https:\\/\\/fhir.example\\/y", "c": "https://fhir.example.evil/z", "d": "https://fhir.example"}'
        rewritten, count = proxy.rewrite_body(body)
    assert count == 3
    escaped = proxy.origin.replace("/", "\\/")
    assert (
        rewritten
        == (
            f'{{"url": "{proxy.origin}/fhir/x", "a": "see https://fhir.example/", "b":"{escaped}\\/y", '
            f'"c": "https://fhir.example.evil/z", "d": "{proxy.origin}"}}'
        ).encode()
    )
    for coding in ("gzip", "deflate", "identity"):
        assert _decode(_encode(body, coding), coding, 10_000) == body
    assert _decode(gzip.compress(b"x" * 5000), "gzip", 100) is None  # over the limit: not decoded
    assert _decode(b"not gzip", "gzip", 100) is None and _decode(b"x", "br", 100) is None


def test_port_in_use_is_a_configuration_error(recorder: TrafficRecorder) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ConfigurationError, match=r"cannot listen on 127\.0\.0\.1"):
            RecordingProxy("http://127.0.0.1:1/fhir", recorder=recorder, port=taken.getsockname()[1])
    with pytest.raises(ConfigurationError, match="must be an http"):
        RecordingProxy("ftp://x/fhir", recorder=recorder)


# --- the command --------------------------------------------------------------------------------------


def test_proxy_command_runs_until_sigint_and_writes_the_evidence(
    simulator: Simulator, tmp_path: Path
) -> None:
    evidence = tmp_path / "evidence.ndjson"
    command = [
        sys.executable,
        "-c",
        "import sys; from conformance.proxy.cli import proxy; proxy(sys.argv[1:])",
        "--upstream",
        simulator.fhir_base_url,
        "--port",
        "0",
        "--evidence",
        str(evidence),
        "--no-validate",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        base_url = next(line.split()[-1] for line in lines if "Point the software's FHIR base URL" in line)
        assert httpx.get(base_url + "/metadata", timeout=10).status_code == 200
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, errors
    assert f"1 exchange(s) written to {evidence}" in rest
    [exchange] = load_ndjson(evidence)
    assert exchange.operation == "capabilities" and exchange.response_status == 200


def test_proxy_command_names_an_unknown_target() -> None:
    result = CliRunner().invoke(proxy_command, ["--upstream", "acceptanse", "--no-validate"])
    assert isinstance(result.exception, ConfigurationError)
    assert "unknown target 'acceptanse'" in result.exception.message


# --- an upstream that compresses, streams and breaks off ----------------------------------------------


class _Upstream(BaseHTTPRequestHandler):
    """gzip JSON with self links (/bundle), a chunked stream (/stream), a body cut short (/broken)."""

    protocol_version = "HTTP/1.1"
    origin = ""

    def do_GET(self) -> None:
        if self.path == "/fhir/bundle":
            bundle = {
                "resourceType": "Bundle",
                "type": "searchset",
                "link": [{"relation": "next", "url": f"{self.origin}/fhir/bundle?page=2"}],
            }
            body = gzip.compress(json.dumps(bundle).encode())
            self.send_response(200)
            self.send_header("Content-Type", FHIR_JSON)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/fhir/stream":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(48):
                self.wfile.write(b"10000\r\n" + b"z" * 65536 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"only this")
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def test_compressed_streamed_and_broken_answers(recorder: TrafficRecorder) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    _Upstream.origin = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with RecordingProxy(_Upstream.origin + "/fhir", recorder=recorder, record_limit=1024) as proxy:
            bundle = httpx.get(proxy.base_url + "/bundle")
            with httpx.stream("GET", proxy.base_url + "/stream") as streamed:
                size = sum(len(chunk) for chunk in streamed.iter_raw())
            with pytest.raises(httpx.TransportError):
                httpx.get(proxy.base_url + "/broken")
    finally:
        server.shutdown()
        server.server_close()
    assert bundle.headers["content-encoding"] == "gzip"  # decoded, rewritten, encoded again
    assert bundle.json()["link"][0]["url"] == proxy.base_url + "/bundle?page=2"
    assert size == 48 * 65536 and streamed.headers["transfer-encoding"] == "chunked"
    first, second, third = recorder.exchanges()
    assert first.response_json["link"][0]["url"] == _Upstream.origin + "/fhir/bundle?page=2"
    assert first.tags["rewritten_links"] == 1
    assert second.tags["response_body_truncated"] and second.tags["response_body_bytes"] == size
    assert second.response_body == b"z" * 1024
    assert third.error and "broke off" in third.error and third.response_status == 200
