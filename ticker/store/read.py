"""Every query of the store: the daily series and its days, what the checks read, what
`ticker status` reads, and what a scrape asks before it writes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from ticker.models import SUCCESS_OUTCOMES, Day, Series
from ticker.store.connect import Store

_RECORD_NO = re.compile(r"#\d+$")
_DAY_COLUMNS = "source, pair, date, rate_text, change_text, publisher"


def _days(store: Store, sql: str, params: Sequence[Any] = ()) -> list[Day]:
    return [Day(*r) for r in store.con.execute(sql, list(params)).fetchall()]


# --- the daily series ------------------------------------------------------------------


def latest(store: Store, pairs: Sequence[str] | None = None) -> list[Day]:
    """The newest day of each source and pair."""
    return _days(
        store,
        f"""SELECT {_DAY_COLUMNS} FROM daily
            WHERE $1 IS NULL OR list_contains($1, pair)
            QUALIFY row_number() OVER (PARTITION BY source, pair ORDER BY date DESC) = 1
            ORDER BY source, pair""",
        [list(pairs) if pairs else None],
    )


def history(
    store: Store,
    pair: str | Sequence[str],
    since: date | None = None,
    until: date | None = None,
    source: str | None = None,
) -> list[Day]:
    """One pair's days (or those of several pairs: one currency in both directions), by
    source and date."""
    pairs = [pair] if isinstance(pair, str) else list(pair)
    return _days(
        store,
        f"""SELECT {_DAY_COLUMNS} FROM daily
            WHERE list_contains($1, pair) AND ($2 IS NULL OR date >= $2)
              AND ($3 IS NULL OR date <= $3) AND ($4 IS NULL OR source = $4)
            ORDER BY source, date""",
        [pairs, since, until, source],
    )


def daily(store: Store, source: str | None = None) -> list[Day]:
    """The whole daily series, sorted by source, pair and date."""
    return _days(
        store,
        f"""SELECT {_DAY_COLUMNS} FROM daily WHERE $1 IS NULL OR source = $1
            ORDER BY source, pair, date""",
        [source],
    )


def write_parquet(store: Store, out: Path) -> int:
    """The daily series as an export's rows, written by DuckDB's Parquet writer."""
    rel = store.con.sql(
        """SELECT source, pair, date, rate_text AS rate, change_text AS change_pct
           FROM daily ORDER BY source, pair, date"""
    )
    rel.write_parquet(str(out))
    return int(store.con.execute("SELECT count(*) FROM daily").fetchall()[0][0])


def series(
    store: Store,
    source: str,
    pairs: Sequence[str],
    since: date | None = None,
    until: date | None = None,
) -> list[Series]:
    """Each pair's daily series in a window, oldest first (pairs without data: empty)."""
    found: dict[str, list[Day]] = {p: [] for p in pairs}
    for day in _days(
        store,
        f"""SELECT {_DAY_COLUMNS} FROM daily
            WHERE source = $1 AND list_contains($2, pair)
              AND ($3 IS NULL OR date >= $3) AND ($4 IS NULL OR date <= $4)
            ORDER BY pair, date""",
        [source, list(pairs), since, until],
    ):
        found[day.pair].append(day)
    return [Series(source, p, tuple(found[p])) for p in pairs]


def date_span(store: Store, source: str | None = None) -> tuple[date | None, date | None]:
    """The first and the last stored day (of one source)."""
    first, last = store.con.execute(
        "SELECT min(date), max(date) FROM daily WHERE $1 IS NULL OR source = $1", [source]
    ).fetchall()[0]
    return first, last


def sources_span(store: Store, sources: Sequence[str]) -> tuple[date | None, date | None]:
    """The first and the last day stored by any of `sources`."""
    first, last = store.con.execute(
        "SELECT min(date), max(date) FROM observations WHERE list_contains($1, source)",
        [list(sources)],
    ).fetchall()[0]
    return first, last


