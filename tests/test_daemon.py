"""The daemon: its schedule inspected with a given `now` (no waiting), its jobs run
directly, and `ticker run` as a real process against a local server, ended by SIGTERM."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import LOCAL_HTTP, QUICK_SCHEDULE, start_ticker, ticker_subprocess, write_config
from pages import html_page
from servers import DRIPS, LocalServer, drip, hang, html

from ticker import scrape as scrape_job
from ticker import spool
from ticker import status as status_job
from ticker.config import Config, ScheduleConfig, load_config
from ticker.scheduler import Daemon, build_scheduler, cron_weekdays, job_specs, make_trigger

NOW = datetime(2025, 3, 20, 10, 7, 30, tzinfo=UTC)  # a Thursday
REPO = Path(__file__).resolve().parent.parent


def fires(trigger: Any, now: datetime, n: int = 3) -> list[datetime]:
    out, prev = [], None
    for _ in range(n):
        prev = trigger.get_next_fire_time(prev, prev or now)
        out.append(prev)
    return out


# --- schedule, without waiting ------------------------------------------------------------


def test_interval_schedule_starts_now_then_every_interval() -> None:
    config = Config(schedule=ScheduleConfig(scrape=1800, jitter=0))
    scrape, _ = job_specs(config, NOW)
    assert scrape.id == "scrape" and scrape.first_run == NOW
    assert fires(scrape.trigger, NOW) == [NOW + timedelta(seconds=1800 * k) for k in (1, 2, 3)]


def test_jitter_delays_each_run_by_at_most_jitter() -> None:
    trigger = make_trigger(1800, 60, NOW)
    for _ in range(20):
        t = trigger.get_next_fire_time(None, NOW)
        assert NOW + timedelta(seconds=1800) <= t <= NOW + timedelta(seconds=1860)


def test_cron_schedule_in_utc() -> None:
    trigger = make_trigger("*/30 * * * *", 0, NOW)
    assert fires(trigger, NOW) == [
        datetime(2025, 3, 20, 10, 30, tzinfo=UTC),
        datetime(2025, 3, 20, 11, 0, tzinfo=UTC),
        datetime(2025, 3, 20, 11, 30, tzinfo=UTC),
    ]


def test_cron_weekdays_count_from_sunday_as_crontab_does() -> None:
    assert cron_weekdays("1-5") == "mon,tue,wed,thu,fri"
    assert cron_weekdays("0") == "sun" and cron_weekdays("7") == "sun"
    assert cron_weekdays("*/2") == "sun,tue,thu,sat"
    assert cron_weekdays("*") == "*" and cron_weekdays("mon-fri") == "mon-fri"
    saturday = datetime(2025, 3, 22, 12, 0, tzinfo=UTC)
    weekdays = make_trigger("0 9 * * 1-5", 0, saturday)
    assert fires(weekdays, saturday, 1) == [datetime(2025, 3, 24, 9, 0, tzinfo=UTC)]  # Monday
    sundays = make_trigger("0 9 * * 0", 0, saturday)
    assert fires(sundays, saturday, 1) == [datetime(2025, 3, 23, 9, 0, tzinfo=UTC)]


def test_chart_job_on_its_own_schedule() -> None:
    config = Config(schedule=ScheduleConfig(scrape=600, jitter=0, charts="0 3 * * *"))
    scrape, chart = job_specs(config, NOW)
    assert chart.id == "chart" and chart.first_run is None
    assert fires(chart.trigger, NOW, 1) == [datetime(2025, 3, 21, 3, 0, tzinfo=UTC)]


def test_scheduler_jobs_are_single_coalesced_with_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = Config(schedule=ScheduleConfig(scrape=1800, jitter=60, misfire_grace_time=300))
    scheduler = build_scheduler(config, Daemon(config), NOW)
    job, chart = scheduler.get_jobs()
    for j in (job, chart):
        assert (j.max_instances, j.coalesce, j.misfire_grace_time) == (1, True, 300)
    assert (job.id, chart.id) == ("scrape", "chart")
    assert job.next_run_time == NOW  # the first scrape right at start
    # the charts: daily from the start (and after any scrape that stored something new)
    assert chart.trigger.get_next_fire_time(None, NOW) == NOW + timedelta(seconds=86400)
    assert str(scheduler.timezone) == "UTC"


# --- jobs, run directly -------------------------------------------------------------------


def test_a_failing_job_logs_one_line_and_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(write_config(tmp_path, url="http://127.0.0.1:9/"))

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("something unexpected")

    monkeypatch.setattr(scrape_job, "scrape", boom)
    daemon = Daemon(config, clock=lambda: NOW)
    with caplog.at_level(logging.INFO, logger="ticker.run"):
        daemon.scrape_job()
    [record] = [r for r in caplog.records if r.name == "ticker.run"]
    assert record.levelno == logging.ERROR and "something unexpected" in record.getMessage()
    assert "\n" not in record.getMessage() and daemon.idle.is_set()


def test_scrape_job_logs_a_line_and_draws_charts_after_new_data(
    tmp_path: Path,
    server: LocalServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = load_config(write_config(tmp_path, url=server.url("/")))
    daemon = Daemon(config, clock=lambda: NOW)
    # The day before, so the charts have two days to draw.
    server.route("/", html(html_page(day="19 March 2025")))
    daemon.scrape_job()
    server.route("/", html(html_page(day="20 March 2025")))
    charts = tmp_path / "charts"
    with caplog.at_level(logging.INFO, logger="ticker.run"):
        caplog.clear()  # the first job's line, when an earlier test left INFO on
        daemon.clock = lambda: NOW + timedelta(minutes=30)
        daemon.scrape_job()
        drawn = {p.name: p.stat().st_mtime_ns for p in charts.glob("*.png")}
        daemon.clock = lambda: NOW + timedelta(minutes=60)
        daemon.scrape_job()  # the same page again: nothing new, no redraw
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("scrape ")]
    assert len(lines) == 2 and "timesca ok" in lines[0] and "5 new" in lines[0]
    assert "0 new, 5 already stored" in lines[1]
    chart_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("charts")]
    assert len(chart_lines) == 1 and "6 written" in chart_lines[0]
    assert set(drawn) == {
        "KGS-USD.png",
        "KZT-USD.png",
        "TJS-USD.png",
        "UZS-USD.png",
        "TMT-USD.png",
        "overview.png",
    }
    for name, mtime in drawn.items():
        assert (charts / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (charts / name).stat().st_mtime_ns == mtime  # not redrawn without new data
    daemon.close()


def test_locked_database_does_not_stop_the_daemon(
    tmp_path: Path, server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.route("/", html(html_page()))
    config = load_config(write_config(tmp_path, url=server.url("/"), lock_timeout=0.2))
    config.store_path.parent.mkdir(parents=True, exist_ok=True)
    code = "import duckdb,sys; c=duckdb.connect(sys.argv[1]); print('ready', flush=True); input()"
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(config.store_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        daemon = Daemon(config, clock=lambda: NOW)
        with caplog.at_level(logging.INFO, logger="ticker.run"):
            daemon.scrape_job()
        [line] = [r.getMessage() for r in caplog.records if r.name == "ticker.run"]
        assert "store_locked" in line
    finally:
        holder.communicate("\n", timeout=10)
    daemon.clock = lambda: NOW + timedelta(minutes=30)
    daemon.scrape_job()
    assert spool.spooled_attempts(config) == []
    daemon.close()


# --- `ticker run` as a process ------------------------------------------------------------


def _start(cfg: Path) -> subprocess.Popen[str]:
    """`ticker run`, its output to pipes."""
    return start_ticker(
        cfg,
        "run",
        cwd=REPO,
        env={"PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_ticker_run_scrapes_serves_readers_and_stops_on_sigterm(
    tmp_path: Path, server: LocalServer
) -> None:
    server.route("/", html(html_page()))
    cfg = write_config(tmp_path, url=server.url("/"), schedule=QUICK_SCHEDULE | {"scrape": 1})
    proc = _start(cfg)
    try:
        _wait_for(lambda: len(server.seen) >= 3, 20, "three scrapes")
        latest = ticker_subprocess(cfg, "latest", "--json", cwd=REPO, timeout=60)
        assert latest.returncode == 0, latest.stderr
        assert '"rate": "0.00199"' in latest.stdout and '"pair": "KZT/USD"' in latest.stdout
        assert proc.poll() is None, "the daemon is still running"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "scrape timesca ok: HTTP 200" in err and "5 new" in err
    assert "SIGTERM" in err and "ticker run: stopped" in err
    for line in err.splitlines():  # one line per event, each stamped with the time in UTC
        assert line[:4].isdigit() and line[19] == "Z", line


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name
)
def test_a_stop_signal_lets_the_running_job_finish(
    tmp_path: Path, server: LocalServer, signum: signal.Signals
) -> None:
    server.route("/", hang())
    cfg = write_config(
        tmp_path,
        url=server.url("/"),
        http=LOCAL_HTTP | {"timeout": 1.5},
        schedule=QUICK_SCHEDULE | {"scrape": 3600},
    )
    proc = _start(cfg)
    try:
        _wait_for(lambda: len(server.seen) >= 1, 20, "the first request")
        proc.send_signal(signum)  # mid-fetch: the job ends with its timeout
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    stopping = f"{signum.name}: stopping after the running job"
    assert err.index(stopping) < err.index("scrape timesca timeout") < err.index("stopped")
    config = replace(load_config(cfg))
    assert status_job.status(config, datetime.now(UTC))[0].last_outcome == "timeout"


@pytest.mark.slow
def test_a_trickling_server_ends_each_job_at_the_deadline_and_runs_stay_on_time(
    tmp_path: Path, server: LocalServer
) -> None:
    head, filler = DRIPS["body-with-length"]
    server.route("/", drip(head, filler, seconds=60))  # 60 s of a byte every 0.05 s
    cfg = write_config(
        tmp_path,
        url=server.url("/"),
        http=LOCAL_HTTP | {"timeout": 0.5, "retries": 0, "deadline": 1},
        schedule=QUICK_SCHEDULE | {"scrape": 2},
    )
    proc = _start(cfg)
    try:
        _wait_for(lambda: len(server.seen) >= 3, 20, "three scrapes, each on time")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    starts = [s.at for s in server.seen]
    assert all(b - a < 3.5 for a, b in zip(starts, starts[1:], strict=False)), starts
    assert err.count("scrape timesca timeout") >= 2 and "[http] deadline = 1 s" in err
    assert "skipped" not in err and "abandoned" not in err
    config = load_config(cfg)
    [s] = status_job.status(config, datetime.now(UTC))
    assert s.last_outcome == "timeout" and s.failures >= 2


@pytest.mark.slow
def test_a_stop_signal_cuts_a_slow_fetch_and_the_job_records_it(
    tmp_path: Path, server: LocalServer
) -> None:
    head, filler = DRIPS["body-with-length"]
    server.route("/", drip(head, filler, seconds=60))
    server.route("/next", html(html_page()))
    second = f'\n[[sources]]\nname = "next"\nurl = "{server.url("/next")}"\n'
    cfg = write_config(
        tmp_path,
        url=server.url("/"),
        http=LOCAL_HTTP | {"timeout": 5, "deadline": 120},
        schedule=QUICK_SCHEDULE | {"scrape": 3600},
        extra=second,
    )
    proc = _start(cfg)
    try:
        _wait_for(lambda: len(server.seen) >= 1, 20, "the first request")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert took < 10, f"{took:.1f} s: the job waited for the server"
    assert "abandoned" not in err
    assert "cut short" in err and "ticker run is stopping (SIGTERM)" in err
    [s, skipped] = status_job.status(load_config(cfg), datetime.now(UTC))
    assert s.last_outcome == "timeout" and "stopping" in (s.last_error or "")
    assert skipped.last_attempt is None and [r.path for r in server.seen] == ["/"]
