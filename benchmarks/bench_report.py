"""Benchmark the report of a large run: 1,000 scenarios and 10,000 exchanges (the budget: < 5 s, < 20 MB HTML).

    python benchmarks/bench_report.py                       # 1,000 scenarios x 10 exchanges, 1 in 10 failing
    python benchmarks/bench_report.py --fail-every 1        # worst case: every scenario fails (all bodies shown)
    python benchmarks/bench_report.py --scenarios 2000 --exchanges-per-scenario 5 --repeat 5

The synthetic run is the one the report tests use (tests/report_fixtures.py): test-data SSINs and names
and raw tokens in every exchange, so redaction does real work. Measured, best of ``--repeat``: building
report.json, rendering report.html from the written directory (the budget), and the whole
``write_report`` (redaction, evidence, HTML, JUnit, ticket, manifest).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.report_fixtures

from conformance.report import Redactor, build_report, load_directory, render, write_report
from tests.report_fixtures import catalogue, synthetic_run

HTML_BUDGET_SECONDS = 5.0
HTML_BUDGET_BYTES = 20_000_000


def best(timings: list[float]) -> str:
    return f"{min(timings):6.2f} s (worst {max(timings):.2f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=int, default=1000)
    parser.add_argument("--exchanges-per-scenario", type=int, default=10)
    parser.add_argument("--fail-every", type=int, default=10, help="1 in N scenarios fails (1: all)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    synthetic = synthetic_run(
        args.scenarios,
        args.exchanges_per_scenario,
        fail_every=args.fail_every,
        skip_every=0 if args.fail_every == 1 else 23,
    )
    redactor = Redactor.for_run()
    builds, writes, renders = [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        for attempt in range(args.repeat):
            start = time.perf_counter()
            report = build_report(synthetic.run, synthetic.scenarios, catalogue())
            builds.append(time.perf_counter() - start)
            start = time.perf_counter()
            folder = write_report(
                Path(scratch) / f"r{attempt}", report, synthetic.exchanges, redactor=redactor
            )
            writes.append(time.perf_counter() - start)
            source = load_directory(folder)
            start = time.perf_counter()
            html = render(source, "html")
            renders.append(time.perf_counter() - start)
        sizes = {path.name: path.stat().st_size for path in folder.iterdir()}

    failing = sum(1 for s in synthetic.scenarios if s.status == "failed")
    print(
        f"run: {len(synthetic.scenarios)} scenarios ({failing} failing), {len(synthetic.exchanges)} exchanges"
    )
    print(f"build_report        {best(builds)}")
    print(f"render report.html  {best(renders)}   budget {HTML_BUDGET_SECONDS:.0f} s")
    print(f"write_report (all)  {best(writes)}")
    print(f"report.html         {len(html) / 1e6:6.2f} MB   budget {HTML_BUDGET_BYTES / 1e6:.0f} MB")
    for name, size in sorted(sizes.items()):
        print(f"  {name:<18} {size / 1e6:8.2f} MB")
    within = min(renders) < HTML_BUDGET_SECONDS and len(html) < HTML_BUDGET_BYTES
    print("within budget" if within else "OVER BUDGET")
    sys.exit(0 if within else 1)


if __name__ == "__main__":
    main()
