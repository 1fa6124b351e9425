"""`ticker recover`: history from the public web archives, against a stand-in of both on
127.0.0.1 (tests/webarchives.py) that reproduces their quirks. The job runs in this
process with a fake clock where waits are asserted, and as a real process where the
behaviour is about processes (SIGKILL) or the command line."""

from __future__ import annotations

import functools
import gzip
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from conftest import one_error_line
from webarchives import (
    CC_DATA,
    CDX_PATH,
    BrokenReader,
    Crawl,
    Snap,
    WebArchives,
    day_page,
    quotes_of,
    recover_config,
)

import ticker.recover as recover_module
from ticker.archive import archive_path
from ticker.cli import cli
from ticker.config import load_config
from ticker.recover import RecoverSummary, record_id, recover
from ticker.webarchive import RateLimiter

pytestmark = pytest.mark.usefixtures("no_ticker_config")

ROOT = "https://timesca.com/"
NOW = datetime(2026, 1, 15, 12, tzinfo=UTC)


class FakeClock:
    """Time that passes only when slept: waits are asserted, never waited."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        self.on_sleep: list[object] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        for hook in self.on_sleep:
            hook()  # type: ignore[operator]


def days_from(first: date, n: int) -> list[date]:
    return [first + timedelta(days=i) for i in range(n)]


def captures(days: list[date], hours: tuple[int, ...] = (3, 9, 15), url: str = ROOT) -> list[Snap]:
    """Captures of each day at these hours UTC (all inside the day in Almaty, UTC+6)."""
    return [Snap(url, f"{d:%Y%m%d}{h:02d}0000", day_page(d)) for d in days for h in hours]


def run(config: Path, clock: FakeClock | None = None, **kw: object) -> RecoverSummary:
    clock = clock or FakeClock()
    return recover(
        load_config(config),
        now=NOW,
        clock=clock,
        sleep=clock.sleep,
        least_wait=kw.pop("least_wait", 60.0),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def stored(db: Path) -> dict[str, list[tuple[object, ...]]]:
    """What a store holds, independent of load order and origins."""
    return {
        "captures": rows(
            db,
            """SELECT page_key, source, url, captured_at, content_hash, outcome, header_date,
                      quote_date, date_basis, parser_version, copies, detail
               FROM captures ORDER BY page_key""",
        ),
        "observations": rows(
            db,
            """SELECT o.source, o.pair, o.date, o.revision, o.rate_text, o.change_text,
                      c.page_key
               FROM observations o JOIN captures c ON c.id = o.capture_id ORDER BY ALL""",
        ),
        "sightings": rows(
            db,
            """SELECT c.page_key, s.source, s.pair, s.date, s.revision
               FROM sightings s JOIN captures c ON c.id = s.capture_id ORDER BY ALL""",
        ),
        "daily": rows(
            db, "SELECT source, pair, date, rate_text, change_text FROM daily ORDER BY ALL"
        ),
    }


def warc_headers(path: Path) -> dict[str, str]:
    from warcio.archiveiterator import ArchiveIterator

    with path.open("rb") as fh:
        for record in ArchiveIterator(fh):
            if record.rec_type == "response":
                return dict(record.rec_headers.headers)
    raise AssertionError(f"no response record in {path}")


def archived(root: Path) -> list[Path]:
    return sorted((root / "pages").rglob("*.warc.gz"))


def backfilled(tmp_path: Path) -> Path:
    """A backfill of the page archive alone into a store of its own."""
    config = tmp_path / "backfill.toml"
    config.write_text(
        '[store]\npath = "backfilled.duckdb"\n[archive]\ndir = "pages"\n', encoding="utf-8"
    )
    result = CliRunner().invoke(cli, ["--config", str(config), "backfill", str(tmp_path / "pages")])
    assert result.exit_code == 0, result.output
    return tmp_path / "backfilled.duckdb"


# --- the Wayback Machine --------------------------------------------------------------------


class Recorded:
    """A Progress that keeps what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    def listed(self, rows: int, requests: int) -> None:
        self.calls.append(("listed", (rows, requests)))

    def start(self, captures: int, days: int) -> None:
        self.calls.append(("start", (captures, days)))

    def step(self, days_done: int) -> None:
        self.calls.append(("step", (days_done,)))

    def close(self) -> None:
        self.calls.append(("close", ()))


