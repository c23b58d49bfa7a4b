"""A loaded set of FHIR packages and the index of the resources they hold.

``PackageSet.load(cache, roots)`` takes root packages from the cache with their dependencies,
transitively, and indexes every resource by canonical URL and by resource type from each package's
``.index.json`` (built by scanning the folder when a package has none). Files are read lazily, on
the first look-up that needs them, and kept. Single conformance resources (a StructureDefinition,
ValueSet or CodeSystem file) can be added on top, as the HL7 validator's ``-ig`` allows.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from conformance.errors import PackageError
from conformance.fhir.packages import (
    DEFAULT_ROOT_PACKAGES,
    Gap,
    InstalledPackage,
    PackageCache,
    PackageRef,
    dependency_closure,
)


@dataclass(frozen=True)
class ResourceEntry:
    """One resource of a package, as its index describes it."""

    package: PackageRef | None  # None for a resource added from a single file
    path: Path
    resource_type: str
    id: str | None
    url: str | None
    version: str | None
    example: bool = False


def version_key(version: str | None) -> tuple:
    """Sort key for business versions: numeric parts compare as numbers."""
    parts = re.split(r"[.\-+]", version or "")
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


class PackageSet:
    """Resources of several packages, looked up by canonical URL (``url|version``) or type."""

    def __init__(self, packages: Iterable[InstalledPackage] = (), gaps: Iterable[Gap] = ()) -> None:
        self.packages: list[InstalledPackage] = []
        self.gaps: list[Gap] = list(gaps)
        self._by_url: dict[str, list[ResourceEntry]] = {}
        self._by_type: dict[str, list[ResourceEntry]] = {}
        self._examples: list[ResourceEntry] = []
        self._loaded: dict[Path, dict] = {}
        self.extra_files: list[Path] = []
        for package in packages:
            self.add_package(package)

    @classmethod
    def load(
        cls, cache: PackageCache, roots: Iterable[PackageRef | str] = DEFAULT_ROOT_PACKAGES
    ) -> PackageSet:
        """Load root packages from the cache and their dependencies, transitively.

        A missing dependency is an error naming it and who needs it, except the tolerated gaps,
        which are kept in ``gaps`` for the report.
        """

        def missing(ref: PackageRef, needed_by: PackageRef | None) -> PackageError:
            if needed_by is None:
                return PackageError(
                    f"package {ref} is not in the package cache {cache.root}; install it with "
                    f"`vaccicard-conformance packages install {ref}` (add --from DIR when offline)"
                )
            return PackageError(
                f"package {ref}, needed by {needed_by}, is not in the package cache {cache.root}; "
                f"install it with `vaccicard-conformance packages install {needed_by}`"
            )

        refs = [PackageRef.parse(r) if isinstance(r, str) else r for r in roots]
        packages, gaps = dependency_closure(refs, cache.get, missing)
        return cls(packages, gaps)

    # -- building the index ------------------------------------------------------------------

    def add_package(self, package: InstalledPackage) -> None:
        """Index one installed package (its resources and its examples)."""
        self.packages.append(package)
        content = package.content_dir
        for entry in _index_entries(content, package.ref, example=False):
            self._add(entry)
        example_dir = content / "example"
        if example_dir.is_dir():
            self._examples.extend(_index_entries(example_dir, package.ref, example=True))

    def add_resource_file(self, path: Path) -> ResourceEntry:
        """Add a single conformance resource (StructureDefinition, ValueSet, CodeSystem ...) file."""
        try:
            resource = orjson.loads(path.read_bytes())
        except OSError as exc:
            raise PackageError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except orjson.JSONDecodeError as exc:
            raise PackageError(f"{path}: not valid JSON: {exc}") from exc
        if not isinstance(resource, dict) or "resourceType" not in resource:
            raise PackageError(f"{path}: not a FHIR resource (no resourceType)")
        resolved = path.resolve()
        entry = ResourceEntry(
            None,
            resolved,
            resource["resourceType"],
            resource.get("id"),
            resource.get("url"),
            resource.get("version"),
        )
        self._loaded[resolved] = resource
        self.extra_files.append(resolved)
        self._add(entry, first=True)
        return entry

    def _add(self, entry: ResourceEntry, first: bool = False) -> None:
        if entry.url:
            bucket = self._by_url.setdefault(entry.url, [])
            bucket.insert(0, entry) if first else bucket.append(entry)
        self._by_type.setdefault(entry.resource_type, []).append(entry)

    # -- look-ups ----------------------------------------------------------------------------

    def entry(self, canonical: str) -> ResourceEntry | None:
        """The index entry for ``url`` or ``url|version``; the highest version wins without one.

        A resource added from a single file wins over packaged ones with the same URL.
        """
        url, _, version = canonical.partition("|")
        candidates = self._by_url.get(url)
        if not candidates:
            return None
        if version:
            matching = [e for e in candidates if e.version == version]
            if not matching:  # "|1.1" matches 1.1.x, as the FHIR versioning rules allow
                matching = [e for e in candidates if (e.version or "").startswith(version + ".")]
            candidates = matching
            if not candidates:
                return None
        if candidates[0].package is None:
            return candidates[0]
        return max(
            candidates,
            key=lambda e: (version_key(e.version), version_key(e.package.version if e.package else None)),
        )

    def resolve(self, canonical: str) -> dict | None:
        """The resource for ``url`` or ``url|version``, or None."""
        entry = self.entry(canonical)
        return self.read(entry) if entry else None

    def versions(self, url: str) -> list[str]:
        """All versions present for a canonical URL."""
        return [e.version or "" for e in self._by_url.get(url.partition("|")[0], [])]

    def by_type(self, resource_type: str) -> Iterator[ResourceEntry]:
        """Index entries of every (non-example) resource of one type."""
        return iter(self._by_type.get(resource_type, []))

    def examples(self) -> Iterator[ResourceEntry]:
        """Index entries of the packages' example resources."""
        return iter(self._examples)

    def read(self, entry: ResourceEntry) -> dict:
        """The resource behind an index entry (read once, then kept)."""
        resource = self._loaded.get(entry.path)
        if resource is None:
            where = f"{entry.package}: {entry.path.name}" if entry.package else str(entry.path)
            try:
                resource = orjson.loads(entry.path.read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                raise PackageError(f"{where}: cannot read resource: {exc}") from exc
            self._loaded[entry.path] = resource
        return resource

    def fingerprint(self) -> str:
        """A hash naming this exact set of packages and added files (a key for compiled caches)."""
        digest = hashlib.sha256()
        for package in self.packages:
            digest.update(str(package.ref).encode())
            digest.update((package.content_dir / "package.json").read_bytes())
        for path in self.extra_files:
            digest.update(path.read_bytes())
        return digest.hexdigest()


def _index_entries(folder: Path, package: PackageRef, example: bool) -> list[ResourceEntry]:
    index_path = folder / ".index.json"
    if index_path.is_file():
        try:
            files = orjson.loads(index_path.read_bytes())["files"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise PackageError(
                f"{package}: {index_path.name} in {folder.name}/ is unreadable: {exc}"
            ) from exc
    else:
        files = _scan(folder)
    return [
        ResourceEntry(
            package,
            folder / f["filename"],
            f.get("resourceType", ""),
            f.get("id"),
            f.get("url"),
            f.get("version"),
            example,
        )
        for f in files
        if f.get("filename") and f.get("resourceType")
    ]


def _scan(folder: Path) -> list[dict]:
    """Index a package folder that ships no ``.index.json`` by reading each JSON file."""
    files = []
    for path in sorted(folder.glob("*.json")):
        if path.name == "package.json":
            continue
        try:
            resource = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:
            continue
        if isinstance(resource, dict) and "resourceType" in resource:
            files.append(
                {
                    "filename": path.name,
                    "resourceType": resource["resourceType"],
                    "id": resource.get("id"),
                    "url": resource.get("url"),
                    "version": resource.get("version"),
                }
            )
    return files
