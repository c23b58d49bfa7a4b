"""``RecordingProxy``: a reverse proxy on 127.0.0.1 between vendor software and a Vaccicard API.

The vendor software is pointed at ``proxy.base_url`` (``http://127.0.0.1:<port>`` plus the upstream's
path, e.g. ``/fhir``) instead of the acceptance API. Each request goes upstream with the same method,
path and query (byte for byte, percent-encoding kept), the same headers (``Authorization`` included)
except the hop-by-hop ones (``Connection`` and those it lists, ``Keep-Alive``, ``Proxy-*``, ``TE``,
``Trailer``, ``Transfer-Encoding``, ``Upgrade``), ``Host`` (the upstream's) and ``Expect`` (the proxy
answers ``100 Continue`` itself), and the same body bytes, streamed both ways: nothing is buffered
beyond ``record_limit`` bytes per body. Upstream answers, errors included (a 502 stays a 502), come
back as they are.

What is changed, and why: a ``Location`` or ``Content-Location`` header naming the upstream origin is
rewritten to the proxy's, so the software's next request comes through the proxy too. With
``rewrite_links`` (default on), JSON answers up to ``record_limit`` bytes also get every JSON string
that starts with the upstream origin rewritten in place (Bundle ``link.url`` and ``entry.fullUrl``,
absolute references): otherwise the software would follow ``next`` links straight to the upstream and
page 2 would bypass the evidence. Only those string prefixes change; every other byte stays (a gzip or
deflate answer is decoded, rewritten and encoded again). Larger answers stream unchanged. The evidence
keeps what the upstream sent; the tags say how many links were rewritten.

Every exchange is recorded in the ``TrafficRecorder`` (which fingerprints tokens): the request as the
software sent it, the upstream's answer (bodies decoded from gzip/deflate, cut at ``record_limit``
with ``*_body_truncated`` tags, and always the SHA-256 and size of the full bodies as sent), the
``operation``/``resource_type``/``resource_id`` the recorder's ``classify`` derives from method and
path (relative to the upstream's base path) so Then-steps filter exactly as on the simulator, the
``subject`` read (unverified) from the bearer token, and for creates and updates of FHIR resources the
issues of the optional ``Validator`` (Immunizations without ``meta.profile`` against BeVaccination).
An upstream that cannot be reached is answered 502, one that does not answer in time 504, both with an
OperationOutcome saying so and recorded with ``error``. The exchange is recorded before the last bytes
of the answer leave, so software that has its answer always finds it in the recorder. The upstream is
reached directly, or through ``HTTPS_PROXY`` (``NO_PROXY``) when the environment names one.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import re
import socket
import socketserver
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from conformance.errors import ConfigurationError
from conformance.live.iam import unverified_claims
from conformance.live.tls import tls_failure
from conformance.simulator.config import BE_VACCINATION_PROFILE
from conformance.simulator.server import BackgroundServer
from conformance.traffic.recorder import Exchange, TrafficRecorder, classify

if TYPE_CHECKING:
    from conformance.fhir.validator import Validator

__all__ = ["DEFAULT_RECORD_LIMIT", "DEFAULT_TIMEOUT", "HOP_BY_HOP", "RecordingProxy"]

DEFAULT_RECORD_LIMIT = 1024 * 1024
"""Bytes of each body kept in the evidence (and the largest JSON answer whose links are rewritten)."""
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=60.0, write=60.0, pool=10.0)
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_NOT_FORWARDED = HOP_BY_HOP | {"host", "expect"}
_CHUNK = 64 * 1024
_DRAIN_LIMIT = 8 * 1024 * 1024  # request body read after an upstream failure, at most
_MAX_INFLATE = 32  # a compressed answer is decoded for rewriting only up to 32 times the record limit
_MAX_LINE = 65536
FHIR_JSON = "application/fhir+json"

_log = logging.getLogger(__name__)


class RecordingProxy(BackgroundServer):
    """A recording reverse proxy to ``upstream_url`` (see the module docstring); a context manager."""

    _what = "recording proxy"

    def __init__(
        self,
        upstream_url: str,
        *,
        recorder: TrafficRecorder,
        validator: Validator | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        verify: ssl.SSLContext | bool = True,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        record_limit: int = DEFAULT_RECORD_LIMIT,
        rewrite_links: bool = True,
    ) -> None:
        """``verify``: httpx's ``verify`` for the upstream (an ``SSLContext`` from ``live.httpx_verify``).

        Binds now (ConfigurationError when the port is taken); ``start()`` or ``with`` serves.
        """
        parts = urlsplit(upstream_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"the upstream must be an http(s) URL, not {upstream_url!r}")
        self.upstream_url = upstream_url.rstrip("/")
        self.upstream_origin = f"{parts.scheme}://{parts.netloc}"
        self.base_path = parts.path.rstrip("/")
        self.recorder = recorder
        self.validator = validator
        self.record_limit = record_limit
        self.rewrite_links = rewrite_links
        self.http = httpx.Client(verify=verify, timeout=timeout, follow_redirects=False)
        self._validator_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        try:
            self._httpd = _ProxyServer((host, port), self)
        except OSError as error:
            self.http.close()
            raise ConfigurationError(
                f"cannot listen on {host}:{port}: {error.strerror or error} (choose another port)"
            ) from None
        self.host = host
        self.port: int = self._httpd.server_address[1]
        authority = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.origin = f"http://{authority}"
        self._upstream_origins = _origin_variants(parts.scheme, parts.hostname, parts.port)

    @property
    def base_url(self) -> str:
        """The FHIR base URL to configure in the vendor software (the proxy's origin + upstream path)."""
        return self.origin + self.base_path

    def stop(self) -> None:
        """Stop accepting, close open connections and the upstream client; idempotent."""
        super().stop()
        self.http.close()

    # --- what the handler asks ------------------------------------------------------------------

    def rewrite(self, text: str) -> str:
        """``text`` with a leading upstream origin replaced by the proxy's (headers)."""
        for origin in self._upstream_origins:
            if text.startswith(origin) and (len(text) == len(origin) or text[len(origin)] in "/?#"):
                return self.origin + text[len(origin) :]
        return text

    def rewrite_body(self, body: bytes) -> tuple[bytes, int]:
        """JSON bytes with every string value starting with the upstream origin rewritten; and the count."""
        count = 0
        for origin in self._upstream_origins:
            for escape in (False, True):  # JSON may escape the slashes: "https:\/\/host"
                old, new = (f'"{origin}', f'"{self.origin}')
                if escape:
                    old, new = old.replace("/", "\\/"), new.replace("/", "\\/")
                pattern = re.compile(re.escape(old.encode()) + rb'(?=[/?#"]|\\/)')
                replacement = new.encode()
                body, hits = pattern.subn(lambda _, r=replacement: r, body)
                count += hits
        return body, count

    def validate(self, resource: dict[str, Any]) -> list[dict[str, Any]]:
        """Validation issues of a request resource (BeVaccination for an Immunization without profile)."""
        if self.validator is None:
            return []
        profiles = resource.get("meta", {}).get("profile") if isinstance(resource.get("meta"), dict) else None
        profile = (
            BE_VACCINATION_PROFILE
            if resource.get("resourceType") == "Immunization" and not profiles
            else None
        )
        with self._validator_lock:  # the validator keeps per-call state: one resource at a time
            outcome = self.validator.validate(resource, profile)
        return [asdict(issue) for issue in outcome.issues]


# --- the server --------------------------------------------------------------------------------------


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], proxy: RecordingProxy) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.proxy = proxy
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS look-up that can take seconds: skip it
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            sockets = list(self._connections)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.debug("proxy connection from %s ended with an error", client_address, exc_info=True)


