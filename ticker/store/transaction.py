"""One transaction on the store, and how its failures read."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import duckdb

from ticker.errors import StoreError

# DuckDB errors that come from the world (the disk, memory, a damaged file), not from
# ticker's SQL: a write that meets one is reported as a StoreError naming the file.
WORLD_ERRORS: tuple[type[duckdb.Error], ...] = (
    duckdb.OperationalError,  # I/O (a full disk), a failed commit, the connection
    duckdb.FatalException,
    duckdb.InternalException,
    duckdb.PermissionException,
)


@contextmanager
def transaction(
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
                f"{failed}: {cause(exc)} (this write was undone; what was stored before is kept)",
            ) from exc
        raise


def cause(exc: BaseException) -> str:
    """DuckDB's message on one line, without its class prefix ("IO Error: ...")."""
    text = " ".join(str(exc).split())
    return re.sub(r"^[A-Za-z ]*Error: ", "", text)
