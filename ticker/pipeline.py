"""Pipeline: composes the stages (pages -> readings -> store -> charts) for the CLI and
the scheduler. Time is a parameter here; only the CLI and the scheduler read the clock."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from ticker.config import PAIR_RE, Config, Source
from ticker.dumps import expand_names, read_pages
from ticker.errors import (
    ArchiveError,
    FetchError,
    InputError,
    StoreLockedError,
    TickerError,
    UsageError,
)
from ticker.models import Outcome, Page, bounded_detail, shorten
from ticker.parse import PARSER_VERSION, page_text, parse_text
from ticker.store import SUCCESS_OUTCOMES, Attempt, PageRecord, PageStager, Store, WriteCounts

if TYPE_CHECKING:
    import requests  # only the scrape section uses it, imported there when it runs

    from ticker.chart import ChartReport  # matplotlib loads only when a chart is drawn

BATCH_PAGES = 20_000  # pages per transaction; each batch lands whole or not at all
POOL_MIN_FILES = 500  # fewer files than this are read faster in this process alone
CHUNK_FILES = 250  # files per task of a backfill worker


def page_record(
    page: Page, source: Source, given_date: date | None = None, *, now: datetime
) -> PageRecord:
    """Parse one page and decide the date its quotes are stored under. A date that cannot
    be right (more than a day after the capture time, after today for a page without
    one, or a capture time that is no usable time) stores nothing: outcome bad_date."""
    content_hash = hashlib.sha1(page.body, usedforsecurity=False).hexdigest()
    reading = parse_text(page_text(page.body, page.content_type))
    problems = list(reading.problems)
    quotes = []
    for q in reading.quotes:
        if q.pair in source.pairs:
            quotes.append(q)
        elif PAIR_RE.match(q.pair):
            problems.append(f"{q.pair} is not a configured pair of {source.name}; ignored")
    captured, captured_day, bad_date = _capture_time(page, source, now)
    outcome = reading.outcome.value
    quote_date: date | None = None
    basis: str | None = None
    if reading.outcome in (Outcome.OK, Outcome.UNDATED) and quotes:
        if reading.date is not None:
            quote_date, basis = reading.date, "header"
        elif captured_day is not None:
            quote_date, basis = captured_day, "capture"
        elif given_date is not None:
            quote_date, basis = given_date, "given"
        if bad_date is None and quote_date is not None:
            bad_date = _date_too_late(quote_date, basis, captured_day, source, now)
        # Partial: a configured pair is missing and a line that could be its is unreadable
        # (one naming it, or one whose pair cannot be made out).
        missing = set(source.pairs) - {q.pair for q in quotes}
        unread = [u for u in reading.unreadable if u in missing or (u == "?" and missing)]
        if bad_date is not None:
            outcome, quote_date, basis = Outcome.BAD_DATE.value, None, None
        elif quote_date is None:
            outcome = Outcome.UNDATED.value
        elif unread:
            outcome = Outcome.PARTIAL.value
        else:
            outcome = Outcome.OK.value
    elif reading.outcome is Outcome.OK and not quotes:
        outcome = Outcome.NO_TICKER.value
        problems.append(f"no configured pair of {source.name} in the ticker")
    if bad_date is not None:
        problems.insert(0, bad_date)
    stamp = page.captured_at.isoformat() if page.captured_at else ""
    key_text = f"{source.name}\0{content_hash}\0{stamp}\0{quote_date or ''}\0{PARSER_VERSION}"
    return PageRecord(
        page_key=hashlib.sha1(key_text.encode(), usedforsecurity=False).hexdigest(),
        source=source.name,
        origin=page.origin,
        url=page.url,
        captured_at=captured,
        content_hash=content_hash,
        outcome=outcome,
        header_date=reading.date,
        quote_date=quote_date,
        date_basis=basis,
        parser_version=PARSER_VERSION,
        copies=reading.copies,
        detail=bounded_detail(problems),
        quotes=tuple(quotes) if quote_date else (),
    )


def _capture_time(
    page: Page, source: Source, now: datetime
) -> tuple[datetime | None, date | None, str | None]:
    """The page's capture time and its day in the source's time zone, or why it cannot
    be right (then neither is used)."""
    if page.capture_problem:
        return None, None, page.capture_problem
    captured = page.captured_at
    if captured is None:
        return None, None, None
    shown = captured.isoformat()[:40]
    try:
        if captured > now + timedelta(days=1):
            now_utc = now.astimezone(UTC)
            return (
                None,
                None,
                f"capture time {shown} is in the future (now: {now_utc:%Y-%m-%d %H:%M}Z)",
            )
        day = captured.astimezone(source.tz).date()
    except (OverflowError, ValueError):
        return None, None, f"capture time {shown} is out of range"
    return captured, day, None


def _date_too_late(
    day: date, basis: str | None, captured_day: date | None, source: Source, now: datetime
) -> str | None:
    """Why a page's date cannot be right: more than a day after its capture time, or
    after today (in the source's time zone) for a page without one."""
    what = "--date is" if basis == "given" else "the date line says"
    if captured_day is not None:
        if day > captured_day + timedelta(days=1):
            return (
                f"{what} {day}, more than a day after the page was captured "
                f"({captured_day}, {source.tz.key})"
            )
        return None
    today = now.astimezone(source.tz).date()
    if day > today:
        return f"{what} {day}, after today ({today}, {source.tz.key})"
    return None


def detail_line(detail: str | None) -> str:
    """A stored detail as one shortened line, for a summary or an attempt's error."""
    return shorten((detail or "").replace("\n", "; "))


@dataclass
class BackfillSummary:
    files_found: int = 0
    files_read: int = 0
    files_skipped: int = 0  # unchanged since an earlier run
    pages: int = 0
    pages_known: int = 0  # already loaded by an earlier run
    with_ticker: int = 0
    no_ticker: int = 0
    new: int = 0
    already: int = 0
    revised: int = 0
    # Each list: (origin, the reason or the page's problems on one shortened line).
    undated: list[tuple[str, str]] = field(default_factory=list)
    inconsistent: list[tuple[str, str]] = field(default_factory=list)
    partial: list[tuple[str, str]] = field(default_factory=list)
    bad_dates: list[tuple[str, str]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """1 when a file could not be read or a page has a date that cannot be right."""
        return 1 if self.unreadable or self.bad_dates else 0

    def add(self, counts: WriteCounts) -> None:
        self.new += counts.new
        self.already += counts.already
        self.revised += counts.revised
        self.pages_known += counts.pages_known

    def merge(self, part: BackfillSummary) -> None:
        """Add what a worker read (files, pages and their lists), in reading order."""
        self.files_read += part.files_read
        self.pages += part.pages
        self.with_ticker += part.with_ticker
        self.no_ticker += part.no_ticker
        self.undated += part.undated
        self.inconsistent += part.inconsistent
        self.partial += part.partial
        self.bad_dates += part.bad_dates
        self.problems += part.problems
        self.unreadable += part.unreadable


def file_key(real_path: str, st: os.stat_result, source: str, given: date | None) -> str:
    """What identifies one reading of a file: an edit, --source or --date makes a new one."""
    return f"{real_path}|{st.st_size}|{st.st_mtime_ns}|{source}|{given or ''}|{PARSER_VERSION}"


def backfill(
    config: Config,
    args: Sequence[str],
    *,
    given_date: date | None = None,
    source_name: str | None = None,
    now: datetime,
    progress: Callable[[Iterable[Any], int], Iterable[Any]] | None = None,
    workers: int | None = None,
) -> BackfillSummary:
    """Load saved pages into the store. Idempotent: unchanged files are skipped, pages
    already loaded add nothing, and each batch lands whole or not at all.

    Worker processes (`workers`, default: one per CPU for big runs) read and parse the
    files and stage the pages in CSV files; this process only writes each batch to the
    store, opening it for that write alone.
    """
    default_source = config.source(source_name)
    today = now.astimezone(default_source.tz).date()
    if given_date is not None and given_date > today:
        raise UsageError(
            f"--date {given_date} is after today ({today} in {default_source.tz.key}); "
            "give the date the pages were saved on"
        )
    summary = BackfillSummary()
    files, missing = expand_names(args)
    summary.unreadable.extend(missing)
    summary.files_found = len(files)
    done: set[str] = set()
    if files and config.store_path.exists():
        with Store.open(config.store_path, config.lock_timeout, read_only=True) as store:
            done = store.loaded_file_keys()
    if workers is None:
        workers = _cpu_count() if len(files) >= POOL_MIN_FILES else 1
    # Chunks small enough for a batch to close on time and for the workers to share the
    # last ones; big enough that a task's overhead does not count.
    size = max(1, min(CHUNK_FILES, BATCH_PAGES // 4, -(-len(files) // (workers * 4))))
    with contextlib.ExitStack() as stack:
        stage_dir = Path(stack.enter_context(_stage_dir()))
        job = _ReadJob(config.sources, default_source.name, given_date, stage_dir, now)
        if workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            # The workers start with the first chunk (fork: with all imported), and read
            # while the files after it are still being checked.
            pool = ProcessPoolExecutor(
                workers,
                mp_context=_fork_context(),
                initializer=_worker_init,
                initargs=(os.getpid(),),
            )
            # On an error or Ctrl-C, drop the chunks not started rather than read them all.
            stack.callback(pool.shutdown, wait=True, cancel_futures=True)

            def submit(first: int, names: list[tuple[str, str]]) -> Callable[[], _Chunk]:
                return pool.submit(_read_chunk, job, first, names).result

        else:

            def submit(first: int, names: list[tuple[str, str]]) -> Callable[[], _Chunk]:
                return functools.partial(_read_chunk, job, first, names)

        pending: list[Callable[[], _Chunk]] = []
        names: list[tuple[str, str]] = []
        count = 0
        for item in _files_to_read(files, done, default_source.name, given_date, summary):
            names.append(item)
            if len(names) == size:
                pending.append(submit(count, names))
                count, names = count + len(names), []
        if names:
            pending.append(submit(count, names))
            count += len(names)
        if not count:
            return summary
        results = (result() for result in pending)
        items: Iterable[_Chunk | None] = _per_file(results)
        if progress is not None:
            items = progress(items, count)
        writer = stack.enter_context(_BatchWriter(config, now, summary))
        for chunk in items:
            if chunk is not None:
                summary.merge(chunk.summary)
                writer.add(chunk)
        writer.finish()
    return summary


@dataclass(frozen=True)
class _ReadJob:
    """What a worker needs to turn files into staged pages (sent with every chunk)."""

    sources: tuple[Source, ...]
    default_source: str
    given_date: date | None
    stage_dir: Path
    now: datetime


@dataclass(frozen=True)
class _Chunk:
    """One worker task's result: its staged CSV files and its part of the summary."""

    files: int
    pages: int
    pages_csv: Path
    files_csv: Path
    summary: BackfillSummary


def _files_to_read(
    files: Sequence[str],
    done: set[str],
    source: str,
    given_date: date | None,
    summary: BackfillSummary,
) -> Iterator[tuple[str, str]]:
    """(path, file key) of each file not loaded before with the same size and mtime.
    A re-run spends its time here, so realpath (a syscall per part of the path) is taken
    once per directory."""
    parent, real = None, ""
    stat, skipped = os.stat, 0
    for name in files:
        try:
            st = stat(name)
        except OSError as exc:
            summary.unreadable.append((name, f"cannot be read: {exc.strerror}"))
            continue
        folder, _, base = name.rpartition(os.sep)
        if folder != parent:
            parent, real = folder, os.path.join(os.path.realpath(folder or os.curdir), "")
        key = file_key(real + base, st, source, given_date)
        if not key.isascii():  # stored as PageStager writes it: stray bytes escaped
            key = key.encode("utf-8", "backslashreplace").decode("utf-8")
        if key in done:
            skipped += 1
        else:
            yield name, key
    summary.files_skipped += skipped


def _read_chunk(job: _ReadJob, first_no: int, chunk: Sequence[tuple[str, str]]) -> _Chunk:
    """Read, parse and stage the pages of some files (in a worker process, or this one)."""
    by_name = {s.name: s for s in job.sources}
    default = by_name[job.default_source]
    part = BackfillSummary()
    stager = PageStager(job.stage_dir, f"{first_no:010d}")
    try:
        for file_no, (path, key) in enumerate(chunk, first_no):
            n = 0
            again = False  # read the file again next time: a page of it was not loaded
            try:
                for page in read_pages(path):
                    source = by_name.get(page.source or "", default)
                    try:
                        record = page_record(page, source, job.given_date, now=job.now)
                    except Exception as exc:  # a parser bug on one page must not stop the run
                        part.unreadable.append((page.origin, _failure("the parser", exc)))
                        again = True
                        continue
                    stager.add_page(file_no, n, record)
                    n += 1
                    _tally(part, record)
                    again = again or record.outcome == Outcome.BAD_DATE
            except InputError as exc:
                part.unreadable.append((exc.origin, shorten(exc.reason)))
            except Exception as exc:  # a reader bug on one file must not stop the run
                part.unreadable.append((path, _failure("reading it", exc)))
            else:
                if not again:
                    stager.add_file(key, path, n)
            part.files_read += 1
    finally:
        stager.close()
    return _Chunk(len(chunk), stager.pages, stager.pages_path, stager.files_path, part)


def _failure(what: str, exc: Exception) -> str:
    return shorten(
        f"{what} failed ({type(exc).__name__}: {exc}); this is a bug in ticker, please "
        "report it with the file"
    )


class _BatchWriter:
    """Writes the staged chunks to the store, BATCH_PAGES pages a transaction, in reading
    order, in a thread of its own: the store writes one batch while the workers read the
    next (DuckDB lets go of the GIL while it works)."""

    def __init__(self, config: Config, now: datetime, summary: BackfillSummary) -> None:
        from concurrent.futures import Future, ThreadPoolExecutor

        self.config, self.now, self.summary = config, now, summary
        self.batch: list[_Chunk] = []
        self.pages = 0
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="ticker-store")
        self.writing: Future[WriteCounts] | None = None

    def __enter__(self) -> _BatchWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.shutdown(wait=True, cancel_futures=True)

    def add(self, chunk: _Chunk) -> None:
        self.batch.append(chunk)
        self.pages += chunk.pages
        if self.writing is not None and self.writing.done():
            self._collect()  # a failed write stops the run here
        if self.pages >= BATCH_PAGES and self.writing is None:
            self.writing = self.thread.submit(self._write, self.batch)
            self.batch, self.pages = [], 0

    def finish(self) -> None:
        self._collect()
        if self.batch:
            self.summary.add(self._write(self.batch))

    def _collect(self) -> None:
        if self.writing is not None:
            counts = self.writing.result()
            self.writing = None
            self.summary.add(counts)

    def _write(self, batch: list[_Chunk]) -> WriteCounts:
        with Store.open(self.config.store_path, self.config.lock_timeout) as store:
            counts = store.write_staged(
                [c.pages_csv for c in batch if c.pages], [c.files_csv for c in batch], self.now
            )
        for chunk in batch:
            chunk.pages_csv.unlink(missing_ok=True)
            chunk.files_csv.unlink(missing_ok=True)
        return counts


STAGE_PREFIX = "ticker-backfill-"  # + PID: the temporary directory of a backfill's CSVs


def _stage_dir() -> tempfile.TemporaryDirectory[str]:
    """A temporary directory for the staged pages, after removing those of backfills that
    were killed (a SIGKILL leaves its directory behind; its PID tells whose it was)."""
    for path in Path(tempfile.gettempdir()).glob(f"{STAGE_PREFIX}*-*"):
        pid = path.name[len(STAGE_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"{STAGE_PREFIX}{os.getpid()}-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # not ours to signal: alive
        return True
    return True


def _per_file(chunks: Iterable[_Chunk]) -> Iterator[_Chunk | None]:
    """Each chunk, then None for each further file in it, so a progress bar counts files."""
    for chunk in chunks:
        yield chunk
        for _ in range(chunk.files - 1):
            yield None


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _fork_context() -> multiprocessing.context.BaseContext | None:
    """fork on Linux: workers start at once with everything imported. Elsewhere the
    platform's default (fork is unsafe on macOS)."""
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return None


def _worker_init(parent: int) -> None:
    """In a worker: leave Ctrl-C to the backfill process, which stops the pool; and exit
    when that process is gone (killed) instead of waiting on a queue nobody feeds."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _tally(summary: BackfillSummary, record: PageRecord) -> None:
    summary.pages += 1
    outcome = record.outcome
    if outcome == Outcome.NO_TICKER:
        summary.no_ticker += 1
    else:
        summary.with_ticker += 1
    listed = {
        Outcome.UNDATED: summary.undated,
        Outcome.INCONSISTENT: summary.inconsistent,
        Outcome.PARTIAL: summary.partial,
        Outcome.BAD_DATE: summary.bad_dates,
    }.get(Outcome(outcome), summary.problems)
    if record.detail or listed is not summary.problems:
        listed.append((record.origin, detail_line(record.detail)))


# --- charts: the daily series from the store, drawn as PNGs ----------------------------------


@dataclass(frozen=True)
class ChartRun:
    """What `render_charts` did, and the window it drew."""

    since: date | None
    until: date | None
    report: ChartReport | None  # None when the store holds no data for the source


def render_charts(
    config: Config,
    *,
    now: datetime,
    since: date | None = None,
    until: date | None = None,
    pairs: Sequence[str] | None = None,
    everything: bool = False,
    out_dir: Path | None = None,
    source_name: str | None = None,
) -> ChartRun:
    """Draw each pair and the overview for the window: the last [charts] window_days of
    data (ending at the newest date stored, or `until`), or all of it with `everything`."""
    from ticker.chart import render_charts as draw

    source = config.source(source_name)
    wanted = tuple(pairs) if pairs else source.pairs
    with Store.open(config.store_path, config.lock_timeout, read_only=True) as store:
        first, last = store.date_span(source.name)
        if first is None or last is None:
            return ChartRun(since, until, None)
        today = now.date()
        end = until or min(last, today)
        # The window never starts before the first stored day: a store younger than
        # window_days is drawn from its first day, not from an empty stretch before it.
        # (Counted in ordinals: a window reaching before 1 January of year 1 starts there.)
        window_start = date.fromordinal(max(end.toordinal() - config.charts.window_days + 1, 1))
        start = since or (first if everything or first > window_start else window_start)
        if start > end:
            began = "--since" if since else "the first stored day"
            ended = "--until" if until else ("today" if last > today else "the newest stored day")
            raise UsageError(
                f"nothing to draw: the window would start on {start} ({began}), after it "
                f"ends on {end} ({ended}); data is stored from {first} to {last}"
            )
        if end < first or start > last:
            raise UsageError(
                f"nothing to draw: no data between {start} and {end}; data is stored from "
                f"{first} to {last}"
            )
        series = store.series(source.name, wanted, start, end)
    report = draw(
        series,
        out_dir or config.charts.dir,
        display=config.charts.display,
        since=start,
        until=end,
        source_label=source.name,
    )
    return ChartRun(start, end, report)


# --- scrape: live pages (fetch -> archive -> parse -> store), every attempt recorded ---------

_log = logging.getLogger("ticker.pipeline")
PENDING_DIR = ".pending"  # under [archive] dir: attempts waiting for the database
SET_ASIDE = ".bad"  # a spool file that cannot be read is renamed to this suffix
MAX_UNKEPT = 1000  # attempts a daemon holds in memory while neither store nor spool works


@dataclass(frozen=True)
class Validators:
    """A source's conditional-GET validators and the stored page they came with: a 304
    against them means "that page", so it is taken only from a store that holds it."""

    etag: str | None
    last_modified: str | None
    page_key: str


@dataclass
class ScrapeState:
    """What the daemon keeps between jobs: the conditional-GET validators of each source,
    read from the store once, so that a job opens the database only to write; and the
    attempts that neither the database nor the pending directory could take, retried at
    the next job."""

    validators: dict[tuple[str, str], Validators] = field(default_factory=dict)
    loaded: bool = False
    unkept: list[tuple[Attempt, PageRecord | None]] = field(default_factory=list)


class _LockWait:
    """One wait for the database per job: every opening of the store in a scrape draws
    on the same [store] lock_timeout, so a job waits at most that long in all."""

    def __init__(self, seconds: float) -> None:
        self.total = seconds
        self.left = seconds

    @contextlib.contextmanager
    def open(self, config: Config, *, read_only: bool = False) -> Iterator[Store]:
        t0 = time.monotonic()
        try:
            with Store.open(config.store_path, max(self.left, 0.0), read_only=read_only) as st:
                self.left -= time.monotonic() - t0
                yield st
        except StoreLockedError as exc:  # the wait of the whole job is used up
            self.left = 0.0
            raise StoreLockedError(exc.path, self.total, exc.holder) from None


def scrape(
    config: Config,
    now: datetime,
    *,
    session: requests.Session | None = None,
    state: ScrapeState | None = None,
    stop: threading.Event | None = None,
) -> list[Attempt]:
    """Fetch every [[sources]] page once: archive it, parse it, store its quotes, and
    record the attempt (once `stop` is set, the sources not fetched yet are left). Never
    raises for a network, page or database fault: each one is an attempt's outcome. An
    attempt the database could not take (locked, full, broken) is kept under [archive]
    dir/.pending and recorded (its page stored) by the next scrape; with a `state` kept
    between jobs (the daemon's), one that cannot be written there either is held in it
    and retried at the next job. The job waits at most [store] lock_timeout for the
    database in all."""
    from ticker.fetch import make_session

    keeps = state is not None
    state = state if state is not None else ScrapeState()
    wait = _LockWait(config.lock_timeout)
    if not state.loaded:
        _load_validators(config, state, wait)
    own = session is None
    if session is None:
        session = make_session(config.http)
    t0 = time.monotonic()

    def fetch_all(
        sources: Iterable[Source], conditional: bool = True
    ) -> list[tuple[Attempt, PageRecord | None]]:
        out = []
        for source in sources:
            if stop is not None and stop.is_set():
                break
            # Capture time: the job's `now`, moved on by the time earlier sources took,
            # in whole seconds (as WARC-Date keeps it, so a re-parse matches the capture).
            elapsed = timedelta(seconds=time.monotonic() - t0)
            started = (now + elapsed).astimezone(UTC).replace(microsecond=0)
            out.append(_fetch_source(config, source, started, session, state, conditional))
        return out

    try:
        recorded, stale = _store_attempts(
            config, fetch_all(config.sources), state, now, wait, keeps
        )
        if stale:
            # 304s against validators whose page this store does not hold (it was moved
            # aside, replaced or restored): those pages are fetched whole, now.
            by_name = {s.name: s for s in config.sources}
            again = fetch_all((by_name[name] for name in stale), conditional=False)
            recorded += _store_attempts(config, again, state, now, wait, keeps)[0]
    finally:
        if own:
            session.close()
    order = {s.name: i for i, s in enumerate(config.sources)}
    return sorted(recorded, key=lambda a: order.get(a.source, len(order)))


def _load_validators(config: Config, state: ScrapeState, wait: _LockWait) -> None:
    try:
        with wait.open(config, read_only=True) as store:
            for source in config.sources:
                found = store.validators(source.name, source.url)
                if found is not None:
                    state.validators[(source.name, source.url)] = Validators(*found)
    except (TickerError, duckdb.Error) as exc:
        _log.warning("%s; fetching without a conditional GET this time", exc)
        return
    state.loaded = True


def _fetch_source(
    config: Config,
    source: Source,
    started: datetime,
    session: requests.Session,
    state: ScrapeState,
    conditional: bool = True,
) -> tuple[Attempt, PageRecord | None]:
    """Fetch, archive and parse one source's page; the attempt says how it went."""
    from ticker.archive import archive_page
    from ticker.fetch import FetchOutcome, fetch

    t0 = time.monotonic()
    known = state.validators.get((source.name, source.url)) if conditional else None
    attempt = Attempt(
        id=uuid.uuid4().hex,
        source=source.name,
        url=source.url,
        started_at=started,
        duration=0.0,
        outcome=FetchOutcome.OK.value,
    )
    try:
        got = fetch(
            session,
            source.url,
            config.http,
            etag=known.etag if known else None,
            last_modified=known.last_modified if known else None,
        )
    except FetchError as exc:
        failed = replace(
            attempt,
            duration=time.monotonic() - t0,
            outcome=str(exc.outcome),
            http_status=exc.status,
            nbytes=exc.nbytes,
            error=str(exc),
        )
        return failed, None
    attempt = replace(
        attempt,
        http_status=got.status,
        nbytes=len(got.body),
        etag=got.etag,
        last_modified=got.last_modified,
        final_url=got.final_url,
    )
    if got.not_modified and not (known and (known.etag or known.last_modified)):
        failed = replace(
            attempt,
            duration=time.monotonic() - t0,
            outcome=FetchOutcome.HTTP_ERROR.value,
            error=f"{source.url}: HTTP 304 Not Modified to a GET without validators; no page "
            "to store",
        )
        return failed, None
    if got.not_modified:
        done = replace(attempt, outcome=FetchOutcome.NOT_MODIFIED.value)
        return replace(done, duration=time.monotonic() - t0), None

    # Archive first: whatever the parser makes of the page, it can be read again later.
    archive_error = None
    try:
        path = archive_page(
            config.archive_dir,
            url=got.final_url,
            source=source.name,
            captured_at=started,
            status=got.status,
            reason=got.reason,
            http_version=got.http_version,
            headers=got.headers,
            body=got.body,
            record_id=attempt.id,
        )
        attempt = replace(attempt, archive_path=str(path))
    except ArchiveError as exc:
        archive_error = str(exc)
    kept = (
        f"the page is kept in {attempt.archive_path}; after a parser fix, "
        f"`ticker backfill {config.archive_dir}` reads it again"
        if attempt.archive_path
        else "the page could not be archived"
    )

    page = Page(
        origin=source.url,
        body=got.body,
        captured_at=started,
        url=got.final_url,
        source=source.name,
        content_type=got.content_type,
    )
    try:
        record = page_record(page, source, now=started)
    except Exception as exc:  # a parser bug must not lose the attempt or stop the daemon
        _log.debug("parser failure on %s", source.url, exc_info=True)
        failed = replace(
            attempt,
            duration=time.monotonic() - t0,
            outcome=FetchOutcome.PARSE_ERROR.value,
            error=f"{source.url}: the parser failed ({type(exc).__name__}: {exc}); {kept}",
        )
        return failed, None

    outcome, error = record.outcome, None
    if outcome == Outcome.NO_TICKER:
        error = (
            f"{source.url}: no ticker found in the page ({len(got.body)} bytes; has the "
            f"markup changed?); {kept}"
        )
        if record.detail:
            error += f" ({detail_line(record.detail)})"
    elif outcome != Outcome.OK:
        error = f"{source.url}: {outcome} page: {detail_line(record.detail)}"
    if archive_error:
        outcome = FetchOutcome.ARCHIVE_ERROR.value
        error = archive_error + (f"; also: {error}" if error else "")
    done = replace(attempt, outcome=outcome, error=error, duration=time.monotonic() - t0)
    return done, record


def _store_attempts(
    config: Config,
    fetched: Sequence[tuple[Attempt, PageRecord | None]],
    state: ScrapeState,
    now: datetime,
    wait: _LockWait,
    keeps: bool,
) -> tuple[list[Attempt], list[str]]:
    """Store each page and record its attempt, page by page, after the attempts of
    earlier jobs that are still waiting (spooled, or held in `state`). What the database
    cannot take (locked, full, broken) is spooled to the pending directory instead, or
    held in `state` when `keeps` and the spool cannot take it either.

    Returns the attempts of `fetched` (as recorded, spooled or held) and the sources
    whose 304 was not taken: this store does not hold the page their validators came
    with, so their pages are to be fetched again unconditionally."""
    earlier, state.unkept = state.unkept, []
    todo = [*earlier, *fetched]
    handled = 0  # of todo, recorded (or dropped as a stale 304)
    recorded: list[Attempt] = []
    stale: list[str] = []
    mark = time.monotonic()  # an attempt's duration includes its share of the store work
    try:
        with wait.open(config) as store:
            _flush_pending(config, store, now)
            for attempt, record in todo:
                key = (attempt.source, attempt.url)
                known = state.validators.get(key)
                if attempt.outcome == "not_modified" and (
                    known is None or not store.holds_page(known.page_key)
                ):
                    _log.info(
                        "%s: HTTP 304, but the page its validators came with is not in %s "
                        "(moved aside, replaced or restored?); fetching it whole",
                        attempt.url,
                        config.store_path,
                    )
                    state.validators.pop(key, None)
                    stale.append(attempt.source)
                    handled += 1
                    continue
                done = _record(store, attempt, record, now, mark)
                handled += 1
                mark = time.monotonic()
                if handled <= len(earlier):
                    _log.info("recorded an attempt kept from an earlier job: %s", _short(done))
                else:
                    recorded.append(done)
                if done.outcome == "ok" and done.capture_id is not None and record is not None:
                    state.validators[key] = Validators(
                        done.etag, done.last_modified, record.page_key
                    )
    except (TickerError, duckdb.Error) as exc:
        problem = _store_problem(config, exc)
        locked = isinstance(exc, StoreLockedError)
        for i, (attempt, record) in enumerate(todo[handled:], handled):
            from_earlier = i < len(earlier)
            if not from_earlier:
                attempt = replace(attempt, duration=attempt.duration + time.monotonic() - mark)
            kept = _keep(config, state, attempt, record, problem, locked, keeps, from_earlier)
            if not from_earlier:
                recorded.append(kept)
    return recorded, stale


def _record(
    store: Store, attempt: Attempt, record: PageRecord | None, now: datetime, mark: float
) -> Attempt:
    """Record one attempt, with its page when it has one: both in one transaction."""
    done: list[Attempt] = []

    def record_attempt(counts: WriteCounts | None) -> None:
        a = attempt
        if record is not None and counts is not None:
            a = _with_counts(a, record, counts)
        a = replace(a, duration=a.duration + time.monotonic() - mark)
        store.record_attempts([a], now)
        done.append(a)

    if record is not None:
        store.write_pages([record], now=now, before_commit=record_attempt)
    else:
        record_attempt(None)
    return done[0]


def _store_problem(config: Config, exc: BaseException) -> str:
    """What stopped the store, naming the database (DuckDB's own errors do not)."""
    if isinstance(exc, TickerError):
        return str(exc)
    text = " ".join(str(exc).split())
    return f"{config.store_path}: cannot write to the database: {text}"


def _keep(
    config: Config,
    state: ScrapeState,
    attempt: Attempt,
    record: PageRecord | None,
    problem: str,
    locked: bool,
    keeps: bool,
    from_earlier: bool,
) -> Attempt:
    """An attempt the database could not take: spooled to the pending directory (its
    page, if any, is in the archive), else held in `state` for the next job when the
    caller keeps it, else reported as not kept. Returns the attempt as reported."""
    pending = config.archive_dir / PENDING_DIR
    failed_outcome = "store_locked" if locked else "store_error"
    was = f"{attempt.outcome}" + (f": {attempt.error}" if attempt.error else "")
    # A page that is not in the archive lives only in `record`: the spool cannot hold it.
    page_only_here = record is not None and not attempt.archive_path
    if from_earlier:
        if not (keeps and page_only_here) and _spool(config, attempt, problem) is None:
            return attempt
        _hold(state, attempt, record)
        return attempt
    if record is not None:
        attempt = replace(attempt, outcome=failed_outcome)
    if keeps and page_only_here:
        held = replace(
            attempt,
            error=f"{problem} (the fetch itself: {was}; the page was not archived: it is "
            "held in memory and stored at the next job)",
        )
        _hold(state, held, record)
        return held
    spooled = replace(
        attempt,
        error=(
            f"{problem} (the fetch itself: {was}; "
            + (
                "the next scrape stores the page from the archive)"
                if attempt.archive_path
                else "the page was not archived either, so its quotes are lost)"
            )
        )
        if record is not None
        else attempt.error,
    )
    spool_error = _spool(config, spooled, problem)
    if spool_error is None:
        if record is None:
            return replace(
                attempt,
                error=f"{attempt.error or attempt.outcome} (not recorded yet: {problem}; "
                f"kept in {pending}, the next scrape records it)",
            )
        return spooled
    if keeps:
        held = replace(
            spooled,
            error=f"{spooled.error or spooled.outcome}; held in memory and recorded at the "
            f"next job ({pending} cannot take it: {spool_error})",
        )
        _hold(state, held, record)
        return held
    page = (
        f"its page is in {attempt.archive_path}: `ticker backfill {config.archive_dir}` stores it"
        if attempt.archive_path
        else ("its quotes are lost" if record is not None else "")
    )
    return replace(
        attempt,
        outcome=failed_outcome,
        error=f"{problem}; NOT KEPT: this attempt could not be recorded, nor kept in "
        f"{pending} ({spool_error})"
        + (f"; {page}" if page else "")
        + f" (the fetch itself: {was})",
    )


def _hold(state: ScrapeState, attempt: Attempt, record: PageRecord | None) -> None:
    state.unkept.append((attempt, record))
    if len(state.unkept) > MAX_UNKEPT:
        lost, _ = state.unkept.pop(0)
        _log.error(
            "attempt of %s at %s lost: more than %d attempts wait for the database",
            lost.source,
            lost.started_at.isoformat(),
            MAX_UNKEPT,
        )


def release_unkept(config: Config, state: ScrapeState) -> None:
    """When the daemon stops: what it held in memory goes to the pending directory (the
    attempts; a page that was not archived cannot go with them), or is reported lost."""
    for attempt, record in state.unkept:
        problem = _spool(config, attempt, "the daemon stopped while the store could not take it")
        lost = "its quotes are lost" if record is not None and not attempt.archive_path else ""
        if problem is not None:
            _log.error("attempt %s lost: %s", _short(attempt), problem)
        elif lost:
            _log.error("attempt %s kept in %s, but %s", _short(attempt), PENDING_DIR, lost)
    state.unkept = []


def _short(a: Attempt) -> str:
    return f"{a.source} {a.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%SZ} {a.outcome}"


def _with_counts(attempt: Attempt, record: PageRecord, counts: WriteCounts) -> Attempt:
    return replace(
        attempt,
        capture_id=counts.capture_ids.get(record.page_key),
        new=counts.new,
        already=counts.already,
        revised=counts.revised,
    )


def _spool(config: Config, attempt: Attempt, why: str | None = None) -> str | None:
    """Write the attempt to the pending directory, with why the store did not take it;
    the reason when that fails."""
    from ticker.archive import write_atomic

    path = config.archive_dir / PENDING_DIR / f"{attempt.id}.json"
    data: dict[str, Any] = asdict(attempt)
    data["started_at"] = attempt.started_at.isoformat()
    if why:
        data[_WHY] = why
    try:
        write_atomic(path, json.dumps(data, sort_keys=True).encode())
    except ArchiveError as exc:
        return str(exc)
    return None


def pending_attempts(config: Config) -> list[Path]:
    """Attempts spooled while the database could not take them, oldest first."""
    directory = config.archive_dir / PENDING_DIR
    if not directory.is_dir():
        return []
    return sorted(directory.glob("*.json"))


def set_aside_attempts(config: Config) -> list[Path]:
    """Spool files that could not be read and were set aside."""
    directory = config.archive_dir / PENDING_DIR
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f"*{SET_ASIDE}"))


_WHY = "not_stored_because"  # in a spool file: why the store did not take the attempt


def read_spooled(file: Path) -> tuple[Attempt, str | None]:
    """One spooled attempt and why it waits; ValueError when the file is not one (torn,
    not JSON, or values no attempt has)."""
    try:
        data = json.loads(file.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror})") from None
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError("not an attempt")
    why = data.pop(_WHY, None)
    try:
        data["started_at"] = datetime.fromisoformat(data["started_at"])
        attempt = Attempt(**data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an attempt ({type(exc).__name__}: {exc})") from None
    text = ("id", "source", "url", "outcome")
    optional_text = ("error", "etag", "last_modified", "final_url", "archive_path")
    counts = ("nbytes", "new", "already", "revised")
    optional_ints = ("http_status", "capture_id")
    values = asdict(attempt)
    ok = (
        attempt.started_at.tzinfo is not None
        and all(isinstance(values[k], str) for k in text)
        and all(values[k] is None or isinstance(values[k], str) for k in optional_text)
        and all(_small_int(values[k]) for k in counts)
        and all(values[k] is None or _small_int(values[k]) for k in optional_ints)
        and isinstance(attempt.duration, int | float)
        and 0 <= attempt.duration < 1e6
    )
    if not ok or not (why is None or isinstance(why, str)):
        raise ValueError("not an attempt (a value of the wrong kind)")
    return attempt, why


def _small_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31


def _flush_pending(config: Config, store: Store, now: datetime) -> None:
    """Record spooled attempts, storing their archived pages first, each attempt with its
    page in one transaction (a page_key already stored adds nothing, an attempt id
    already recorded is skipped: a crash mid-way repeats harmlessly).

    A fault of the store stops here and leaves every entry pending for the next scrape;
    only a file that is not a spooled attempt is set aside (renamed .bad, and reported
    by `ticker status`)."""
    by_name = {s.name: s for s in config.sources}
    for file in pending_attempts(config):
        try:
            attempt, _ = read_spooled(file)
        except ValueError as exc:
            _log.warning("%s: %s; set aside as %s", file, exc, file.with_suffix(SET_ASIDE).name)
            with contextlib.suppress(OSError):
                file.replace(file.with_suffix(SET_ASIDE))
            continue
        source = by_name.get(attempt.source)
        records: list[PageRecord] = []
        if attempt.archive_path and attempt.capture_id is None and source is not None:
            try:
                pages = list(read_pages(Path(attempt.archive_path)))
            except InputError as exc:
                _log.warning("spooled attempt %s: %s; recorded without its page", file, exc)
                pages = []
            for page in pages:
                try:
                    records.append(page_record(page, source, now=now))
                except Exception as exc:  # a parser bug: the page stays in the archive
                    _log.warning(
                        "spooled attempt %s: the parser failed on %s (%s: %s); recorded "
                        "without its page, which `ticker backfill` reads again after a fix",
                        file,
                        attempt.archive_path,
                        type(exc).__name__,
                        exc,
                    )
        if records:

            def record_attempt(
                counts: WriteCounts, attempt: Attempt = attempt, first: PageRecord = records[0]
            ) -> None:
                store.record_attempts([_with_counts(attempt, first, counts)], now)

            store.write_pages(records, now=now, before_commit=record_attempt)
        else:
            store.record_attempts([attempt], now)
        try:
            file.unlink(missing_ok=True)
        except OSError as exc:  # recorded: a replay adds nothing
            _log.warning("%s: recorded, but cannot be removed (%s)", file, exc.strerror)


def describe_attempt(a: Attempt) -> str:
    """One line: source, outcome, status, bytes, counts, duration, and the error."""
    parts = [f"HTTP {a.http_status}" if a.http_status else "no response", f"{a.nbytes} bytes"]
    if a.capture_id is not None:
        parts.append(f"{a.new} new, {a.already} already stored, {a.revised} revised")
    parts.append(f"{a.duration:.2f} s")
    line = f"{a.source} {a.outcome}: {', '.join(parts)}"
    return f"{line}; {a.error}" if a.error else line


# --- status: per source, is the data fresh and are the fetches working? ------------------


@dataclass(frozen=True)
class SourceStatus:
    source: str
    url: str
    last_attempt: datetime | None
    last_outcome: str | None
    last_status: int | None
    last_error: str | None
    last_success: datetime | None
    failures: int  # consecutive failed attempts, since the last success
    newest_date: date | None
    age: float | None  # seconds since the start of newest_date in the source's time zone
    stale: bool
    failing: bool
    # The newest observation is dated after today (with a day of slack): its age says
    # nothing, so the source is not fresh (stale is set too) until the date is put right.
    future: bool = False
    waiting: int = 0  # attempts in the pending directory, waiting to be stored
    waiting_because: str | None = None  # why the newest of them was not stored
    unstored: int = 0  # archived pages after the last recorded attempt, not in the store
    unreadable_spooled: int = 0  # spool files that cannot be read (of any source)

    @property
    def unsettled(self) -> bool:
        """Something fetched is not (yet) in the store."""
        return bool(self.waiting or self.unstored or self.unreadable_spooled)

    def as_dict(self) -> dict[str, Any]:
        def stamp(t: datetime | None) -> str | None:
            return t.isoformat().replace("+00:00", "Z") if t else None

        return {
            "source": self.source,
            "url": self.url,
            "last_attempt": stamp(self.last_attempt),
            "last_outcome": self.last_outcome,
            "last_http_status": self.last_status,
            "last_error": self.last_error,
            "last_success": stamp(self.last_success),
            "consecutive_failures": self.failures,
            "newest_date": self.newest_date.isoformat() if self.newest_date else None,
            "age_seconds": round(self.age) if self.age is not None else None,
            "stale": self.stale,
            "failing": self.failing,
            "future_date": self.future,
            "waiting_attempts": self.waiting,
            "waiting_because": self.waiting_because,
            "unstored_pages": self.unstored,
            "unreadable_spooled": self.unreadable_spooled,
        }


def status(config: Config, now: datetime) -> list[SourceStatus]:
    """Each source's health at `now`: stale when its newest observation is older than
    [status] stale_after, failing when its last attempt failed; and what was fetched but
    is not in the store: attempts waiting in the pending directory, spool files that
    cannot be read, and archived pages newer than the last recorded attempt."""
    waiting, unreadable = _spool_report(config)
    with Store.open(config.store_path, config.lock_timeout, read_only=True) as store:
        store.verify()  # a health report must not show what it could read of a damaged file
        health = [store.source_health(s.name) for s in config.sources]
        unstored = [
            _unstored_pages(config, store, s.name, _from_ms(h.last_attempt_ms), waiting)
            for s, h in zip(config.sources, health, strict=True)
        ]
    out = []
    for source, h, lost in zip(config.sources, health, unstored, strict=True):
        age, future = None, False
        if h.newest_date is not None:
            day_start = datetime.combine(h.newest_date, datetime.min.time(), tzinfo=source.tz)
            age = (now - day_start).total_seconds()
            today = now.astimezone(source.tz).date()
            future = h.newest_date > today + timedelta(days=1)
        mine = sorted(waiting.get(source.name, []), key=lambda w: w[0].started_at)
        out.append(
            SourceStatus(
                source=source.name,
                url=source.url,
                last_attempt=_from_ms(h.last_attempt_ms),
                last_outcome=h.last_outcome,
                last_status=h.last_status,
                last_error=h.last_error,
                last_success=_from_ms(h.last_success_ms),
                failures=h.failures,
                newest_date=h.newest_date,
                age=age,
                stale=age is None or age > config.stale_after or future,
                failing=h.last_outcome is not None and h.last_outcome not in SUCCESS_OUTCOMES,
                future=future,
                waiting=len(mine),
                waiting_because=mine[-1][1] if mine else None,
                unstored=lost,
                unreadable_spooled=unreadable,
            )
        )
    return out


def _spool_report(
    config: Config,
) -> tuple[dict[str, list[tuple[Attempt, str | None]]], int]:
    """The spooled attempts by source (with why each waits), and how many spool files
    cannot be read (set aside, or to be set aside by the next scrape)."""
    waiting: dict[str, list[tuple[Attempt, str | None]]] = {}
    unreadable = len(set_aside_attempts(config))
    for file in pending_attempts(config):
        try:
            attempt, why = read_spooled(file)
        except ValueError:
            unreadable += 1
            continue
        waiting.setdefault(attempt.source, []).append((attempt, why))
    return waiting, unreadable


_ARCHIVE_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _unstored_pages(
    config: Config,
    store: Store,
    source: str,
    after: datetime | None,
    waiting: dict[str, list[tuple[Attempt, str | None]]],
) -> int:
    """Archived pages of `source` captured since its last recorded attempt that neither
    wait in the pending directory nor are known to the store (the page of a recorded
    attempt, or loaded by backfill): fetched, then lost on the way (a store and a spool
    that could not take them). Cheap: only the archive's day directories from the last
    attempt's day on are listed, and only what the store has since then is read."""
    root = config.archive_dir
    first_day = f"{after.astimezone(UTC):%Y-%m-%d}" if after else ""
    last = f"{after.astimezone(UTC):%Y%m%dT%H%M%SZ}" if after else ""
    name_re = re.compile(rf"^(\d{{8}}T\d{{6}}Z)-{re.escape(source)}-[0-9a-f]{{12}}\.warc\.gz$")
    spooled = {Path(a.archive_path).name for a, _ in waiting.get(source, []) if a.archive_path}
    found: list[str] = []
    try:
        days = [d for d in os.scandir(root) if _ARCHIVE_DAY.match(d.name) and d.name >= first_day]
        for day in days:
            for entry in os.scandir(day.path):
                m = name_re.match(entry.name)
                if m and m.group(1) >= last and entry.name not in spooled:
                    found.append(entry.name)
    except OSError:
        return 0  # no archive (yet), or not readable: nothing to compare
    if not found:
        return 0
    known = store.archive_names_since(source, after)
    return sum(1 for name in found if name not in known)


def _from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)
