"""The commands as a user runs them: latest, history, export, --help, --version, and the
wait for a database another process holds. Through click's CliRunner, and a few as real
processes (`python -m ticker`)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from conftest import (
    Project,
    cut_short,
    one_error_line,
    ticker_in_process,
    ticker_subprocess,
    zero_bytes_of,
)
from pages import DEC_09, FOUR_PAIRS, MARCH_20, html_page, text_page
from servers import LocalServer, html

from ticker import __version__
from ticker.cli import cli
from ticker.store import Store


@pytest.fixture
def loaded(project: Project) -> Project:
    """A store with three dates: 14 June 2023 (four pairs), 20 March and 9 December 2025."""
    project.write("c.txt", text_page(DEC_09, "09 December 2025"))
    project.write("a.txt", text_page(FOUR_PAIRS, "14 June 2023"))
    project.write("b.txt", text_page(MARCH_20, "20 March 2025"))
    result = project.backfill()
    assert result.exit_code == 0, result.output
    return project


# --- latest ---------------------------------------------------------------------------------


def test_latest_prints_the_newest_quote_of_each_pair(loaded: Project) -> None:
    result = loaded.run("latest")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "source   pair     date           rate  change_pct",
        "timesca  KGS/USD  2025-12-09  0.01144          0%",
        "timesca  KZT/USD  2025-12-09  0.00194         -0%",
        "timesca  TJS/USD  2025-12-09  0.10844      -0.46%",
        "timesca  TMT/USD  2025-12-09  0.28571       0.28%",
        "timesca  UZS/USD  2025-12-09  0.00008          0%",
    ]


def test_latest_json(loaded: Project) -> None:
    result = loaded.run("latest", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[1] == {
        "source": "timesca",
        "pair": "KZT/USD",
        "date": "2025-12-09",
        "rate": "0.00194",
        "change_pct": "-0",
    }
    assert [r["pair"] for r in rows] == ["KGS/USD", "KZT/USD", "TJS/USD", "TMT/USD", "UZS/USD"]
    assert all(set(r) == {"source", "pair", "date", "rate", "change_pct"} for r in rows)


def test_latest_on_an_empty_store(project: Project) -> None:
    result = project.run("latest")
    assert result.exit_code == 0
    assert "no quotes stored yet" in result.stdout
    assert json.loads(project.run("latest", "--json").stdout) == []


def test_latest_takes_each_pair_from_its_own_newest_date(project: Project) -> None:
    project.write("old.txt", text_page(MARCH_20, "20 March 2025"))
    project.write("new.txt", text_page(FOUR_PAIRS, "14 June 2026"))  # no TMT/USD
    project.backfill()
    rows = {r["pair"]: r["date"] for r in json.loads(project.run("latest", "--json").stdout)}
    assert rows["KZT/USD"] == "2026-06-14"
    assert rows["TMT/USD"] == "2025-03-20"


# --- history --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["KZT/USD", "kzt", "KZT-USD", " kzt/usd "])
def test_history_of_a_pair(loaded: Project, name: str) -> None:
    result = loaded.run("history", name, "--json")
    assert result.exit_code == 0, result.output
    assert [(r["date"], r["rate"], r["change_pct"]) for r in json.loads(result.stdout)] == [
        ("2023-06-14", "0.00224", "-0.23"),
        ("2025-03-20", "0.00199", "-0"),
        ("2025-12-09", "0.00194", "-0"),
    ]


def test_history_since_and_until(loaded: Project) -> None:
    result = loaded.run("history", "KZT", "--since", "2024-01-01", "--until", "2025-06-30")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "source   pair     date           rate  change_pct",
        "timesca  KZT/USD  2025-03-20  0.00199         -0%",
    ]
    empty = loaded.run("history", "TMT", "--until", "2020-01-01")
    assert empty.stdout.strip() == "no quotes of TMT/USD stored in that range"


@pytest.mark.parametrize("name", ["RUB", "EUR/USD", "KZT/USD; DROP TABLE x", "K"])
def test_history_of_an_unknown_pair_is_refused(loaded: Project, name: str) -> None:
    result = loaded.run("history", name)
    assert result.exit_code == 2
    message = one_error_line(result.stderr)
    assert "unknown pair" in message and "KZT/USD" in message


def test_history_of_an_unknown_source_is_refused(loaded: Project) -> None:
    result = loaded.run("history", "KZT", "--source", "nope")
    assert result.exit_code == 2
    assert "no source named 'nope'" in one_error_line(result.stderr)


# --- export ---------------------------------------------------------------------------------


def test_export_csv_is_sorted_and_exact(loaded: Project) -> None:
    text = loaded.export("csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0] == "source,pair,date,rate,change_pct"
    assert len(rows) == 14
    keys = [(r["source"], r["pair"], r["date"]) for r in rows]
    assert keys == sorted(keys)
    assert "timesca,UZS/USD,2023-06-14,0.00009,-0" in text.splitlines()
    assert not any(r["pair"] == "TMT/USD" and r["date"] == "2023-06-14" for r in rows)


def test_export_json_has_the_same_rows(loaded: Project) -> None:
    as_json = json.loads(loaded.export("json"))
    as_csv = list(csv.DictReader(io.StringIO(loaded.export("csv"))))
    assert as_json == as_csv


def test_two_exports_are_byte_identical(loaded: Project, tmp_path: Path) -> None:
    for fmt in ("csv", "json"):
        assert loaded.export(fmt) == loaded.export(fmt)
        a, b = tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}"
        assert loaded.run("export", "--format", fmt, "--out", str(a)).exit_code == 0
        assert loaded.run("export", "--format", fmt, "--out", str(b)).exit_code == 0
        assert a.read_bytes() == b.read_bytes()
        assert a.read_text(encoding="utf-8") == loaded.export(fmt)


def test_export_parquet_reads_back(loaded: Project, tmp_path: Path) -> None:
    out = tmp_path / "rates.parquet"
    result = loaded.run("export", "--format", "parquet", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert f"wrote 14 rows to {out}" in result.stderr
    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT source, pair, CAST(date AS VARCHAR), rate, change_pct FROM read_parquet(?)",
            [str(out)],
        ).fetchall()
    finally:
        con.close()
    as_csv = list(csv.reader(io.StringIO(loaded.export("csv"))))[1:]
    assert [list(r) for r in rows] == as_csv
    again = tmp_path / "again.parquet"
    loaded.run("export", "--format", "parquet", "--out", str(again))
    assert again.read_bytes() == out.read_bytes()


def test_export_parquet_needs_an_output_file(loaded: Project) -> None:
    result = loaded.run("export", "--format", "parquet")
    assert result.exit_code == 2
    assert "--out" in one_error_line(result.stderr)


def test_export_into_a_missing_directory_is_refused(loaded: Project, tmp_path: Path) -> None:
    result = loaded.run("export", "--out", str(tmp_path / "nowhere" / "x.csv"))
    assert result.exit_code == 2
    assert "does not exist" in one_error_line(result.stderr)


def test_export_of_an_empty_store(project: Project) -> None:
    assert project.export("csv") == "source,pair,date,rate,change_pct\n"
    assert project.export("json") == "[]\n"


# --- help, version, python -m ------------------------------------------------------------------


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_help_of_every_command_has_an_example(command: str) -> None:
    result = ticker_in_process(None, command, "--help")
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert f"ticker {command}" in result.output or command == "run"


def test_top_level_help_lists_the_commands() -> None:
    result = ticker_in_process(None, "--help")
    assert result.exit_code == 0
    for command in ("backfill", "latest", "history", "export"):
        assert command in result.output
    assert "Example" in result.output


def test_version() -> None:
    result = ticker_in_process(None, "--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"ticker, version {__version__}"


def test_python_dash_m_ticker_runs(loaded: Project) -> None:
    version = ticker_subprocess(None, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"ticker, version {__version__}"
    latest = ticker_subprocess(loaded.config, "latest", "--json")
    assert latest.returncode == 0, latest.stderr
    assert len(json.loads(latest.stdout)) == 5


def test_an_unknown_command_is_a_usage_error() -> None:
    proc = ticker_subprocess(None, "frobnicate")
    assert proc.returncode == 2
    assert "No such command" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_database_file_that_is_not_duckdb_is_one_clean_line(project: Project) -> None:
    project.db.parent.mkdir(parents=True)
    project.db.write_text("not a database\n" * 200, encoding="utf-8")
    proc = ticker_subprocess(project.config, "latest")
    assert proc.returncode == 2
    assert str(project.db) in one_error_line(proc.stderr)


# --- the lock: another process holds the database ----------------------------------------------

HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def _hold(db: Path, seconds: float) -> subprocess.Popen[str]:
    """A second process that opens the DuckDB file and keeps it for `seconds`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_a_locked_database_fails_after_lock_timeout_naming_the_holder(tmp_path: Path) -> None:
    project = Project(tmp_path / "p", lock_timeout=1)
    project.write("a.txt", text_page())
    assert project.backfill().exit_code == 0
    holder = _hold(project.db, 30)
    try:
        started = time.monotonic()
        proc = ticker_subprocess(project.config, "latest")
        elapsed = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()

    assert proc.returncode == 2
    message = one_error_line(proc.stderr)
    assert str(project.db) in message
    assert f"process {holder.pid}" in message
    assert "lock_timeout" in message
    assert 1.0 <= elapsed < 8, elapsed  # waited about lock_timeout, then gave up


