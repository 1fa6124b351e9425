"""A stand-in for the public web archives on 127.0.0.1, with their quirks: the Wayback
Machine (CDX server API and raw snapshots) and Common Crawl (index server and WARC files
read by byte range), on one port.

    with WebArchives([Snap("https://timesca.com/", "20250320120000", day_page(...))]) as wa:
        config = recover_config(tmp_path, wa)       # [recover] pointing here
        ...
        wa.requests, wa.connections                 # what a client asked, and how

Quirks reproduced (each one can be asserted through `requests`):
- CDX `output=json`: a header row, then rows of strings; an empty answer is `[]`;
  `matchType` exact/host; `from`/`to` of 1-14 digits, UTC, inclusive; `filter=[!]f:regex`
  matching the whole field; rows sorted by urlkey then time (not by time); one answer
  capped at `page_rows` rows whatever `limit` asks, continued with `showResumeKey` /
  `resumeKey`, and the row before a resume key comes again at the start of the next page.
- Revisits: `warc/revisit`, status `-`, the digest of their original; the snapshot of a
  revisit serves the original's bytes dated by the revisit's own Memento-Datetime.
- A snapshot can answer 302 to another capture (`Snap.redirect_to`), one can lack its
  Memento-Datetime (`Snap.memento=False`), non-HTML captures are served as what they are.
- Faults: `fail(prefix, status, retry_after, times)` answers the next requests whose path
  starts with `prefix` with that status; `block()` refuses connections (the listening
  socket closed, open connections cut) until `unblock()`.
- Common Crawl: `collinfo.json`, a CDX index per crawl (`showNumPages`, `page=N`,
  newline-delimited JSON, 404 holding JSON for "no captures", `cc_page_rows` lines a
  page), and each crawl's WARC file served by Range requests (206).

Rows can also be made on the fly (`RowMaker`), for listings of hundreds of thousands.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from conftest import write_config
from pages import html_page

from ticker.sources.ticker import TickerReader

CDX_PATH = "/cdx/search/cdx"
CC_INDEX = "/cc"
CC_DATA = "/ccdata"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def digest_of(body: bytes) -> str:
    """The archives' payload digest: base32 of the SHA-1."""
    return base64.b32encode(hashlib.sha1(body).digest()).decode()


def surt(url: str) -> str:
    """The index key of a URL: host reversed without www, then the path, lower case."""
    parts = urlsplit(url if "//" in url else f"http://{url}")
    host = (parts.hostname or "").lower()
    host = re.sub(r"^www\d*\.", "", host)
    path = parts.path or "/"
    key = ",".join(reversed(host.split("."))) + ")" + path
    if parts.query:
        key += "?" + parts.query
    return key.lower()


def quotes_of(day: date) -> list[tuple[str, str, str]]:
    """Quotes that differ from day to day (so every day's observations are its own)."""
    n = day.toordinal()
    return [
        ("KGS/USD", f"0.01{100 + n % 97:03d}", f"{(n % 9) - 4}"),
        ("KZT/USD", f"0.00{190 + n % 9:03d}", "-0"),
        ("TJS/USD", f"0.09{100 + n % 89:03d}", "0.1"),
        ("UZS/USD", "0.00008", "0"),
        ("TMT/USD", f"0.28{500 + n % 73:03d}", "-0.14"),
    ]


def day_page(day: date | None, *, dated: bool = True, filler: int = 12) -> bytes:
    """A page of the site as captured on `day`: the ticker of that day, and the date line
    (or none when not `dated`: the capture time dates it)."""
    quotes = quotes_of(day or date(2025, 3, 20))
    return html_page(quotes, day if dated else None, paragraphs=filler).encode()


@dataclass
class Snap:
    """One capture the stand-in archives hold."""

    url: str
    timestamp: str  # 14 digits, UTC
    body: bytes = b""
    mimetype: str = "text/html"
    status: str = "200"
    revisit_of: str | None = None  # the timestamp of its original (same URL): a revisit
    redirect_to: str | None = None  # the snapshot answers 302 to this capture's timestamp
    memento: bool = True  # False: a 200 without Memento-Datetime (not a capture)
    served_as: str | None = None  # the Content-Type its snapshot is served with
    digest: str = ""

    @property
    def urlkey(self) -> str:
        return surt(self.url)

    @property
    def when(self) -> datetime:
        return datetime.strptime(self.timestamp, "%Y%m%d%H%M%S").replace(tzinfo=UTC)


