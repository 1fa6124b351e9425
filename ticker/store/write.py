"""The one write path: records are staged as CSV rows and a batch of them is written in
one transaction by SQL that applies the store's rules to the whole batch at once. A
backfill stages tens of thousands of pages in worker processes; a scrape stages one page.

The rules: a capture already loaded (same page_key) adds nothing; an observation whose
values are already stored for its source, pair and date adds only a sighting; other
values for a stored date add a new revision (1, 2, ... in the order first seen), never
overwriting one.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from ticker.models import Attempt, Record
from ticker.store.connect import Store
from ticker.store.transaction import transaction


@dataclass
class WriteCounts:
    """What a batch added: captures new and already loaded; observations new (a date not
    stored before), already stored (the same values), revised (other values)."""

    pages_new: int = 0
    pages_known: int = 0
    new: int = 0
    already: int = 0
    revised: int = 0
    capture_ids: dict[str, int] = field(default_factory=dict)  # page_key -> id, if asked
    # page_key -> (new, already, revised) of each staged record, if asked: what writing
    # the records one by one, in reading order, would have counted for each
    per_record: dict[str, tuple[int, int, int]] = field(default_factory=dict)


# The staged CSV layout. file_no and page_no give the order the records were read in.
STAGE_COLUMNS = {
    "file_no": "BIGINT",
    "page_no": "BIGINT",
    "page_key": "VARCHAR",
    "source": "VARCHAR",
    "origin": "VARCHAR",
    "url": "VARCHAR",
    "url_null": "INTEGER",  # CSV cannot tell '' from NULL; a URL may be either
    "captured_at": "VARCHAR",
    "content_hash": "VARCHAR",
    "outcome": "VARCHAR",
    "header_date": "VARCHAR",
    "quote_date": "VARCHAR",
    "date_basis": "VARCHAR",
    "parser_version": "INTEGER",
    "copies": "INTEGER",
    "detail": "VARCHAR",
    # The observations: 'KGS/USD 0.01164 0.87 2025-03-20;USD/KZT 478.77  2025-03-21 NBK'
    # (pair, rate, change or nothing, date, and the publisher when there is one: tokens
    # the readers have validated).
    "observations": "VARCHAR",
}
STAGE_FILE_COLUMNS = {"file_key": "VARCHAR", "path": "VARCHAR", "pages": "INTEGER"}
# The staged files, read exactly as Stager writes them: no sniffing, no header.
_READ_CSV = """read_csv($1, header = false, auto_detect = false, delim = ',', quote = '"',
                    escape = '"', max_line_size = 1073741824, columns = {columns})"""
_TEMP_TABLES = ("stage", "fresh0", "fresh", "qsets", "qv", "vc")


class Stager:
    """Writes records, and the files they were read from, to CSV files for `write`.
    Text that is not valid UTF-8 (a file name with stray bytes) is written with
    backslash escapes, as DuckDB keeps only valid UTF-8."""

    def __init__(self, directory: Path, name: str) -> None:
        self.pages_path = directory / f"{name}.pages.csv"
        self.files_path = directory / f"{name}.files.csv"
        self.pages = 0
        self._pages_fh = self.pages_path.open(
            "w", encoding="utf-8", errors="backslashreplace", newline=""
        )
        self._files_fh = self.files_path.open(
            "w", encoding="utf-8", errors="backslashreplace", newline=""
        )
        self._page_rows = csv.writer(self._pages_fh, lineterminator="\n")
        self._file_rows = csv.writer(self._files_fh, lineterminator="\n")

    def add(self, file_no: int, page_no: int, r: Record) -> None:
        observations = ";".join(
            f"{o.pair} {o.rate} {o.change or ''} {o.date} {o.publisher}"
            if o.publisher
            else f"{o.pair} {o.rate} {o.change or ''} {o.date}"
            for o in r.observations
        )
        self._page_rows.writerow(
            (
                file_no,
                page_no,
                r.page_key,
                r.source,
                r.origin,
                r.url,
                int(r.url is None),
                r.captured_at.isoformat() if r.captured_at else None,
                r.content_hash,
                r.outcome,
                r.header_date,
                r.quote_date,
                r.date_basis,
                r.parser_version,
                r.copies,
                r.detail,
                observations,
            )
        )
        self.pages += 1

    def add_file(self, file_key: str, path: str, pages: int) -> None:
        self._file_rows.writerow((file_key, path, pages))

    def close(self) -> None:
        self._pages_fh.close()
        self._files_fh.close()


def write_records(
    store: Store,
    records: Sequence[Record],
    now: datetime,
    before_commit: Callable[[WriteCounts], None] | None = None,
) -> WriteCounts:
    """`write` for records at hand (a scrape's pages): staged here, then written whole,
    with the capture id and the counts of each record."""
    with tempfile.TemporaryDirectory(prefix="ticker-write-") as tmp:
        stager = Stager(Path(tmp), "batch")
        try:
            for i, record in enumerate(records):
                stager.add(0, i, record)
        finally:
            stager.close()
        return write(
            store,
            [stager.pages_path],
            [],
            now,
            before_commit=before_commit,
            capture_ids=True,
            per_record=True,
        )


def write(
    store: Store,
    pages_csv: Sequence[Path],
    files_csv: Sequence[Path],
    now: datetime,
    *,
    before_commit: Callable[[WriteCounts], None] | None = None,
    capture_ids: bool = False,
    per_record: bool = False,
) -> WriteCounts:
    """Write staged records (and the files they came from) in one transaction: all of a
    batch lands or none. `before_commit` runs inside that transaction with the counts
    (a scrape records its attempts there, so a page never lands without its attempt or
    the other way round); `capture_ids` fills counts.capture_ids for the staged records,
    `per_record` counts.per_record."""
    counts = WriteCounts()
    con = store.con
    # One thread: faster for batches this size, and it leaves the other cores to the
    # backfill workers reading the next batch.
    con.execute("SET threads = 1")
    try:
        with transaction(con, store.path):
            if pages_csv:
                _apply(con, pages_csv, now, counts)
                if capture_ids:
                    counts.capture_ids = dict(
                        con.execute(
                            """SELECT s.page_key, c.id FROM temp.stage s
                               JOIN captures c USING (page_key)"""
                        ).fetchall()
                    )
                if per_record:
                    counts.per_record = _per_record(con, counts)
            if files_csv:
                con.execute(
                    f"""INSERT INTO loaded_files
                        SELECT file_key, path, pages, $2::TIMESTAMPTZ
                        FROM {_READ_CSV.format(columns=_struct(STAGE_FILE_COLUMNS))}
                        QUALIFY row_number() OVER (PARTITION BY file_key) = 1
                        ON CONFLICT DO NOTHING""",
                    [[str(p) for p in files_csv], now],
                )
            if before_commit is not None:
                before_commit(counts)
    finally:
        # Tidying only (temporary tables end with the connection): after a failed
        # write it may fail too, and must not hide why the write failed.
        with suppress(duckdb.Error):
            for table in _TEMP_TABLES:
                con.execute(f"DROP TABLE IF EXISTS temp.{table}")
            con.execute("RESET threads")
    return counts


def _apply(
    con: duckdb.DuckDBPyConnection, pages_csv: Sequence[Path], now: datetime, counts: WriteCounts
) -> None:
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE stage AS
            SELECT * FROM {_READ_CSV.format(columns=_struct(STAGE_COLUMNS))}""",
        [[str(p) for p in pages_csv]],
    )
    # Records not loaded before, each once (its first reading in this batch), numbered
    # in reading order and given capture ids in that order.
    con.execute(
        """CREATE OR REPLACE TEMP TABLE fresh0 AS
           SELECT *, row_number() OVER (ORDER BY file_no, page_no) AS k FROM (
               SELECT * FROM stage s
               WHERE NOT EXISTS (SELECT 1 FROM captures c WHERE c.page_key = s.page_key)
               QUALIFY row_number() OVER (PARTITION BY page_key ORDER BY file_no, page_no)
                       = 1)"""
    )
    (staged, fresh), *_ = con.execute(
        "SELECT (SELECT count(*) FROM stage), (SELECT count(*) FROM fresh0)"
    ).fetchall()
    counts.pages_new, counts.pages_known = fresh, staged - fresh
    if not fresh:
        return
    con.execute(
        """CREATE OR REPLACE TEMP TABLE fresh AS
           SELECT f.*, i.id FROM fresh0 f JOIN (
               SELECT id, row_number() OVER (ORDER BY id) AS k FROM (
                   SELECT nextval('capture_id_seq') AS id FROM range($1))) i USING (k)""",
        [fresh],
    )
    # The rules worked out per distinct set of observations rather than per observation
    # (pages of one date mostly print the same ticker): the first value of a (source,
    # pair, date) not stored yet is new; a value stored or seen earlier in the batch is
    # already stored; another value is a revision, numbered after the stored ones in
    # the order first seen. Capture ids follow reading order, so min(id) is the first.
    # An absent change or publisher is '' here (NULL in the table): values are compared
    # with '='. Who published a value is part of it.
    # A set is numbered (set_id), and its observations refer to that number: a record of
    # thousands of observations (a response of official rates) must not copy its whole
    # text into each of them.
    con.execute(
        """CREATE OR REPLACE TEMP TABLE qsets AS
           SELECT source, observations, min(id) AS first_id, count(*) AS n,
                  row_number() OVER () AS set_id
           FROM fresh WHERE observations IS NOT NULL
           GROUP BY source, observations"""
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE qv AS
           SELECT source, set_id, first_id, n, split_part(x, ' ', 1) AS pair,
                  split_part(x, ' ', 2) AS rate_text, split_part(x, ' ', 3) AS change_text,
                  split_part(x, ' ', 4)::DATE AS date, split_part(x, ' ', 5) AS publisher
           FROM (SELECT source, set_id, first_id, n,
                        unnest(string_split(observations, ';')) AS x FROM qsets)"""
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE vc AS
           WITH vals AS (
               SELECT source, pair, date, rate_text, change_text, publisher,
                      min(first_id) AS capture_id, sum(n) AS n
               FROM qv GROUP BY ALL
           ), known AS (
               SELECT source, pair, date, rate_text, coalesce(change_text, '') AS change_text,
                      coalesce(publisher, '') AS publisher, revision
               FROM observations
               SEMI JOIN (SELECT DISTINCT source, pair, date FROM vals)
               USING (source, pair, date)
           )
           SELECT v.*, kv.revision AS db_revision, kn.n AS db_count,
                  v.capture_id = min(v.capture_id) OVER (PARTITION BY source, pair, date)
                      AS key_first
           FROM vals v
           LEFT JOIN (SELECT source, pair, date, rate_text, change_text, publisher,
                             min(revision) AS revision
                      FROM known GROUP BY ALL) kv
             USING (source, pair, date, rate_text, change_text, publisher)
           LEFT JOIN (SELECT source, pair, date, count(*) AS n FROM known GROUP BY ALL) kn
             USING (source, pair, date)"""
    )
    (new, revised, values), *_ = con.execute(
        """SELECT count(*) FILTER (WHERE db_count IS NULL AND key_first),
                  count(*) FILTER (WHERE db_revision IS NULL
                                   AND NOT (db_count IS NULL AND key_first)),
                  coalesce(sum(n), 0)
           FROM vc"""
    ).fetchall()
    counts.new, counts.revised = int(new), int(revised)
    counts.already = int(values) - counts.new - counts.revised
    con.execute(
        """CREATE OR REPLACE TEMP TABLE vc AS
           SELECT * EXCLUDE (revision), coalesce(db_revision, revision) AS revision,
                  db_revision IS NULL AS added
           FROM (SELECT *, coalesce(db_count, 0) + row_number() OVER (
                               PARTITION BY source, pair, date, db_revision IS NULL
                               ORDER BY capture_id) AS revision
                 FROM vc)"""
    )
    con.execute(
        """INSERT INTO captures
           (id, source, origin, url, captured_at, loaded_at, content_hash, page_key,
            outcome, header_date, quote_date, date_basis, parser_version, copies, detail)
           SELECT id, source, origin,
                  CASE WHEN url_null = 1 THEN NULL ELSE coalesce(url, '') END,
                  captured_at::TIMESTAMPTZ, $1::TIMESTAMPTZ, content_hash, page_key,
                  outcome, header_date::DATE, quote_date::DATE, date_basis, parser_version,
                  copies, detail
           FROM fresh ORDER BY id""",
        [now],
    )
    con.execute(
        """INSERT INTO observations
           (source, pair, date, revision, rate, rate_text, change_pct, change_text,
            capture_id, publisher)
           SELECT source, pair, date, revision, rate_text::DECIMAL(20, 10), rate_text,
                  nullif(change_text, '')::DECIMAL(12, 4), nullif(change_text, ''),
                  capture_id, nullif(publisher, '')
           FROM vc WHERE added"""
    )
    # Every record sights each of its observations: its set's values, with their revisions.
    con.execute(
        """INSERT INTO sightings (capture_id, source, pair, date, revision)
           WITH revs AS (
               SELECT qv.set_id,
                      list(struct_pack(pair := qv.pair, date := qv.date,
                                       revision := vc.revision)) AS r
               FROM qv JOIN vc USING (source, pair, date, rate_text, change_text, publisher)
               GROUP BY qv.set_id
           )
           SELECT id, source, s.pair, s.date, s.revision
           FROM (SELECT f.id, f.source, unnest(revs.r) AS s
                 FROM fresh f
                 JOIN qsets q ON q.source = f.source AND q.observations = f.observations
                 JOIN revs ON revs.set_id = q.set_id)"""
    )