def test_the_last_capture_of_each_day_is_stored_as_a_backfill_of_its_warc_file_stores_it(
    tmp_path: Path,
) -> None:
    days = days_from(date(2020, 1, 1), 6)
    snaps = captures(days)
    # Other pages of the site carry the ticker too; listed (host scope) with the home page.
    snaps.append(Snap(f"{ROOT}news/a-story", "20200104160000", day_page(date(2020, 1, 4))))
    # A capture late in the evening UTC belongs to the next day in Almaty.
    snaps.append(Snap(f"{ROOT}news/late", "20200106190000", day_page(date(2020, 1, 7))))
    progress = Recorded()
    with WebArchives(snaps, page_rows=4) as wa:
        config = recover_config(tmp_path, wa)
        summary = run(config, progress=progress)
        asked = wa.snapshot_requests()
        cdx = [r for r in wa.requests if r.path == CDX_PATH]

    # what a progress bar is told: rows listed, then captures and days as they go
    kinds = [kind for kind, _ in progress.calls]
    assert kinds == ["listed"] * len(cdx) + ["start"] + ["step"] * 7 + ["close"]
    assert progress.calls[len(cdx)] == ("start", (7, 7))
    assert progress.calls[-2] == ("step", (6,))
    # the CDX server was paged (4 rows an answer, the row before each key sent twice)
    assert len(cdx) >= 5
    assert [r.query.get("resumeKey") is None for r in cdx] == [True] + [False] * (len(cdx) - 1)
    assert cdx[0].query["matchType"] == ["host"] and cdx[0].query["url"] == ["timesca.com"]
    assert summary.listed > summary.listed_new == len(snaps)
    # one capture a day: each day's last, in Almaty days
    expected = [f"{d:%Y%m%d}150000" for d in days[:3]] + ["20200104160000"]
    expected += [f"{d:%Y%m%d}150000" for d in days[4:]] + ["20200106190000"]
    assert sorted(asked) == sorted(expected), asked
    assert summary.exit_code == 0 and summary.fetched == 7 and summary.chosen == 7
    assert summary.days == 7 and (summary.first_day, summary.last_day) == (
        days[0],
        date(2020, 1, 7),
    )
    assert summary.covered == 7 and summary.new == 35

    # every capture in the archive: the real capture time, the URL, where it came from
    files = archived(tmp_path)
    assert len(files) == 7
    headers = warc_headers(next(f for f in files if "20200106T190000Z" in f.name))
    assert headers["WARC-Date"] == "2020-01-06T19:00:00Z"
    assert headers["WARC-Target-URI"] == f"{ROOT}news/late"
    assert headers["WARC-Ticker-Source"] == "timesca"
    assert headers["WARC-Ticker-Archive"] == "wayback"
    assert headers["WARC-Ticker-Snapshot"] == wa.url(f"/web/20200106190000id_/{ROOT}news/late")

    # the archive alone reproduces the store
    assert stored(backfilled(tmp_path)) == stored(tmp_path / "ticker.duckdb")


def test_a_second_run_fetches_no_capture_and_stores_nothing_twice(tmp_path: Path) -> None:
    snaps = captures(days_from(date(2020, 1, 1), 4))
    with WebArchives(snaps, page_rows=5) as wa:
        config = recover_config(tmp_path, wa)
        first = run(config)
        before = stored(tmp_path / "ticker.duckdb")
        n = len(wa.requests)
        second = run(config)
        again = wa.requests[n:]

    assert first.fetched == 4 and first.exit_code == 0
    assert [r.path for r in again] == [CDX_PATH]  # the newest captures listed again, only
    assert again[0].query["from"] == [f"{NOW - timedelta(days=30):%Y%m%d%H%M%S}"]
    assert second.fetched == 0 and second.already == 4 and second.exit_code == 0
    assert second.listed_new == 0
    assert stored(tmp_path / "ticker.duckdb") == before
    assert len(archived(tmp_path)) == 4


def test_a_revisit_is_stored_at_its_own_time_without_downloading_its_bytes_again(
    tmp_path: Path,
) -> None:
    d1, d2, d3, d4 = days_from(date(2020, 1, 1), 4)
    same = day_page(d1, dated=False)  # no date line: each capture is dated by its time
    snaps = [
        Snap(ROOT, f"{d1:%Y%m%d}150000", same),
        Snap(ROOT, f"{d2:%Y%m%d}150000", revisit_of=f"{d1:%Y%m%d}150000"),  # d2's last
        Snap(ROOT, f"{d3:%Y%m%d}030000", day_page(d3)),
        Snap(ROOT, f"{d3:%Y%m%d}150000", revisit_of=f"{d3:%Y%m%d}030000"),  # original not chosen
        Snap(ROOT, f"{d4:%Y%m%d}150000", revisit_of=f"{d3:%Y%m%d}030000"),
    ]
    for snap in snaps[4:]:
        snap.url = ROOT
    snaps[4].revisit_of = None
    snaps[4].body = day_page(d3)  # d4: the same bytes again, listed as a plain capture
    with WebArchives(snaps) as wa:
        config = recover_config(tmp_path, wa)
        summary = run(config)
        asked = wa.snapshot_requests()

    # d1's capture is downloaded and d2's revisit reuses its bytes; d3's revisit is
    # downloaded (its original is not chosen: the archive serves the original's bytes),
    # and d4's identical capture reuses those
    assert asked == [f"{d1:%Y%m%d}150000", f"{d3:%Y%m%d}150000"], asked
    assert summary.fetched == 2 and summary.reused == 2 and summary.exit_code == 0
    quote_dates = rows(
        tmp_path / "ticker.duckdb",
        "SELECT captured_at, quote_date, date_basis FROM captures ORDER BY captured_at",
    )
    assert [(at.astimezone(UTC).day, q, b) for at, q, b in quote_dates][:2] == [
        (1, d1, "capture"),
        (2, d2, "capture"),  # the revisit is the last capture of its day, at its own time
    ]
    revisit = next(f for f in archived(tmp_path) if f"{d2:%Y%m%d}T150000Z" in f.name)
    headers = warc_headers(revisit)
    assert headers["WARC-Date"] == f"{d2:%Y-%m-%d}T15:00:00Z"
    assert headers["WARC-Refers-To-Date"] == f"{d1:%Y-%m-%d}T15:00:00Z"
    assert stored(backfilled(tmp_path)) == stored(tmp_path / "ticker.duckdb")