def test_a_command_waits_for_a_short_hold_and_succeeds(tmp_path: Path) -> None:
    project = Project(tmp_path / "p", lock_timeout=20)
    project.write("a.txt", text_page())
    assert project.backfill().exit_code == 0
    holder = _hold(project.db, 1.5)
    try:
        started = time.monotonic()
        proc = ticker_subprocess(project.config, "latest", "--json")
        elapsed = time.monotonic() - started
    finally:
        holder.wait(timeout=30)

    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 5
    assert 1.0 <= elapsed < 15, elapsed


def test_backfill_waits_for_the_lock_too(tmp_path: Path) -> None:
    project = Project(tmp_path / "p", lock_timeout=1)
    project.write("a.txt", text_page())
    assert project.backfill().exit_code == 0
    project.write("b.txt", text_page(DEC_09, "09 December 2025"))
    holder = _hold(project.db, 30)
    try:
        proc = ticker_subprocess(project.config, "backfill", str(project.dumps))
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2
    assert f"process {holder.pid}" in one_error_line(proc.stderr)
    # nothing was half-written: the next run loads the new file
    again = project.backfill()
    assert "5 new, 0 already stored" in again.stdout


# --- a damaged database, and none at all --------------------------------------------------------

READ_ONLY = {
    "latest": ["latest"],
    "latest --json": ["latest", "--json"],
    "history": ["history", "KZT"],
    "export": ["export"],
    "export --format json": ["export", "--format", "json"],
    "status": ["status"],
    "status --json": ["status", "--json"],
    "check": ["check"],
    "chart": ["chart"],
}
DAMAGED_MESSAGE = "not a usable DuckDB database ("
MOVE_ASIDE = "); move it aside to start afresh"


