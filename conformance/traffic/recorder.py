"""Every exchange the endpoint sees: recorded with secrets masked, queryable, written as NDJSON evidence.

An ``Exchange`` is one request and its answer (or the fault that replaced it) with timing, the
authenticated subject, the operation, and the validation issues the endpoint found. ``TrafficRecorder``
numbers exchanges in arrival order, answers the Then-steps' questions ("the creates received for this
patient since the scenario began": ``exchanges(mark, operation="create", patient_identifier=...)``) and
writes them as NDJSON, at the end or live while recording. Credentials never reach storage in clear:
``Authorization``/``Proxy-Authorization``/cookie headers, headers named like tokens or secrets, the
OAuth fields ``client_assertion``, ``subject_token``, ``actor_token``, ``code_verifier``,
``access_token``, ``refresh_token``, ``id_token``, ``client_secret``, ``assertion`` and ``password`` in
JSON bodies, form bodies and query strings, and any JWT-shaped string anywhere, are replaced at record
time by ``sha256:<first 16 hex digits>`` of the value. The fingerprint is stable (unsalted), so the token
a ``/token`` response issued can be recognised in later ``Authorization: Bearer sha256:...`` headers;
authorization codes stay in clear (single use, worthless without the masked ``code_verifier``). Personal
data (SSIN, names) is *not* redacted here: the evidence must show what was sent, and redaction belongs
to the report.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import tempfile
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, unquote_plus, urlsplit

import orjson

from conformance.errors import ConfigurationError

__all__ = [
    "OPERATIONS",
    "SECRET_FIELDS",
    "SECRET_HEADERS",
    "Exchange",
    "TrafficRecorder",
    "classify",
    "fingerprint",
    "load_ndjson",
    "mask_secrets",
]

OPERATIONS = (
    "capabilities",
    "create",
    "read",
    "vread",
    "update",
    "delete",
    "history",
    "search",
    "validate",
    "token",
    "authorize",
    "other",
)
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "dpop", "x-api-key"}
)
SECRET_FIELDS = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "client_assertion",
        "subject_token",
        "actor_token",
        "code_verifier",
        "client_secret",
        "assertion",
        "password",
    }
)
MAX_JSON_DEPTH = 200  # deeper bodies are kept as bytes, so writing them never hits a recursion limit

_FINGERPRINT_RE = re.compile(r"sha256:[0-9a-f]{16}")
_JWT_RE = re.compile(
    r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*)?"
)
_JWT_RE_B = re.compile(_JWT_RE.pattern.encode())


def fingerprint(secret: str | bytes) -> str:
    """The stable stand-in for a secret: ``sha256:`` and the first 16 hex digits of its SHA-256."""
    data = secret.encode() if isinstance(secret, str) else secret
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


def _mask_value(value: str) -> str:
    return value if _FINGERPRINT_RE.fullmatch(value) else fingerprint(value)


Header = tuple[str, str]
Body = bytes | dict[str, Any] | list[Any] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Exchange:
    """One request the endpoint received and what it answered (or the fault that replaced the answer)."""

    id: int = 0
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    duration_ms: float = 0.0
    method: str = "GET"
    url: str = ""
    path: str = ""
    query: str = ""
    request_headers: tuple[Header, ...] = ()
    request_body: Body = None
    response_status: int | None = None
    response_headers: tuple[Header, ...] = ()
    response_body: Body = None
    subject: str | None = None
    operation: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    validation: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "method", self.method.upper())
        started = self.started if self.started.tzinfo else self.started.replace(tzinfo=UTC)
        set_(self, "started", started.astimezone(UTC))
        set_(self, "request_headers", _headers(self.request_headers))
        set_(self, "response_headers", _headers(self.response_headers))
        set_(self, "request_body", _body(self.request_body))
        set_(self, "response_body", _body(self.response_body))
        if self.url and not (self.path and self.query):
            parts = urlsplit(self.url)
            set_(self, "path", self.path or parts.path)
            set_(self, "query", self.query or parts.query)

    def request_header(self, name: str) -> str | None:
        """The first request header of that name (case-insensitive), or None."""
        return _header(self.request_headers, name)

    def response_header(self, name: str) -> str | None:
        """The first response header of that name (case-insensitive), or None."""
        return _header(self.response_headers, name)

    @property
    def query_params(self) -> list[tuple[str, str]]:
        """The query string decoded into ``(name, value)`` pairs, in order."""
        return parse_qsl(self.query, keep_blank_values=True)

    @property
    def request_json(self) -> dict[str, Any] | list[Any] | None:
        """The request body when it is JSON (an object or array), else None."""
        return None if isinstance(self.request_body, bytes) else self.request_body

    @property
    def response_json(self) -> dict[str, Any] | list[Any] | None:
        """The response body when it is JSON (an object or array), else None."""
        return None if isinstance(self.response_body, bytes) else self.response_body

    def to_json(self) -> dict[str, Any]:
        """This exchange as one JSON object (bodies as JSON, or base64 with ``*_body_encoding``)."""
        data: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "started":
                value = value.isoformat().replace("+00:00", "Z")
            elif item.name.endswith("_headers"):
                value = [list(pair) for pair in value]
            elif item.name.endswith("_body"):
                data[item.name + "_encoding"] = _encoding(value)
                if isinstance(value, bytes):
                    value = base64.b64encode(value).decode("ascii")
            data[item.name] = value
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Exchange:
        """Read back an exchange written by ``to_json``."""
        values: dict[str, Any] = {}
        for item in fields(cls):
            if item.name not in data:
                continue
            value = data[item.name]
            if item.name == "started":
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            elif item.name.endswith("_headers"):
                value = tuple((str(name), str(text)) for name, text in value)
            elif item.name.endswith("_body") and data.get(item.name + "_encoding") == "base64":
                value = base64.b64decode(value)
            values[item.name] = value
        return cls(**values)


def _header(headers: tuple[Header, ...], name: str) -> str | None:
    name = name.lower()
    return next((value for key, value in headers if key.lower() == name), None)


def _headers(headers: Mapping[str, str] | Iterable[Header] | None) -> tuple[Header, ...]:
    if not headers:
        return ()
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return tuple((_text(name), _text(value)) for name, value in pairs)


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _encoding(body: Body) -> str | None:
    if body is None:
        return None
    return "base64" if isinstance(body, bytes) else "json"


def _body(body: Any, *, copy: bool = False) -> Body:
    """Canonical body: None, a parsed JSON object/array (a private copy if ``copy``), or bytes."""
    if body is None:
        return None
    if isinstance(body, str):
        body = body.encode()
    elif isinstance(body, bytearray | memoryview):
        body = bytes(body)
    elif isinstance(body, dict | list):
        if not copy:
            return body
        try:
            body = orjson.dumps(body, default=str)
        except (TypeError, orjson.JSONEncodeError) as exc:
            return f"<body not serialisable as JSON: {exc}>".encode()
    if not isinstance(body, bytes):
        raise TypeError(f"an exchange body is bytes, str, a JSON object or array, not {type(body).__name__}")
    if body[:1] in (b"{", b"[") or body.lstrip()[:1] in (b"{", b"["):
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body
        if _depth(parsed) <= MAX_JSON_DEPTH:
            return parsed
    return body


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


# -- masking ---------------------------------------------------------------------------------------


class _Masker:
    """Replaces secrets by fingerprints; one per recorder (extra header and field names are configurable)."""

    def __init__(self, headers: Iterable[str] = (), fields: Iterable[str] = ()) -> None:
        self.headers = SECRET_HEADERS | {name.lower() for name in headers}
        self.fields = SECRET_FIELDS | set(fields)
        names = "|".join(re.escape(name) for name in sorted(self.fields))
        self._form = re.compile(rf"(?<![^&?])({names})=([^&#]*)")
        self._form_b = re.compile(self._form.pattern.encode())
        self._json_b = re.compile(rb'"(' + names.encode() + rb')"\s*:\s*"((?:[^"\\]|\\.)*)"')

    def text(self, value: str) -> str:
        """Mask JWT-shaped strings and secret ``name=value`` pairs of a query or form string."""
        value = _JWT_RE.sub(lambda m: fingerprint(m.group(0)), value)
        return self._form.sub(lambda m: f"{m.group(1)}={_mask_value(unquote_plus(m.group(2)))}", value)

    def url(self, value: str) -> str:
        """Mask secrets in a URL's query string (and any JWT-shaped part)."""
        return self.text(value)

    def header(self, name: str, value: str) -> str:
        """Mask a header value when its name says it carries a credential."""
        lower = name.lower()
        if lower == "cookie":
            return "; ".join(self._cookie(part) for part in value.split(";"))
        if lower == "set-cookie":
            first, sep, rest = value.partition(";")
            return self._cookie(first) + sep + rest
        if lower in ("authorization", "proxy-authorization"):
            scheme, space, credentials = value.strip().partition(" ")
            if space and credentials.strip():
                return f"{scheme} {_mask_value(credentials.strip())}"
            return _mask_value(value)
        if lower in self.headers or "token" in lower or "secret" in lower or "api-key" in lower:
            return _mask_value(value)
        return self.text(value)

    @staticmethod
    def _cookie(part: str) -> str:
        name, equals, value = part.strip().partition("=")
        return f"{name}={_mask_value(value)}" if equals else _mask_value(name)

    def body(self, body: Body) -> Body:
        """Mask a canonical body in place (JSON: secret keys and JWT strings; bytes: form, JSON-ish, JWT)."""
        if isinstance(body, bytes):
            body = _JWT_RE_B.sub(lambda m: fingerprint(m.group(0)).encode(), body)
            body = self._json_b.sub(
                lambda m: (
                    b'"' + m.group(1) + b'":"' + _mask_value(m.group(2).decode("latin-1")).encode() + b'"'
                ),
                body,
            )
            return self._form_b.sub(
                lambda m: (
                    m.group(1) + b"=" + _mask_value(unquote_plus(m.group(2).decode("latin-1"))).encode()
                ),
                body,
            )
        if body is not None:
            self.json(body)
        return body

    def json(self, value: Any) -> Any:
        """Mask a parsed JSON value in place, without recursion (any depth); returns it."""
        stack = [value]
        while stack:
            item = stack.pop()
            entries = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in list(entries):
                if isinstance(child, str):
                    if isinstance(key, str) and key in self.fields:
                        item[key] = _mask_value(child)
                    elif "eyJ" in child:
                        item[key] = _JWT_RE.sub(lambda m: fingerprint(m.group(0)), child)
                elif isinstance(child, dict | list):
                    stack.append(child)
        return value

    def exchange(self, exchange: Exchange) -> Exchange:
        """A copy of the exchange with every secret replaced by its fingerprint."""
        return replace(
            exchange,
            url=self.url(exchange.url),
            query=self.text(exchange.query),
            request_headers=tuple(
                (name, self.header(name, value)) for name, value in exchange.request_headers
            ),
            response_headers=tuple(
                (name, self.header(name, value)) for name, value in exchange.response_headers
            ),
            request_body=self.body(_body(exchange.request_body, copy=True)),  # mask a private copy
            response_body=self.body(_body(exchange.response_body, copy=True)),
            validation=self.json(_json_copy(exchange.validation, [])),
            error=_JWT_RE.sub(lambda m: fingerprint(m.group(0)), exchange.error) if exchange.error else None,
            tags=self.json(_json_copy(exchange.tags, {})),
        )


