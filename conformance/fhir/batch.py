"""Validating many inputs: the package set a run needs, streaming in order, parallel with ``jobs``.

``ValidationSettings`` says which packages, profile and options a run uses; ``validate_stream`` turns
input items into (item, outcome) pairs in input order, in this process or in worker processes that
each build their own Validator, reading the input in bounded batches so memory stays flat.
``render`` writes outcomes as text, a JSON OperationOutcome (a Bundle of them for several) or NDJSON.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO

import orjson

from conformance.errors import ConfigurationError
from conformance.fhir.definitions import PackageSet
from conformance.fhir.inputs import InputItem
from conformance.fhir.outcome import Outcome
from conformance.fhir.packages import (
    DEFAULT_ROOT_PACKAGES,
    FileSource,
    InstalledPackage,
    PackageCache,
    PackageRef,
    install,
    read_manifest,
)
from conformance.fhir.terminology import Terminology
from conformance.fhir.validator import Validator

BATCH = 2000  # resources read ahead per round when validating in several processes


@dataclass(frozen=True)
class ValidationSettings:
    """Everything a worker needs to build the same Validator."""

    cache_root: Path
    igs: tuple[str, ...] = ()
    profile: str | None = None
    strict_identifiers: bool = False
    tx_server: str | None = None
    best_practice: str = "information"
    roots: tuple[str, ...] = field(default=DEFAULT_ROOT_PACKAGES)


def load_packages(settings: ValidationSettings) -> tuple[PackageSet, str | None]:
    """The package set of a run, with ``--ig`` additions; returns it and the profile URL to use.

    An ``--ig`` is a package ``id#version`` from the cache, a ``.tgz`` (installed into the cache
    first), a package folder, or one conformance resource file (StructureDefinition, ValueSet ...).
    A ``--profile`` that names a file is added the same way and replaced by its URL.
    """
    cache = PackageCache(settings.cache_root)
    roots: list[str] = list(settings.roots)
    files: list[Path] = []
    folders: list[Path] = []
    for ig in settings.igs:
        path = Path(ig)
        if path.is_file() and path.name.endswith(".tgz"):
            source = FileSource(path)
            install(cache, [source.ref], [source])
            roots.append(str(source.ref))
        elif path.is_dir():
            folders.append(path)
        elif path.is_file():
            files.append(path)
        elif "#" in ig or "@" in ig:
            roots.append(str(PackageRef.parse(ig)))
        else:
            raise ConfigurationError(f"--ig {ig}: not a file, a folder or an id#version")
    packages = PackageSet.load(cache, roots)
    for folder in folders:
        packages.add_package(_folder_package(folder))
    for file in files:
        packages.add_resource_file(file)
    profile = settings.profile
    if profile and Path(profile).is_file():
        entry = packages.add_resource_file(Path(profile))
        if entry.resource_type != "StructureDefinition" or not entry.url:
            raise ConfigurationError(f"--profile {profile}: not a StructureDefinition with a url")
        profile = entry.url
    return packages, profile


def _folder_package(folder: Path) -> InstalledPackage:
    root = folder if (folder / "package" / "package.json").is_file() else folder.parent
    if not (root / "package" / "package.json").is_file():
        raise ConfigurationError(f"--ig {folder}: not a package folder (no package/package.json)")
    manifest = read_manifest(root / "package" / "package.json", str(folder))
    return InstalledPackage(PackageRef(manifest["name"], str(manifest["version"])), root, manifest)


def build_validator(settings: ValidationSettings) -> tuple[Validator, str | None]:
    """A Validator for these settings, and the profile URL to validate against (if any)."""
    packages, profile = load_packages(settings)
    terminology = Terminology(packages, settings.tx_server)
    validator = Validator(
        packages,
        terminology=terminology,
        strict_identifiers=settings.strict_identifiers,
        best_practice=settings.best_practice,
    )
    if profile:
        validator.profile_plan(profile)  # fail early on an unknown profile
    return validator, profile


def _check(validator: Validator, profile: str | None, item: InputItem) -> Outcome:
    if item.problem is not None:
        return Outcome([item.problem], label=item.label)
    outcome = validator.validate(item.resource, profile)
    outcome.label = item.label
    return outcome


_worker: tuple[Validator, str | None] | None = None


def _init_worker(settings: ValidationSettings) -> None:
    global _worker  # one Validator per worker process, built once
    _worker = build_validator(settings)


def _check_in_worker(item: InputItem) -> Outcome:
    assert _worker is not None
    return _check(_worker[0], _worker[1], item)


def validate_stream(
    items: Iterable[InputItem], settings: ValidationSettings, jobs: int = 1
) -> Iterator[tuple[InputItem, Outcome]]:
    """Validate items in input order; with ``jobs > 1`` in that many worker processes."""
    if jobs <= 1:
        validator, profile = build_validator(settings)
        for item in items:
            yield item, _check(validator, profile, item)
        return
    build_validator(settings)  # report configuration errors here, not in every worker
    context = multiprocessing.get_context("spawn")
    with context.Pool(jobs, initializer=_init_worker, initargs=(settings,)) as pool:
        iterator = iter(items)
        while batch := list(islice(iterator, BATCH)):
            outcomes = pool.map(_check_in_worker, batch, chunksize=max(1, len(batch) // (jobs * 4)))
            yield from zip(batch, outcomes, strict=True)


def render(results: Iterable[tuple[InputItem, Outcome]], fmt: str, out: IO[str]) -> tuple[int, int, int]:
    """Write outcomes in ``text``, ``json`` or ``ndjson``; returns (resources, errors, warnings)."""
    resources = errors = warnings = 0
    collected: list[dict] = []
    for _item, outcome in results:
        resources += 1
        errors += len(outcome.errors())
        warnings += len(outcome.warnings())
        if fmt == "ndjson":
            out.write(orjson.dumps(outcome.to_operation_outcome()).decode() + "\n")
        elif fmt == "json":
            collected.append(outcome.to_operation_outcome())
        else:
            _write_text(outcome, out)
    if fmt == "json":
        if len(collected) == 1:
            document = collected[0]
        else:
            document = {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": oo} for oo in collected],
            }
        out.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif fmt == "text":
        verdict = "FAILED" if errors else "PASSED"
        out.write(f"{verdict}: {resources} resource(s), {errors} error(s), {warnings} warning(s)\n")
    return resources, errors, warnings


def _write_text(outcome: Outcome, out: IO[str]) -> None:
    errors, warnings = len(outcome.errors()), len(outcome.warnings())
    information = outcome.count("information")
    state = "OK" if outcome.ok else "INVALID"
    out.write(f"== {outcome.label}: {state} ({errors} errors, {warnings} warnings, {information} notes)\n")
    for issue in outcome.sorted_issues():
        out.write(f"   {issue.to_text()}\n")