@pytest.mark.parametrize("damage", ["cut short", "bytes lost"])
@pytest.mark.parametrize("command", [*sorted(READ_ONLY), "backfill"])
def test_a_damaged_database_is_one_line_from_every_command(
    loaded: Project, command: str, damage: str
) -> None:
    if damage == "cut short":
        cut_short(loaded.db)
    else:
        zero_bytes_of(loaded.db, "observations")
    # a revision of a stored day: the backfill must read what is stored for it
    loaded.write("new.txt", text_page(FOUR_PAIRS, "09 December 2025"))
    args = (
        ["backfill", str(loaded.dumps / "new.txt")] if command == "backfill" else READ_ONLY[command]
    )

    result = loaded.run(*args)

    assert result.exit_code == 2, result.output
    message = one_error_line(result.stderr)
    assert message.startswith(f"error: {loaded.db}: {DAMAGED_MESSAGE}"), message
    assert message.endswith(MOVE_ASIDE), message
    assert not (loaded.root / "charts").exists()


def test_a_damaged_database_in_a_real_process(loaded: Project) -> None:
    cut_short(loaded.db, keep=0.9)
    proc = ticker_subprocess(loaded.config, "status")
    assert proc.returncode == 2
    assert DAMAGED_MESSAGE in one_error_line(proc.stderr)
    assert proc.stdout == ""  # no partial table before the error


@pytest.mark.usefixtures("own_logging")
def test_scrape_into_a_damaged_database_records_a_store_error(
    tmp_path: Path, server: LocalServer
) -> None:
    server.route("/", html(html_page()))
    project = Project(tmp_path / "p", url=server.url("/"))
    project.write("a.txt", text_page())
    assert project.backfill().exit_code == 0
    cut_short(project.db)
    result = project.run("scrape")

    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    (line,) = result.stdout.splitlines()
    assert line.startswith("timesca store_error: HTTP 200")
    assert f"{project.db}: {DAMAGED_MESSAGE}" in line and MOVE_ASIDE in line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", sorted(READ_ONLY))
def test_a_read_only_command_creates_no_database(project: Project, command: str) -> None:
    """Without a database it answers as on an empty one, says so, and creates nothing."""
    missing = project.run(*READ_ONLY[command])
    assert missing.exception is None or isinstance(missing.exception, SystemExit)
    assert sorted(p.name for p in project.root.iterdir()) == ["config.toml", "dumps"]
    assert missing.stderr.splitlines() == [
        f"no database yet at {project.db}; make one with `ticker backfill PATH` or `ticker scrape`"
    ]

    with Store.open(project.db):  # an empty database
        pass
    empty = project.run(*READ_ONLY[command])
    assert missing.exit_code == empty.exit_code
    assert _timeless(missing.stdout) == _timeless(empty.stdout)
    assert empty.stderr == ""


def _timeless(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if '"now"' not in line)


def test_latest_in_a_bare_directory_creates_nothing(tmp_path: Path) -> None:
    proc = ticker_subprocess(None, "latest", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "no quotes stored yet" in proc.stdout
    assert proc.stderr.startswith(f"no database yet at {tmp_path / 'db' / 'ticker.duckdb'};")
    assert list(tmp_path.iterdir()) == []
