"""What the tests share, besides pages (pages.py) and the local HTTP server (servers.py):
the one config builder (write_config), a project directory under tmp_path (Project), the
fixtures (`project`, `server`, `own_logging`, `no_ticker_config`), the ways to run
`ticker` (in this process, or as a real process), and the checks and damage tests share.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner, Result
from servers import LocalServer

from ticker.cli import cli

# The processes the tests start (hundreds of `ticker` runs) read compiled modules instead
# of compiling every module again, where the environment says not to write them.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

# --- configs -------------------------------------------------------------------------------

TomlValue = str | int | float | bool

# [http] for a source on the local server: every fault ends in seconds, not minutes.
# A test changes a key with `http=LOCAL_HTTP | {"retries": 0}`.
LOCAL_HTTP: MappingProxyType[str, TomlValue] = MappingProxyType(
    {
        "timeout": 2.0,
        "max_bytes": 5 * 1024 * 1024,
        "retries": 2,
        "backoff": 0,
        "max_retry_after": 2,
        "deadline": 60,
    }
)
# [schedule] for a daemon under test: a scrape every second, on time.
QUICK_SCHEDULE: MappingProxyType[str, TomlValue] = MappingProxyType(
    {"scrape": 1, "jitter": 0, "misfire_grace_time": 60}
)


def _toml(value: TomlValue | Sequence[str]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    return "[" + ", ".join(_toml(v) for v in value) + "]"


def write_config(
    directory: Path,
    *,
    store: str = "ticker.duckdb",
    lock_timeout: float = 0.5,
    url: str | None = None,
    pairs: Sequence[str] | None = None,
    http: Mapping[str, TomlValue] = LOCAL_HTTP,
    schedule: Mapping[str, TomlValue] = QUICK_SCHEDULE,
    archive: str | None = "pages",
    charts: str | None = "charts",
    extra: str = "",
) -> Path:
    """Write `directory`/config.toml and return its path. Paths in it are relative to it:
    the store, the page archive, the charts (None, or an empty `http` or `schedule`, leaves
    that table out: ticker's defaults). The one source is ticker's default (timesca, the
    real site, which no test fetches) unless `url` (a page on the local server) or `pairs`
    is given. `extra` is TOML added at the end: more tables, another [[sources]]."""
    lines = [f"[store]\npath = {_toml(store)}\nlock_timeout = {_toml(lock_timeout)}\n"]
    if url is not None or pairs is not None:
        source = {"name": "timesca", "timezone": "Asia/Almaty"}
        if url is not None:
            source["url"] = url
        lines.append("[[sources]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in source.items()))
        if pairs is not None:
            lines[-1] += f"pairs = {_toml(pairs)}\n"
    tables: dict[str, Mapping[str, TomlValue]] = {
        "http": http,
        "schedule": schedule,
        "archive": {"dir": archive} if archive is not None else {},
        "charts": {"dir": charts} if charts is not None else {},
    }
    for table, keys in tables.items():
        if keys:
            lines.append(f"[{table}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in keys.items()))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.toml"
    path.write_text("\n".join(lines) + extra, encoding="utf-8")
    return path


class Project:
    """A ticker project under tmp_path: config.toml (written by write_config: the store
    in db/, a 5 s lock_timeout, and `config`'s options), dumps/; commands run on it."""

    def __init__(self, root: Path, lock_timeout: float = 5, **config: Any) -> None:
        self.root = root
        self.dumps = root / "dumps"
        self.dumps.mkdir(parents=True, exist_ok=True)
        self.db = root / "db" / "ticker.duckdb"
        self.config = write_config(
            root, store="db/ticker.duckdb", lock_timeout=lock_timeout, **config
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
        """`ticker --config <config> ARGS` in this process."""
        return ticker_in_process(self.config, *args, env=env)

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


# --- running ticker ----------------------------------------------------------------------


def ticker_in_process(config: Path | None, *args: str, env: dict[str, str] | None = None) -> Result:
    """`ticker [--config CONFIG] ARGS` in this process, through click's CliRunner."""
    argv = ["--config", str(config)] if config is not None else []
    return CliRunner().invoke(cli, [*argv, *args], env=env)


def ticker_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a ticker process: this one's, without a TICKER_CONFIG from
    whoever runs the tests, and with `extra`."""
    env = dict(os.environ)
    env.pop("TICKER_CONFIG", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the processes leave no .pyc files behind
    env.update(extra or {})
    return env


def _process_args(
    config: Path | None, args: Sequence[str], cwd: Path | None
) -> tuple[list[str], Path | None]:
    cmd = [sys.executable, "-m", "ticker"]
    if config is not None:
        cmd += ["--config", str(config)]
        if cwd is None and config.is_absolute():
            cwd = config.parent
    return [*cmd, *args], cwd


def ticker_subprocess(
    config: Path | None,
    *args: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    check: bool = False,
    **run: Any,
) -> subprocess.CompletedProcess[Any]:
    """`python -m ticker [--config CONFIG] ARGS` as a real process, run to its end in
    `cwd` (by default the config's directory, as a user runs it from the project), its
    stdout and stderr captured as text unless `run` (subprocess.run's options) says
    otherwise. With `check`, a non-zero exit code fails the test."""
    argv, cwd = _process_args(config, args, cwd)
    run = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True} | run
    proc = subprocess.run(argv, cwd=cwd, env=ticker_env(env), timeout=timeout, check=False, **run)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"ticker {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def start_ticker(
    config: Path | None,
    *args: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    **popen: Any,
) -> subprocess.Popen[str]:
    """`python -m ticker [--config CONFIG] ARGS` started and left running (a daemon, or
    commands run at once), as ticker_subprocess runs it; `popen` is subprocess.Popen's
    options (its stdout and stderr are inherited unless they say)."""
    argv, cwd = _process_args(config, args, cwd)
    return subprocess.Popen(argv, text=True, cwd=cwd, env=ticker_env(env), **popen)


# --- what a test checks, and damage it does ------------------------------------------------


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
