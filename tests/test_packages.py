"""The FHIR package cache: installs from a folder, a file and a registry; failures; the index."""

from __future__ import annotations

import http.server
import io
import json
import multiprocessing
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.errors import PackageError, TargetUnreachableError
from conformance.fhir import packages as pkg
from conformance.fhir.definitions import PackageSet
from conformance.fhir.packages import FileSource, FolderSource, PackageCache, PackageRef, RegistrySource

VACCINATION = PackageRef("hl7.fhir.be.vaccination", "1.1.2")
R4 = PackageRef("hl7.fhir.r4.core", "4.0.1")
ALL_SIX = {
    "hl7.fhir.be.vaccination#1.1.2",
    "hl7.fhir.r4.core#4.0.1",
    "hl7.fhir.be.core#2.1.2",
    "hl7.fhir.be.core#2.0.0",
    "hl7.fhir.be.medication#1.0.0",
    "hl7.fhir.be.core-clinical#1.0.0",
}


def make_package(folder: Path, name: str, version: str, deps: dict[str, str] | None = None) -> Path:
    """Write a small package tarball ``<name>#<version>.tgz`` with one StructureDefinition."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"name": name, "version": version, "dependencies": deps or {}}
    resource = {
        "resourceType": "StructureDefinition",
        "id": "thing",
        "url": f"http://example.org/{name}/StructureDefinition/thing",
        "version": version,
    }
    path = folder / f"{name}#{version}.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for member, content in (("package/package.json", manifest), ("package/SD-thing.json", resource)):
            data = json.dumps(content).encode()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def leftovers(cache: PackageCache) -> list[str]:
    return [p.name for p in cache.root.iterdir() if p.name.startswith(".")] if cache.root.exists() else []


@pytest.fixture
def cache(tmp_path: Path) -> PackageCache:
    return PackageCache(tmp_path / "cache")


def test_install_from_folder_installs_dependencies_and_reports_the_tolerated_gap(
    cache: PackageCache, fhir_package_source: Path
) -> None:
    report = pkg.install(cache, [VACCINATION], [FolderSource(fhir_package_source)])
    assert {str(r) for r in report.installed} == ALL_SIX
    assert [str(g.missing) for g in report.gaps] == ["hl7.terminology#3.1.0"]
    assert str(report.gaps[0].needed_by) == "hl7.fhir.be.medication#1.0.0"
    assert report.gaps[0].tolerated
    assert (cache.folder_for(VACCINATION) / "package" / "StructureDefinition-be-vaccination.json").is_file()
    assert leftovers(cache) == []
    again = pkg.install(cache, [VACCINATION], [FolderSource(fhir_package_source)])
    assert again.installed == [] and {str(r) for r in again.already_present} == ALL_SIX


def test_install_from_one_tgz(cache: PackageCache, fhir_package_source: Path) -> None:
    source = FileSource(fhir_package_source / "hl7.fhir.r4.core#4.0.1.tgz")
    assert source.ref == R4
    report = pkg.install(cache, [source.ref], [source])
    assert report.installed == [R4]
    assert cache.get(R4) is not None


def test_install_from_one_tgz_without_its_dependency_names_both(
    cache: PackageCache, fhir_package_source: Path
) -> None:
    source = FileSource(fhir_package_source / "hl7.fhir.be.core#2.1.2.tgz")
    with pytest.raises(
        PackageError, match=r"hl7\.fhir\.r4\.core#4\.0\.1, needed by hl7\.fhir\.be\.core#2\.1\.2"
    ):
        pkg.install(cache, [source.ref], [source])


def test_missing_dependency_is_an_error_naming_it_and_who_needs_it(
    cache: PackageCache, tmp_path: Path
) -> None:
    folder = tmp_path / "src"
    make_package(folder, "example.a", "1.0.0", {"example.b": "2.0.0"})
    with pytest.raises(PackageError) as caught:
        pkg.install(cache, [PackageRef("example.a", "1.0.0")], [FolderSource(folder)])
    assert "example.b#2.0.0" in caught.value.message
    assert "needed by example.a#1.0.0" in caught.value.message
    # what could be installed stays installed and usable; nothing half-written
    assert cache.get(PackageRef("example.a", "1.0.0")) is not None
    assert leftovers(cache) == []


def test_unknown_root_package_is_an_error(cache: PackageCache, tmp_path: Path) -> None:
    with pytest.raises(PackageError, match=r"example\.none#1\.0\.0, was not found in folder"):
        pkg.install(cache, [PackageRef("example.none", "1.0.0")], [FolderSource(tmp_path)])


def test_corrupt_tarball_leaves_nothing_installed(cache: PackageCache, tmp_path: Path) -> None:
    folder = tmp_path / "src"
    good = make_package(folder, "example.a", "1.0.0").read_bytes()
    (folder / "example.a#1.0.0.tgz").write_bytes(good[: len(good) // 2])  # truncated download
    with pytest.raises(PackageError, match=r"example\.a#1\.0\.0: corrupt or unreadable package archive"):
        pkg.install(cache, [PackageRef("example.a", "1.0.0")], [FolderSource(folder)])
    assert cache.installed() == [] and leftovers(cache) == []
    (folder / "example.a#1.0.0.tgz").write_bytes(b"this is not a tarball")
    with pytest.raises(PackageError, match="corrupt"):
        pkg.install(cache, [PackageRef("example.a", "1.0.0")], [FolderSource(folder)])
    assert cache.installed() == [] and leftovers(cache) == []


def test_tarball_holding_another_package_is_refused(cache: PackageCache, tmp_path: Path) -> None:
    folder = tmp_path / "src"
    make_package(folder, "example.a", "1.0.0").rename(folder / "example.a#9.9.9.tgz")
    with pytest.raises(PackageError, match=r"holds example\.a#1\.0\.0, not the requested example\.a#9\.9\.9"):
        pkg.install(cache, [PackageRef("example.a", "9.9.9")], [FolderSource(folder)])
    assert cache.installed() == [] and leftovers(cache) == []


def test_interrupted_install_leaves_nothing(cache: PackageCache, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "src"
    make_package(folder, "example.a", "1.0.0")

    def crash(*_args, **_kwargs):
        raise KeyboardInterrupt  # the user pressed Ctrl-C between unpacking and renaming

    monkeypatch.setattr(pkg.os, "rename", crash)
    with pytest.raises(KeyboardInterrupt):
        pkg.install(cache, [PackageRef("example.a", "1.0.0")], [FolderSource(folder)])
    assert cache.installed() == [] and leftovers(cache) == []


def _install_in_process(cache_root: str, folder: str, barrier) -> None:
    barrier.wait()
    pkg.install(
        PackageCache(cache_root), [PackageRef("hl7.fhir.r4.core", "4.0.1")], [FolderSource(Path(folder))]
    )


def test_two_installs_at_once_do_not_corrupt_the_cache(
    cache: PackageCache, fhir_package_source: Path
) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [
        context.Process(target=_install_in_process, args=(str(cache.root), str(fhir_package_source), barrier))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    assert [str(p.ref) for p in cache.installed()] == ["hl7.fhir.r4.core#4.0.1"]
    assert leftovers(cache) == []
    assert PackageSet.load(cache, [R4]).resolve("http://hl7.org/fhir/StructureDefinition/Immunization")


# -- the HTTP registry, served on 127.0.0.1 -----------------------------------------------------


class _Registry(http.server.BaseHTTPRequestHandler):
    folder: Path
    truncate: bool = False

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        path = self.folder / f"{parts[0]}#{parts[1]}.tgz" if len(parts) == 2 else None
        if path is None or not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/tar+gzip")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 3] if self.truncate else data)
        self.close_connection = True

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture
def registry(fhir_package_source: Path) -> Iterator[tuple[str, type[_Registry]]]:
    handler = type("Registry", (_Registry,), {"folder": fhir_package_source, "truncate": False})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_install_from_a_registry(cache: PackageCache, registry) -> None:
    url, _ = registry
    report = pkg.install(cache, [VACCINATION], [RegistrySource(url, scratch=cache.root)])
    assert {str(r) for r in report.installed} == ALL_SIX
    assert [str(g.missing) for g in report.gaps] == ["hl7.terminology#3.1.0"]
    assert leftovers(cache) == []


def test_interrupted_download_leaves_nothing(cache: PackageCache, registry) -> None:
    url, handler = registry
    handler.truncate = True
    with pytest.raises((PackageError, TargetUnreachableError), match=r"hl7\.fhir\.r4\.core#4\.0\.1"):
        pkg.install(cache, [R4], [RegistrySource(url, scratch=cache.root)])
    assert cache.installed() == [] and leftovers(cache) == []


def test_unreachable_registry_is_a_target_error(cache: PackageCache) -> None:
    with pytest.raises(TargetUnreachableError, match=r"hl7\.fhir\.r4\.core#4\.0\.1: download from"):
        pkg.install(cache, [R4], [RegistrySource("http://127.0.0.1:9", scratch=cache.root, timeout=2)])
    assert leftovers(cache) == []


# -- cache location and the resource index ------------------------------------------------------


def test_cache_location_defaults_and_override(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv(pkg.CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert PackageCache().root == tmp_path / ".fhir" / "packages"
    monkeypatch.setenv(pkg.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert PackageCache().root == tmp_path / "elsewhere"
    assert PackageCache(tmp_path / "explicit").root == tmp_path / "explicit"


def test_cache_gaps_list_the_tolerated_terminology_dependency(package_cache: PackageCache) -> None:
    gaps = package_cache.gaps()
    assert [(str(g.missing), str(g.needed_by), g.tolerated) for g in gaps] == [
        ("hl7.terminology#3.1.0", "hl7.fhir.be.medication#1.0.0", True)
    ]


def test_package_set_loads_the_six_packages_with_the_gap(package_set: PackageSet) -> None:
    assert {str(p.ref) for p in package_set.packages} == ALL_SIX
    assert [str(g.missing) for g in package_set.gaps] == ["hl7.terminology#3.1.0"]


def test_canonical_lookup_with_and_without_version(package_set: PackageSet) -> None:
    url = "https://www.ehealth.fgov.be/standards/fhir/vaccination/StructureDefinition/be-vaccination"
    profile = package_set.resolve(url)
    assert profile is not None and profile["type"] == "Immunization"
    assert package_set.resolve(f"{url}|1.1.2") is profile
    assert package_set.resolve(f"{url}|9.9.9") is None
    assert package_set.resolve("http://example.org/nothing") is None
    core = "http://hl7.org/fhir/StructureDefinition/Immunization"
    assert package_set.resolve(f"{core}|4.0.1")["kind"] == "resource"
    assert package_set.resolve(f"{core}|4.0")["kind"] == "resource"  # major.minor matches a patch


def test_same_url_in_two_package_versions_prefers_the_newer_package(package_set: PackageSet) -> None:
    url = "https://www.ehealth.fgov.be/standards/fhir/core/StructureDefinition/be-patient"
    assert len(package_set.versions(url)) == 2
    assert str(package_set.entry(url).package) == "hl7.fhir.be.core#2.1.2"


def test_lookup_by_type_and_examples(package_set: PackageSet) -> None:
    naming = [e.id for e in package_set.by_type("NamingSystem")]  # R4 NamingSystems have no url
    assert "be-ns-cnk-codes" in naming
    immunizations = [
        e for e in package_set.examples() if e.resource_type == "Immunization" and e.package == VACCINATION
    ]
    assert len(immunizations) == 35
    assert package_set.read(immunizations[0])["resourceType"] == "Immunization"


def test_missing_root_package_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match=r"packages install hl7\.fhir\.be\.vaccination#1\.1\.2"):
        PackageSet.load(PackageCache(tmp_path))


def test_missing_dependency_when_loading_names_who_needs_it(cache: PackageCache, tmp_path: Path) -> None:
    archive = make_package(tmp_path / "src", "example.a", "1.0.0", {"example.b": "2.0.0"})
    cache.install_archive(archive, None, "test")
    with pytest.raises(PackageError, match=r"example\.b#2\.0\.0, needed by example\.a#1\.0\.0"):
        PackageSet.load(cache, ["example.a#1.0.0"])


def test_single_resource_file_is_added_and_wins(package_set: PackageSet, tmp_path: Path) -> None:
    local = PackageSet(package_set.packages)
    url = "https://www.ehealth.fgov.be/standards/fhir/vaccination/StructureDefinition/be-vaccination"
    path = tmp_path / "override.json"
    path.write_text(json.dumps({"resourceType": "StructureDefinition", "url": url, "version": "0.0.1"}))
    before = local.fingerprint()
    local.add_resource_file(path)
    assert local.resolve(url)["version"] == "0.0.1"
    assert local.fingerprint() != before
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PackageError, match=r"bad\.json: not valid JSON"):
        local.add_resource_file(tmp_path / "bad.json")


def test_package_refs_parse() -> None:
    assert PackageRef.parse("hl7.fhir.r4.core#4.0.1") == R4
    assert PackageRef.parse("hl7.fhir.r4.core@4.0.1") == R4
    for bad in ("hl7.fhir.r4.core", "#4.0.1", "a b#1", "x#"):
        with pytest.raises(PackageError, match="not a package reference"):
            PackageRef.parse(bad)
