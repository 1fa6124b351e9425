"""Store stage: the DuckDB file, its migrations, and every read and write of it."""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from ticker.errors import StoreError, StoreLockedError
from ticker.models import Point, Quote, Series

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "db" / "migrations"
_MIGRATION_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_PID_RE = re.compile(r"\(PID (\d+)\)")
_RECORD_NO = re.compile(r"#\d+$")


@dataclass(frozen=True, slots=True)
class PageRecord:
    """A parsed page ready to store: one capture row and the quotes it adds."""

    page_key: str
    source: str
    origin: str
    url: str | None
    captured_at: datetime | None
    content_hash: str
    outcome: str
    header_date: date | None
    quote_date: date | None
    date_basis: str | None
    parser_version: int
    copies: int
    detail: str | None
    quotes: tuple[Quote, ...] = ()  # stored only when the page is ok and dated


@dataclass
class WriteCounts:
    pages_new: int = 0
    pages_known: int = 0
    new: int = 0
    already: int = 0
    revised: int = 0
    capture_ids: dict[str, int] = field(default_factory=dict)  # page_key -> id


# Staged pages: backfill's worker processes write parsed pages to CSV files in this layout,
# and Store.write_staged loads them with one read_csv, so no page crosses into the main
# process as a Python object. file_no and page_no give the order the pages were read in.
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
    "quotes": "VARCHAR",  # 'KGS/USD 0.01164 0.87;KZT/USD 0.00199 -0' (validated tokens)
}
STAGE_FILE_COLUMNS = {"file_key": "VARCHAR", "path": "VARCHAR", "pages": "INTEGER"}


class PageStager:
    """Writes PageRecords, and the files they were read from, to CSV files for
    Store.write_staged. Text that is not valid UTF-8 (a file name with stray bytes) is
    written with backslash escapes, as DuckDB keeps only valid UTF-8."""

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

    def add_page(self, file_no: int, page_no: int, p: PageRecord) -> None:
        quotes = ";".join(f"{q.base}/{q.quote} {q.rate} {q.change}" for q in p.quotes)
        self._page_rows.writerow(
            (
                file_no,
                page_no,
                p.page_key,
                p.source,
                p.origin,
                p.url,
                int(p.url is None),
                p.captured_at.isoformat() if p.captured_at else None,
                p.content_hash,
                p.outcome,
                p.header_date,
                p.quote_date,
                p.date_basis,
                p.parser_version,
                p.copies,
                p.detail,
                quotes,
            )
        )
        self.pages += 1

    def add_file(self, file_key: str, path: str, pages: int) -> None:
        self._file_rows.writerow((file_key, path, pages))

    def close(self) -> None:
        self._pages_fh.close()
        self._files_fh.close()


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the daily series."""

    source: str
    pair: str
    date: date
    rate: str
    change_pct: str
    revisions: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "pair": self.pair,
            "date": self.date.isoformat(),
            "rate": self.rate,
            "change_pct": self.change_pct,
        }


def migrations(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, str, Path]]:
    """The numbered migration files, in order."""
    if not directory.is_dir():
        raise StoreError(directory, "migrations directory not found; is ticker installed with -e?")
    found = []
    for path in sorted(directory.iterdir()):
        m = _MIGRATION_RE.match(path.name)
        if m:
            found.append((int(m.group(1)), m.group(2), path))
    return found


def describe_process(pid: int) -> str:
    """'process 4856 (ticker run)' from /proc, or just the PID where that is not readable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"process {pid}"
    args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    for i, arg in enumerate(args):
        if (
            arg.endswith("/ticker")
            or arg == "ticker"
            or (arg == "-m" and args[i + 1 :][:1] == ["ticker"])
        ):
            rest = [a for a in args[i + 1 :] if not a.startswith("-") and a != "ticker"]
            return f"process {pid} (ticker {rest[0] if rest else ''})".replace(" )", ")")
    name = Path(args[0]).name if args else "?"
    return f"process {pid} ({name})"


