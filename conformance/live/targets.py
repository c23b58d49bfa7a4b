"""Targets: where the harness finds a Vaccicard FHIR API and the IAM Connect realm that guards it.

A ``Target`` names a FHIR base URL, the IAM Connect realm (its issuer URL, e.g.
``https://api-acpt.ehealth.fgov.be/auth/realms/healthcare``), the client id, how to log in
(``professional``: authorization code + PKCE S256 in the system browser, then an RFC 8693 token exchange
to ``audience``; ``organisation``: realm ``M2M``, ``client_credentials`` with a ``private_key_jwt``
signed by the key of the organisation's eHealth certificate), TLS trust (system store plus an optional
CA bundle; verification off only with ``insecure = true``), timeouts and the environment kind
(``simulator``, ``acceptance``, ``production``).

Targets come from the built-in ``simulator`` (the ``serve`` default address), then the
``[target.<name>]`` tables of ``vaccicard.toml`` (keys with dashes or underscores; relative paths are
relative to the file), then ``VACCICARD_TARGET_<NAME>_<FIELD>`` environment variables
(``VACCICARD_TARGET_ACCEPTANCE_CA_BUNDLE=/etc/ssl/corp.pem``), then command-line flags
(``resolve_target(..., overrides=...)``). Secrets are never configuration values: the ``.p12``
password is read from the environment variable the target names (``p12-password-env``).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import httpx

from conformance.config import ENV_PREFIX
from conformance.errors import ConfigurationError

__all__ = [
    "AUTH_MODES",
    "BUILTIN_TARGETS",
    "DEFAULT_AUDIENCE",
    "ENVIRONMENTS",
    "AuthMode",
    "Environment",
    "Target",
    "load_targets",
    "resolve_target",
    "targets_from_tables",
]

AuthMode = Literal["professional", "organisation"]
Environment = Literal["simulator", "acceptance", "production"]
AUTH_MODES: tuple[str, ...] = get_args(AuthMode)
ENVIRONMENTS: tuple[str, ...] = get_args(Environment)
DEFAULT_AUDIENCE = "vaccicard-api"
"""The token-exchange audience of the simulator (assumed for Vaccicard: RSW names the real one)."""

_ENV_TARGET = f"{ENV_PREFIX}_TARGET_"
_PATH_FIELDS = frozenset({"ca_bundle", "p12_path"})
_BOOL_FIELDS = frozenset({"insecure"})
_FLOAT_FIELDS = frozenset({"connect_timeout", "read_timeout"})
_INT_FIELDS = frozenset({"redirect_port"})
_NOT_CONFIGURABLE = frozenset({"name", "source"})
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Target:
    """One Vaccicard endpoint and how to authenticate to it (see the module docstring)."""

    name: str
    fhir_base_url: str
    iam_realm_url: str
    client_id: str | None = None
    """The IAM Connect client id; for ``organisation``, ``cbe-<CBE>`` taken from the certificate when unset."""
    auth_mode: AuthMode = "professional"
    audience: str = DEFAULT_AUDIENCE
    """The token-exchange audience (``professional`` mode): the Vaccicard API's client."""
    environment: Environment = "acceptance"
    ca_bundle: Path | None = None
    """A PEM file (or hashed directory) of extra trusted CAs, added to the system store."""
    insecure: bool = False
    """Do not verify TLS certificates at all (local debugging only)."""
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    p12_path: Path | None = None
    """The organisation's eHealth certificate and key (``organisation`` mode)."""
    p12_password_env: str | None = None
    """The NAME of the environment variable holding the ``.p12`` password (never the password)."""
    redirect_port: int = 0
    """Port of the one-shot login redirect listener on 127.0.0.1 (0: any free one)."""
    login_hint: str | None = None
    """Passed to IAM Connect's login page (the simulator logs this SSIN or NIHDI number in directly)."""
    assertion_kid: str | None = None
    """``kid`` of the client assertion; default the RFC 7638 thumbprint of the certificate key (assumed)."""
    source: str = "built-in"
    """Where the target was defined, for messages."""

    @property
    def issuer(self) -> str:
        """The realm's issuer URL without a trailing slash."""
        return self.iam_realm_url.rstrip("/")

    @property
    def timeout(self) -> httpx.Timeout:
        """The httpx timeout: ``connect_timeout`` to connect, ``read_timeout`` to read and write."""
        return httpx.Timeout(
            connect=self.connect_timeout,
            read=self.read_timeout,
            write=self.read_timeout,
            pool=self.connect_timeout,
        )

    def check(self) -> Target:
        """Check the files the target names exist; returns self (ConfigurationError otherwise)."""
        if self.ca_bundle is not None and not self.ca_bundle.exists():
            raise ConfigurationError(
                f"target {self.name} ({self.source}): CA bundle not found: {self.ca_bundle}"
            )
        if self.auth_mode == "organisation":
            if self.p12_path is None:
                raise ConfigurationError(
                    f"target {self.name} ({self.source}): organisation login needs p12-path "
                    "(the organisation's eHealth certificate, a .p12 file)"
                )
            if not self.p12_path.is_file():
                raise ConfigurationError(
                    f"target {self.name} ({self.source}): certificate file not found: {self.p12_path}"
                )
        return self


