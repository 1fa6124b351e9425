"""The store's schema: numbered SQL migrations shipped inside the package, applied in
order, each in a transaction with its record in schema_migrations."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path

import duckdb

from ticker.errors import StoreError
from ticker.store.transaction import cause, transaction

_MIGRATION_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@cache
def migrations() -> tuple[tuple[int, str, str], ...]:
    """The numbered migrations (version, name, SQL), in order."""
    found = []
    for item in resources.files("ticker.store").joinpath("migrations").iterdir():
        m = _MIGRATION_RE.match(item.name)
        if m:
            found.append((int(m.group(1)), m.group(2), item.read_text(encoding="utf-8")))
    if not found:  # a broken installation, not a user's mistake
        raise RuntimeError("no migrations found in the ticker.store package")
    return tuple(sorted(found))


def unapplied(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether a migration has not been applied to this database yet (any of them: one
    numbered below the newest applied can arrive later, from another line of work)."""
    try:
        applied = {v for (v,) in con.execute("SELECT version FROM schema_migrations").fetchall()}
    except duckdb.CatalogException:
        return True
    return any(version not in applied for version, _, _ in migrations())


def migrate(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Apply each numbered migration not yet recorded, each in its own transaction."""
    try:
        con.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,
                   applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp)"""
        )
        done = {v for (v,) in con.execute("SELECT version FROM schema_migrations").fetchall()}
    except duckdb.Error as exc:
        raise StoreError(path, f"cannot set up the database: {cause(exc)}") from exc
    for version, name, sql in migrations():
        if version in done:
            continue
        file = f"{version:03d}_{name}.sql"
        with transaction(con, path, f"migration {file} failed", duckdb.Error):
            con.execute(sql)
            con.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [version, name]
            )
