"""The local HTTP server the tests fetch from: a real server on 127.0.0.1 (port 0), the
replies and faults it can stage, and stand-ins for what a server cannot do (a trickled
TLS handshake, connects that hang, a refused port). The pages it serves are built in
pages.py.

    with LocalServer() as server:
        server.route("/", html(html_page()), status(500))  # in order; the last repeats
        url = server.url("/")

In a test, the `server` fixture (conftest.py) gives one, stopped after the test.
"""

from __future__ import annotations

import itertools
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[["_Handler"], None]

# --- replies: what the server does with one request -------------------------------------


def _bytes(body: str | bytes) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else body


def html(
    body: str | bytes,
    status: int = 200,
    headers: dict[str, str] | None = None,
    *,
    ctype: str = "",
) -> Reply:
    """`body` (text is sent as UTF-8) with `status`, as text/html unless `ctype` says."""
    data = _bytes(body)

    def reply(h: _Handler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype or "text/html; charset=utf-8")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    return reply


def status(code: int, headers: dict[str, str] | None = None) -> Reply:
    return html(f"<html><body><h1>{code}</h1></body></html>".encode(), code, headers)


def redirect(to: str) -> Reply:
    return status(302, {"Location": to})


def conditional(body: str | bytes, etag: str, last_modified: str | None = None) -> Reply:
    """200 with an ETag, or 304 when the request names that ETag."""

    def reply(h: _Handler) -> None:
        if h.headers.get("If-None-Match") == etag:
            h.send_response(304)
            h.send_header("ETag", etag)
            h.end_headers()
            return
        headers = {"ETag": etag}
        if last_modified:
            headers["Last-Modified"] = last_modified
        html(body, headers=headers)(h)

    return reply


def hang(seconds: float = 30.0) -> Reply:
    """Accept the request and never answer (until the server stops)."""

    def reply(h: _Handler) -> None:
        h.server.stopping.wait(seconds)  # type: ignore[attr-defined]
        h.close_connection = True

    return reply


