"""Pipeline: composes the stages (pages -> readings -> store -> charts) for the CLI and
the scheduler. Time is a parameter here; only the CLI and the scheduler read the clock."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from ticker.config import PAIR_RE, Config, Source
from ticker.dumps import expand, read_pages
from ticker.errors import InputError
from ticker.models import Outcome, Page
from ticker.parse import PARSER_VERSION, page_text, parse_text
from ticker.store import PageRecord, Store, WriteCounts

BATCH_PAGES = 5000


def page_record(page: Page, source: Source, given_date: date | None = None) -> PageRecord:
    """Parse one page and decide the date its quotes are stored under."""
    content_hash = hashlib.sha1(page.body, usedforsecurity=False).hexdigest()
    reading = parse_text(page_text(page.body, page.content_type))
    problems = list(reading.problems)
    quotes = []
    for q in reading.quotes:
        if q.pair in source.pairs:
            quotes.append(q)
        elif PAIR_RE.match(q.pair):
            problems.append(f"{q.pair} is not a configured pair of {source.name}; ignored")
    outcome = reading.outcome.value
    quote_date: date | None = None
    basis: str | None = None
    if reading.outcome in (Outcome.OK, Outcome.UNDATED) and quotes:
        if reading.date is not None:
            quote_date, basis = reading.date, "header"
        elif page.captured_at is not None:
            quote_date, basis = page.captured_at.astimezone(source.tz).date(), "capture"
        elif given_date is not None:
            quote_date, basis = given_date, "given"
        outcome = Outcome.OK.value if quote_date else Outcome.UNDATED.value
    elif reading.outcome is Outcome.OK and not quotes:
        outcome = Outcome.NO_TICKER.value
        problems.append(f"no configured pair of {source.name} in the ticker")
    stamp = page.captured_at.isoformat() if page.captured_at else ""
    key_text = f"{source.name}\0{content_hash}\0{stamp}\0{quote_date or ''}\0{PARSER_VERSION}"
    return PageRecord(
        page_key=hashlib.sha1(key_text.encode(), usedforsecurity=False).hexdigest(),
        source=source.name,
        origin=page.origin,
        url=page.url,
        captured_at=page.captured_at,
        content_hash=content_hash,
        outcome=outcome,
        header_date=reading.date,
        quote_date=quote_date,
        date_basis=basis,
        parser_version=PARSER_VERSION,
        copies=reading.copies,
        detail="\n".join(problems) or None,
        quotes=tuple(quotes) if quote_date else (),
    )


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
    undated: list[str] = field(default_factory=list)
    inconsistent: list[tuple[str, str]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.unreadable else 0

    def add(self, counts: WriteCounts) -> None:
        self.new += counts.new
        self.already += counts.already
        self.revised += counts.revised
        self.pages_known += counts.pages_known


def file_key(path: Path, st: os.stat_result, source: str, given: date | None) -> str:
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{source}|{given or ''}|{PARSER_VERSION}"


def backfill(
    config: Config,
    args: Sequence[str],
    *,
    given_date: date | None = None,
    source_name: str | None = None,
    now: datetime,
    progress: Callable[[Iterable[Path], int], Iterable[Path]] | None = None,
) -> BackfillSummary:
    """Load saved pages into the store. Idempotent: unchanged files are skipped, pages
    already loaded add nothing, and each batch lands whole or not at all."""
    default_source = config.source(source_name)
    by_name = {s.name: s for s in config.sources}
    summary = BackfillSummary()
    files, missing = expand(args)
    summary.unreadable.extend(missing)
    summary.files_found = len(files)
    with Store.open(config.store_path, config.lock_timeout, read_only=True) as store:
        done = store.loaded_file_keys() if files else set()

    todo: list[tuple[Path, str]] = []
    for path in files:
        try:
            st = path.stat()
        except OSError as exc:
            summary.unreadable.append((str(path), f"cannot be read: {exc.strerror}"))
            continue
        key = file_key(path, st, default_source.name, given_date)
        if key in done:
            summary.files_skipped += 1
        else:
            todo.append((path, key))

    batch: list[PageRecord] = []
    batch_files: list[tuple[str, str, int]] = []

    def flush() -> None:
        if batch or batch_files:
            with Store.open(config.store_path, config.lock_timeout) as store:
                summary.add(store.write_pages(batch, batch_files, now=now))
            batch.clear()
            batch_files.clear()

    paths: Iterable[Path] = (p for p, _ in todo)
    keys = dict(todo)
    if progress is not None:
        paths = progress(paths, len(todo))
    for path in paths:
        n = 0
        try:
            for page in read_pages(path):
                source = by_name.get(page.source or "", default_source)
                record = page_record(page, source, given_date)
                n += 1
                _tally(summary, record)
                batch.append(record)
                if len(batch) >= BATCH_PAGES:
                    flush()
        except InputError as exc:
            summary.unreadable.append((exc.origin, exc.reason))
        else:
            batch_files.append((keys[path], str(path), n))
        summary.files_read += 1
    flush()
    return summary


def _tally(summary: BackfillSummary, record: PageRecord) -> None:
    summary.pages += 1
    outcome = record.outcome
    if outcome == Outcome.NO_TICKER:
        summary.no_ticker += 1
    else:
        summary.with_ticker += 1
    if outcome == Outcome.UNDATED:
        summary.undated.append(record.origin)
    elif outcome == Outcome.INCONSISTENT:
        summary.inconsistent.append((record.origin, record.detail or ""))
    elif record.detail:
        summary.problems.append((record.origin, record.detail.replace("\n", "; ")))
