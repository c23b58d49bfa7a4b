"""End to end: the simulator on a real 127.0.0.1 socket, used as a vendor's software would use it.

A FHIR client library from PyPI (fhirpy) creates, reads, searches and cancels Immunizations with a
token obtained over HTTP through IAM Connect (authorization code + PKCE S256, then RFC 8693 token
exchange). Then: the register survives a restart with a database file, concurrent writers lose no
update, and ``vaccicard-conformance serve`` runs as a process and stops cleanly on SIGINT.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from conformance.simulator.app import Simulator
from conformance.simulator.server import SimulatorServer
from tests.test_simulator_server import (
    FHIR_JSON,
    PATIENT,
    PHYSICIAN_SSIN,
    SSIN_SYSTEM,
    VENDOR_IDS,
    immunization,
)

try:
    import fhirpy
    import fhirpy.base.exceptions
except ImportError:  # the test extra is not installed
    fhirpy = None

needs_fhirpy = pytest.mark.skipif(fhirpy is None, reason="fhirpy (the test extra) is not installed")

CLIENT_ID = "vendor-software"
REDIRECT_URI = "http://127.0.0.1:53682/callback"  # a loopback URI: any port matches the registration
AUDIENCE = "vaccicard-api"


def login(base_url: str, professional: str = PHYSICIAN_SSIN) -> str:
    """A Vaccicard access token, obtained over HTTP as vendor software does with IAM Connect."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    with httpx.Client(follow_redirects=False, timeout=10) as http:
        discovery = http.get(f"{base_url}/auth/realms/healthcare/.well-known/openid-configuration").json()
        redirect = http.get(
            discovery["authorization_endpoint"],
            params={
                "client_id": CLIENT_ID,
                "redirect_uri": REDIRECT_URI,
                "response_type": "code",
                "scope": "openid profile",
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "login_hint": professional,
            },
        )
        assert redirect.status_code == 302, redirect.text
        answer = parse_qs(urlsplit(redirect.headers["location"]).query)
        assert answer["state"] == [state]
        tokens = http.post(
            discovery["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": answer["code"][0],
                "redirect_uri": REDIRECT_URI,
                "client_id": CLIENT_ID,
                "code_verifier": verifier,
            },
        )
        assert tokens.status_code == 200, tokens.text
        exchanged = http.post(
            discovery["token_endpoint"],
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": tokens.json()["access_token"],
                "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "audience": AUDIENCE,
                "client_id": CLIENT_ID,
            },
        )
        assert exchanged.status_code == 200, exchanged.text
        return str(exchanged.json()["access_token"])


def fhir_client(simulator: Simulator, token: str) -> Any:
    return fhirpy.SyncFHIRClient(
        simulator.fhir_base_url,
        authorization=f"Bearer {token}",
        extra_headers=FHIR_JSON,
        requests_config={"timeout": 30},
    )


# --- a FHIR client library against a running simulator ------------------------------------------------


@needs_fhirpy
def test_fhirpy_creates_reads_searches_and_cancels(simulator: Simulator) -> None:
    token = login(simulator.base_url)
    client = fhir_client(simulator, token)

    record = client.resource("Immunization", **immunization("e2e-1"))
    record.save()
    assert record.id and record["meta"]["versionId"] == "1"

    read = client.reference("Immunization", record.id).to_resource()
    assert read["status"] == "completed"
    assert read["identifier"][0]["value"] == "e2e-1"

    client.resource("Immunization", **immunization("e2e-2")).save()
    found = (
        client.resources("Immunization")
        .search(**{"patient.identifier": f"{SSIN_SYSTEM}|{PATIENT}"})
        .sort("-date")
        .fetch_all()
    )
    assert {r["identifier"][0]["value"] for r in found} == {"e2e-1", "e2e-2"}
    by_identifier = client.resources("Immunization").search(identifier=f"{VENDOR_IDS}|e2e-1").fetch_all()
    assert [r.id for r in by_identifier] == [record.id]

    read["status"] = "entered-in-error"  # cancelling is an update, as the register expects
    read.save()
    cancelled = client.reference("Immunization", record.id).to_resource()
    assert cancelled["status"] == "entered-in-error"
    assert cancelled["meta"]["versionId"] == "2"
    assert [r.id for r in client.resources("Immunization").search(status="entered-in-error").fetch_all()] == [
        record.id
    ]

    creates = simulator.traffic.exchanges(operation="create")
    assert len(creates) == 2 and all(e.response_status == 201 and e.subject for e in creates)
    recorded = "".join(str(e.to_json()) for e in simulator.traffic.exchanges())
    assert token not in recorded  # tokens are fingerprinted, never stored in clear
    assert "sha256:" in (creates[0].request_header("authorization") or "")


