"""Web archive clients: the public web archives' indexes and captures, asked politely.

Two archives: the Wayback Machine (its CDX server API, and each capture's raw bytes from
`.../web/<timestamp>id_/<url>`) and Common Crawl (its index server: `collinfo.json`, one
CDX index per crawl, and each record read with an HTTP Range request from the crawl's
WARC file). An index is read a page at a time (`list_page`), each page saying where the
listing goes on, so a job can keep it and resume.

Every request goes through one `Polite` client: one session (one connection per host),
at most `per_minute` requests in any minute and evenly spaced (`RateLimiter`, which takes
its clock and sleep as parameters), a 429 or 503 waited out (its Retry-After, else at
least `least_wait` seconds, a minute by default), and WebArchiveError when the archive
keeps refusing: the Internet Archive blocks an address that ignores its 429s, and a block
looks like connections refused or timing out, not like an HTTP error. The session makes
no retries of its own, so that every request, retries included, is paced.
"""

from __future__ import annotations

import io
import json
import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from ticker.config import HttpConfig, RecoverConfig
from ticker.errors import FetchError, WebArchiveError
from ticker.fetch import Fetched, fetch, make_session
from ticker.models import Outcome

LEAST_WAIT = 60.0  # seconds after a 429 or 503 without Retry-After, and after a refusal
MAX_REFUSALS = 3  # 429s or 503s in a row (each waited out) before the run stops
MAX_UNREACHABLE = 3  # connections refused or timing out in a row before the run stops
CDX_PAGE_ROWS = 5000  # rows asked for per index request
MAX_URL = 2048  # an index row with a longer URL is not a page of the site
REVISIT = "warc/revisit"
_TIMESTAMP_RE = re.compile(r"^\d{14}$")
_CRAWL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# The Wayback CDX fields asked for, and Common Crawl's names for them.
CDX_FIELDS = ("urlkey", "timestamp", "original", "mimetype", "statuscode", "digest", "length")
_ALIASES = {"url": "original", "mime": "mimetype", "status": "statuscode"}
_NO_ANSWER = (Outcome.CONNECTION_ERROR, Outcome.TIMEOUT)


# --- what the archives give -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One capture as an index lists it."""

    url: str  # the page's original URL
    captured_at: datetime  # UTC, whole seconds, as the index gives it
    urlkey: str
    mimetype: str
    status: str  # HTTP status of the capture; '-' for a revisit
    digest: str  # of the payload; a revisit carries its original's
    warc_file: str | None = None  # Common Crawl: where the record is
    warc_offset: int | None = None
    warc_length: int | None = None

    @property
    def timestamp(self) -> str:
        return f"{self.captured_at:%Y%m%d%H%M%S}"

    @property
    def revisit(self) -> bool:
        """A capture identical to an earlier one: the archive keeps no bytes of its own."""
        return self.mimetype == REVISIT or self.status == "-"


@dataclass
class IndexPage:
    """One answer of an index: the rows kept, why others were left out, and where the
    listing goes on (None: it is complete)."""

    rows: list[Row] = field(default_factory=list)
    left_out: Counter[str] = field(default_factory=Counter)
    resume: str | None = None
    urlkey: str | None = None  # the key of the rows (an exact query has one)


@dataclass(frozen=True)
class Query:
    """One listing of one index: a crawl ('' for the Wayback Machine) and the capture
    times asked for (14 digits, UTC, inclusive; None: no bound)."""

    crawl: str
    start: str | None
    end: str | None


@dataclass(frozen=True, slots=True)
class Capture:
    """What an archive served for a capture."""

    url: str  # the page's original URL
    captured_at: datetime  # when the archive captured it: after any redirect, UTC
    status: int
    reason: str
    http_version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    content_type: str | None
    snapshot: str  # where it was fetched from
    range: str | None = None  # the byte range of a WARC file read (Common Crawl)