def _json_copy(value: Any, empty: Any) -> Any:
    """A private, JSON-only copy of a small structure (validation issues, tags)."""
    if not value:
        return empty
    try:
        return orjson.loads(orjson.dumps(value, default=str))
    except (TypeError, orjson.JSONEncodeError) as exc:
        return type(empty)() if not isinstance(empty, dict) else {"unserialisable": str(exc)}


def mask_secrets(exchange: Exchange) -> Exchange:
    """A copy of ``exchange`` with the default set of secrets replaced by fingerprints."""
    return _Masker().exchange(exchange)


# -- classification --------------------------------------------------------------------------------


def classify(method: str, path: str, fhir_base: str = "/fhir") -> tuple[str, str | None, str | None]:
    """The ``(operation, resource_type, resource_id)`` of a request, from its method and path."""
    method = method.upper()
    if path.endswith("/protocol/openid-connect/token"):
        return "token", None, None
    if path.endswith("/protocol/openid-connect/auth"):
        return "authorize", None, None
    base = fhir_base.rstrip("/")
    if not (path == base or path.startswith(base + "/")):
        return "other", None, None
    parts = [part for part in path[len(base) :].split("/") if part]
    if parts == ["metadata"]:
        return ("capabilities" if method == "GET" else "other"), None, None
    if not parts or not parts[0][:1].isupper():
        return "other", None, None
    kind, rest = parts[0], parts[1:]
    table: dict[tuple[str, int], str] = {("GET", 0): "search", ("POST", 0): "create"}
    if rest == ["_search"] and method == "POST":
        return "search", kind, None
    if rest and rest[-1] == "$validate":
        return "validate", kind, rest[0] if len(rest) == 2 else None
    if len(rest) == 1:
        table = {("GET", 1): "read", ("PUT", 1): "update", ("DELETE", 1): "delete", ("PATCH", 1): "update"}
    elif len(rest) == 2 and rest[1] == "_history":
        table = {("GET", 2): "history"}
    elif len(rest) == 3 and rest[1] == "_history":
        table = {("GET", 3): "vread"}
    operation = table.get((method, len(rest)), "other")
    return operation, kind, rest[0] if rest else None


