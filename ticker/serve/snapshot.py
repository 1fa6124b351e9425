"""What the server answers from: a snapshot of the store read into memory by one brief
read-only open, taken again when the database file changes (and at least every minute,
for the ages `status` reports). Requests never open the file, so they never wait on it;
the open never waits for a lock either (a writer holding it is left alone, and the last
snapshot is served until the next try). A DuckDB file can be open in one process at a
time; a writer that meets the server's open waits only for that open to end."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ticker import check, status
from ticker.config import Config
from ticker.errors import StoreLockedError, TickerError
from ticker.models import Day
from ticker.serve.data import Series
from ticker.store import Store, read

log = logging.getLogger("ticker.serve")

POLL_SECONDS = 0.5  # how often the file's size and time are looked at
MIN_INTERVAL = 1.0  # at most one open a second, however often the file changes
RETRY_LOCKED = 0.2  # the next try after a writer was met: writers hold it briefly
WARN_AFTER = 30.0  # a store unreadable this long is logged as a warning
MAX_AGE = 60.0  # read again after this long even when the file has not changed
DURATION_BOUNDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0)

Signature = tuple[tuple[int, int, int] | None, tuple[int, int, int] | None]


def signature(db: Path) -> Signature:
    """The database file's and its write-ahead log's (inode, size, mtime): what changes
    when anything is written."""

    def one(path: Path) -> tuple[int, int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    return (one(db), one(db.with_name(db.name + ".wal")))


@dataclass(frozen=True)
class Snapshot:
    """The store as read at `read_at`."""

    number: int  # counts the reads, for caches keyed by snapshot
    read_at: datetime
    signature: Signature
    days: tuple[Day, ...]
    series: Series
    facts: status.Facts
    checked: check.Snapshot  # what `ticker check` reads (the report is made on demand)
    durations: tuple[read.DurationHistogram, ...]
    held: float  # seconds the database was open for this read
    etag: str  # changes when the daily series does

    @property
    def changed_at(self) -> datetime:
        """When the database (or its write-ahead log) was last written, as read."""
        stamps = [part[2] for part in self.signature if part is not None]
        if not stamps:
            return self.read_at
        return datetime.fromtimestamp(max(stamps) / 1e9, UTC)


@dataclass
class LoaderState:
    """How reading the store goes: the last error (None once a read succeeds again)."""

    error: str | None = None
    error_since: datetime | None = None
    warned: bool = False
    reads: dict[str, int] = field(default_factory=lambda: {"ok": 0, "locked": 0, "failed": 0})


class Loader:
    """Keeps `current` up to date from a thread of its own."""

    def __init__(self, config: Config, clock: Callable[[], datetime]) -> None:
        self.config = config
        self.clock = clock
        self.current: Snapshot | None = None
        self.state = LoaderState()
        self._last_try = -1e9
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one read at a time

    def start(self) -> None:
        self.poll()  # the first read before the first request, when the file is free
        self._thread = threading.Thread(target=self._run, name="ticker-serve-store", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.poll()
            except Exception:  # the server outlives any one read, bugs included
                log.exception("reading the store failed")

    def poll(self) -> bool:
        """Read the store when it changed or the snapshot is old; True when it was read."""
        with self._lock:
            sig = signature(self.config.store_path)
            current = self.current
            due = (
                current is None
                or sig != current.signature
                or (self.clock() - current.read_at).total_seconds() >= MAX_AGE
            )
            wait = RETRY_LOCKED if self.state.error else MIN_INTERVAL
            if not due or time.monotonic() - self._last_try < wait:
                return False
            self._last_try = time.monotonic()
            return self._read(sig)

    def _read(self, sig: Signature) -> bool:
        config = self.config
        now = self.clock()
        spooled = status.spool_report(config)  # files only: before the database is opened
        started = time.monotonic()
        try:
            with Store.open(config.store_path, 0, read_only=True, upgrade=False) as store:
                # one thread: these queries are small, and the cores are the daemon's
                store.con.execute("SET threads = 1")
                days = read.daily(store)
                facts = status.gather(config, store, spooled)
                after = now.astimezone(UTC).date() - timedelta(days=1)
                checked = check.snapshot(store, after=after, days=days)
                durations = read.attempt_durations(store, DURATION_BOUNDS)
            held = time.monotonic() - started
        except StoreLockedError as exc:
            self.state.reads["locked"] += 1
            holder = exc.holder or "another process"
            self._failed(now, f"the database is in use by {holder}")
            return False
        except TickerError as exc:
            self.state.reads["failed"] += 1
            self._failed(now, str(exc))
            return False
        previous = self.current
        etag = f"{hash(tuple(days)) & 0xFFFFFFFFFFFFFFFF:016x}"
        if previous is not None and previous.etag == etag:
            # Only attempts changed (a scrape that found nothing new): the series, its
            # routes and the answers made from them stay as they are.
            series, kept = previous.series, previous.days
        else:
            series, kept = Series(days), tuple(days)
        snap = Snapshot(
            number=(previous.number + 1) if previous else 1,
            read_at=now,
            signature=sig,
            days=kept,
            series=series,
            facts=facts,
            checked=checked,
            durations=tuple(durations),
            held=held,
            etag=etag,
        )
        self.current = snap
        self.state.reads["ok"] += 1
        if self.state.warned:
            log.info("the store can be read again (%s)", config.store_path)
        self.state.error = None
        self.state.error_since = None
        self.state.warned = False
        log.debug("read the store in %.3f s (%d days)", held, len(days))
        return True

    def _failed(self, now: datetime, why: str) -> None:
        """Note why the store could not be read; a writer holding it for a moment is
        normal, so only a store unreadable for WARN_AFTER seconds is a warning."""
        log.debug("cannot read %s: %s", self.config.store_path, why)
        state = self.state
        if state.error_since is None:
            state.error_since = now
        state.error = why
        if not state.warned and (now - state.error_since).total_seconds() >= WARN_AFTER:
            shown = (
                f"the data read at {self.current.read_at:%H:%M:%SZ}" if self.current else "nothing"
            )
            log.warning(
                "cannot read %s since %s: %s; serving %s",
                self.config.store_path,
                f"{state.error_since:%H:%M:%SZ}",
                why,
                shown,
            )
            state.warned = True
