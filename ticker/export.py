"""Export: the daily series as CSV, JSON or Parquet, byte-identical for the same data."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import duckdb

from ticker.config import Config
from ticker.errors import OutputError, UsageError
from ticker.models import Day
from ticker.output import check_file_place, output_error, write_bytes, write_file
from ticker.store import Store, read

COLUMNS = ("source", "pair", "date", "rate", "change_pct")
# The Parquet columns, with the types and NOT NULLs the store's daily view gives them.
PARQUET_TABLE = """CREATE TABLE export (source VARCHAR NOT NULL, pair VARCHAR NOT NULL,
    date DATE NOT NULL, rate VARCHAR NOT NULL, change_pct VARCHAR)"""
PARQUET_TYPES = {
    "source": "VARCHAR",
    "pair": "VARCHAR",
    "date": "DATE",
    "rate": "VARCHAR",
    "change_pct": "VARCHAR",
}


def write_export(config: Config, fmt: str, out: Path | None) -> int:
    """Write the export to `out` (see ticker.output: a regular file is replaced whole, a
    link, device or pipe written through) or to stdout; returns the number of rows."""
    if fmt == "parquet" and out is None:
        raise UsageError("parquet is binary: give --out FILE.parquet")
    if out is not None:
        check_file_place(out)  # before the database is opened
    with Store.open(config.store_path, config.lock_timeout, read_only=True) as store:
        if fmt == "parquet":
            assert out is not None
            return _write_parquet(store, out)
        days = read.daily(store)
    text = export_text(days, fmt)
    if out is None:
        sys.stdout.write(text)
    else:
        write_bytes(out, text.encode("utf-8"))
    return len(days)


def export_text(days: Sequence[Day], fmt: str) -> str:
    """The CSV or JSON export of these days (sorted by source, pair and date)."""
    rows = [day.as_dict() for day in days]
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def parquet_bytes(days: Sequence[Day]) -> bytes:
    """The Parquet export of these days, as `ticker export --format parquet` writes it (the
    same columns and types), made by an in-memory DuckDB in a private temporary directory."""
    with tempfile.TemporaryDirectory(prefix="ticker-export-") as scratch:
        staged = Path(scratch) / "export.csv"
        staged.write_text(export_text(days, "csv"), encoding="utf-8")
        out = Path(scratch) / "export.parquet"
        con = duckdb.connect(":memory:")
        try:
            con.execute(PARQUET_TABLE)
            con.execute(
                "INSERT INTO export SELECT * FROM read_csv($1, header = true, columns = $2)",
                [str(staged), PARQUET_TYPES],
            )
            con.table("export").write_parquet(str(out))
        finally:
            con.close()
        return out.read_bytes()


def _write_parquet(store: Store, out: Path) -> int:
    """DuckDB writes Parquet to a path of its own: a private temporary directory, from
    which the file is copied to `out` the same way as the other formats."""
    try:
        scratch_dir = tempfile.TemporaryDirectory(prefix="ticker-export-")
    except OSError as exc:
        raise output_error(tempfile.gettempdir(), exc) from exc
    with scratch_dir as scratch:
        tmp = Path(scratch) / "export.parquet"
        try:
            count = read.write_parquet(store, tmp)
        except duckdb.IOException as exc:
            raise OutputError(
                scratch, f"cannot write the Parquet file: {exc}", "set TMPDIR to a roomier place"
            ) from exc
        with tmp.open("rb") as src:
            write_file(out, lambda fh: shutil.copyfileobj(src, fh))
    return count
