"""The FHIR NPM package cache and how packages get into it.

The cache has the standard layout that SUSHI, the HL7 validator and Firely share:
``<cache>/<id>#<version>/package/...`` (default ``~/.fhir/packages``, overridable with
``--package-cache`` or ``VACCICARD_PACKAGE_CACHE``). Packages come from a local folder of
``<id>#<version>.tgz`` files, a single ``.tgz``, or a FHIR package registry over HTTP
(``GET {registry}/{id}/{version}``). Every install is atomic: the tarball is unpacked into a hidden
temporary folder inside the cache and renamed into place, so an interrupted or corrupt download
leaves nothing half-installed and two installs at once cannot corrupt the cache.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

import httpx
import orjson

from conformance.errors import PackageError, TargetUnreachableError

DEFAULT_REGISTRY = "https://packages.fhir.org"
DEFAULT_ROOT_PACKAGES = ("hl7.fhir.be.vaccination#1.1.2",)
CACHE_ENV = "VACCICARD_PACKAGE_CACHE"

# Declared dependencies that may be absent: a warning, listed everywhere, never a silent skip.
# hl7.fhir.be.medication#1.0.0 declares hl7.terminology#3.1.0, which no resource of the Belgian
# packages uses and which cannot be obtained offline.
TOLERATED_GAPS: dict[str, str] = {
    "hl7.terminology#3.1.0": "declared by hl7.fhir.be.medication#1.0.0 but used by no resource of the "
    "Belgian packages",
}

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_-]*$")


@dataclass(frozen=True, order=True)
class PackageRef:
    """A package id with an exact version, written ``id#version``."""

    id: str
    version: str

    @classmethod
    def parse(cls, text: str) -> PackageRef:
        """Parse ``id#version`` (``id@version`` is accepted as npm writes it)."""
        name, sep, version = text.strip().replace("@", "#", 1).partition("#")
        if not sep or not _ID_RE.match(name) or not _VERSION_RE.match(version):
            raise PackageError(f"not a package reference (expected id#version): {text!r}")
        return cls(name, version)

    def __str__(self) -> str:
        return f"{self.id}#{self.version}"


@dataclass(frozen=True)
class InstalledPackage:
    """A package present in the cache, with its manifest (``package/package.json``)."""

    ref: PackageRef
    folder: Path
    manifest: dict

    @property
    def content_dir(self) -> Path:
        """The ``package/`` folder that holds the resources."""
        return self.folder / "package"

    @property
    def dependencies(self) -> list[PackageRef]:
        """Declared dependencies, in manifest order."""
        deps = self.manifest.get("dependencies") or {}
        return [PackageRef(name, str(version)) for name, version in deps.items()]


@dataclass
class Gap:
    """A declared dependency that is not installed."""

    missing: PackageRef
    needed_by: PackageRef
    tolerated: bool
    reason: str = ""

    def __str__(self) -> str:
        text = f"{self.missing} (needed by {self.needed_by}) is not installed"
        return f"{text}: tolerated, {self.reason}" if self.tolerated else text


