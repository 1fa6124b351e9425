"""Recover job: years of history from the public web archives (`ticker recover`).

An archive's index is listed into the store a page at a time, each page in one
transaction with where the listing goes on; the captures to take are chosen in SQL
(`--per-day` of each day, in the source's time zone, always its last); each is fetched
politely (ticker.webarchive), kept in the page archive as a WARC file dated by the
archive's own capture time, read by the source's kind and stored through the store's one
write path, exactly as `ticker backfill` of that file stores it. What became of every
listed capture is kept beside it, so a run stopped at any moment (SIGKILL included)
resumes where it stopped, and a second run fetches nothing again.

This process fetches; a keeper process (ticker.keeper) archives and reads each capture
meanwhile, on the other core. Captures are stored in batches: a batch is written when it
is BATCH_CAPTURES long, at the end of each chunk, and before any wait for the rate
limiter longer than FLUSH_BEFORE seconds, so at the default pace every capture is stored
before the next is asked for. A capture archived but not stored (a run killed in
between) is read back from the archive, not fetched again. The database is open for a
stretch of work only: it is closed before any such wait and after HOLD_AT_MOST seconds,
so the daemon and other commands get it.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from ticker import sources
from ticker.archive import archive_path, settle
from ticker.config import Config, Source
from ticker.dumps import read_pages
from ticker.errors import FetchError, InputError, UsageError, WebArchiveError
from ticker.keeper import Keeper, ParseFailed, Ticket, keeper
from ticker.models import Outcome, Page, PageTally, Record, shorten
from ticker.store import Store, read, write
from ticker.store.write import Listed, ListingState, Recovered, WriteCounts
from ticker.webarchive import (
    LEAST_WAIT,
    Capture,
    Client,
    NotCaptured,
    Polite,
    Query,
    Row,
    client,
)

ARCHIVES = ("wayback", "commoncrawl")
SCOPES = ("site", "page")
BATCH_CAPTURES = 500  # captures stored in one transaction when they come fast
FLUSH_BEFORE = 0.5  # a wait for the next request longer than this stores what is done first
CHUNK = 1000  # chosen captures read from the store at a time
HOLD_AT_MOST = 5.0  # seconds the store is kept open at a stretch (others wait for it)
DUCKDB_MEMORY = "64MB"  # the most DuckDB may hold in memory during a recovery
RELIST_DAYS = 30  # a complete Wayback listing is listed again from this long before it ended
LISTED = 50  # entries of each list kept for the summary; the rest are counted
INSTEAD = 3  # captures of a day tried in place of one that was another day's
_BODIES = 32  # bytes of recent captures kept by digest, for revisits that follow them


class _Held:
    """The store, opened for a stretch of work and closed before a wait (`release`)."""

    def __init__(self, config: Config, clock: Callable[[], float]) -> None:
        self.config, self.clock = config, clock
        self.stack: contextlib.ExitStack | None = None
        self.store: Store | None = None
        self.since = 0.0

    def __call__(self) -> Store:
        if self.store is None:
            stack = contextlib.ExitStack()
            self.store = stack.enter_context(
                Store.open(self.config.store_path, self.config.lock_timeout)
            )
            # DuckDB's memory is bounded, however long the listing (a checkpoint of a
            # big table otherwise takes memory in proportion); past it, it spills to disk.
            self.store.con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
            self.stack, self.since = stack, self.clock()
        return self.store

    def long(self) -> bool:
        return self.store is not None and self.clock() - self.since > HOLD_AT_MOST

    def release(self, exc: BaseException | None = None) -> None:
        """Close the store; `exc`, the error under way, is shown to Store.open as if it
        had been raised inside it (a damaged file becomes its one-line StoreError)."""
        stack, self.stack, self.store = self.stack, None, None
        if stack is not None:
            stack.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)


class Progress(Protocol):
    """What a run reports as it goes (the command line draws a progress bar)."""

    def listed(self, rows: int, requests: int) -> None: ...

    def start(self, captures: int, days: int) -> None: ...

    def step(self, days_done: int) -> None: ...

    def close(self) -> None: ...


@dataclass(kw_only=True)
class RecoverSummary(PageTally):
    archive: str
    index: str  # the index's URL
    scope: str
    target: str  # the host (site) or the URL (page)
    per_day: int
    per_minute: int
    dry_run: bool = False
    index_requests: int = 0
    listed: int = 0  # rows the index gave this run, kept
    listed_new: int = 0  # of them, not listed before
    left_out: dict[str, int] = field(default_factory=dict)  # rows not kept, by why
    listed_in_all: int = 0  # captures of the range listed by this run and earlier ones
    days: int = 0
    first_day: date | None = None
    last_day: date | None = None
    fewest: int = 0  # captures per day
    most: int = 0
    median: float = 0.0
    chosen: int = 0
    to_fetch: int = 0  # at the start of the run
    todo_days: int = 0
    requests: int = 0  # downloads the chosen captures need
    months: list[read.RecoverMonth] = field(default_factory=list)
    already: int = 0  # chosen captures stored by an earlier run
    fetched: int = 0  # downloaded by this run
    reused: int = 0  # stored from bytes already fetched (revisits, identical captures)
    read_back: int = 0  # archived by a run stopped before storing them
    redirected: int = 0  # the archive served another capture than the one listed
    instead: int = 0  # taken in place of a capture whose snapshot was another day's
    skipped: list[tuple[str, str]] = field(default_factory=list)
    skipped_count: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    failed_count: int = 0
    not_reached: int = 0  # left when the run stopped
    stopped: str | None = None
    new: int = 0
    already_stored: int = 0
    revised: int = 0
    covered: int = 0
    covered_first: date | None = None
    covered_last: date | None = None

    @property
    def exit_code(self) -> int:
        """1 when a chosen capture could not be fetched, or the run stopped early."""
        return 1 if self.failed_count or self.stopped else 0

    def add(self, counts: WriteCounts) -> None:
        self.new += counts.new
        self.already_stored += counts.already
        self.revised += counts.revised


def recover(
    config: Config,
    *,
    now: datetime,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    since: date | None = None,
    until: date | None = None,
    source_name: str | None = None,
    archive: str = "wayback",
    per_day: int = 1,
    scope: str = "site",
    dry_run: bool = False,
    progress: Progress | None = None,
    least_wait: float = LEAST_WAIT,
    stop: threading.Event | None = None,
) -> RecoverSummary:
    """List an archive's captures of the source, choose `per_day` of each day from
    `since` to `until` and store them (with `dry_run`, list and count only). `clock` and
    `sleep` pace the requests (time.monotonic and time.sleep on the command line);
    `least_wait` is the least wait after a 429 or 503 without Retry-After (a minute; the
    tests shrink it). Stops early, with `stopped` saying why, when the archive refuses to
    go on, or when `stop` is set (before its next request) or KeyboardInterrupt comes;
    raises UsageError for arguments it cannot use."""
    source = config.source(source_name)
    if archive not in ARCHIVES:
        raise UsageError(f"--archive {archive!r}: choose one of {', '.join(ARCHIVES)}")
    if scope not in SCOPES:
        raise UsageError(f"--scope {scope!r}: choose one of {', '.join(SCOPES)}")
    if per_day < 0:
        raise UsageError(f"--per-day {per_day}: give 0 (every capture) or more")
    if since and until and since > until:
        raise UsageError(f"--since {since} is after --until {until}")
    media_types = sources.reader(source.kind).media_types  # what the archives are asked for
    if "text/html" not in media_types:
        fetch_it = "`ticker reference`" if source.kind == "reference" else "its own command"
        raise UsageError(
            f"--source {source.name}: a source of kind {source.kind!r} is no web page, so the "
            f"web archives keep none of it (it comes from {fetch_it}); choose a [[sources]] "
            "source whose url is a web page"
        )
    polite = Polite(
        config.http,
        config.recover.per_minute,
        clock=clock,
        sleep=sleep,
        least_wait=least_wait,
        stop=stop,
    )
    archives = client(archive, config.recover, polite, media_types)
    target = source.url if scope == "page" else (urlsplit(source.url).hostname or "")
    summary = RecoverSummary(
        archive=archive,
        index=archives.index,
        scope=scope,
        target=target,
        per_day=per_day,
        per_minute=config.recover.per_minute,
        dry_run=dry_run,
    )
    held = _Held(config, clock)
    try:
        try:
            _list(held, archives, source, scope, target, since, until, now, summary, progress)
        except WebArchiveError as exc:
            summary.stopped = str(exc)
        except FetchError as exc:
            summary.stopped = (
                f"the listing stopped: {exc}; run the same command later: it resumes where it "
                "stopped"
            )
        except KeyboardInterrupt:
            summary.stopped = "interrupted while listing; the same command resumes the listing"
        finally:
            summary.index_requests = polite.requests
        store = held()
        urlkey = read.page_urlkey(store, archive, source.name) if scope == "page" else None
        choice = read.Choice(archive, source.name, since, until, per_day, scope == "page", urlkey)
        _plan(store, choice, summary)
        if not dry_run and not summary.stopped and summary.to_fetch:
            held.release()  # nothing of the store's held while the keeper starts
            keeps = keeper(config.archive_dir, source, now)
            try:
                run = _Run(config, held, source, archives, keeps, summary, now, choice, progress)
                run.run()
            finally:
                keeps.close()
        summary.covered, summary.covered_first, summary.covered_last = read.days_covered(
            held(), source.name, since, until
        )
    finally:
        held.release(sys.exception())
        polite.close()
        if progress is not None:
            progress.close()
    return summary


def _bounds(source: Source, since: date | None, until: date | None) -> tuple[str | None, ...]:
    """The capture times of the days from `since` to `until` in the source's time zone,
    as the indexes take them: 14 digits, UTC, inclusive."""
    tz = source.tz
    start = end = None
    if since is not None:
        start = f"{datetime.combine(since, time(), tz).astimezone(UTC):%Y%m%d%H%M%S}"
    if until is not None and until < date.max:
        after = datetime.combine(until + timedelta(days=1), time(), tz).astimezone(UTC)
        end = f"{after - timedelta(seconds=1):%Y%m%d%H%M%S}"
    return start, end


def _list(
    held: _Held,
    archives: Client,
    source: Source,
    scope: str,
    target: str,
    since: date | None,
    until: date | None,
    now: datetime,
    summary: RecoverSummary,
    progress: Progress | None,
) -> None:
    """List the index into the store, page by page, resuming a listing under way. A
    complete listing is listed again only from RELIST_DAYS before it ended (the archive
    indexes new captures late); a Common Crawl crawl's index never changes."""
    start, end = _bounds(source, since, until)
    limiter = archives.polite.limiter
    for query in archives.queries(start, end):
        key = (archives.name, source.name, scope, query.crawl, str(since or ""), str(until or ""))
        known = read.listing(held(), key)
        resume: str | None = None
        if known is None:
            pass_from = query.start or ""
        elif not known.complete:
            pass_from, resume = known.pass_from, known.resume
        elif archives.name == "commoncrawl" or known.listed_at is None:
            continue
        else:
            again = f"{known.listed_at.astimezone(UTC) - timedelta(days=RELIST_DAYS):%Y%m%d%H%M%S}"
            if query.end and again > query.end:
                continue
            pass_from = max(query.start or "", again)
        while True:
            if limiter.pending() > FLUSH_BEFORE or held.long():
                held.release()
            page = archives.list_page(
                target, scope, Query(query.crawl, pass_from or None, query.end), resume
            )
            done = page.resume is None
            state = ListingState(
                key=key,
                pass_from=pass_from,
                resume=page.resume,
                complete=done,
                listed_at=now if done else None,
                urlkey=page.urlkey if scope == "page" else None,
            )
            listed, unusable = _columns(page.rows, source, now)
            page.left_out.update(unusable)
            added = write.add_listed(held(), listed, state)
            summary.listed += len(listed.url)
            summary.listed_new += added
            for why, n in page.left_out.items():
                summary.left_out[why] = summary.left_out.get(why, 0) + n
            if progress is not None:
                progress.listed(summary.listed, archives.polite.requests)
            if done:
                break
            resume = page.resume
        if limiter.pending() > FLUSH_BEFORE:
            held.release()


