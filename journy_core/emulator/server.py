"""The emulator's HTTP server: it reads requests, hands them to the service, and writes the answers out.

Standard library only, so ``python -m journy_core.emulator`` works in any environment that has the package.
Each connection gets a daemon thread (``ThreadingHTTPServer``) and keeps alive (HTTP/1.1), like the real API,
because the client's delivery loop relies on one reused connection and the benchmarks measure exactly that.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from .control import handle_control, live_page
from .endpoints import JSON
from .frontend import TRACKER_JS, TRACKER_PATHS
from .options import is_loopback
from .page import PAGE_CSP
from .service import Service

__all__ = ["EmulatorServer"]

logger = logging.getLogger("journy_core.emulator")

_MAX_BODY = 10 * 1024 * 1024

#: Where the tracker script sends a page's journy(...) calls (see ``frontend.py``).
_FRONTEND_PATH = "/_emulator/frontend"
# No credentials are needed (the script omits them), so any origin may post; a preflight may come from a page on
# another loopback port (Chrome's private-network checks ask for the last header).
_CORS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "POST, OPTIONS"),
    ("Access-Control-Allow-Headers", "Content-Type"),
    ("Access-Control-Allow-Private-Network", "true"),
)

_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    # The Date header changes once a second: formatting it once per second rather than per answer saves a few
    # microseconds on every call of a throughput benchmark.
    global _date_cache  # noqa: PLW0603 - a one-entry cache; a race merely formats the date twice
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]


class EmulatorServer(ThreadingHTTPServer):
    """Serves ``service`` on ``address`` until :meth:`stop`; ``url`` gives the base URL the live page shows."""

    daemon_threads = True
    # Never join handler threads on close: one may be sleeping through a "timeout" fault.
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        service: Service,
        url: Callable[[], str],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.service = service
        self.url = url
        self.ssl_context = ssl_context
        #: Set by stop(): wakes every latency and timeout wait at once.
        self.stopping = threading.Event()
        self._loopback_only = is_loopback(address[0])
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Binds without ``HTTPServer``'s ``socket.getfqdn()``, a reverse DNS lookup that can stall start-up."""
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def get_request(self) -> tuple[socket.socket, Any]:
        """The accepted connection, wrapped for TLS when serving https."""
        connection, address = super().get_request()
        if self.ssl_context is not None:
            # The handshake happens on the first read, in the connection's own thread, not in the accept loop.
            connection = self.ssl_context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return connection, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Logs a failure to serve one connection."""
        # Clients dropping connections is routine (timeouts, resets they asked for); anything else is a bug
        # worth seeing, without socketserver's default traceback dump on stderr.
        if isinstance(sys.exc_info()[1], OSError):
            logger.debug("emulator: connection error with %s", client_address, exc_info=True)
        else:
            logger.exception("emulator: error while serving %s", client_address)

    def host_allowed(self, host_header: str | None) -> bool:
        """Whether a request naming ``host_header`` may be answered."""
        # A web page could otherwise read this dev data through DNS rebinding (evil.example -> 127.0.0.1).
        if host_header is None or not self._loopback_only:
            return True
        host = host_header.strip()
        if host.startswith("["):
            host = host[: host.find("]") + 1]
        elif host.count(":") == 1:
            host = host.split(":", 1)[0]
        return is_loopback(host)

    def track_connection(self, connection: socket.socket, add: bool) -> None:
        """Remembers (or forgets) an open connection, so that :meth:`stop` can close it."""
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def stop(self, thread: threading.Thread | None) -> None:
        """Stops serving and closes every open connection; never waits for a sleeping ``timeout`` fault."""
        self.stopping.set()
        stopper = threading.Thread(target=self.shutdown, name="journy-emulator-stop", daemon=True)
        stopper.start()
        address = (self.server_name, self.server_port)
        while stopper.is_alive():
            # serve_forever() notices the shutdown only when select() returns: a connection wakes it at once
            # instead of after its poll interval, which keeps stop() (and each test's teardown) fast.
            with contextlib.suppress(OSError):
                socket.create_connection(address, timeout=0.2).close()
            stopper.join(0.05)
        self.server_close()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            # Idle keep-alive connections would otherwise keep answering after stop().
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "journy-emulator"
    # Idle keep-alive connections are closed after this many seconds, as real servers do.
    timeout = 120
    server: EmulatorServer

    def setup(self) -> None:
        super().setup()
        # Answers go out in one write, but without NODELAY a client's delayed ACK could still cost 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track_connection(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("emulator: %s " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def do_PUT(self) -> None:
        self._answer("PUT")

    def do_PATCH(self) -> None:
        self._answer("PATCH")

    def do_OPTIONS(self) -> None:
        self._answer("OPTIONS")

    def do_HEAD(self) -> None:
        self._answer("HEAD")

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                length = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                return None
            if length == 0:
                while self.rfile.readline(1024).strip():
                    pass  # trailers
                return b"".join(chunks)
            size += length
            if size > _MAX_BODY:
                return None
            chunks.append(self.rfile.read(length))
            self.rfile.readline(1024)

    def _read_body(self) -> bytes | None:
        """The request body, or None when it cannot be read (the connection is then closed)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if not length_header:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            return None
        if not 0 <= length <= _MAX_BODY:
            return None
        return self.rfile.read(length)

    def _answer(self, method: str) -> None:
        try:
            self._dispatch(method)
        except OSError:
            raise  # the connection broke: nothing to answer on it
        except Exception:
            # An emulator bug must show as a 500 with a log entry, not as a silently dropped connection that
            # would look like a "reset" fault to the client under test.
            logger.exception("emulator: failed to answer %s %s", method, self.path)
            self.close_connection = True
            self._send_plain(500, {"message": "The emulator failed to answer; see its log"})

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        path = split.path
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        raw = self._read_body()
        if raw is None:
            self.close_connection = True
            self._send_plain(400, {"message": "The request body cannot be read"})
            return
        if not self.server.host_allowed(self.headers.get("Host")):
            self._send_plain(421, {"message": "This emulator only answers to loopback host names"})
            return
        head = method == "HEAD"
        if path.startswith("/_emulator/") and path != _FRONTEND_PATH:
            status, document = handle_control(self.server.service, "GET" if head else method, path, split.query, raw)
            self._send_plain(status, document, head=head)
        elif path in ("/", "/index.html") and method in ("GET", "HEAD"):
            page_headers = (("Content-Security-Policy", PAGE_CSP), ("Cache-Control", "no-store"))
            page = live_page(self.server.service, self.server.url())
            self._send_plain(200, page, "text/html; charset=utf-8", page_headers, head=head)
        elif path == _FRONTEND_PATH:
            self._answer_frontend(method, raw)
        elif path in TRACKER_PATHS and method in ("GET", "HEAD"):
            js_headers = (("Cache-Control", "no-cache"), ("X-Content-Type-Options", "nosniff"))
            self._send_plain(200, TRACKER_JS, "application/javascript; charset=utf-8", js_headers, head=head)
        elif path == "/favicon.ico":
            self._send_plain(204, "", None)
        else:
            self._answer_api(method, path, split.query, raw, head=head)

    def _answer_frontend(self, method: str, raw: bytes) -> None:
        """``/_emulator/frontend``: the tracker script's calls, from pages of any origin (the app's), so CORS."""
        if method == "OPTIONS":
            self._send_plain(204, "", None, (*_CORS, ("Access-Control-Max-Age", "600")))
        elif method == "POST":
            status, document = self.server.service.record_frontend(raw, self.headers.get("Referer"))
            self._send_plain(status, document, headers=_CORS)
        else:
            self._send_plain(405, {"message": f"Method {method} is not allowed on {_FRONTEND_PATH}"}, headers=_CORS)

    def _answer_api(self, method: str, path: str, query: str, raw: bytes, *, head: bool) -> None:
        outcome = self.server.service.handle_api(method, path, query, self.headers, raw)
        if outcome.delay > 0 and self.server.stopping.wait(outcome.delay):
            self.close_connection = True
            return
        if outcome.reset:
            self._reset()
            return
        self._send(
            outcome.status,
            outcome.body,
            outcome.content_type,
            limit=outcome.limit,
            remaining=outcome.remaining,
            headers=outcome.headers,
            head=head,
        )

    def _send_plain(
        self,
        status: int,
        document: Any,
        content_type: str | None = JSON,
        headers: Iterable[tuple[str, str]] = (),
        *,
        head: bool = False,
    ) -> None:
        """Answers outside the API: no key, so the rate-limit headers show the untouched limit."""
        body = document.encode() if isinstance(document, str) else json.dumps(document).encode()
        limit = self.server.service.options.rate_limit
        self._send(status, body, content_type, limit=limit, remaining=limit, headers=headers, head=head)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str | None,
        *,
        limit: int,
        remaining: int,
        headers: Iterable[tuple[str, str]] = (),
        head: bool = False,
    ) -> None:
        # Status line, headers and body in a single write: one TCP segment for small answers.
        reason = self.responses.get(status, ("",))[0]
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Server: {self.server_version}",
            f"Date: {_http_date()}",
            f"X-RateLimit-Limit: {limit}",
            f"X-RateLimit-Remaining: {remaining}",
        ]
        if content_type is not None:
            lines.append(f"Content-Type: {content_type}")
        if status != 204:
            lines.append(f"Content-Length: {len(body)}")
        lines.extend(f"{name}: {value}" for name, value in headers)
        if self.close_connection:
            lines.append("Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if not head and status != 204:
            data += body
        try:
            self.wfile.write(data)
        except OSError:
            # The client gave up (e.g. after its read timeout during a "timeout" fault): nothing to answer.
            self.close_connection = True

    def _reset(self) -> None:
        self.close_connection = True
        try:
            # Linger 0 turns close() into a TCP RST: the client sees "connection reset", not a clean EOF.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
