"""The simulated register's persistence: versioned Immunization records in SQLite (stdlib ``sqlite3``).

``ImmunizationStore`` keeps every version of every record (``resource_version``) and, per record, one
row of indexed columns for the current version (``immunization``: business identifier, patient
identifier, status, occurrence as a UTC range) plus every identifier of the current version
(``immunization_identifier``), so searches are SQL and not a scan. Every write is one ``BEGIN
IMMEDIATE`` transaction, so a crash in the middle of a request never leaves half a record; a file
database uses WAL mode and survives restarts, ``None`` gives a private in-memory database. One
connection is shared by all threads behind a lock (SQLite serialises writers anyway, and an in-memory
database exists only for its connection); compare-and-set SQL and a UNIQUE index on the business
identifier keep the rules true even for a second process on the same file. The business identifier
(``identifier.system|value``) is unique among all records, cancelled (``entered-in-error``) ones
included: it follows a record through its life, so reusing it for a new record would make a search by
identifier ambiguous; a cancelled record is corrected by updating it, not by recording it again. Dates
follow FHIR search semantics: a value stands for the range its precision implies (``2021`` is the whole
year), partial dates and times without an offset are read in the register's local time zone
(Europe/Brussels by default), ranges are half-open ``[start, end)`` in UTC.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from conformance.errors import ConfigurationError, ConformanceError

__all__ = [
    "DATE_PREFIXES",
    "DuplicateIdentifier",
    "IdentifierChanged",
    "ImmunizationStore",
    "InvalidSearch",
    "NotFound",
    "StoreError",
    "StoredResource",
    "VersionConflict",
    "date_range",
]

SCHEMA_VERSION = 1
DEFAULT_TIMEZONE = "Europe/Brussels"
DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
SORTS = ("date", "-date")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resource_version (
    id           TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    last_updated TEXT    NOT NULL,
    recorder     TEXT,
    resource     BLOB    NOT NULL,
    PRIMARY KEY (id, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS immunization (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT    NOT NULL UNIQUE,
    version        INTEGER NOT NULL,
    last_updated   TEXT    NOT NULL,
    bk_system      TEXT    NOT NULL,
    bk_value       TEXT    NOT NULL,
    patient_system TEXT,
    patient_value  TEXT,
    status         TEXT,
    occ_start      TEXT,
    occ_end        TEXT,
    UNIQUE (bk_system, bk_value)
);
CREATE INDEX IF NOT EXISTS immunization_patient ON immunization (patient_value, patient_system, occ_start);
CREATE INDEX IF NOT EXISTS immunization_status ON immunization (status);
CREATE INDEX IF NOT EXISTS immunization_occurrence ON immunization (occ_start);
CREATE TABLE IF NOT EXISTS immunization_identifier (
    id     TEXT NOT NULL,
    system TEXT NOT NULL,
    value  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS immunization_identifier_value ON immunization_identifier (value, system);
CREATE INDEX IF NOT EXISTS immunization_identifier_id ON immunization_identifier (id);
"""

_MIN_INSTANT = "0001-01-01T00:00:00.000000Z"
_MAX_INSTANT = "9999-12-31T23:59:59.999999Z"

_DATE_RE = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


class StoreError(ConformanceError):
    """Base of the register store's errors; the FHIR layer maps each to an HTTP status."""


class NotFound(StoreError):
    """No record has this id (HTTP 404)."""

    def __init__(self, id: str) -> None:
        super().__init__(f"Immunization/{id} does not exist")
        self.id = id


class VersionConflict(StoreError):
    """The If-Match version is not the current one (HTTP 412)."""

    def __init__(self, id: str, expected: int, current_version: int) -> None:
        super().__init__(
            f"Immunization/{id} is at version {current_version}, not {expected}: read it again and retry"
        )
        self.id = id
        self.expected = expected
        self.current_version = current_version


