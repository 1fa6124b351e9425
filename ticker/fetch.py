"""Fetch stage: one live page over HTTP, with retries, timeouts, a size cap, conditional
GET and a deadline for the whole fetch. Failures raise FetchError carrying the attempt's
outcome. Any client of ticker (the scrape, and others with sessions of their own) fetches
through `fetch` with a session from `make_session`."""

from __future__ import annotations

import contextvars
import heapq
import itertools
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import ConnectionPool, HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    IncompleteRead,
    InvalidHeader,
    MaxRetryError,
    ReadTimeoutError,
    ResponseError,
)
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from ticker import __version__
from ticker.config import HttpConfig
from ticker.errors import FetchError
from ticker.models import Outcome

log = logging.getLogger(__name__)
_E = TypeVar("_E", bound=BaseException)

USER_AGENT = f"ticker/{__version__} (currency ticker reader; requests/{requests.__version__})"
ACCEPT = "text/html,application/xhtml+xml;q=0.9,text/plain;q=0.8,*/*;q=0.1"
RETRY_STATUSES = (429, 500, 502, 503, 504)
MAX_REDIRECTS = 10
CHUNK = 64 * 1024
ERROR_BODY_BYTES = 4096  # of an error answer, read for its message
TEXT_TYPES = ("text/html", "application/xhtml+xml", "text/plain")  # the default accepted
# Headers that describe the transfer, not the page: the archive stores the decoded body.
_TRANSFER_HEADERS = frozenset({"content-encoding", "transfer-encoding", "content-length"})


@dataclass(frozen=True, slots=True)
class Fetched:
    """A response that arrived whole: 200 with its body, or 304 without one."""

    url: str  # the URL asked for
    final_url: str  # after redirects
    status: int
    reason: str
    http_version: str  # "HTTP/1.1"
    headers: tuple[tuple[str, str], ...]  # as received, minus transfer encodings
    body: bytes
    content_type: str | None
    etag: str | None
    last_modified: str | None
    retries: int = 0

    @property
    def not_modified(self) -> bool:
        return self.status == 304


# --- the deadline: one limit for the whole fetch, enforced on its sockets -----------------


class Deadline:
    """The time one fetch may take, retries and waits included, enforced: when it passes,
    a watchdog thread shuts down every socket the fetch uses, so a read blocked in any
    phase (TLS handshake, status line, headers, body) returns at once, however slowly the
    server trickles. The connection classes of `make_session` hand it their sockets from connect
    on; a retry whose wait would end past it is not made (see `_Retry`)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()
        self.ends = self.started + seconds
        self.expired = threading.Event()
        self.cut_short: str | None = None  # why it was ended before its time
        self.refused_wait: float | None = None  # a retry's wait that would have overrun
        self._twins: list[socket.socket] = []
        self._lock = threading.Lock()
        self._token: contextvars.Token[Deadline | None] | None = None
        self.watched = False  # in the watchdog's queue

    def __enter__(self) -> Deadline:
        self._token = _DEADLINE.set(self)
        _WATCHDOG.add(self)
        with _LIVE_LOCK:
            _LIVE.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with _LIVE_LOCK:
            _LIVE.discard(self)
        _WATCHDOG.remove(self)
        if self._token is not None:
            _DEADLINE.reset(self._token)
        with self._lock:
            twins, self._twins = self._twins, []
        for twin in twins:
            twin.close()

    def remaining(self) -> float:
        return 0.0 if self.expired.is_set() else self.ends - time.monotonic()

    def cut(self, reason: str) -> None:
        """End the fetch now, as if the deadline had passed."""
        self.cut_short = reason
        self._expire()

    def passed(self) -> bool:
        return self.expired.is_set() or self.remaining() <= 0

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down when the deadline passes (at once if it has). A duplicate of
        its descriptor is kept: TLS takes the socket object over, the connection is one."""
        try:
            twin = socket.socket(fileno=os.dup(sock.fileno()))
        except OSError:
            return  # already closed: nothing left to wait on
        with self._lock:
            self._twins.append(twin)
            late = self.expired.is_set()
        if late:
            _shut(twin)

    def _expire(self) -> None:
        self.expired.set()  # first: whoever sees the connection end checks this
        with self._lock:
            twins = list(self._twins)
        for twin in twins:
            _shut(twin)


