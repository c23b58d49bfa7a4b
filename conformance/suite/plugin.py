"""The pytest plugin of the evaluation suite: options, the endpoint, the software under test.

Options (``run`` passes them; ``python -m pytest steps`` takes them too): ``--adapter KIND[:ARG]``
(default ``reference``), ``--target`` (``simulator``, the embedded one on 127.0.0.1, or a target name
of ``--target-config`` or a FHIR URL: a live register watched through the recording proxy, with
``--ca-bundle``, ``--insecure`` and ``--allow-writes``), ``--professional SSIN`` (who the software logs
in as unless a scenario names someone), ``--simulator-port N`` (0: any free port; give one when vendor
software must be pointed at it), ``--lang en|fr|nl|de``, ``--package-cache DIR``, and ``--items`` /
``--tags`` to select scenarios.

Fixtures: ``suite`` (the options), ``suite_validator``, ``vocabulary``, ``testdata``, ``run_id``,
``endpoint`` (the simulator emptied and without faults for every scenario, so scenarios run in any
order and under pytest-xdist; or the live register behind the proxy, ``live_register``), ``software``
(the adapter under test driving the vendor software, closed after the scenario), ``builtin_options``
and ``untrusted_endpoint`` (a register behind a TLS certificate nobody trusts).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from conformance.adapters.registry import AdapterSpec, build_adapter
from conformance.suite.endpoint import ProxyEndpoint, SimulatorEndpoint
from conformance.suite.software import Software

__all__ = ["DEFAULT_PROFESSIONAL", "SuiteOptions"]

DEFAULT_PROFESSIONAL = "75040201177"
"""Luc Exemplaire, physician, of the simulator's test data."""
CLIENT_TIMEOUT = 2.0
"""Seconds the built-in clients wait for an answer from the simulator (its timeout fault waits longer)."""
CLIENT_ATTEMPTS = 4
"""Tries per request of the built-in clients (their back-off then waits 0.1 + 0.2 + 0.4 s in all)."""


@dataclass(frozen=True)
class SuiteOptions:
    """The suite's options, read once per session."""

    adapter: AdapterSpec
    target: str
    professional: str
    lang: str
    simulator_port: int
    package_cache: str | None
    live: Any = None
    """The live ``Target`` (``conformance.live.targets``) when ``--target`` is not the embedded simulator."""
    allow_writes: bool = False


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vaccicard", "vaccicard-conformance evaluation suite")
    group.addoption("--adapter", default="reference", help="adapter KIND[:ARG] (see `run --help`)")
    group.addoption(
        "--target",
        default="simulator",
        help="the register: simulator (embedded), a target name or a FHIR URL",
    )
    group.addoption("--target-config", default=None, help="vaccicard.toml naming the targets")
    group.addoption("--ca-bundle", default=None, help="extra CAs to trust for a live target (PEM)")
    group.addoption("--insecure", action="store_true", help="do not verify a live target's TLS certificate")
    group.addoption(
        "--allow-writes", action="store_true", help="let scenarios write to a target not marked acceptance"
    )
    group.addoption("--professional", default=DEFAULT_PROFESSIONAL, help="SSIN the software logs in as")
    group.addoption("--lang", default="en", choices=("en", "fr", "nl", "de"), help="report language")
    group.addoption("--simulator-port", type=int, default=0, help="port of the simulator (0: any)")
    group.addoption("--package-cache", default=None, help="FHIR package cache holding BeVaccination")
    group.addoption(
        "--items",
        default=None,
        help="run only these evaluation items: ids or prefixes, comma-separated (VC-REG,VC-CON-02)",
    )
    group.addoption(
        "--tags",
        default=None,
        help="run only scenarios whose tags match, e.g. 'area:REG and not item:VC-REG-08'",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep only the scenarios ``--items`` and ``--tags`` select (the others are deselected)."""
    wanted = [w.strip() for w in (config.getoption("--items") or "").split(",") if w.strip()]
    expression = config.getoption("--tags")
    if not wanted and not expression:
        return
    from _pytest.mark.expression import Expression

    try:
        matcher = Expression.compile(expression) if expression else None
    except SyntaxError as error:  # pytest's expression parser reports errors as SyntaxError
        raise pytest.UsageError(f"--tags {expression!r} is not a valid expression: {error}") from None
    keep, drop = [], []
    for item in items:
        tags = scenario_tags(item)
        if tags is None:
            keep.append(item)
            continue
        ids = [tag.removeprefix("item:") for tag in tags if tag.startswith("item:")]
        chosen = not wanted or any(i == w or i.startswith(w + "-") for i in ids for w in wanted)
        if chosen and matcher is not None:
            chosen = matcher.evaluate(lambda name, tags=tags, **_: name in tags)
        (keep if chosen else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def scenario_tags(item: pytest.Item) -> set[str] | None:
    """The Gherkin tags of a scenario's test (``item:VC-REG-01``, ``area:REG`` ...); None for other tests."""
    markers = list(item.iter_markers())
    if not any(m.name in ("item", "area") for m in markers):
        return None
    tags = set()
    for marker in markers:
        if marker.name in ("item", "area") and marker.args:
            tags.add(f"{marker.name}:{marker.args[0]}")
        elif marker.name not in ("usefixtures", "parametrize", "skip", "skipif", "xfail", "filterwarnings"):
            tags.add(marker.name)
    return tags


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "item(id): the evaluation item a scenario covers (@item:VC-REG-01)")
    config.addinivalue_line("markers", "area(code): the evaluation area of a feature (@area:REG)")