@dataclass
class _Capture:
    """The first ``limit`` bytes of a body as it passes, with its full size and SHA-256."""

    limit: int
    data: bytearray = field(default_factory=bytearray)
    size: int = 0
    digest: Any = field(default_factory=hashlib.sha256)

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.digest.update(chunk)
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]

    @property
    def truncated(self) -> bool:
        return self.size > len(self.data)

    def tags(self, prefix: str) -> dict[str, Any]:
        tags: dict[str, Any] = {f"{prefix}_bytes": self.size, f"{prefix}_sha256": self.digest.hexdigest()}
        if self.truncated:
            tags[f"{prefix}_truncated"] = True
        return tags


class _ClientGone(Exception):
    """The software closed its connection (or sent a malformed body) while the request was forwarded."""


class _RequestBody:
    """The request body read from the client as the upstream request consumes it."""

    def __init__(self, handler: _Handler, capture: _Capture) -> None:
        self.handler = handler
        self.capture = capture
        self.finished = False
        headers = handler.headers
        self.chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        length = (headers.get("Content-Length") or "").strip()
        if not self.chunked and length and not length.isdigit():
            raise _Malformed("Content-Length is not a non-negative integer")
        self.length = int(length) if length and not self.chunked else 0
        self.present = self.chunked or bool(length)

        self._chunks = self._read()

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def drain(self, limit: int) -> None:
        """Read (and capture) what the upstream did not take, up to ``limit`` bytes in all."""
        with contextlib.suppress(_ClientGone, OSError):
            for _ in self._chunks:
                if self.capture.size > limit:
                    return

    def _read(self) -> Iterator[bytes]:
        for chunk in self._chunked() if self.chunked else self._sized():
            self.capture.add(chunk)
            yield chunk
        self.finished = True

    def _sized(self) -> Iterator[bytes]:
        left = self.length
        while left > 0:
            chunk = self.handler.rfile.read(min(left, _CHUNK))
            if not chunk:
                raise _ClientGone("the software closed the connection before sending the whole body")
            left -= len(chunk)
            yield chunk

    def _chunked(self) -> Iterator[bytes]:
        rfile = self.handler.rfile
        while True:
            line = rfile.readline(_MAX_LINE + 1)
            if not line.endswith(b"\n"):
                raise _ClientGone("malformed or incomplete chunked request body")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _ClientGone("malformed chunk size in the request body") from None
            if size == 0:
                while rfile.readline(_MAX_LINE + 1) not in (b"\r\n", b"\n", b""):
                    pass  # trailers are not forwarded
                return
            left = size
            while left > 0:
                chunk = rfile.read(min(left, _CHUNK))
                if not chunk:
                    raise _ClientGone("the software closed the connection in the middle of a chunk")
                left -= len(chunk)
                yield chunk
            rfile.readline(3)


