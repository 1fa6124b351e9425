"""Concurrency: one DuckDB file, many processes. A DuckDB file can be open in one
process at a time, so every command opens it only for its work and waits (at most
[store] lock_timeout) while another holds it; a wait that runs out says what it waited
for and who holds it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pytest
from conftest import LOCAL_HTTP, QUICK_SCHEDULE, start_ticker, ticker_subprocess, write_config
from pages import html_page, simulate, write_dumps
from servers import LocalServer, html

DUMPS = 2500
LOCK_TIMEOUT = 20
# The daemon's source: the local server, scraped every second; charts hourly.
DAEMON_HTTP = LOCAL_HTTP | {"timeout": 5, "retries": 0}
DAEMON_SCHEDULE = QUICK_SCHEDULE | {"charts": 3600}


@dataclass
class Loop:
    """A command run again and again in a thread until stopped; every run is kept."""

    config: Path
    args: tuple[str, ...]
    runs: list[tuple[int, float, str, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            t0 = time.monotonic()
            proc = ticker_subprocess(self.config, *self.args, timeout=LOCK_TIMEOUT + 60)
            self.runs.append((proc.returncode, time.monotonic() - t0, proc.stdout, proc.stderr))

    def finish(self) -> list[tuple[int, float, str, str]]:
        """One more run after the others are done, then stop."""
        n = len(self.runs)
        deadline = time.monotonic() + LOCK_TIMEOUT + 60
        while len(self.runs) <= n + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.stop.set()
        self.thread.join(LOCK_TIMEOUT + 60)
        return self.runs


@pytest.mark.slow
def test_backfill_chart_latest_and_daemon_at_once(tmp_path: Path, server: LocalServer) -> None:
    series = simulate(date(2012, 1, 1), DUMPS + 1, seed=11)
    dumps = tmp_path / "dumps"
    write_dumps(dumps, series[:DUMPS])
    live = html_page(series[DUMPS].quotes, series[DUMPS].date)  # the day after the dumps

    # the reference: the dumps and the live page loaded one after the other, alone
    ref = write_config(tmp_path / "reference")
    (tmp_path / "live.html").write_text(live, encoding="utf-8")
    ticker_subprocess(ref, "backfill", str(dumps), str(tmp_path / "live.html"), check=True)
    reference = ticker_subprocess(ref, "export", check=True).stdout
    assert reference.count("\n") == (DUMPS + 1) * 5 + 1

    server.route("/", html(live))
    cfg = write_config(
        tmp_path / "shared",
        url=server.url("/"),
        lock_timeout=LOCK_TIMEOUT,
        http=DAEMON_HTTP,
        schedule=DAEMON_SCHEDULE,
    )
    started = time.monotonic()
    daemon = start_ticker(cfg, "run", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    latest = Loop(cfg, ("latest",))
    charts = Loop(cfg, ("chart",))
    checks = Loop(cfg, ("check", "--json"))
    for loop in (latest, charts, checks):
        loop.thread.start()
    backfill = ticker_subprocess(cfg, "backfill", str(dumps), timeout=LOCK_TIMEOUT + 120)
    backfill_done = time.monotonic() - started
    latest_runs = latest.finish()
    chart_runs = charts.finish()
    check_runs = checks.finish()
    while len(server.seen) < 3 and time.monotonic() - started < 60:
        time.sleep(0.1)
    daemon.send_signal(signal.SIGTERM)
    out, err = daemon.communicate(timeout=40)

    assert backfill.returncode == 0, backfill.stdout + backfill.stderr
    assert f"files read:               {DUMPS}" in backfill.stdout
    # the daemon: scraped, never failed a job, stopped cleanly on SIGTERM
    assert daemon.returncode == 0, err
    assert len(server.seen) >= 3
    assert "job failed" not in err, err
    assert "timesca ok" in err, err
    # every command finished, and no wait came near the bound
    for name, runs in (("latest", latest_runs), ("chart", chart_runs), ("check", check_runs)):
        assert len(runs) >= 2, name
        for code, seconds, stdout, stderr in runs:
            assert seconds < LOCK_TIMEOUT, f"ticker {name} waited {seconds:.1f} s"
            assert "locked" not in stderr, stderr
            if name == "chart" and code == 1:
                # it ran before the backfill stored anything: only the daemon's one day
                assert "no quotes stored yet" in stdout or "only one day" in stdout, stdout
            elif name == "check":
                assert code in (0, 1), stderr
                json.loads(stdout)
            else:
                assert code == 0, stdout + stderr
    assert chart_runs[-1][0] == 0
    for pair in ("KGS-USD", "KZT-USD", "TJS-USD", "UZS-USD", "TMT-USD", "overview"):
        assert (cfg.parent / "charts" / f"{pair}.png").stat().st_size > 10_000
    # nothing lost: the same export as the reference, every attempt recorded
    assert ticker_subprocess(cfg, "export", check=True).stdout == reference
    status = json.loads(ticker_subprocess(cfg, "status", "--json").stdout)
    assert status[0]["last_outcome"] == "ok"
    assert not list((cfg.parent / "pages" / ".pending").glob("*.json"))
    print(
        f"backfill of {DUMPS} dumps {backfill_done:.1f} s alongside {len(latest_runs)} "
        f"latest, {len(chart_runs)} chart, {len(check_runs)} check runs and "
        f"{len(server.seen)} daemon scrapes; longest latest "
        f"{max(r[1] for r in latest_runs):.2f} s"
    )


HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(120)
"""


def test_a_wait_that_runs_out_names_the_file_and_the_holder(
    tmp_path: Path, server: LocalServer
) -> None:
    """Every command that needs the database, while another process holds it for longer
    than lock_timeout: each gives up after about lock_timeout, and says which file,
    which process, how long it waited, and what to do."""
    series = simulate(date(2024, 1, 1), 3)
    dumps = tmp_path / "dumps"
    write_dumps(dumps, series)
    server.route("/", html(html_page(series[-1].quotes, series[-1].date)))
    cfg = write_config(
        tmp_path / "w",
        url=server.url("/"),
        lock_timeout=1,
        http=DAEMON_HTTP,
        schedule=DAEMON_SCHEDULE,
    )
    ticker_subprocess(cfg, "backfill", str(dumps), check=True)
    db = cfg.parent / "ticker.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        commands = {
            "latest": ("latest",),
            "history": ("history", "KZT"),
            "export": ("export",),
            "check": ("check",),
            "status": ("status",),
            "chart": ("chart",),
            "backfill": ("backfill", str(dumps), "--date", "2024-02-01"),
            "scrape": ("scrape",),
        }
        t0 = time.monotonic()
        procs = {
            name: start_ticker(cfg, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for name, args in commands.items()
        }
        results = {name: (*p.communicate(timeout=30), p.returncode) for name, p in procs.items()}
        elapsed = time.monotonic() - t0
    finally:
        holder.kill()
        holder.wait()
    # the scrape kept its attempt aside; the next one, with the file free, records it
    pending = list((cfg.parent / "pages" / ".pending").glob("*.json"))
    assert len(pending) == 1
    assert ticker_subprocess(cfg, "scrape").returncode == 0
    assert not pending[0].exists()
    assert elapsed < 15  # each waited about lock_timeout = 1 s, not forever
    for name, (stdout, stderr, code) in results.items():
        text = stdout + stderr
        assert code != 0, f"{name} should have failed: {text}"
        assert f"{db} is locked by process {holder.pid}" in text, f"{name}: {text}"
        assert "waited 1 s" in text and "lock_timeout" in text, f"{name}: {text}"
        assert "Traceback" not in text, f"{name}: {text}"