def _columns(rows: list[Row], source: Source, now: datetime) -> tuple[Listed, Counter[str]]:
    """Index rows as the store keeps them, each with its day in the source's time zone,
    and how many were left out: a row captured more than a day after `now` (or whose
    day is past the calendar's end) is no capture of this world."""
    out = Listed()
    tz = source.tz
    latest = now + timedelta(days=1)
    unusable: Counter[str] = Counter()
    for row in rows:
        if row.captured_at > latest:
            unusable["unusable (captured in the future)"] += 1
            continue
        try:
            local = row.captured_at.astimezone(tz)
        except OverflowError:  # its day is before the calendar's first
            unusable["unusable (no capture time or URL)"] += 1
            continue
        out.url.append(row.url)
        out.captured_at.append(row.captured_at)
        out.day.append(local.date())
        out.day_second.append(local.hour * 3600 + local.minute * 60 + local.second)
        out.urlkey.append(row.urlkey)
        out.mimetype.append(row.mimetype)
        out.status.append(row.status)
        out.digest.append(row.digest)
        out.warc_file.append(row.warc_file)
        out.warc_offset.append(row.warc_offset)
        out.warc_length.append(row.warc_length)
    return out, unusable


def _plan(store: Store, choice: read.Choice, summary: RecoverSummary) -> None:
    plan = read.recover_plan(store, choice)
    summary.listed_in_all = plan.listed
    summary.days, summary.first_day, summary.last_day = plan.days, plan.first_day, plan.last_day
    summary.fewest, summary.most, summary.median = plan.fewest, plan.most, plan.median
    summary.chosen, summary.already = plan.chosen, plan.stored
    summary.to_fetch, summary.todo_days = plan.to_fetch, plan.todo_days
    summary.requests = plan.requests
    summary.skipped_count = plan.skipped
    summary.skipped = [
        (f"{url} captured {at.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z", why)
        for url, at, why in read.recover_skipped(store, choice, LISTED)
    ]
    if summary.dry_run:
        summary.months = read.recover_months(store, choice)