class NotCaptured(FetchError):
    """The archive answered, but with no capture of a page (no Memento-Datetime, a record
    of another kind): the capture is skipped, not tried again."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(url, "not_captured", reason)


# --- politeness ---------------------------------------------------------------------------


class RateLimiter:
    """Requests evenly spaced: each starts at least 60/per_minute seconds after the one
    before, so no minute holds more than per_minute of them and none come in bursts.
    `hold` pushes the next one later (a Retry-After)."""

    def __init__(
        self, per_minute: int, *, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        self.interval = 60.0 / per_minute
        self.clock, self.sleep = clock, sleep
        self.next_at = -math.inf

    def pending(self) -> float:
        """Seconds until the next request may start."""
        return max(0.0, self.next_at - self.clock())

    def hold(self, seconds: float) -> None:
        self.next_at = max(self.next_at, self.clock() + seconds)

    def acquire(self) -> None:
        """Wait for the next slot and take it."""
        while (left := self.next_at - self.clock()) > 0:
            self.sleep(left)
        self.next_at = self.clock() + self.interval


class Polite:
    """One session to the archives, every request paced by one RateLimiter; 429 and 503
    waited out, refusals and timeouts retried after a pause, and a stop
    (WebArchiveError) when the archive keeps refusing."""

    def __init__(
        self,
        http: HttpConfig,
        per_minute: int,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        least_wait: float = LEAST_WAIT,
        stop: threading.Event | None = None,
    ) -> None:
        self.http = replace(http, retries=0)  # retries are made here, each one paced
        self.retries = http.retries
        self.limiter = RateLimiter(per_minute, clock=clock, sleep=sleep)
        self.least_wait = least_wait
        self.stop = stop  # once set, no request starts (KeyboardInterrupt instead)
        self.requests = 0
        self._reserved = False  # the first request of a fetch took its slot already
        self._unreachable = 0  # requests in a row that got no answer
        self.session = make_session(self.http, before_send=self._before_send)

    def close(self) -> None:
        self.session.close()

    def _before_send(self) -> None:
        # A redirect is a request too: it waits for a slot of its own.
        if self._reserved:
            self._reserved = False
        else:
            self.limiter.acquire()
        self.requests += 1

    def get(
        self,
        url: str,
        *,
        media_types: tuple[str, ...] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fetched:
        """One answer of the archive, after waiting out what asks to be waited out.
        Raises FetchError for an answer that is no good (404, not HTML, ...), and
        WebArchiveError when the archive refuses to go on."""
        refusals = failures = 0
        while True:
            if self.stop is not None and self.stop.is_set():
                raise KeyboardInterrupt
            self.limiter.acquire()
            self._reserved = True
            try:
                got = fetch(self.session, url, self.http, media_types=media_types, headers=headers)
            except FetchError as exc:
                if exc.status in (429, 503):
                    self._unreachable = 0
                    refusals += 1
                    self._slow_down(url, exc, refusals)
                    continue
                if exc.status is None and exc.outcome in _NO_ANSWER:
                    self._unreachable += 1
                    if self._unreachable >= MAX_UNREACHABLE:
                        raise WebArchiveError(_blocked(url, self._unreachable, exc)) from exc
                    self.limiter.hold(self.least_wait * 2 ** (self._unreachable - 1))
                    continue
                self._unreachable = 0
                if exc.status is not None and exc.status >= 500 and failures < self.retries:
                    failures += 1
                    self.limiter.hold(self.http.backoff * 2 ** (failures - 1))
                    continue
                raise
            finally:
                self._reserved = False
            self._unreachable = 0
            return got

    def _slow_down(self, url: str, exc: FetchError, refusals: int) -> None:
        """Wait as a 429 or 503 asks: its Retry-After, else at least least_wait."""
        host = urlsplit(url).netloc
        wait = exc.retry_after if exc.retry_after is not None else self.least_wait
        if wait > self.http.max_retry_after:
            raise WebArchiveError(
                f"{host} asks to wait {wait:.0f} s (HTTP {exc.status}, Retry-After), longer "
                f"than [http] max_retry_after = {self.http.max_retry_after:g} s; run the same "
                "command later: it resumes where it stopped"
            ) from exc
        if refusals >= MAX_REFUSALS:
            raise WebArchiveError(
                f"{host} keeps asking to slow down (HTTP {exc.status} {refusals} times in a "
                "row, each one waited out); run the same command later: it resumes where it "
                "stopped (a lower [recover] per_minute asks less of it)"
            ) from exc
        self.limiter.hold(wait)


def _blocked(url: str, tries: int, exc: FetchError) -> str:
    host = urlsplit(url).netloc
    last = exc.reason.split(" after ", 1)[0].split("; ", 1)[0]
    return (
        f"{host} refuses connections or does not answer ({tries} tries in a row; the last: "
        f"{last}): an archive asked too fast may block an address for an hour or more (the "
        "Internet Archive does); run the same command later: it resumes where it stopped"
    )


# --- rows of an index -----------------------------------------------------------------------


def parse_row(fields: Mapping[str, Any], media_types: tuple[str, ...]) -> Row | str:
    """An index row as a Row, or why it is left out: not HTML, a redirect, an error, or
    unusable (no time, no URL)."""
    get = {_ALIASES.get(k, k): v for k, v in fields.items()}
    url, stamp = get.get("original"), get.get("timestamp")
    status, mime = str(get.get("statuscode") or ""), str(get.get("mimetype") or "")
    if not isinstance(url, str) or not isinstance(stamp, str) or not _TIMESTAMP_RE.match(stamp):
        return "unusable (no capture time or URL)"
    revisit = mime == REVISIT or status == "-"
    if not revisit:
        if status.startswith("3"):
            return "redirects"
        if status != "200":
            return "errors (4xx, 5xx)"
        if not mime.lower().startswith(media_types):
            return "not HTML"
    if not _plain(url) or urlsplit(url).scheme not in ("http", "https", ""):
        return "unusable (no capture time or URL)"
    try:
        captured = datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return "unusable (no capture time or URL)"
    offset, length = get.get("offset"), get.get("length")
    return Row(
        url=url,
        captured_at=captured,
        urlkey=str(get.get("urlkey") or "")[:MAX_URL],
        mimetype=mime[:100],
        status=status[:10],
        digest=str(get.get("digest") or "")[:100],
        warc_file=str(get["filename"])[:MAX_URL] if get.get("filename") else None,
        warc_offset=_whole(offset),
        warc_length=_whole(length),
    )


def _whole(value: object) -> int | None:
    """An index's number (a string of digits), or None."""
    text = str(value) if isinstance(value, str | int) else ""
    return int(text) if text.isdigit() and len(text) < 19 else None


