"""Benchmark: load the package index of BeVaccination and its dependencies (six packages).

Usage: python benchmarks/bench_package_index.py [--package-cache DIR] [--repeat N]
The cache must already hold hl7.fhir.be.vaccination#1.1.2 and its dependencies. "Warm" means
the files are in the OS cache (the first run warms it); every run builds a new PackageSet.
"""

from __future__ import annotations

import argparse
import statistics
import time

from conformance.fhir.definitions import PackageSet
from conformance.fhir.packages import PackageCache

PROFILE = "https://www.ehealth.fgov.be/standards/fhir/vaccination/StructureDefinition/be-vaccination"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package-cache", default=None)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    cache = PackageCache(args.package_cache)
    timings = []
    for _ in range(args.repeat + 1):
        start = time.perf_counter()
        packages = PackageSet.load(cache)
        packages.resolve(PROFILE)
        timings.append(time.perf_counter() - start)
    warm = timings[1:]
    print(f"packages: {len(packages.packages)}  first run: {timings[0] * 1000:.1f} ms")
    median, worst = statistics.median(warm) * 1000, max(warm) * 1000
    print(f"warm load + one profile read: median {median:.1f} ms, max {worst:.1f} ms")


if __name__ == "__main__":
    main()