def _per_record(
    con: duckdb.DuckDBPyConnection, counts: WriteCounts
) -> dict[str, tuple[int, int, int]]:
    """Each staged record's (new, already, revised): a value new or revised is counted
    for the first record of the batch that showed it, every other observation of a
    record as already stored. A record loaded before counts nothing."""
    out = {key: (0, 0, 0) for key in counts.capture_ids}
    if not counts.pages_new:
        return out
    rows = con.execute(
        """WITH firsts AS (
               SELECT capture_id AS id,
                      count(*) FILTER (WHERE db_count IS NULL AND key_first) AS new,
                      count(*) FILTER (WHERE db_revision IS NULL
                                       AND NOT (db_count IS NULL AND key_first)) AS revised
               FROM temp.vc GROUP BY capture_id)
           SELECT f.page_key, coalesce(x.new, 0), coalesce(x.revised, 0),
                  CASE WHEN f.observations IS NULL OR f.observations = '' THEN 0
                       ELSE len(string_split(f.observations, ';')) END
           FROM temp.fresh f LEFT JOIN firsts x ON x.id = f.id"""
    ).fetchall()
    for key, new, revised, total in rows:
        out[key] = (int(new), int(total) - int(new) - int(revised), int(revised))
    return out


def record_attempts(store: Store, attempts: Sequence[Attempt], now: datetime) -> None:
    """Insert attempts; one already recorded (same id) is left as it was."""
    if not attempts:
        return
    rows = [
        (
            a.id,
            a.source,
            a.url,
            a.final_url,
            a.started_at,
            round(a.duration * 1000),
            a.http_status,
            a.nbytes,
            str(a.outcome),
            a.error,
            a.etag,
            a.last_modified,
            a.archive_path,
            a.capture_id,
            a.new,
            a.already,
            a.revised,
        )
        for a in attempts
    ]
    store.con.execute(
        """INSERT INTO attempts
           (id, source, url, final_url, started_at, duration_ms, http_status, bytes,
            outcome, error, etag, last_modified, archive_path, capture_id,
            new, already, revised, recorded_at)
           SELECT unnest($1), unnest($2), unnest($3), unnest($4)::VARCHAR,
                  unnest($5)::TIMESTAMPTZ, unnest($6)::INTEGER, unnest($7)::INTEGER,
                  unnest($8)::BIGINT, unnest($9), unnest($10)::VARCHAR,
                  unnest($11)::VARCHAR, unnest($12)::VARCHAR, unnest($13)::VARCHAR,
                  unnest($14)::BIGINT, unnest($15)::INTEGER, unnest($16)::INTEGER,
                  unnest($17)::INTEGER, $18::TIMESTAMPTZ
           ON CONFLICT (id) DO NOTHING""",
        [*_columns(rows, 17), now],
    )