def default_cache_dir() -> Path:
    """``$VACCICARD_PACKAGE_CACHE`` if set, else the standard ``~/.fhir/packages``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".fhir" / "packages"


def read_manifest(path: Path, where: str) -> dict:
    """Read a ``package.json``; ``where`` names the package or file in the error message."""
    try:
        manifest = orjson.loads(path.read_bytes())
    except FileNotFoundError as exc:
        raise PackageError(f"{where}: no package/package.json, this is not a FHIR package") from exc
    except orjson.JSONDecodeError as exc:
        raise PackageError(f"{where}: package/package.json is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or not manifest.get("name") or not manifest.get("version"):
        raise PackageError(f"{where}: package/package.json lacks a name or a version")
    return manifest


class PackageCache:
    """A FHIR package cache folder."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def folder_for(self, ref: PackageRef) -> Path:
        """Where ``ref`` lives (or would live) in this cache."""
        return self.root / str(ref)

    def get(self, ref: PackageRef) -> InstalledPackage | None:
        """The installed package ``ref``, or None."""
        folder = self.folder_for(ref)
        manifest_path = folder / "package" / "package.json"
        if not manifest_path.is_file():
            return None
        return InstalledPackage(ref, folder, read_manifest(manifest_path, str(ref)))

    def installed(self) -> list[InstalledPackage]:
        """Every package in the cache, sorted by id and version."""
        if not self.root.is_dir():
            return []
        found = []
        for child in sorted(self.root.iterdir()):
            if child.name.startswith(".") or "#" not in child.name:
                continue  # temporary folders of installs in progress, packages.ini, ...
            with contextlib.suppress(PackageError):
                package = self.get(PackageRef.parse(child.name))
                if package is not None:
                    found.append(package)
        return found

    def gaps(self) -> list[Gap]:
        """Declared dependencies of installed packages that are not installed."""
        result = []
        for package in self.installed():
            for dep in package.dependencies:
                if self.get(dep) is None:
                    result.append(_gap(dep, package.ref))
        return result

    def install_archive(self, archive: Path, expected: PackageRef | None, origin: str) -> InstalledPackage:
        """Unpack a package tarball into the cache atomically; returns the installed package.

        ``expected`` is checked against the tarball's own manifest; ``origin`` names where the
        tarball came from in error messages. If the package is already installed (another install
        won the race), the existing one is kept.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        label = str(expected) if expected else origin
        staging = Path(tempfile.mkdtemp(prefix=".installing-", dir=self.root))
        try:
            _extract(archive, staging, label, origin)
            manifest = read_manifest(staging / "package" / "package.json", f"{label} from {origin}")
            ref = PackageRef(manifest["name"], str(manifest["version"]))
            if expected is not None and ref != expected:
                raise PackageError(f"{origin} holds {ref}, not the requested {expected}")
            target = self.folder_for(ref)
            if not target.exists():
                try:
                    os.rename(staging, target)
                except OSError:
                    if not target.exists():  # not a lost race but a real failure
                        raise
            return InstalledPackage(ref, target, manifest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _gap(missing: PackageRef, needed_by: PackageRef) -> Gap:
    reason = TOLERATED_GAPS.get(str(missing))
    return Gap(missing, needed_by, tolerated=reason is not None, reason=reason or "")


def _extract(archive: Path, destination: Path, label: str, origin: str) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(destination, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise PackageError(f"{label}: corrupt or unreadable package archive from {origin}: {exc}") from exc


class PackageSource(Protocol):
    """Somewhere packages can be fetched from."""

    def describe(self) -> str:
        """A short name for messages."""

    @contextlib.contextmanager
    def fetch(self, ref: PackageRef) -> Iterator[Path | None]:
        """Yield a local tarball path of ``ref``, or None when this source does not have it."""


@dataclass
class FolderSource:
    """A folder of ``<id>#<version>.tgz`` files (``<id>-<version>.tgz`` is accepted too)."""

    folder: Path

    def describe(self) -> str:
        return f"folder {self.folder}"

    def _path(self, ref: PackageRef) -> Path | None:
        for name in (f"{ref.id}#{ref.version}.tgz", f"{ref.id}-{ref.version}.tgz"):
            if (self.folder / name).is_file():
                return self.folder / name
        return None

    @contextlib.contextmanager
    def fetch(self, ref: PackageRef) -> Iterator[Path | None]:
        yield self._path(ref)


@dataclass
class FileSource:
    """A single package tarball; it provides exactly the package its manifest names."""

    file: Path
    ref: PackageRef = field(init=False)

    def __post_init__(self) -> None:
        try:
            with tarfile.open(self.file, "r:*") as tar:
                member = tar.extractfile("package/package.json")
                if member is None:
                    raise KeyError("package/package.json")
                manifest = orjson.loads(member.read())
        except KeyError as exc:
            raise PackageError(f"{self.file}: no package/package.json, this is not a FHIR package") from exc
        except (tarfile.TarError, EOFError, zlib.error, OSError, orjson.JSONDecodeError) as exc:
            raise PackageError(f"{self.file}: corrupt or unreadable package archive: {exc}") from exc
        if not isinstance(manifest, dict) or "name" not in manifest or "version" not in manifest:
            raise PackageError(f"{self.file}: package/package.json lacks a name or a version")
        self.ref = PackageRef(manifest["name"], str(manifest["version"]))

    def describe(self) -> str:
        return f"file {self.file}"

    @contextlib.contextmanager
    def fetch(self, ref: PackageRef) -> Iterator[Path | None]:
        yield self.file if ref == self.ref else None


