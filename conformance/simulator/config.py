"""The simulated Vaccicard FHIR API's settings: every choice the private real API may make differently.

The real Vaccicard API is documented privately by RSW, so each field of ``SimulatorConfig`` is an
**assumed default**, documented where it is declared, and a ``[simulator]`` table of ``vaccicard.toml``
changes it (``SimulatorConfig.from_toml``). The defaults describe a careful register:

* the FHIR base path is ``/fhir``; every create and update is validated against BeVaccination;
* request bodies over 1,000,000 bytes are refused (413) and JSON nested deeper than 64 levels (400);
* ``DELETE`` is refused (405) with an OperationOutcome telling how to cancel (an update to
  ``entered-in-error``); ``delete_policy = "allow"`` makes ``DELETE`` cancel the record that way instead;
* search pages hold 20 entries unless ``_count`` asks otherwise, at most 100;
* the disciplines that may record and the token audience come from the test data unless set here;
* a record's business key is its first identifier that has both ``system`` and ``value`` (or, with
  ``business_identifier_system`` set, its identifier in that system);
* ``If-Match`` is optional on updates (``require_if_match = true`` answers 428 without it);
* ``recorded`` and ``occurrenceDateTime`` may lie at most 300 s in the future (clock skew);
* status changes by update: ``completed``/``not-done`` → ``entered-in-error`` (cancel) and back
  (a cancelled record is reinstated by updating it, since its identifier cannot be reused); a record
  never changes between ``completed`` and ``not-done`` (cancel it and record the other);
* unknown search parameters are an error (400, ``search_handling = "strict"``) unless the client sends
  ``Prefer: handling=lenient`` or the setting is ``"lenient"``;
* partial dates without an offset are read in Europe/Brussels time.

The clock and the sleep function are injectable (tests pin time and do not wait); TOML cannot set them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from conformance.errors import ConfigurationError

__all__ = [
    "BE_VACCINATION_PROFILE",
    "DEFAULT_STATUS_TRANSITIONS",
    "DeletePolicy",
    "SearchHandling",
    "SimulatorConfig",
]

BE_VACCINATION_PROFILE = (
    "https://www.ehealth.fgov.be/standards/fhir/vaccination/StructureDefinition/be-vaccination"
)
"""The BeVaccination profile every create and update is validated against."""

DeletePolicy = Literal["forbid", "allow"]
SearchHandling = Literal["strict", "lenient"]

DEFAULT_STATUS_TRANSITIONS: tuple[tuple[str, str], ...] = (
    ("completed", "entered-in-error"),
    ("not-done", "entered-in-error"),
    ("entered-in-error", "completed"),
    ("entered-in-error", "not-done"),
)
"""Status changes an update may make (an update keeping the status is always allowed). Assumed."""

IMMUNIZATION_STATUSES = ("completed", "entered-in-error", "not-done")


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SimulatorConfig:
    """Settings of the simulated Vaccicard FHIR API (all assumed defaults; see the module docstring)."""

    fhir_base: str = "/fhir"
    """Path prefix of the FHIR API (no trailing slash)."""
    profile: str = BE_VACCINATION_PROFILE
    """Profile URL (optionally ``|version``) creates, updates and ``$validate`` check against."""
    max_body_bytes: int = 1_000_000
    """Largest request body accepted; larger ones get 413."""
    max_json_depth: int = 64
    """Deepest JSON nesting accepted (objects and arrays); deeper bodies get 400."""
    delete_policy: DeletePolicy = "forbid"
    """``forbid``: DELETE gets 405 saying how to cancel; ``allow``: DELETE cancels (entered-in-error)."""
    page_size: int = 20
    """Search page size when the client sends no ``_count``."""
    max_page_size: int = 100
    """Largest page; a bigger ``_count`` is lowered to it (as FHIR allows)."""
    recording_disciplines: tuple[str, ...] | None = None
    """Disciplines that may record; None: the test data's list (physician, pharmacist, nurse, midwife)."""
    audience: str | None = None
    """Token audience the API accepts; None: the test data's Vaccicard audience (``vaccicard-api``)."""
    business_identifier_system: str | None = None
    """None: a record's business key is its first identifier with system and value; else the one in this system."""
    require_if_match: bool = False
    """Whether an update (and an allowed DELETE) must carry ``If-Match`` (428 without it)."""
    future_tolerance_seconds: int = 300
    """How far in the future ``recorded`` and ``occurrenceDateTime`` may be (clock skew) before 422."""
    status_transitions: tuple[tuple[str, str], ...] = DEFAULT_STATUS_TRANSITIONS
    """Status changes an update may make; keeping the status is always allowed."""
    search_handling: SearchHandling = "strict"
    """``strict``: an unknown search parameter gets 400 (``Prefer: handling=lenient`` relaxes it per request)."""
    timezone: str = "Europe/Brussels"
    """Time zone of partial dates and times without an offset (future-date checks, ``date`` searches)."""
    realm: str = "Vaccicard"
    """The ``realm`` of ``WWW-Authenticate`` challenges."""
    clock: Callable[[], datetime] = field(default=_utc_now, compare=False, repr=False)
    """Returns the current time as an aware datetime (tests pin it)."""
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)
    """Waits for delay and timeout faults (tests replace it to avoid waiting)."""

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise ConfigurationError("invalid simulator configuration: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        problems: list[str] = []
        base = self.fhir_base
        if not base.startswith("/") or base.endswith("/") or "//" in base or " " in base:
            problems.append(f"fhir_base {base!r} must start with / and not end with /, e.g. /fhir")
        if not self.profile.startswith(("http://", "https://")):
            problems.append(f"profile {self.profile!r} must be a canonical URL")
        for name in ("max_body_bytes", "max_json_depth", "page_size", "max_page_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if self.page_size > self.max_page_size:
            problems.append("page_size cannot exceed max_page_size")
        if self.future_tolerance_seconds < 0:
            problems.append("future_tolerance_seconds cannot be negative")
        if self.delete_policy not in get_args(DeletePolicy):
            problems.append(f"delete_policy must be forbid or allow, not {self.delete_policy!r}")
        if self.search_handling not in get_args(SearchHandling):
            problems.append(f"search_handling must be strict or lenient, not {self.search_handling!r}")
        for pair in self.status_transitions:
            if len(pair) != 2 or any(status not in IMMUNIZATION_STATUSES for status in pair):
                problems.append(
                    f"status transition {pair!r} must be two of {', '.join(IMMUNIZATION_STATUSES)}"
                )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"timezone {self.timezone!r} is not a known IANA time zone")
        return problems

    def now(self) -> datetime:
        """The current time of the injected clock (aware, UTC if the clock gives a naive value)."""
        moment = self.clock()
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    def may_change_status(self, old: str | None, new: str | None) -> bool:
        """Whether an update may change a record's status from ``old`` to ``new``."""
        return old == new or (old, new) in self.status_transitions

    def with_changes(self, **changes: Any) -> SimulatorConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    @classmethod
    def from_toml(cls, table: Mapping[str, Any], **overrides: Any) -> SimulatorConfig:
        """Build from the ``[simulator]`` table of ``vaccicard.toml`` (or a parsed file holding one).

        Keys are field names with dashes or underscores; ``status_transitions`` is a list of
        ``["from", "to"]`` pairs. Unknown keys and wrong types raise ConfigurationError naming the key.
        ``overrides`` (for example ``clock``) are applied last.
        """
        if "simulator" in table and isinstance(table["simulator"], Mapping):
            table = table["simulator"]
        known = {f.name: f for f in fields(cls) if f.name not in ("clock", "sleep")}
        values: dict[str, Any] = {}
        for raw_key, value in table.items():
            key = str(raw_key).replace("-", "_")
            if key not in known:
                raise ConfigurationError(
                    f"[simulator] has no setting {raw_key!r}; known settings: {', '.join(sorted(known))}"
                )
            values[key] = _convert(key, value)
        values.update(overrides)
        return cls(**values)


_INT_KEYS = frozenset(
    {"max_body_bytes", "max_json_depth", "page_size", "max_page_size", "future_tolerance_seconds"}
)
_STR_KEYS = frozenset({"fhir_base", "profile", "delete_policy", "search_handling", "timezone", "realm"})
_OPTIONAL_STR_KEYS = frozenset({"audience", "business_identifier_system"})


def _convert(key: str, value: Any) -> Any:
    """Check and convert one TOML value to the field's type."""

    def wrong(expected: str) -> ConfigurationError:
        return ConfigurationError(f"[simulator] {key} must be {expected}, not {value!r}")

    if key in _INT_KEYS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("an integer")
        return value
    if key in _STR_KEYS:
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    if key in _OPTIONAL_STR_KEYS:
        if not isinstance(value, str) or not value:
            raise wrong("a non-empty string")
        return value
    if key == "require_if_match":
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if key == "recording_disciplines":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise wrong("a list of discipline names")
        return tuple(value)
    if key == "status_transitions":
        if not isinstance(value, list) or not all(
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(s, str) for s in pair)
            for pair in value
        ):
            raise wrong('a list of ["from", "to"] status pairs')
        return tuple((pair[0], pair[1]) for pair in value)
    raise wrong("a supported value")  # pragma: no cover - every field is handled above
