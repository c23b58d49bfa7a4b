"""The ``vaccicard-conformance`` command line.

Sub-commands: ``run``, ``validate``, ``serve``, ``proxy``, ``packages``, ``report``, ``verify-report``,
``etee`` (ETKs and sealed messages).
Exit codes: 0 ok, 1 conformance failures, 2 usage or configuration error, 3 target unreachable.
Every ``ConformanceError`` becomes one line on stderr and its exit code, never a traceback.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click

from conformance import __version__
from conformance.adapters.registry import describe_kinds
from conformance.config import ENV_PREFIX, find_config_file, load_default_map
from conformance.errors import (
    EXIT_FAILURES,
    EXIT_USAGE,
    ConfigurationError,
    ConformanceError,
)
from conformance.etee.cli import etee as etee_group
from conformance.fhir import packages as pkg
from conformance.fhir.batch import ValidationSettings, render, validate_stream
from conformance.fhir.inputs import read_inputs
from conformance.proxy.cli import CONFIG_PATH_META
from conformance.proxy.cli import proxy as proxy_command
from conformance.report.cli import COMMANDS as REPORT_COMMANDS


@dataclass
class AppContext:
    """What every sub-command gets from the main command."""

    cache: pkg.PackageCache


def _load_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    path = find_config_file(value)
    ctx.meta[CONFIG_PATH_META] = path  # targets resolve their relative paths against the file
    ctx.default_map = load_default_map(path)
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": ENV_PREFIX})
@click.version_option(__version__, prog_name="vaccicard-conformance")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar=f"{ENV_PREFIX}_CONFIG",
    callback=_load_config,
    is_eager=True,
    expose_value=False,
    help="Configuration file (default: ./vaccicard.toml when present).",
)
@click.option(
    "--package-cache",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=pkg.CACHE_ENV,
    help="FHIR package cache folder (default: ~/.fhir/packages).",
)
@click.pass_context
def cli(ctx: click.Context, package_cache: Path | None) -> None:
    """Conformance suite and evaluation harness for Vaccicard integrations (RSW).

    Checks that a vendor's software records, reads, corrects and cancels vaccinations in Vaccicard
    as the RSW evaluation session expects, with every FHIR payload validated against BeVaccination.
    """
    ctx.obj = AppContext(cache=pkg.PackageCache(package_cache))


# -- packages ------------------------------------------------------------------------------------


@cli.group()
def packages() -> None:
    """Install and list FHIR packages (the IG and its dependencies) in the package cache."""


@packages.command("install")
@click.argument("refs", nargs=-1, metavar="[ID#VERSION ...]")
@click.option(
    "--from",
    "source",
    type=click.Path(exists=True, path_type=Path),
    help="A folder of <id>#<version>.tgz files, or one .tgz file, instead of the registry.",
)
@click.option("--registry", help=f"FHIR package registry URL (default {pkg.DEFAULT_REGISTRY}).")
@click.pass_obj
def packages_install(
    app: AppContext, refs: tuple[str, ...], source: Path | None, registry: str | None
) -> None:
    """Install packages and their dependencies, transitively.

    With no ID#VERSION, installs hl7.fhir.be.vaccination#1.1.2 (or the package in the one .tgz
    given with --from) and everything it depends on.
    """
    sources: list[pkg.PackageSource] = []
    if source is not None:
        sources.append(pkg.FolderSource(source) if source.is_dir() else pkg.FileSource(source))
    if registry or source is None:
        sources.append(pkg.RegistrySource(registry or pkg.DEFAULT_REGISTRY, scratch=app.cache.root))
    if refs:
        roots = [pkg.PackageRef.parse(r) for r in refs]
    elif isinstance(sources[0], pkg.FileSource):
        roots = [sources[0].ref]
    else:
        roots = [pkg.PackageRef.parse(r) for r in pkg.DEFAULT_ROOT_PACKAGES]
    report = pkg.install(app.cache, roots, sources)
    for ref in report.installed:
        click.echo(f"installed {ref}")
    for ref in report.already_present:
        click.echo(f"present   {ref}")
    for gap in report.gaps:
        click.echo(f"warning: {gap}", err=True)
    click.echo(f"package cache: {app.cache.root}")


@packages.command("list")
@click.pass_obj
def packages_list(app: AppContext) -> None:
    """Show installed packages, their dependencies, and missing ones."""
    tree = pkg.dependency_tree(app.cache)
    click.echo(f"package cache: {app.cache.root}")
    if not tree:
        click.echo("no package installed")
        return
    for package, deps in tree:
        title = package.manifest.get("title") or ""
        click.echo(f"{package.ref}" + (f"  {title}" if title else ""))
        for dep, present in deps:
            click.echo(f"    -> {dep}" + ("" if present else "  (MISSING)"))
    for gap in app.cache.gaps():
        label = "warning" if gap.tolerated else "error"
        click.echo(f"{label}: {gap}")


# -- validate ------------------------------------------------------------------------------------


@cli.command()
@click.argument("paths", nargs=-1, metavar="[PATH ... | -]")
@click.option(
    "--profile", help="Profile URL (url or url|version) or a StructureDefinition file to validate against."
)
@click.option(
    "--ig",
    "igs",
    multiple=True,
    help="Extra package id#version from the cache, .tgz, package folder, or conformance resource file (repeatable).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "ndjson"]),
    default="text",
    show_default=True,
    help="text: readable lines; json: an OperationOutcome (a Bundle of them for several); "
    "ndjson: one OperationOutcome per input resource, in input order.",
)
@click.option(
    "--strict-identifiers",
    is_flag=True,
    help="Belgian identifier check-digit failures are errors, not warnings.",
)
@click.option(
    "--tx",
    "tx_server",
    help="Terminology server asked ($validate-code) when a code cannot be checked offline.",
)
@click.option(
    "--best-practice",
    type=click.Choice(["information", "warning", "error", "ignore"]),
    default="information",
    show_default=True,
    help="How to report best-practice invariants such as dom-6 (a resource should have narrative).",
)
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True, help="Worker processes.")
@click.pass_obj
def validate(
    app: AppContext,
    paths: tuple[str, ...],
    profile: str | None,
    igs: tuple[str, ...],
    fmt: str,
    strict_identifiers: bool,
    tx_server: str | None,
    best_practice: str,
    jobs: int,
) -> None:
    """Validate FHIR JSON resources, Bundles, NDJSON files and folders.

    Each resource is checked against --profile, else its meta.profile, else the base definition of
    its resourceType, with BeVaccination 1.1.2 and its dependencies loaded. Exit 0 when no error,
    1 when any error, 2 for usage or configuration problems.
    """
    if not paths:
        raise ConfigurationError(
            "nothing to validate: give one or more files, folders, or - for standard input"
        )
    settings = ValidationSettings(
        cache_root=app.cache.root,
        igs=igs,
        profile=profile,
        strict_identifiers=strict_identifiers,
        tx_server=tx_server,
        best_practice=best_practice,
    )
    results = validate_stream(read_inputs(list(paths)), settings, jobs)
    _, errors, _ = render(results, fmt, sys.stdout)
    if errors:
        raise click.exceptions.Exit(EXIT_FAILURES)


# -- serve ---------------------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port (0: any free one)."
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite file keeping the register across restarts (default: in memory, empty at each start).",
)
@click.option(
    "--admin-token",
    help="Bearer token of the admin API (/admin); default: a random one, printed at start. "
    f"Prefer the environment ({ENV_PREFIX}_SERVE_ADMIN_TOKEN) to the command line.",
)
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, db: Path | None, admin_token: str | None) -> None:
    """Serve the Vaccicard simulator (FHIR API, IAM Connect, admin API) until Ctrl-C.

    Binds 127.0.0.1 unless --host names another address on the command line. Prints the FHIR base
    URL, the IAM Connect endpoints, the admin token and the test professionals to log in as.
    Exit 0 on Ctrl-C or SIGTERM, 2 when the port is in use or the packages are missing.
    """
    # imported here: the simulator's dependencies (JOSE, SQLite ...) are not needed by other commands
    from conformance.fhir.definitions import PackageSet
    from conformance.simulator.app import Simulator
    from conformance.simulator.config import SimulatorConfig
    from conformance.simulator.server import SimulatorServer, is_loopback, run_until_signal

    if not is_loopback(host):
        if ctx.get_parameter_source("host") is not click.core.ParameterSource.COMMANDLINE:
            raise ConfigurationError(
                f"refusing to listen on {host} from configuration: give --host {host} on the command line"
            )
        click.echo(
            f"warning: listening on {host}: anyone who can reach this machine can use the simulator "
            "and read its traffic with the admin token",
            err=True,
        )
    app: AppContext = ctx.obj
    table = (ctx.find_root().default_map or {}).get("simulator")  # [simulator] of vaccicard.toml
    config = SimulatorConfig.from_toml(table) if isinstance(table, dict) else SimulatorConfig()
    packages = PackageSet.load(app.cache)
    simulator = Simulator(packages, config=config, db_path=db, admin_token=admin_token)
    try:
        server = SimulatorServer(simulator, host=host, port=port)
        for line in simulator.banner(show_admin_token=admin_token is None):
            click.echo(line)
        click.echo("Press Ctrl-C to stop.")
        run_until_signal(server)
        click.echo("simulator stopped")
    finally:
        simulator.close()


@cli.command(
    epilog="\b\nAdapter kinds (--adapter):\n"
    + "\n".join(f"  {line}" for line in describe_kinds().splitlines())
)
@click.option(
    "--adapter",
    default="reference",
    show_default=True,
    metavar="KIND[:ARG]",
    help="How the harness makes the vendor software act (kinds below).",
)
@click.option(
    "--target",
    default="simulator",
    show_default=True,
    help="The register: simulator (embedded, on 127.0.0.1), a [target.NAME] of vaccicard.toml "
    "(acceptance ...) or a FHIR base URL; a live register is watched through a recording proxy.",
)
@click.option(
    "--ca-bundle", type=click.Path(dir_okay=False), help="Extra CAs to trust for a live target (PEM)."
)
@click.option(
    "--insecure", is_flag=True, help="Do not verify a live target's TLS certificate (debugging only)."
)
@click.option("--allow-writes", is_flag=True, help="Let scenarios write to a target not marked acceptance.")
@click.option(
    "--items", metavar="VC-...[,...]", help="Only these evaluation items (ids or prefixes: VC-REG)."
)
@click.option(
    "--tags", metavar="EXPR", help="Only scenarios whose tags match: 'area:REG and not item:VC-REG-08'."
)
@click.option("--professional", metavar="SSIN", help="The test professional the software logs in as.")
@click.option(
    "--simulator-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port of the embedded simulator (give one when the vendor software must be pointed at it).",
)
@click.option(
    "--lang", type=click.Choice(["en", "fr", "nl", "de"]), default="en", show_default=True, help="Language."
)
@click.option(
    "--suite",
    "suite_root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder holding features/ and steps/ (default: the checkout the harness runs from).",
)
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the report goes (default reports/run-<UTC time> in the current folder); must not exist.",
)
@click.option(
    "--no-redact", is_flag=True, help="Keep SSINs, names and tokens in the report (local debugging)."
)
@click.option(
    "--sign-key", type=click.Path(dir_okay=False, exists=True), help="Ed25519 key (PEM) signing the manifest."
)
@click.option(
    "--waivers", type=click.Path(dir_okay=False, exists=True), help="waivers.toml of tolerated failures."
)
@click.option(
    "--baseline", type=click.Path(exists=True), help="An earlier report.json (or its folder) to compare with."
)
@click.option(
    "--fail-on",
    type=click.Choice(["error", "warning"]),
    default="error",
    show_default=True,
    help="warning: a validation warning on any payload also fails the run.",
)
@click.option("--software-vendor", help="The software under test: vendor (shown in the report).")
@click.option("--software-product", help="The software under test: product name.")
@click.option("--software-version", help="The software under test: version.")
@click.option("--ticket", help="The RSW integration ticket reference.")
@click.option("--operator", help="Who ran the session.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the summary, not every scenario.")
@click.pass_context
def run(
    ctx: click.Context,
    adapter: str,
    target: str,
    ca_bundle: str | None,
    insecure: bool,
    allow_writes: bool,
    items: str | None,
    tags: str | None,
    professional: str | None,
    simulator_port: int,
    lang: str,
    suite_root: Path | None,
    report_dir: Path | None,
    no_redact: bool,
    sign_key: str | None,
    waivers: str | None,
    baseline: str | None,
    fail_on: str,
    software_vendor: str | None,
    software_product: str | None,
    software_version: str | None,
    ticket: str | None,
    operator: str | None,
    quiet: bool,
) -> int:
    """Run the evaluation-session scenarios against the vendor software.

    With no option: the embedded simulator and the reference adapter, a complete passing run.
    Every run writes a report directory (report.json, report.html, junit.xml, ticket.md, Allure
    results, redacted evidence and an integrity manifest). Exit 0 when every selected scenario passes
    (or its failure is waived), 1 when one fails, 2 on a configuration error, 3 when a target is
    unreachable.
    """
    from conformance.adapters.registry import AdapterSpec
    from conformance.fhir.definitions import PackageSet
    from conformance.report import SoftwareUnderTest
    from conformance.suite.reporting import ReportOptions, write_run_report
    from conformance.suite.runner import RunOptions, run_suite

    app: AppContext = ctx.obj
    config = ctx.find_root().meta.get(CONFIG_PATH_META)
    AdapterSpec.parse(adapter)  # a bad adapter is a usage error before anything starts
    PackageSet.load(app.cache)  # BeVaccination must be installed: a clear error now, not in a fixture
    target_kind, target_url = "simulator", "embedded simulator on 127.0.0.1"
    if target != "simulator":  # an unknown target or a missing CA file is reported now, not mid-run
        from conformance.live.targets import resolve_target
        from conformance.live.tls import check_reachable

        overrides = {"ca_bundle": ca_bundle, "insecure": True if insecure else None}
        live = resolve_target(target, config=config, overrides=overrides)
        check_reachable(live)
        target_kind, target_url = live.environment, live.fhir_base_url
    started = datetime.now(UTC)
    directory = report_dir or Path("reports") / f"run-{started:%Y%m%d-%H%M%S}"
    if directory.exists():
        raise ConfigurationError(f"report directory {directory} already exists: choose another --report-dir")
    _code, results = run_suite(
        RunOptions(
            adapter=adapter,
            target=target,
            professional=professional,
            lang=lang,
            items=items,
            tags=tags,
            package_cache=str(app.cache.root),
            simulator_port=simulator_port,
            suite_root=suite_root,
            target_config=str(config) if config else None,
            ca_bundle=ca_bundle,
            insecure=insecure,
            allow_writes=allow_writes,
            quiet=quiet,
        )
    )
    outcomes = list(results.scenarios.values())
    counts = {
        status: sum(1 for o in outcomes if o.status == status) for status in ("passed", "failed", "skipped")
    }
    click.echo(
        f"{len(outcomes)} scenario(s): {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['skipped']} skipped (adapter {adapter}, target {target})"
    )
    for outcome in results.failed:
        click.echo(f"FAILED {outcome.id} [{', '.join(outcome.items)}]")
    written, report, report_code = write_run_report(
        ReportOptions(
            directory=directory,
            redact=not no_redact,
            sign_key=sign_key,
            waivers=waivers,
            baseline=baseline,
            fail_on=fail_on,
            software=SoftwareUnderTest(software_vendor, software_product, software_version),
            ticket=ticket,
            operator=operator,
        ),
        results,
        adapter=adapter,
        target_kind=target_kind,
        target_url=target_url,
        insecure=insecure,
        language=lang,
        cache=app.cache,
        started=started,
        finished=datetime.now(UTC),
        command_line=sys.argv,
    )
    ready = "yes" if report["summary"]["ready"] else "no"
    click.echo(f"ready to request the evaluation session: {ready}; report: {written / 'report.html'}")
    return report_code  # the report knows waivers: a waived failure does not fail the run


cli.add_command(etee_group)
cli.add_command(proxy_command)
for _command in REPORT_COMMANDS:
    cli.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning every ConformanceError into one line and its exit code."""
    try:
        result = cli.main(args=argv, prog_name="vaccicard-conformance", standalone_mode=False)
    except ConformanceError as exc:
        click.echo(f"vaccicard-conformance: error: {exc.message}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("vaccicard-conformance: aborted", err=True)
        return EXIT_USAGE
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
