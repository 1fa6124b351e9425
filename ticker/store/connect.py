"""Opening the store: a short-lived connection per piece of work, a bounded wait while
another process holds the file, and a damaged file refused in one line."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from ticker.errors import StoreError, StoreLockedError
from ticker.store.migrate import migrate, unapplied

_PID_RE = re.compile(r"\(PID (\d+)\)")


class Store:
    """A short-lived connection: open it for one piece of work, then close it.

    DuckDB lets one process open a file at a time, so every command opens it for the work
    it does. DuckDB 2 refuses new work on a connection with an unfinished result, so
    every query is read to the end (fetchall), never left half-read with fetchone.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path) -> None:
        self.con = con
        self.path = path

    @classmethod
    @contextmanager
    def open(
        cls,
        path: Path,
        lock_timeout: float = 30.0,
        *,
        read_only: bool = False,
        upgrade: bool = True,
    ) -> Iterator[Store]:
        """Open (creating and migrating when needed) and always close.

        A read-only open of a file that does not exist creates nothing: it reads an empty
        store held in memory. A file DuckDB cannot read back (cut short, corrupt) raises
        StoreError, at the open or at any query made inside the `with`. With
        `upgrade=False` a read-only open never writes: a file whose schema is older than
        this ticker raises StoreError instead of being migrated.
        """
        if not read_only and _holds_nothing(path):
            # A file of 0 bytes is a creation cut short (a full disk, a kill): it holds
            # nothing, and DuckDB would refuse it forever; it is made afresh.
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if read_only and not Store.exists(path):
            con = duckdb.connect(":memory:")
            try:
                migrate(con, path)
                yield cls(con, path)
            finally:
                con.close()
            return
        if not read_only:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(path, f"cannot create its directory: {exc.strerror}") from exc
        created = not path.exists()
        try:
            con = connect(path, lock_timeout, read_only=read_only)
        except StoreError:
            if created and _holds_nothing(path):  # not left behind to be refused later
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
        try:
            try:
                _check_whole(con, path)
                if read_only and unapplied(con):
                    if not upgrade:
                        raise StoreError(
                            path,
                            "written by an older ticker, its schema is not upgraded yet "
                            "(any other ticker command upgrades it, e.g. `ticker status`)",
                        )
                    con.close()
                    con = connect(path, lock_timeout, read_only=False)
                    read_only = False
                if not read_only and unapplied(con):
                    migrate(con, path)
                yield cls(con, path)
            except duckdb.Error as exc:
                if not _unreadable(exc):
                    raise
                raise unusable(path, str(exc)) from exc
        finally:
            con.close()

    @staticmethod
    def exists(path: Path) -> bool:
        """Whether there is a store at `path` (a file of 0 bytes is none: see open)."""
        return path.exists() and not _holds_nothing(path)

    def verify(self) -> None:
        """Read every column of every table, so that each block of the file passes DuckDB's
        checksum: a damaged block raises StoreError here rather than going unnoticed by a
        query that does not need it."""
        for table in _tables(self.con):
            self.con.execute(
                "SELECT count(*), bit_xor(hash(COLUMNS(*))) FROM query_table($1)", [table]
            ).fetchall()


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
                raise unusable(path, text) from exc
            if "lock" not in text.lower():
                raise StoreError(path, f"cannot open the database: {text}") from exc
            if time.monotonic() >= deadline:
                m = _PID_RE.search(text)
                holder = describe_process(int(m.group(1))) if m else None
                raise StoreLockedError(path, time.monotonic() - started, holder) from exc
            time.sleep(min(delay, max(deadline - time.monotonic(), 0.001)))
            # Try again at least every 0.1 s: a reader (`ticker serve` takes the file for
            # a few tens of ms) is gone long before a longer sleep would end.
            delay = min(delay * 2, 0.1)
        except duckdb.Error as exc:
            raise unusable(path, str(exc)) from exc


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


def _holds_nothing(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        """SELECT schema_name || '.' || table_name FROM duckdb_tables()
           WHERE database_name = current_database() AND NOT temporary"""
    ).fetchall()
    return [table for (table,) in rows]


def _check_whole(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Refuse a file shorter than the blocks its tables and metadata use. DuckDB reads a
    block only when a query needs it, so a file cut short (an interrupted copy) would
    answer some queries (`ticker status`) and fail others."""
    size = path.stat().st_size
    ((block_size,),) = con.execute(
        "SELECT block_size FROM pragma_database_size() WHERE database_name = current_database()"
    ).fetchall()
    blocks = [b for (b,) in con.execute("SELECT block_id FROM pragma_metadata_info()").fetchall()]
    for table in _tables(con):
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