class DuplicateIdentifier(StoreError):
    """Another record already carries this business identifier (HTTP 409)."""

    def __init__(self, existing: StoredResource, business_key: tuple[str, str]) -> None:
        state = (
            "a cancelled (entered-in-error) record" if existing.status == "entered-in-error" else "a record"
        )
        super().__init__(
            f"{state} with identifier {business_key[0]}|{business_key[1]} already exists: "
            f"Immunization/{existing.id}; update that record instead of creating a new one"
        )
        self.existing = existing
        self.business_key = business_key


class IdentifierChanged(StoreError):
    """An update would change the record's business identifier (HTTP 422 or 400)."""

    def __init__(self, id: str, expected: tuple[str, str], found: list[str]) -> None:
        shown = ", ".join(found) if found else "none"
        super().__init__(
            f"Immunization/{id} has business identifier {expected[0]}|{expected[1]}; an update must keep it "
            f"(found values for that system: {shown})"
        )
        self.id = id
        self.expected = expected
        self.found = found


class InvalidSearch(StoreError):
    """A search parameter value the store cannot use (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class StoredResource:
    """One version of one record: the resource JSON with ``id`` and ``meta.versionId/lastUpdated`` set."""

    id: str
    version: int
    last_updated: datetime
    resource: dict[str, Any]
    recorder: str | None = None

    @property
    def status(self) -> str | None:
        """The resource's ``status`` (``completed``, ``not-done``, ``entered-in-error`` ...)."""
        return self.resource.get("status")

    @property
    def etag(self) -> str:
        """The weak ETag FHIR uses for this version: ``W/"<version>"``."""
        return f'W/"{self.version}"'


def _format_instant(moment: datetime) -> str:
    """A UTC instant in the fixed-width, lexically sortable form used in the index columns."""
    moment = moment.astimezone(UTC)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}Z"
    )


def _format_last_updated(moment: datetime) -> str:
    """A FHIR ``instant`` with millisecond precision in UTC, as put in ``meta.lastUpdated``."""
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z"
    )


