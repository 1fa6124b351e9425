"""The keeper of `ticker recover`: a process of its own that writes each capture to the
page archive and reads it with the source's reader, on one core while the recovery
fetches on another (as backfill's workers do). Its files are made durable together,
once a batch, by the recovery before the batch is stored (one syncfs instead of three
fsyncs a file).

It is started fresh (spawn), so it inherits no open file of the recovery (no connection
to the archive outlives its closing there) and no lock held by one of its threads; this
module imports only what the keeper needs, so it starts quickly.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from ticker import sources
from ticker.archive import archive_page
from ticker.config import Source
from ticker.errors import ArchiveError
from ticker.models import Page, Record, shorten

KEEPER_START = 60.0  # seconds the keeper may take to start (a loaded machine)
_READY = "ready"


class ParseFailed(Exception):
    """The reader failed on a page (a bug): its capture is marked failed, the run goes on."""


def _keep(
    page: Page,
    write: dict[str, Any] | None,
    directory: Path,
    source: Source,
    now: datetime,
    reader: Any,
) -> Record:
    """Archive one capture (unless it is there already: `write` is None) and read it. A
    parser failure is ParseFailed; an archive that cannot be written, ArchiveError."""
    if write is not None:
        archive_page(directory, **write)
    try:
        record: Record = reader.read(page, source, now=now)
        return record
    except Exception as exc:
        raise ParseFailed(shorten(f"{type(exc).__name__}: {exc}")) from exc


class Ticket:
    """A capture handed to the keeper; `result` waits for its record (asked again, for a
    capture served in place of another, it gives the same record or error)."""

    def __init__(self, keeper: Keeper, seq: int) -> None:
        self.keeper, self.seq = keeper, seq
        self.record: Record | None = None
        self.error: ArchiveError | ParseFailed | None = None

    def result(self) -> Record:
        if self.record is None and self.error is None:
            try:
                self.record = self.keeper.result(self.seq)
            except (ArchiveError, ParseFailed) as exc:
                self.error = exc
        if self.error is not None:
            raise self.error
        assert self.record is not None
        return self.record


class Keeper:
    """The keeper process, started fresh (spawn: it inherits no open file of this one, so
    no connection to the archive outlives its closing here, and no lock held by one of
    this process's threads): each capture goes to it through one pipe, its record comes
    back through another, read as they come between fetches (the keeper's reading of new
    captures never waits on this process). It ignores SIGINT and SIGTERM (this process
    stops it, after storing what it kept) and ends when this process does (its pipe
    closes), however this process ends. `reader` reads the captures (pickled to it)."""

    def __init__(self, directory: Path, source: Source, now: datetime, reader: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        jobs_in, self.jobs = ctx.Pipe(duplex=False)
        self.results, results_out = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(
            target=_keeper_main,
            args=(jobs_in, results_out, directory, source, now, reader),
            name="ticker-recover-keeper",
            daemon=True,
        )
        with _stop_signals_ignored():  # inherited: a Ctrl-C while it starts is this one's
            self.proc.start()
        jobs_in.close()
        results_out.close()
        # Ready before the first fetch: a capture fetched is archived at once (a run
        # killed then fetches nothing again), not after the keeper's imports.
        if not self.results.poll(KEEPER_START) or self.results.recv() != _READY:
            self.close()
            raise RuntimeError(f"the keeper process did not start within {KEEPER_START:g} s")
        self.done: dict[int, tuple[Record | None, BaseException | None]] = {}
        self.seq = 0

    def submit(self, page: Page, write: dict[str, Any] | None) -> Ticket:
        """Hand over one capture (`write`: archive_page's arguments, None when it is in
        the archive already)."""
        self.seq += 1
        self.jobs.send((self.seq, page, write))
        # What has come back, without waiting: the keeper waits while its pipe is full.
        while self.results.poll():
            self._receive()
        return Ticket(self, self.seq)

    def _receive(self) -> None:
        try:
            seq, record, error = self.results.recv()
        except (EOFError, OSError) as exc:
            raise RuntimeError("the keeper process ended early") from exc
        self.done[seq] = (record, error)

    def result(self, seq: int) -> Record:
        while seq not in self.done:
            self._receive()
        record, error = self.done.pop(seq)
        if error is not None:
            raise error
        assert record is not None
        return record

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.jobs.send(None)
        with contextlib.suppress(OSError, EOFError):
            while True:  # what it still sends, until it has ended
                self.results.recv()
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.jobs.close()
        self.results.close()


def _keeper_main(
    jobs: Any, results: Any, directory: Path, source: Source, now: datetime, reader: Any
) -> None:
    """The keeper process: archive and read each capture as it comes, and send its record
    back; end when the pipe of jobs ends."""
    code = 0
    alone = False  # the parent has ended: what it sent is still archived
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        results.send(_READY)
        while True:
            try:
                job = jobs.recv()
            except EOFError:
                break
            if job is None:
                break
            seq, page, write = job
            out: tuple[int, Record | None, BaseException | None]
            try:
                out = (seq, _keep(page, write, directory, source, now, reader), None)
            except (ArchiveError, ParseFailed) as exc:
                out = (seq, None, exc)
            if not alone:
                try:
                    results.send(out)
                except OSError:  # killed (SIGKILL): its next run reads these back
                    alone = True
    except BaseException:  # noqa: B036 - whatever it is, the parent hears of it by EOF
        code = 1
    finally:
        os._exit(code)


@contextlib.contextmanager
def _stop_signals_ignored() -> Iterator[None]:
    """SIGINT and SIGTERM ignored meanwhile, in the main thread (elsewhere, as they are)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def keeper(directory: Path, source: Source, now: datetime, reader: Any = None) -> Keeper:
    """The keeper of a recovery; `reader` reads the captures (by default the source
    kind's, with its cache)."""
    return Keeper(directory, source, now, reader or sources.reader(source.kind, cache=True))