def test_a_redirect_to_another_capture_stores_the_capture_served_under_its_own_time(
    tmp_path: Path,
) -> None:
    d1, d2, d3 = days_from(date(2020, 1, 1), 3)
    snaps = [
        Snap(ROOT, f"{d1:%Y%m%d}150000", day_page(d1)),
        Snap(ROOT, f"{d2:%Y%m%d}030000", day_page(d2, filler=5)),
        # d2's last capture is not replayable: the archive answers 302 to d3's
        Snap(ROOT, f"{d2:%Y%m%d}150000", day_page(d2), redirect_to=f"{d3:%Y%m%d}090000"),
        Snap(ROOT, f"{d3:%Y%m%d}090000", day_page(d3, dated=False)),
    ]
    with WebArchives(snaps) as wa:
        config = recover_config(tmp_path, wa)
        summary = run(config)
        asked = wa.snapshot_requests()
        again = run(config)

    # d2's capture served d3's (the redirect is a request of its own): d2's earlier
    # capture is taken instead, and d3's, which came with the redirect, is not asked again
    assert asked == [
        f"{d1:%Y%m%d}150000",
        f"{d2:%Y%m%d}150000",
        f"{d3:%Y%m%d}090000",
        f"{d2:%Y%m%d}030000",
    ]
    assert (summary.redirected, summary.instead, summary.reused) == (1, 1, 1)
    assert summary.exit_code == 0 and summary.covered == 3
    times = rows(tmp_path / "ticker.duckdb", "SELECT captured_at, quote_date FROM captures")
    assert sorted((t.astimezone(UTC), q) for t, q in times) == [
        (datetime(2020, 1, 1, 15, tzinfo=UTC), d1),
        (datetime(2020, 1, 2, 3, tzinfo=UTC), d2),
        (datetime(2020, 1, 3, 9, tzinfo=UTC), d3),  # never under the time asked for
    ]
    # the next run chooses d2's capture that serves d2, and has it
    assert again.fetched == 0 and again.chosen == 3 and again.already == 3
    assert stored(backfilled(tmp_path)) == stored(tmp_path / "ticker.duckdb")


def test_captures_without_a_ticker_are_not_fetched_and_non_captures_are_skipped(
    tmp_path: Path,
) -> None:
    d1, d2, d3, d4 = days_from(date(2020, 1, 1), 4)
    snaps = [
        Snap(ROOT, f"{d1:%Y%m%d}150000", day_page(d1)),
        Snap(f"{ROOT}logo.png", f"{d1:%Y%m%d}160000", b"png", mimetype="image/png"),
        Snap(f"{ROOT}feed/", f"{d1:%Y%m%d}170000", b"<rss/>", mimetype="application/rss+xml"),
        Snap(f"{ROOT}old", f"{d1:%Y%m%d}171000", b"", status="301"),
        Snap(f"{ROOT}gone", f"{d1:%Y%m%d}172000", b"", status="404"),
        Snap(f"{ROOT}err", f"{d1:%Y%m%d}173000", b"", status="503"),
        # listed as HTML, served as an image
        Snap(ROOT, f"{d2:%Y%m%d}150000", b"\x89PNG" + bytes(300), served_as="image/png"),
        # a 200 without Memento-Datetime is not a capture
        Snap(ROOT, f"{d3:%Y%m%d}150000", day_page(d3), memento=False),
        Snap(ROOT, f"{d4:%Y%m%d}150000", day_page(d4)),
    ]
    with WebArchives(snaps) as wa:
        config = recover_config(tmp_path, wa)
        summary = run(config)
        asked = wa.snapshot_requests()
        filters = wa.requests[0].query["filter"]

    assert sorted(asked) == [f"{d:%Y%m%d}150000" for d in (d1, d2, d3, d4)]
    assert "statuscode:200|-" in filters and any(f.startswith("mimetype:") for f in filters)
    assert summary.fetched == 2 and summary.skipped_count == 2 and summary.exit_code == 0
    reasons = " ".join(why for _, why in summary.skipped)
    assert "'image/png'" in reasons and "Memento-Datetime" in reasons
    # knowingly skipped: not asked for again
    n = len(wa.requests)
    with WebArchives(snaps) as wa2:
        config = recover_config(tmp_path, wa2)
        again = run(config)
    assert wa2.snapshot_requests() == [] and again.skipped_count == 2 and n