BUILTIN_TARGETS: Mapping[str, Target] = {
    "simulator": Target(
        name="simulator",
        fhir_base_url="http://127.0.0.1:8080/fhir",
        iam_realm_url="http://127.0.0.1:8080/auth/realms/healthcare",
        client_id="vendor-software",
        environment="simulator",
        login_hint="75040201177",
    ),
}
"""``simulator``: ``vaccicard-conformance serve`` at its default address, logged in as its test physician."""

_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Target) if f.name not in _NOT_CONFIGURABLE)
_REQUIRED = ("fhir_base_url", "iam_realm_url")


def load_targets(
    path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None
) -> dict[str, Target]:
    """The built-in targets, those of ``path`` (a ``vaccicard.toml``; None: none) and the env overrides."""
    tables: Mapping[str, Any] = {}
    source = "environment"
    base: Path | None = None
    if path is not None:
        file = Path(path)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(f"configuration file not found: {file}") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigurationError(f"cannot read configuration file {file}: {error}") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigurationError(f"{file}: not valid TOML: {error}") from None
        section = data.get("target", {})
        if not isinstance(section, dict):
            raise ConfigurationError(f"{file}: target must be a table of [target.<name>] tables")
        tables, source, base = section, str(file), file.resolve().parent
    return targets_from_tables(tables, env=env, source=source, base_dir=base)


def targets_from_tables(
    tables: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    source: str = "vaccicard.toml",
    base_dir: Path | None = None,
) -> dict[str, Target]:
    """Targets from ``[target.<name>]`` tables (e.g. the CLI's ``default_map["target"]``) and the env.

    A table named like a built-in target changes only the keys it gives; ``base_dir`` anchors
    relative paths (the configuration file's folder).
    """
    raw: dict[str, dict[str, Any]] = {name: _as_settings(t) for name, t in BUILTIN_TARGETS.items()}
    origin: dict[str, str] = {name: "built-in" for name in BUILTIN_TARGETS}
    for name, table in tables.items():
        if not isinstance(table, Mapping):
            raise ConfigurationError(f"{source}: [target.{name}] must be a table of settings")
        key = _target_key(name)
        raw.setdefault(key, {}).update(_settings(table, f"{source} [target.{name}]", base_dir))
        origin[key] = source
    for name, settings in _env_settings(env if env is not None else os.environ).items():
        raw.setdefault(name, {}).update(settings)
        origin.setdefault(name, "environment")
    return {name: _build(name, settings, origin[name]) for name, settings in raw.items()}


