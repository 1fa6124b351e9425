"""Scrape (fetch -> archive -> parse -> store) against a real local server: every fault is
an attempt with its outcome, nothing stored is lost, and the next run works."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import LOCAL_HTTP, write_config
from pages import MARCH_20, PAIRS, bullet_page, changed_markup_page, html_page, no_ticker_page
from servers import (
    LocalServer,
    Reply,
    binary,
    conditional,
    hang,
    html,
    redirect,
    refused_url,
    status,
    stream,
    truncated,
)

from ticker import backfill as backfill_job
from ticker import scrape as scrape_job
from ticker import spool
from ticker import status as status_job
from ticker.config import Config, load_config
from ticker.dumps import read_pages
from ticker.sources.ticker import TickerReader
from ticker.store import Store

NOW = datetime(2025, 3, 20, 6, 0, tzinfo=UTC)


@pytest.fixture
def config(tmp_path: Path, server: LocalServer) -> Config:
    return load_config(
        write_config(
            tmp_path, url=server.url("/"), http=LOCAL_HTTP | {"timeout": 1.0, "max_bytes": 1 << 20}
        )
    )


def query(config: Config, sql: str) -> list[tuple[Any, ...]]:
    with Store.open(config.store_path, read_only=True) as store:
        return store.con.execute(sql).fetchall()


def attempts(config: Config) -> list[tuple[Any, ...]]:
    return query(
        config,
        """SELECT outcome, http_status, bytes, error, capture_id, new, archive_path
           FROM attempts ORDER BY started_at, recorded_at""",
    )


def observations(config: Config) -> list[tuple[Any, ...]]:
    return query(config, "SELECT pair, date, rate_text, change_text FROM observations ORDER BY ALL")


def archived(config: Config) -> list[Path]:
    return sorted(config.archive_dir.glob("*/*.warc.gz"))


def test_scrape_stores_archives_and_records(config: Config, server: LocalServer) -> None:
    body = html_page().encode()
    server.route("/", html(body, headers={"ETag": '"v1"'}))
    [attempt] = scrape_job.scrape(config, NOW)
    assert attempt.outcome == "ok" and attempt.http_status == 200 and attempt.new == 5
    assert attempt.started_at == NOW and attempt.etag == '"v1"'
    rows = observations(config)
    assert ("KZT/USD", date(2025, 3, 20), "0.00199", "-0") in rows and len(rows) == 5
    [path] = archived(config)
    assert str(path) == attempt.archive_path and path.parent.name == "2025-03-20"
    [(outcome, status_, nbytes, error, capture, new, _)] = attempts(config)
    assert (outcome, status_, nbytes, error, new) == ("ok", 200, len(body), None, 5)
    assert capture is not None
    line = scrape_job.describe_attempt(attempt)
    assert line.startswith("timesca ok: HTTP 200") and "5 new" in line


def test_archive_reparses_with_the_same_capture_time_and_source(
    config: Config, server: LocalServer, tmp_path: Path
) -> None:
    server.route("/", html(html_page(day=None)))  # undated: the capture time dates it
    late = datetime(2025, 3, 20, 21, 30, 7, 123456, tzinfo=UTC)  # already the 21st in Almaty
    [attempt] = scrape_job.scrape(config, late)
    assert attempt.outcome == "ok"
    [stored] = query(config, "SELECT quote_date, date_basis, epoch_ms(captured_at) FROM captures")
    assert stored == (date(2025, 3, 21), "capture", 1742506207000)

    [page_] = read_pages(archived(config)[0])
    assert page_.captured_at == datetime(2025, 3, 20, 21, 30, 7, tzinfo=UTC)
    assert page_.source == "timesca" and page_.url == server.url("/")

    # Backfilling the archive into the same store adds nothing: it is the same capture.
    summary = backfill_job.backfill(config, [str(config.archive_dir)], now=late)
    assert (summary.new, summary.pages_known, summary.unreadable) == (0, 1, [])
    # Into a fresh store it gives the same series and capture time.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    cfg2 = load_config(write_config(fresh, url=server.url("/")))
    summary = backfill_job.backfill(cfg2, [str(config.archive_dir)], now=late)
    assert summary.new == 5 and summary.unreadable == []
    assert query(cfg2, "SELECT quote_date, date_basis, epoch_ms(captured_at) FROM captures") == [
        stored
    ]
    assert observations(cfg2) == observations(config)


def test_conditional_get_takes_a_304(config: Config, server: LocalServer) -> None:
    server.route("/", conditional(html_page(), '"v1"'))
    assert scrape_job.scrape(config, NOW)[0].outcome == "ok"
    [again] = scrape_job.scrape(config, NOW + timedelta(hours=1))
    assert again.outcome == "not_modified" and again.http_status == 304 and again.success
    assert server.seen[1].headers.get("If-None-Match") == '"v1"'
    assert len(archived(config)) == 1 and len(observations(config)) == 5
    # The daemon keeps the validators between jobs instead of reading them again.
    state = scrape_job.ScrapeState()
    scrape_job.scrape(config, NOW + timedelta(hours=2), state=state)
    assert state.loaded and state.validators[("timesca", server.url("/"))].etag == '"v1"'


def test_a_page_without_ticker_is_not_fetched_conditionally(
    config: Config, server: LocalServer
) -> None:
    server.route("/", conditional(no_ticker_page(), '"n1"'))
    scrape_job.scrape(config, NOW)
    scrape_job.scrape(config, NOW + timedelta(hours=1))
    assert "If-None-Match" not in server.seen[1].headers  # no 304 may hide a fixed parser


def _fault_cases() -> list[Any]:
    body = html_page(day="20 March 2025").encode()
    return [
        pytest.param("refused", None, "connection_error", None, False, id="refused"),
        pytest.param("/", [hang()], "timeout", None, False, id="never-answers"),
        pytest.param("/", [status(500), html(body)], "ok", 200, True, id="500-then-200"),
        pytest.param(
            "/", [status(429, {"Retry-After": "1"}), html(body)], "ok", 200, True, id="429-wait"
        ),
        pytest.param(
            "/", [status(429, {"Retry-After": "999"})], "http_error", 429, False, id="429-long"
        ),
        pytest.param("/", [status(404)], "http_error", 404, False, id="404"),
        pytest.param("/", [redirect("/")], "redirect_loop", None, False, id="redirect-loop"),
        pytest.param(
            "/", [truncated(body[:2000], len(body))], "truncated", 200, False, id="cut-off"
        ),
        pytest.param("/", [stream(50 << 20)], "too_large", 200, False, id="50MB"),
        pytest.param("/", [binary()], "not_html", 200, False, id="binary"),
        pytest.param("/", [html(no_ticker_page())], "no_ticker", 200, True, id="no-ticker"),
        pytest.param(
            "/", [html(changed_markup_page())], "no_ticker", 200, True, id="markup-changed"
        ),
    ]


@pytest.mark.parametrize(("where", "replies", "outcome", "http_status", "archives"), _fault_cases())
def test_fault_is_recorded_nothing_lost_next_run_works(
    tmp_path: Path,
    server: LocalServer,
    config: Config,
    where: str,
    replies: list[Reply] | None,
    outcome: str,
    http_status: int | None,
    archives: bool,
) -> None:
    server.route("/", html(html_page(day="19 March 2025")))
    assert scrape_job.scrape(config, NOW - timedelta(days=1))[0].outcome == "ok"
    before = observations(config)

    if where == "refused":
        faulty = tmp_path / "refused"
        faulty.mkdir()
        cfg = load_config(
            write_config(faulty, url=refused_url(), http=LOCAL_HTTP | {"timeout": 1.0})
        )
        cfg = replace(cfg, store_path=config.store_path, archive_dir=config.archive_dir)
    else:
        assert replies is not None
        server.route("/", *replies)
        cfg = config
    [attempt] = scrape_job.scrape(cfg, NOW)
    assert attempt.outcome == outcome, attempt.error
    assert attempt.http_status == http_status
    rows = attempts(config)
    assert len(rows) == 2 and rows[1][0] == outcome
    if outcome != "ok":
        assert rows[1][3], "a failed attempt says why"
        assert observations(config) == before  # nothing stored is lost or changed
    assert (len(archived(config)) == 2) is archives  # a page kept is a page received whole
    if outcome == "no_ticker":
        assert "kept in" in (attempt.error or "") and "ticker backfill" in (attempt.error or "")

    server.route("/", html(html_page(day="21 March 2025")))
    [after] = scrape_job.scrape(config, NOW + timedelta(days=1))
    assert after.outcome == "ok" and after.new == 5
    assert set(before) <= set(observations(config))


def test_inconsistent_copies_are_flagged(config: Config, server: LocalServer) -> None:
    odd = '<li><span>KZT/USD</span> = <span>0.00200</span> <span class="down">-0%</span></li>'
    body = html_page(copies=4).replace("</ul>", odd + "</ul>", 1)  # one copy disagrees
    server.route("/", html(body))
    [attempt] = scrape_job.scrape(config, NOW)
    assert attempt.outcome == "inconsistent" and "copies disagree" in (attempt.error or "")
    assert observations(config) == []


def test_parser_failure_is_an_outcome_and_the_page_is_kept(
    config: Config, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.route("/", html(html_page()))

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("parser bug")

    monkeypatch.setattr(TickerReader, "read", broken)
    [attempt] = scrape_job.scrape(config, NOW)
    assert attempt.outcome == "parse_error" and "parser bug" in (attempt.error or "")
    assert len(archived(config)) == 1
    monkeypatch.undo()
    summary = backfill_job.backfill(config, [str(config.archive_dir)], now=NOW)
    assert summary.new == 5  # the parser fixed, the archive gives the quotes back


def test_archive_failure_still_stores_the_quotes(
    tmp_path: Path, config: Config, server: LocalServer
) -> None:
    (tmp_path / "pages").write_text("a file where the archive directory should be")
    server.route("/", html(html_page()))
    [attempt] = scrape_job.scrape(config, NOW)
    assert attempt.outcome == "archive_error" and not attempt.success
    assert "[archive] dir" in (attempt.error or "")
    assert len(observations(config)) == 5


@pytest.fixture
def lock_holder(config: Config) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        code = (
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
            "sys.stdin.read()"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(config.store_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def release(proc: subprocess.Popen[bytes]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)


def test_locked_database_is_an_outcome_and_the_next_run_records_it(
    config: Config, server: LocalServer, lock_holder: Callable[[], subprocess.Popen[bytes]]
) -> None:
    server.route("/", html(html_page(day="20 March 2025")))
    scrape_job.scrape(config, NOW)

    holder = lock_holder()
    server.route("/", html(html_page(day="21 March 2025")))
    [locked] = scrape_job.scrape(config, NOW + timedelta(days=1))
    assert locked.outcome == "store_locked" and "locked by" in (locked.error or "")
    assert "was: ok" in (locked.error or "") or "fetch itself: ok" in (locked.error or "")
    assert len(spool.spooled_attempts(config)) == 1
    release(holder)

    server.route("/", html(html_page(day="22 March 2025")))
    [after] = scrape_job.scrape(config, NOW + timedelta(days=2))
    assert after.outcome == "ok"
    assert spool.spooled_attempts(config) == []
    rows = attempts(config)
    assert [r[0] for r in rows] == ["ok", "store_locked", "ok"]
    assert rows[1][4] is not None and rows[1][5] == 5  # its page stored, from the archive
    days = {d for _, d, _, _ in observations(config)}
    assert days == {date(2025, 3, 20), date(2025, 3, 21), date(2025, 3, 22)}


def test_spooled_attempt_replayed_twice_is_recorded_once(
    config: Config,
    server: LocalServer,
    lock_holder: Callable[[], subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    server.route("/", html(html_page()))
    holder = lock_holder()
    scrape_job.scrape(config, NOW)
    release(holder)
    [spooled] = spool.spooled_attempts(config)
    copy = tmp_path / "copy.json"
    shutil.copy(spooled, copy)
    scrape_job.scrape(config, NOW + timedelta(hours=1))
    shutil.copy(copy, spooled)  # as if a crash came between the commit and the unlink
    scrape_job.scrape(config, NOW + timedelta(hours=2))
    assert len(attempts(config)) == 3
    assert query(config, "SELECT count(*) FROM captures") == [(3,)]
    assert len(observations(config)) == 5


def test_unreadable_spool_entry_is_set_aside(config: Config, server: LocalServer) -> None:
    pending = config.archive_dir / spool.SPOOL_DIR
    pending.mkdir(parents=True)
    (pending / "torn.json").write_text('{"id": "abc", "sour')
    server.route("/", html(html_page()))
    assert scrape_job.scrape(config, NOW)[0].outcome == "ok"
    assert (pending / "torn.bad").exists() and spool.spooled_attempts(config) == []


# --- what a page holds: its encoding, unreadable lines, its date, a flood of problems ------


@pytest.mark.parametrize(
    ("charset", "prose"),
    [("windows-1251", "Курс тенге"), ("windows-1252", "Café"), ("iso-8859-1", "Café")],
    ids=["windows-1251", "windows-1252", "iso-8859-1"],
)
def test_the_http_charset_decides_the_encoding(
    config: Config, server: LocalServer, charset: str, prose: str
) -> None:
    # windows-1251 and -1252 both print the bullet "•" as byte 0x95 (and so do pages
    # labelled iso-8859-1, which browsers read as windows-1252)
    codec = "cp1252" if charset == "iso-8859-1" else charset
    body = bullet_page(prose=prose).encode(codec)
    server.route("/", html(body, ctype=f"text/html; charset={charset}"))
    [attempt] = scrape_job.scrape(config, NOW)
    assert (attempt.outcome, attempt.new, attempt.error) == ("ok", 5, None)


def test_a_page_with_unreadable_lines_is_partial_not_ok(
    config: Config, server: LocalServer
) -> None:
    malformed = [(b, "0.0O199" if b == "KZT" else r, c) for b, r, c in MARCH_20]
    server.route("/", html(bullet_page(malformed).encode()))
    [attempt] = scrape_job.scrape(config, NOW)
    assert attempt.outcome == "partial" and not attempt.success and attempt.new == 4
    assert "KZT/USD: malformed rate '0.0O199'" in (attempt.error or "")
    assert {p for p, *_ in observations(config)} == set(PAIRS) - {"KZT/USD"}
    [health] = status_job.status(config, NOW)
    assert health.failing and health.last_outcome == "partial"
    # the next fetch is not conditional: the page may read whole by then
    server.route("/", html(bullet_page().encode()))
    [after] = scrape_job.scrape(config, NOW + timedelta(minutes=30))
    assert (after.outcome, after.new, after.already) == ("ok", 1, 4)


def test_a_date_line_in_the_future_stores_nothing(config: Config, server: LocalServer) -> None:
    server.route("/", html(bullet_page(day="31 December 9999").encode()))
    [attempt] = scrape_job.scrape(config, NOW)
    assert attempt.outcome == "bad_date" and not attempt.success
    assert "the date line says 9999-12-31, more than a day after the page was captured " in (
        attempt.error or ""
    )
    assert observations(config) == []
    assert len(archived(config)) == 1  # kept, as every page is


def test_a_flood_of_problems_makes_a_short_attempt_error(
    config: Config, server: LocalServer
) -> None:
    lines = "".join(f"<li>KGS/USD = 0.0{10000 + i} 0.1%</li>" for i in range(10_000))
    body = f"<html><body><ul>{lines}</ul><p>20 March 2025</p></body></html>".encode()
    server.route("/", html(body))
    [attempt] = scrape_job.scrape(config, NOW)
    assert attempt.outcome == "inconsistent"
    assert len(attempt.error or "") < 400 and "10000 versions in all" in (attempt.error or "")
    [(detail,)] = query(config, "SELECT detail FROM captures")
    assert len(detail) < 400
    assert len(scrape_job.describe_attempt(attempt)) < 500


def test_a_parser_fault_on_a_spooled_page_keeps_its_attempt(
    config: Config,
    server: LocalServer,
    lock_holder: Callable[[], subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.route("/", html(html_page()))
    holder = lock_holder()
    [spooled] = scrape_job.scrape(config, NOW)
    assert spooled.outcome == "store_locked"
    release(holder)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("parser bug")

    monkeypatch.setattr(TickerReader, "read", broken)
    server.route("/", status(503))
    scrape_job.scrape(config, NOW + timedelta(hours=1))

    # recorded without its page (the archive keeps it), not set aside as unreadable
    pending = config.archive_dir / spool.SPOOL_DIR
    assert spool.spooled_attempts(config) == [] and not list(pending.glob("*.bad"))
    assert [r[0] for r in attempts(config)] == ["store_locked", "http_error"]
    monkeypatch.undo()
    summary = backfill_job.backfill(config, [str(config.archive_dir)], now=NOW + timedelta(hours=2))
    assert summary.new == 5
