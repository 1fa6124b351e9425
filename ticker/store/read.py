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


# --- recover: the listings of the web archives, and the captures chosen from them ----------


@dataclass(frozen=True, slots=True)
class Listing:
    """Where a listing of an archive's index stands."""

    pass_from: str  # the first capture time of the pass under way ('' for none)
    resume: str | None  # where it goes on; None: from its start
    complete: bool
    listed_at: datetime | None  # when a pass last ran to its end
    urlkey: str | None


def listing(store: Store, key: Sequence[str]) -> Listing | None:
    """The listing of (archive, source, scope, crawl, since, until), if one was begun."""
    rows = store.con.execute(
        """SELECT pass_from, resume, complete, listed_at, urlkey FROM recover_listings
           WHERE archive = $1 AND source = $2 AND scope = $3 AND crawl = $4
             AND since = $5 AND until = $6""",
        list(key),
    ).fetchall()
    return Listing(*rows[0]) if rows else None


def page_urlkey(store: Store, archive: str, source: str) -> str | None:
    """The index's key of the source's own page, as a listing of that page gave it."""
    rows = store.con.execute(
        """SELECT min(urlkey) FROM recover_listings
           WHERE archive = $1 AND source = $2 AND scope = 'page' AND urlkey IS NOT NULL""",
        [archive, source],
    ).fetchall()
    return rows[0][0] if rows else None


@dataclass(frozen=True)
class Choice:
    """Which listed captures a recovery takes: an archive's captures of a source, of the
    days from `since` to `until` (in the source's time zone), of the page with `urlkey`
    only when `page`, and `per_day` of each day (0: all), spread over the day and always
    its last one."""

    archive: str
    source: str
    since: date | None
    until: date | None
    per_day: int
    page: bool
    urlkey: str | None

    def params(self) -> dict[str, Any]:
        return {
            "archive": self.archive,
            "source": self.source,
            "since": self.since,
            "until": self.until,
            "per_day": self.per_day,
            "page": self.page,
            "urlkey": self.urlkey,
        }


# The listed captures of a Choice, each with `chosen`. A day is cut into per_day equal
# parts; the last capture of each part comes first, then the one before it in each part,
# and so on: the first per_day of that order are chosen. The day's last capture is the
# last of its part, and the latest of those that come first, so it is always chosen.
# A capture whose snapshot serves another day's capture ('moved') is no capture of its
# day: the day's others are chosen from.
_LISTED = """
    SELECT * FROM recover_captures
    WHERE archive = $archive AND source = $source
      AND ($since IS NULL OR day >= $since) AND ($until IS NULL OR day <= $until)
      AND (NOT $page OR urlkey = $urlkey)
"""
_RECOVER_ROWS = f"""
    SELECT *, $per_day = 0 OR row_number() OVER (
                  PARTITION BY day ORDER BY in_part, captured_at DESC, id DESC) <= $per_day
              AS chosen
    FROM (
        SELECT *, row_number() OVER (
                      PARTITION BY day, CASE WHEN $per_day = 0 THEN 0
                                             ELSE day_second * $per_day // 86400 END
                      ORDER BY captured_at DESC, id DESC) AS in_part
        FROM ({_LISTED}) WHERE state <> 'moved')
"""


@dataclass(frozen=True, slots=True)
class RecoverPlan:
    """What a Choice comes to: captures and days found, captures chosen and what became
    of them before, the requests left to make, and captures per day."""

    listed: int
    days: int
    first_day: date | None
    last_day: date | None
    chosen: int
    stored: int
    skipped: int
    to_fetch: int
    todo_days: int  # the days of those
    requests: int  # downloads left: bytes already fetched are not fetched again
    fewest: int  # captures on the day with the fewest
    most: int
    median: float


def recover_plan(store: Store, choice: Choice) -> RecoverPlan:
    rows = store.con.execute(
        f"""WITH r AS ({_RECOVER_ROWS}), listed AS ({_LISTED}),
           have AS (SELECT DISTINCT digest FROM recover_captures
                    WHERE archive = $archive AND source = $source AND state = 'stored'
                      AND archive_path IS NOT NULL AND coalesce(digest, '') <> ''),
           todo AS (SELECT * FROM r WHERE chosen AND state IN ('listed', 'failed')),
           per_day AS (SELECT count(*) AS n FROM listed GROUP BY day)
           SELECT (SELECT count(*) FROM listed), (SELECT count(DISTINCT day) FROM listed),
                  (SELECT min(day) FROM listed), (SELECT max(day) FROM listed),
                  (SELECT count(*) FROM r WHERE chosen),
                  (SELECT count(*) FROM r WHERE chosen AND state = 'stored'),
                  (SELECT count(*) FROM r WHERE chosen AND state = 'skipped'),
                  (SELECT count(*) FROM todo), (SELECT count(DISTINCT day) FROM todo),
                  (SELECT count(DISTINCT digest) FILTER (WHERE coalesce(digest, '') <> '')
                          + count(*) FILTER (WHERE coalesce(digest, '') = '')
                   FROM todo ANTI JOIN have USING (digest)),
                  (SELECT coalesce(min(n), 0) FROM per_day),
                  (SELECT coalesce(max(n), 0) FROM per_day),
                  (SELECT coalesce(median(n), 0) FROM per_day)""",
        choice.params(),
    ).fetchall()
    return RecoverPlan(*rows[0])


