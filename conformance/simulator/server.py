"""HTTP adapters over the simulator core: a threaded HTTP/1.1 server and an ASGI application.

Both only translate between the wire and ``HttpRequest``/``HttpResponse`` (``http``); everything the
simulator says comes from its ``handle``. What they add is transport behaviour:

* ``SimulatorServer`` (stdlib ``ThreadingHTTPServer``, one thread per connection, HTTP/1.1 keep-alive,
  optional TLS): a request body over the size limit is answered ``413`` from its ``Content-Length`` (or
  as soon as a chunked body passes the limit) without reading it, and the connection is then closed
  after a bounded drain so the client reads the answer instead of a reset; ``DropConnection`` closes the
  socket with ``SO_LINGER 0`` (a TCP RST) and no answer at all, so the client sees a connection error,
  not a status; malformed requests get an OperationOutcome, never a stack trace (errors go to logging).
  Idle keep-alive connections are closed after ``idle_timeout`` seconds; ``stop()`` closes them all.
* ``asgi_app`` for in-process use with ``httpx.ASGITransport``: the blocking core runs in a worker
  thread; ``DropConnection`` raises ``httpx.RemoteProtocolError`` from the application, which
  ``ASGITransport`` (with its default ``raise_app_exceptions=True``) hands to the client exactly as an
  ``httpx.Client`` reports a server that disconnected without answering; catch ``httpx.TransportError``
  for both. Under a real ASGI server (uvicorn ...) that exception becomes the server's own 500 or reset.

The path handed to the core is the raw request path (percent-encoding kept, query removed), so an id
such as ``..%2F..%2Fetc`` reaches the FHIR API as it was sent; query parameters are decoded. Header
names are lower case; repeated headers are joined with ``", "``.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import signal
import socket
import socketserver
import ssl
import struct
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, Self
from urllib.parse import parse_qs

from conformance.errors import ConfigurationError
from conformance.simulator.http import DropConnection, HttpRequest, HttpResponse

__all__ = [
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_BODY_BYTES",
    "BackgroundServer",
    "SimulatorApp",
    "SimulatorServer",
    "asgi_app",
    "is_loopback",
    "run_until_signal",
]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_IDLE_TIMEOUT = 60.0
_DRAIN_BYTES = 8 * 1024 * 1024  # read and discard at most this much of a refused body ...
_DRAIN_SECONDS = 2.0  # ... for at most this long, so the client gets to read the 413
_MAX_LINE = 65536
_STOP_JOIN_SECONDS = 5.0

_log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class SimulatorApp(Protocol):
    """What the adapters need from the simulator core (``app.Simulator`` implements it)."""

    @property
    def max_body_bytes(self) -> int:
        """The largest request body accepted; larger ones are answered 413 without being read."""
        ...

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one request (may raise ``DropConnection`` or take its time)."""
        ...

    def reject(self, request: HttpRequest, status: int, code: str, diagnostics: str) -> HttpResponse:
        """Answer (and record) a request the transport refused before the core saw it."""
        ...

    def attach(self, base_url: str) -> None:
        """Learn the public base URL a server listens on (called before the first request)."""
        ...


class _Refused(Exception):
    """A transport-level refusal (status, issue code, diagnostics); the connection closes afterwards."""

    def __init__(self, status: int, code: str, diagnostics: str) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics


# --- the threaded server ------------------------------------------------------------------------------