@dataclass
class RegistrySource:
    """A FHIR package registry: ``GET {url}/{id}/{version}`` answers the tarball."""

    url: str
    scratch: Path
    timeout: float = 60.0
    transport: httpx.BaseTransport | None = None

    def describe(self) -> str:
        return f"registry {self.url}"

    def _client(self) -> httpx.Client:
        return httpx.Client(timeout=self.timeout, follow_redirects=True, transport=self.transport)

    @contextlib.contextmanager
    def fetch(self, ref: PackageRef) -> Iterator[Path | None]:
        url = f"{self.url.rstrip('/')}/{ref.id}/{ref.version}"
        self.scratch.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=".download-", suffix=".tgz", dir=self.scratch)
        path = Path(name)
        try:
            with os.fdopen(handle, "wb") as out:
                found = self._download(ref, url, out)
            yield path if found else None
        finally:
            path.unlink(missing_ok=True)

    def _download(self, ref: PackageRef, url: str, out: BinaryIO) -> bool:
        try:
            with self._client() as client, client.stream("GET", url) as response:
                if response.status_code == 404:
                    return False
                if response.status_code != 200:
                    raise PackageError(f"{ref}: registry answered HTTP {response.status_code} for {url}")
                for chunk in response.iter_bytes():
                    out.write(chunk)
        except httpx.TransportError as exc:
            raise TargetUnreachableError(f"{ref}: download from {url} failed: {exc}") from exc
        return True


@dataclass
class InstallReport:
    """What an install did."""

    installed: list[PackageRef] = field(default_factory=list)
    already_present: list[PackageRef] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)


def install(
    cache: PackageCache,
    roots: Iterable[PackageRef],
    sources: Sequence[PackageSource],
) -> InstallReport:
    """Install ``roots`` and their dependencies, transitively, from the first source that has each.

    A dependency found nowhere is an error naming it and who needs it, unless it is a tolerated gap
    (``TOLERATED_GAPS``), which is reported as a warning in the result.
    """
    report = InstallReport()

    def provide(ref: PackageRef) -> InstalledPackage | None:
        package = cache.get(ref)
        if package is not None:
            report.already_present.append(ref)
            return package
        package = _fetch_and_install(cache, ref, sources)
        if package is not None:
            report.installed.append(ref)
        return package

    def missing(ref: PackageRef, needed_by: PackageRef | None) -> PackageError:
        where = ", ".join(source.describe() for source in sources) or "no source"
        who = f", needed by {needed_by}" if needed_by else ""
        return PackageError(f"package {ref}{who}, was not found in {where}")

    _, report.gaps = dependency_closure(roots, provide, missing)
    return report


def dependency_closure(
    roots: Iterable[PackageRef],
    provide: Callable[[PackageRef], InstalledPackage | None],
    missing: Callable[[PackageRef, PackageRef | None], PackageError],
) -> tuple[list[InstalledPackage], list[Gap]]:
    """Walk roots and their dependencies breadth first; ``provide`` gets each package or None.

    A package that cannot be provided raises ``missing(ref, needed_by)``, except a tolerated gap
    (``TOLERATED_GAPS``) among the dependencies, which is returned as a Gap.
    """
    packages: list[InstalledPackage] = []
    gaps: list[Gap] = []
    queue: list[tuple[PackageRef, PackageRef | None]] = [(ref, None) for ref in roots]
    seen: set[PackageRef] = set()
    while queue:
        ref, needed_by = queue.pop(0)
        if ref in seen:
            continue
        seen.add(ref)
        package = provide(ref)
        if package is None:
            if needed_by is not None and str(ref) in TOLERATED_GAPS:
                gaps.append(_gap(ref, needed_by))
                continue
            raise missing(ref, needed_by)
        packages.append(package)
        queue.extend((dep, ref) for dep in package.dependencies)
    return packages, gaps


def _fetch_and_install(
    cache: PackageCache, ref: PackageRef, sources: Sequence[PackageSource]
) -> InstalledPackage | None:
    for source in sources:
        with source.fetch(ref) as archive:
            if archive is not None:
                return cache.install_archive(archive, ref, source.describe())
    return None


def dependency_tree(cache: PackageCache) -> list[tuple[InstalledPackage, list[tuple[PackageRef, bool]]]]:
    """Each installed package with its declared dependencies and whether each is installed."""
    return [
        (package, [(dep, cache.get(dep) is not None) for dep in package.dependencies])
        for package in cache.installed()
    ]