class _Watchdog:
    """One thread that expires each fetch's Deadline when its time comes. A timer thread
    per fetch would cost more than a fetch from a nearby server, and keep the fetching
    thread waiting for it to start on a busy machine."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list[tuple[float, int, Deadline]] = []  # a heap, by end time
        self._left = 0  # entries of deadlines that ended before their time
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def add(self, deadline: Deadline) -> None:
        with self._cond:
            heapq.heappush(self._queue, (deadline.ends, next(self._order), deadline))
            deadline.watched = True
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()  # a forked child has none of its parent's threads
                self._thread = threading.Thread(
                    target=self._run, name="ticker-fetch-deadlines", daemon=True
                )
                self._thread.start()
            elif self._queue[0][2] is deadline:
                self._cond.notify()

    def remove(self, deadline: Deadline) -> None:
        """A fetch that ended: its entry is dropped when it comes up, or all such entries
        at once when they make up most of the queue."""
        with self._cond:
            if not deadline.watched:
                return
            deadline.watched = False
            self._left += 1
            if self._left > 64 and 2 * self._left > len(self._queue):
                self._queue = [entry for entry in self._queue if entry[2].watched]
                heapq.heapify(self._queue)
                self._left = 0

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._queue and not self._queue[0][2].watched:
                        heapq.heappop(self._queue)
                        self._left -= 1
                    now = time.monotonic()
                    if self._queue and self._queue[0][0] <= now:
                        deadline = heapq.heappop(self._queue)[2]
                        deadline.watched = False
                        break
                    self._cond.wait(self._queue[0][0] - now if self._queue else None)
            deadline._expire()


_WATCHDOG = _Watchdog()
_DEADLINE: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "ticker_fetch_deadline", default=None
)
_LIVE: set[Deadline] = set()  # the fetches in flight, in any thread
_LIVE_LOCK = threading.Lock()


def cut_fetches(reason: str) -> int:
    """End every fetch in flight now, each as a `timeout` that gives `reason` (a daemon
    that is stopping does not wait for a slow server). Returns how many were cut."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for deadline in live:
        deadline.cut(reason)
    return len(live)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected (any more): nothing to wake


class _Watched:
    """Mixin for urllib3's connection classes: the fetch's deadline caps the connect
    timeout and watches the socket from connect on (a reused keep-alive socket too)."""

    timeout: Any
    sock: socket.socket | None

    def _new_conn(self) -> socket.socket:
        deadline = _DEADLINE.get()
        if deadline is not None:
            left = deadline.remaining()
            if left <= 0:
                raise ConnectTimeoutError(self, "the fetch's deadline passed before connecting")
            if not isinstance(self.timeout, int | float) or self.timeout > left:
                self.timeout = left
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        if deadline is not None:
            deadline.watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        deadline = _DEADLINE.get()
        if deadline is not None and self.sock is not None:
            deadline.watch(self.sock)
        super().request(*args, **kwargs)  # type: ignore[misc]


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOL_CLASSES = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter with connections that a fetch's Deadline can cut (direct and
    through an HTTP proxy). `before_send`, when set, runs before every request it sends
    (each redirect too): a client that paces its requests waits there."""

    before_send: Callable[[], None] | None = None

    def send(self, request: Any, *args: Any, **kwargs: Any) -> requests.Response:
        if self.before_send is not None:
            self.before_send()
        return super().send(request, *args, **kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOL_CLASSES)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = dict(_POOL_CLASSES)
        return manager


class _Retry(Retry):
    """urllib3's Retry, except that a Retry-After longer than retry_after_max fails the
    attempt at once instead of being shortened (waiting less than asked would hammer),
    and so does any wait that would end past the fetch's deadline."""

    def get_retry_after(self, response: Any) -> float | None:
        try:
            return super().get_retry_after(response)
        except InvalidHeader:  # an unreadable Retry-After: fall back to the backoff
            return None

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        wait = _asked_wait(response)
        if wait is not None and wait > self.retry_after_max:
            reason = ResponseError(f"Retry-After {wait:.0f} s")
            raise MaxRetryError(_pool, url or "", reason)  # type: ignore[arg-type]
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        deadline = _DEADLINE.get()
        if deadline is not None:
            pause = retry._pause(response)
            if pause >= deadline.remaining():
                deadline.refused_wait = pause
                why = error or ResponseError(f"a wait of {pause:.0f} s would pass the deadline")
                raise MaxRetryError(_pool, url or "", why)  # type: ignore[arg-type]
        return retry

    def _pause(self, response: BaseHTTPResponse | None) -> float:
        """The seconds `sleep` is about to wait before the next try."""
        if response is not None and self.respect_retry_after_header:
            asked = self.get_retry_after(response)
            if asked:
                return asked
        return self.get_backoff_time()


