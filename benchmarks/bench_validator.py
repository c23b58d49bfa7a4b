"""Benchmark the validator: warm throughput, cold start, memory over a long stream.

    python benchmarks/bench_validator.py throughput [--count 10000]   # resources/s on one core vs plain parsing
    python benchmarks/bench_validator.py cold                         # wall time of `validate one-file.json`
    python benchmarks/bench_validator.py memory [--count 100000]      # peak RSS while streaming NDJSON
    python benchmarks/bench_validator.py jobs [--count 10000] [--jobs 2]
    python benchmarks/bench_validator.py big                          # `validate` on 50 MB: NDJSON and one Bundle

The corpus is made from the 35 Immunization examples of hl7.fhir.be.vaccination 1.1.2: each copy
gets its own id, business identifier, patient SSIN (valid check digits), dates and lot number, so no
two resources are the same. Uses the package cache of $VACCICARD_PACKAGE_CACHE (or ~/.fhir/packages).
"""

from __future__ import annotations

import argparse
import copy
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import orjson

from conformance.belgium.identifiers import SSIN, make_ssin
from conformance.fhir.batch import ValidationSettings, validate_stream
from conformance.fhir.definitions import PackageSet
from conformance.fhir.inputs import read_inputs
from conformance.fhir.packages import PackageCache
from conformance.fhir.validator import Validator


def corpus(packages: PackageSet, count: int, seed: int = 7) -> list[dict]:
    """``count`` distinct BeVaccination Immunizations derived from the IG examples."""
    rng = random.Random(seed)
    examples = [
        packages.read(e)
        for e in packages.examples()
        if e.resource_type == "Immunization" and e.package and e.package.id == "hl7.fhir.be.vaccination"
    ]
    result = []
    for i in range(count):
        item = copy.deepcopy(examples[i % len(examples)])
        item["id"] = f"bench-{i}"
        for identifier in item.get("identifier") or ():
            identifier["value"] = f"{rng.getrandbits(64):016x}-{i}"
        day = date(2020, 1, 1) + timedelta(days=rng.randrange(2000))
        if "occurrenceDateTime" in item:
            item["occurrenceDateTime"] = day.isoformat()
        item["recorded"] = (day + timedelta(days=rng.randrange(3))).isoformat()
        patient_id = (item.get("patient") or {}).get("identifier")
        if isinstance(patient_id, dict) and patient_id.get("system") == SSIN:
            birth = date(1940, 1, 1) + timedelta(days=rng.randrange(30000))
            patient_id["value"] = make_ssin(birth, rng.randrange(1, 998))
        for ext in item.get("extension") or ():
            for sub in ext.get("extension") or ():
                if sub.get("url") == "lotNumber":
                    sub["valueString"] = f"LOT{rng.randrange(10**6):06d}"
        result.append(item)
    return result


def write_ndjson(resources: list[dict], path: Path) -> None:
    with path.open("wb") as out:
        for item in resources:
            out.write(orjson.dumps(item) + b"\n")


def throughput(packages: PackageSet, count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.ndjson"
        write_ndjson(corpus(packages, count), path)
        lines = path.read_bytes().splitlines()
        start = time.perf_counter()
        for line in lines:
            orjson.loads(line)
        parse_seconds = time.perf_counter() - start
        validator = Validator(packages)
        for line in lines[:200]:  # warm-up: compile the plans, expand the value sets
            validator.validate(orjson.loads(line))
        errors = 0
        start = time.perf_counter()
        for line in lines:
            errors += not validator.validate(orjson.loads(line)).ok
        seconds = time.perf_counter() - start
    rate = count / seconds
    print(f"{count} resources in {seconds:.2f} s: {rate:,.0f} resources/s on one core; invalid: {errors}")
    print(
        f"plain orjson parsing: {count / parse_seconds:,.0f} resources/s; validation costs {seconds / parse_seconds:.0f}x parsing"
    )


def cold(packages: PackageSet) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "one.json"
        path.write_bytes(orjson.dumps(corpus(packages, 1)[0]))
        timings = []
        for _ in range(5):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "conformance.cli", "validate", str(path)],
                check=False,
                stdout=subprocess.DEVNULL,
            )
            timings.append(time.perf_counter() - start)
    print(
        f"cold `validate one-file.json`: first {timings[0]:.2f} s, best {min(timings):.2f} s, worst {max(timings):.2f} s"
    )


def memory(packages: PackageSet, count: int, cache: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.ndjson"
        with path.open("wb") as out:
            chunk = corpus(packages, 1000)
            for i in range(count):
                item = chunk[i % 1000]
                item["id"] = f"bench-{i}"
                out.write(orjson.dumps(item) + b"\n")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        seen = 0
        start = time.perf_counter()
        for _item, _outcome in validate_stream(
            read_inputs([str(path)]), ValidationSettings(cache_root=cache)
        ):
            seen += 1
            if seen in (count // 10, count):
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                print(f"after {seen} resources: peak RSS {peak:.0f} MB")
        seconds = time.perf_counter() - start
    print(f"streamed {seen} resources in {seconds:.1f} s; peak RSS before streaming {before:.0f} MB")


def jobs(packages: PackageSet, count: int, cache: Path, workers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.ndjson"
        write_ndjson(corpus(packages, count), path)
        start = time.perf_counter()
        seen = sum(
            1
            for _ in validate_stream(read_inputs([str(path)]), ValidationSettings(cache_root=cache), workers)
        )
        seconds = time.perf_counter() - start
    print(
        f"--jobs {workers}: {seen} resources in {seconds:.2f} s ({seen / seconds:,.0f} resources/s, start-up included)"
    )


def big(packages: PackageSet) -> None:
    """`validate` on a 50 MB NDJSON file and a 50 MB Bundle: time, exit code, no traceback."""
    resources = corpus(packages, 1000)
    with tempfile.TemporaryDirectory() as tmp:
        ndjson, bundle = Path(tmp) / "big.ndjson", Path(tmp) / "big-bundle.json"
        entries = []
        with ndjson.open("wb") as out:
            while out.tell() < 50 * 1024 * 1024:
                item = resources[len(entries) % len(resources)]
                out.write(orjson.dumps(item) + b"\n")
                entries.append(
                    {"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{len(entries):012d}", "resource": item}
                )
        bundle.write_bytes(orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))
        for path in (ndjson, bundle):
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "conformance.cli", "validate", "--format", "ndjson", str(path)],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            seconds = time.perf_counter() - start
            size = path.stat().st_size / 1024 / 1024
            trace = "Traceback" in done.stderr.decode()
            print(
                f"{path.name}: {size:.0f} MB, {len(entries)} resources, exit {done.returncode}, "
                f"{seconds:.1f} s, traceback: {trace}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["throughput", "cold", "memory", "jobs", "big"])
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--package-cache", default=None)
    args = parser.parse_args()
    cache = PackageCache(args.package_cache)
    packages = PackageSet.load(cache)
    if args.mode == "throughput":
        throughput(packages, args.count or 10_000)
    elif args.mode == "cold":
        cold(packages)
    elif args.mode == "big":
        big(packages)
    elif args.mode == "memory":
        memory(packages, args.count or 100_000, cache.root)
    else:
        jobs(packages, args.count or 10_000, cache.root, args.jobs)


if __name__ == "__main__":
    main()