@needs_fhirpy
def test_fhirpy_sees_rejections_as_operation_outcomes(simulator: Simulator) -> None:
    client = fhir_client(simulator, login(simulator.base_url))
    bad = immunization("e2e-bad")
    bad["lotNumber"] = "forbidden by BeVaccination"
    with pytest.raises(fhirpy.base.exceptions.OperationOutcome):
        client.resource("Immunization", **bad).save()
    with pytest.raises(fhirpy.base.exceptions.AuthorizationError):
        fhir_client(simulator, "not-a-token").resources("Immunization").fetch()
    [rejected] = simulator.traffic.exchanges(operation="create")
    assert rejected.response_status == 422 and rejected.validation


# --- restart persistence, concurrency ------------------------------------------------------------------


def test_register_survives_a_restart_with_a_database_file(
    simulator_validator: Any, simulator_keys: Any, tmp_path: Path
) -> None:
    database = tmp_path / "register.sqlite"
    first = Simulator(simulator_validator, keys=simulator_keys, db_path=database)
    with SimulatorServer(first) as server:
        token = login(server.base_url)
        created = httpx.post(
            first.fhir_base_url + "/Immunization",
            json=immunization("persist-1"),
            headers={**FHIR_JSON, "Authorization": f"Bearer {token}"},
        )
        assert created.status_code == 201, created.text
        record_id = created.json()["id"]
    first.close()

    second = Simulator(simulator_validator, keys=simulator_keys, db_path=database)
    try:
        with SimulatorServer(second) as server:
            headers = {"Authorization": f"Bearer {login(server.base_url)}"}
            read = httpx.get(f"{second.fhir_base_url}/Immunization/{record_id}", headers=headers)
            assert read.status_code == 200
            assert read.json()["identifier"][0]["value"] == "persist-1"
            again = httpx.post(
                second.fhir_base_url + "/Immunization",
                json=immunization("persist-1"),
                headers={**FHIR_JSON, **headers},
            )
            assert again.status_code == 409  # the business identifier is still taken
    finally:
        second.close()


