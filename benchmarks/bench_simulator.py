"""Benchmark the simulator as vendor software meets it: validated creates over HTTP from a concurrent client.

    python benchmarks/bench_simulator.py                  # 30 s of creates: creates/s, p50/p99 latency
    python benchmarks/bench_simulator.py --seconds 10 --threads 4
    python benchmarks/bench_simulator.py --soak           # 5 minutes; server RSS after each minute

The server is the real ``vaccicard-conformance serve`` in its own process on an ephemeral 127.0.0.1
port (so client and server do not share a GIL); the soak uses a ``--db`` file, so what it measures is
the process, not the register's data growing in memory. The client logs in over HTTP through IAM
Connect (PKCE, then token exchange; again before the 300 s token expires), then each thread posts
distinct valid BeVaccination records on one keep-alive connection (httpx). Every create is validated
against the profile by the server; anything but 201 counts as an error. Uses the package cache of
``--package-cache``, else $VACCICARD_PACKAGE_CACHE, else ~/.fhir/packages.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

CORE_BE = "https://www.ehealth.fgov.be/standards/fhir/core/"
VACC = "https://www.ehealth.fgov.be/standards/fhir/vaccination/"
NIHDI_PRO = CORE_BE + "NamingSystem/nihdi-professional"
PHYSICIAN_SSIN, PHYSICIAN_NIHDI = "75040201177", "10000106003"  # test data: Luc Exemplaire
PATIENTS = (
    "58032100126",
    "87110400236",
    "19090800552",
    "23021400603",
    "90451200792",
)  # consent + relationship
VACCINES = ("871717007", "871719005", "871751006", "836500008")
CNK_CODES = 200  # distinct products, as a practice stocks: the validator caches one verdict per code
REDIRECT_URI = "http://127.0.0.1:53682/callback"
TOKEN_RENEW_SECONDS = 240


def immunization(key: str, number: int) -> dict[str, Any]:
    """A distinct valid BeVaccination record."""
    day = 1 + number % 28
    return {
        "resourceType": "Immunization",
        "meta": {"profile": [VACC + "StructureDefinition/be-vaccination"]},
        "extension": [
            {
                "url": CORE_BE + "StructureDefinition/be-ext-recorder",
                "valueReference": {"identifier": {"system": NIHDI_PRO, "value": PHYSICIAN_NIHDI}},
            },
            {
                "url": VACC + "StructureDefinition/be-ext-administeredProduct",
                "extension": [
                    {
                        "url": "coded",
                        "valueCodeableConcept": {
                            "coding": [
                                {
                                    "system": "https://www.ehealth.fgov.be/standards/fhir/medication/NamingSystem/be-ns-cnk-codes",
                                    "code": f"{1000000 + number % CNK_CODES}",
                                }
                            ]
                        },
                    },
                    {"url": "lotNumber", "valueString": f"LOT{number % 100000:05d}"},
                ],
            },
        ],
        "identifier": [{"system": "https://vendor.example.org/vaccinations", "value": key}],
        "status": "completed",
        "vaccineCode": {
            "coding": [{"system": "http://snomed.info/sct", "code": VACCINES[number % len(VACCINES)]}]
        },
        "patient": {
            "identifier": {"system": CORE_BE + "NamingSystem/ssin", "value": PATIENTS[number % len(PATIENTS)]}
        },
        "occurrenceDateTime": f"2025-03-{day:02d}T10:00:00+01:00",
        "recorded": f"2025-03-{day:02d}T10:05:00+01:00",
        "performer": [{"actor": {"identifier": {"system": NIHDI_PRO, "value": PHYSICIAN_NIHDI}}}],
    }


def login(base_url: str) -> str:
    """A Vaccicard access token through IAM Connect over HTTP (PKCE S256, then token exchange)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    token_url = f"{base_url}/auth/realms/healthcare/protocol/openid-connect/token"
    with httpx.Client(follow_redirects=False, timeout=30) as http:
        redirect = http.get(
            f"{base_url}/auth/realms/healthcare/protocol/openid-connect/auth",
            params={
                "client_id": "vendor-software",
                "redirect_uri": REDIRECT_URI,
                "response_type": "code",
                "state": "bench",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "login_hint": PHYSICIAN_SSIN,
            },
        )
        code = parse_qs(urlsplit(redirect.headers["location"]).query)["code"][0]
        first = http.post(
            token_url,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": REDIRECT_URI,
                "client_id": "vendor-software",
                "code_verifier": verifier,
            },
        ).json()
        exchanged = http.post(
            token_url,
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": first["access_token"],
                "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "audience": "vaccicard-api",
                "client_id": "vendor-software",
            },
        ).json()
    return str(exchanged["access_token"])


