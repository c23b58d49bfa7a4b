"""``vaccicard-conformance proxy``: record what the vendor software exchanges with the acceptance API.

Registered on the main command group by ``conformance.cli``. The upstream is a FHIR base URL or the
name of a target (``[target.<name>]`` of ``vaccicard.toml``, whose CA bundle and timeouts then apply).
When the main command stores the configuration file's path in ``ctx.meta[CONFIG_PATH_META]``, relative
paths in it are taken relative to that file; otherwise the ``target`` tables of the loaded configuration
are used with paths relative to the working directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import click

from conformance.errors import ConfigurationError
from conformance.live.targets import Target, load_targets, resolve_target, targets_from_tables
from conformance.live.tls import httpx_verify
from conformance.proxy.server import RecordingProxy
from conformance.traffic.recorder import TrafficRecorder

if TYPE_CHECKING:
    from conformance.fhir.validator import Validator

__all__ = ["CONFIG_PATH_META", "DEFAULT_PORT", "proxy"]

CONFIG_PATH_META = "vaccicard.config_path"
"""Key of ``click.Context.meta`` under which the main command may leave the configuration file's path."""
DEFAULT_PORT = 8081


@click.command("proxy")
@click.option(
    "--upstream",
    required=True,
    help="FHIR base URL of the API to forward to (e.g. the acceptance API), or a target name from vaccicard.toml.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port (0: any free one).",
)
@click.option(
    "--evidence",
    type=click.Path(dir_okay=False, path_type=Path),
    help="NDJSON file the recorded exchanges are written to on exit (tokens fingerprinted).",
)
@click.option(
    "--ca-bundle",
    type=click.Path(path_type=Path),
    help="PEM bundle of extra CAs to trust for the upstream (added to the system store).",
)
@click.option(
    "--insecure", is_flag=True, help="Do not verify the upstream's TLS certificate (debugging only)."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    help="Seconds to wait for the upstream's answer (default: the target's read timeout).",
)
@click.option("--no-validate", is_flag=True, help="Do not validate request bodies (no FHIR packages needed).")
@click.option(
    "--no-rewrite-links",
    is_flag=True,
    help="Leave upstream URLs in JSON answers (paging links then bypass the proxy); headers are still rewritten.",
)
@click.pass_context
def proxy(
    ctx: click.Context,
    upstream: str,
    host: str,
    port: int,
    evidence: Path | None,
    ca_bundle: Path | None,
    insecure: bool,
    timeout: float | None,
    no_validate: bool,
    no_rewrite_links: bool,
) -> None:
    """Forward the vendor software's FHIR traffic to the acceptance API and record it, until Ctrl-C.

    Point the software's FHIR base URL at the address printed at start; it keeps logging in to IAM
    Connect directly. Requests and answers pass unchanged (only Location headers and, unless
    --no-rewrite-links, upstream URLs in JSON answers are made to point at the proxy). Exit 0 on
    Ctrl-C or SIGTERM, 2 for a configuration problem (port in use, unknown target, missing packages).
    """
    from conformance.simulator.server import is_loopback, run_until_signal

    if not is_loopback(host):
        if ctx.get_parameter_source("host") is not click.core.ParameterSource.COMMANDLINE:
            raise ConfigurationError(
                f"refusing to listen on {host} from configuration: give --host {host} on the command line"
            )
        click.echo(
            f"warning: listening on {host}: anyone who can reach this machine can send requests "
            "through the proxy",
            err=True,
        )
    target = resolve_target(
        upstream,
        targets=_targets(ctx),
        overrides={"ca_bundle": ca_bundle, "insecure": insecure or None, "read_timeout": timeout},
    )
    validator = None if no_validate else _validator(ctx)
    recorder = TrafficRecorder(fhir_base=urlsplit(target.fhir_base_url).path.rstrip("/") or "/")
    server = RecordingProxy(
        target.fhir_base_url,
        recorder=recorder,
        validator=validator,
        host=host,
        port=port,
        verify=httpx_verify(target),
        timeout=target.timeout,
        rewrite_links=not no_rewrite_links,
    )
    click.echo(f"Recording proxy for {target.fhir_base_url} ({target.environment})")
    click.echo(f"  Point the software's FHIR base URL at  {server.base_url}")
    click.echo("  IAM Connect is not proxied: the software logs in to it directly.")
    click.echo(f"  Evidence                              {evidence or 'not kept (no --evidence)'}")
    if insecure:
        click.echo("warning: the upstream's TLS certificate is not verified (--insecure)", err=True)
    click.echo("Press Ctrl-C to stop.")
    try:
        run_until_signal(server)
    finally:
        server.stop()
        if evidence is not None:
            written = recorder.write_ndjson(evidence)
            click.echo(f"proxy stopped: {written} exchange(s) written to {evidence}")
        else:
            click.echo(f"proxy stopped: {len(recorder)} exchange(s) seen, none kept")


def _targets(ctx: click.Context) -> Mapping[str, Target]:
    path = ctx.meta.get(CONFIG_PATH_META)
    if path is not None:
        return load_targets(path, os.environ)
    tables = (ctx.find_root().default_map or {}).get("target", {})
    return targets_from_tables(tables if isinstance(tables, dict) else {}, env=os.environ)


def _validator(ctx: click.Context) -> Validator:
    from conformance.fhir.definitions import PackageSet
    from conformance.fhir.packages import PackageCache
    from conformance.fhir.terminology import Terminology
    from conformance.fhir.validator import Validator

    cache = getattr(ctx.obj, "cache", None)
    packages = PackageSet.load(cache if isinstance(cache, PackageCache) else PackageCache(None))
    return Validator(packages, terminology=Terminology(packages))
