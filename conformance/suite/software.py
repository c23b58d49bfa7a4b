"""The software under test as the steps drive it: an adapter, watched through the endpoint.

``Software.perform(intent)`` marks the endpoint's traffic, has the adapter carry the intent out, and
returns an ``Action``: the intent, what the software reported, and exactly the exchanges the endpoint
received meanwhile, which the Then-steps judge. Every action of a scenario is kept in ``actions``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest

from conformance.adapters import Adapter
from conformance.adapters.intents import AdapterResult, Identifier, Intent, ReadHistory
from conformance.errors import TargetUnreachableError
from conformance.suite.endpoint import Endpoint
from conformance.traffic.recorder import Exchange

__all__ = ["Action", "Software"]


@dataclass(frozen=True)
class Action:
    """One intent carried out: what was asked, what the software reported, what the register saw."""

    intent: Intent
    result: AdapterResult
    exchanges: tuple[Exchange, ...]
    seconds: float = 0.0
    fhir_path: str = "/fhir"
    """The path of the FHIR base URL: exchanges under it are the FHIR API's, the others IAM Connect's."""

    @property
    def business_identifier(self) -> Identifier | None:
        """The record's key: the one the intent gave, else the one the software reported."""
        given = getattr(self.intent, "business_identifier", None)
        if given is not None:
            return given
        return self.result.business_identifiers[0] if self.result.business_identifiers else None

    def requests(self, operation: str | None = None, method: str | None = None) -> list[Exchange]:
        """The exchanges of this action with that operation (create, update, search ...) and method."""
        return [
            e
            for e in self.exchanges
            if (operation is None or e.operation == operation) and (method is None or e.method == method)
        ]

    @property
    def fhir_exchanges(self) -> list[Exchange]:
        """The exchanges with the FHIR API (not IAM Connect)."""
        prefix = self.fhir_path.rstrip("/") + "/"
        return [e for e in self.exchanges if e.path.startswith(prefix) or e.path == self.fhir_path]


@dataclass
class Software:
    """The software under test behind ``adapter``, talking to ``endpoint``."""

    adapter: Adapter
    endpoint: Endpoint
    builtin: bool = False
    """True for the harness's own clients: a register they cannot reach is what they show the user."""
    writes_allowed: bool = True
    """False for a register not marked acceptance (production) without ``--allow-writes``."""
    actions: list[Action] = field(default_factory=list)

    def perform(self, intent: Intent) -> Action:
        """Carry out ``intent`` and keep the exchanges the endpoint received meanwhile.

        A write to a register where writes are not allowed skips the scenario instead.
        """
        if not self.writes_allowed and not isinstance(intent, ReadHistory):
            pytest.skip(
                f"this scenario writes to a {self.endpoint.environment} register: give --allow-writes to run it"
            )
        mark = self.endpoint.mark()
        begun = datetime.now(UTC)
        started = time.perf_counter()
        try:
            result = self.adapter.perform(intent)
        except TargetUnreachableError as error:
            if not self.builtin:
                raise  # the vendor's hook is unreachable: the run cannot go on
            result = AdapterResult(outcome="failed", message=error.message)
        seconds = time.perf_counter() - started
        # an exchange recorded now but begun before (a request an earlier scenario left hanging, that
        # the register dropped only later) is not this action's
        exchanges = tuple(e for e in self.endpoint.exchanges(mark) if e.started >= begun)
        action = Action(intent, result, exchanges, seconds, urlsplit(self.endpoint.fhir_base_url).path)
        self.actions.append(action)
        return action

    def perform_again(self, action: Action, **changes: object) -> Action:
        """Carry out ``action``'s intent once more, with ``changes`` and the same business identifier."""
        intent = action.intent
        key = action.business_identifier
        if key is not None and hasattr(intent, "business_identifier"):
            changes.setdefault("business_identifier", key)
        return self.perform(dataclasses.replace(intent, **changes))  # type: ignore[type-var]

    def close(self) -> None:
        """Close the adapter's connections, if it holds any."""
        close = getattr(self.adapter, "close", None)
        if close is not None:
            close()