def _struct(columns: dict[str, str]) -> str:
    return "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in columns.items()) + "}"


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Row tuples to column lists, for one INSERT ... SELECT unnest(...) per table."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(col) for col in zip(*rows, strict=True)]


# --- recover: the listings of the web archives, and what became of their captures ---------


@dataclass
class Listed:
    """A page of index rows, as columns (the order of LISTED_COLUMNS)."""

    url: list[str] = field(default_factory=list)
    captured_at: list[datetime] = field(default_factory=list)
    day: list[Any] = field(default_factory=list)  # date in the source's time zone
    day_second: list[int] = field(default_factory=list)
    urlkey: list[str] = field(default_factory=list)
    mimetype: list[str] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    digest: list[str] = field(default_factory=list)
    warc_file: list[str | None] = field(default_factory=list)
    warc_offset: list[int | None] = field(default_factory=list)
    warc_length: list[int | None] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ListingState:
    """Where a listing stands after a page: see read.Listing."""

    key: tuple[str, str, str, str, str, str]  # archive, source, scope, crawl, since, until
    pass_from: str
    resume: str | None
    complete: bool
    listed_at: datetime | None = None
    urlkey: str | None = None


def save_listing(store: Store, state: ListingState) -> None:
    store.con.execute(
        """INSERT INTO recover_listings
           (archive, source, scope, crawl, since, until, pass_from, resume, complete,
            listed_at, urlkey)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
           ON CONFLICT DO UPDATE SET
               pass_from = excluded.pass_from, resume = excluded.resume,
               complete = excluded.complete,
               listed_at = coalesce(excluded.listed_at, recover_listings.listed_at),
               urlkey = coalesce(recover_listings.urlkey, excluded.urlkey)""",
        [*state.key, state.pass_from, state.resume, state.complete, state.listed_at, state.urlkey],
    )