def connect(
    path: Path, lock_timeout: float, *, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """Open the DuckDB file, waiting up to lock_timeout while another process holds it."""
    deadline = time.monotonic() + lock_timeout
    delay = 0.02
    started = time.monotonic()
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            text = str(exc)
            if _unreadable(exc) or "not a valid duckdb database" in text.lower():
                raise unusable(path, text) from None
            if "lock" not in text.lower():
                raise StoreError(path, f"cannot open the database: {text}") from None
            if time.monotonic() >= deadline:
                m = _PID_RE.search(text)
                holder = describe_process(int(m.group(1))) if m else None
                raise StoreLockedError(path, time.monotonic() - started, holder) from None
            time.sleep(min(delay, max(deadline - time.monotonic(), 0.001)))
            delay = min(delay * 2, 0.5)
        except duckdb.Error as exc:
            raise unusable(path, str(exc)) from None


def unusable(path: Path, why: str) -> StoreError:
    """The error for a file DuckDB cannot use: not a database, cut short, corrupt."""
    return StoreError(path, f"not a usable DuckDB database ({why}); move it aside to start afresh")


def _unreadable(exc: duckdb.Error) -> bool:
    """Whether a DuckDB error says the file could not be read back: a block missing (a
    file cut short) or failing its checksum. Other errors (SQL that does not parse or
    bind, a constraint) are bugs and keep their tracebacks."""
    text = str(exc).lower()
    return "corrupt database file" in text or (
        isinstance(exc, duckdb.IOException) and "could not read" in text
    )


def _check_whole(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Refuse a file shorter than the blocks its tables and metadata use. DuckDB reads a
    block only when a query needs it, so a file cut short (an interrupted copy) would
    answer some queries (`ticker status`) and fail others."""
    size = path.stat().st_size
    ((block_size,),) = con.execute(
        "SELECT block_size FROM pragma_database_size() WHERE database_name = current_database()"
    ).fetchall()
    blocks = [b for (b,) in con.execute("SELECT block_id FROM pragma_metadata_info()").fetchall()]
    tables = con.execute(
        """SELECT schema_name || '.' || table_name FROM duckdb_tables()
           WHERE database_name = current_database() AND NOT temporary"""
    ).fetchall()
    for (table,) in tables:
        ((top,),) = con.execute(
            """SELECT max(greatest(block_id, coalesce(list_max(additional_block_ids), -1)))
               FROM pragma_storage_info($1) WHERE persistent""",
            [table],
        ).fetchall()
        blocks.append(top)
    used = max((b for b in blocks if b is not None), default=-1) + 1
    if used * block_size > size:
        raise unusable(
            path,
            f"the file has {size} bytes, less than the {used} blocks of {block_size} bytes "
            "it uses: a copy cut short?",
        )


class Store:
    """A short-lived connection: open it for one piece of work, then close it.

    DuckDB 2 refuses new work on a connection with an unfinished result, so every query
    here is read to the end (fetchall), never left half-read with fetchone.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path) -> None:
        self.con = con
        self.path = path

    @classmethod
    @contextmanager
    def open(
        cls, path: Path, lock_timeout: float = 30.0, *, read_only: bool = False
    ) -> Iterator[Store]:
        """Open (creating and migrating when needed) and always close.

        A read-only open of a file that does not exist creates nothing: it reads an empty
        store held in memory. A file DuckDB cannot read back (cut short, corrupt) raises
        StoreError, at the open or at any query made inside the `with`.
        """
        if read_only and not path.exists():
            con = duckdb.connect(":memory:")
            try:
                _migrate(con, path)
                yield cls(con, path)
            finally:
                con.close()
            return
        if not read_only:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(path, f"cannot create its directory: {exc.strerror}") from None
        con = connect(path, lock_timeout, read_only=read_only)
        try:
            try:
                _check_whole(con, path)
                if read_only and _pending(con):
                    con.close()
                    con = connect(path, lock_timeout, read_only=False)
                    read_only = False
                if not read_only and _pending(con):
                    _migrate(con, path)
                yield cls(con, path)
            except duckdb.Error as exc:
                if not _unreadable(exc):
                    raise
                raise unusable(path, str(exc)) from None
        finally:
            con.close()

    # --- writes -------------------------------------------------------------------------

    def loaded_file_keys(self) -> set[str]:
        return {k for (k,) in self.con.execute("SELECT file_key FROM loaded_files").fetchall()}

    def write_pages(
        self,
        pages: Sequence[PageRecord],
        files: Sequence[tuple[str, str, int]] = (),
        now: datetime | None = None,
        before_commit: Callable[[WriteCounts], None] | None = None,
    ) -> WriteCounts:
        """Store pages and their quotes in one transaction: all of a page lands or none.
        `before_commit` runs inside that transaction with the counts (the scrape records
        its attempt there, so a page never lands without its attempt or the other way).

        Idempotent: a page already loaded (same page_key) adds nothing; a quote whose
        values are already stored for its date adds only a sighting; other values for a
        stored date add a new revision.
        """
        counts = WriteCounts()
        now = now or datetime.now().astimezone()
        con = self.con
        with _transaction(con, self.path):
            keys = list(dict.fromkeys(p.page_key for p in pages))
            existing = dict(
                con.execute(
                    "SELECT page_key, id FROM captures WHERE page_key IN (SELECT unnest($1))",
                    [keys],
                ).fetchall()
            )
            counts.capture_ids.update(existing)
            fresh: list[PageRecord] = []
            seen: set[str] = set(existing)
            for page in pages:
                if page.page_key in seen:
                    counts.pages_known += 1
                    continue
                seen.add(page.page_key)
                fresh.append(page)
            counts.pages_new = len(fresh)
            ids = [
                i
                for (i,) in con.execute(
                    "SELECT nextval('capture_id_seq') FROM range($1)", [len(fresh)]
                ).fetchall()
            ]
            for page, cid in zip(fresh, ids, strict=True):
                counts.capture_ids[page.page_key] = cid
            obs, sights = self._classify(fresh, ids, counts)
            if fresh:
                self._insert_captures(fresh, ids, now)
            if obs:
                con.execute(
                    """INSERT INTO observations
                       SELECT unnest($1), unnest($2), unnest($3)::DATE, unnest($4),
                              unnest($5)::DECIMAL(20,10), unnest($6),
                              unnest($7)::DECIMAL(12,4), unnest($8), unnest($9)""",
                    _columns(obs, 9),
                )
            if sights:
                con.execute(
                    """INSERT INTO sightings
                       SELECT unnest($1), unnest($2), unnest($3), unnest($4)::DATE, unnest($5)""",
                    _columns(sights, 5),
                )
            if files:
                con.execute(
                    """INSERT INTO loaded_files
                       SELECT unnest($1), unnest($2), unnest($3), $4
                       ON CONFLICT DO NOTHING""",
                    [*_columns(files, 3), now],
                )
            if before_commit is not None:
                before_commit(counts)
        return counts

    def _classify(
        self, pages: Sequence[PageRecord], ids: Sequence[int], counts: WriteCounts
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Sort each quote into new, already stored or revised; build the rows to insert."""
        wanted = [
            (p.source, q.pair, p.quote_date)
            for p in pages
            if p.quote_date is not None
            for q in p.quotes
        ]
        known: dict[tuple[str, str, date], dict[tuple[str, str], int]] = {}
        if wanted:
            rows = self.con.execute(
                """SELECT o.source, o.pair, o.date, o.revision, o.rate_text, o.change_text
                   FROM observations o
                   SEMI JOIN (SELECT unnest($1) AS source, unnest($2) AS pair,
                                     unnest($3)::DATE AS date) k
                   USING (source, pair, date)""",
                _columns(list(set(wanted)), 3),
            ).fetchall()
            for source, pair, day, revision, rate, change in rows:
                known.setdefault((source, pair, day), {})[(rate, change)] = revision
        obs: list[tuple[Any, ...]] = []
        sights: list[tuple[Any, ...]] = []
        for page, cid in zip(pages, ids, strict=True):
            if page.quote_date is None:
                continue
            for q in page.quotes:
                key = (page.source, q.pair, page.quote_date)
                versions = known.get(key)
                if versions is None:
                    versions = known[key] = {}
                    counts.new += 1
                elif (q.rate, q.change) in versions:
                    counts.already += 1
                else:
                    counts.revised += 1
                revision = versions.get((q.rate, q.change))
                if revision is None:
                    revision = versions[(q.rate, q.change)] = len(versions) + 1
                    obs.append(
                        (
                            page.source,
                            q.pair,
                            page.quote_date,
                            revision,
                            q.rate,
                            q.rate,
                            q.change,
                            q.change,
                            cid,
                        )
                    )
                sights.append((cid, page.source, q.pair, page.quote_date, revision))
        return obs, sights

    def _insert_captures(
        self, pages: Sequence[PageRecord], ids: Sequence[int], now: datetime
    ) -> None:
        rows = [
            (
                cid,
                p.source,
                p.origin,
                p.url,
                p.captured_at,
                p.content_hash,
                p.page_key,
                p.outcome,
                p.header_date,
                p.quote_date,
                p.date_basis,
                p.parser_version,
                p.copies,
                p.detail,
            )
            for p, cid in zip(pages, ids, strict=True)
        ]
        self.con.execute(
            """INSERT INTO captures
               (id, source, origin, url, captured_at, loaded_at, content_hash, page_key,
                outcome, header_date, quote_date, date_basis, parser_version, copies, detail)
               SELECT unnest($1), unnest($2), unnest($3), unnest($4)::VARCHAR,
                      unnest($5)::TIMESTAMPTZ, $15, unnest($6), unnest($7), unnest($8),
                      unnest($9)::DATE, unnest($10)::DATE, unnest($11)::VARCHAR,
                      unnest($12), unnest($13), unnest($14)::VARCHAR""",
            [*_columns(rows, 14), now],
        )

    def write_staged(
        self, pages_csv: Sequence[Path], files_csv: Sequence[Path], now: datetime
    ) -> WriteCounts:
        """write_pages for pages staged by PageStager: the same rules and counts, done in
        SQL over whole batches (backfill loads tens of thousands of pages at a time)."""
        counts = WriteCounts()
        con = self.con
        # One thread: faster for batches this size, and it leaves the other cores to the
        # backfill workers reading the next batch.
        con.execute("SET threads = 1")
        try:
            with _transaction(con, self.path):
                if pages_csv:
                    self._apply_stage(pages_csv, now, counts)
                if files_csv:
                    con.execute(
                        f"""INSERT INTO loaded_files
                            SELECT file_key, path, pages, $2::TIMESTAMPTZ
                            FROM {_READ_CSV.format(columns=_struct(STAGE_FILE_COLUMNS))}
                            QUALIFY row_number() OVER (PARTITION BY file_key) = 1
                            ON CONFLICT DO NOTHING""",
                        [[str(p) for p in files_csv], now],
                    )
        finally:
            # Tidying only (temporary tables end with the connection): after a failed
            # write it may fail too, and must not hide why the write failed.
            with suppress(duckdb.Error):
                for table in ("stage", "fresh0", "fresh", "qsets", "qv", "vc"):
                    con.execute(f"DROP TABLE IF EXISTS temp.{table}")
                con.execute("RESET threads")
        return counts

    def _apply_stage(self, pages_csv: Sequence[Path], now: datetime, counts: WriteCounts) -> None:
        con = self.con
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE stage AS
                SELECT * FROM {_READ_CSV.format(columns=_struct(STAGE_COLUMNS))}""",
            [[str(p) for p in pages_csv]],
        )
        # Pages not loaded before, each once (its first reading in this batch), numbered
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
        # The rules of write_pages, worked out per distinct value rather than per quote
        # (pages of one date mostly print the same ticker): the first quote of a (source,
        # pair, date) not stored yet is new; a value stored or seen earlier in the batch is
        # already stored; another value is a revision, numbered after the stored ones in
        # the order first seen. Capture ids follow reading order, so min(id) is the first.
        con.execute(
            """CREATE OR REPLACE TEMP TABLE qsets AS
               SELECT source, quote_date::DATE AS date, quotes, min(id) AS first_id,
                      count(*) AS n
               FROM fresh WHERE quote_date IS NOT NULL AND quotes IS NOT NULL
               GROUP BY source, quote_date, quotes"""
        )
        con.execute(
            """CREATE OR REPLACE TEMP TABLE qv AS
               SELECT source, date, quotes, first_id, n, split_part(x, ' ', 1) AS pair,
                      split_part(x, ' ', 2) AS rate_text, split_part(x, ' ', 3) AS change_text
               FROM (SELECT *, unnest(string_split(quotes, ';')) AS x FROM qsets)"""
        )
        con.execute(
            """CREATE OR REPLACE TEMP TABLE vc AS
               WITH vals AS (
                   SELECT source, pair, date, rate_text, change_text,
                          min(first_id) AS capture_id, sum(n) AS n
                   FROM qv GROUP BY ALL
               ), known AS (
                   SELECT source, pair, date, rate_text, change_text, revision
                   FROM observations
                   SEMI JOIN (SELECT DISTINCT source, pair, date FROM vals)
                   USING (source, pair, date)
               )
               SELECT v.*, kv.revision AS db_revision, kn.n AS db_count,
                      v.capture_id = min(v.capture_id) OVER (PARTITION BY source, pair, date)
                          AS key_first
               FROM vals v
               LEFT JOIN (SELECT source, pair, date, rate_text, change_text,
                                 min(revision) AS revision
                          FROM known GROUP BY ALL) kv
                 USING (source, pair, date, rate_text, change_text)
               LEFT JOIN (SELECT source, pair, date, count(*) AS n FROM known GROUP BY ALL) kn
                 USING (source, pair, date)"""
        )
        (new, revised, quotes), *_ = con.execute(
            """SELECT count(*) FILTER (WHERE db_count IS NULL AND key_first),
                      count(*) FILTER (WHERE db_revision IS NULL
                                       AND NOT (db_count IS NULL AND key_first)),
                      coalesce(sum(n), 0)
               FROM vc"""
        ).fetchall()
        counts.new, counts.revised = int(new), int(revised)
        counts.already = int(quotes) - counts.new - counts.revised
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
                capture_id)
               SELECT source, pair, date, revision, rate_text::DECIMAL(20, 10), rate_text,
                      change_text::DECIMAL(12, 4), change_text, capture_id
               FROM vc WHERE added"""
        )
        # Every page sights each of its quotes: its set's values, with their revisions.
        con.execute(
            """INSERT INTO sightings (capture_id, source, pair, date, revision)
               WITH revs AS (
                   SELECT qv.source, qv.date, qv.quotes,
                          list(struct_pack(pair := qv.pair, revision := vc.revision)) AS r
                   FROM qv JOIN vc USING (source, pair, date, rate_text, change_text)
                   GROUP BY ALL
               )
               SELECT id, source, s.pair, date, s.revision
               FROM (SELECT f.id, f.source, f.quote_date::DATE AS date, unnest(revs.r) AS s
                     FROM fresh f JOIN revs
                       ON revs.source = f.source AND revs.date = f.quote_date::DATE
                      AND revs.quotes = f.quotes)"""
        )

    # --- reads --------------------------------------------------------------------------

    def verify(self) -> None:
        """Read every column of every table, so that each block of the file passes DuckDB's
        checksum: a damaged block raises StoreError here rather than going unnoticed by a
        query that does not need it."""
        tables = self.con.execute(
            """SELECT schema_name || '.' || table_name FROM duckdb_tables()
               WHERE database_name = current_database() AND NOT temporary"""
        ).fetchall()
        for (table,) in tables:
            self.con.execute(
                "SELECT count(*), bit_xor(hash(COLUMNS(*))) FROM query_table($1)", [table]
            ).fetchall()

    def latest(self, pairs: Sequence[str] | None = None) -> list[Row]:
        """The newest day of each source and pair."""
        return self._rows(
            """SELECT source, pair, date, rate_text, change_text FROM daily
               WHERE $1 IS NULL OR list_contains($1, pair)
               QUALIFY row_number() OVER (PARTITION BY source, pair ORDER BY date DESC) = 1
               ORDER BY source, pair""",
            [list(pairs) if pairs else None],
        )

    def history(
        self,
        pair: str,
        since: date | None = None,
        until: date | None = None,
        source: str | None = None,
    ) -> list[Row]:
        return self._rows(
            """SELECT source, pair, date, rate_text, change_text FROM daily
               WHERE pair = $1 AND ($2 IS NULL OR date >= $2) AND ($3 IS NULL OR date <= $3)
                 AND ($4 IS NULL OR source = $4)
               ORDER BY source, date""",
            [pair, since, until, source],
        )

    def daily(self, source: str | None = None) -> list[Row]:
        """The whole daily series, sorted by source, pair and date."""
        return self._rows(
            """SELECT source, pair, date, rate_text, change_text FROM daily
               WHERE $1 IS NULL OR source = $1
               ORDER BY source, pair, date""",
            [source],
        )

    def write_parquet(self, out: Path) -> int:
        rel = self.con.sql(
            """SELECT source, pair, date, rate_text AS rate, change_text AS change_pct
               FROM daily ORDER BY source, pair, date"""
        )
        rel.write_parquet(str(out))
        return int(self.con.execute("SELECT count(*) FROM daily").fetchall()[0][0])

    def series(
        self,
        source: str,
        pairs: Sequence[str],
        since: date | None = None,
        until: date | None = None,
    ) -> list[Series]:
        """Each pair's daily series in a window, oldest first (pairs without data: empty)."""
        rows = self.con.execute(
            """SELECT pair, date, rate, rate_text, change_pct, change_text FROM daily
               WHERE source = $1 AND list_contains($2, pair)
                 AND ($3 IS NULL OR date >= $3) AND ($4 IS NULL OR date <= $4)
               ORDER BY pair, date""",
            [source, list(pairs), since, until],
        ).fetchall()
        points: dict[str, list[Point]] = {p: [] for p in pairs}
        for pair, day, rate, rate_text, change, change_text in rows:
            points[pair].append(Point(day, Decimal(rate), rate_text, Decimal(change), change_text))
        return [Series(source, p, tuple(points[p])) for p in pairs]

    def date_span(self, source: str | None = None) -> tuple[date | None, date | None]:
        first, last = self.con.execute(
            "SELECT min(date), max(date) FROM daily WHERE $1 IS NULL OR source = $1", [source]
        ).fetchall()[0]
        return first, last

    def _rows(self, sql: str, params: list[Any]) -> list[Row]:
        return [Row(*r) for r in self.con.execute(sql, params).fetchall()]

    # --- attempts (scrape daemon: one row per live fetch) -------------------------------

    def record_attempts(self, attempts: Sequence[Attempt], now: datetime) -> None:
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
        self.con.execute(
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

    def validators(self, source: str, url: str) -> tuple[str | None, str | None, str] | None:
        """ETag, Last-Modified and page key of the newest ok attempt whose page is stored:
        a 304 against them is safe while this store holds that page."""
        rows = self.con.execute(
            """SELECT a.etag, a.last_modified, c.page_key
               FROM attempts a JOIN captures c ON c.id = a.capture_id
               WHERE a.source = $1 AND a.url = $2 AND a.outcome = 'ok'
               ORDER BY a.started_at DESC LIMIT 1""",
            [source, url],
        ).fetchall()
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def holds_page(self, page_key: str) -> bool:
        rows = self.con.execute(
            "SELECT count(*) FROM captures WHERE page_key = $1", [page_key]
        ).fetchall()
        return bool(rows[0][0])

    def archive_names_since(self, source: str, since: datetime | None) -> set[str]:
        """The archive file names of the pages of `source` the store knows, captured at
        `since` or later: those of its recorded attempts, and those loaded by backfill."""
        rows = self.con.execute(
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

    def source_health(self, source: str) -> SourceHealth:
        """The facts `ticker status` reports for one source (times as epoch ms)."""
        ok = list(SUCCESS_OUTCOMES)
        last = self.con.execute(
            """SELECT epoch_ms(started_at), outcome, http_status, error, url FROM attempts
               WHERE source = $1 ORDER BY started_at DESC, recorded_at DESC LIMIT 1""",
            [source],
        ).fetchall()
        (success_ms, failures), *_ = self.con.execute(
            """WITH s AS (SELECT max(started_at) AS last_ok FROM attempts
                          WHERE source = $1 AND list_contains($2, outcome))
               SELECT epoch_ms((SELECT last_ok FROM s)),
                      count(*) FILTER (WHERE NOT list_contains($2, outcome)
                                       AND started_at > coalesce((SELECT last_ok FROM s),
                                                                 '-infinity'::TIMESTAMPTZ))
               FROM attempts WHERE source = $1""",
            [source, ok],
        ).fetchall()
        (newest,), *_ = self.con.execute(
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


# The staged CSV files, read exactly as PageStager writes them: no sniffing, no header.
_READ_CSV = """read_csv($1, header = false, auto_detect = false, delim = ',', quote = '"',
                    escape = '"', max_line_size = 1073741824, columns = {columns})"""


def _struct(columns: dict[str, str]) -> str:
    return "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in columns.items()) + "}"


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Row tuples to column lists, for one INSERT ... SELECT unnest(...) per table."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(col) for col in zip(*rows, strict=True)]


def _pending(con: duckdb.DuckDBPyConnection) -> bool:
    try:
        applied = con.execute("SELECT max(version) FROM schema_migrations").fetchall()[0][0]
    except duckdb.CatalogException:
        return True
    return applied is None or applied < migrations()[-1][0]


def _migrate(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Apply each numbered migration not yet recorded, each in its own transaction."""
    try:
        con.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,
                   applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp)"""
        )
        done = {v for (v,) in con.execute("SELECT version FROM schema_migrations").fetchall()}
    except duckdb.Error as exc:
        raise StoreError(path, f"cannot set up the database: {_cause(exc)}") from None
    for version, name, file in migrations():
        if version in done:
            continue
        with _transaction(con, path, f"migration {file.name} failed", duckdb.Error):
            con.execute(file.read_text(encoding="utf-8"))
            con.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                [version, name],
            )


# DuckDB errors that come from the world (the disk, memory, a damaged file), not from
# ticker's SQL: a write that meets one is reported as a StoreError naming the file.
WORLD_ERRORS: tuple[type[duckdb.Error], ...] = (
    duckdb.OperationalError,  # I/O (a full disk), a failed commit, the connection
    duckdb.FatalException,
    duckdb.InternalException,
    duckdb.PermissionException,
)


@contextmanager
def _transaction(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    failed: str = "cannot write to the database",
    world_errors: type[duckdb.Error] | tuple[type[duckdb.Error], ...] = WORLD_ERRORS,
) -> Iterator[None]:
    """BEGIN ... COMMIT, or ROLLBACK on any error while keeping that error: a COMMIT that
    failed (the disk full) has ended the transaction already, and the ROLLBACK's own
    complaint ("no transaction is active") must not hide the cause. A fault of the world
    becomes a StoreError naming the database and the cause; bugs keep their traceback."""
    try:
        con.execute("BEGIN TRANSACTION")
        yield
        con.execute("COMMIT")
    except BaseException as exc:
        with suppress(duckdb.Error):
            con.execute("ROLLBACK")
        if isinstance(exc, world_errors):
            raise StoreError(
                path,
                f"{failed}: {_cause(exc)} (this write was undone; what was stored before is kept)",
            ) from exc
        raise


def _cause(exc: BaseException) -> str:
    """DuckDB's message on one line, without its class prefix ("IO Error: ...")."""
    text = " ".join(str(exc).split())
    return re.sub(r"^[A-Za-z ]*Error: ", "", text)


# --- attempts: records of the scrape daemon ------------------------------------------------

SUCCESS_OUTCOMES = ("ok", "not_modified")  # the successes among fetch.FetchOutcome


@dataclass(frozen=True, slots=True)
class Attempt:
    """One fetch of one source's page and what came of it."""

    id: str  # a UUID made by ticker, so a late (spooled) record is never doubled
    source: str
    url: str
    started_at: datetime  # aware; also the capture time of the page
    duration: float  # seconds
    outcome: str
    http_status: int | None = None
    nbytes: int = 0
    error: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    final_url: str | None = None
    archive_path: str | None = None
    capture_id: int | None = None
    new: int = 0
    already: int = 0
    revised: int = 0

    @property
    def success(self) -> bool:
        return self.outcome in SUCCESS_OUTCOMES


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