def record_id(archive: str, source: str, url: str, timestamp: str) -> str:
    """The archive file's id of one listed capture: the same for every run, so a capture
    archived by a run stopped before storing it is found again."""
    text = f"{archive}\0{source}\0{url}\0{timestamp}"
    return hashlib.sha1(text.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()[
        :32
    ]


class _Run:
    """Fetches, archives, reads and stores the chosen captures, chunk by chunk."""

    def __init__(
        self,
        config: Config,
        held: _Held,
        source: Source,
        archives: Client,
        keeper: Keeper,
        summary: RecoverSummary,
        now: datetime,
        choice: read.Choice,
        progress: Progress | None,
    ) -> None:
        self.config, self.held = config, held
        self.source, self.archives = source, archives
        self.summary, self.now, self.choice, self.progress = summary, now, choice, progress
        self.batch: list[_Pending] = []
        self.keeper = keeper
        self.have: dict[str, str] = {}  # digest -> archive file, stored or in the batch
        self.bodies: OrderedDict[str, Page] = OrderedDict()  # digest -> a page with them
        # (url, capture time) of captures the archive served in place of others
        self.served: dict[tuple[str, datetime], _Pending] = {}
        self.handled = 0
        self.today: tuple[date | None, list[int]] = (None, [])  # ids handled that day

    def run(self) -> None:
        summary = self.summary
        if self.progress is not None:
            self.progress.start(summary.to_fetch, summary.todo_days)
        after: tuple[date, datetime, int] | None = None
        day: date | None = None
        days = 0
        try:
            while True:
                todo = read.recover_todo(self.held(), self.choice, after, CHUNK)
                if not todo:
                    break
                self.have = {}  # the store knows what earlier chunks stored
                limiter = self.archives.polite.limiter
                for item in todo:
                    after = (item.day, item.captured_at, item.id)
                    if limiter.pending() > FLUSH_BEFORE or self.held.long():
                        # store what is done, and let go of the database while waiting
                        self.flush()
                        self.held.release()
                    if item.day != day:
                        days += day is not None
                        day = item.day
                    self.one(item)
                    self.handled += 1
                    if self.progress is not None:
                        self.progress.step(days)
                    if len(self.batch) >= BATCH_CAPTURES:
                        self.flush()
                self.flush()
        except WebArchiveError as exc:
            summary.stopped = str(exc)
        except KeyboardInterrupt:
            summary.stopped = "interrupted; the same command resumes where it stopped"
        finally:
            self.flush()
            summary.not_reached = max(summary.to_fetch - self.handled, 0)

    def one(self, item: read.ToRecover, depth: int = 0) -> None:
        """Store one chosen capture: read back from the archive when a stopped run
        archived it, from bytes already fetched for its digest, else fetched. When its
        snapshot serves a capture of another day, a capture of its day is taken instead
        (up to INSTEAD of them)."""
        if self.today[0] != item.day:
            self.today = (item.day, [])
        self.today[1].append(item.id)
        row = Row(
            url=item.url,
            captured_at=item.captured_at.astimezone(UTC),
            urlkey=item.urlkey or "",
            mimetype=item.mimetype or "",
            status=item.status or "",
            digest=item.digest or "",
            warc_file=item.warc_file,
            warc_offset=item.warc_offset,
            warc_length=item.warc_length,
        )
        where = self._where(row)
        served = self.served.get((row.url, row.captured_at))
        if served is not None:  # the archive served it in place of another one
            mark = replace(served.mark, id=item.id, state="stored", served_url=None)
            self.batch.append(_Pending(mark, where, served.record, written=True))
            self.summary.reused += 1
            return
        rid = record_id(self.archives.name, self.source.name, row.url, row.timestamp)
        page = None
        if self.handled < BATCH_CAPTURES:
            # A run stopped before storing its last batch: those captures come first now,
            # and are in the archive already (any later one is just fetched again).
            kept = archive_path(self.config.archive_dir, self.source.name, row.captured_at, rid)
            page = self._read_back(kept)
        write: dict[str, object] | None = None
        if page is not None:
            self.summary.read_back += 1
        else:
            got = self._capture(item, row, where)
            if got is None:
                return
            capture, headers = got
            path = archive_path(self.config.archive_dir, self.source.name, capture.captured_at, rid)
            write = {
                "url": capture.url,
                "source": self.source.name,
                "captured_at": capture.captured_at,
                "status": capture.status,
                "reason": capture.reason,
                "http_version": capture.http_version,
                "headers": capture.headers,
                "body": capture.body,
                "record_id": rid,
                "extra_headers": headers,
                "durable": False,
            }
            page = Page(
                origin=f"{path}#1",
                body=capture.body,
                captured_at=capture.captured_at,
                url=capture.url,
                source=self.source.name,
                content_type=capture.content_type,
            )
        # Archived and read by the keeper while this process fetches the next; `flush`
        # waits for it.
        record = self.keeper.submit(page, write)
        path_text = page.origin.rsplit("#", 1)[0]
        assert page.captured_at is not None
        other = page.captured_at != row.captured_at or page.url != row.url
        moved = other and page.captured_at.astimezone(self.source.tz).date() != item.day
        mark = Recovered(
            id=item.id,
            state="moved" if moved else "stored",
            served_at=page.captured_at,
            served_url=page.url if other else None,
            archive_path=path_text,
        )
        pending = _Pending(mark, where, record)
        self.batch.append(pending)
        if other and page.url:
            self.served[(page.url, page.captured_at)] = pending
        elif row.digest:
            self.have[row.digest] = path_text
            self._keep_body(row.digest, page)
        if moved and depth < INSTEAD:
            instead = read.recover_instead(
                self.held(), self.choice, item.day, row.captured_at, self.today[1]
            )
            if instead is not None:
                self.summary.instead += 1
                self.one(instead, depth + 1)

    def _capture(
        self, item: read.ToRecover, row: Row, where: str
    ) -> tuple[Capture, dict[str, str]] | None:
        """The capture's bytes and the WARC headers saying where they came from; None
        when it is skipped or could not be fetched (marked so)."""
        known = self._bytes_of(row.digest, item.have_path)
        if known is not None:
            self.summary.reused += 1
            headers = {"WARC-Ticker-Archive": self.archives.name, "WARC-Ticker-Snapshot": where}
            if known.url:
                headers["WARC-Refers-To-Target-URI"] = known.url
            if known.captured_at:
                headers["WARC-Refers-To-Date"] = f"{known.captured_at:%Y-%m-%dT%H:%M:%SZ}"
            ctype = known.content_type
            capture = Capture(
                url=row.url,
                captured_at=row.captured_at,
                status=200,
                reason="OK",
                http_version="HTTP/1.1",
                headers=(("Content-Type", ctype),) if ctype else (),
                body=known.body,
                content_type=ctype,
                snapshot=where,
            )
            return capture, headers
        asked = row
        if row.revisit and self.archives.name == "commoncrawl":
            # A revisit record holds no bytes: read its original's record.
            if not item.original_file:
                self._skip(item.id, where, "a revisit of a capture the index does not list")
                return None
            asked = replace(
                row,
                url=item.original_url or row.url,
                warc_file=item.original_file,
                warc_offset=item.original_offset,
                warc_length=item.original_length,
            )
        try:
            capture = self.archives.fetch(asked)
        except NotCaptured as exc:
            self._skip(item.id, where, exc.reason)
            return None
        except FetchError as exc:
            if exc.outcome == Outcome.NOT_HTML:
                self._skip(item.id, where, exc.reason)
            else:
                self.batch.append(_Pending(self._fail(item.id, where, _reason(exc)), where))
            return None
        self.summary.fetched += 1
        if asked is not row:  # the original's bytes, at the revisit's own time
            capture = replace(capture, url=row.url, captured_at=row.captured_at)
        elif capture.captured_at != row.captured_at or capture.url != row.url:
            self.summary.redirected += 1
        headers = {
            "WARC-Ticker-Archive": self.archives.name,
            "WARC-Ticker-Snapshot": capture.snapshot,
        }
        if capture.range:
            headers["WARC-Ticker-Range"] = capture.range
        if capture.snapshot != where and not capture.range:
            headers["WARC-Ticker-Asked"] = where
        return capture, headers

    def _bytes_of(self, digest: str, stored: str | None) -> Page | None:
        """A page holding the bytes of `digest` already fetched: kept from this run, or
        read from the archive file of a capture stored with it."""
        if not digest:
            return None
        page = self.bodies.get(digest)
        if page is not None:
            self.bodies.move_to_end(digest)
            return page
        path = self.have.get(digest) or stored
        if path is None:
            return None
        page = self._read_back(Path(path))
        if page is not None:
            self._keep_body(digest, page)
        return page

    def _keep_body(self, digest: str, page: Page) -> None:
        self.bodies[digest] = page
        self.bodies.move_to_end(digest)
        while len(self.bodies) > _BODIES:
            self.bodies.popitem(last=False)

    def _read_back(self, path: Path) -> Page | None:
        """The page of an archive file ticker wrote, if it is there and whole."""
        try:
            if not path.is_file():
                return None
            pages = list(read_pages(path))
        except (InputError, OSError):
            return None
        if len(pages) != 1 or pages[0].source != self.source.name:
            return None
        return pages[0]

    def _where(self, row: Row) -> str:
        if row.warc_file is not None and row.warc_offset is not None:
            return f"{self.archives.snapshot(row)} at {row.warc_offset}"
        return self.archives.snapshot(row)

    def _skip(self, row_id: int, where: str, why: str) -> None:
        self.summary.skipped_count += 1
        if len(self.summary.skipped) < LISTED:
            self.summary.skipped.append((where, shorten(why)))
        self.batch.append(_Pending(Recovered(row_id, "skipped", reason=shorten(why)), where))

    def _fail(self, row_id: int, where: str, why: str) -> Recovered:
        self.summary.failed_count += 1
        if len(self.summary.failed) < LISTED:
            self.summary.failed.append((where, shorten(why)))
        return Recovered(row_id, "failed", reason=shorten(why))

    def flush(self) -> None:
        """Store the batch: its archive files written and made durable first, then the
        pages and what became of each capture in one transaction. When an archive file
        cannot be written the run stops (ArchiveError) and the batch is not stored: the
        next run fetches its captures again. A stop (Ctrl-C, SIGTERM) while it waits for
        the keeper or the store keeps the batch for the flush that follows it."""
        if not self.batch:
            return
        try:
            for pending in self.batch:
                self._resolve(pending)
            if any(p.record is not None for p in self.batch):
                settle(self.config.archive_dir)  # the batch's files durable before it is stored
            records = [p.read for p in self.batch if p.read is not None and not p.written]
            counts = write.write_recovered(
                self.held(),
                self.archives.name,
                self.source.name,
                records,
                [p.mark for p in self.batch],
                self.now,
            )
        except KeyboardInterrupt:
            raise
        except BaseException:
            self.batch = []
            raise
        self.batch = []
        for record in records:
            self.summary.tally(record, LISTED)
        self.summary.add(counts)

    def _resolve(self, pending: _Pending) -> None:
        """Wait for the keeper's record of a pending capture (once)."""
        if pending.record is None or pending.resolved:
            return
        try:
            record = pending.record.result()
        except ParseFailed as exc:  # a parser bug on one page must not stop the run
            why = (
                f"the parser failed ({exc}); this is a bug in ticker; the capture is "
                f"kept in {pending.mark.archive_path}"
            )
            pending.mark = self._fail(pending.mark.id, pending.where, why)
        else:
            pending.mark = replace(pending.mark, page_key=record.page_key)
            pending.read = record
        pending.resolved = True


@dataclass
class _Pending:
    """A capture handled, waiting for its batch to be stored: what became of it, and the
    record its page makes (being archived and read by the keeper)."""

    mark: Recovered
    where: str
    record: Ticket | None = None
    written: bool = False  # the record goes with another capture's mark (a redirect)
    resolved: bool = False  # the keeper's answer is in `read` (or `mark` says it failed)
    read: Record | None = None


def _reason(exc: FetchError) -> str:
    """Why a capture could not be fetched, without the hints meant for a scrape."""
    if exc.outcome == Outcome.HTTP_ERROR:
        return exc.reason.split("; ", 1)[0]
    return exc.reason