def test_index_rows_captured_in_the_future_are_left_out(tmp_path: Path) -> None:
    """A hostile or broken index: rows dated after now (year 9999 at the calendar's end,
    where the source's day would overflow) are counted as left out, never fetched."""
    day = date(2020, 1, 1)
    snaps = [
        Snap(ROOT, "20200101150000", day_page(day)),
        Snap(f"{ROOT}a", "99991231230000", day_page(day)),
        Snap(f"{ROOT}b", "20990101000000", day_page(day)),
    ]
    with WebArchives(snaps) as wa:
        config = recover_config(tmp_path, wa)
        result = CliRunner().invoke(cli, ["--config", str(config), "recover"])
        asked = wa.snapshot_requests()

    assert result.exit_code == 0, result.output
    assert asked == ["20200101150000"]
    assert "left out: 2 unusable (captured in the future)" in result.output
    assert "days covered:             1, 2020-01-01 to 2020-01-01" in result.output


def test_a_capture_that_cannot_be_fetched_is_listed_and_retried_by_the_next_run(
    tmp_path: Path,
) -> None:
    snaps = captures(days_from(date(2020, 1, 1), 3), hours=(15,))
    with WebArchives(snaps) as wa:
        config = recover_config(tmp_path, wa)
        wa.fail("/web/20200102", 404)
        first = run(config)
        second = run(config)
        asked = wa.snapshot_requests()

    assert first.exit_code == 1 and first.failed_count == 1
    where, why = first.failed[0]
    assert "20200102150000" in where and why == "HTTP 404 Not Found"
    assert second.exit_code == 0 and second.fetched == 1 and second.already == 2
    assert Counter(asked)["20200102150000"] == 2 and len(asked) == 4


# --- politeness -----------------------------------------------------------------------------


def test_requests_are_evenly_spaced_and_429s_and_503s_are_waited_out(tmp_path: Path) -> None:
    clock = FakeClock()
    snaps = captures(days_from(date(2020, 1, 1), 8), hours=(15,))
    with WebArchives(snaps, page_rows=3, clock=clock) as wa:
        config = recover_config(tmp_path, wa, per_minute=20)
        wa.fail("/web/20200103", 429)  # no Retry-After: at least a minute
        wa.fail("/web/20200105", 429, retry_after="90")
        wa.fail(CDX_PATH, 503, retry_after="7")
        summary = run(config, clock)
        times = [r.at for r in wa.requests]
        paths = [r.path for r in wa.requests]

    assert summary.exit_code == 0 and summary.fetched == 8
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 3.0  # 60 s / 20: evenly spaced, no bursts
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u < t + 60) <= 20
    # the wait after the first request of a path (the one that was refused)
    after = {p: gaps[paths.index(p)] for p in set(paths[:-1])}
    assert after[CDX_PATH] >= 7 and paths[1] == CDX_PATH  # the 503's Retry-After
    assert after[f"/web/20200103150000id_/{ROOT}"] >= 60
    assert after[f"/web/20200105150000id_/{ROOT}"] >= 90
    assert Counter(paths)[f"/web/20200103150000id_/{ROOT}"] == 2
    assert wa.connections == 1  # one connection, error answers included


def test_a_real_run_is_paced_on_one_connection(tmp_path: Path) -> None:
    snaps = captures(days_from(date(2020, 1, 1), 10), hours=(15,))
    with WebArchives(snaps, page_rows=4) as wa:
        config = recover_config(tmp_path, wa, per_minute=1200)  # one every 50 ms
        summary = recover(load_config(config), now=NOW, clock=time.monotonic, sleep=time.sleep)
        times = [r.at for r in wa.requests]

    assert summary.fetched == 10 and summary.exit_code == 0
    assert len(times) >= 13
    # 50 ms apart as sent; as received, give or take the scheduling of a busy machine,
    # and never a burst (a burst arrives well under a millisecond apart)
    assert min(b - a for a, b in zip(times, times[1:], strict=False)) >= 0.03
    assert times[-1] - times[0] >= 0.05 * (len(times) - 1) - 0.01
    assert wa.connections == 1


