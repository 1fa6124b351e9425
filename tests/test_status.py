"""`ticker status`: last attempt, last success, consecutive failures, newest date and age,
stale and failing; exit code 0 only when every source is fresh and working."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import LOCAL_HTTP, ticker_in_process, write_config
from pages import html_page
from servers import LocalServer, html, status

from ticker import backfill as backfill_job
from ticker import scrape as scrape_job
from ticker import spool
from ticker import status as status_job
from ticker.config import Config, load_config

ALMATY = ZoneInfo("Asia/Almaty")
NOW = datetime(2025, 3, 20, 6, 0, tzinfo=UTC)


@pytest.fixture
def cfg_path(tmp_path: Path, server: LocalServer) -> Path:
    return write_config(
        tmp_path,
        url=server.url("/"),
        http=LOCAL_HTTP | {"retries": 0},
        extra='[status]\nstale_after = "2d"\n',
    )


def test_nothing_yet_is_stale(cfg_path: Path) -> None:
    [s] = status_job.status(load_config(cfg_path), NOW)
    assert s.last_attempt is None and s.newest_date is None and s.stale and not s.failing
    result = ticker_in_process(cfg_path, "status")
    assert result.exit_code == 1
    assert "no observation stored yet" in result.output


def test_age_counts_from_the_start_of_the_day_in_the_source_time_zone(
    cfg_path: Path, server: LocalServer
) -> None:
    config = load_config(cfg_path)
    server.route("/", html(html_page(day="20 March 2025")))
    scrape_job.scrape(config, NOW)
    start = datetime(2025, 3, 20, tzinfo=ALMATY)
    [s] = status_job.status(config, start + timedelta(hours=36))
    assert s.newest_date == date(2025, 3, 20) and s.age == 36 * 3600
    assert not s.stale and not s.failing and s.failures == 0
    assert s.last_success == s.last_attempt == NOW
    [s] = status_job.status(config, start + timedelta(days=2, seconds=1))
    assert s.stale


def test_consecutive_failures_and_recovery(cfg_path: Path, server: LocalServer) -> None:
    config = load_config(cfg_path)
    server.route("/", html(html_page()))
    scrape_job.scrape(config, NOW)
    server.route("/", status(503))
    scrape_job.scrape(config, NOW + timedelta(minutes=30))
    scrape_job.scrape(config, NOW + timedelta(minutes=60))
    [s] = status_job.status(config, NOW + timedelta(hours=2))
    assert s.failing and s.failures == 2 and s.last_outcome == "http_error"
    assert s.last_status == 503 and "HTTP 503" in (s.last_error or "")
    assert s.last_success == NOW and not s.stale
    server.route("/", html(html_page()))
    scrape_job.scrape(config, NOW + timedelta(minutes=90))
    [s] = status_job.status(config, NOW + timedelta(hours=2))
    assert not s.failing and s.failures == 0


def _today_page() -> str:
    today = datetime.now(ALMATY).date()
    return html_page(day=f"{today.day:02d} {today:%B %Y}")


def test_cli_status_json_and_exit_codes(cfg_path: Path, server: LocalServer) -> None:
    server.route("/", html(_today_page()))
    scraped = ticker_in_process(cfg_path, "scrape")
    assert scraped.exit_code == 0, scraped.output
    assert scraped.output.startswith("timesca ok: HTTP 200")

    result = ticker_in_process(cfg_path, "status", "--json")
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)
    assert row["source"] == "timesca" and row["last_outcome"] == "ok"
    assert row["consecutive_failures"] == 0 and row["stale"] is False
    assert row["newest_date"] == datetime.now(ALMATY).date().isoformat()
    assert set(row) >= {"last_attempt", "last_success", "age_seconds", "failing", "url"}

    server.route("/", status(404))
    failed = ticker_in_process(cfg_path, "scrape")
    assert failed.exit_code == 1 and "timesca http_error: HTTP 404" in failed.output
    result = ticker_in_process(cfg_path, "status")
    assert result.exit_code == 1
    assert "timesca: failing: the last attempt failed" in result.output
    assert "HTTP 404" in result.output


def test_status_mentions_a_spool_file_it_cannot_read(cfg_path: Path) -> None:
    config: Config = load_config(cfg_path)
    pending = config.archive_dir / spool.SPOOL_DIR
    pending.mkdir(parents=True)
    (pending / "x.json").write_text("{}")  # JSON, but not an attempt
    result = ticker_in_process(cfg_path, "status")
    assert result.exit_code == 1
    assert f"set aside: 1 spooled attempt in {pending} cannot be read" in result.output


def test_a_newest_date_after_today_is_not_fresh(cfg_path: Path, tmp_path: Path) -> None:
    config = load_config(cfg_path)
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    (dumps / "typo.html").write_text(html_page(day="01 January 2100"), encoding="utf-8")
    # stored when 2100 had come (or by a version that took any date)
    later = datetime(2100, 1, 1, tzinfo=UTC)
    assert backfill_job.backfill(config, [str(dumps)], now=later).new == 5

    [s] = status_job.status(config, NOW)
    assert s.newest_date == date(2100, 1, 1) and s.future and s.stale
    assert s.age is not None and s.age < 0  # the truth, not clamped to "fresh"
    assert s.as_dict()["future_date"] is True

    result = ticker_in_process(cfg_path, "status")
    assert result.exit_code == 1
    table, reason = result.output.splitlines()[1], result.output.splitlines()[-1]
    assert table.split()[-2:] == ["2100-01-01", "future"]
    assert reason.startswith("timesca: stale: the newest observation is dated 2100-01-01, after")
    assert "future_date" in reason
