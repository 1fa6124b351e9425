"""The spool: attempts of live fetches that the store could not take (locked, full,
damaged) wait as JSON files in `[archive] dir/.pending/`, their pages in the archive,
until a later scrape stores them. A spool file that is not an attempt is set aside.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Collection, Iterable
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ticker import sources
from ticker.config import Config
from ticker.dumps import read_pages
from ticker.errors import ArchiveError, InputError
from ticker.models import Attempt, Record
from ticker.store import Store
from ticker.store.write import WriteCounts, record_attempts, write_records

_log = logging.getLogger("ticker.scrape")
SPOOL_DIR = ".pending"  # under [archive] dir: attempts waiting for the database
SET_ASIDE = ".bad"  # a spool file that cannot be read is renamed to this suffix


def with_counts(attempt: Attempt, record: Record, counts: WriteCounts) -> Attempt:
    """The attempt with what writing its page added (of a batch: its own part)."""
    new, already, revised = counts.per_record.get(
        record.page_key, (counts.new, counts.already, counts.revised)
    )
    return replace(
        attempt,
        capture_id=counts.capture_ids.get(record.page_key),
        new=new,
        already=already,
        revised=revised,
    )


def spool(config: Config, attempt: Attempt, why: str | None = None) -> str | None:
    """Write the attempt to the pending directory, with why the store did not take it;
    the reason when that fails."""
    from ticker.archive import write_atomic

    path = _path(config, attempt.id)
    data: dict[str, Any] = asdict(attempt)
    data["started_at"] = attempt.started_at.isoformat()
    if why:
        data[_WHY] = why
    try:
        write_atomic(path, json.dumps(data, sort_keys=True).encode())
    except ArchiveError as exc:
        return str(exc)
    return None


def spooled_attempts(config: Config) -> list[Path]:
    """Attempts spooled while the database could not take them, oldest first."""
    directory = config.archive_dir / SPOOL_DIR
    if not directory.is_dir():
        return []
    return sorted(directory.glob("*.json"))


def set_aside_attempts(config: Config) -> list[Path]:
    """Spool files that could not be read and were set aside."""
    directory = config.archive_dir / SPOOL_DIR
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
        raise ValueError(f"cannot be read ({exc.strerror})") from exc
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError("not an attempt")
    why = data.pop(_WHY, None)
    try:
        data["started_at"] = datetime.fromisoformat(data["started_at"])
        attempt = Attempt(**data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an attempt ({type(exc).__name__}: {exc})") from exc
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


def _path(config: Config, attempt_id: str) -> Path:
    return config.archive_dir / SPOOL_DIR / f"{attempt_id}.json"


def is_spooled(config: Config, attempt_id: str) -> bool:
    return _path(config, attempt_id).is_file()


def discard(config: Config, attempt_ids: Iterable[str]) -> None:
    """Remove the spool files of attempts now recorded (one left behind is recorded
    again harmlessly: an attempt id and a page already stored add nothing)."""
    for attempt_id in attempt_ids:
        try:
            _path(config, attempt_id).unlink(missing_ok=True)
        except OSError as exc:
            _log.warning("%s: recorded, but cannot be removed (%s)", attempt_id, exc.strerror)


def flush(config: Config, store: Store, now: datetime, skip: Collection[str] = ()) -> None:
    """Record spooled attempts, storing their archived pages first, each attempt with its
    page in one transaction (a page_key already stored adds nothing, an attempt id
    already recorded is skipped: a crash mid-way repeats harmlessly).

    A fault of the store stops here and leaves every entry pending for the next scrape;
    only a file that is not a spooled attempt is set aside (renamed .bad, and reported
    by `ticker status`)."""
    by_name = {s.name: s for s in (*config.sources, config.reference)}
    for file in spooled_attempts(config):
        if file.stem in skip:  # written ahead by the job that is storing it now
            continue
        try:
            attempt, _ = read_spooled(file)
        except ValueError as exc:
            _log.warning("%s: %s; set aside as %s", file, exc, file.with_suffix(SET_ASIDE).name)
            with contextlib.suppress(OSError):
                file.replace(file.with_suffix(SET_ASIDE))
            continue
        source = by_name.get(attempt.source)
        records: list[Record] = []
        if attempt.archive_path and attempt.capture_id is None and source is not None:
            try:
                pages = list(read_pages(Path(attempt.archive_path)))
            except InputError as exc:
                _log.warning("spooled attempt %s: %s; recorded without its page", file, exc)
                pages = []
            for page in pages:
                try:
                    reader = sources.reader(source.kind)
                    records.append(reader.read(page, source, now=now))
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
                counts: WriteCounts, attempt: Attempt = attempt, first: Record = records[0]
            ) -> None:
                record_attempts(store, [with_counts(attempt, first, counts)], now)

            write_records(store, records, now, before_commit=record_attempt)
        else:
            record_attempts(store, [attempt], now)
        try:
            file.unlink(missing_ok=True)
        except OSError as exc:  # recorded: a replay adds nothing
            _log.warning("%s: recorded, but cannot be removed (%s)", file, exc.strerror)