def test_rate_limiter_spacing_and_holds() -> None:
    clock = FakeClock()
    limiter = RateLimiter(20, clock=clock, sleep=clock.sleep)
    starts = []
    for i in range(5):
        if i == 2:
            limiter.hold(60)
        limiter.acquire()
        starts.append(clock.now)
    assert [round(b - a, 6) for a, b in zip(starts, starts[1:], strict=False)] == [3, 60, 3, 3]


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("429", "keeps asking to slow down (HTTP 429 3 times in a row"),
        ("long-retry-after", "asks to wait 3600 s (HTTP 429, Retry-After)"),
        ("refused", "refuses connections or does not answer (3 tries in a row"),
    ],
)
def test_an_archive_that_keeps_refusing_stops_the_run_and_the_next_run_resumes(
    tmp_path: Path, fault: str, expected: str
) -> None:
    clock = FakeClock()
    snaps = captures(days_from(date(2020, 1, 1), 6), hours=(15,))
    with WebArchives(snaps, clock=clock) as wa:
        config = recover_config(tmp_path, wa)
        if fault == "429":
            wa.fail("/web/20200103", 429, times=3)
        elif fault == "long-retry-after":
            wa.fail("/web/20200103", 429, retry_after="3600")
        else:

            def block() -> None:
                if len(wa.snapshot_requests()) == 2 and wa._server is not None:
                    wa.block()

            clock.on_sleep.append(block)
        first = run(config, clock)
        waits = list(clock.slept)
        clock.on_sleep.clear()
        if fault == "refused":
            wa.unblock()
        n = len(wa.snapshot_requests())
        second = run(config, FakeClock())
        asked = wa.snapshot_requests()

    assert first.exit_code == 1 and first.stopped is not None
    assert expected in first.stopped, first.stopped
    assert "run the same command later: it resumes where it stopped" in first.stopped
    assert first.fetched == 2 and first.not_reached == 4
    if fault == "refused":
        assert [round(w) for w in waits if w > 3] == [60, 120]  # a minute, then two
        # refused at once: no process of the run keeps the archive's socket open
        assert "Connection refused" in first.stopped, first.stopped
    assert second.exit_code == 0 and second.fetched == 4 and second.already == 2
    assert sorted(asked[n:]) == [f"2020010{d}150000" for d in range(3, 7)]
    assert stored(backfilled(tmp_path)) == stored(tmp_path / "ticker.duckdb")


# --- choosing captures ----------------------------------------------------------------------


# 1 Jan 2020 in Almaty (UTC+6) runs from 18:00 UTC on 31 Dec: these captures are at
# 01:00, 09:00, 11:00, 13:00, 17:00 and 23:00 there; 20:00 UTC on 1 Jan is 2 Jan there.
ALMATY_DAY = [
    "20191231190000",
    "20200101030000",
    "20200101050000",
    "20200101070000",
    "20200101110000",
    "20200101170000",
]


@pytest.mark.parametrize(
    ("per_day", "expected"),
    [
        (1, ["20200101170000"]),  # the day's last
        (2, ["20200101050000", "20200101170000"]),  # the last of each half of the day
        (3, ["20191231190000", "20200101070000", "20200101170000"]),  # of each third
        (4, ["20191231190000", "20200101050000", "20200101110000", "20200101170000"]),
        (0, ALMATY_DAY),
    ],
)
def test_per_day_spreads_the_captures_over_the_day_and_always_takes_its_last(
    tmp_path: Path, per_day: int, expected: list[str]
) -> None:
    day = date(2020, 1, 1)
    # each with bytes of its own: identical bytes are downloaded once
    snaps = [Snap(ROOT, stamp, day_page(day, filler=i)) for i, stamp in enumerate(ALMATY_DAY)]
    snaps.append(Snap(ROOT, "20200101200000", day_page(date(2020, 1, 2))))
    with WebArchives(snaps) as wa:
        config = recover_config(tmp_path, wa)
        summary = run(config, per_day=per_day, since=day, until=day)
        asked = wa.snapshot_requests()
        cdx = wa.requests[0].query

    assert cdx["from"] == ["20191231180000"] and cdx["to"] == ["20200101175959"]
    assert sorted(asked) == expected
    assert summary.days == 1 and summary.chosen == len(expected)


def test_scope_page_takes_the_source_url_only(tmp_path: Path) -> None:
    d1, d2 = days_from(date(2020, 1, 1), 2)
    snaps = [
        Snap(ROOT, f"{d1:%Y%m%d}090000", day_page(d1)),
        Snap("https://www.timesca.com/", f"{d2:%Y%m%d}080000", day_page(d2)),  # the same page
        Snap(f"{ROOT}news/x", f"{d2:%Y%m%d}150000", day_page(d2, filler=3)),  # another page
    ]
    with WebArchives(snaps) as wa:
        config = recover_config(tmp_path, wa)
        summary = run(config, scope="page")
        asked = wa.snapshot_requests()
        cdx = wa.requests[0].query
        site = run(config)  # the site scope afterwards takes the other page's capture too
        site_asked = wa.snapshot_requests()[len(asked) :]

    assert cdx["matchType"] == ["exact"] and cdx["url"] == [ROOT]
    assert sorted(asked) == [f"{d1:%Y%m%d}090000", f"{d2:%Y%m%d}080000"]
    assert summary.chosen == 2 and summary.exit_code == 0
    assert site_asked == [f"{d2:%Y%m%d}150000"] and site.already == 1