class _Malformed(Exception):
    """A request the proxy cannot forward (answered 400)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "VaccicardRecordingProxy"
    sys_version = ""
    server: _ProxyServer
    timeout = 120

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s - " + format, self.client_address[0], *args)

    def _proxy(self) -> None:
        proxy = self.server.proxy
        started = datetime.now(UTC)
        clock = time.perf_counter()
        target = self.path
        if "://" in target.split("?", 1)[0]:  # absolute-form: keep path and query only
            parts = urlsplit(target)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        path, _, query = target.partition("?")
        received = [(name, value) for name, value in self.headers.items()]
        request_capture, response_capture = _Capture(proxy.record_limit), _Capture(proxy.record_limit)
        record = _Record(
            started, clock, self.command, path, query, received, request_capture, response_capture
        )
        record.url = proxy.upstream_origin + target
        try:
            body = _RequestBody(self, request_capture)
        except _Malformed as error:
            self.close_connection = True
            self._answer_outcome(400, "structure", str(error), record)
            return
        listed = {
            token.strip().lower()
            for token in (self.headers.get("Connection") or "").split(",")
            if token.strip()
        }
        forwarded = [
            (n, v) for n, v in received if n.lower() not in _NOT_FORWARDED and n.lower() not in listed
        ]
        url = httpx.URL(proxy.upstream_origin, raw_path=target.encode("latin-1"))
        request = httpx.Request(self.command, url, headers=forwarded, content=body if body.present else None)
        try:
            response = proxy.http.send(request, stream=True)
        except _ClientGone as error:
            self.close_connection = True
            record.error = str(error)
            self._record(record)
            return
        except httpx.TransportError as error:
            if body.present and not body.finished:
                body.drain(_DRAIN_LIMIT)  # for the evidence, and to keep the connection in step
                self.close_connection = not body.finished
            self._upstream_failed(error, record)
            return
        except Exception as error:  # an answer and the evidence, whatever went wrong
            _log.exception("could not forward %s %s", self.command, path)
            self.close_connection = True
            self._answer_outcome(
                502, "exception", f"the proxy could not forward the request: {error}", record
            )
            return
        try:
            self._relay(response, record)
        finally:
            response.close()
        self._record(record)

    # --- answers ------------------------------------------------------------------------------------

    def _relay(self, response: httpx.Response, record: _Record) -> None:
        proxy = self.server.proxy
        record.status = response.status_code
        record.response_headers = [
            (n.decode("latin-1"), v.decode("latin-1")) for n, v in response.headers.raw
        ]
        listed = {t.strip().lower() for t in response.headers.get("connection", "").split(",") if t.strip()}
        headers: list[tuple[str, str]] = []
        for name, value in record.response_headers:
            lower = name.lower()
            if lower in HOP_BY_HOP or lower in listed or lower == "content-length":
                continue
            if lower in ("location", "content-location"):
                rewritten = proxy.rewrite(value)
                if rewritten != value:
                    record.tags.setdefault("rewritten_headers", []).append(lower)
                value = rewritten
            headers.append((name, value))
        no_body = self.command == "HEAD" or response.status_code in (204, 304) or response.status_code < 200
        declared = response.headers.get("content-length")
        raw = response.iter_raw(_CHUNK)
        try:
            if no_body:
                if declared is not None:
                    headers.append(("Content-Length", declared))
                self._record(record)
                self._head(response.status_code, headers)
                return
            encoding = response.headers.get("content-encoding", "identity").strip().lower()
            record.response_encoding = encoding
            if proxy.rewrite_links and _is_json(response.headers.get("content-type")) and encoding in _CODECS:
                buffered = bytearray()
                for chunk in raw:
                    buffered += chunk
                    if len(buffered) > proxy.record_limit:
                        break
                else:
                    body = self._rewritten(bytes(buffered), encoding, record)
                    record.response.add(bytes(buffered))
                    self._head(response.status_code, [*headers, ("Content-Length", str(len(body)))])
                    self._record(record)
                    self._write(body)
                    return
                raw = _prepend(bytes(buffered), raw)
            self._stream(response.status_code, headers, declared, raw, record)
        except httpx.TransportError as error:
            record.error = f"the upstream broke off its answer: {_describe(error)}"
            self.close_connection = True
            _abort(self.connection)
        except OSError as error:
            record.error = f"the software closed the connection while receiving the answer: {error}"
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _proxy

    def _rewritten(self, body: bytes, encoding: str, record: _Record) -> bytes:
        proxy = self.server.proxy
        decoded = _decode(body, encoding, limit=_MAX_INFLATE * proxy.record_limit)
        if decoded is None:
            return body
        rewritten, count = proxy.rewrite_body(decoded)
        if not count:
            return body
        record.tags["rewritten_links"] = count
        return _encode(rewritten, encoding)

    def _stream(
        self,
        status: int,
        headers: list[tuple[str, str]],
        declared: str | None,
        raw: Iterator[bytes],
        record: _Record,
    ) -> None:
        chunked = declared is None and self.request_version != "HTTP/1.0"
        if declared is not None:
            headers = [*headers, ("Content-Length", declared)]
        elif chunked:
            headers = [*headers, ("Transfer-Encoding", "chunked")]
        else:
            self.close_connection = True  # HTTP/1.0 without a length: the end of the body is the close
        self._head(status, headers)
        pending: bytes | None = None  # written one chunk late, so the exchange is recorded before the end
        for chunk in raw:
            record.response.add(chunk)
            if pending:
                self._write(b"%x\r\n%s\r\n" % (len(pending), pending) if chunked else pending)
            pending = chunk
        self._record(record)
        end = (b"%x\r\n%s\r\n" % (len(pending), pending) if pending else b"") + b"0\r\n\r\n"
        self._write(end if chunked else pending or b"")

    def _head(self, status: int, headers: list[tuple[str, str]]) -> None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        lines = [f"{self.protocol_version} {status} {reason}".rstrip()]
        lines += [f"{name}: {_safe(value)}" for name, value in headers]
        if self.close_connection:
            lines.append("Connection: close")
        self._write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace"))

    def _write(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()

    def _answer_outcome(self, status: int, code: str, diagnostics: str, record: _Record) -> None:
        body = json.dumps(
            {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
            }
        ).encode()
        headers = [("Content-Type", f"{FHIR_JSON}; charset=utf-8"), ("Content-Length", str(len(body)))]
        record.status = status
        record.response_headers = headers
        record.response.add(body)
        record.error = diagnostics
        record.tags["answered_by"] = "proxy"
        self._record(record)
        with contextlib.suppress(OSError):
            self._head(status, headers)
            self._write(body)

    def _upstream_failed(self, error: httpx.TransportError, record: _Record) -> None:
        upstream = self.server.proxy.upstream_url
        if isinstance(error, httpx.TimeoutException):
            self._answer_outcome(
                504, "timeout", f"the upstream {upstream} did not answer in time ({_describe(error)})", record
            )
        elif tls_failure(error) is not None:
            failure = tls_failure(error)
            reason = getattr(failure, "verify_message", None) or str(failure)
            self._answer_outcome(
                502,
                "transient",
                f"the upstream {upstream} could not be reached: its TLS certificate could not be verified "
                f"({reason}); start the proxy with --ca-bundle naming the CA that signed it",
                record,
            )
        else:
            self._answer_outcome(
                502, "transient", f"the upstream {upstream} could not be reached: {_describe(error)}", record
            )

    # --- evidence -----------------------------------------------------------------------------------

    def _record(self, record: _Record) -> None:
        """Record the exchange once: before the answer's last bytes leave, so a client that has its
        answer always finds it in the recorder."""
        if record.recorded:
            return
        record.recorded = True
        proxy = self.server.proxy
        try:
            proxy.recorder.record(record.exchange(proxy))
        except Exception:  # recording must never break the software's traffic
            _log.exception("could not record the exchange %s %s", record.method, record.path)


@dataclass
class _Record:
    """What the handler learns about one exchange, turned into an ``Exchange`` at the end."""

    started: datetime
    clock: float
    method: str
    path: str
    query: str
    request_headers: list[tuple[str, str]]
    request: _Capture
    response: _Capture
    url: str = ""
    status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_encoding: str = "identity"
    error: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    recorded: bool = False

    def exchange(self, proxy: RecordingProxy) -> Exchange:
        operation, resource_type, resource_id = classify(self.method, self.path, proxy.base_path or "/")
        request_encoding = _header(self.request_headers, "content-encoding") or "identity"
        request_body = _recorded(self.request, request_encoding.strip().lower())
        response_body = _recorded(self.response, self.response_encoding)
        if operation == "create" and self.status is not None and 200 <= self.status < 300:
            resource_id = _id_from_location(_header(self.response_headers, "location"), resource_type)
        validation: list[dict[str, Any]] = []
        if operation in ("create", "update") and isinstance(request_body, bytes | bytearray):
            validation = self._validation(proxy, bytes(request_body))
        tags = {"via": "proxy", "upstream": proxy.upstream_url, **self.tags}
        tags.update(self.request.tags("request_body") if self.request.size else {})
        tags.update(self.response.tags("response_body") if self.response.size else {})
        return Exchange(
            started=self.started,
            duration_ms=(time.perf_counter() - self.clock) * 1000.0,
            method=self.method,
            url=self.url,
            path=self.path,
            query=self.query,
            request_headers=tuple(self.request_headers),
            request_body=request_body,
            response_status=self.status,
            response_headers=tuple(self.response_headers),
            response_body=response_body,
            subject=_subject(_header(self.request_headers, "authorization")),
            operation=operation,
            resource_type=resource_type,
            resource_id=resource_id,
            validation=validation,
            error=self.error,
            tags=tags,
        )

    def _validation(self, proxy: RecordingProxy, body: bytes) -> list[dict[str, Any]]:
        if self.request.truncated:
            return []
        try:
            resource = json.loads(body)
        except ValueError:
            return []
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            return []
        try:
            return proxy.validate(resource)
        except Exception as error:  # a validator problem must not lose the exchange
            _log.exception("could not validate the request body of %s %s", self.method, self.path)
            self.tags["validation_error"] = str(error)
            return []


# --- helpers -------------------------------------------------------------------------------------------

_CODECS = ("identity", "gzip", "x-gzip", "deflate")


def _origin_variants(scheme: str, host: str, port: int | None) -> tuple[str, ...]:
    """The spellings of an origin a server may use in links (with and without its default port)."""
    default = 443 if scheme == "https" else 80
    name = f"[{host}]" if ":" in host else host
    variants = [f"{scheme}://{name}:{port or default}"]
    if port in (None, default):
        variants.append(f"{scheme}://{name}")
    return tuple(variants)


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media in ("application/json", FHIR_JSON) or media.endswith("+json")


def _decode(body: bytes, encoding: str, limit: int) -> bytes | None:
    """The body without its content coding; None when it cannot be decoded or exceeds ``limit`` bytes."""
    try:
        if encoding in ("", "identity"):
            return body
        if encoding in ("gzip", "x-gzip"):
            decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            decoder = zlib.decompressobj() if body[:1] == b"\x78" else zlib.decompressobj(-zlib.MAX_WBITS)
        else:
            return None
        decoded = decoder.decompress(body, limit)
    except zlib.error:
        return None
    return None if decoder.unconsumed_tail else decoded


def _encode(body: bytes, encoding: str) -> bytes:
    if encoding in ("gzip", "x-gzip"):
        return gzip.compress(body)
    if encoding == "deflate":
        return zlib.compress(body)
    return body


def _recorded(capture: _Capture, encoding: str) -> bytes | None:
    """The body kept as evidence: decoded when complete and decodable, else the raw prefix."""
    if not capture.size:
        return None
    data = bytes(capture.data)
    if capture.truncated:
        return data
    return _decode(data, encoding, capture.limit) or data


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((value for key, value in headers if key.lower() == name), None)


def _id_from_location(location: str | None, resource_type: str | None) -> str | None:
    if not location or not resource_type:
        return None
    segments = [s for s in urlsplit(location).path.split("/") if s]
    if resource_type in segments:
        index = segments.index(resource_type)
        if index + 1 < len(segments):
            return segments[index + 1]
    return None


def _subject(authorization: str | None) -> str | None:
    """``nihdi:<nihii11>`` or ``cbe:<cbe>`` read (unverified) from a bearer JWT, as the simulator names it."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    claims = unverified_claims(token.strip())
    if isinstance(claims.get("cbe"), str):
        return f"cbe:{claims['cbe']}"
    profile = claims.get("userProfile")
    entries = [v for v in profile.values() if isinstance(v, dict)] if isinstance(profile, dict) else []
    numbers = [
        v["nihii11"] for v in entries if v.get("recognised") is True and isinstance(v.get("nihii11"), str)
    ]
    numbers += [v["nihii11"] for v in entries if isinstance(v.get("nihii11"), str)]
    return f"nihdi:{numbers[0]}" if numbers else None


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _safe(value: str) -> str:
    return value.replace("\r", " ").replace("\n", " ")


def _abort(sock: socket.socket) -> None:
    """Close a connection at once (the client must not take a partial answer for a whole one)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