def add_listed(store: Store, rows: Listed, state: ListingState) -> int:
    """Keep a page of index rows (each capture once: a row listed before, or twice, adds
    nothing) and where the listing goes on, in one transaction; the rows added."""
    archive, source = state.key[0], state.key[1]
    with transaction(store.con, store.path):
        added = 0
        if rows.url:
            ((added,),) = store.con.execute(
                """INSERT INTO recover_captures
                   (archive, source, url, captured_at, day, day_second, urlkey, mimetype,
                    status, digest, warc_file, warc_offset, warc_length)
                   SELECT $1, $2, n.* FROM (
                       SELECT unnest($3::VARCHAR[]) AS url,
                              unnest($4::TIMESTAMPTZ[]) AS captured_at,
                              unnest($5::DATE[]) AS day, unnest($6::INTEGER[]) AS day_second,
                              unnest($7::VARCHAR[]) AS urlkey, unnest($8::VARCHAR[]) AS mimetype,
                              unnest($9::VARCHAR[]) AS status, unnest($10::VARCHAR[]) AS digest,
                              unnest($11::VARCHAR[]) AS warc_file,
                              unnest($12::BIGINT[]) AS warc_offset,
                              unnest($13::BIGINT[]) AS warc_length) n
                   WHERE NOT EXISTS (
                       SELECT 1 FROM recover_captures c
                       WHERE c.archive = $1 AND c.source = $2 AND c.url = n.url
                         AND c.captured_at = n.captured_at)
                   QUALIFY row_number() OVER (PARTITION BY n.url, n.captured_at) = 1""",
                [
                    archive,
                    source,
                    rows.url,
                    rows.captured_at,
                    rows.day,
                    rows.day_second,
                    rows.urlkey,
                    rows.mimetype,
                    rows.status,
                    rows.digest,
                    rows.warc_file,
                    rows.warc_offset,
                    rows.warc_length,
                ],
            ).fetchall()
        save_listing(store, state)
    return int(added)


