"""Store stage: the DuckDB file, its migrations, and every read and write of it."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
            if "lock" not in text.lower():
                raise StoreError(path, f"cannot open the database: {text}") from None
            if time.monotonic() >= deadline:
                m = _PID_RE.search(text)
                holder = describe_process(int(m.group(1))) if m else None
                raise StoreLockedError(path, time.monotonic() - started, holder) from None
            time.sleep(min(delay, max(deadline - time.monotonic(), 0.001)))
            delay = min(delay * 2, 0.5)
        except duckdb.Error as exc:
            raise StoreError(
                path, f"not a usable DuckDB database ({exc}); move it aside to start afresh"
            ) from None


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
        """Open (creating and migrating when needed) and always close."""
        if read_only and not path.exists():
            read_only = False
        if not read_only:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(path, f"cannot create its directory: {exc.strerror}") from None
        con = connect(path, lock_timeout, read_only=read_only)
        try:
            if read_only and _pending(con):
                con.close()
                con = connect(path, lock_timeout, read_only=False)
                read_only = False
            if not read_only:
                _migrate(con, path)
            yield cls(con, path)
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
    ) -> WriteCounts:
        """Store pages and their quotes in one transaction: all of a page lands or none.

        Idempotent: a page already loaded (same page_key) adds nothing; a quote whose
        values are already stored for its date adds only a sighting; other values for a
        stored date add a new revision.
        """
        counts = WriteCounts()
        now = now or datetime.now().astimezone()
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
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
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
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

    # --- reads --------------------------------------------------------------------------

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
    con.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,
               applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp)"""
    )
    done = {v for (v,) in con.execute("SELECT version FROM schema_migrations").fetchall()}
    for version, name, file in migrations():
        if version in done:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(file.read_text(encoding="utf-8"))
            con.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [version, name]
            )
            con.execute("COMMIT")
        except duckdb.Error as exc:
            con.execute("ROLLBACK")
            raise StoreError(path, f"migration {file.name} failed: {exc}") from None