def _asked_wait(response: Any) -> float | None:
    """The seconds a 429/503 response asks to wait, unclamped; None when it does not ask."""
    if response is None or response.status not in Retry.RETRY_AFTER_STATUS_CODES:
        return None
    header = response.headers.get("Retry-After")
    if not header:
        return None
    try:
        return Retry(retry_after_max=2**31).parse_retry_after(header)
    except InvalidHeader:
        return None


def make_session(
    http: HttpConfig, *, before_send: Callable[[], None] | None = None
) -> requests.Session:
    """A Session for `fetch`: its adapter retries connection errors, 429 and 5xx with
    backoff, and its connections can be cut by the fetch's deadline. `before_send` runs
    before every request the session sends (see DeadlineAdapter)."""
    retry = _Retry(
        total=http.retries,
        connect=http.retries,
        read=False,  # a read timeout is reported, not repeated: the job has a schedule
        status=http.retries,
        other=0,
        allowed_methods=frozenset({"GET", "HEAD"}),
        status_forcelist=RETRY_STATUSES,
        backoff_factor=http.backoff,
        raise_on_status=False,  # the last response comes back and is reported with its status
        respect_retry_after_header=True,
        retry_after_max=math.ceil(http.max_retry_after),
    )
    session = requests.Session()
    adapter = DeadlineAdapter(max_retries=retry, pool_connections=2, pool_maxsize=2)
    adapter.before_send = before_send
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.max_redirects = MAX_REDIRECTS
    session.headers.update({"User-Agent": USER_AGENT, "Accept": ACCEPT})
    session.verify = http.verify_tls
    if not http.verify_tls:
        import urllib3

        # ticker logs its own warning on every fetch; urllib3's would repeat it per request.
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    return session


