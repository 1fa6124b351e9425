"""Backfill job: saved pages (files, directories, globs) into the store.

Worker processes read the files, parse their pages (each with a reader of its source's
kind) and stage the records as CSV; this process writes each batch through the store's
one write path, in a thread of its own, opening the store for that write alone.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from ticker import sources
from ticker.config import Config, Source
from ticker.dumps import expand_names, read_pages
from ticker.errors import InputError, UsageError
from ticker.models import Outcome, PageTally, Record, detail_line, shorten
from ticker.sources.base import Reader
from ticker.store import Store, read, write
from ticker.store.write import Stager, WriteCounts

BATCH_PAGES = 20_000  # pages per transaction; each batch lands whole or not at all
POOL_MIN_FILES = 500  # fewer files than this are read faster in this process alone
CHUNK_FILES = 250  # files per task of a backfill worker


@dataclass
class BackfillSummary(PageTally):
    files_found: int = 0
    files_read: int = 0
    files_skipped: int = 0  # unchanged since an earlier run
    pages: int = 0
    pages_known: int = 0  # already loaded by an earlier run
    new: int = 0
    already: int = 0
    revised: int = 0
    # Each list: (origin, the reason or the page's problems on one shortened line).
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


def file_key(
    real_path: str, st: os.stat_result, source: str, given: date | None, version: int
) -> str:
    """What identifies one reading of a file: an edit, --source, --date or a new version
    of the reader makes a new one."""
    return f"{real_path}|{st.st_size}|{st.st_mtime_ns}|{source}|{given or ''}|{version}"


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
    if files and Store.exists(config.store_path):
        with Store.open(config.store_path, config.lock_timeout, read_only=True) as store:
            done = read.loaded_file_keys(store)
    if workers is None:
        workers = _cpu_count() if len(files) >= POOL_MIN_FILES else 1
    # Chunks small enough for a batch to close on time and for the workers to share the
    # last ones; big enough that a task's overhead does not count.
    size = max(1, min(CHUNK_FILES, BATCH_PAGES // 4, -(-len(files) // (workers * 4))))
    readers: dict[str, Reader] = {}  # this process's, when it reads the files itself
    with contextlib.ExitStack() as stack:
        stage_dir = Path(stack.enter_context(_stage_dir()))
        # Pages of every source, the official rates' responses in the archive too.
        known = (*config.sources, config.reference)
        job = _ReadJob(known, default_source.name, given_date, stage_dir, now)
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
                return pool.submit(_read_chunk, job, first, names, None).result

        else:

            def submit(first: int, names: list[tuple[str, str]]) -> Callable[[], _Chunk]:
                return functools.partial(_read_chunk, job, first, names, readers)

        pending: list[Callable[[], _Chunk]] = []
        names: list[tuple[str, str]] = []
        count = 0
        version = sources.reader(default_source.kind).version
        for item in _files_to_read(files, done, default_source.name, given_date, version, summary):
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
    version: int,
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
        key = file_key(real + base, st, source, given_date, version)
        if not key.isascii():  # stored as Stager writes it: stray bytes escaped
            key = key.encode("utf-8", "backslashreplace").decode("utf-8")
        if key in done:
            skipped += 1
        else:
            yield name, key
    summary.files_skipped += skipped


def _read_chunk(
    job: _ReadJob,
    first_no: int,
    chunk: Sequence[tuple[str, str]],
    readers: dict[str, Reader] | None,
) -> _Chunk:
    """Read, parse and stage the pages of some files, with `readers` (by kind), or in a
    worker process those the worker keeps for the whole run."""
    if readers is None:
        readers = _WORKER_READERS
    by_name = {s.name: s for s in job.sources}
    default = by_name[job.default_source]
    part = BackfillSummary()
    stager = Stager(job.stage_dir, f"{first_no:010d}")
    try:
        for file_no, (path, key) in enumerate(chunk, first_no):
            n = 0
            again = False  # read the file again next time: a page of it was not loaded
            try:
                for page in read_pages(path):
                    source = by_name.get(page.source or "", default)
                    try:
                        reader = readers.get(source.kind) or readers.setdefault(
                            source.kind, sources.reader(source.kind, cache=True)
                        )
                        record = reader.read(page, source, now=job.now, given_date=job.given_date)
                    except Exception as exc:  # a parser bug on one page must not stop the run
                        part.unreadable.append((page.origin, _failure("the parser", exc)))
                        again = True
                        continue
                    stager.add(file_no, n, record)
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
            counts = write.write(
                store,
                [c.pages_csv for c in batch if c.pages],
                [c.files_csv for c in batch],
                self.now,
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


# In a worker process: its readers (by kind), kept from one chunk to the next so their
# caches serve the whole run.
_WORKER_READERS: dict[str, Reader] = {}


def _worker_init(parent: int) -> None:
    """In a worker: leave Ctrl-C to the backfill process, which stops the pool; and exit
    when that process is gone (killed) instead of waiting on a queue nobody feeds."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_READERS.clear()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _tally(summary: BackfillSummary, record: Record) -> None:
    summary.pages += 1
    if not summary.tally(record) and record.detail:
        summary.problems.append((record.origin, detail_line(record.detail)))