def _page_of(
    records: Iterable[Mapping[str, Any]], media_types: tuple[str, ...], resume: str | None
) -> IndexPage:
    page = IndexPage(resume=resume)
    for fields in records:
        row = parse_row(fields, media_types)
        if isinstance(row, str):
            page.left_out[row] += 1
        else:
            page.rows.append(row)
            page.urlkey = page.urlkey or row.urlkey or None
    return page


def _plain(url: str) -> bool:
    """A URL ticker may write into a WARC header: not too long, no blanks or controls."""
    return len(url) <= MAX_URL and not any(ord(c) <= 32 or ord(c) == 127 for c in url)


def cdx_types(media_types: Sequence[str]) -> str:
    """A CDX filter regex (it must match the whole field) for the reader's media types
    and revisits."""
    return "mimetype:" + "|".join(re.escape(t) for t in (*media_types, REVISIT))


def _stamp(value: str | None) -> datetime | None:
    """A 14-digit CDX time as a UTC datetime."""
    if not value:
        return None
    return datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=UTC)


# --- the Wayback Machine ----------------------------------------------------------------


class Wayback:
    """The Wayback Machine: the CDX server API, and each capture's raw bytes."""

    name = "wayback"

    def __init__(self, conf: RecoverConfig, polite: Polite, media_types: tuple[str, ...]) -> None:
        self.conf, self.polite, self.media_types = conf, polite, media_types

    @property
    def index(self) -> str:
        return self.conf.cdx_url

    def queries(self, start: str | None, end: str | None) -> list[Query]:
        return [Query("", start, end)]

    def list_page(self, target: str, scope: str, query: Query, resume: str | None) -> IndexPage:
        """One answer of the CDX server: up to CDX_PAGE_ROWS rows, HTML and revisits only,
        and its resume key (`showResumeKey`) when there are more."""
        params = [
            ("url", target),
            ("matchType", "host" if scope == "site" else "exact"),
            ("output", "json"),
            ("fl", ",".join(CDX_FIELDS)),
            ("filter", "statuscode:200|-"),
            ("filter", cdx_types(self.media_types)),
            ("limit", str(CDX_PAGE_ROWS)),
            ("showResumeKey", "true"),
        ]
        if query.start:
            params.append(("from", query.start))
        if query.end:
            params.append(("to", query.end))
        if resume:
            params.append(("resumeKey", resume))
        url = f"{self.conf.cdx_url}?{urlencode(params)}"
        got = self.polite.get(url)
        return self.parse(got.body, url)

    def parse(self, body: bytes, url: str) -> IndexPage:
        """`output=json`: a header row, then rows of strings; with showResumeKey, an empty
        row and a row holding the key at the end. An empty answer is `[]`."""
        if not body.strip():
            return IndexPage()
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise _not_a_listing(url, f"not JSON ({exc})") from exc
        if not isinstance(data, list) or not all(isinstance(r, list) for r in data):
            raise _not_a_listing(url, "not a list of rows")
        if not data:
            return IndexPage()
        header, rows = data[0], data[1:]
        resume = None
        if len(rows) >= 2 and rows[-2] == [] and len(rows[-1]) == 1:
            resume = str(rows[-1][0])
            rows = rows[:-2]
        if not all(isinstance(h, str) for h in header) or "timestamp" not in header:
            raise _not_a_listing(url, f"its first row is not a header of fields ({header[:8]})")
        records = (dict(zip(header, r, strict=False)) for r in rows if len(r) == len(header))
        page = _page_of(records, self.media_types, resume)
        torn = sum(1 for r in rows if len(r) != len(header))
        if torn:
            page.left_out["unusable (no capture time or URL)"] += torn
        return page

    def snapshot(self, row: Row) -> str:
        return self.conf.snapshot_url.format(timestamp=row.timestamp, url=row.url)

    def fetch(self, row: Row) -> Capture:
        """A capture's raw bytes. The archive may answer with a redirect to another
        capture (of another day, even): the capture is the one served, dated by its
        Memento-Datetime."""
        snapshot = self.snapshot(row)
        got = self.polite.get(snapshot, media_types=self.media_types)
        memento = _header(got.headers, "Memento-Datetime")
        captured = _http_date(memento) if memento else None
        if captured is None:
            raise NotCaptured(
                snapshot,
                "the archive answered without a Memento-Datetime (or with one that is not a "
                "date): no capture",
            )
        original = _original(got) or row.url
        return Capture(
            url=original,
            captured_at=captured,
            status=got.status,
            reason=got.reason,
            http_version=got.http_version,
            headers=got.headers,
            body=got.body,
            content_type=got.content_type,
            snapshot=got.final_url,
        )


