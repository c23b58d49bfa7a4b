"""``run --target NAME|URL``: the suite against a live register watched through the recording proxy.

The "live" register is a simulator served on 127.0.0.1 by the test; the harness reaches it as it
reaches the acceptance API: through the recording proxy, with the live IAM Connect client for targets
not marked simulator (its browser login driven by a stand-in browser).
"""

from __future__ import annotations

import shlex
import sys
import webbrowser
from pathlib import Path
from typing import Any

import pytest

from conformance.fhir.packages import PackageCache
from conformance.suite.runner import RunOptions, run_suite

ROOT = Path(__file__).resolve().parent.parent
FAKE_BROWSER = Path(__file__).resolve().parent / "data" / "fake_browser.py"
NEEDS_SIMULATOR = {
    "An expired token is renewed and the pending vaccination is recorded once",
    "The professional logs in through IAM Connect and the token is exchanged for Vaccicard",
}


def test_the_suite_judges_a_live_register_through_the_proxy(
    package_cache: PackageCache, simulator: Any
) -> None:
    code, results = run_suite(
        RunOptions(
            target=simulator.fhir_base_url, package_cache=str(package_cache.root), suite_root=ROOT, quiet=True
        )
    )
    outcomes = {o.name: o for o in results.scenarios.values()}
    assert code == 0 and not results.failed
    skipped = {name for name, o in outcomes.items() if o.status == "skipped"}
    assert skipped >= NEEDS_SIMULATOR
    assert all("simulator" in (outcomes[name].skip_reason or "") for name in skipped)
    passed = [o for o in outcomes.values() if o.status == "passed"]
    assert len(passed) >= 15
    # the evidence is the proxy's: the same requests reached the simulator behind it
    creates = [e for e in results.exchanges.values() if e.operation == "create"]
    assert creates and len(simulator.traffic.exchanges(operation="create")) >= len(creates)


def test_a_production_target_reads_but_does_not_write_without_allow_writes(
    package_cache: PackageCache, simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "vaccicard.toml"
    config.write_text(
        f"""
[target.production-like]
fhir-base-url = "{simulator.fhir_base_url}"
iam-realm-url = "{simulator.base_url}/auth/realms/healthcare"
client-id = "vendor-software"
environment = "production"
login-hint = "75040201177"
""",
        encoding="utf-8",
    )
    monkeypatch.setenv("BROWSER", shlex.join([sys.executable, str(FAKE_BROWSER)]) + " %s")
    monkeypatch.setattr(webbrowser, "_tryorder", None)  # read BROWSER again
    options = RunOptions(
        target="production-like",
        target_config=str(config),
        items="VC-ACC,VC-REG-01",
        package_cache=str(package_cache.root),
        suite_root=ROOT,
        quiet=True,
    )
    code, results = run_suite(options)
    outcomes = list(results.scenarios.values())
    assert code == 0
    reads = [o for o in outcomes if o.items[0].startswith("VC-ACC")]
    writes = [o for o in outcomes if o.items[0].startswith("VC-REG")]
    assert reads and all(o.status == "passed" for o in reads)
    assert writes and all(o.status == "skipped" and "--allow-writes" in (o.skip_reason or "") for o in writes)
    logins = [e for e in simulator.traffic.exchanges() if e.path.endswith("/openid-connect/auth")]
    assert logins and "login_hint=75040201177" in logins[0].query