def truncated(body: bytes, declared: int) -> Reply:
    """Announce `declared` bytes, send `body` (fewer), then close the connection."""

    def reply(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/html; charset=utf-8")
        h.send_header("Content-Length", str(declared))
        h.end_headers()
        h.wfile.write(body)
        h.wfile.flush()
        h.close_connection = True
        h.connection.shutdown(socket.SHUT_RDWR)

    return reply


def stream(total: int, *, declare_length: bool = False, chunk: int = 256 * 1024) -> Reply:
    """An HTML body of `total` bytes, sent in chunks until the client hangs up; records
    how many bytes went out in `server.sent`."""

    def reply(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/html")
        if declare_length:
            h.send_header("Content-Length", str(total))
        else:
            h.send_header("Connection", "close")  # the body ends when the connection does
        h.end_headers()
        block = (b"<p>" + b"x" * (chunk - 8) + b"</p>\n")[:chunk]
        sent = 0
        try:
            h.wfile.write(b"<html><body>")
            while sent < total:
                h.wfile.write(block)
                sent += len(block)
        except OSError:
            pass  # the client stopped reading: what the test wants
        finally:
            h.server.sent.append(sent)  # type: ignore[attr-defined]
            h.close_connection = True

    return reply


def drip(head: bytes, filler: bytes = b"x", *, every: float = 0.05, seconds: float = 8.0) -> Reply:
    """Send `head` as raw bytes, then `filler` one byte every `every` seconds for up to
    `seconds` (a server that trickles: each byte comes well within any read timeout),
    then hang up. Records the bytes trickled in `server.sent`."""

    def reply(h: _Handler) -> None:
        sent = 0
        try:
            h.wfile.write(head)
            h.wfile.flush()
            ends = time.monotonic() + seconds
            for byte in itertools.cycle(filler):
                if time.monotonic() > ends or h.server.stopping.wait(every):  # type: ignore[attr-defined]
                    break
                h.wfile.write(bytes([byte]))
                h.wfile.flush()
                sent += 1
        except OSError:
            pass  # the client hung up: what the test wants
        finally:
            h.server.sent.append(sent)  # type: ignore[attr-defined]
            h.close_connection = True

    return reply


_OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"

# Each phase of a response, trickled: (raw head sent at once, the byte that trickles).
DRIPS: dict[str, tuple[bytes, bytes]] = {
    "status-line": (b"HTTP/1.1 200 ", b"O"),
    "headers": (_OK_HEAD + b"X-Slow: ", b"a"),
    "body-with-length": (_OK_HEAD + b"Content-Length: 100000\r\n\r\n<html>", b"x"),
    "body-until-close": (_OK_HEAD + b"Connection: close\r\n\r\n<html>", b"x"),
    "body-chunked": (_OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n186a0\r\n<html>", b"x"),
    "redirect-body": (b"HTTP/1.1 302 Found\r\nLocation: /\r\nContent-Length: 100000\r\n\r\n", b"x"),
    "503-body": (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100000\r\n\r\n",
        b"x",
    ),
}


def binary(size: int = 64 * 1024, ctype: str = "") -> Reply:
    data = bytes(range(256)) * (size // 256)
    return html(data, ctype=ctype or "text/html")


# --- the server -------------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)
    client_port: int = 0  # the same port: the same (kept-alive) connection


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real site does

    def do_GET(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        path = self.path.split("?", 1)[0]
        with server.lock:
            server.seen.append(
                Seen(path, dict(self.headers.items()), client_port=self.client_address[1])
            )
            replies = server.routes.get(path)
            if not replies:
                reply: Reply = status(404)
            elif len(replies) > 1:
                reply = replies.pop(0)
            else:
                reply = replies[0]
        reply(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        # accept() waits at most this long: a wait that finds no connection (one seen as
        # ready that is gone) cannot hold the serving thread, and so stop(), forever. The
        # connections accepted are blocking, as without it.
        self.socket.settimeout(1.0)
        self.lock = threading.Lock()
        self.routes: dict[str, list[Reply]] = {}
        self.seen: list[Seen] = []
        self.sent: list[int] = []
        self.stopping = threading.Event()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up mid-reply is a staged fault, not a test failure


class LocalServer:
    """An HTTP server on 127.0.0.1 serving scripted replies per path: on port 0 (a free
    port), or on `port` (the one a stopped server used: a site that comes back); HTTPS
    with the certificate of `tls` (a server-side SSL context) when given."""

    def __init__(self, tls: ssl.SSLContext | None = None, port: int = 0) -> None:
        self._server = _Server(port)
        self.scheme = "http"
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> LocalServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def route(self, path: str, *replies: Reply) -> None:
        """Serve `replies` to successive requests for `path`; the last one repeats."""
        with self._server.lock:
            self._server.routes[path] = list(replies)

    @property
    def seen(self) -> list[Seen]:
        with self._server.lock:
            return list(self._server.seen)

    @property
    def sent(self) -> list[int]:
        return list(self._server.sent)


class TrickleServer:
    """A TCP server on 127.0.0.1 that answers whatever comes with `head` and then one
    byte every `every` seconds: for https:// URLs, a TLS handshake that never ends."""

    def __init__(self, head: bytes, every: float = 0.05, seconds: float = 8.0) -> None:
        self.head, self.every, self.seconds = head, every, seconds
        self.stopping = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> TrickleServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self._sock.close()

    def url(self, path: str = "/", scheme: str = "https") -> str:
        return f"{scheme}://127.0.0.1:{self._sock.getsockname()[1]}{path}"

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.sendall(self.head)
                ends = time.monotonic() + self.seconds
                while time.monotonic() < ends and not self.stopping.wait(self.every):
                    conn.sendall(b"\x00")
            except OSError:
                pass


# A TLS record header announcing a 16 KB handshake record whose bytes never all come.
TLS_RECORD_HEAD = b"\x16\x03\x03\x40\x00\x02\x00\x3f\xfc\x03\x03"


@contextmanager
def unanswered_connects() -> Iterator[str]:
    """A URL whose TCP connects hang: the listener's backlog is full and never accepted,
    so the kernel drops further SYNs (as a firewall that drops packets does)."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        filler.close()
        listener.close()


def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (a port just released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
