"""Benchmark the whole evaluation suite against the embedded simulator, as ``vaccicard-conformance run``.

    python benchmarks/bench_suite.py                      # the reference adapter, 3 runs
    python benchmarks/bench_suite.py --adapter faulty:no-retry --runs 5

Each run is a fresh ``vaccicard-conformance run`` process (start-up, package loading, profile
compilation, simulator keys, every scenario, the report written), timed from outside; the figure is
the median wall-clock time and the slowest run. Uses the package cache of ``--package-cache``, else
$VACCICARD_PACKAGE_CACHE, else ~/.fhir/packages.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default="reference")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--package-cache", default=os.environ.get("VACCICARD_PACKAGE_CACHE"))
    options = parser.parse_args()
    cache = ["--package-cache", options.package_cache] if options.package_cache else []
    seconds, counts = [], ""
    with tempfile.TemporaryDirectory() as folder:
        for number in range(options.runs):
            report = Path(folder) / f"run-{number}"
            command = [
                sys.executable,
                "-m",
                "conformance.cli",
                *cache,
                "run",
                "-q",
                "--adapter",
                options.adapter,
            ]
            started = time.perf_counter()
            done = subprocess.run([*command, "--report-dir", str(report)], capture_output=True, text=True)
            seconds.append(time.perf_counter() - started)
            counts = next((line for line in done.stdout.splitlines() if "scenario(s)" in line), done.stderr)
    print(counts)
    print(
        f"whole suite, {options.runs} run(s): median {statistics.median(seconds):.1f} s, slowest {max(seconds):.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
