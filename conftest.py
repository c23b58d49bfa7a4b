"""Pytest configuration shared by the library tests and the evaluation suite (``steps/``).

The FHIR packages are never part of the project: tests read them from a package cache. When
``VACCICARD_PACKAGE_CACHE`` names a cache that already holds BeVaccination, that cache is used;
otherwise the packages are installed into a throw-away cache from the folder named by
``--fhir-packages`` / ``VACCICARD_FHIR_PACKAGES`` (default: ``../shared/fhir-packages`` beside the
checkout).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conformance.fhir.definitions import PackageSet
from conformance.fhir.packages import (
    CACHE_ENV,
    DEFAULT_ROOT_PACKAGES,
    FolderSource,
    PackageCache,
    PackageRef,
    install,
)

pytest_plugins = [
    "conformance.suite.plugin",
    "steps.common",
    "steps.registration",
    "steps.history",
    "steps.correction",
    "steps.errors",
    "steps.auth",
    "steps.etee",
]

ROOT = Path(__file__).resolve().parent
DEFAULT_PACKAGE_SOURCE = ROOT.parent / "shared" / "fhir-packages"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fhir-packages",
        default=os.environ.get("VACCICARD_FHIR_PACKAGES", str(DEFAULT_PACKAGE_SOURCE)),
        help="Folder of <id>#<version>.tgz FHIR packages the tests install from "
        "(env VACCICARD_FHIR_PACKAGES; default ../shared/fhir-packages).",
    )


@pytest.fixture(scope="session")
def fhir_package_source(pytestconfig: pytest.Config) -> Path:
    """The folder of package tarballs the tests use."""
    folder = Path(pytestconfig.getoption("--fhir-packages"))
    if not folder.is_dir():
        pytest.fail(
            f"FHIR package folder {folder} not found: pass --fhir-packages DIR or set VACCICARD_FHIR_PACKAGES"
        )
    return folder


@pytest.fixture(scope="session")
def package_cache(fhir_package_source: Path, tmp_path_factory: pytest.TempPathFactory) -> PackageCache:
    """A package cache holding BeVaccination and its dependencies."""
    roots = [PackageRef.parse(r) for r in DEFAULT_ROOT_PACKAGES]
    configured = os.environ.get(CACHE_ENV)
    if configured and all(PackageCache(configured).get(r) for r in roots):
        return PackageCache(configured)
    cache = PackageCache(tmp_path_factory.mktemp("fhir-packages"))
    install(cache, roots, [FolderSource(fhir_package_source)])
    return cache


@pytest.fixture(scope="session")
def package_set(package_cache: PackageCache) -> PackageSet:
    """BeVaccination 1.1.2 and its dependencies, loaded."""
    return PackageSet.load(package_cache)


# --- the simulator -------------------------------------------------------------------------------
# Imported inside the fixtures, so tests that do not use the simulator never import it.


@pytest.fixture(scope="session")
def simulator_validator(package_set: PackageSet):  # -> conformance.fhir.validator.Validator
    """One BeVaccination validator shared by every simulator of the session (profiles compile once)."""
    from conformance.fhir.terminology import Terminology
    from conformance.fhir.validator import Validator

    return Validator(package_set, terminology=Terminology(package_set))


@pytest.fixture(scope="session")
def simulator_keys():  # -> conformance.simulator.app.SimulatorKeys
    """IAM realm keys and organisation certificates shared by every simulator of the session."""
    from conformance.simulator.app import SimulatorKeys
    from conformance.simulator.testdata import TestData

    return SimulatorKeys.generate(TestData.load())


@pytest.fixture
def simulator_server(simulator_validator, simulator_keys):  # -> conformance.simulator.server.SimulatorServer
    """A running simulator server on an ephemeral 127.0.0.1 port with an empty in-memory register."""
    from conformance.simulator.app import Simulator
    from conformance.simulator.server import SimulatorServer

    simulator = Simulator(simulator_validator, keys=simulator_keys)
    try:
        with SimulatorServer(simulator, host="127.0.0.1", port=0) as server:
            yield server
    finally:
        simulator.close()


@pytest.fixture
def simulator(simulator_server):  # -> conformance.simulator.app.Simulator
    """The running simulator (``base_url``, ``fhir_base_url``, ``faults``, ``traffic``, ``iam``, ``admin_token``).

    Fresh for each test: empty register, no traffic, no pending faults.
    """
    return simulator_server.simulator
