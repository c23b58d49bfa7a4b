"""Fault injection for the simulated Vaccicard API, controlled by the harness.

A scenario schedules faults on a ``FaultPlan`` ("the next 2 creates fail with 503" is
``plan.add(Fault.status_error(503), "create", times=2)``); the FHIR API takes one at the start of each
request (``plan.take(operation)``) and applies it:

* ``status``: answer that status with an OperationOutcome instead of processing (429 and 503 may carry
  ``Retry-After``);
* ``delay``: wait ``seconds``, then process normally;
* ``reset``: drop the connection before processing (nothing happens in the register);
* ``timeout``: wait ``seconds`` (longer than clients usually wait: 60 s by default), then drop the
  connection without processing;
* ``commit_then_drop``: process and commit, then drop the connection before answering — the case
  that loses a record (the client believes it failed) or duplicates it (the client retries without
  conditional create).

Operations are ``create``, ``update``, ``read`` (read, vread and history), ``search``, ``delete``,
``validate``, ``metadata``, or ``any`` for every FHIR request. Faults are taken in the order they were
added, the first whose operation matches. The plan is thread-safe. ``ScheduledFault.from_json`` reads
what the admin API accepts: ``{"operation": "create", "times": 2, "kind": "status", "status": 503,
"retry_after": 2}`` (``times`` defaults to 1; ``null`` means until cleared).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from conformance.errors import ConfigurationError

__all__ = [
    "FAULT_KINDS",
    "FAULT_OPERATIONS",
    "Fault",
    "FaultKind",
    "FaultOperation",
    "FaultPlan",
    "InvalidFault",
    "ScheduledFault",
]

FaultKind = Literal["status", "delay", "reset", "timeout", "commit_then_drop"]
FaultOperation = Literal["create", "update", "read", "search", "delete", "validate", "metadata", "any"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
FAULT_OPERATIONS: tuple[str, ...] = get_args(FaultOperation)

DEFAULT_TIMEOUT_SECONDS = 60.0
"""How long a ``timeout`` fault waits before dropping: longer than common client timeouts (assumed)."""
MAX_WAIT_SECONDS = 600.0
"""Longest delay or timeout a fault may ask for."""


class InvalidFault(ConfigurationError):
    """A fault description that cannot be used (the admin API answers it with 400)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: its kind and the kind's parameters (``status``/``retry_after`` or ``seconds``)."""

    kind: FaultKind
    status: int | None = None
    """HTTP status answered by a ``status`` fault (400-599)."""
    retry_after: int | None = None
    """Seconds for the ``Retry-After`` header of a ``status`` fault (None: no header)."""
    seconds: float | None = None
    """How long a ``delay`` or ``timeout`` fault waits."""
    message: str | None = None
    """Text of the OperationOutcome a ``status`` fault answers (a default names the fault)."""

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise InvalidFault(f"fault kind must be one of {', '.join(FAULT_KINDS)}, not {self.kind!r}")
        if self.kind == "status":
            if not _is_int(self.status) or not 400 <= self.status <= 599:  # type: ignore[operator]
                raise InvalidFault(
                    f"a status fault needs an HTTP status from 400 to 599, not {self.status!r}"
                )
        elif self.status is not None:
            raise InvalidFault(f"only a status fault has a status, not a {self.kind} fault")
        if self.retry_after is not None:
            if self.kind != "status":
                raise InvalidFault(f"only a status fault has retry_after, not a {self.kind} fault")
            if not _is_int(self.retry_after) or self.retry_after < 0:
                raise InvalidFault(
                    f"retry_after must be a whole number of seconds >= 0, not {self.retry_after!r}"
                )
        if self.kind in ("delay", "timeout"):
            if self.seconds is None and self.kind == "timeout":
                object.__setattr__(self, "seconds", DEFAULT_TIMEOUT_SECONDS)
            seconds = self.seconds
            if (
                isinstance(seconds, bool)
                or not isinstance(seconds, int | float)
                or not math.isfinite(seconds)
                or not 0 < seconds <= MAX_WAIT_SECONDS
            ):
                raise InvalidFault(
                    f"a {self.kind} fault needs seconds between 0 and {MAX_WAIT_SECONDS:g}, not {seconds!r}"
                )
        elif self.seconds is not None:
            raise InvalidFault(f"only delay and timeout faults have seconds, not a {self.kind} fault")
        if self.message is not None and not isinstance(self.message, str):
            raise InvalidFault("message must be a string")

    # -- constructors -------------------------------------------------------------------------------

    @classmethod
    def status_error(
        cls, status: int, *, retry_after: int | None = None, message: str | None = None
    ) -> Fault:
        """Answer ``status`` (e.g. 503, or 429 with ``retry_after``) instead of processing."""
        return cls("status", status=status, retry_after=retry_after, message=message)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Wait ``seconds``, then process the request normally."""
        return cls("delay", seconds=seconds)

    @classmethod
    def reset(cls) -> Fault:
        """Drop the connection before processing."""
        return cls("reset")

    @classmethod
    def timeout(cls, seconds: float = DEFAULT_TIMEOUT_SECONDS) -> Fault:
        """Wait longer than the client waits, then drop the connection without processing."""
        return cls("timeout", seconds=seconds)

    @classmethod
    def commit_then_drop(cls) -> Fault:
        """Process and commit, then drop the connection before answering."""
        return cls("commit_then_drop")

    # -- JSON ---------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """This fault as JSON: ``kind`` and the parameters that are set."""
        data: dict[str, Any] = {"kind": self.kind}
        for name in ("status", "retry_after", "seconds", "message"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        """Read a fault from JSON (``kind`` plus its parameters); InvalidFault if it cannot be used."""
        if not isinstance(data, Mapping):
            raise InvalidFault("a fault must be a JSON object")
        unknown = set(data) - {"kind", "status", "retry_after", "seconds", "message"}
        if unknown:
            raise InvalidFault(f"unknown fault field(s): {', '.join(sorted(map(str, unknown)))}")
        if "kind" not in data:
            raise InvalidFault(f"a fault needs a kind: one of {', '.join(FAULT_KINDS)}")
        return cls(
            data["kind"],
            status=data.get("status"),
            retry_after=data.get("retry_after"),
            seconds=data.get("seconds"),
            message=data.get("message"),
        )


@dataclass(frozen=True, slots=True)
class ScheduledFault:
    """A fault waiting in a plan: which operation it hits and how many more times (None: until cleared)."""

    fault: Fault
    operation: FaultOperation = "any"
    times: int | None = 1
    id: int = 0
    """Position in the plan's history (faults are taken in this order)."""

    def __post_init__(self) -> None:
        if self.operation not in FAULT_OPERATIONS:
            raise InvalidFault(
                f"fault operation must be one of {', '.join(FAULT_OPERATIONS)}, not {self.operation!r}"
            )
        if self.times is not None and (not _is_int(self.times) or self.times < 1):
            raise InvalidFault(f"times must be a whole number >= 1 (or null for always), not {self.times!r}")

    def matches(self, operation: str) -> bool:
        """Whether this fault applies to a request of ``operation``."""
        return self.operation == "any" or self.operation == operation

    def to_json(self) -> dict[str, Any]:
        """The admin API's JSON shape: operation, times, id and the fault's fields."""
        return {"operation": self.operation, "times": self.times, "id": self.id, **self.fault.to_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScheduledFault:
        """Read ``{"operation", "times", "kind", ...}``; InvalidFault if it cannot be used."""
        if not isinstance(data, Mapping):
            raise InvalidFault("a fault must be a JSON object")
        fault_fields = {k: v for k, v in data.items() if k not in ("operation", "times", "id")}
        return cls(
            Fault.from_json(fault_fields),
            operation=data.get("operation", "any"),
            times=data.get("times", 1),
        )


class FaultPlan:
    """The faults waiting to be applied, in order; safe to use from the server's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[ScheduledFault] = []
        self._ids = itertools.count(1)

    def add(self, fault: Fault, operation: FaultOperation = "any", times: int | None = 1) -> ScheduledFault:
        """Schedule ``fault`` for the next ``times`` requests of ``operation``; return the entry."""
        with self._lock:
            entry = ScheduledFault(fault, operation, times, next(self._ids))
            self._entries.append(entry)
        return entry

    def add_json(self, data: Mapping[str, Any]) -> ScheduledFault:
        """Schedule a fault described in the admin API's JSON shape; InvalidFault if it cannot be used."""
        parsed = ScheduledFault.from_json(data)
        return self.add(parsed.fault, parsed.operation, parsed.times)

    def clear(self) -> int:
        """Forget every pending fault; return how many there were."""
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
        return count

    def pending(self) -> list[ScheduledFault]:
        """The faults still waiting, in the order they will be taken."""
        with self._lock:
            return list(self._entries)

    def take(self, operation: str) -> Fault | None:
        """The fault to apply to a request of ``operation`` (used up by one), or None."""
        with self._lock:
            for position, entry in enumerate(self._entries):
                if entry.matches(operation):
                    if entry.times is None:
                        return entry.fault
                    if entry.times <= 1:
                        del self._entries[position]
                    else:
                        self._entries[position] = ScheduledFault(
                            entry.fault, entry.operation, entry.times - 1, entry.id
                        )
                    return entry.fault
        return None

    def to_json(self) -> list[dict[str, Any]]:
        """The pending faults in the admin API's JSON shape."""
        return [entry.to_json() for entry in self.pending()]

    @classmethod
    def from_json(cls, data: list[Mapping[str, Any]]) -> FaultPlan:
        """A plan holding the faults of a JSON list (in order); InvalidFault if one cannot be used."""
        if not isinstance(data, list):
            raise InvalidFault("a fault plan must be a JSON list of faults")
        plan = cls()
        for item in data:
            plan.add_json(item)
        return plan

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