def fetch(
    session: requests.Session,
    url: str,
    http: HttpConfig,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    media_types: tuple[str, ...] | None = TEXT_TYPES,
    headers: Mapping[str, str] | None = None,
    url_key: str = "[[sources]] url",
) -> Fetched:
    """GET one page. Returns a 200 with its whole body or a 304; raises FetchError with
    the outcome (timeout, http_error, too_large, ...) and a message naming the URL. A
    body whose Content-Type is not one of `media_types` (the reader's) is not read;
    `media_types=None` takes any body, binary too (a byte range of a WARC file).
    `headers` are sent besides ticker's own; with a Range header a 206 is taken as well.

    The whole fetch (connect, TLS, status line and headers, body, every retry and every
    wait between them) ends within [http] deadline seconds, whatever the server does.
    `session` must come from `make_session` (its connections are the ones a deadline
    can cut). `url_key` names the setting of the URL in messages."""
    if not isinstance(session.get_adapter(url), DeadlineAdapter):
        raise TypeError("fetch needs a session from make_session (a DeadlineAdapter)")
    if not http.verify_tls:
        log.warning("%s: TLS certificate NOT verified ([http] verify_tls = false)", url)
    sent = dict(headers or {})
    if media_types is None:
        sent.setdefault("Accept", "*/*")
    elif media_types != TEXT_TYPES:
        sent["Accept"] = ", ".join(media_types)
    if etag:
        sent["If-None-Match"] = etag
    if last_modified:
        sent["If-Modified-Since"] = last_modified
    ranged = any(k.lower() == "range" for k in sent)
    with Deadline(http.deadline) as deadline:
        try:
            resp = _get(session, url, http, sent, deadline, url_key)
        except FetchError as exc:
            if deadline.passed():
                raise _past_deadline(url, http, "no response headers yet") from exc
            raise
        with resp:
            try:
                return _read(resp, url, http, media_types, url_key, ranged)
            except FetchError as exc:
                if deadline.passed():
                    where = f"HTTP {exc.status}, {exc.nbytes} bytes of the body so far"
                    raise _past_deadline(url, http, where, exc) from exc
                raise


def _get(
    session: requests.Session,
    url: str,
    http: HttpConfig,
    headers: dict[str, str],
    deadline: Deadline,
    url_key: str,
) -> requests.Response:
    """The response, its headers read; network faults as FetchError."""
    timeout = http.timeout
    try:
        # verify per request: requests ignores session.verify = False when the environment
        # sets REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE (psf/requests#3829)
        return session.get(
            url,
            headers=headers,
            timeout=(timeout, timeout),
            stream=True,
            verify=session.verify if http.verify_tls else False,
        )
    except requests.TooManyRedirects as exc:
        raise FetchError(
            url,
            Outcome.REDIRECT_LOOP,
            f"more than {MAX_REDIRECTS} redirects (a redirect loop?); check {url_key} in a browser",
        ) from exc
    except requests.exceptions.SSLError as exc:
        raise FetchError(
            url,
            Outcome.TLS_ERROR,
            f"TLS handshake failed ({_root(exc)}); fix the certificate or, on a trusted "
            "network only, set [http] verify_tls = false",
        ) from exc
    except requests.Timeout as exc:
        raise _timeout(url, timeout, exc) from exc
    except requests.ConnectionError as exc:
        if _caused_by(exc, ReadTimeoutError):
            raise _timeout(url, timeout, exc) from exc
        gave_up = f"after {_retries(http.retries)}"
        if deadline.refused_wait is not None:
            gave_up = (
                f"gave up: the next retry's wait of {deadline.refused_wait:.0f} s would pass "
                f"[http] deadline = {http.deadline:g} s"
            )
        raise FetchError(
            url,
            Outcome.CONNECTION_ERROR,
            f"cannot connect ({_root(exc)}) {gave_up}; is the site down or {url_key} wrong?",
        ) from exc
    except requests.RequestException as exc:
        raise FetchError(url, Outcome.CONNECTION_ERROR, f"request failed ({_root(exc)})") from exc


def _past_deadline(
    url: str, http: HttpConfig, where: str, cut: FetchError | None = None
) -> FetchError:
    deadline = _DEADLINE.get()
    if deadline is not None and deadline.cut_short:
        took = time.monotonic() - deadline.started
        reason = f"the fetch was cut short after {took:.1f} s ({where}): {deadline.cut_short}"
    else:
        reason = (
            f"the fetch did not end within [http] deadline = {http.deadline:g} s ({where}); "
            "the server is too slow, or raise [http] deadline"
        )
    return FetchError(
        url,
        Outcome.TIMEOUT,
        reason,
        status=cut.status if cut else None,
        nbytes=cut.nbytes if cut else 0,
    )


