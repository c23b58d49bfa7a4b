"""The ``http`` and ``command`` adapters end to end: the whole evaluation suite through the example hook."""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.fhir.packages import PackageCache
from conformance.suite.runner import RunOptions, run_suite

ROOT = Path(__file__).resolve().parent.parent
HOOK = ROOT / "examples" / "vendor-hook" / "vendor_hook.py"
PROFESSIONAL = ("--professional", "75040201177", "--port", "0")
UNTRUSTED_TLS = "The software refuses a register whose certificate it cannot verify"
PLAIN = "not area:ETE"
"""The example hook does not implement the encrypted variant: its scenarios are left out."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def hook_url(port: int) -> Iterator[str]:
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, str(HOOK), "--fhir", base + "/fhir", "--iam", base + "/auth", *PROFESSIONAL],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert line.startswith("listening on "), line
        yield line.removeprefix("listening on ").strip()
    finally:
        process.terminate()
        process.wait(10)


def test_the_http_adapter_passes_the_suite_with_the_example_hook(
    package_cache: PackageCache, port: int, hook_url: str
) -> None:
    code, results = run_suite(
        RunOptions(
            adapter=f"http:{hook_url}",
            package_cache=str(package_cache.root),
            simulator_port=port,
            suite_root=ROOT,
            quiet=True,
            tags=PLAIN,
        )
    )
    outcomes = {o.name: o for o in results.scenarios.values()}
    assert [o.name for o in results.failed] == [] and code == 0
    assert not any(item.startswith("VC-ETE") for o in outcomes.values() for item in o.items)
    assert outcomes[UNTRUSTED_TLS].status == "skipped"
    assert "cannot point the software at another register" in (outcomes[UNTRUSTED_TLS].skip_reason or "")
    assert sum(o.status == "passed" for o in outcomes.values()) == len(outcomes) - 1


def test_the_command_adapter_runs_the_hook_with_the_endpoint_filled_in(package_cache: PackageCache) -> None:
    command = shlex.join([sys.executable, str(HOOK)]) + (
        " --fhir {fhir_base_url} --iam {iam_base_url} --professional {professional} --stdin"
    )
    code, results = run_suite(
        RunOptions(
            adapter=f"command:{command}",
            items="VC-REG-01,VC-ND-01,VC-CAN",
            package_cache=str(package_cache.root),
            suite_root=ROOT,
            quiet=True,
            tags=PLAIN,
        )
    )
    assert code == 0 and results.scenarios and not results.failed


def test_the_encrypted_scenarios_fail_with_a_hook_that_cannot_seal(package_cache: PackageCache) -> None:
    command = shlex.join([sys.executable, str(HOOK)]) + (
        " --fhir {fhir_base_url} --iam {iam_base_url} --professional {professional} --stdin"
    )
    code, results = run_suite(
        RunOptions(
            adapter=f"command:{command}",
            tags="area:ETE",
            package_cache=str(package_cache.root),
            suite_root=ROOT,
            quiet=True,
        )
    )
    assert code == 1 and len(results.failed) == len(results.scenarios) == 5
    failed = [o.message or "" for o in results.failed]
    assert sum("the software sent no sealed message" in m for m in failed) == 3
    assert sum("did not fetch Vaccicard's ETK from the ETK depot" in m for m in failed) == 2