class Rows(Protocol):
    """Index rows in urlkey and time order, by position."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Snap: ...


class RowMaker:
    """`count` captures of one page made on the fly, `per_day` a day from `first`, each
    with the same bytes: a listing of any size without holding it."""

    def __init__(self, url: str, first: date, count: int, per_day: int) -> None:
        self.url, self.count, self.per_day = url, count, per_day
        self.start = datetime(first.year, first.month, first.day, tzinfo=UTC).timestamp()
        self.body = day_page(first)
        self.digest = digest_of(self.body)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> Snap:
        day, k = divmod(i, self.per_day)
        at = self.start + day * 86400 + (k + 1) * (86400 // (self.per_day + 1))
        stamp = datetime.fromtimestamp(at, UTC).strftime("%Y%m%d%H%M%S")
        return Snap(self.url, stamp, self.body, digest=self.digest)


@dataclass
class Crawl:
    """One Common Crawl crawl: its id, time span and captures."""

    id: str
    start: str  # ISO 8601
    end: str
    snaps: list[Snap] = field(default_factory=list)


@dataclass
class Request:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    at: float  # the stand-in's clock
    connection: int  # which TCP connection carried it


@dataclass
class Fault:
    prefix: str
    status: int
    retry_after: str | None
    times: int


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.archives: WebArchives = self.server.archives  # type: ignore[attr-defined]
        self.conn_id = self.archives._connected(self.connection)

    def finish(self) -> None:
        super().finish()
        self.archives._disconnected(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        self.archives._seen(Request(parts.path, query, dict(self.headers), 0.0, self.conn_id))
        fault = self.archives._fault(parts.path)
        if fault is not None:
            extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            self.send(fault.status, b"<html><body>slow down</body></html>", extra=extra)
            return
        self.archives._route(self, parts.path, parts.query, query)

    def send(
        self,
        status: int,
        body: bytes,
        ctype: str = "text/html; charset=utf-8",
        extra: dict[str, str] | None = None,
    ) -> None:
        """The whole answer in one write (no delayed-ACK stall between head and body)."""
        reason = self.responses.get(status, ("",))[0]
        head = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {ctype}"]
        head.append(f"Content-Length: {len(body)}")
        for k, v in (extra or {}).items():
            head.append(f"{k}: {v}")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        try:
            self.wfile.write(data)
        except OSError:
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up, or a connection cut by block(): staged


class WebArchives:
    """The stand-in archives on one 127.0.0.1 port. `snaps` are the Wayback Machine's
    captures (or a RowMaker), `crawls` Common Crawl's."""

    def __init__(
        self,
        snaps: Sequence[Snap] | RowMaker = (),
        *,
        crawls: Sequence[Crawl] = (),
        page_rows: int = 1000,
        cc_page_rows: int = 3,
        repeat_row: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.page_rows, self.cc_page_rows, self.repeat_row = page_rows, cc_page_rows, repeat_row
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self.connections = 0
        self.faults: list[Fault] = []
        self._open: set[socket.socket] = set()
        self.rows: Rows
        if isinstance(snaps, RowMaker):
            self.rows = snaps
            self.by_key: dict[tuple[str, str], Snap] = {}
        else:
            self._digests(snaps)
            self.rows = sorted(snaps, key=lambda s: (s.urlkey, s.timestamp))
            self.by_key = {(s.urlkey, s.timestamp): s for s in snaps}
        self.crawls = list(crawls)
        self.warcs: dict[str, bytes] = {}
        self.cc_rows: dict[str, list[dict[str, str]]] = {}
        for crawl in self.crawls:
            self._digests(crawl.snaps)
            self._build_warc(crawl)
        self._server: _Server | None = None
        self.port = 0
        self._listen()

    # --- life ---------------------------------------------------------------------------

    def _listen(self) -> None:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.archives = self  # type: ignore[attr-defined]
        self.port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        thread.start()
        self._server = server

    def __enter__(self) -> WebArchives:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._cut()

    def block(self) -> None:
        """Refuse every connection, as an archive that blocked this address does."""
        self.stop()

    def unblock(self) -> None:
        self._listen()

    def _cut(self) -> None:
        with self.lock:
            conns = list(self._open)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # --- where things are ---------------------------------------------------------------

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def config(self, per_minute: int = 100000) -> str:
        """A [recover] table pointing here."""
        return (
            "[recover]\n"
            f'cdx_url = "{self.url(CDX_PATH)}"\n'
            f'snapshot_url = "{self.url("/web/{timestamp}id_/{url}")}"\n'
            f'commoncrawl_index = "{self.url(CC_INDEX)}"\n'
            f'commoncrawl_data = "{self.url(CC_DATA)}"\n'
            f"per_minute = {per_minute}\n"
        )

    # --- what was asked -------------------------------------------------------------------

    def _seen(self, request: Request) -> None:
        with self.lock:
            request.at = self.clock()
            self.requests.append(request)

    def _connected(self, conn: socket.socket) -> int:
        with self.lock:
            self.connections += 1
            self._open.add(conn)
            return self.connections

    def _disconnected(self, conn: socket.socket) -> None:
        with self.lock:
            self._open.discard(conn)

    def snapshot_requests(self) -> list[str]:
        """The timestamps of the Wayback snapshots asked for, in order."""
        with self.lock:
            return [r.path.split("/")[2][:14] for r in self.requests if r.path.startswith("/web/")]

    def range_requests(self) -> list[str]:
        with self.lock:
            return [r.headers.get("Range", "") for r in self.requests if r.path.startswith(CC_DATA)]

    def fail(
        self, prefix: str, status: int, retry_after: str | None = None, times: int = 1
    ) -> None:
        """Answer the next `times` requests whose path starts with `prefix` with `status`."""
        with self.lock:
            self.faults.append(Fault(prefix, status, retry_after, times))

    def _fault(self, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and path.startswith(fault.prefix):
                    fault.times -= 1
                    return fault
        return None

    # --- answers ----------------------------------------------------------------------------

    def _route(self, h: _Handler, path: str, raw_query: str, q: dict[str, list[str]]) -> None:
        if path == CDX_PATH:
            self._cdx(h, q)
        elif path.startswith("/web/"):
            self._snapshot(h, path, raw_query)
        elif path == f"{CC_INDEX}/collinfo.json":
            self._collinfo(h)
        elif path.startswith(f"{CC_INDEX}/") and path.endswith("-index"):
            self._cc_index(h, path[len(CC_INDEX) + 1 : -len("-index")], q)
        elif path.startswith(f"{CC_DATA}/"):
            self._cc_data(h, path[len(CC_DATA) + 1 :])
        else:
            h.send(404, b"<html><body>not found</body></html>")

    def _digests(self, snaps: Sequence[Snap]) -> None:
        by = {(s.url, s.timestamp): s for s in snaps}
        for s in snaps:
            if s.revisit_of:
                s.mimetype, s.status = "warc/revisit", "-"
                s.digest = s.digest or digest_of(by[(s.url, s.revisit_of)].body)
            elif not s.digest:
                s.digest = digest_of(s.body)

    def _cdx(self, h: _Handler, q: dict[str, list[str]]) -> None:
        if q.get("output", [""])[0] != "json":
            h.send(400, b"output=json only in this stand-in", "text/plain")
            return
        target = q.get("url", [""])[0]
        match = q.get("matchType", ["exact"])[0]
        fields = (
            q.get("fl", [""])[0] or "urlkey,timestamp,original,mimetype,statuscode,digest,length"
        ).split(",")
        filters = []
        for f in q.get("filter", []):
            neg = f.startswith("!")
            name, _, pattern = f.lstrip("!").partition(":")
            filters.append((neg, name, re.compile(pattern)))
        start = q.get("from", [""])[0].ljust(14, "0")
        end = q.get("to", [""])[0].ljust(14, "9") if q.get("to") else "9" * 14
        limit = min(int(q.get("limit", [str(self.page_rows)])[0]), self.page_rows)
        key = surt(target)
        prefix = key.split(")")[0] + ")" if match == "host" else None
        resume = q.get("resumeKey", [""])[0]
        i = int(base64.urlsafe_b64decode(resume.encode()).decode()) if resume else 0
        if resume and self.repeat_row:
            i -= 1  # the row before the key comes again: the same row twice
        rows: list[list[str]] = []
        n = len(self.rows)
        while i < n and len(rows) < limit:
            s = self.rows[i]
            i += 1
            if prefix is not None and not s.urlkey.startswith(prefix):
                continue
            if prefix is None and s.urlkey != key:
                continue
            if not start <= s.timestamp <= end:
                continue
            values = {
                "urlkey": s.urlkey,
                "timestamp": s.timestamp,
                "original": s.url,
                "mimetype": s.mimetype,
                "statuscode": s.status,
                "digest": s.digest,
                "length": str(len(s.body) // 3 + 500),
            }
            if all(bool(rx.fullmatch(values.get(name, ""))) != neg for neg, name, rx in filters):
                rows.append([values.get(f, "") for f in fields])
        if not rows:
            h.send(200, b"[]", "application/json")
            return
        answer: list[list[str]] = [fields, *rows]
        if i < n and q.get("showResumeKey", [""])[0] == "true":
            answer += [[], [base64.urlsafe_b64encode(str(i).encode()).decode()]]
        h.send(200, json.dumps(answer).encode(), "application/json")

    def _snapshot(self, h: _Handler, path: str, raw_query: str) -> None:
        m = re.match(r"^/web/(\d{1,14})([a-z_]*)/(.*)$", path)
        if m is None:
            h.send(404, b"no such capture")
            return
        stamp, url = m.group(1), m.group(3) + (f"?{raw_query}" if raw_query else "")
        key = surt(url)
        snap = self.by_key.get((key, stamp))
        if snap is None and isinstance(self.rows, RowMaker):
            snap = next((self.rows[i] for i in self._maker_index(stamp)), None)
        if snap is None:
            h.send(404, b"<html><body>Wayback Machine has not archived that URL.</body></html>")
            return
        if snap.redirect_to:
            h.send(302, b"", extra={"Location": f"/web/{snap.redirect_to}id_/{snap.url}"})
            return
        body = snap.body
        if snap.revisit_of:
            body = self.by_key[(key, snap.revisit_of)].body
        ctype = snap.served_as or (
            "image/png" if snap.mimetype.startswith("image/") else "text/html; charset=utf-8"
        )
        extra = {"Link": f'<{snap.url}>; rel="original"'}
        if snap.memento:
            extra["Memento-Datetime"] = format_datetime(snap.when, usegmt=True)
        h.send(200, body, ctype, extra)

    def _maker_index(self, stamp: str) -> list[int]:
        """Where a RowMaker holds the capture of `stamp` (a binary search by time)."""
        rows = self.rows
        lo, hi = 0, len(rows)
        while lo < hi:
            mid = (lo + hi) // 2
            if rows[mid].timestamp < stamp:
                lo = mid + 1
            else:
                hi = mid
        return [lo] if lo < len(rows) and rows[lo].timestamp == stamp else []

    # --- Common Crawl ---------------------------------------------------------------------

    def _build_warc(self, crawl: Crawl) -> None:
        from warcio.statusandheaders import StatusAndHeaders
        from warcio.warcwriter import WARCWriter

        name = f"crawl-data/{crawl.id}/segments/1/warc/{crawl.id}-00000.warc.gz"
        buf = io.BytesIO()
        writer = WARCWriter(buf, gzip=True)
        rows = []
        for s in sorted(crawl.snaps, key=lambda s: (s.urlkey, s.timestamp)):
            stamp = f"{s.when:%Y-%m-%dT%H:%M:%SZ}"
            status = "200 OK" if s.status in ("200", "-") else f"{s.status} Other"
            ctype = "image/png" if s.mimetype.startswith("image/") else "text/html; charset=UTF-8"
            headers = StatusAndHeaders(status, [("Content-Type", ctype)], protocol="HTTP/1.1")
            if s.revisit_of:
                record = writer.create_revisit_record(
                    s.url, digest=f"sha1:{s.digest}", refers_to_uri=s.url, refers_to_date=stamp
                )
            else:
                record = writer.create_warc_record(
                    s.url, "response", payload=io.BytesIO(s.body), http_headers=headers
                )
            record.rec_headers.replace_header("WARC-Date", stamp)
            offset = buf.tell()
            writer.write_record(record)
            rows.append(
                {
                    "urlkey": s.urlkey,
                    "timestamp": s.timestamp,
                    "url": s.url,
                    "mime": s.mimetype,
                    "status": s.status,
                    "digest": s.digest,
                    "length": str(buf.tell() - offset),
                    "offset": str(offset),
                    "filename": name,
                }
            )
        self.warcs[name] = buf.getvalue()
        self.cc_rows[crawl.id] = rows

    def _collinfo(self, h: _Handler) -> None:
        info = [
            {
                "id": c.id,
                "name": f"Crawl {c.id}",
                "timegate": self.url(f"{CC_INDEX}/{c.id}/"),
                "cdx-api": self.url(f"{CC_INDEX}/{c.id}-index"),
                "from": c.start,
                "to": c.end,
            }
            for c in reversed(self.crawls)  # newest first, as the real one lists them
        ]
        h.send(200, json.dumps(info).encode(), "application/json")

    def _cc_index(self, h: _Handler, crawl: str, q: dict[str, list[str]]) -> None:
        if crawl not in self.cc_rows:
            h.send(404, b'{"message": "no such collection"}', "application/json")
            return
        key = surt(q.get("url", [""])[0])
        host = q.get("matchType", ["exact"])[0] == "host"
        start = q.get("from", [""])[0].ljust(14, "0")
        end = q.get("to", [""])[0].ljust(14, "9") if q.get("to") else "9" * 14
        rows = [
            r
            for r in self.cc_rows[crawl]
            if (r["urlkey"].startswith(key.split(")")[0] + ")") if host else r["urlkey"] == key)
            and start <= r["timestamp"] <= end
        ]
        per = self.cc_page_rows
        pages = -(-len(rows) // per)
        if q.get("showNumPages", [""])[0] == "true":
            h.send(
                200,
                json.dumps({"pages": pages, "pageSize": 5, "blocks": pages}).encode(),
                "text/x-ndjson",
            )
            return
        n = int(q.get("page", ["0"])[0])
        chunk = rows[n * per : (n + 1) * per]
        if not chunk:
            message = {"message": f"No Captures found for: {q.get('url', [''])[0]}"}
            h.send(404, json.dumps(message).encode(), "application/json")
            return
        h.send(200, "".join(json.dumps(r) + "\n" for r in chunk).encode(), "text/x-ndjson")

    def _cc_data(self, h: _Handler, name: str) -> None:
        data = self.warcs.get(name)
        if data is None:
            h.send(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
            return
        m = re.match(r"^bytes=(\d+)-(\d+)$", h.headers.get("Range", ""))
        if m is None:
            h.send(200, data, "application/octet-stream")
            return
        a, b = int(m.group(1)), int(m.group(2))
        extra = {"Content-Range": f"bytes {a}-{b}/{len(data)}"}
        h.send(206, data[a : b + 1], "application/octet-stream", extra)


class BrokenReader(TickerReader):
    """The ticker's reader with a bug: it raises on a page holding `marker`. Defined in a
    module so that it reaches the keeper process (pickled by name)."""

    def __init__(self, marker: bytes) -> None:
        super().__init__(cache=True)
        self.marker = marker

    def read(self, page: Any, *args: Any, **kw: Any) -> Any:
        if self.marker in page.body:
            raise ZeroDivisionError("a bug")
        return super().read(page, *args, **kw)


def recover_config(directory: Path, archives: WebArchives, per_minute: int = 100000) -> Path:
    """A config.toml for recover tests: the store and archive in `directory`, the source
    timesca.com, the archives at the stand-in."""
    return write_config(
        directory,
        lock_timeout=5,
        url="https://timesca.com/",
        http={
            "timeout": 5,
            "retries": 2,
            "backoff": 0,
            "max_retry_after": 600,
            "deadline": 30,
        },
        schedule={},
        charts=None,
        extra="\n" + archives.config(per_minute),
    )