def test_a_dry_run_lists_counts_and_fetches_nothing(tmp_path: Path) -> None:
    days = days_from(date(2020, 1, 30), 4)
    snaps = captures(days)
    with WebArchives(snaps, page_rows=5) as wa:
        config = recover_config(tmp_path, wa, per_minute=1200)
        result = CliRunner().invoke(cli, ["--config", str(config), "recover", "--dry-run"])
        asked = wa.snapshot_requests()
        n = len(wa.requests)
        after = run(config, per_day=2)
        relisted = [r for r in wa.requests[n:] if r.path == CDX_PATH]

    assert result.exit_code == 0, result.output
    assert asked == []
    out = result.stdout
    assert "days found:               4, 2020-01-30 to 2020-02-02 (3 captures a day)" in out
    assert "  2020-01      2         6         2       0" in out
    assert "  2020-02      2         6         2       0" in out
    assert "to fetch:                 4" in out
    assert "time at 1200 a minute:    0 s (4 downloads" in out
    assert "dry run: no capture was fetched" in out
    # the real run uses the listing: it lists only the newest captures again
    assert len(relisted) == 1 and relisted[0].query["from"] != []
    # two a day; the bytes of a day's captures are the same: downloaded once
    assert (after.fetched, after.reused, after.chosen) == (4, 4, 8)
    assert after.listed_new == 0 and after.exit_code == 0


def test_since_and_until_limit_the_listing_and_the_days(tmp_path: Path) -> None:
    snaps = captures(days_from(date(2020, 1, 1), 10), hours=(15,))
    with WebArchives(snaps) as wa:
        config = recover_config(tmp_path, wa)
        summary = run(config, since=date(2020, 1, 3), until=date(2020, 1, 5))
        asked = wa.snapshot_requests()

    assert sorted(asked) == ["20200103150000", "20200104150000", "20200105150000"]
    assert summary.covered == 3 and summary.covered_first == date(2020, 1, 3)


# --- Common Crawl ---------------------------------------------------------------------------


def test_common_crawl_index_pages_and_byte_ranges(tmp_path: Path) -> None:
    d1, d2, d3, d4 = days_from(date(2021, 3, 1), 4)
    crawl_a = Crawl(
        "CC-MAIN-2021-10",
        "2021-02-25T00:00:00",
        "2021-03-09T00:00:00",
        [
            Snap(ROOT, f"{d1:%Y%m%d}090000", day_page(d1, filler=2)),
            Snap(ROOT, f"{d1:%Y%m%d}150000", day_page(d1)),
            Snap(f"{ROOT}news/a", f"{d2:%Y%m%d}100000", day_page(d2)),
            Snap(ROOT, f"{d3:%Y%m%d}100000", revisit_of=f"{d1:%Y%m%d}090000"),
            Snap(f"{ROOT}logo.png", f"{d3:%Y%m%d}110000", b"png", mimetype="image/png"),
            Snap(f"{ROOT}gone", f"{d4:%Y%m%d}110000", b"", status="404"),
        ],
    )
    empty = Crawl("CC-MAIN-2021-17", "2021-04-10T00:00:00", "2021-04-23T00:00:00")
    old = Crawl(
        "CC-MAIN-2019-04",
        "2019-01-15T00:00:00",
        "2019-01-24T00:00:00",
        [Snap(ROOT, "20190120100000", day_page(date(2019, 1, 20)))],
    )
    with WebArchives(crawls=[old, crawl_a, empty], cc_page_rows=2) as wa:
        config = recover_config(tmp_path, wa)
        wa.fail("/cc/CC-MAIN-2021-10-index", 503)  # slow down: no Retry-After
        clock = FakeClock()
        summary = run(config, clock, archive="commoncrawl", since=date(2020, 1, 1))
        ranges = wa.range_requests()
        index = [r for r in wa.requests if r.path.startswith("/cc/")]

    assert summary.exit_code == 0, summary
    assert [r.path for r in index][0] == "/cc/collinfo.json"
    assert {r.path for r in index} == {
        "/cc/collinfo.json",
        "/cc/CC-MAIN-2021-10-index",
        "/cc/CC-MAIN-2021-17-index",  # the 2019 crawl is before --since: not asked
    }
    assert [round(w) for w in clock.slept if w > 1] == [60]  # the 503, waited out
    # d1's last, d2's page, d3's revisit (its original's record, the 09:00 capture)
    assert len(ranges) == 3 and all(r.startswith("bytes=") for r in ranges)
    assert summary.fetched == 3 and summary.chosen == 3
    assert summary.left_out == {"not HTML": 1, "errors (4xx, 5xx)": 1}
    times = rows(tmp_path / "ticker.duckdb", "SELECT captured_at FROM captures")
    assert sorted(t.astimezone(UTC) for (t,) in times) == [
        datetime(2021, 3, 1, 15, tzinfo=UTC),
        datetime(2021, 3, 2, 10, tzinfo=UTC),
        datetime(2021, 3, 3, 10, tzinfo=UTC),  # the revisit at its own time
    ]
    headers = warc_headers(archived(tmp_path)[0])
    assert headers["WARC-Ticker-Archive"] == "commoncrawl"
    assert headers["WARC-Ticker-Snapshot"].startswith(wa.url(CC_DATA + "/crawl-data/"))
    assert headers["WARC-Ticker-Range"].startswith("bytes=")
    assert stored(backfilled(tmp_path)) == stored(tmp_path / "ticker.duckdb")