def pytest_bdd_apply_tag(tag: str, function: Any) -> bool | None:
    """``@item:VC-REG-01`` and ``@area:REG`` become ``item``/``area`` markers; an unknown id stops collection."""
    kind, _, value = tag.partition(":")
    if kind not in ("item", "area") or not value:
        return None
    from conformance.evaluation_items import Catalogue

    catalogue = Catalogue.load()
    problems = catalogue.check_tags([tag]) if kind == "item" else []
    if kind == "area" and value not in {area.code for area in catalogue.areas}:
        problems = [f"@area:{value}: unknown evaluation area"]
    if problems:
        raise pytest.UsageError(f"{getattr(function, '__name__', 'a scenario')}: {'; '.join(problems)}")
    getattr(pytest.mark, kind)(value)(function)
    return True


@pytest.fixture(scope="session")
def suite(pytestconfig: pytest.Config) -> SuiteOptions:
    """The suite's options (adapter, target, professional, language ...)."""
    target = pytestconfig.getoption("--target")
    live = None
    if target != "simulator":
        from conformance.live.targets import resolve_target

        overrides = {"ca_bundle": pytestconfig.getoption("--ca-bundle")}
        if pytestconfig.getoption("--insecure"):
            overrides["insecure"] = True
        live = resolve_target(target, config=pytestconfig.getoption("--target-config"), overrides=overrides)
    return SuiteOptions(
        live=live,
        allow_writes=pytestconfig.getoption("--allow-writes"),
        adapter=AdapterSpec.parse(pytestconfig.getoption("--adapter")),
        target=target,
        professional=pytestconfig.getoption("--professional"),
        lang=pytestconfig.getoption("--lang"),
        simulator_port=pytestconfig.getoption("--simulator-port"),
        package_cache=pytestconfig.getoption("--package-cache"),
    )


@pytest.fixture(scope="session")
def suite_validator(suite: SuiteOptions, request: pytest.FixtureRequest) -> Any:
    """The BeVaccination validator the checks and the simulator share (profiles compiled once)."""
    from conformance.fhir.definitions import PackageSet
    from conformance.fhir.packages import PackageCache
    from conformance.fhir.terminology import Terminology
    from conformance.fhir.validator import Validator

    if suite.package_cache:
        packages = PackageSet.load(PackageCache(suite.package_cache))
    else:
        packages = request.getfixturevalue("package_set")
    return Validator(packages, terminology=Terminology(packages))


@pytest.fixture(scope="session")
def run_id() -> str:
    """A short id of this run, appended to the business identifiers the scenarios give.

    A live register keeps its records from run to run; the suffix keeps each run's records its own.
    """
    import uuid

    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def testdata() -> Any:
    """The simulator's fictitious patients and professionals."""
    from conformance.simulator.testdata import TestData

    return TestData.load()


@pytest.fixture(scope="session")
def vocabulary(suite_validator: Any) -> Any:
    """Words of the scenarios to IG codes."""
    from conformance.suite.vocabulary import Vocabulary

    return Vocabulary(suite_validator.terminology)


@pytest.fixture(scope="session")
def suite_simulator(suite: SuiteOptions, suite_validator: Any, testdata: Any) -> Iterator[Any]:
    """The embedded simulator, served on 127.0.0.1 for the whole session."""
    from conformance.simulator.app import Simulator
    from conformance.simulator.server import SimulatorServer

    simulator = Simulator(suite_validator, testdata=testdata)
    try:
        with SimulatorServer(simulator, host="127.0.0.1", port=suite.simulator_port):
            yield simulator
    finally:
        simulator.close()


@pytest.fixture
def endpoint(suite: SuiteOptions, request: pytest.FixtureRequest) -> Any:
    """The register for one scenario: the simulator emptied, or the live register behind the proxy."""
    if suite.live is not None:
        return request.getfixturevalue("live_register").endpoint
    simulator = request.getfixturevalue("suite_simulator")
    simulator.reset()
    return SimulatorEndpoint(simulator)


@dataclass
class LiveRegister:
    """A live target watched through the recording proxy, and the harness's own client for it."""

    endpoint: ProxyEndpoint
    options: dict[str, Any]
    """What the built-in clients need to reach it (token provider, TLS trust)."""