def in_force(store: Store, source: str, pair: str, day: date, since: date) -> Day | None:
    """The newest day of `source`'s `pair` from `since` to `day`: the official rate in
    force on `day`."""
    rows = _days(
        store,
        f"""SELECT {_DAY_COLUMNS} FROM daily
            WHERE source = $1 AND pair = $2 AND date <= $3 AND date >= $4
            ORDER BY date DESC LIMIT 1""",
        [source, pair, day, since],
    )
    return rows[0] if rows else None


def has_source(store: Store, source: str) -> bool:
    """Whether anything of `source` is stored: an attempt or an observation."""
    rows = store.con.execute(
        """SELECT EXISTS (SELECT 1 FROM attempts WHERE source = $1)
                  OR EXISTS (SELECT 1 FROM observations WHERE source = $1)""",
        [source],
    ).fetchall()
    return bool(rows[0][0])


# --- what the checks read besides the series ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Revision:
    """One stored set of values of a (source, pair, date) that has more than one."""

    source: str
    pair: str
    date: date
    revision: int
    rate: str
    change: str | None
    origin: str  # the capture that first showed these values
    publisher: str | None = None


@dataclass(frozen=True, slots=True)
class BadPage:
    """A capture whose ticker copies disagreed."""

    source: str
    origin: str
    captured_at: str | None
    header_date: date | None
    detail: str


def revisions(store: Store) -> list[Revision]:
    """Every version of each (source, pair, date) stored with more than one."""
    rows = store.con.execute(
        """WITH revised AS (
               SELECT * FROM observations o
               SEMI JOIN (SELECT source, pair, date FROM observations WHERE revision > 1) r
               USING (source, pair, date))
           SELECT o.source, o.pair, o.date, o.revision, o.rate_text, o.change_text, c.origin,
                  o.publisher
           FROM revised o JOIN captures c ON c.id = o.capture_id
           ORDER BY o.source, o.pair, o.date, o.revision"""
    ).fetchall()
    return [Revision(*r) for r in rows]


def inconsistent_pages(store: Store) -> list[BadPage]:
    rows = store.con.execute(
        """SELECT source, origin, CAST(captured_at AS VARCHAR), header_date, coalesce(detail, '')
           FROM captures WHERE outcome = 'inconsistent'
           ORDER BY source, header_date NULLS LAST, origin"""
    ).fetchall()
    return [BadPage(*r) for r in rows]


def day_origins(store: Store, after: date) -> dict[tuple[str, str, date], str]:
    """(source, pair, date) -> the page the daily series' values came from, for the days
    after `after`."""
    rows = store.con.execute(
        """SELECT d.source, d.pair, d.date, c.origin FROM daily d
           JOIN captures c ON c.id = d.capture_id WHERE d.date > $1""",
        [after],
    ).fetchall()
    return {(src, pair, day): origin for src, pair, day, origin in rows}


# --- backfill and scrape -------------------------------------------------------------------


def loaded_file_keys(store: Store) -> set[str]:
    """The files backfill has read (path, size, mtime, source, --date, reader version)."""
    return {k for (k,) in store.con.execute("SELECT file_key FROM loaded_files").fetchall()}


def validators(store: Store, source: str, url: str) -> tuple[str | None, str | None, str] | None:
    """ETag, Last-Modified and page key of the newest ok attempt whose page is stored:
    a 304 against them is safe while this store holds that page."""
    rows = store.con.execute(
        """SELECT a.etag, a.last_modified, c.page_key
           FROM attempts a JOIN captures c ON c.id = a.capture_id
           WHERE a.source = $1 AND a.url = $2 AND a.outcome = 'ok'
           ORDER BY a.started_at DESC LIMIT 1""",
        [source, url],
    ).fetchall()
    return (rows[0][0], rows[0][1], rows[0][2]) if rows else None


def holds_page(store: Store, page_key: str) -> bool:
    rows = store.con.execute(
        "SELECT count(*) FROM captures WHERE page_key = $1", [page_key]
    ).fetchall()
    return bool(rows[0][0])