def _read(
    resp: requests.Response,
    url: str,
    http: HttpConfig,
    media_types: tuple[str, ...] | None,
    url_key: str,
    ranged: bool = False,
) -> Fetched:
    status = resp.status_code
    raw = resp.raw
    retries = len(getattr(getattr(raw, "retries", None), "history", ()) or ())
    ctype = resp.headers.get("Content-Type")
    if status != 200 and status != 304 and not (status == 206 and ranged):
        text = _status_text(resp, retries, http, url_key)
        _drain_small(resp)
        raise FetchError(url, Outcome.HTTP_ERROR, text, status=status, retry_after=_asked_wait(raw))
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > http.max_bytes:
        raise FetchError(
            url,
            Outcome.TOO_LARGE,
            f"the server announces {int(declared)} bytes, more than [http] max_bytes = "
            f"{http.max_bytes}; not read (raise max_bytes if the page really is this big)",
            status=status,
        )
    if (
        status == 200
        and ctype
        and media_types is not None
        and not ctype.lower().lstrip().startswith(media_types)
    ):
        wanted = "an HTML page" if media_types == TEXT_TYPES else " or ".join(media_types)
        raise FetchError(
            url,
            Outcome.NOT_HTML,
            f"the server sent {ctype.split(';')[0].strip()!r}, not {wanted}; not read",
            status=status,
        )
    body = _body(resp, url, http, status) if status != 304 else b""
    deadline = _DEADLINE.get()
    if deadline is not None and deadline.expired.is_set():
        # The deadline's shutdown can end a body that runs to the close of the
        # connection as if it were whole: what arrived is not the page.
        raise FetchError(url, Outcome.TIMEOUT, "", status=status, nbytes=len(body))
    if status == 200 and media_types is not None and _binary(body):
        raise FetchError(
            url,
            Outcome.NOT_HTML,
            f"the body ({len(body)} bytes) is binary data, not an HTML page",
            status=status,
            nbytes=len(body),
        )
    version = {10: "HTTP/1.0", 11: "HTTP/1.1", 20: "HTTP/2"}.get(getattr(raw, "version", 11))
    return Fetched(
        url=url,
        final_url=resp.url,
        status=status,
        reason=resp.reason or "",
        http_version=version or "HTTP/1.1",
        headers=tuple((k, v) for k, v in raw.headers.items() if k.lower() not in _TRANSFER_HEADERS),
        body=body,
        content_type=ctype,
        etag=resp.headers.get("ETag"),
        last_modified=resp.headers.get("Last-Modified"),
        retries=retries,
    )


def _body(resp: requests.Response, url: str, http: HttpConfig, status: int) -> bytes:
    """Stream the body, stopping past max_bytes (the deadline cuts a slow one)."""
    chunks: list[bytes] = []
    n = 0
    try:
        for chunk in resp.iter_content(CHUNK):
            n += len(chunk)
            if n > http.max_bytes:
                raise FetchError(
                    url,
                    Outcome.TOO_LARGE,
                    f"the body is larger than [http] max_bytes = {http.max_bytes}; stopped "
                    f"reading at {n} bytes (raise max_bytes if the page really is this big)",
                    status=status,
                    nbytes=n,
                )
            chunks.append(chunk)
    except requests.exceptions.ChunkedEncodingError as exc:
        cut = _find(exc, IncompleteRead)
        if cut is not None and isinstance(cut.partial, int) and isinstance(cut.expected, int):
            got, total = cut.partial, cut.partial + cut.expected
            what = f"after {got} of the {total} bytes announced"
        else:
            got, what = max(n, int(resp.raw.tell() or 0)), f"after {n} bytes ({_root(exc)})"
        raise FetchError(
            url,
            Outcome.TRUNCATED,
            f"the body was cut off {what}; nothing of it was kept, the next run tries again",
            status=status,
            nbytes=got,
        ) from exc
    except requests.ConnectionError as exc:
        if _caused_by(exc, ReadTimeoutError):
            err = _timeout(url, http.timeout, exc)
            raise FetchError(url, err.outcome, err.reason, status=status, nbytes=n) from exc
        raise FetchError(
            url,
            Outcome.TRUNCATED,
            f"the connection broke after {n} bytes of the body ({_root(exc)})",
            status=status,
            nbytes=n,
        ) from exc
    except requests.RequestException as exc:
        raise FetchError(
            url,
            Outcome.TRUNCATED,
            f"the body could not be read after {n} bytes ({_root(exc)})",
            status=status,
            nbytes=n,
        ) from exc
    return b"".join(chunks)


