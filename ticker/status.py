"""Status job: per source, is the data fresh, are the fetches working, and is anything
fetched not (yet) in the store."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from ticker import spool
from ticker.config import REFERENCE, REFERENCE_SLACK, Config, Source
from ticker.models import SUCCESS_OUTCOMES, Attempt
from ticker.store import Store, read


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


@dataclass(frozen=True)
class Facts:
    """What a status report is made of, read once: each configured source's attempts and
    newest observation, archived pages the store does not know, and the spooled attempts.
    `assess` turns them into a report at any `now`."""

    sources: tuple[Source, ...]  # the configured ones, and the official rates once asked for
    health: tuple[read.SourceHealth, ...]
    unstored: tuple[int, ...]
    waiting: Mapping[str, Sequence[tuple[Attempt, str | None]]]
    unreadable: int


def has_store(config: Config) -> bool:
    """Whether the database exists yet (the commands that only read it never make it)."""
    return Store.exists(config.store_path)


def status(config: Config, now: datetime) -> list[SourceStatus]:
    """Each source's health at `now`: stale when its newest observation is older than
    [status] stale_after, failing when its last attempt failed; and what was fetched but
    is not in the store: attempts waiting in the pending directory, spool files that
    cannot be read, and archived pages newer than the last recorded attempt."""
    spooled = spool_report(config)
    with Store.open(config.store_path, config.lock_timeout, read_only=True) as store:
        store.verify()  # a health report must not show what it could read of a damaged file
        facts = gather(config, store, spooled)
    return assess(config, facts, now)


def gather(
    config: Config,
    store: Store,
    spooled: tuple[dict[str, list[tuple[Attempt, str | None]]], int],
) -> Facts:
    """The facts of every configured source (and of the official rates once they have
    been asked for: `ticker reference`, the daemon), from an open store and the spool
    report."""
    waiting, unreadable = spooled
    sources = list(config.sources)
    if REFERENCE in waiting or read.has_source(store, REFERENCE):
        sources.append(config.reference)
    health = tuple(read.source_health(store, s.name) for s in sources)
    unstored = tuple(
        _unstored_pages(config, store, s.name, _from_ms(h.last_attempt_ms), waiting)
        for s, h in zip(sources, health, strict=True)
    )
    return Facts(tuple(sources), health, unstored, waiting, unreadable)


def assess(config: Config, facts: Facts, now: datetime) -> list[SourceStatus]:
    """The report the facts make at `now`: ages, staleness, failures, what waits."""
    out = []
    for source, h, lost in zip(facts.sources, facts.health, facts.unstored, strict=True):
        age, future = None, False
        if h.newest_date is not None:
            day_start = datetime.combine(h.newest_date, datetime.min.time(), tzinfo=source.tz)
            age = (now - day_start).total_seconds()
            today = now.astimezone(source.tz).date()
            future = h.newest_date > today + timedelta(days=1)
        mine = sorted(facts.waiting.get(source.name, []), key=lambda w: w[0].started_at)
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
                stale=age is None or age > stale_after(config, source.name) or future,
                failing=h.last_outcome is not None and h.last_outcome not in SUCCESS_OUTCOMES,
                future=future,
                waiting=len(mine),
                waiting_because=mine[-1][1] if mine else None,
                unstored=lost,
                unreadable_spooled=facts.unreadable,
            )
        )
    return out


def stale_after(config: Config, source: str) -> float:
    """Seconds after which a source's newest observation is stale: [status] stale_after,
    and for the official rates REFERENCE_SLACK more (banks publish none at weekends
    and holidays)."""
    return config.stale_after + (REFERENCE_SLACK if source == REFERENCE else 0.0)


def spool_report(
    config: Config,
) -> tuple[dict[str, list[tuple[Attempt, str | None]]], int]:
    """The spooled attempts by source (with why each waits), and how many spool files
    cannot be read (set aside, or to be set aside by the next scrape)."""
    waiting: dict[str, list[tuple[Attempt, str | None]]] = {}
    unreadable = len(spool.set_aside_attempts(config))
    for file in spool.spooled_attempts(config):
        try:
            attempt, why = spool.read_spooled(file)
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
    waiting: Mapping[str, Sequence[tuple[Attempt, str | None]]],
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
    known = read.archive_names_since(store, source, after)
    return sum(1 for name in found if name not in known)


def _from_ms(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)