@pytest.fixture(scope="session")
def live_register(suite: SuiteOptions, suite_validator: Any) -> Iterator[LiveRegister]:
    """The live target behind a recording proxy on 127.0.0.1, for the whole session."""
    from urllib.parse import urlsplit

    from conformance.adapters.reference import ReferenceAdapter
    from conformance.live.iam import login_provider
    from conformance.live.tls import httpx_verify
    from conformance.proxy import RecordingProxy
    from conformance.traffic.recorder import TrafficRecorder

    target = suite.live
    verify = httpx_verify(target)
    provider = None if target.environment == "simulator" else login_provider(target)
    options: dict[str, Any] = {"verify": verify, "token_provider": provider, "audience": target.audience}
    if target.client_id:
        options["client_id"] = target.client_id
    recorder = TrafficRecorder(fhir_base=urlsplit(target.fhir_base_url).path)
    harness = ReferenceAdapter(
        target.fhir_base_url, target.issuer, professional=suite.professional, **options
    )
    try:
        with RecordingProxy(
            target.fhir_base_url,
            recorder=recorder,
            validator=suite_validator,
            verify=verify,
            timeout=target.timeout,
        ) as proxy:
            endpoint = ProxyEndpoint(
                proxy,
                recorder,
                iam_base_url=target.issuer,
                environment=target.environment,
                search=harness.search,
            )
            yield LiveRegister(endpoint, options)
    finally:
        harness.close()
        if provider is not None:
            provider.close()


@pytest.fixture(scope="session")
def builtin_options(suite_simulator: Any) -> dict[str, Any]:
    """Options the built-in clients (reference, faulty) get on top of their defaults.

    ``etee``: the encrypted variant against the simulator's ETK depot and encrypted create; each test
    professional seals with the keys the depot holds for their SSIN, trusting the depot's root CA.
    """
    from conformance.adapters.etee_client import EteeOptions
    from conformance.etee.pki import HolderId

    depot = suite_simulator.etk_depot

    def keys(ssin: str) -> Any:
        found = depot.lookup(HolderId("SSIN", ssin))
        return found[0].holder if found else None

    etee = EteeOptions(
        depot_url=suite_simulator.base_url + depot.config.prefix,
        endpoint_url=suite_simulator.base_url + suite_simulator.etee.config.path,
        keys=keys,
        trust_anchors=depot.trust_anchors,
    )
    return {"timeout": CLIENT_TIMEOUT, "max_attempts": CLIENT_ATTEMPTS, "etee": etee}


def _software(suite: SuiteOptions, endpoint: Any, fhir: str, iam: str, builtin: dict[str, Any]) -> Software:
    options: dict[str, Any] = {}
    if suite.adapter.is_builtin:
        options = dict(builtin)
    adapter = build_adapter(
        suite.adapter,
        fhir_base_url=fhir,
        iam_base_url=iam,
        professional=suite.professional,
        lang=suite.lang,
        options=options,
    )
    writes = suite.allow_writes or endpoint.environment in ("simulator", "acceptance")
    return Software(adapter, endpoint, builtin=suite.adapter.is_builtin, writes_allowed=writes)


@pytest.fixture
def software(suite: SuiteOptions, endpoint: Any, request: pytest.FixtureRequest) -> Iterator[Software]:
    """The software under test, driven through the chosen adapter, watched through ``endpoint``."""
    if suite.live is not None:
        options = request.getfixturevalue("live_register").options
    else:
        options = request.getfixturevalue("builtin_options")
    built = _software(suite, endpoint, endpoint.fhir_base_url, endpoint.iam_base_url, options)
    yield built
    built.close()


@pytest.fixture
def untrusted_endpoint(suite_simulator: Any) -> Iterator[SimulatorEndpoint]:
    """A register served over TLS with a self-signed certificate that no authority vouches for."""
    from conformance.simulator.app import Simulator
    from conformance.simulator.server import SimulatorServer
    from conformance.simulator.tls import self_signed_context

    simulator = Simulator(
        suite_simulator.validator, testdata=suite_simulator.testdata, keys=suite_simulator.keys
    )
    try:
        with SimulatorServer(simulator, host="127.0.0.1", port=0, ssl_context=self_signed_context()):
            yield SimulatorEndpoint(simulator)
    finally:
        simulator.close()


def software_for(suite: SuiteOptions, endpoint: SimulatorEndpoint, builtin: dict[str, Any]) -> Software:
    """Software pointed at another register (only the built-in clients can be re-pointed)."""
    if not suite.adapter.is_builtin:
        pytest.skip(
            f"the {suite.adapter.kind} adapter cannot point the software at another register; "
            "check this item in the manual session"
        )
    return _software(suite, endpoint, endpoint.fhir_base_url, endpoint.iam_base_url, builtin)