def _parse_instant(text: str) -> datetime:
    """Read back a stored ``last_updated`` string."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def date_range(text: str, local_tz: tzinfo | str = DEFAULT_TIMEZONE) -> tuple[str, str]:
    """The half-open UTC range ``[start, end)`` a FHIR date/dateTime/instant stands for, by precision."""
    tz = ZoneInfo(local_tz) if isinstance(local_tz, str) else local_tz
    match = _DATE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a FHIR date, dateTime or instant")
    parts = match.groupdict()
    year = int(parts["year"])
    month = int(parts["month"] or 1)
    day = int(parts["day"] or 1)
    hour = int(parts["hour"] or 0)
    minute = int(parts["minute"] or 0)
    second = int(parts["second"] or 0)
    if second == 60:  # a leap second: the last instant of its minute
        second = 59
    fraction = (parts["fraction"] or "")[:6]
    microsecond = int(fraction.ljust(6, "0")) if fraction else 0
    zone: tzinfo = tz
    if parts["tz"]:
        zone = UTC if parts["tz"] == "Z" else datetime.strptime(parts["tz"], "%z").tzinfo  # type: ignore[assignment]
    try:
        start = datetime(year, month, day, hour, minute, second, microsecond)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid date: {exc}") from None
    if parts["fraction"]:
        end: datetime | None = start + timedelta(microseconds=10 ** (6 - len(fraction)))
    elif parts["second"]:
        end = start + timedelta(seconds=1)
    elif parts["minute"]:
        end = start + timedelta(minutes=1)
    elif parts["day"]:
        end = _shift(
            lambda: datetime.combine(date(year, month, day) + timedelta(days=1), datetime.min.time())
        )
    elif parts["month"]:
        end = _shift(lambda: datetime(year + (month == 12), month % 12 + 1, 1))
    else:
        end = _shift(lambda: datetime(year + 1, 1, 1))
    return _utc(start, zone, _MIN_INSTANT), _utc(end, zone, _MAX_INSTANT) if end else _MAX_INSTANT


def _shift(make: Callable[[], datetime]) -> datetime | None:
    try:
        return make()
    except (OverflowError, ValueError):  # past year 9999
        return None


def _utc(naive: datetime, zone: tzinfo, fallback: str) -> str:
    try:
        return _format_instant(naive.replace(tzinfo=zone))
    except (OverflowError, ValueError):
        return fallback


def _identifier_pairs(resource: dict[str, Any]) -> list[tuple[str, str]]:
    pairs = []
    identifiers = resource.get("identifier")
    for item in identifiers if isinstance(identifiers, list) else []:
        if isinstance(item, dict) and isinstance(item.get("value"), str):
            system = item.get("system")
            pairs.append((system if isinstance(system, str) else "", item["value"]))
    return pairs


def _patient_identifier(resource: dict[str, Any]) -> tuple[str | None, str | None]:
    patient = resource.get("patient")
    identifier = patient.get("identifier") if isinstance(patient, dict) else None
    if not isinstance(identifier, dict):
        return None, None
    system, value = identifier.get("system"), identifier.get("value")
    return (system if isinstance(system, str) else None, value if isinstance(value, str) else None)


@dataclass(frozen=True, slots=True)
class _Index:
    patient_system: str | None
    patient_value: str | None
    status: str | None
    occ_start: str | None
    occ_end: str | None
    identifiers: list[tuple[str, str]]


class ImmunizationStore:
    """Versioned Immunization records in SQLite: ``path=None`` in memory, else a file kept across restarts."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        local_timezone: tzinfo | str = DEFAULT_TIMEZONE,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Open (and create if needed) the store; ``clock`` returns aware datetimes (tests pin it)."""
        self.path = Path(path) if path is not None else None
        self._tz = ZoneInfo(local_timezone) if isinstance(local_timezone, str) else local_timezone
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        # Test seam: called with a step name between the statements of a write (inside the transaction).
        self._write_hook: Callable[[str], None] | None = None
        target = ":memory:" if self.path is None else str(self.path)
        self._db: sqlite3.Connection | None = None
        try:
            self._db = sqlite3.connect(target, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._configure()
        except (sqlite3.DatabaseError, ConfigurationError) as exc:
            self.close()
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(f"cannot use {target} as the simulator's database: {exc}") from None

    # -- set-up -------------------------------------------------------------------------------------

    def _configure(self) -> None:
        db = self._conn
        if self.path is not None:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # atomic and consistent; WAL survives a process crash
        found = db.execute("PRAGMA user_version").fetchone()[0]
        if found not in (0, SCHEMA_VERSION):
            raise ConfigurationError(
                f"{self.path} was written by another version of the simulator (schema {found}, "
                f"expected {SCHEMA_VERSION}); use a new --db file"
            )
        with self._write():
            # statement by statement: executescript() would commit outside this transaction
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the simulator's store is closed")
        return self._db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        with self._lock:
            db = self._conn
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _step(self, name: str) -> None:
        if self._write_hook is not None:
            self._write_hook(name)

    def close(self) -> None:
        """Close the database; further calls raise ``StoreError``."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> ImmunizationStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- helpers ------------------------------------------------------------------------------------

    def _now(self, previous: str | None = None) -> tuple[datetime, str]:
        moment = self._clock().astimezone(UTC)
        moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        if previous is not None:  # never let a record's history go back in time if the clock does
            moment = max(moment, _parse_instant(previous))
        return moment, _format_last_updated(moment)

    def _index(self, resource: dict[str, Any]) -> _Index:
        patient_system, patient_value = _patient_identifier(resource)
        status = resource.get("status")
        occ_start = occ_end = None
        occurrence = resource.get("occurrenceDateTime")
        if isinstance(occurrence, str):
            # An unreadable date is rejected by the validator first; if stored, it matches no date filter.
            with suppress(ValueError):
                occ_start, occ_end = date_range(occurrence, self._tz)
        return _Index(
            patient_system,
            patient_value,
            status if isinstance(status, str) else None,
            occ_start,
            occ_end,
            _identifier_pairs(resource),
        )

    @staticmethod
    def _columns(index: _Index) -> tuple[str | None, ...]:
        return (index.patient_system, index.patient_value, index.status, index.occ_start, index.occ_end)

    @staticmethod
    def _stamp(resource: dict[str, Any], id: str, version: int, last_updated: str) -> bytes:
        if not isinstance(resource, dict) or resource.get("resourceType") != "Immunization":
            raise ValueError("the store keeps Immunization resources only")
        meta = dict(resource["meta"]) if isinstance(resource.get("meta"), dict) else {}
        meta["versionId"] = str(version)
        meta["lastUpdated"] = last_updated
        stamped = {"resourceType": "Immunization", "id": id, "meta": meta}
        stamped.update((key, value) for key, value in resource.items() if key not in stamped)
        return orjson.dumps(stamped)

    @staticmethod
    def _row(id: str, version: int, last_updated: str, recorder: str | None, blob: bytes) -> StoredResource:
        return StoredResource(id, version, _parse_instant(last_updated), orjson.loads(blob), recorder)

    def _current(self, db: sqlite3.Connection, id: str) -> StoredResource | None:
        row = db.execute(
            "SELECT v.id, v.version, v.last_updated, v.recorder, v.resource FROM immunization i "
            "JOIN resource_version v ON v.id = i.id AND v.version = i.version WHERE i.id = ?",
            (id,),
        ).fetchone()
        return self._row(*row) if row else None

    def _by_business_key(self, db: sqlite3.Connection, key: tuple[str, str]) -> StoredResource | None:
        row = db.execute(
            "SELECT v.id, v.version, v.last_updated, v.recorder, v.resource FROM immunization i "
            "JOIN resource_version v ON v.id = i.id AND v.version = i.version "
            "WHERE i.bk_system = ? AND i.bk_value = ?",
            key,
        ).fetchone()
        return self._row(*row) if row else None

    def _write_identifiers(self, db: sqlite3.Connection, id: str, identifiers: list[tuple[str, str]]) -> None:
        db.execute("DELETE FROM immunization_identifier WHERE id = ?", (id,))
        db.executemany(
            "INSERT INTO immunization_identifier (id, system, value) VALUES (?, ?, ?)",
            [(id, system, value) for system, value in identifiers],
        )

    # -- writes -------------------------------------------------------------------------------------

    def create(
        self, resource: dict[str, Any], *, business_key: tuple[str, str], recorder: str | None = None
    ) -> StoredResource:
        """Store a new record (new server id, version 1); ``DuplicateIdentifier`` if the key is taken."""
        stored, _created = self._create(resource, business_key, recorder, conditional=False)
        return stored

    def create_if_absent(
        self, resource: dict[str, Any], business_key: tuple[str, str], *, recorder: str | None = None
    ) -> tuple[StoredResource, bool]:
        """FHIR conditional create: the existing record and False, or the new one and True (atomic)."""
        return self._create(resource, business_key, recorder, conditional=True)

    def _create(
        self,
        resource: dict[str, Any],
        business_key: tuple[str, str],
        recorder: str | None,
        *,
        conditional: bool,
    ) -> tuple[StoredResource, bool]:
        key = (str(business_key[0]), str(business_key[1]))
        index = self._index(resource)
        if key not in index.identifiers:
            raise ValueError(f"business key {key[0]}|{key[1]} is not one of the resource's identifiers")
        id = uuid.uuid4().hex
        with self._write() as db:
            existing = self._by_business_key(db, key)
            if existing is not None:
                if conditional:
                    return existing, False
                raise DuplicateIdentifier(existing, key)
            moment, last_updated = self._now()
            blob = self._stamp(resource, id, 1, last_updated)
            db.execute(
                "INSERT INTO immunization (id, version, last_updated, bk_system, bk_value, patient_system, "
                "patient_value, status, occ_start, occ_end) VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?)",
                (id, last_updated, *key, *self._columns(index)),
            )
            self._step("create:indexed")
            db.execute(
                "INSERT INTO resource_version (id, version, last_updated, recorder, resource) VALUES (?, 1, ?, ?, ?)",
                (id, last_updated, recorder, blob),
            )
            self._step("create:versioned")
            self._write_identifiers(db, id, index.identifiers)
        return StoredResource(id, 1, moment, orjson.loads(blob), recorder), True

    def update(
        self,
        id: str,
        resource: dict[str, Any],
        *,
        if_match: int | None = None,
        recorder: str | None = None,
    ) -> StoredResource:
        """Store a new version (id and meta set by the store); raises ``NotFound``, ``VersionConflict``, ``IdentifierChanged``.

        The business identifier chosen at creation must stay the resource's only identifier value in its
        system; identifiers of other systems may change. ``if_match`` None updates whatever is current.
        """
        index = self._index(resource)
        with self._write() as db:
            row = db.execute(
                "SELECT version, last_updated, bk_system, bk_value FROM immunization WHERE id = ?", (id,)
            ).fetchone()
            if row is None:
                raise NotFound(id)
            current, previous_updated, bk_system, bk_value = row
            if if_match is not None and if_match != current:
                raise VersionConflict(id, if_match, current)
            found = [value for system, value in index.identifiers if system == bk_system]
            if found != [bk_value]:
                raise IdentifierChanged(id, (bk_system, bk_value), found)
            version = current + 1
            moment, last_updated = self._now(previous_updated)
            blob = self._stamp(resource, id, version, last_updated)
            changed = db.execute(
                "UPDATE immunization SET version = ?, last_updated = ?, patient_system = ?, patient_value = ?, "
                "status = ?, occ_start = ?, occ_end = ? WHERE id = ? AND version = ?",
                (version, last_updated, *self._columns(index), id, current),
            ).rowcount
            if changed != 1:  # another connection moved it between our read and write
                raise VersionConflict(id, current, current + 1)
            self._step("update:indexed")
            db.execute(
                "INSERT INTO resource_version (id, version, last_updated, recorder, resource) VALUES (?, ?, ?, ?, ?)",
                (id, version, last_updated, recorder, blob),
            )
            self._step("update:versioned")
            self._write_identifiers(db, id, index.identifiers)
        return StoredResource(id, version, moment, orjson.loads(blob), recorder)

    def delete_all(self) -> None:
        """Remove every record and version (test isolation); the schema stays."""
        with self._write() as db:
            for table in ("immunization_identifier", "immunization", "resource_version"):
                db.execute(f"DELETE FROM {table}")  # fixed table names, no input

    def reset(self) -> None:
        """Same as ``delete_all``: an empty register, as at first start."""
        self.delete_all()

    # -- reads --------------------------------------------------------------------------------------

    def read(self, id: str) -> StoredResource | None:
        """The current version of a record, or None."""
        with self._lock:
            return self._current(self._conn, id)

    def vread(self, id: str, version: int) -> StoredResource | None:
        """One version of a record, or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT id, version, last_updated, recorder, resource FROM resource_version "
                "WHERE id = ? AND version = ?",
                (id, version),
            ).fetchone()
        return self._row(*row) if row else None

    def history(self, id: str) -> list[StoredResource]:
        """Every version of a record, newest first (empty when the id is unknown)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, version, last_updated, recorder, resource FROM resource_version "
                "WHERE id = ? ORDER BY version DESC",
                (id,),
            ).fetchall()
        return [self._row(*row) for row in rows]

    def search(
        self,
        *,
        patient_identifier: tuple[str | None, str] | None = None,
        identifier: tuple[str | None, str] | None = None,
        status: list[str] | None = None,
        date_ranges: list[tuple[str, str]] | None = None,
        sort: str | None = None,
        count: int | None = None,
        offset: int = 0,
    ) -> tuple[list[StoredResource], int]:
        """Current versions matching every criterion, one page of them, and the total number of matches.

        Tokens are ``(system, value)``; a system of None matches any system, ``""`` an identifier without
        one. ``date_ranges`` are ``(prefix, value)`` on ``occurrenceDateTime`` with FHIR prefixes
        (eq ne gt lt ge le sa eb), all of which must hold. Without ``sort`` records come in the order they
        were created; with ``date``/``-date`` records without a date (``occurrenceString``) come last.
        """
        where: list[str] = []
        args: list[Any] = []
        if patient_identifier is not None:
            self._token(where, args, "i.patient_system", "i.patient_value", patient_identifier)
        if identifier is not None:
            sub_where: list[str] = []
            self._token(sub_where, args, "ii.system", "ii.value", identifier)
            where.append(
                "EXISTS (SELECT 1 FROM immunization_identifier ii WHERE ii.id = i.id AND "
                + " AND ".join(sub_where)
                + ")"
            )
        if status is not None:
            if not status:
                return [], 0
            where.append(f"i.status IN ({', '.join('?' * len(status))})")
            args.extend(status)
        for prefix, value in date_ranges or []:
            where.append(self._date_clause(prefix, value, args))
        if sort not in (None, *SORTS):
            raise InvalidSearch(f"cannot sort by {sort!r}: use date or -date")
        if (count is not None and count < 0) or offset < 0:
            raise InvalidSearch("_count and the page offset cannot be negative")
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        order = {
            None: "i.seq",
            "date": "i.occ_start IS NULL, i.occ_start, i.seq",
            "-date": "i.occ_start IS NULL, i.occ_start DESC, i.seq DESC",
        }[sort]
        with self._lock:
            db = self._conn
            total = db.execute(f"SELECT COUNT(*) FROM immunization i{clause}", args).fetchone()[0]
            if count == 0:
                return [], total
            rows = db.execute(
                "SELECT v.id, v.version, v.last_updated, v.recorder, v.resource FROM immunization i "
                f"JOIN resource_version v ON v.id = i.id AND v.version = i.version{clause} "
                f"ORDER BY {order} LIMIT ? OFFSET ?",
                [*args, -1 if count is None else count, offset],
            ).fetchall()
        return [self._row(*row) for row in rows], total

    @staticmethod
    def _token(
        where: list[str], args: list[Any], system_col: str, value_col: str, token: tuple[str | None, str]
    ) -> None:
        system, value = token
        where.append(f"{value_col} = ?")
        args.append(value)
        if system is not None:
            where.append(f"{system_col} = ?" if system else f"({system_col} IS NULL OR {system_col} = '')")
            if system:
                args.append(system)

    def _date_clause(self, prefix: str, value: str, args: list[Any]) -> str:
        if prefix not in DATE_PREFIXES:
            raise InvalidSearch(
                f"date prefix {prefix!r} is not supported: use one of {', '.join(DATE_PREFIXES)}"
            )
        try:
            start, end = date_range(value, self._tz)
        except ValueError as exc:
            raise InvalidSearch(f"date={prefix}{value}: {exc}") from None
        within = "(i.occ_start >= ? AND i.occ_end <= ?)"
        clause, values = {
            "eq": (within, [start, end]),
            "ne": (f"(i.occ_start IS NOT NULL AND NOT {within})", [start, end]),
            "gt": ("i.occ_end > ?", [end]),
            "lt": ("i.occ_start < ?", [start]),
            "ge": (f"(i.occ_end > ? OR {within})", [end, start, end]),
            "le": (f"(i.occ_start < ? OR {within})", [start, start, end]),
            "sa": ("i.occ_start >= ?", [end]),
            "eb": ("i.occ_end <= ?", [start]),
        }[prefix]
        args.extend(values)
        return clause
