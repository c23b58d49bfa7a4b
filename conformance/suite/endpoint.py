"""The endpoint a scenario's vendor software talks to, as the steps see it.

Steps never know whether the register is the embedded simulator or the acceptance API seen through
the recording proxy: they ask an ``Endpoint`` for its URLs, a traffic ``mark()`` and the
``exchanges(since)`` recorded after it, and, where the endpoint can do it, to inject a fault, to
expire the tokens it issued, to have the ETK depot offer a flawed Vaccicard ETK or to open a message
sealed for the register (with the register's key).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from conformance.belgium.identifiers import SSIN as SSIN_SYSTEM
from conformance.simulator.faults import Fault, FaultOperation
from conformance.traffic.recorder import Exchange

if TYPE_CHECKING:
    from conformance.simulator.etk_depot import EtkFlaw

__all__ = ["Endpoint", "ProxyEndpoint", "SimulatorEndpoint"]


class Endpoint(Protocol):
    """What the steps need from the register the software talks to."""

    kind: str
    """``simulator``, ``proxy`` (the live API watched through the recording proxy) ..."""
    environment: str
    """``simulator``, ``acceptance`` or ``production`` (what the register is)."""

    @property
    def fhir_base_url(self) -> str: ...

    @property
    def iam_base_url(self) -> str:
        """IAM Connect's base (``.../auth``)."""
        ...

    def mark(self) -> int:
        """The id of the newest exchange recorded so far (pass it as ``since``)."""
        ...

    def exchanges(self, since: int | None = None, **filters: Any) -> list[Exchange]:
        """The exchanges recorded after ``since`` (``TrafficRecorder.exchanges`` filters)."""
        ...

    def reset(self) -> None:
        """Start a scenario isolated: an empty register where possible, no pending faults."""
        ...

    def add_fault(self, fault: Fault, operation: FaultOperation = "any", times: int | None = 1) -> None:
        """Make the next ``times`` requests of ``operation`` fail as ``fault`` says."""
        ...

    def reset_faults(self) -> None:
        """Drop every pending fault: the register answers normally again."""
        ...

    def expire_tokens(self) -> None:
        """Make every access token issued so far expired."""
        ...

    def end_sessions(self) -> None:
        """Log every professional out of IAM Connect: the software must log in again."""
        ...

    def records(
        self, *, identifier: tuple[str, str] | None = None, patient: str | None = None
    ) -> list[dict[str, Any]]:
        """The current version of every record with that business identifier or for that patient (SSIN)."""
        ...

    def offer_flawed_register_etk(self, flaw: EtkFlaw) -> None:
        """Have the ETK depot answer a Vaccicard ETK failing its checks (``flaw``) until the next reset."""
        ...

    def unseal(self, message: bytes, at: datetime) -> Any:
        """Open a message sealed for the register with the register's key, checked as at ``at``.

        Returns ``conformance.etee.seal.Unsealed``; raises ``UnsealError`` naming the failed check.
        """
        ...


class SimulatorEndpoint:
    """The embedded simulator (``conformance.simulator.app.Simulator``) as an ``Endpoint``."""

    kind = "simulator"
    environment = "simulator"

    def __init__(self, simulator: Any) -> None:
        self.simulator = simulator

    @property
    def fhir_base_url(self) -> str:
        return str(self.simulator.fhir_base_url)

    @property
    def iam_base_url(self) -> str:
        return str(self.simulator.base_url) + "/auth"

    def mark(self) -> int:
        return int(self.simulator.traffic.mark())

    def exchanges(self, since: int | None = None, **filters: Any) -> list[Exchange]:
        return list(self.simulator.traffic.exchanges(since, **filters))

    def reset(self) -> None:
        self.simulator.reset()

    def add_fault(self, fault: Fault, operation: FaultOperation = "any", times: int | None = 1) -> None:
        self.simulator.faults.add(fault, operation, times=times)

    def reset_faults(self) -> None:
        self.simulator.faults.clear()

    def expire_tokens(self) -> None:
        self.simulator.iam.expire_tokens()

    def end_sessions(self) -> None:
        self.simulator.iam.end_sessions()

    def records(
        self, *, identifier: tuple[str, str] | None = None, patient: str | None = None
    ) -> list[dict[str, Any]]:
        found, _total = self.simulator.store.search(
            identifier=identifier,
            patient_identifier=(SSIN_SYSTEM, patient) if patient is not None else None,
        )
        return [stored.resource for stored in found]

    def offer_flawed_register_etk(self, flaw: EtkFlaw) -> None:
        depot = self.simulator.etk_depot
        depot.serve_register_etk(depot.flawed_register_etk(flaw))

    def unseal(self, message: bytes, at: datetime) -> Any:
        from conformance.etee.seal import unseal

        depot = self.simulator.etk_depot
        return unseal(message, recipient=depot.register.encryption, trust=depot.trust_anchors, now=at)


class ProxyEndpoint:
    """A live register (the acceptance API, or a ``serve``d simulator) watched through the recording proxy.

    The steps see the traffic the proxy recorded. What only the embedded simulator can do (inject a
    fault, expire tokens, end sessions) skips the scenario, for the manual evaluation session to check.
    The register is not emptied between scenarios: scenarios use business identifiers of their own.
    ``search`` finds records through the API (the harness's own client, with its own token).
    """

    kind = "proxy"

    def __init__(
        self,
        proxy: Any,
        recorder: Any,
        *,
        iam_base_url: str,
        environment: str,
        search: Callable[[Mapping[str, str]], list[dict[str, Any]]],
    ) -> None:
        self.proxy = proxy
        self.recorder = recorder
        self._iam_base_url = iam_base_url
        self.environment = environment
        self._search = search

    @property
    def fhir_base_url(self) -> str:
        return str(self.proxy.base_url)

    @property
    def iam_base_url(self) -> str:
        return self._iam_base_url

    def mark(self) -> int:
        return int(self.recorder.mark())

    def exchanges(self, since: int | None = None, **filters: Any) -> list[Exchange]:
        return list(self.recorder.exchanges(since, **filters))

    def reset(self) -> None:
        """Nothing to empty: a live register keeps its records."""

    def reset_faults(self) -> None:
        """No fault is ever pending on a live register."""

    def add_fault(self, fault: Fault, operation: FaultOperation = "any", times: int | None = 1) -> None:
        self._cannot(f"answer {fault.kind} faults on demand")

    def expire_tokens(self) -> None:
        self._cannot("expire the tokens IAM Connect issued")

    def end_sessions(self) -> None:
        self._cannot("end IAM Connect sessions")

    def offer_flawed_register_etk(self, flaw: EtkFlaw) -> None:
        self._cannot("make the ETK depot offer a flawed Vaccicard ETK")

    def unseal(self, message: bytes, at: datetime) -> Any:
        self._cannot("open messages sealed for the register (only the register holds its key)")

    def records(
        self, *, identifier: tuple[str, str] | None = None, patient: str | None = None
    ) -> list[dict[str, Any]]:
        params = {}
        if identifier is not None:
            params["identifier"] = f"{identifier[0]}|{identifier[1]}"
        if patient is not None:
            params["patient.identifier"] = f"{SSIN_SYSTEM}|{patient}"
        return self._search(params)

    def _cannot(self, what: str) -> None:
        pytest.skip(
            f"a live register cannot {what}: this scenario runs on the simulator or in the manual session"
        )