class Tokens:
    """One token shared by the client threads, renewed before it expires."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._lock = threading.Lock()
        self._token = login(base_url)
        self._at = time.monotonic()

    def get(self) -> str:
        with self._lock:
            if time.monotonic() - self._at > TOKEN_RENEW_SECONDS:
                self._token = login(self.base_url)
                self._at = time.monotonic()
            return self._token


def rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(cache: str | None, db: Path | None) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "conformance.cli"]
    if cache:
        command += ["--package-cache", cache]
    command += ["serve", "--port", "0", "--admin-token", secrets.token_urlsafe(24)]
    if db is not None:
        command += ["--db", str(db)]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    for line in process.stdout:
        match = re.search(r"FHIR base URL\s+(\S+)/fhir", line)
        if match:
            base_url = match.group(1)
            break
    else:
        raise SystemExit("the simulator did not start:\n" + (process.stderr.read() if process.stderr else ""))
    threading.Thread(target=lambda: [None for _ in process.stdout or ()], daemon=True).start()  # drain
    return process, base_url


def run(base_url: str, pid: int, seconds: float, threads: int, report_every: float | None) -> None:
    tokens = Tokens(base_url)
    url = base_url + "/fhir/Immunization"
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []
    counts = [0] * threads
    run_id = secrets.token_hex(4)
    stop = threading.Event()

    def worker(index: int) -> None:
        with httpx.Client(timeout=30, headers={"Content-Type": "application/fhir+json"}) as http:
            number = 0
            while not stop.is_set():
                body = immunization(f"bench-{run_id}-{index}-{number}", number * threads + index)
                started = time.perf_counter()
                try:
                    answer = http.post(url, json=body, headers={"Authorization": f"Bearer {tokens.get()}"})
                except httpx.HTTPError as error:
                    errors.append(type(error).__name__)
                    continue
                latencies[index].append(time.perf_counter() - started)
                if answer.status_code == 201:
                    counts[index] += 1
                elif len(errors) < 1000:
                    errors.append(f"{answer.status_code} {answer.text[:200]}")
                number += 1

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    began = time.monotonic()
    for thread in pool:
        thread.start()
    print(
        f"{threads} client threads, {seconds:.0f} s, server pid {pid} (RSS {rss_mib(pid):.0f} MiB at start)"
    )
    next_report = report_every
    while (elapsed := time.monotonic() - began) < seconds:
        time.sleep(0.2)
        if next_report is not None and elapsed >= next_report:
            print(f"  after {elapsed / 60:.1f} min: {sum(counts)} creates, server RSS {rss_mib(pid):.1f} MiB")
            next_report += report_every  # type: ignore[operator]
    stop.set()
    for thread in pool:
        thread.join(30)
    elapsed = time.monotonic() - began
    every = sorted(value for series in latencies for value in series)
    created = sum(counts)
    print(f"validated creates: {created} in {elapsed:.1f} s = {created / elapsed:.0f} creates/s")
    if every:
        p50 = statistics.median(every) * 1000
        p99 = every[min(len(every) - 1, int(len(every) * 0.99))] * 1000
        print(f"latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {every[-1] * 1000:.1f} ms")
    print(f"errors: {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    print(f"server RSS at the end: {rss_mib(pid):.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=None, help="duration (default 30; 300 with --soak)")
    parser.add_argument("--threads", type=int, default=8, help="concurrent client threads (default 8)")
    parser.add_argument(
        "--soak", action="store_true", help="5 minutes, file-backed register, RSS each minute"
    )
    parser.add_argument("--package-cache", default=os.environ.get("VACCICARD_PACKAGE_CACHE"))
    args = parser.parse_args()
    seconds = args.seconds or (300.0 if args.soak else 30.0)
    with tempfile.TemporaryDirectory() as scratch:
        db = Path(scratch) / "register.sqlite" if args.soak else None
        process, base_url = start_server(args.package_cache, db)
        try:
            run(base_url, process.pid, seconds, args.threads, 60.0 if args.soak else None)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                code = process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            print(f"server stopped with exit code {code}")


if __name__ == "__main__":
    main()
