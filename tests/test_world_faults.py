"""Faults of the world around the store: a full disk, a damaged, replaced or restored
database, a database held by another process, a pending directory that cannot be
written. Each ends in a message that names the cause, nothing fetched or stored is
lost (or it says so), `ticker status` shows what waits, and the next run recovers."""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import Project, one_error_line, text_page

from ticker import pipeline
from ticker.config import Source
from ticker.errors import StoreError
from ticker.models import Page
from ticker.store import PageStager, Store, migrations

NOW = datetime(2025, 3, 20, 6, 0, tzinfo=UTC)
ENOSPC = "No space left on device"


# --- a disk that fills up ------------------------------------------------------------------


class SmallDisk:
    """A 4 MB tmpfs under tmp_path that a test fills up and frees again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        with open(self.filler, "ab", buffering=0) as fh:
            for size in (1 << 16, 1 << 12, 1):
                try:
                    while True:
                        fh.write(b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    where = tmp_path / "small"
    where.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
        problem = mounted.stderr.strip() if mounted.returncode else ""
    except OSError as exc:
        problem = str(exc)
    if problem:
        pytest.skip(f"a full disk is staged on a small tmpfs; mounting one failed: {problem}")
    try:
        yield SmallDisk(where)
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _record(day: str) -> Any:
    body = text_page(day=day).encode()
    return pipeline.page_record(Page(origin=f"mem:{day}", body=body), Source())


def _write_pages(store: Store, tmp: Path) -> None:
    store.write_pages([_record("21 March 2025")])


def _write_staged(store: Store, tmp: Path) -> None:
    stager = PageStager(tmp, "batch")
    stager.add_page(0, 0, _record("21 March 2025"))
    stager.add_file("key", "mem:21", 1)
    stager.close()
    store.write_staged([stager.pages_path], [stager.files_path], NOW)


@pytest.mark.parametrize("write", [_write_pages, _write_staged], ids=["pages", "staged"])
def test_a_write_on_a_full_disk_names_the_cause_and_keeps_what_was_stored(
    small_disk: SmallDisk, tmp_path: Path, write: Callable[[Store, Path], None]
) -> None:
    db = small_disk.path / "ticker.duckdb"
    with Store.open(db) as store:
        store.write_pages([_record("20 March 2025")])
    small_disk.fill()
    with Store.open(db) as store, pytest.raises(StoreError) as info:
        write(store, tmp_path)
    message = str(info.value)
    assert message.startswith(f"{db}: cannot write to the database")
    assert ENOSPC in message and "rollback" not in message, message
    small_disk.free()
    with Store.open(db) as store:
        assert store.con.execute("SELECT count(*) FROM captures").fetchall() == [(1,)]
        write(store, tmp_path)  # the same write, with room: it lands whole
        days = store.con.execute("SELECT DISTINCT date FROM observations ORDER BY 1").fetchall()
    assert days == [(date(2025, 3, 20),), (date(2025, 3, 21),)]


def test_a_migration_on_a_full_disk_names_the_cause(small_disk: SmallDisk) -> None:
    db = small_disk.path / "old.duckdb"
    con = duckdb.connect(str(db))  # a store made by an older ticker: the first migration
    (version, name, first), *later = migrations()
    con.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
        " applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp)"
    )
    con.execute(first.read_text(encoding="utf-8"))
    con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
    con.close()
    assert later, "a later migration to apply"
    small_disk.fill()
    with pytest.raises(StoreError) as info, Store.open(db):
        pass
    message = str(info.value)
    assert f"migration {later[0][2].name} failed" in message
    assert ENOSPC in message and "rollback" not in message, message
    small_disk.free()
    with Store.open(db) as store:
        applied = store.con.execute("SELECT max(version) FROM schema_migrations").fetchall()
    assert applied == [(migrations()[-1][0],)]


def test_backfill_on_a_full_disk_is_one_line_and_loses_nothing(small_disk: SmallDisk) -> None:
    project = Project(small_disk.path / "project")
    first = project.write("a.txt", text_page(day="20 March 2025"))
    later = [project.write(f"b{i}.txt", text_page(day=f"2{i} March 2025")) for i in (1, 2)]
    assert project.backfill(first).exit_code == 0
    before = project.snapshot()
    small_disk.fill()

    result = project.backfill(*later)
    assert result.exit_code != 0
    line = one_error_line(result.stderr)
    assert str(project.db) in line and ENOSPC in line and "rollback" not in line, line
    assert project.snapshot() == before

    small_disk.free()
    again = project.backfill(*later)
    assert again.exit_code == 0, again.output
    assert "10 new" in again.output