def resolve_target(
    name_or_url: str | None,
    *,
    targets: Mapping[str, Target] | None = None,
    config: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Target:
    """The target called ``name_or_url`` (default ``simulator``), or an ad-hoc one for a FHIR base URL.

    ``targets`` (default: ``load_targets(config, env)``) are the known ones; ``overrides`` (command-line
    flags, by field name; None values ignored) change the chosen one last. A bare URL is taken as a
    simulator-shaped endpoint: IAM Connect under the same origin's ``/auth/realms/healthcare`` unless
    ``iam_realm_url`` is overridden. The files it names are checked (``Target.check``).
    """
    known = targets if targets is not None else load_targets(config, env)
    wanted = name_or_url or "simulator"
    changes = _settings({k: v for k, v in (overrides or {}).items() if v is not None}, "command line", None)
    if "://" in wanted:
        parts = urlsplit(wanted)
        settings = {
            "fhir_base_url": wanted,
            "iam_realm_url": f"{parts.scheme}://{parts.netloc}/auth/realms/healthcare",
            "client_id": BUILTIN_TARGETS["simulator"].client_id,
            "environment": "simulator" if _is_loopback_url(wanted) else "acceptance",
        }
        return _build(parts.netloc or wanted, {**settings, **changes}, "command line").check()
    target = known.get(_target_key(wanted))
    if target is None:
        names = sorted(known)
        close = difflib.get_close_matches(_target_key(wanted), names, n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ConfigurationError(
            f"unknown target {wanted!r}{hint} (known: {', '.join(names)}; "
            "define others as [target.<name>] in vaccicard.toml, or give a FHIR base URL)"
        )
    if changes:
        target = _build(target.name, {**_as_settings(target), **changes}, f"{target.source} + command line")
    return target.check()


# --- helpers ---------------------------------------------------------------------------------------


def _target_key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _settings(table: Mapping[str, Any], where: str, base_dir: Path | None) -> dict[str, Any]:
    """Normalised settings of one table: known field names, types checked, paths anchored."""
    result: dict[str, Any] = {}
    for raw_key, value in table.items():
        key = str(raw_key).strip().replace("-", "_")
        if key not in _FIELD_NAMES:
            close = difflib.get_close_matches(key, _FIELD_NAMES, n=2)
            hint = f"; did you mean {' or '.join(c.replace('_', '-') for c in close)}?" if close else ""
            raise ConfigurationError(
                f"{where}: unknown setting {raw_key!r}{hint} (known: {', '.join(f.replace('_', '-') for f in _FIELD_NAMES)})"
            )
        result[key] = _coerce(key, value, where, base_dir)
    return result


def _coerce(key: str, value: Any, where: str, base_dir: Path | None) -> Any:
    label = f"{where}: {key.replace('_', '-')}"
    if key in _BOOL_FIELDS:
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        if not isinstance(value, bool):
            raise ConfigurationError(f"{label} must be true or false, not {value!r}")
        return value
    if key in _FLOAT_FIELDS:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{label} must be a number of seconds, not {value!r}") from None
        if isinstance(value, bool) or not number > 0:
            raise ConfigurationError(f"{label} must be a positive number of seconds, not {value!r}")
        return number
    if key in _INT_FIELDS:
        try:
            port = int(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{label} must be a port number, not {value!r}") from None
        if isinstance(value, bool | float) or not 0 <= port <= 65535:
            raise ConfigurationError(f"{label} must be a port number from 0 to 65535, not {value!r}")
        return port
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{label} must be a non-empty string, not {value!r}")
    value = value.strip()
    if key in _PATH_FIELDS:
        path = Path(value).expanduser()
        return path if path.is_absolute() or base_dir is None else base_dir / path
    if key == "auth_mode" and value not in AUTH_MODES:
        raise ConfigurationError(f"{label} must be one of {', '.join(AUTH_MODES)}, not {value!r}")
    if key == "environment" and value not in ENVIRONMENTS:
        raise ConfigurationError(f"{label} must be one of {', '.join(ENVIRONMENTS)}, not {value!r}")
    return value


def _env_settings(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``VACCICARD_TARGET_<NAME>_<FIELD>`` variables by target name (the longest known field wins)."""
    by_length = sorted(_FIELD_NAMES, key=len, reverse=True)
    result: dict[str, dict[str, Any]] = {}
    for variable, value in env.items():
        if not variable.upper().startswith(_ENV_TARGET):
            continue
        rest = variable[len(_ENV_TARGET) :].lower()
        field_name = next((f for f in by_length if rest.endswith("_" + f)), None)
        if field_name is None or len(rest) == len(field_name) + 1:
            continue  # not a target setting (e.g. VACCICARD_TARGET naming the target to use)
        name = _target_key(rest[: -len(field_name) - 1])
        result.setdefault(name, {})[field_name] = _coerce(field_name, value, f"environment {variable}", None)
    return result


def _build(name: str, settings: Mapping[str, Any], source: str) -> Target:
    missing = [key.replace("_", "-") for key in _REQUIRED if key not in settings]
    if missing:
        raise ConfigurationError(f"target {name} ({source}): missing {', '.join(missing)}")
    for key in ("fhir_base_url", "iam_realm_url"):
        _check_url(name, source, key, settings[key])
    mode = settings.get("auth_mode", "professional")
    if mode == "professional" and not settings.get("client_id"):
        raise ConfigurationError(
            f"target {name} ({source}): missing client-id (the software's IAM Connect client in realm healthcare)"
        )
    values = dict(settings)
    values.setdefault(
        "environment",
        "simulator" if _is_loopback_url(settings["fhir_base_url"]) else "acceptance",
    )
    return Target(name=name, source=source, **values)


def _check_url(name: str, source: str, key: str, url: str) -> None:
    parts = urlsplit(url)
    label = f"target {name} ({source}): {key.replace('_', '-')}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{label} must be an http(s) URL, not {url!r}")
    if parts.scheme == "http" and not _is_loopback_url(url):
        raise ConfigurationError(
            f"{label} {url} must use https: tokens and health data would travel in clear "
            "(plain http is accepted only on 127.0.0.1 / localhost)"
        )


def _is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _as_settings(target: Target) -> dict[str, Any]:
    return {name: getattr(target, name) for name in _FIELD_NAMES}
