"""The guided session end to end: ``run --adapter manual`` in a terminal, an operator answering.

The test is the operator: it reads each instruction on the terminal, carries it out in "the vendor
software" (here the reference client, pointed at the run's simulator), and types what it showed.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

from conformance.adapters.intents import ReadHistory
from conformance.adapters.reference import ReferenceAdapter
from conformance.fhir.packages import PackageCache

ROOT = Path(__file__).resolve().parent.parent


class Terminal:
    """The operator's side of a pseudo-terminal running the harness."""

    def __init__(self, argv: list[str]) -> None:
        self.fd, worker = pty.openpty()
        self.process = subprocess.Popen(argv, stdin=worker, stdout=worker, stderr=worker, cwd=ROOT)
        os.close(worker)
        self.seen = ""

    def expect(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while (match := re.search(pattern, self.seen)) is None:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"timed out waiting for {pattern!r}; the terminal shows:\n{self.seen[-2000:]}"
            self.seen += os.read(self.fd, 65536).decode("utf-8", "replace")
        self.seen = self.seen[match.end() :]
        return match

    def type(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())

    def finish(self) -> int:
        try:
            while self.process.poll() is None:
                if select.select([self.fd], [], [], 0.2)[0]:
                    try:
                        self.seen += os.read(self.fd, 65536).decode("utf-8", "replace")
                    except OSError:  # the harness exited and closed the terminal
                        break
            return self.process.wait(30)
        finally:
            os.close(self.fd)


def test_an_operator_walks_through_a_refused_history(package_cache: PackageCache, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    report = tmp_path / "report"
    harness = [sys.executable, "-m", "conformance.cli", "--package-cache", str(package_cache.root), "run"]
    options = ["-q", "--adapter", "manual", "--items", "VC-ACC-01", "--simulator-port", str(port)]
    terminal = Terminal([*harness, *options, "--report-dir", str(report), "--operator", "Test Operator"])
    patient = terminal.expect(r"Open the vaccination history of patient (\d{11})\.")[1]
    terminal.expect(r"Press Enter when it is done in the software\.")
    base = f"http://127.0.0.1:{port}"
    with ReferenceAdapter(base + "/fhir", base + "/auth", professional="75040201177") as software:
        shown = software.perform(ReadHistory(patient))
    terminal.type("")
    terminal.expect(r"What did the software show\?.*: ")
    terminal.type("r")
    terminal.expect(r"Type the message the software showed.*: ")
    terminal.type(shown.message or "")
    assert terminal.finish() == 0, terminal.seen
    data = json.loads((report / "report.json").read_text(encoding="utf-8"))
    [item] = [i for i in data["items"] if i["id"] == "VC-ACC-01"]
    assert item["verdict"] == "confirmed"
    [scenario] = data["scenarios"]
    assert scenario["confirmations"] and scenario["confirmations"][0].startswith("read-history: rejected: ")
