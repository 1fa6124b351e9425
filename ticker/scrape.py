"""Scrape job: live pages of every source (fetch -> archive -> read -> store), every
attempt recorded. Nothing fetched is lost: an attempt the store cannot take waits in the
spool (ticker.spool) or, in the daemon, in memory until it is stored."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import duckdb

from ticker import sources, spool
from ticker.config import Config, Source
from ticker.errors import ArchiveError, FetchError, StoreLockedError, TickerError
from ticker.models import Attempt, Outcome, Page, Record, detail_line
from ticker.store import Store, read
from ticker.store.write import WriteCounts, record_attempts, write_records

if TYPE_CHECKING:
    import requests  # imported where a fetch runs

_log = logging.getLogger("ticker.scrape")
# Why an attempt written ahead waits in the spool, should its job not get to store it.
AHEAD = "the scrape storing it did not finish (it was stopped or killed first)"
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
    unkept: list[tuple[Attempt, Record | None]] = field(default_factory=list)


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
            raise StoreLockedError(exc.path, self.total, exc.holder) from exc


def scrape(
    config: Config,
    now: datetime,
    *,
    session: requests.Session | None = None,
    state: ScrapeState | None = None,
    stop: threading.Event | None = None,
    sources: Sequence[Source] | None = None,
    conditional: bool = True,
    give_up: Callable[[Attempt], bool] | None = None,
) -> list[Attempt]:
    """Fetch every [[sources]] page once (or each of `sources`, in order: the official
    rates' requests): archive it, read it, store its quotes, and record the attempt
    (once `stop` is set, the sources not fetched yet are left). The pages of one job
    are stored together, in one transaction with their attempts. Never raises for a
    network, page or database fault: each one is an attempt's outcome. An
    attempt the database could not take (locked, full, broken) is kept under [archive]
    dir/.pending and recorded (its page stored) by the next scrape; with a `state` kept
    between jobs (the daemon's), one that cannot be written there either is held in it
    and retried at the next job. The job waits at most [store] lock_timeout for the
    database in all. Without `conditional`, no request is a conditional GET (requests
    whose URLs change from run to run, which no validator fits). Once `give_up` says so
    of an attempt, the sources after it are not fetched (a server that is down)."""
    from ticker.fetch import make_session

    t0 = time.monotonic()  # `now` is this moment: capture times count from it
    keeps = state is not None
    state = state if state is not None else ScrapeState()
    wait = _LockWait(config.lock_timeout)
    todo = tuple(config.sources if sources is None else sources)
    if conditional and not state.loaded:
        _load_validators(config, todo, state, wait)  # may wait for a locked store
    own = session is None
    if session is None:
        session = make_session(config.http)

    def fetch_all(
        sources: Iterable[Source], conditional: bool = True
    ) -> list[tuple[Attempt, Record | None]]:
        out = []
        for source in sources:
            if stop is not None and stop.is_set():
                break
            # Capture time: the job's `now`, moved on by the time the job has taken so
            # far (a wait for the store, earlier sources), in whole seconds (as WARC-Date
            # keeps it, so a re-parse matches the capture).
            elapsed = timedelta(seconds=time.monotonic() - t0)
            started = (now + elapsed).astimezone(UTC).replace(microsecond=0)
            out.append(_fetch_source(config, source, started, session, state, conditional))
            if give_up is not None and give_up(out[-1][0]):
                break
        return out

    try:
        fetched = fetch_all(todo, conditional)
        recorded, stale = _store_attempts(config, fetched, state, now, wait, keeps)
        if stale:
            # 304s against validators whose page this store does not hold (it was moved
            # aside, replaced or restored): those pages are fetched whole, now.
            by_key = {(s.name, s.url): s for s in todo}
            again = fetch_all((by_key[key] for key in stale), conditional=False)
            recorded += _store_attempts(config, again, state, now, wait, keeps)[0]
    finally:
        if own:
            session.close()
    order = {(s.name, s.url): i for i, s in enumerate(todo)}
    return sorted(recorded, key=lambda a: order.get((a.source, a.url), len(order)))


def _load_validators(
    config: Config, sources: Sequence[Source], state: ScrapeState, wait: _LockWait
) -> None:
    try:
        with wait.open(config, read_only=True) as store:
            for source in sources:
                found = read.validators(store, source.name, source.url)
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
) -> tuple[Attempt, Record | None]:
    """Fetch, archive and parse one source's page; the attempt says how it went."""
    from ticker.archive import archive_page
    from ticker.fetch import fetch

    t0 = time.monotonic()
    reader = sources.reader(source.kind)
    known = state.validators.get((source.name, source.url)) if conditional else None
    attempt = Attempt(
        id=uuid.uuid4().hex,
        source=source.name,
        url=source.url,
        started_at=started,
        duration=0.0,
        outcome=Outcome.OK.value,
    )
    try:
        got = fetch(
            session,
            source.url,
            config.http,
            etag=known.etag if known else None,
            last_modified=known.last_modified if known else None,
            media_types=reader.media_types,
            url_key=source.url_key,
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
            outcome=Outcome.HTTP_ERROR.value,
            error=f"{source.url}: HTTP 304 Not Modified to a GET without validators; no page "
            "to store",
        )
        return failed, None
    if got.not_modified:
        done = replace(attempt, outcome=Outcome.NOT_MODIFIED.value)
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
        f"the {reader.noun} is kept in {attempt.archive_path}; after a parser fix, "
        f"`ticker backfill {config.archive_dir}` reads it again"
        if attempt.archive_path
        else f"the {reader.noun} could not be archived"
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
        record = reader.read(page, source, now=started)
    except Exception as exc:  # a parser bug must not lose the attempt or stop the daemon
        _log.debug("parser failure on %s", source.url, exc_info=True)
        failed = replace(
            attempt,
            duration=time.monotonic() - t0,
            outcome=Outcome.PARSE_ERROR.value,
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
    elif outcome == Outcome.BAD_RESPONSE:
        error = f"{source.url}: {detail_line(record.detail)}; {kept}"
    elif outcome != Outcome.OK:
        error = f"{source.url}: {outcome} {reader.noun}: {detail_line(record.detail)}"
    if archive_error:
        outcome = Outcome.ARCHIVE_ERROR.value
        error = archive_error + (f"; also: {error}" if error else "")
    done = replace(attempt, outcome=outcome, error=error, duration=time.monotonic() - t0)
    return done, record


def _store_attempts(
    config: Config,
    fetched: Sequence[tuple[Attempt, Record | None]],
    state: ScrapeState,
    now: datetime,
    wait: _LockWait,
    keeps: bool,
) -> tuple[list[Attempt], list[tuple[str, str]]]:
    """Store the pages and record their attempts, after the attempts of earlier jobs
    that are still waiting (spooled, or held in `state`): all in one transaction. What
    the database cannot take (locked, full, broken) is spooled to the pending directory
    instead, or held in `state` when `keeps` and the spool cannot take it either.

    Returns the attempts of `fetched` (as recorded, spooled or held) and the sources
    (name, URL) whose 304 was not taken: this store does not hold the page their
    validators came with, so their pages are to be fetched again unconditionally."""
    earlier, state.unkept = state.unkept, []
    todo = [*earlier, *fetched]
    handled: set[int] = set()  # of todo, recorded (or dropped as a stale 304)
    recorded: list[Attempt] = []
    stale: list[tuple[str, str]] = []
    # Written ahead: the attempt of an archived page waits in the spool while the job
    # stores it, so a job killed meanwhile (say while it waits for a locked store) loses
    # nothing: the next scrape stores the page from the archive.
    ahead = {
        a.id
        for a, record in fetched
        if record is not None and a.archive_path and spool.spool(config, a, AHEAD) is None
    }
    mark = time.monotonic()  # an attempt's duration includes the store work
    try:
        with wait.open(config) as store:
            spool.flush(config, store, now, skip=ahead)
            batch: list[int] = []
            for i, (attempt, _record) in enumerate(todo):
                key = (attempt.source, attempt.url)
                known = state.validators.get(key)
                if attempt.outcome == "not_modified" and (
                    known is None or not read.holds_page(store, known.page_key)
                ):
                    _log.info(
                        "%s: HTTP 304, but the page its validators came with is not in %s "
                        "(moved aside, replaced or restored?); fetching it whole",
                        attempt.url,
                        config.store_path,
                    )
                    state.validators.pop(key, None)
                    stale.append(key)
                    handled.add(i)
                    continue
                batch.append(i)
            done = _record_all(store, [todo[i] for i in batch], now, mark)
            handled.update(batch)
            for i, attempt in zip(batch, done, strict=True):
                record = todo[i][1]
                if i < len(earlier):
                    _log.info("recorded an attempt kept from an earlier job: %s", _short(attempt))
                else:
                    recorded.append(attempt)
                if attempt.outcome == "ok" and attempt.capture_id is not None and record:
                    state.validators[(attempt.source, attempt.url)] = Validators(
                        attempt.etag, attempt.last_modified, record.page_key
                    )
        spool.discard(config, ahead)  # stored: what was written ahead is done with
    except (TickerError, duckdb.Error) as exc:
        problem = _store_problem(config, exc)
        locked = isinstance(exc, StoreLockedError)
        for i, (attempt, record) in enumerate(todo):
            if i in handled:
                continue
            from_earlier = i < len(earlier)
            if not from_earlier:
                attempt = replace(attempt, duration=attempt.duration + time.monotonic() - mark)
            kept = _keep(config, state, attempt, record, problem, locked, keeps, from_earlier)
            if not from_earlier:
                recorded.append(kept)
    return recorded, stale


def _record_all(
    store: Store, items: Sequence[tuple[Attempt, Record | None]], now: datetime, mark: float
) -> list[Attempt]:
    """Record the attempts, with their pages: all in one transaction, each attempt with
    what its own page added (as if the pages were written one by one, in order)."""
    done: list[Attempt] = []
    records = [record for _, record in items if record is not None]

    def record_all(counts: WriteCounts | None) -> None:
        out = []
        for attempt, record in items:
            if record is not None and counts is not None:
                attempt = spool.with_counts(attempt, record, counts)
            out.append(replace(attempt, duration=attempt.duration + time.monotonic() - mark))
        record_attempts(store, out, now)
        done.extend(out)

    if records:
        write_records(store, records, now, before_commit=record_all)
    else:
        record_all(None)
    return done


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
    record: Record | None,
    problem: str,
    locked: bool,
    keeps: bool,
    from_earlier: bool,
) -> Attempt:
    """An attempt the database could not take: spooled to the pending directory (its
    page, if any, is in the archive), else held in `state` for the next job when the
    caller keeps it, else reported as not kept. Returns the attempt as reported."""
    pending = config.archive_dir / spool.SPOOL_DIR
    failed_outcome = "store_locked" if locked else "store_error"
    was = f"{attempt.outcome}" + (f": {attempt.error}" if attempt.error else "")
    # A page that is not in the archive lives only in `record`: the spool cannot hold it.
    page_only_here = record is not None and not attempt.archive_path
    if from_earlier:
        if not (keeps and page_only_here) and spool.spool(config, attempt, problem) is None:
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
    spool_error = spool.spool(config, spooled, problem)
    if spool_error is not None and spool.is_spooled(config, attempt.id):
        spool_error = None  # written ahead before the store was tried: it waits there
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


def _hold(state: ScrapeState, attempt: Attempt, record: Record | None) -> None:
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
        problem = spool.spool(
            config, attempt, "the daemon stopped while the store could not take it"
        )
        lost = "its quotes are lost" if record is not None and not attempt.archive_path else ""
        if problem is not None:
            _log.error("attempt %s lost: %s", _short(attempt), problem)
        elif lost:
            _log.error("attempt %s kept in %s, but %s", _short(attempt), spool.SPOOL_DIR, lost)
    state.unkept = []


def _short(a: Attempt) -> str:
    return f"{a.source} {a.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%SZ} {a.outcome}"


def describe_attempt(a: Attempt) -> str:
    """One line: source, outcome, status, bytes, counts, duration, and the error."""
    parts = [f"HTTP {a.http_status}" if a.http_status else "no response", f"{a.nbytes} bytes"]
    if a.capture_id is not None:
        parts.append(f"{a.new} new, {a.already} already stored, {a.revised} revised")
    parts.append(f"{a.duration:.2f} s")
    line = f"{a.source} {a.outcome}: {', '.join(parts)}"
    return f"{line}; {a.error}" if a.error else line