def test_concurrent_writers_lose_no_update(simulator: Simulator) -> None:
    headers = {**FHIR_JSON, "Authorization": f"Bearer {login(simulator.base_url)}"}
    url = simulator.fhir_base_url + "/Immunization"
    created = httpx.post(url, json=immunization("shared-1"), headers=headers)
    assert created.status_code == 201, created.text
    record_id = created.json()["id"]
    threads, updates_each = 6, 5
    applied: list[str] = []
    errors: list[str] = []
    lock = threading.Lock()

    def writer(number: int) -> None:
        with httpx.Client(headers=headers, timeout=30) as http:
            done = 0
            attempts = 0
            while done < updates_each and attempts < 200:
                attempts += 1
                current = http.get(f"{url}/{record_id}")
                body = current.json()
                body["note"] = [{"text": f"writer {number} update {done}"}]
                answer = http.put(
                    f"{url}/{record_id}", json=body, headers={"If-Match": current.headers["etag"]}
                )
                if answer.status_code in (200, 201):
                    with lock:
                        applied.append(answer.json()["meta"]["versionId"])
                    done += 1
                elif answer.status_code != 412:  # 412: someone else wrote first; read again
                    with lock:
                        errors.append(f"{answer.status_code} {answer.text[:300]}")
                    return

    def creator(number: int) -> None:
        with httpx.Client(headers=headers, timeout=30) as http:
            for item in range(updates_each):
                answer = http.post(url, json=immunization(f"concurrent-{number}-{item}"))
                if answer.status_code != 201:
                    with lock:
                        errors.append(f"create {answer.status_code} {answer.text[:300]}")

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    workers += [threading.Thread(target=creator, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert errors == []
    total = threads * updates_each
    assert len(applied) == total
    assert sorted(applied, key=int) == [str(v) for v in range(2, total + 2)]  # every version exactly once
    history = httpx.get(f"{url}/{record_id}/_history", headers=headers).json()
    assert history.get("total", len(history["entry"])) == total + 1
    for number in range(threads):
        for item in range(updates_each):
            found = httpx.get(
                url, params={"identifier": f"{VENDOR_IDS}|concurrent-{number}-{item}"}, headers=headers
            )
            assert len(found.json().get("entry", [])) == 1


def test_concurrent_conditional_creates_make_one_record(simulator: Simulator) -> None:
    headers = {
        **FHIR_JSON,
        "Authorization": f"Bearer {login(simulator.base_url)}",
        "If-None-Exist": f"identifier={VENDOR_IDS}|once",
    }
    url = simulator.fhir_base_url + "/Immunization"
    statuses: list[int] = []
    lock = threading.Lock()

    def post() -> None:
        answer = httpx.post(url, json=immunization("once"), headers=headers, timeout=30)
        with lock:
            statuses.append(answer.status_code)

    workers = [threading.Thread(target=post) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert sorted(statuses) == [200] * 7 + [201]
    found = httpx.get(url, params={"identifier": f"{VENDOR_IDS}|once"}, headers=headers).json()
    assert len(found["entry"]) == 1


# --- the serve command as a process --------------------------------------------------------------------


def _serve(package_cache: Any, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "conformance.cli", "--package-cache", str(package_cache.root), "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        cwd=Path(__file__).resolve().parents[1],
    )


@pytest.fixture
def serve_process(package_cache: Any) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    process = _serve(package_cache, "--port", "0", "--admin-token", "e2e-admin-token")
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline() if process.stdout else ""
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if line.startswith("Press Ctrl-C"):
                break
        yield process, lines
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_serve_answers_and_stops_on_sigint(serve_process: tuple[subprocess.Popen[str], list[str]]) -> None:
    process, lines = serve_process
    text = "\n".join(lines)
    assert process.poll() is None, text + (process.stderr.read() if process.stderr else "")
    match = re.search(r"FHIR base URL\s+(http://127\.0\.0\.1:\d+/fhir)", text)
    assert match, text
    fhir_base = match.group(1)
    assert "/auth/realms/healthcare/protocol/openid-connect/token" in text
    assert "Luc Exemplaire" in text and "10000106003" in text
    assert "e2e-admin-token" not in text  # a token the user gave is not echoed
    metadata = httpx.get(fhir_base + "/metadata", timeout=10)
    assert metadata.status_code == 200
    assert metadata.json()["resourceType"] == "CapabilityStatement"
    base = fhir_base.removesuffix("/fhir")
    health = httpx.get(base + "/admin/health", headers={"Authorization": "Bearer e2e-admin-token"})
    assert health.status_code == 200 and health.json()["status"] == "ok"
    process.send_signal(signal.SIGINT)
    assert process.wait(20) == 0
    assert "Traceback" not in (process.stderr.read() if process.stderr else "")


def test_serve_port_in_use_is_one_line_and_exit_2(package_cache: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        process = _serve(package_cache, "--port", str(taken.getsockname()[1]))
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert stderr.strip().count("\n") == 0 and "address already in use" in stderr


def test_serve_refuses_a_public_host_from_the_environment(package_cache: Any) -> None:
    process = _serve(package_cache, env={"VACCICARD_SERVE_HOST": "0.0.0.0"})
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "--host 0.0.0.0" in stderr


def test_committed_but_answer_lost_over_a_real_socket(simulator: Simulator) -> None:
    """The case that loses or duplicates data: the create commits, the connection dies unanswered.

    A client that retries with conditional create ends with exactly one record; a blind retry gets 409.
    """
    from conformance.simulator.faults import Fault

    headers = {**FHIR_JSON, "Authorization": f"Bearer {login(simulator.base_url)}"}
    url = simulator.fhir_base_url + "/Immunization"
    simulator.faults.add(Fault.commit_then_drop(), "create")
    with pytest.raises(httpx.TransportError):
        httpx.post(url, json=immunization("lost-answer-1"), headers=headers)
    assert httpx.post(url, json=immunization("lost-answer-1"), headers=headers).status_code == 409
    retry = httpx.post(
        url,
        json=immunization("lost-answer-1"),
        headers={**headers, "If-None-Exist": f"identifier={VENDOR_IDS}|lost-answer-1"},
    )
    assert retry.status_code == 200  # the existing record, not a second one
    found = httpx.get(url, params={"identifier": f"{VENDOR_IDS}|lost-answer-1"}, headers=headers).json()
    assert len(found["entry"]) == 1
    dropped = [e for e in simulator.traffic.exchanges(operation="create") if e.error]
    assert len(dropped) == 1