# --- the command line -----------------------------------------------------------------------


def test_the_summary_and_exit_code_of_the_command(tmp_path: Path) -> None:
    d1, d2 = days_from(date(2020, 1, 1), 2)
    snaps = [
        Snap(ROOT, f"{d1:%Y%m%d}150000", day_page(d1)),
        Snap(ROOT, f"{d2:%Y%m%d}150000", day_page(d2)),
    ]
    with WebArchives(snaps) as wa:
        config = recover_config(tmp_path, wa)
        wa.fail("/web/20200102", 500, times=10)
        result = CliRunner().invoke(cli, ["--config", str(config), "recover"])

    assert result.exit_code == 1, result.output
    out = result.stdout
    q = quotes_of(d1)
    assert (
        f"archive:                  wayback ({wa.url(CDX_PATH)}), every page of timesca.com" in out
    )
    assert "captures listed:          2 (2 new this run, 1 request to the index)" in out
    assert "captures chosen:          2 (the last of each day)" in out
    assert "captures fetched:         1\n" in out
    assert "could not be fetched:     1\n" in out
    assert f"  {wa.url('/web/20200102150000id_/' + ROOT)}: HTTP 500 Internal Server Error" in out
    assert "  (the next run tries them again)" in out
    assert f"observations:             {len(q)} new, 0 already stored, 0 revised" in out
    assert "days covered:             1, 2020-01-01 to 2020-01-01" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2020-02-01", "--until", "2020-01-01"], "--since 2020-02-01 is after --until"),
        (["--per-day", "-1"], "Invalid value for '--per-day'"),
        (["--archive", "archive.today"], "Invalid value for '--archive'"),
        (["--scope", "domain"], "Invalid value for '--scope'"),
        (["--source", "nope"], "no source named 'nope'"),
        (
            ["--source", "reference"],
            "--source reference: a source of kind 'reference' is no web page",
        ),
    ],
)
def test_a_usage_error_is_exit_code_2(tmp_path: Path, args: list[str], message: str) -> None:
    with WebArchives() as wa:
        config = recover_config(tmp_path, wa)
        result = CliRunner().invoke(cli, ["--config", str(config), "recover", *args])
        assert wa.requests == []
    assert result.exit_code == 2, result.output
    if message.startswith("Invalid value"):  # click's own usage message
        assert message in result.stderr
    else:
        assert message in one_error_line(result.stderr)


def test_recovered_pages_are_not_reported_unstored_by_status(tmp_path: Path) -> None:
    with WebArchives(captures(days_from(date(2020, 1, 1), 2), hours=(15,))) as wa:
        config = recover_config(tmp_path, wa)
        assert run(config).fetched == 2
    result = CliRunner().invoke(cli, ["--config", str(config), "status", "--json"])
    assert '"unstored_pages": 0' in result.stdout, result.output


# --- killed at any moment -------------------------------------------------------------------