@dataclass(frozen=True, slots=True)
class RecoverMonth:
    month: str  # YYYY-MM
    days: int
    captures: int
    to_fetch: int
    stored: int


def recover_months(store: Store, choice: Choice) -> list[RecoverMonth]:
    """A Choice month by month (what a dry run shows)."""
    rows = store.con.execute(
        f"""SELECT strftime(day, '%Y-%m'), count(DISTINCT day), count(*),
                  count(*) FILTER (WHERE chosen AND state IN ('listed', 'failed')),
                  count(*) FILTER (WHERE chosen AND state = 'stored')
           FROM ({_RECOVER_ROWS}) GROUP BY 1 ORDER BY 1""",
        choice.params(),
    ).fetchall()
    return [RecoverMonth(*r) for r in rows]


def recover_skipped(store: Store, choice: Choice, limit: int) -> list[tuple[str, datetime, str]]:
    """Chosen captures skipped by earlier runs: URL, capture time, why."""
    rows = store.con.execute(
        f"""SELECT url, captured_at, coalesce(reason, '')
           FROM ({_RECOVER_ROWS}) WHERE chosen AND state = 'skipped'
           ORDER BY day, captured_at, id LIMIT $limit""",
        {**choice.params(), "limit": limit},
    ).fetchall()
    return [(a, b, c) for a, b, c in rows]


@dataclass(frozen=True, slots=True)
class ToRecover:
    """A chosen capture not stored yet, with what is known of its bytes."""

    id: int
    url: str
    captured_at: datetime
    day: date
    urlkey: str | None
    mimetype: str | None
    status: str | None
    digest: str | None
    warc_file: str | None
    warc_offset: int | None
    warc_length: int | None
    have_path: str | None  # a WARC file already holding the bytes of its digest
    original_url: str | None  # a revisit: its original's record (Common Crawl)
    original_file: str | None
    original_offset: int | None
    original_length: int | None


_TODO = f"""
    WITH r AS ({_RECOVER_ROWS}),
    have AS (SELECT digest, min(archive_path) AS have_path FROM recover_captures
             WHERE archive = $archive AND source = $source AND state = 'stored'
               AND archive_path IS NOT NULL AND coalesce(digest, '') <> ''
             GROUP BY digest),
    original AS (SELECT digest, arg_min(url, captured_at) AS url,
                        arg_min(warc_file, captured_at) AS file,
                        arg_min(warc_offset, captured_at) AS offs,
                        arg_min(warc_length, captured_at) AS len
                 FROM recover_captures
                 WHERE archive = $archive AND source = $source
                   AND warc_file IS NOT NULL AND status <> '-'
                   AND mimetype <> 'warc/revisit' AND coalesce(digest, '') <> ''
                 GROUP BY digest)
    SELECT r.id, r.url, r.captured_at, r.day, r.urlkey, r.mimetype, r.status, r.digest,
           r.warc_file, r.warc_offset, r.warc_length, h.have_path, o.url, o.file, o.offs, o.len
    FROM r LEFT JOIN have h ON h.digest = r.digest
           LEFT JOIN original o
             ON o.digest = r.digest AND (r.status = '-' OR r.mimetype = 'warc/revisit')
    WHERE r.state IN ('listed', 'failed')
"""


def recover_todo(
    store: Store, choice: Choice, after: tuple[date, datetime, int] | None, limit: int
) -> list[ToRecover]:
    """The next `limit` chosen captures not stored yet (nor skipped), in the order of
    their days and times, after `after` (day, time, id)."""
    day, at, row_id = after if after is not None else (None, None, None)
    rows = store.con.execute(
        f"""{_TODO} AND r.chosen
              AND ($day IS NULL OR r.day > $day
                   OR (r.day = $day AND (r.captured_at > $at
                                         OR (r.captured_at = $at AND r.id > $row_id))))
            ORDER BY r.day, r.captured_at, r.id LIMIT $limit""",
        {**choice.params(), "day": day, "at": at, "row_id": row_id, "limit": limit},
    ).fetchall()
    return [ToRecover(*r) for r in rows]


def recover_instead(
    store: Store, choice: Choice, day: date, before: datetime, tried: Sequence[int]
) -> ToRecover | None:
    """The latest capture of `day` before `before` not stored yet, other than those
    `tried`: taken when the day's chosen one turned out to be another day's."""
    rows = store.con.execute(
        f"""{_TODO} AND r.day = $day AND r.captured_at < $before
              AND NOT list_contains($tried, r.id)
            ORDER BY r.captured_at DESC, r.id DESC LIMIT 1""",
        {**choice.params(), "day": day, "before": before, "tried": list(tried)},
    ).fetchall()
    return ToRecover(*rows[0]) if rows else None


def days_covered(
    store: Store, source: str, since: date | None, until: date | None
) -> tuple[int, date | None, date | None]:
    """Days of a source's daily series from `since` to `until`, the first and the last."""
    rows = store.con.execute(
        """SELECT count(DISTINCT date), min(date), max(date) FROM daily
           WHERE source = $1 AND ($2 IS NULL OR date >= $2) AND ($3 IS NULL OR date <= $3)""",
        [source, since, until],
    ).fetchall()
    n, first, last = rows[0]
    return int(n), first, last


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