@dataclass(frozen=True, slots=True)
class Recovered:
    """What became of one listed capture: stored (with the page its record made, and the
    capture the archive served when it redirected to another), skipped or failed."""

    id: int
    state: str  # stored, moved (its snapshot serves another day's capture), skipped, failed
    reason: str | None = None
    served_at: datetime | None = None
    served_url: str | None = None
    archive_path: str | None = None
    page_key: str | None = None


def write_recovered(
    store: Store,
    archive: str,
    source: str,
    records: Sequence[Record],
    marks: Sequence[Recovered],
    now: datetime,
) -> WriteCounts:
    """Store the records of recovered captures and mark what became of each listed one,
    in one transaction: a capture is marked stored only with its page. A capture the
    archive served in place of the one asked for is marked stored too, where it is
    listed, so it is not fetched again."""

    def mark(counts: WriteCounts) -> None:
        ids = counts.capture_ids
        stored = [m for m in marks if m.state in ("stored", "moved")]
        store.con.execute(
            """UPDATE recover_captures AS c
               SET state = u.state, reason = u.reason, served_at = u.served_at,
                   archive_path = u.archive_path, capture_id = u.capture_id
               FROM (SELECT unnest($1::BIGINT[]) AS id, unnest($2::VARCHAR[]) AS state,
                            unnest($3::VARCHAR[]) AS reason,
                            unnest($4::TIMESTAMPTZ[]) AS served_at,
                            unnest($5::VARCHAR[]) AS archive_path,
                            unnest($6::BIGINT[]) AS capture_id) u
               WHERE c.id = u.id""",
            [
                [m.id for m in marks],
                [m.state for m in marks],
                [m.reason for m in marks],
                [m.served_at for m in marks],
                [m.archive_path for m in marks],
                [ids.get(m.page_key) if m.page_key else None for m in marks],
            ],
        )
        served = [m for m in stored if m.served_url is not None and m.served_at is not None]
        if served:
            store.con.execute(
                """UPDATE recover_captures AS c
                   SET state = 'stored', reason = NULL, served_at = u.served_at,
                       archive_path = u.archive_path, capture_id = u.capture_id
                   FROM (SELECT unnest($3::VARCHAR[]) AS url,
                                unnest($4::TIMESTAMPTZ[]) AS served_at,
                                unnest($5::VARCHAR[]) AS archive_path,
                                unnest($6::BIGINT[]) AS capture_id) u
                   WHERE c.archive = $1 AND c.source = $2 AND c.url = u.url
                     AND c.captured_at = u.served_at AND c.state <> 'stored'""",
                [
                    archive,
                    source,
                    [m.served_url for m in served],
                    [m.served_at for m in served],
                    [m.archive_path for m in served],
                    [ids.get(m.page_key) if m.page_key else None for m in served],
                ],
            )

    if records:
        return write_records(store, records, now, before_commit=mark)
    with transaction(store.con, store.path):
        mark(WriteCounts())
    return WriteCounts()