def _ticker(config: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "TICKER_CONFIG"}
    return subprocess.Popen(
        [sys.executable, "-m", "ticker", "--config", str(config), "recover", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.parametrize("when", ["listing", "fetching", "sigterm", "ctrl-c"])
def test_a_run_killed_with_sigkill_resumes_where_it_stopped(tmp_path: Path, when: str) -> None:
    snaps = captures(days_from(date(2020, 1, 1), 12), hours=(9, 15))
    with WebArchives(snaps, page_rows=3) as wa:
        config = recover_config(tmp_path, wa, per_minute=600)  # one request every 0.1 s
        proc = _ticker(config)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            cdx = [r for r in wa.requests if r.path == CDX_PATH]
            if (when == "listing" and len(cdx) >= 3) or len(wa.snapshot_requests()) >= 5:
                break
            time.sleep(0.01)
        if when in ("sigterm", "ctrl-c"):  # stopped, not killed: what it fetched is stored
            proc.send_signal(signal.SIGTERM if when == "sigterm" else signal.SIGINT)
            stopped, said = proc.communicate(timeout=30)
            assert proc.returncode == 1, stopped + said
            assert "stopping after the request under way" in said
            assert "stopped: interrupted; the same command resumes where it stopped" in stopped
            assert "read back" not in stopped
        else:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        n_cdx = len([r for r in wa.requests if r.path == CDX_PATH])
        first = list(wa.snapshot_requests())
        done = _ticker(config)
        out, err = done.communicate(timeout=60)
        rerun_cdx = [r for r in wa.requests[n_cdx + len(first) :] if r.path == CDX_PATH]
        asked = wa.snapshot_requests()

    assert done.returncode == 0, out + err
    assert "days covered:             12, 2020-01-01 to 2020-01-12" in out
    counts = Counter(asked)
    assert sorted(counts) == [f"202001{d:02d}150000" for d in range(1, 13)]
    # at most the capture in flight when the process died is asked for twice
    assert sum(n - 1 for n in counts.values()) <= 1, counts
    if when == "listing":
        assert first == [] and rerun_cdx[0].query.get("resumeKey"), rerun_cdx[0].query
    elif when == "fetching":  # archived, not stored yet (stored every 5 s at this pace)
        assert "read back from the page archive" in out, out
    else:
        assert "read back" not in out and sum(counts.values()) == 12
    assert stored(backfilled(tmp_path)) == stored(tmp_path / "ticker.duckdb")
    assert len(archived(tmp_path)) == 12
    assert not [p for p in (tmp_path / "pages").rglob("*") if p.name.startswith(".")]


def test_gzip_bodies_of_snapshots_are_read(tmp_path: Path) -> None:
    """A WARC file the page archive holds reads back as the page the archive served."""
    day = date(2020, 1, 1)
    with WebArchives([Snap(ROOT, "20200101150000", day_page(day))]) as wa:
        config = recover_config(tmp_path, wa)
        assert run(config).fetched == 1
    (path,) = archived(tmp_path)
    assert day_page(day) in gzip.decompress(path.read_bytes())


def test_a_parser_failure_fails_its_capture_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a reader with a bug, handed to the keeper process as recover hands it its own
    broken = functools.partial(recover_module.keeper, reader=BrokenReader(b"02 January 2020"))
    monkeypatch.setattr(recover_module, "keeper", broken)
    with WebArchives(captures(days_from(date(2020, 1, 1), 3), hours=(15,))) as wa:
        config = recover_config(tmp_path, wa)
        summary = run(config)

    assert summary.exit_code == 1 and summary.fetched == 3 and summary.failed_count == 1
    where, why = summary.failed[0]
    assert "20200102150000" in where
    assert why.startswith("the parser failed (ZeroDivisionError: a bug); this is a bug")
    assert "2020-01-02/20200102T150000Z-timesca-" in why  # the capture is kept
    assert summary.covered == 2


def test_an_archive_that_cannot_be_written_stops_the_run_and_stores_nothing(
    tmp_path: Path,
) -> None:
    (tmp_path / "pages").write_text("a file where the archive should be")
    with WebArchives(captures(days_from(date(2020, 1, 1), 2), hours=(15,))) as wa:
        config = recover_config(tmp_path, wa)
        result = CliRunner().invoke(cli, ["--config", str(config), "recover"])
        (tmp_path / "pages").unlink()
        again = run(config)

    assert result.exit_code == 2, result.output
    assert one_error_line(result.stderr).startswith(f"error: {tmp_path / 'pages'}/2020-01-01/")
    assert "check that [archive] dir is writable and has free space" in result.stderr
    assert again.fetched == 2 and again.already == 0 and again.exit_code == 0


def test_a_torn_file_left_in_the_archive_is_fetched_again_and_replaced(tmp_path: Path) -> None:
    at = datetime(2020, 1, 1, 15, tzinfo=UTC)
    rid = record_id("wayback", "timesca", ROOT, "20200101150000")
    torn = archive_path(tmp_path / "pages", "timesca", at, rid)
    torn.parent.mkdir(parents=True)
    torn.write_bytes(b"\x1f\x8b\x08")  # what a power cut can leave of a file not synced
    with WebArchives(captures(days_from(date(2020, 1, 1), 1), hours=(15,))) as wa:
        config = recover_config(tmp_path, wa)
        summary = run(config)
        asked = wa.snapshot_requests()

    assert asked == ["20200101150000"] and summary.read_back == 0 and summary.fetched == 1
    assert warc_headers(torn)["WARC-Date"] == "2020-01-01T15:00:00Z"
