"""Adapter kinds by name: what ``run --adapter KIND[:ARG]`` accepts, and building one.

``ADAPTER_KINDS`` describes each kind for ``run --help``; ``build_adapter(spec, ...)`` parses a spec
(``reference``, ``faulty:no-recorder``, ``http:http://127.0.0.1:8765/``, ``command:python hook.py
--stdin``, ``manual``) and builds the adapter for the endpoint the software talks to. Hook URLs and
commands may name the endpoint with ``{fhir_base_url}``, ``{iam_base_url}`` and ``{professional}``,
filled in when the adapter is built.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from conformance.adapters import Adapter
from conformance.adapters.faulty import DEFECTS
from conformance.errors import ConfigurationError

__all__ = ["ADAPTER_KINDS", "AdapterSpec", "build_adapter", "describe_kinds"]

ADAPTER_KINDS: Mapping[str, str] = MappingProxyType(
    {
        "reference": "the built-in correct Vaccicard client (the baseline; every scenario passes)",
        "faulty:<defect>": "the reference client with one deliberate defect (proves the checks fail)",
        "http:<url>": "POST each intent as JSON to the vendor's hook URL and read the answer",
        "command:<command>": "run the vendor's command with the intent on stdin, the answer on stdout",
        "manual": "the guided session: an operator carries out each intent in the vendor software",
    }
)


@dataclass(frozen=True)
class AdapterSpec:
    """A parsed ``--adapter`` value: its kind and argument."""

    kind: str
    argument: str | None = None

    @classmethod
    def parse(cls, spec: str) -> AdapterSpec:
        """Read ``KIND[:ARG]``; an unknown kind or a missing argument is a ConfigurationError."""
        kind, _, argument = spec.strip().partition(":")
        if kind in ("reference", "manual"):
            if argument:
                raise ConfigurationError(f"--adapter {kind} takes no argument (got {spec!r})")
            return cls(kind)
        if kind in ("faulty", "http", "command"):
            if not argument.strip():
                raise ConfigurationError(f"--adapter {kind} needs an argument: {kind}:<...> (see run --help)")
            if kind == "faulty" and argument not in DEFECTS:
                raise ConfigurationError(
                    f"unknown defect {argument!r} in --adapter {spec}; known: {', '.join(sorted(DEFECTS))}"
                )
            return cls(kind, argument.strip())
        known = ", ".join(k.split(":")[0] for k in ADAPTER_KINDS)
        raise ConfigurationError(f"unknown adapter kind {kind!r} in --adapter {spec!r}; use one of {known}")

    def __str__(self) -> str:
        return self.kind if self.argument is None else f"{self.kind}:{self.argument}"

    @property
    def is_builtin(self) -> bool:
        """True for the harness's own clients (reference, faulty): they can be pointed anywhere."""
        return self.kind in ("reference", "faulty")


def describe_kinds() -> str:
    """Every adapter kind and defect, one per line (for ``run --help``)."""
    lines = [f"{kind}: {text}" for kind, text in ADAPTER_KINDS.items()]
    lines += [f"faulty:{name}: {text}" for name, text in sorted(DEFECTS.items())]
    return "\n".join(lines)


def build_adapter(
    spec: AdapterSpec,
    *,
    fhir_base_url: str,
    iam_base_url: str,
    professional: str,
    lang: str = "en",
    options: Mapping[str, Any] | None = None,
) -> Adapter:
    """The adapter ``spec`` names, for software talking to ``fhir_base_url``/``iam_base_url``.

    ``options`` go to the built-in clients (``timeout``, ``verify``, ``sleep`` ...); ``lang`` is the
    language the manual adapter speaks to the operator.
    """
    fill = {"fhir_base_url": fhir_base_url, "iam_base_url": iam_base_url, "professional": professional}
    if spec.kind == "reference":
        from conformance.adapters.reference import ReferenceAdapter

        return ReferenceAdapter(fhir_base_url, iam_base_url, professional=professional, **dict(options or {}))
    if spec.kind == "faulty":
        from conformance.adapters.faulty import FaultyAdapter

        return FaultyAdapter(
            str(spec.argument), fhir_base_url, iam_base_url, professional=professional, **dict(options or {})
        )
    if spec.kind == "http":
        from conformance.adapters.http_hook import HttpHookAdapter

        return HttpHookAdapter(_fill(str(spec.argument), fill))
    if spec.kind == "command":
        from conformance.adapters.command import CommandAdapter

        return CommandAdapter([_fill(part, fill) for part in shlex.split(str(spec.argument))])
    from conformance.adapters.manual import ManualAdapter

    return ManualAdapter(lang=lang, fhir_base_url=fhir_base_url)


def _fill(template: str, values: Mapping[str, str]) -> str:
    try:
        return template.format_map(values)
    except (KeyError, ValueError, IndexError) as error:
        raise ConfigurationError(
            f"cannot fill in {template!r}: use only {{fhir_base_url}}, {{iam_base_url}} and {{professional}} "
            f"({error})"
        ) from None