def _drain_small(resp: requests.Response) -> None:
    """Read the short body of an error answer, so that its connection serves the next
    request instead of being closed (a client that paces itself keeps one connection).
    A body that is long, or of unknown length, is not waited for."""
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) <= 64 * 1024:
        try:
            resp.raw.drain_conn()
        except Exception:  # only the kept connection is lost
            log.debug("could not read the body of %s", resp.url, exc_info=True)


def _binary(body: bytes) -> bool:
    head = body[:8192]
    return b"\0" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff"))


def _status_text(resp: requests.Response, retries: int, http: HttpConfig, url_key: str) -> str:
    text = f"HTTP {resp.status_code} {resp.reason or ''}".rstrip()
    said = _error_message(resp)
    if said:
        text += f" ({said})"
    wait = _asked_wait(resp.raw)
    if wait is not None and wait > http.max_retry_after:
        return (
            f"{text}: the server asked to wait {wait:.0f} s (Retry-After), longer than "
            f"[http] max_retry_after = {http.max_retry_after:g} s; not retried"
        )
    if retries:
        text += f" after {_retries(retries)}"
    deadline = _DEADLINE.get()
    if deadline is not None and deadline.refused_wait is not None:
        text += (
            f"; not retried again: the wait of {deadline.refused_wait:.0f} s would pass "
            f"[http] deadline = {http.deadline:g} s"
        )
    if resp.status_code == 404:
        text += f"; check {url_key}"
    return text


def _error_message(resp: requests.Response) -> str | None:
    """What a JSON API says in an error answer (`{"message": "..."}`): the start of the
    body, read only when the server declares JSON."""
    ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if not (ctype == "application/json" or ctype.endswith("+json")):
        return None
    try:
        head = resp.raw.read(ERROR_BODY_BYTES, decode_content=True)
        data = json.loads(head)
    except Exception:  # a body cut off, not JSON, not readable: the status says enough
        return None
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, str) or not message.strip():
        return None
    text = " ".join(message.split())
    return "the server says: " + (text if len(text) <= 200 else text[:199] + "\u2026")


def _retries(n: int) -> str:
    return f"{n} {'retry' if n == 1 else 'retries'}"


def _timeout(url: str, timeout: float, exc: BaseException) -> FetchError:
    return FetchError(
        url,
        Outcome.TIMEOUT,
        f"no answer within [http] timeout = {timeout:g} s ({_root(exc)})",
    )


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether `kind` is anywhere in the chain of wrapped urllib3/requests errors."""
    return _find(exc, kind) is not None


def _find(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first `kind` in the chain of wrapped urllib3/requests errors, if any."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kind):
            return e
        if isinstance(e, BaseException):
            todo.extend(e.args)
            todo.extend((e.__cause__, e.__context__, getattr(e, "reason", None)))
    return None


def _root(exc: BaseException) -> str:
    """The innermost useful message of a wrapped requests/urllib3 error, one line."""
    e: Any = exc
    for _ in range(6):
        inner = getattr(e, "reason", None)
        if inner is None and e.args and isinstance(e.args[0], BaseException):
            inner = e.args[0]
        if not isinstance(inner, BaseException):
            break
        e = inner
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    # urllib3 prefixes "<urllib3.connection.HTTPConnection object at 0x...>: " or
    # "HTTPConnection(host=..., port=...): Failed to establish a new connection: "
    if text.startswith("<") and ">: " in text:
        text = text.split(">: ", 1)[1]
    text = text.rpartition("Failed to establish a new connection: ")[2]
    return text[:300]