def _header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    return next((v for k, v in headers if k.lower() == name), None)


def _http_date(value: str) -> datetime | None:
    try:
        stamp = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.astimezone(UTC).replace(microsecond=0)


_SNAPSHOT_PATH_RE = re.compile(r"/\d{1,14}[a-z_]*/((?:https?:/)?/?.+)$", re.IGNORECASE)


def _original(got: Fetched) -> str | None:
    """The original URL of the capture served: the Link header's rel="original", else
    the part of the snapshot URL after its timestamp."""
    import requests

    link = _header(got.headers, "Link")
    if link:
        for item in requests.utils.parse_header_links(link):
            if "original" in item.get("rel", "").split() and item.get("url"):
                url = item["url"]
                return url if _plain(url) else None
    m = _SNAPSHOT_PATH_RE.search(urlsplit(got.final_url).path)
    if m:
        url = m.group(1)
        url = re.sub(r"^(https?):/(?!/)", r"\1://", url)
        query = urlsplit(got.final_url).query
        url = f"{url}?{query}" if query else url
        return url if _plain(url) else None
    return None


# --- Common Crawl ---------------------------------------------------------------------------


class CommonCrawl:
    """Common Crawl: the index server's crawls (`collinfo.json`), one CDX index per crawl
    read page by page, and each record read from its crawl's WARC file by a Range
    request."""

    name = "commoncrawl"

    def __init__(self, conf: RecoverConfig, polite: Polite, media_types: tuple[str, ...]) -> None:
        self.conf, self.polite, self.media_types = conf, polite, media_types

    @property
    def index(self) -> str:
        return self.conf.commoncrawl_index

    def queries(self, start: str | None, end: str | None) -> list[Query]:
        """One query per crawl whose time span meets [start, end], oldest first."""
        url = f"{self.conf.commoncrawl_index}/collinfo.json"
        got = self.polite.get(url)
        try:
            crawls = json.loads(got.body)
        except ValueError as exc:
            raise _not_a_listing(url, f"not JSON ({exc})") from exc
        if not isinstance(crawls, list):
            raise _not_a_listing(url, "not a list of crawls")
        first, last = _stamp(start), _stamp(end)
        found: list[tuple[str, str]] = []
        for crawl in crawls:
            if not isinstance(crawl, dict) or not _CRAWL_RE.match(str(crawl.get("id", ""))):
                continue
            begins, ends = _iso(crawl.get("from")), _iso(crawl.get("to"))
            if (last and begins and begins > last) or (first and ends and ends < first):
                continue
            found.append((f"{begins:%Y%m%d%H%M%S}" if begins else crawl["id"], crawl["id"]))
        return [Query(crawl, start, end) for _, crawl in sorted(found)]

    def list_page(self, target: str, scope: str, query: Query, resume: str | None) -> IndexPage:
        """The first call asks how many pages the crawl's index has for the target
        (`showNumPages`); each later one reads one of them. The resume key is
        "<next page>/<pages>". An index without captures answers 404."""
        params = [
            ("url", target),
            ("matchType", "host" if scope == "site" else "exact"),
            ("output", "json"),
        ]
        if query.start:
            params.append(("from", query.start))
        if query.end:
            params.append(("to", query.end))
        api = f"{self.conf.commoncrawl_index}/{query.crawl}-index"
        if resume is None:
            url = f"{api}?{urlencode([*params, ('showNumPages', 'true')])}"
            try:
                got = self.polite.get(url)
            except FetchError as exc:
                if exc.status == 404:
                    return IndexPage()
                raise
            try:
                pages = json.loads(got.body)["pages"]
                if not isinstance(pages, int) or pages < 0:
                    raise TypeError(pages)
            except (ValueError, KeyError, TypeError) as exc:
                raise _not_a_listing(url, "no number of pages in its answer") from exc
            return IndexPage(resume=f"0/{pages}" if pages else None)
        number, _, pages = resume.partition("/")
        n, total = int(number), int(pages)
        url = f"{api}?{urlencode([*params, ('page', str(n))])}"
        after = f"{n + 1}/{total}" if n + 1 < total else None
        try:
            got = self.polite.get(url)
        except FetchError as exc:
            if exc.status == 404:  # "No Captures found": nothing on this page
                return IndexPage(resume=after)
            raise
        records = []
        for line in got.body.splitlines():
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as exc:
                raise _not_a_listing(url, f"a line that is not JSON ({exc})") from exc
            records.append(item if isinstance(item, dict) else {})
        page = _page_of(records, self.media_types, after)
        bad = [r for r in page.rows if r.warc_file is None or r.warc_offset is None]
        if bad:
            page.rows = [r for r in page.rows if r not in bad]
            page.left_out["unusable (no capture time or URL)"] += len(bad)
        return page

    def snapshot(self, row: Row) -> str:
        return f"{self.conf.commoncrawl_data}/{row.warc_file}"

    def fetch(self, row: Row) -> Capture:
        """The record at the row's byte range of its WARC file: a gzip member holding
        one WARC record (its payload cut at 1 MiB: the ticker is in the first few KB)."""
        from warcio.archiveiterator import ArchiveIterator
        from warcio.exceptions import ArchiveLoadFailed

        url = self.snapshot(row)
        if row.warc_offset is None or not row.warc_length:
            raise NotCaptured(url, "the index gives no byte range for this capture")
        span = f"bytes={row.warc_offset}-{row.warc_offset + row.warc_length - 1}"
        got = self.polite.get(url, headers={"Range": span})
        if got.status != 206:
            raise FetchError(
                url, Outcome.HTTP_ERROR, f"HTTP {got.status}: the byte range was not served"
            )
        try:
            record = next(iter(ArchiveIterator(io.BytesIO(got.body))), None)
            if record is None or record.rec_type != "response" or record.http_headers is None:
                kind = record.rec_type if record is not None else "nothing"
                raise NotCaptured(url, f"the byte range holds a {kind} record, not a response")
            status = record.http_headers.get_statuscode()
            ctype = record.http_headers.get_header("Content-Type")
            if status != "200":
                raise NotCaptured(url, f"the record holds an HTTP {status} answer, not a page")
            if ctype and not ctype.lower().lstrip().startswith(self.media_types):
                raise FetchError(
                    url,
                    Outcome.NOT_HTML,
                    f"the record holds {ctype.split(';')[0].strip()!r}, not an HTML page",
                )
            body = record.content_stream().read(self.polite.http.max_bytes + 1)
            stamp = _iso(record.rec_headers.get_header("WARC-Date"))
            target = record.rec_headers.get_header("WARC-Target-URI") or row.url
            protocol = record.http_headers.protocol or "HTTP/1.1"
            reason = record.http_headers.statusline.partition(" ")[2]
            headers = tuple(record.http_headers.headers)
        except (ArchiveLoadFailed, ValueError, EOFError, OSError) as exc:
            raise FetchError(
                url, Outcome.TRUNCATED, f"the byte range is not a whole WARC record ({exc})"
            ) from exc
        if stamp is None:
            raise NotCaptured(url, "the record has no usable WARC-Date")
        return Capture(
            url=target if _plain(target) else row.url,
            captured_at=stamp,
            status=200,
            reason=reason,
            http_version=protocol,
            headers=headers,
            body=body,
            content_type=ctype,
            snapshot=url,
            range=span,
        )


def _iso(value: object) -> datetime | None:
    """An ISO 8601 time (collinfo's from/to, WARC-Date) as UTC, whole seconds."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        stamp = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.astimezone(UTC).replace(microsecond=0)


def _not_a_listing(url: str, what: str) -> WebArchiveError:
    host = urlsplit(url).netloc
    return WebArchiveError(
        f"{url[:300]}: the index answered something that is not a listing ({what[:200]}); "
        f"is [recover] set to the right server for {host}? Run the same command later: it "
        "resumes where it stopped"
    )


Client = Wayback | CommonCrawl


def client(
    archive: str, conf: RecoverConfig, polite: Polite, media_types: tuple[str, ...]
) -> Client:
    if archive == "commoncrawl":
        return CommonCrawl(conf, polite, media_types)
    return Wayback(conf, polite, media_types)