# --- status --------------------------------------------------------------------------------


def archive_names_since(store: Store, source: str, since: datetime | None) -> set[str]:
    """The archive file names of the pages of `source` the store knows, captured at
    `since` or later: those of its recorded attempts, and those loaded by backfill."""
    rows = store.con.execute(
        """SELECT archive_path FROM attempts
           WHERE source = $1 AND archive_path IS NOT NULL
             AND ($2 IS NULL OR started_at >= $2)
           UNION ALL
           SELECT origin FROM captures
           WHERE source = $1 AND ($2 IS NULL OR captured_at >= $2)""",
        [source, since],
    ).fetchall()
    # a page read from a WARC file has the origin "<path>#<record number>"
    return {Path(_RECORD_NO.sub("", path)).name for (path,) in rows}


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """What the attempts table and the observations say of one source."""

    source: str
    last_attempt_ms: int | None
    last_outcome: str | None
    last_status: int | None
    last_error: str | None
    last_url: str | None
    last_success_ms: int | None
    failures: int  # failed attempts since the last success
    newest_date: date | None


def source_health(store: Store, source: str) -> SourceHealth:
    """The facts `ticker status` reports for one source (times as epoch ms)."""
    ok = sorted(SUCCESS_OUTCOMES)
    con = store.con
    last = con.execute(
        """SELECT epoch_ms(started_at), outcome, http_status, error, url FROM attempts
           WHERE source = $1 ORDER BY started_at DESC, recorded_at DESC LIMIT 1""",
        [source],
    ).fetchall()
    (success_ms, failures), *_ = con.execute(
        """WITH s AS (SELECT max(started_at) AS last_ok FROM attempts
                      WHERE source = $1 AND list_contains($2, outcome))
           SELECT epoch_ms((SELECT last_ok FROM s)),
                  count(*) FILTER (WHERE NOT list_contains($2, outcome)
                                   AND started_at > coalesce((SELECT last_ok FROM s),
                                                             '-infinity'::TIMESTAMPTZ))
           FROM attempts WHERE source = $1""",
        [source, ok],
    ).fetchall()
    (newest,), *_ = con.execute(
        "SELECT max(date) FROM observations WHERE source = $1", [source]
    ).fetchall()
    return SourceHealth(
        source=source,
        last_attempt_ms=last[0][0] if last else None,
        last_outcome=last[0][1] if last else None,
        last_status=last[0][2] if last else None,
        last_error=last[0][3] if last else None,
        last_url=last[0][4] if last else None,
        last_success_ms=success_ms,
        failures=int(failures or 0),
        newest_date=newest,
    )


# --- the server's metrics ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DurationHistogram:
    """How long the fetch attempts of one source took: cumulative counts per bound."""

    source: str
    bounds: tuple[float, ...]  # seconds, ascending
    counts: tuple[int, ...]  # attempts that took at most each bound
    total: int
    seconds: float  # the sum of all durations


def attempt_durations(store: Store, bounds: Sequence[float]) -> list[DurationHistogram]:
    """Per source, the durations of every recorded attempt as a cumulative histogram."""
    per_bound = store.con.execute(
        """SELECT a.source, b.le, count(*) FILTER (WHERE a.duration_ms <= b.le * 1000)
           FROM attempts a CROSS JOIN unnest($1::DOUBLE[]) AS b(le)
           GROUP BY a.source, b.le ORDER BY a.source, b.le""",
        [list(bounds)],
    ).fetchall()
    totals = store.con.execute(
        """SELECT source, count(*), coalesce(sum(duration_ms), 0) / 1000.0
           FROM attempts GROUP BY source ORDER BY source"""
    ).fetchall()
    counts: dict[str, list[int]] = {}
    for source, _le, n in per_bound:
        counts.setdefault(source, []).append(int(n))
    return [
        DurationHistogram(source, tuple(bounds), tuple(counts.get(source, [])), int(n), float(s))
        for source, n, s in totals
    ]