class BackgroundServer:
    """An HTTP server answered from a daemon thread: ``start``, ``stop``, ``running``, ``with``.

    Subclasses set ``_httpd`` (a ``ThreadingHTTPServer`` with ``close_connections()``), ``_thread =
    None`` and ``_what`` (what to call it in messages) before serving.
    """

    _httpd: Any
    _thread: threading.Thread | None
    _what = "server"

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Self:
        """Serve in a background (daemon) thread; returns self."""
        if self._thread is not None:
            raise RuntimeError(f"the {self._what} was already started")
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"{self._what.replace(' ', '-')}-{self._httpd.server_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until ``stop()`` is called from another thread (or a signal)."""
        self._thread = threading.current_thread()
        self._httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        """Stop accepting, close every open connection, wait briefly for handler threads; idempotent."""
        if self._thread is not None and self._thread is not threading.current_thread():
            self._httpd.shutdown()
            self._thread.join(_STOP_JOIN_SECONDS)
        self._httpd.server_close()
        self._httpd.close_connections()

    def __enter__(self) -> Self:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class SimulatorServer(BackgroundServer):
    """The simulator on a real socket, served from a background thread.

    ``port=0`` picks a free port; ``base_url`` tells which (``http://127.0.0.1:PORT``, ``https`` with
    an ``ssl_context``). Binding happens in the constructor (an address in use raises
    ``ConfigurationError``) and the simulator is told its public base URL; ``start()`` begins serving,
    ``stop()`` closes the listening socket and every open connection. Usable as a context manager.
    """

    _what = "simulator server"

    def __init__(
        self,
        simulator: SimulatorApp,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        *,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    ) -> None:
        self.simulator = simulator
        self.host = host
        self.ssl_context = ssl_context
        self._thread: threading.Thread | None = None
        try:
            self._httpd = _HttpServer((host, port), simulator, ssl_context, idle_timeout)
        except OSError as error:
            reason = "address already in use" if error.errno == errno.EADDRINUSE else error.strerror or error
            raise ConfigurationError(
                f"cannot listen on {_authority(host, port)}: {reason} (choose another port)"
            ) from None
        self.port: int = self._httpd.server_address[1]
        simulator.attach(self.base_url)

    @property
    def base_url(self) -> str:
        """The URL clients use: scheme, host (``[...]`` for IPv6) and port, without a trailing slash."""
        scheme = "https" if self.ssl_context is not None else "http"
        host = self.host
        if host in ("", "0.0.0.0", "::"):  # a wildcard is no address to reach: name this machine
            host = socket.gethostname()
        return f"{scheme}://{_authority(host, self.port)}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run_until_signal(
    server: BackgroundServer, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
) -> None:
    """Serve until one of ``signals`` (Ctrl-C, SIGTERM) arrives, then stop cleanly and return.

    Signal handlers are installed only in the main thread (elsewhere Ctrl-C cannot reach us anyway)
    and restored afterwards.
    """
    stopping = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for number in signals:
            previous[number] = signal.signal(number, lambda *_: stopping.set())
    try:
        if not server.running:
            server.start()
        while not stopping.wait(0.5) and server.running:
            pass
    except KeyboardInterrupt:
        pass
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        server.stop()


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True  # a handler stuck in a delay fault never keeps the process alive
    block_on_close = False  # stop() joins connection threads itself, with a deadline
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        app: SimulatorApp,
        ssl_context: ssl.SSLContext | None,
        idle_timeout: float,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.app = app
        self.ssl_context = ssl_context
        self.idle_timeout = idle_timeout
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        self._closing = False
        super().__init__(address, _Handler)
        if ssl_context is not None:
            # the handshake happens in the connection's thread, never in the accept loop
            self.socket = ssl_context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS look-up (getfqdn) that can take seconds: skip it
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"simulator-connection-{client_address[1] if isinstance(client_address, tuple) else ''}",
            daemon=True,
        )
        with self._connections_lock:
            if self._closing:
                self.shutdown_request(request)
                return
            self._connections[request] = thread
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.pop(request, None)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake every connection thread by shutting its socket down, then join them with a deadline."""
        with self._connections_lock:
            self._closing = True
            items = list(self._connections.items())
        for sock, _ in items:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + _STOP_JOIN_SECONDS
        for _, thread in items:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def handle_error(self, request: Any, client_address: Any) -> None:
        # never print tracebacks to stderr (or the client): log them
        _log.debug("connection from %s ended with an error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """One connection: reads requests, hands them to the core, writes answers (keep-alive)."""

    protocol_version = "HTTP/1.1"
    server_version = "VaccicardSimulator"
    sys_version = ""
    server: _HttpServer

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout
        super().setup()
        self._dropped = False
        with contextlib.suppress(OSError):  # headers and body go in one write; no Nagle delay
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except (OSError, ssl.SSLError) as error:
                _log.debug("TLS handshake with %s failed: %s", self.client_address, error)
                self.close_connection = True
                return
        super().handle()

    def handle_one_request(self) -> None:
        self.command = None  # type: ignore[assignment]
        self.path = ""
        self.headers = None  # type: ignore[assignment]
        try:
            self.raw_requestline = self.rfile.readline(_MAX_LINE + 1)
            if len(self.raw_requestline) > _MAX_LINE:
                self.requestline = self.request_version = ""
                self.command = ""
                self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():  # it has answered (400, 431, 505 ...)
                return
            self._serve()
        except TimeoutError:
            self.close_connection = True  # idle keep-alive connection, or a client too slow to send
        except (ConnectionError, ssl.SSLError, OSError) as error:
            _log.debug("connection from %s lost: %s", self.client_address, error)
            self.close_connection = True

    # --- one request ------------------------------------------------------------------------------

    def _request(self, body: bytes = b"") -> HttpRequest:
        target = self.path or ""
        path, _, query = target.partition("?")
        headers: dict[str, str] = {}
        for name, value in self.headers.items() if getattr(self, "headers", None) is not None else ():
            lower = name.lower()
            headers[lower] = f"{headers[lower]}, {value}" if lower in headers else value
        return HttpRequest(
            method=(self.command or "-").upper(),
            path=path or "/",
            query=parse_qs(query, keep_blank_values=True),
            headers=headers,
            body=body,
        )

    def _serve(self) -> None:
        app = self.server.app
        try:
            body = self._read_body(app.max_body_bytes)
        except _Refused as refused:
            self.close_connection = True
            self._write(app.reject(self._request(), refused.status, refused.code, refused.diagnostics))
            self._linger()
            return
        request = self._request(body)
        try:
            response = app.handle(request)
        except DropConnection:
            self._drop()
            return
        except Exception:
            _log.exception("the simulator failed on %s %s", request.method, request.path)
            response = app.reject(request, 500, "exception", "internal error in the simulator (see its log)")
        self._write(response)

    def handle_expect_100(self) -> bool:
        # refuse an announced oversized body before the client sends it
        length = self.headers.get("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > self.server.app.max_body_bytes:
            return True  # _serve answers 413 without reading; the client never gets a 100 Continue
        return super().handle_expect_100()

    def _read_body(self, limit: int) -> bytes:
        transfer = self.headers.get("Transfer-Encoding")
        length = self.headers.get("Content-Length")
        if transfer is not None:
            if length is not None:
                raise _Refused(
                    400, "structure", "a request must not have both Content-Length and Transfer-Encoding"
                )
            if transfer.strip().lower() != "chunked":
                raise _Refused(501, "not-supported", f"Transfer-Encoding {transfer!r} is not supported")
            return self._read_chunked(limit)
        if length is None:
            return b""
        text = length.strip()
        if not text.isdigit() or len(text) > 18:
            raise _Refused(400, "structure", "Content-Length is not a non-negative integer")
        size = int(text)
        if size > limit:
            raise _Refused(
                413, "too-costly", f"request body of {size} bytes exceeds the limit of {limit} bytes"
            )
        body = self.rfile.read(size)
        if len(body) < size:
            raise ConnectionError("client closed the connection before sending the whole body")
        return body

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(_MAX_LINE + 1)
            if not line.endswith(b"\n") or len(line) > _MAX_LINE:
                raise _Refused(400, "structure", "malformed chunked request body")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _Refused(400, "structure", "malformed chunk size in request body") from None
            if size < 0:
                raise _Refused(400, "structure", "malformed chunk size in request body")
            if size == 0:
                while True:  # trailers, up to the empty line
                    trailer = self.rfile.readline(_MAX_LINE + 1)
                    if trailer in (b"\r\n", b"\n", b""):
                        return b"".join(parts)
            total += size
            if total > limit:
                raise _Refused(413, "too-costly", f"request body exceeds the limit of {limit} bytes")
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                raise ConnectionError("client closed the connection in the middle of a chunk")
            parts.append(chunk)
            if self.rfile.readline(3).strip():
                raise _Refused(400, "structure", "malformed chunked request body")

    # --- answers ----------------------------------------------------------------------------------

    def _write(self, response: HttpResponse) -> None:
        keep_alive = self.headers is not None and self.headers.get("Connection", "").lower() == "keep-alive"
        if self.request_version == "HTTP/1.0" and not keep_alive:
            self.close_connection = True
        status = response.status
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        lines = [f"{self.protocol_version} {status} {reason}".rstrip()]
        lines.append(f"Server: {self.server_version}")
        lines.append(f"Date: {self.date_time_string()}")
        skip = {"content-length", "connection", "transfer-encoding", "server", "date"}
        for name, value in response.headers.items():
            if name.lower() in skip:
                continue
            lines.append(f"{_header_text(name)}: {_header_text(str(value))}")
        body = b"" if self.command == "HEAD" or status in (204, 304) or status < 200 else response.body
        if status not in (204, 304) and status >= 200:
            lines.append(f"Content-Length: {len(response.body) if self.command == 'HEAD' else len(body)}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        self.wfile.write(head + body)
        self.log_request(status, len(body))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Answer a malformed request (called by ``parse_request``) with an OperationOutcome."""
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        diagnostics = message or phrase
        issue = "too-costly" if code in (413, 414, 431) else "structure"
        with contextlib.suppress(Exception):
            if not getattr(self, "request_version", None):
                self.request_version = "HTTP/1.1"
            if self.command is None:
                self.command = ""
            response = self.server.app.reject(self._request(), code, issue, diagnostics)
            self._write(response)

    def _linger(self) -> None:
        """After refusing a body: stop sending, read and discard a bounded amount, so the answer arrives."""
        sock = self.connection
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + _DRAIN_SECONDS
        drained = 0
        try:
            while drained < _DRAIN_BYTES and (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass

    def _drop(self) -> None:
        """Close the connection abruptly, answering nothing: SO_LINGER 0 makes the close send a RST."""
        self.close_connection = True
        self._dropped = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def finish(self) -> None:
        if self._dropped:
            with contextlib.suppress(OSError, ValueError):
                self.rfile.close()
            with contextlib.suppress(OSError):
                self.connection.close()  # RST; the server's own shutdown of it then finds it closed
            return
        with contextlib.suppress(OSError, ValueError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s - " + format, self.address_string(), *args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        _log.debug('%s "%s" %s %s', self.address_string(), self.requestline, code, size)

    def address_string(self) -> str:
        return str(self.client_address[0]) if isinstance(self.client_address, tuple) else "-"


def _header_text(value: str) -> str:
    """A header name or value safe to write: no CR/LF (response splitting), latin-1 only."""
    return value.replace("\r", " ").replace("\n", " ")


# --- ASGI ---------------------------------------------------------------------------------------------


def asgi_app(simulator: SimulatorApp) -> ASGIApp:
    """An ASGI 3 application serving ``simulator`` (HTTP and lifespan scopes).

    The core runs in a worker thread (``anyio.to_thread``), so a delay fault does not block the event
    loop. A body over ``simulator.max_body_bytes`` is answered 413 without reading the rest.
    ``DropConnection`` raises ``httpx.RemoteProtocolError``: see the module docstring.
    """
    import anyio.to_thread
    import httpx

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            raise ValueError(f"the simulator serves HTTP, not {scope['type']!r}")
        raw_path = scope.get("raw_path") or scope.get("path", "/").encode("utf-8")
        path = raw_path.split(b"?", 1)[0].decode("latin-1") or "/"
        query = scope.get("query_string", b"").decode("latin-1")
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", ()):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        head = HttpRequest(
            method=scope.get("method", "GET").upper(),
            path=path,
            query=parse_qs(query, keep_blank_values=True),
            headers=headers,
        )
        limit = simulator.max_body_bytes
        declared = headers.get("content-length", "").strip()
        refusal: tuple[int, str, str] | None = None
        if declared and declared.isdigit() and int(declared) > limit:
            refusal = (
                413,
                "too-costly",
                f"request body of {declared} bytes exceeds the limit of {limit} bytes",
            )
        parts: list[bytes] = []
        total = 0
        while refusal is None:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                refusal = (413, "too-costly", f"request body exceeds the limit of {limit} bytes")
                break
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        if refusal is not None:
            response = await anyio.to_thread.run_sync(simulator.reject, head, *refusal)
        else:
            request = HttpRequest(head.method, head.path, head.query, head.headers, b"".join(parts))
            try:
                response = await anyio.to_thread.run_sync(simulator.handle, request)
            except DropConnection as drop:
                raise httpx.RemoteProtocolError(
                    f"Server disconnected without sending a response (simulated: {drop.reason})"
                ) from None
            except Exception:
                _log.exception("the simulator failed on %s %s", request.method, request.path)
                response = await anyio.to_thread.run_sync(
                    simulator.reject,
                    request,
                    500,
                    "exception",
                    "internal error in the simulator (see its log)",
                )
        out_headers = [
            (name.lower().encode("latin-1"), _header_text(str(value)).encode("latin-1", "replace"))
            for name, value in response.headers.items()
            if name.lower() not in ("content-length", "connection", "transfer-encoding")
        ]
        out_headers.append((b"content-length", str(len(response.body)).encode("ascii")))
        await send({"type": "http.response.start", "status": response.status, "headers": out_headers})
        await send({"type": "http.response.body", "body": response.body, "more_body": False})

    return app
