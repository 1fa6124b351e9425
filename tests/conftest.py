"""Shared helpers for the backfill, store, CLI, config, dumps and docs tests: a project
directory under tmp_path with its own config.toml, and ways to run `ticker` on it.
Pages are built in pages.py, the local HTTP server lives in servers.py.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner, Result
from servers import LocalServer

from ticker.cli import cli


class Project:
    """A ticker project under tmp_path: config.toml, db/, dumps/; commands run on it."""

    def __init__(self, root: Path, lock_timeout: float = 5, extra: str = "") -> None:
        self.root = root
        self.dumps = root / "dumps"
        self.dumps.mkdir(parents=True, exist_ok=True)
        self.config = root / "config.toml"
        self.db = root / "db" / "ticker.duckdb"
        self.config.write_text(
            f'[store]\npath = "db/ticker.duckdb"\nlock_timeout = {lock_timeout}\n{extra}',
            encoding="utf-8",
        )

    def write(self, name: str, data: str | bytes) -> Path:
        """A file under dumps/ (text is written as UTF-8)."""
        path = self.dumps / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            path.write_bytes(data)
        return path

    def run(self, *args: str, env: dict[str, str] | None = None) -> Result:
        """`ticker --config <config> ARGS` in this process, through click's CliRunner."""
        runner = CliRunner()
        return runner.invoke(cli, ["--config", str(self.config), *args], env=env)

    def backfill(self, *paths: str | Path, extra: Sequence[str] = ()) -> Result:
        targets = [str(p) for p in paths] or [str(self.dumps)]
        return self.run("backfill", *targets, *extra)

    def export(self, fmt: str = "csv") -> str:
        result = self.run("export", "--format", fmt)
        assert result.exit_code == 0, result.output
        return result.stdout

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        """Query the database directly (read-only, closed at once)."""
        con = duckdb.connect(str(self.db), read_only=True)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def table_counts(self) -> dict[str, int]:
        tables = ("captures", "observations", "sightings", "loaded_files")
        return {t: len(self.rows(f"SELECT 1 FROM {t}")) for t in tables}

    def snapshot(self) -> dict[str, list[tuple[object, ...]]]:
        """Every stored row that a later run must leave alone (times as text)."""
        return {
            "captures": self.rows(
                "SELECT id, source, origin, url, CAST(captured_at AS VARCHAR),"
                " CAST(loaded_at AS VARCHAR), content_hash, page_key, outcome, header_date,"
                " quote_date, date_basis, copies, detail FROM captures ORDER BY id"
            ),
            "observations": self.rows(
                "SELECT * FROM observations ORDER BY source, pair, date, revision"
            ),
            "sightings": self.rows("SELECT * FROM sightings ORDER BY ALL"),
        }


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path / "project")


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """The local HTTP server for this test: it serves what the test routes to it."""
    with LocalServer() as s:
        yield s


def ticker_subprocess(
    config: Path | None,
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """`python -m ticker [--config CONFIG] ARGS` as a real process."""
    cmd = [sys.executable, "-m", "ticker"]
    if config is not None:
        cmd += ["--config", str(config)]
    full_env = dict(os.environ)
    full_env.pop("TICKER_CONFIG", None)  # only what the test gives
    full_env.update(env or {})
    return subprocess.run(
        [*cmd, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def one_error_line(stderr: str) -> str:
    """The single 'error: ...' line a failing command prints, with no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def cut_short(db: Path, keep: float = 0.5) -> None:
    """Damage a DuckDB file as an interrupted copy does: keep only its first part."""
    os.truncate(db, int(db.stat().st_size * keep))


def zero_bytes_of(db: Path, table: str) -> None:
    """Damage a DuckDB file in place: 64 bytes of the first block holding `table`."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        ((block,),) = con.execute(
            "SELECT min(block_id) FROM pragma_storage_info($1) WHERE block_id >= 0", [table]
        ).fetchall()
        ((size,),) = con.execute("SELECT block_size FROM pragma_database_size()").fetchall()
    finally:
        con.close()
    with db.open("r+b") as fh:
        fh.seek(3 * 4096 + block * size + 100)  # blocks follow DuckDB's three 4 KB headers
        fh.write(bytes(64))


@pytest.fixture
def own_logging() -> Iterator[None]:
    """For a test running `ticker scrape` or `ticker run` in this process: they set up
    logging for the process (root level, a stderr handler), which is put back after."""
    root, urllib3 = logging.getLogger(), logging.getLogger("urllib3")
    level, handlers, urllib3_level = root.level, root.handlers[:], urllib3.level
    yield
    root.setLevel(level)
    root.handlers[:] = handlers
    urllib3.setLevel(urllib3_level)


@pytest.fixture
def no_ticker_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No TICKER_CONFIG from the environment of whoever runs the tests."""
    monkeypatch.delenv("TICKER_CONFIG", raising=False)
    yield
