"""Export: the daily series as CSV, JSON or Parquet, byte-identical for the same data."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from pathlib import Path

from ticker.config import Config
from ticker.errors import UsageError
from ticker.store import Store

COLUMNS = ("source", "pair", "date", "rate", "change_pct")


def write_export(config: Config, fmt: str, out: Path | None) -> int:
    """Write the export; to a file it is written whole (temp file, then rename)."""
    if fmt == "parquet" and out is None:
        raise UsageError("parquet is binary: give --out FILE.parquet")
    if out is not None and not out.parent.exists():
        raise UsageError(f"{out}: directory {out.parent} does not exist")
    with Store.open(config.store_path, config.lock_timeout, read_only=True) as store:
        if fmt == "parquet":
            assert out is not None
            tmp = _temp_path(out)
            try:
                count = store.write_parquet(tmp)
                os.replace(tmp, out)
            finally:
                tmp.unlink(missing_ok=True)
            return count
        rows = [r.as_dict() for r in store.daily()]
    if fmt == "json":
        text = json.dumps(rows, indent=2) + "\n"
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buf.getvalue()
    if out is None:
        sys.stdout.write(text)
    else:
        tmp = _temp_path(out)
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return len(rows)


def _temp_path(out: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    return Path(name)
