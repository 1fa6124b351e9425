"""Faults of the world around the store: a full disk, a damaged, replaced or restored
database, a database held by another process, a pending directory that cannot be
written. Each ends in a message that names the cause, nothing fetched or stored is
lost (or it says so), `ticker status` shows what waits, and the next run recovers."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from conftest import (
    LOCAL_HTTP,
    Project,
    cut_short,
    one_error_line,
    start_ticker,
    ticker_in_process,
    write_config,
)
from pages import html_page, text_page
from servers import LocalServer, conditional, html

from ticker import scrape as scrape_job
from ticker import spool
from ticker import status as status_job
from ticker.config import Config, Source, load_config
from ticker.errors import StoreError
from ticker.models import Page
from ticker.scheduler import Daemon
from ticker.sources.ticker import TickerReader
from ticker.store import Store
from ticker.store.migrate import migrations
from ticker.store.write import Stager, write, write_records

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
    return TickerReader().read(
        Page(origin=f"mem:{day}", body=body), Source(), now=NOW + timedelta(days=30)
    )


def _write_one(store: Store, tmp: Path) -> None:
    write_records(store, [_record("21 March 2025")], NOW)


def _write_staged(store: Store, tmp: Path) -> None:
    stager = Stager(tmp, "batch")
    stager.add(0, 0, _record("21 March 2025"))
    stager.add_file("key", "mem:21", 1)
    stager.close()
    write(store, [stager.pages_path], [stager.files_path], NOW)


@pytest.mark.parametrize("write", [_write_one, _write_staged], ids=["one", "staged"])
def test_a_write_on_a_full_disk_names_the_cause_and_keeps_what_was_stored(
    small_disk: SmallDisk, tmp_path: Path, write: Callable[[Store, Path], None]
) -> None:
    db = small_disk.path / "ticker.duckdb"
    with Store.open(db) as store:
        write_records(store, [_record("20 March 2025")], NOW)
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
    con.execute(first)
    con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
    con.close()
    assert later, "a later migration to apply"
    small_disk.fill()
    with pytest.raises(StoreError) as info, Store.open(db):
        pass
    message = str(info.value)
    assert f"migration {later[0][0]:03d}_{later[0][1]}.sql failed" in message
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


def test_a_store_made_on_a_full_disk_is_made_afresh_when_there_is_room(
    small_disk: SmallDisk,
) -> None:
    """Creating the database on a full disk fails in one line; what it leaves (a file of
    0 bytes) is no store: readers say there is none yet, and the next write makes it."""
    project = Project(small_disk.path / "project")
    page = project.write("a.txt", text_page(day="20 March 2025"))
    small_disk.fill()
    failed = project.backfill(page)
    assert failed.exit_code != 0 and ENOSPC in one_error_line(failed.stderr)
    small_disk.free()
    latest = project.run("latest")
    assert latest.exit_code == 0 and "no database yet" in latest.stderr
    again = project.backfill(page)
    assert again.exit_code == 0 and "5 new" in again.output, again.output


def test_a_store_of_0_bytes_is_no_store(project: Project) -> None:
    """A database file of 0 bytes (a creation cut short) holds nothing: a reader reads an
    empty store and says there is none, a writer makes it afresh."""
    project.db.parent.mkdir(parents=True, exist_ok=True)
    project.db.write_bytes(b"")
    latest = project.run("latest")
    assert latest.exit_code == 0 and "no database yet" in latest.stderr
    assert project.db.stat().st_size == 0  # a reader changes nothing
    page = project.write("a.txt", text_page(day="20 March 2025"))
    assert "5 new" in project.backfill(page).output
    assert project.export().count("\n") == 6


# --- scrape: what the store cannot take waits, and is stored later ------------------------


def daily_pages(server: LocalServer, first: int = 20, days: int = 6) -> None:
    """Each fetch of / gives the page of the next day of March 2025 (the last repeats)."""
    server.route("/", *(html(html_page(day=f"{d} March 2025")) for d in range(first, first + days)))


def stored_days(config: Config) -> list[int]:
    with Store.open(config.store_path, read_only=True) as store:
        rows = store.con.execute("SELECT DISTINCT date FROM observations ORDER BY 1").fetchall()
    return [d.day for (d,) in rows]


def spool_files(config: Config) -> list[str]:
    pending = config.archive_dir / spool.SPOOL_DIR
    return sorted(p.suffix for p in pending.iterdir()) if pending.is_dir() else []


def test_scrapes_on_a_full_disk_wait_in_the_spool_and_are_stored_when_there_is_room(
    tmp_path: Path, server: LocalServer, small_disk: SmallDisk
) -> None:
    daily_pages(server)
    config = load_config(
        write_config(tmp_path, url=server.url("/"), http=LOCAL_HTTP | {"retries": 0})
    )
    config = replace(config, store_path=small_disk.path / "ticker.duckdb")
    assert scrape_job.scrape(config, NOW)[0].outcome == "ok"
    small_disk.fill()

    for hour in (1, 2, 3):  # a scrape a day, each page dated its day
        [attempt] = scrape_job.scrape(config, NOW + timedelta(days=hour))
        assert attempt.outcome == "store_error", attempt.error
        assert ENOSPC in (attempt.error or "") and "rollback" not in (attempt.error or "")
        assert "the next scrape stores the page from the archive" in (attempt.error or "")
        # each later scrape retried the earlier ones: they stay pending, never set aside
        assert spool_files(config) == [".json"] * hour

    [s] = status_job.status(config, NOW + timedelta(days=3))
    assert s.waiting == 3 and ENOSPC in (s.waiting_because or "") and s.unsettled
    result = ticker_in_process(config.path, "status")
    assert result.exit_code == 1
    assert f"timesca: waiting: 3 attempts in {config.archive_dir / '.pending'}" in result.output

    small_disk.free()
    [attempt] = scrape_job.scrape(config, NOW + timedelta(days=4))
    assert attempt.outcome == "ok"
    assert spool_files(config) == []
    assert stored_days(config) == [20, 21, 22, 23, 24]
    [s] = status_job.status(config, NOW + timedelta(days=4))
    assert (s.waiting, s.unstored, s.unreadable_spooled) == (0, 0, 0)


def _overwrite(db: Path) -> None:
    db.write_bytes(b"this is not a DuckDB file any more\n" * 200)


def _truncate(db: Path) -> None:  # an interrupted copy: it opens, its writes fail
    cut_short(db)


@pytest.mark.parametrize("damage", [_overwrite, _truncate], ids=["overwritten", "truncated"])
def test_a_damaged_store_leaves_the_attempts_pending_until_it_is_moved_aside(
    tmp_path: Path, server: LocalServer, damage: Callable[[Path], None]
) -> None:
    daily_pages(server)
    config = load_config(
        write_config(tmp_path, url=server.url("/"), http=LOCAL_HTTP | {"retries": 0})
    )
    assert scrape_job.scrape(config, NOW)[0].outcome == "ok"
    damage(config.store_path)
    for hour in (1, 2):  # a scrape a day, each page dated its day
        [attempt] = scrape_job.scrape(config, NOW + timedelta(days=hour))
        assert attempt.outcome == "store_error" and str(config.store_path) in (attempt.error or "")
        assert spool_files(config) == [".json"] * hour

    config.store_path.rename(config.store_path.with_suffix(".broken"))  # as the message says
    [attempt] = scrape_job.scrape(config, NOW + timedelta(days=3))
    assert attempt.outcome == "ok" and spool_files(config) == []
    assert stored_days(config) == [21, 22, 23]  # every page fetched since it broke


@pytest.fixture
def lock_holder(tmp_path: Path) -> Iterator[Callable[[Path], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(db: Path) -> subprocess.Popen[bytes]:
        # It takes the lock as soon as it is free (a job of a daemon may hold it a moment).
        code = (
            "import duckdb, sys, time\n"
            "for _ in range(3000):\n"
            "    try:\n"
            "        c = duckdb.connect(sys.argv[1])\n"
            "        break\n"
            "    except duckdb.IOException:\n"
            "        time.sleep(0.01)\n"
            "else:\n"
            "    sys.exit('the store stayed locked for 30 s')\n"
            "print('ready', flush=True)\n"
            "sys.stdin.read()\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        return proc

    yield start
    for proc in procs:
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()
        proc.wait(timeout=10)


def release(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)


def test_scrape_waits_at_most_lock_timeout_in_all(
    tmp_path: Path, server: LocalServer, lock_holder: Callable[[Path], Any]
) -> None:
    daily_pages(server)
    cfg = write_config(
        tmp_path, url=server.url("/"), http=LOCAL_HTTP | {"retries": 0}, lock_timeout=2
    )
    assert ticker_in_process(cfg, "scrape").exit_code == 0
    holder = lock_holder(load_config(cfg).store_path)
    t0 = time.monotonic()
    result = ticker_in_process(cfg, "scrape")
    took = time.monotonic() - t0
    release(holder)
    assert result.exit_code == 1 and "timesca store_locked" in result.stdout
    assert "waited 2 s" in result.stdout
    assert took < 2 + 1.5, f"{took:.1f} s: the validators' read and the store each waited"


def test_a_daemon_killed_while_a_job_waits_for_the_store_loses_no_page(
    tmp_path: Path, server: LocalServer, lock_holder: Callable[[Path], Any]
) -> None:
    """SIGKILL while a job of `ticker run` waits for a locked store: the page it fetched
    waits in the spool (written ahead), `ticker status` says so, and the next scrape
    stores it."""
    daily_pages(server, days=30)
    cfg = write_config(
        tmp_path, url=server.url("/"), http=LOCAL_HTTP | {"retries": 0}, lock_timeout=30
    )
    config = load_config(cfg)
    daemon = start_ticker(cfg, "run", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(stored_days(config)) >= 1)  # the first job: 20 March
        holder = lock_holder(config.store_path)
        # A job fetched and archived a page and wrote it ahead to the spool: it waits for
        # the store now (a job under way when the lock was taken may be that one).
        wait_until(lambda: spool_files(config) != [])
        time.sleep(0.3)
    finally:
        daemon.kill()
        daemon.wait(timeout=10)
    release(holder)
    served, stored = len(server.seen), stored_days(config)
    assert len(stored) < served  # the page of the killed job is not in the store

    now = datetime.now(UTC)  # the daemon's own clock dated its capture
    [s] = status_job.status(config, now)
    assert len(stored) + s.waiting == served and "did not finish" in (s.waiting_because or "")
    [attempt] = scrape_job.scrape(config, now)
    assert attempt.outcome == "ok"
    assert stored_days(config) == list(range(20, 20 + served + 1)) and spool_files(config) == []


def wait_until(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "waited in vain"
        time.sleep(0.05)


def test_the_capture_time_is_when_the_page_was_fetched_after_a_wait_for_the_store(
    tmp_path: Path, server: LocalServer, lock_holder: Callable[[Path], Any]
) -> None:
    """A job that first waits for a locked store (to read its validators) dates its page
    by when it was fetched, after the wait, not by when the job began."""
    server.route("/", html(html_page(day=None)))  # no date line: dated by capture time
    cfg = write_config(
        tmp_path, url=server.url("/"), http=LOCAL_HTTP | {"retries": 0}, lock_timeout=10
    )
    config = load_config(cfg)
    with Store.open(config.store_path):
        pass
    holder = lock_holder(config.store_path)
    threading.Timer(1.5, release, [holder]).start()
    [attempt] = scrape_job.scrape(config, NOW)
    assert attempt.outcome == "ok"
    assert attempt.started_at >= NOW + timedelta(seconds=1)  # the wait, then the fetch
    assert attempt.started_at - NOW < timedelta(seconds=1.5 + 8)


def test_an_attempt_neither_stored_nor_spooled_is_reported_not_kept(
    tmp_path: Path, server: LocalServer, lock_holder: Callable[[Path], Any]
) -> None:
    daily_pages(server)
    cfg = write_config(
        tmp_path, url=server.url("/"), http=LOCAL_HTTP | {"retries": 0}, lock_timeout=0.3
    )
    config = load_config(cfg)
    assert ticker_in_process(cfg, "scrape").exit_code == 0
    pending = config.archive_dir / spool.SPOOL_DIR
    shutil.rmtree(pending, ignore_errors=True)  # (each scrape writes ahead there)
    pending.write_text("a file where the spool goes")
    holder = lock_holder(config.store_path)
    result = ticker_in_process(cfg, "scrape")
    release(holder)
    assert result.exit_code == 1
    [line] = result.stdout.splitlines()
    assert line.startswith("timesca store_locked:") and "NOT KEPT" in line, line
    assert f"`ticker backfill {config.archive_dir}` stores it" in line

    # status sees the page that was fetched and archived but is not in the store
    status = ticker_in_process(cfg, "status", "--json")
    assert status.exit_code == 1
    [row] = json.loads(status.stdout)
    assert row["unstored_pages"] == 1 and row["last_outcome"] == "ok"
    table = ticker_in_process(cfg, "status")
    assert table.exit_code == 1 and "timesca: unstored: 1 page in" in table.stdout

    loaded = ticker_in_process(cfg, "backfill", str(config.archive_dir))
    assert loaded.exit_code == 0, loaded.output
    assert stored_days(config) == [20, 21]
    [s] = status_job.status(config, NOW)
    assert s.unstored == 0  # backfilled: in the store now


def test_the_daemon_holds_what_it_cannot_keep_and_stores_it_at_the_next_job(
    tmp_path: Path, server: LocalServer, lock_holder: Callable[[Path], Any]
) -> None:
    daily_pages(server)
    config = load_config(
        write_config(
            tmp_path, url=server.url("/"), http=LOCAL_HTTP | {"retries": 0}, lock_timeout=0.3
        )
    )
    config.archive_dir.write_text("a file: no archive, no spool")
    daemon = Daemon(config, clock=lambda: NOW)
    holder = lock_holder(config.store_path)
    attempts = scrape_job.scrape(config, NOW, session=None, state=daemon.state)
    release(holder)
    [held] = attempts
    assert held.outcome == "store_locked" and "held in memory" in (held.error or ""), held
    assert len(daemon.state.unkept) == 1

    daemon.clock = lambda: NOW + timedelta(minutes=30)
    daemon.scrape_job()
    assert daemon.state.unkept == []
    assert stored_days(config) == [20, 21]  # the held page's quotes too
    with Store.open(config.store_path, read_only=True) as store:
        rows = store.con.execute("SELECT outcome, new FROM attempts ORDER BY started_at")
        assert rows.fetchall() == [("store_locked", 5), ("archive_error", 5)]
    daemon.close()


def test_a_stopping_daemon_spools_what_it_holds(
    tmp_path: Path, server: LocalServer, lock_holder: Callable[[Path], Any]
) -> None:
    daily_pages(server)
    config = load_config(
        write_config(
            tmp_path, url=server.url("/"), http=LOCAL_HTTP | {"retries": 0}, lock_timeout=0.3
        )
    )
    daemon = Daemon(config, clock=lambda: NOW)
    pending = config.archive_dir / spool.SPOOL_DIR
    config.archive_dir.mkdir()
    pending.write_text("blocked for now")
    holder = lock_holder(config.store_path)
    daemon.scrape_job()
    release(holder)
    assert len(daemon.state.unkept) == 1
    pending.unlink()
    daemon.close()
    assert spool_files(config) == [".json"]
    assert scrape_job.scrape(config, NOW + timedelta(hours=1))[0].outcome == "ok"
    assert stored_days(config) == [20, 21]


# --- conditional GET: validators belong to the store they came from -----------------------


def _move_aside(db: Path, backup: Path) -> None:
    db.rename(db.with_suffix(".old"))


def _restore_backup(db: Path, backup: Path) -> None:
    shutil.copy(backup, db)


def _delete(db: Path, backup: Path) -> None:
    db.unlink()


@pytest.mark.parametrize(
    "swap", [_move_aside, _restore_backup, _delete], ids=["moved-aside", "restored", "deleted"]
)
def test_a_304_is_taken_only_from_the_store_that_holds_the_page(
    tmp_path: Path, server: LocalServer, swap: Callable[[Path, Path], None]
) -> None:
    server.route("/", conditional(html_page(day="20 March 2025"), '"v1"'))
    config = load_config(
        write_config(tmp_path, url=server.url("/"), http=LOCAL_HTTP | {"retries": 0})
    )
    backup = tmp_path / "backup.duckdb"
    with Store.open(config.store_path):
        pass
    shutil.copy(config.store_path, backup)  # a backup from before the page was stored
    state = scrape_job.ScrapeState()  # kept between jobs, as the daemon keeps it
    assert scrape_job.scrape(config, NOW, state=state)[0].outcome == "ok"
    swap(config.store_path, backup)

    [attempt] = scrape_job.scrape(config, NOW + timedelta(hours=1), state=state)
    assert attempt.outcome == "ok" and attempt.new == 5, attempt
    conditional_get, whole = server.seen[1:]
    assert conditional_get.headers.get("If-None-Match") == '"v1"'
    assert "If-None-Match" not in whole.headers  # fetched again, whole, in the same job
    assert stored_days(config) == [20]

    [again] = scrape_job.scrape(config, NOW + timedelta(hours=2), state=state)
    assert again.outcome == "not_modified"  # this store holds the page now


# --- status: what waits, for every source it belongs to -----------------------------------


def test_status_names_what_waits_for_each_source(
    tmp_path: Path, server: LocalServer, lock_holder: Callable[[Path], Any]
) -> None:
    server.route("/a", html(html_page(day="20 March 2025")))
    server.route("/b", html(b"<h1>busy</h1>", 503))
    other = f'\n[[sources]]\nname = "other"\nurl = "{server.url("/b")}"\n'
    cfg = write_config(
        tmp_path,
        url=server.url("/a"),
        http=LOCAL_HTTP | {"retries": 0},
        lock_timeout=0.3,
        extra=other,
    )
    config = load_config(cfg)
    ticker_in_process(cfg, "status")  # creates the store
    holder = lock_holder(config.store_path)
    scraped = ticker_in_process(cfg, "scrape")
    release(holder)
    assert scraped.exit_code == 1
    (config.archive_dir / spool.SPOOL_DIR / "torn.json").write_text('{"id": "ab')

    result = ticker_in_process(cfg, "status", "--json")
    assert result.exit_code == 1
    rows = {r["source"]: r for r in json.loads(result.stdout)}
    assert rows["timesca"]["waiting_attempts"] == 1 and rows["other"]["waiting_attempts"] == 1
    assert "locked" in rows["timesca"]["waiting_because"]
    assert rows["timesca"]["unreadable_spooled"] == rows["other"]["unreadable_spooled"] == 1
    table = ticker_in_process(cfg, "status")
    assert table.exit_code == 1
    for name in ("timesca", "other"):
        assert f"{name}: waiting: 1 attempt in" in table.stdout
    assert "set aside: 1 spooled attempt in" in table.stdout

    ticker_in_process(cfg, "scrape")  # records them; sets the torn aside
    [ok, failed] = status_job.status(config, NOW)
    assert ok.waiting == failed.waiting == 0 and ok.unreadable_spooled == 1
    assert sorted(p.name for p in spool.set_aside_attempts(config)) == ["torn.bad"]
