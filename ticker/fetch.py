"""Fetch stage: one live page over HTTP, with retries, timeouts, a size cap and
conditional GET. Failures raise FetchError carrying the attempt's outcome."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, Self, TypeVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import ConnectionPool
from urllib3.exceptions import (
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

log = logging.getLogger(__name__)
_E = TypeVar("_E", bound=BaseException)

USER_AGENT = f"ticker/{__version__} (currency ticker reader; requests/{requests.__version__})"
ACCEPT = "text/html,application/xhtml+xml;q=0.9,text/plain;q=0.8,*/*;q=0.1"
RETRY_STATUSES = (429, 500, 502, 503, 504)
MAX_REDIRECTS = 10
CHUNK = 64 * 1024
# The whole body must arrive within this many read timeouts: a server that trickles a
# byte every few seconds never trips the read timeout but must not hold a job forever.
BODY_DEADLINE_FACTOR = 3
_TEXT_TYPES = ("text/html", "application/xhtml+xml", "text/plain")
# Headers that describe the transfer, not the page: the archive stores the decoded body.
_TRANSFER_HEADERS = frozenset({"content-encoding", "transfer-encoding", "content-length"})


class FetchOutcome(StrEnum):
    """What one attempt came to. The parse outcomes (no_ticker, inconsistent) join these
    in the attempts table; ok and not_modified are the successes."""

    OK = "ok"
    NOT_MODIFIED = "not_modified"
    NO_TICKER = "no_ticker"
    INCONSISTENT = "inconsistent"
    UNDATED = "undated"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    CONNECTION_ERROR = "connection_error"
    TLS_ERROR = "tls_error"
    REDIRECT_LOOP = "redirect_loop"
    TRUNCATED = "truncated"
    NOT_HTML = "not_html"
    PARSE_ERROR = "parse_error"
    ARCHIVE_ERROR = "archive_error"
    STORE_LOCKED = "store_locked"
    STORE_ERROR = "store_error"


SUCCESS = frozenset({FetchOutcome.OK.value, FetchOutcome.NOT_MODIFIED.value})


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


class _Retry(Retry):
    """urllib3's Retry, except that a Retry-After longer than retry_after_max fails the
    attempt at once instead of being shortened (waiting less than asked would hammer)."""

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
        return super().increment(method, url, response, error, _pool, _stacktrace)


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


def make_session(http: HttpConfig) -> requests.Session:
    """A Session whose adapter retries connection errors, 429 and 5xx with backoff."""
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
    adapter = HTTPAdapter(max_retries=retry, pool_connections=2, pool_maxsize=2)
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
) -> Fetched:
    """GET one page. Returns a 200 with its whole body or a 304; raises FetchError with
    the outcome (timeout, http_error, too_large, ...) and a message naming the URL."""
    if not http.verify_tls:
        log.warning("%s: TLS certificate NOT verified ([http] verify_tls = false)", url)
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    timeout = http.timeout
    try:
        # verify per request: requests ignores session.verify = False when the environment
        # sets REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE (psf/requests#3829)
        resp = session.get(
            url,
            headers=headers,
            timeout=(timeout, timeout),
            stream=True,
            verify=session.verify if http.verify_tls else False,
        )
    except requests.TooManyRedirects:
        raise FetchError(
            url,
            FetchOutcome.REDIRECT_LOOP,
            f"more than {MAX_REDIRECTS} redirects (a redirect loop?); "
            "check [[sources]] url in a browser",
        ) from None
    except requests.exceptions.SSLError as exc:
        raise FetchError(
            url,
            FetchOutcome.TLS_ERROR,
            f"TLS handshake failed ({_root(exc)}); fix the certificate or, on a trusted "
            "network only, set [http] verify_tls = false",
        ) from None
    except requests.Timeout as exc:
        raise _timeout(url, timeout, exc) from None
    except requests.ConnectionError as exc:
        if _caused_by(exc, ReadTimeoutError):
            raise _timeout(url, timeout, exc) from None
        raise FetchError(
            url,
            FetchOutcome.CONNECTION_ERROR,
            f"cannot connect ({_root(exc)}) after {_retries(http.retries)}; is the site "
            "down or [[sources]] url wrong?",
        ) from None
    except requests.RequestException as exc:
        raise FetchError(
            url, FetchOutcome.CONNECTION_ERROR, f"request failed ({_root(exc)})"
        ) from None
    with resp:
        return _read(resp, url, http)


def _read(resp: requests.Response, url: str, http: HttpConfig) -> Fetched:
    status = resp.status_code
    raw = resp.raw
    retries = len(getattr(getattr(raw, "retries", None), "history", ()) or ())
    ctype = resp.headers.get("Content-Type")
    if status != 200 and status != 304:
        raise FetchError(
            url, FetchOutcome.HTTP_ERROR, _status_text(resp, retries, http), status=status
        )
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > http.max_bytes:
        raise FetchError(
            url,
            FetchOutcome.TOO_LARGE,
            f"the server announces {int(declared)} bytes, more than [http] max_bytes = "
            f"{http.max_bytes}; not read (raise max_bytes if the page really is this big)",
            status=status,
        )
    if status == 200 and ctype and not ctype.lower().lstrip().startswith(_TEXT_TYPES):
        raise FetchError(
            url,
            FetchOutcome.NOT_HTML,
            f"the server sent {ctype.split(';')[0].strip()!r}, not an HTML page; not read",
            status=status,
        )
    body = _body(resp, url, http, status) if status == 200 else b""
    if status == 200 and _binary(body):
        raise FetchError(
            url,
            FetchOutcome.NOT_HTML,
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
    """Stream the body, stopping past max_bytes or past the whole-body deadline."""
    chunks: list[bytes] = []
    n = 0
    deadline = time.monotonic() + BODY_DEADLINE_FACTOR * http.timeout
    try:
        for chunk in resp.iter_content(CHUNK):
            n += len(chunk)
            if n > http.max_bytes:
                raise FetchError(
                    url,
                    FetchOutcome.TOO_LARGE,
                    f"the body is larger than [http] max_bytes = {http.max_bytes}; stopped "
                    f"reading at {n} bytes (raise max_bytes if the page really is this big)",
                    status=status,
                    nbytes=n,
                )
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise FetchError(
                    url,
                    FetchOutcome.TIMEOUT,
                    f"the body did not arrive within {BODY_DEADLINE_FACTOR * http.timeout:g} s "
                    f"({n} bytes so far); raise [http] timeout if the site is this slow",
                    status=status,
                    nbytes=n,
                )
    except requests.exceptions.ChunkedEncodingError as exc:
        cut = _find(exc, IncompleteRead)
        if cut is not None and isinstance(cut.partial, int) and isinstance(cut.expected, int):
            got, total = cut.partial, cut.partial + cut.expected
            what = f"after {got} of the {total} bytes announced"
        else:
            got, what = max(n, int(resp.raw.tell() or 0)), f"after {n} bytes ({_root(exc)})"
        raise FetchError(
            url,
            FetchOutcome.TRUNCATED,
            f"the body was cut off {what}; nothing of it was kept, the next run tries again",
            status=status,
            nbytes=got,
        ) from None
    except requests.ConnectionError as exc:
        if _caused_by(exc, ReadTimeoutError):
            err = _timeout(url, http.timeout, exc)
            raise FetchError(url, err.outcome, err.reason, status=status, nbytes=n) from None
        raise FetchError(
            url,
            FetchOutcome.TRUNCATED,
            f"the connection broke after {n} bytes of the body ({_root(exc)})",
            status=status,
            nbytes=n,
        ) from None
    except requests.RequestException as exc:
        raise FetchError(
            url,
            FetchOutcome.TRUNCATED,
            f"the body could not be read after {n} bytes ({_root(exc)})",
            status=status,
            nbytes=n,
        ) from None
    return b"".join(chunks)


def _binary(body: bytes) -> bool:
    head = body[:8192]
    return b"\0" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff"))


def _status_text(resp: requests.Response, retries: int, http: HttpConfig) -> str:
    text = f"HTTP {resp.status_code} {resp.reason or ''}".rstrip()
    wait = _asked_wait(resp.raw)
    if wait is not None and wait > http.max_retry_after:
        return (
            f"{text}: the server asked to wait {wait:.0f} s (Retry-After), longer than "
            f"[http] max_retry_after = {http.max_retry_after:g} s; not retried"
        )
    if retries:
        text += f" after {_retries(retries)}"
    if resp.status_code == 404:
        text += "; check [[sources]] url"
    return text


def _retries(n: int) -> str:
    return f"{n} {'retry' if n == 1 else 'retries'}"


def _timeout(url: str, timeout: float, exc: BaseException) -> FetchError:
    return FetchError(
        url,
        FetchOutcome.TIMEOUT,
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