# -- the recorder ----------------------------------------------------------------------------------


class TrafficRecorder:
    """Thread-safe, ordered store of exchanges, optionally appended live to an NDJSON file."""

    def __init__(
        self,
        ndjson_path: str | Path | None = None,
        *,
        max_exchanges: int | None = None,
        secret_headers: Iterable[str] = (),
        secret_fields: Iterable[str] = (),
        fhir_base: str = "/fhir",
    ) -> None:
        """Record in memory (the newest ``max_exchanges`` when set) and, with ``ndjson_path``, to that file."""
        self._lock = threading.Lock()
        self._items: list[Exchange] = []
        self._ids: list[int] = []
        self._last_id = 0
        self._max = max_exchanges
        self._masker = _Masker(secret_headers, secret_fields)
        self._fhir_base = fhir_base
        self.ndjson_path = Path(ndjson_path) if ndjson_path is not None else None
        self._live: IO[bytes] | None = None
        if self.ndjson_path is not None:
            self.ndjson_path.parent.mkdir(parents=True, exist_ok=True)
            self._live = self.ndjson_path.open("ab")

    def record(self, exchange: Exchange) -> Exchange:
        """Mask secrets, number the exchange, keep it (and append it to the live file); returns it."""
        masked = self._masker.exchange(exchange)
        if not masked.operation:
            operation, kind, id = classify(masked.method, masked.path, self._fhir_base)
            masked = replace(
                masked,
                operation=operation,
                resource_type=masked.resource_type or kind,
                resource_id=masked.resource_id or id,
            )
        with self._lock:
            self._last_id += 1
            masked = replace(masked, id=self._last_id)
            self._items.append(masked)
            self._ids.append(masked.id)
            if self._max is not None and len(self._items) > self._max:
                drop = len(self._items) - self._max
                del self._items[:drop], self._ids[:drop]
            if self._live is not None:
                self._live.write(_line(masked))
                self._live.flush()
        return masked

    def mark(self) -> int:
        """The id of the last exchange recorded so far (0 if none): pass it as ``since`` later."""
        with self._lock:
            return self._last_id

    def clear(self) -> None:
        """Forget the exchanges held in memory; ids keep counting, so earlier marks stay meaningful."""
        with self._lock:
            self._items.clear()
            self._ids.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def exchanges(
        self,
        since: int | None = None,
        *,
        operation: str | None = None,
        method: str | None = None,
        path_prefix: str | None = None,
        subject: str | None = None,
        patient_identifier: tuple[str, str] | None = None,
        predicate: Callable[[Exchange], bool] | None = None,
    ) -> list[Exchange]:
        """Exchanges recorded after mark ``since``, in order, that satisfy every filter given.

        ``patient_identifier`` keeps exchanges about that patient: an Immunization request or response
        body (or a Bundle entry) whose ``patient.identifier`` is ``(system, value)``, or a search whose
        ``patient.identifier`` parameter names it.
        """
        with self._lock:
            start = bisect_right(self._ids, since) if since is not None else 0
            items = self._items[start:]
        wanted_method = method.upper() if method else None
        return [
            item
            for item in items
            if (operation is None or item.operation == operation)
            and (wanted_method is None or item.method == wanted_method)
            and (path_prefix is None or item.path.startswith(path_prefix))
            and (subject is None or item.subject == subject)
            and (patient_identifier is None or _about_patient(item, patient_identifier))
            and (predicate is None or predicate(item))
        ]

    def write_ndjson(self, path: str | Path) -> int:
        """Write the exchanges held in memory to ``path``, one JSON object a line (atomically); returns the count."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            items = list(self._items)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                for item in items:
                    out.write(_line(item))
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return len(items)

    def close(self) -> None:
        """Close the live NDJSON file, if any (recording in memory goes on)."""
        with self._lock:
            if self._live is not None:
                self._live.close()
                self._live = None

    def __enter__(self) -> TrafficRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _line(exchange: Exchange) -> bytes:
    return orjson.dumps(exchange.to_json(), default=str) + b"\n"


def load_ndjson(path: str | Path) -> list[Exchange]:
    """Read exchanges back from an NDJSON file; a torn last line (a crash while appending) is skipped."""
    source = Path(path)
    try:
        lines = source.read_bytes().split(b"\n")
    except OSError as exc:
        raise ConfigurationError(f"cannot read traffic file {source}: {exc.strerror or exc}") from None
    result = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            result.append(Exchange.from_json(orjson.loads(line)))
        except (orjson.JSONDecodeError, TypeError, ValueError, KeyError, AttributeError) as exc:
            if number == len(lines):  # no newline after it: the writer stopped mid-line
                break
            raise ConfigurationError(f"{source} line {number} is not a recorded exchange: {exc}") from None
    return result


def _about_patient(exchange: Exchange, wanted: tuple[str, str]) -> bool:
    system, value = wanted
    for name, text in exchange.query_params:
        if name in ("patient.identifier", "patient:identifier") and text == f"{system}|{value}":
            return True
    return any(
        _mentions_patient(body, system, value) for body in (exchange.request_json, exchange.response_json)
    )


def _mentions_patient(body: Any, system: str, value: str) -> bool:
    if not isinstance(body, dict):
        return False
    candidates = [body]
    if body.get("resourceType") == "Bundle" and isinstance(body.get("entry"), list):
        candidates += [entry.get("resource") for entry in body["entry"] if isinstance(entry, dict)]
    for resource in candidates:
        if isinstance(resource, dict) and resource.get("resourceType") == "Immunization":
            patient = resource.get("patient")
            identifier = patient.get("identifier") if isinstance(patient, dict) else None
            if (
                isinstance(identifier, dict)
                and identifier.get("system") == system
                and identifier.get("value") == value
            ):
                return True
    return False
