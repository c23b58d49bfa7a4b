"""The ``http`` and ``command`` adapters: end to end with the example vendor hook, and their errors."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conformance.adapters.command import CommandAdapter
from conformance.adapters.http_hook import HttpHookAdapter
from conformance.adapters.intents import (
    CancelVaccination,
    CorrectVaccination,
    Identifier,
    ReadHistory,
)
from conformance.errors import ConfigurationError, ConformanceError, TargetUnreachableError
from conformance.simulator.config import BE_VACCINATION_PROFILE
from conformance.simulator.faults import Fault
from tests.test_adapters_reference import IDS, PATIENT, PHYSICIAN_SSIN, creates, full_record

HOOK = Path(__file__).resolve().parent.parent / "examples" / "vendor-hook" / "vendor_hook.py"


def hook_argv(simulator: Any) -> list[str]:
    return [
        sys.executable,
        str(HOOK),
        "--fhir",
        simulator.fhir_base_url,
        "--iam",
        simulator.base_url + "/auth",
        "--professional",
        PHYSICIAN_SSIN,
    ]


@pytest.fixture
def hook_url(simulator: Any) -> Iterator[str]:
    """The example hook running as a subprocess on a free 127.0.0.1 port."""
    process = subprocess.Popen(
        [*hook_argv(simulator), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on "), line
        yield line.removeprefix("listening on ").strip()
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def hook(hook_url: str) -> Iterator[HttpHookAdapter]:
    with HttpHookAdapter(hook_url, timeout=30) as adapter:
        yield adapter


def test_http_hook_records_one_valid_immunization(simulator: Any, hook: HttpHookAdapter) -> None:
    result = hook.perform(full_record("hook-1"))
    assert result.outcome == "succeeded", result.message
    assert result.business_identifiers == (Identifier(IDS, "hook-1"),)
    [create] = creates(simulator)
    assert create.response_status == 201
    assert create.request_header("if-none-exist") == f"identifier={IDS}|hook-1"
    outcome = simulator.validator.validate(create.request_json, profile=BE_VACCINATION_PROFILE)
    assert outcome.ok, outcome.errors()
    assert result.record_ids == (create.response_json["id"],)


def test_http_hook_corrects_cancels_and_reads_history(simulator: Any, hook: HttpHookAdapter) -> None:
    assert hook.perform(full_record("hook-2")).succeeded
    corrected = hook.perform(
        CorrectVaccination(Identifier(IDS, "hook-2"), occurrence="2026-01-19T09:30:00+01:00")
    )
    assert corrected.succeeded, corrected.message
    [update] = simulator.traffic.exchanges(operation="update")
    assert update.request_header("if-match") == 'W/"1"' and update.response_status == 200
    assert hook.perform(CancelVaccination(Identifier(IDS, "hook-2"), reason="wrong patient")).succeeded
    [shown] = hook.perform(ReadHistory(PATIENT)).vaccinations
    assert shown.status == "cancelled" and shown.business_identifier == Identifier(IDS, "hook-2")
    assert len(creates(simulator)) == 1


def test_http_hook_survives_a_lost_answer(simulator: Any, hook: HttpHookAdapter) -> None:
    simulator.faults.add(Fault.commit_then_drop(), "create")
    assert hook.perform(full_record("hook-3")).succeeded
    assert len(hook.perform(ReadHistory(PATIENT)).vaccinations) == 1


def test_http_hook_reports_a_rejection(simulator: Any, hook: HttpHookAdapter) -> None:
    result = hook.perform(full_record("hook-4", occurrence="2099-01-01T10:00:00+01:00"))
    assert result.outcome == "rejected"
    assert "422" in (result.message or "") and result.issues and result.issues[0].text


def test_http_hook_does_not_implement_the_encrypted_variant(simulator: Any, hook: HttpHookAdapter) -> None:
    result = hook.perform(full_record("hook-5", encrypted=True))
    assert result.outcome == "failed" and "encrypted variant" in (result.message or "")
    assert simulator.traffic.exchanges() == []


def test_command_hook_end_to_end(simulator: Any) -> None:
    adapter = CommandAdapter([*hook_argv(simulator), "--stdin"], timeout=60)
    result = adapter.perform(full_record("cmd-1"))
    assert result.outcome == "succeeded", result.message
    [create] = creates(simulator)
    assert create.response_status == 201
    [shown] = adapter.perform(ReadHistory(PATIENT)).vaccinations
    assert shown.business_identifier == Identifier(IDS, "cmd-1") and shown.status == "completed"


# --- http errors ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def stub() -> Iterator[Callable[[int, bytes, float], str]]:
    """A hook that answers every POST with a fixed status and body (after ``delay`` seconds)."""
    servers: list[ThreadingHTTPServer] = []

    def start(status: int, body: bytes, delay: float = 0.0) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/hook"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_http_hook_down_is_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    with HttpHookAdapter(url, timeout=5) as adapter, pytest.raises(TargetUnreachableError) as caught:
        adapter.perform(ReadHistory(PATIENT))
    assert url in caught.value.message and "unreachable" in caught.value.message


def test_http_hook_timeout(stub: Callable[..., str]) -> None:
    url = stub(200, b'{"outcome": "succeeded"}', 2.0)
    with HttpHookAdapter(url, timeout=0.3) as adapter, pytest.raises(TargetUnreachableError) as caught:
        adapter.perform(ReadHistory(PATIENT))
    assert url in caught.value.message and "within 0.3 s" in caught.value.message


def test_http_hook_non_2xx(stub: Callable[..., str]) -> None:
    url = stub(500, b"internal error in the vendor hook")
    with HttpHookAdapter(url) as adapter, pytest.raises(ConformanceError) as caught:
        adapter.perform(ReadHistory(PATIENT))
    assert url in caught.value.message and "HTTP 500" in caught.value.message
    assert "internal error in the vendor hook" in caught.value.message


def test_http_hook_bad_json(stub: Callable[..., str]) -> None:
    url = stub(200, b"<html>ok</html>")
    with HttpHookAdapter(url) as adapter, pytest.raises(ConformanceError, match="not JSON") as caught:
        adapter.perform(ReadHistory(PATIENT))
    assert url in caught.value.message


def test_http_hook_invalid_result(stub: Callable[..., str]) -> None:
    url = stub(200, b'{"outcome": "great"}')
    with HttpHookAdapter(url) as adapter, pytest.raises(ConformanceError, match=r"\$\.outcome") as caught:
        adapter.perform(ReadHistory(PATIENT))
    assert url in caught.value.message and not isinstance(caught.value, ConfigurationError)


def test_http_hook_needs_an_http_url() -> None:
    with pytest.raises(ConfigurationError, match="http:// or https://"):
        HttpHookAdapter("ftp://127.0.0.1/hook")


# --- command errors ------------------------------------------------------------------------------------


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_command_non_zero_exit_names_the_command_and_stderr() -> None:
    adapter = CommandAdapter(
        python("import sys; sys.stderr.write('line 1\\nboom: no database\\n'); sys.exit(4)")
    )
    with pytest.raises(ConformanceError) as caught:
        adapter.perform(ReadHistory(PATIENT))
    message = caught.value.message
    assert "exited with status 4" in message and "boom: no database" in message
    assert sys.executable in message


def test_command_timeout() -> None:
    adapter = CommandAdapter(
        python("import time, sys; sys.stderr.write('waiting'); time.sleep(30)"), timeout=0.5
    )
    with pytest.raises(TargetUnreachableError, match=r"did not finish read-history within 0\.5 s"):
        adapter.perform(ReadHistory(PATIENT))


def test_command_bad_output() -> None:
    adapter = CommandAdapter(python("print('all good!')"))
    with pytest.raises(ConformanceError, match="not JSON on stdout: 'all good!'"):
        adapter.perform(ReadHistory(PATIENT))


def test_command_invalid_result() -> None:
    adapter = CommandAdapter(python('print(\'{"outcome": "succeeded", "extra": 1}\')'))
    with pytest.raises(ConformanceError, match="extra"):
        adapter.perform(ReadHistory(PATIENT))


def test_command_receives_the_intent_on_stdin() -> None:
    code = (
        "import json, sys; intent = json.load(sys.stdin); "
        "print(json.dumps({'outcome': 'succeeded', 'message': intent['action'] + ' ' + intent['patient']}))"
    )
    result = CommandAdapter(python(code)).perform(ReadHistory(PATIENT))
    assert result.succeeded and result.message == f"read-history {PATIENT}"


def test_command_not_found() -> None:
    with pytest.raises(ConfigurationError, match="cannot be found"):
        CommandAdapter("/nonexistent/vendor-cli --stdin").perform(ReadHistory(PATIENT))
