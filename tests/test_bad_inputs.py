"""Hostile input files through `ticker backfill`, each beside good files: the good files are
stored, the hostile one is listed with a clear reason, the output stays bounded, and
nothing raises. Awkward but valid files (other encodings) are read whole.

The same files go through the worker processes of a big run, and through a real process."""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from conftest import Project, one_error_line, ticker_subprocess
from hypothesis import given, settings
from hypothesis import strategies as st
from pages import (
    DEC_09,
    FOUR_PAIRS,
    MARCH_20,
    WarcRecord,
    bullet_page,
    gz,
    html_page,
    text_page,
    ticker_block,
    warc_bytes,
)

from ticker import backfill as backfill_job
from ticker.config import Source, load_config
from ticker.models import Page
from ticker.sources.ticker import TickerReader

GOOD = {
    "good/march.txt": lambda: text_page(MARCH_20, "20 March 2025").encode(),
    "good/december.html": lambda: html_page(DEC_09, "09 December 2025").encode(),
    # undated page: dated by its WARC-Date, 09:00 UTC on 14 June 2023
    "good/june.warc.gz": lambda: warc_bytes(
        [WarcRecord(html_page(FOUR_PAIRS, day=None), datetime(2023, 6, 14, 9, tzinfo=UTC))],
        compress=True,
    ),
}
GOOD_DATES = {"2025-03-20", "2025-12-09", "2023-06-14"}
MAX_LINE = 300 + 160  # a reason cut to 300 characters, after its file's path under tmp_path


def warc_dated(stamp: str, body: str | None = None) -> bytes:
    """One response record whose WARC-Date header says `stamp`, whatever that is."""
    data = warc_bytes([WarcRecord(body or html_page(MARCH_20, day=None))], compress=False)
    data, n = re.subn(rb"WARC-Date: [^\r]*", b"WARC-Date: " + stamp.encode(), data, count=1)
    assert n == 1
    return data


def many_versions() -> bytes:
    """10,000 copies of KGS/USD, each printing another rate: one ~300 KB 'disagree' list."""
    lines = "\n".join(f"  \u2022 KGS/USD = 0.0{10000 + i} 0.1%" for i in range(10_000))
    return (lines.lstrip() + "\n20 March 2025\nfiller\n").encode()


def odd_lines() -> bytes:
    """One readable pair, then 5,000 distinct lines whose pair cannot be made out."""
    odd = "\n".join(f"  \u2022 x{i}/USD = 0.{i} 1%" for i in range(5_000))
    return f"{ticker_block(FOUR_PAIRS[:1], 1)}{odd}\n05 May 2024\nfiller\n".encode()


@dataclass(frozen=True)
class Hostile:
    data: Callable[[], bytes]
    section: str  # the summary list it is in
    reason: str  # what its line there says
    exit_code: int
    stored: str | None = None  # the date of the quotes it still gives


BAD_DATE, PARTIAL = "pages with a bad date:", "pages read in part:"
HOSTILE = {
    "warc-date-9999.warc.gz": Hostile(
        lambda: gzip.compress(warc_dated("9999-12-31T23:59:59Z"), mtime=0),
        BAD_DATE,
        "capture time 9999-12-31T23:59:59+00:00 is in the future",
        1,
    ),
    "warc-date-year-1-with-offset.warc": Hostile(
        lambda: warc_dated("0001-01-01T00:00:00+05:00"),
        BAD_DATE,
        "WARC-Date '0001-01-01T00:00:00+05:00' is out of range",
        1,
    ),
    "warc-date-year-1.warc": Hostile(
        lambda: warc_dated("0001-01-01T00:00:00Z"), BAD_DATE, "is out of range", 1
    ),
    "warc-date-month-13.warc": Hostile(
        lambda: warc_dated("2025-13-01T00:00:00Z"), BAD_DATE, "is not a date and time", 1
    ),
    "warc-date-offset-99h.warc": Hostile(
        lambda: warc_dated("2025-03-20T10:00:00+99:00"), BAD_DATE, "is not a date and time", 1
    ),
    "warc-date-words.warc": Hostile(
        lambda: warc_dated("yesterday at noon"), BAD_DATE, "'yesterday at noon'", 1
    ),
    # a record captured on the 10th printing the 20th: its date line is not that day's
    "warc-date-before-its-date-line.warc": Hostile(
        lambda: warc_dated("2025-03-10T10:00:00Z", html_page(DEC_09, "20 March 2025")),
        BAD_DATE,
        "the date line says 2025-03-20, more than a day after the page was captured "
        "(2025-03-10, Asia/Almaty)",
        1,
    ),
    "date-line-9999.txt": Hostile(
        lambda: text_page(DEC_09, "31 December 9999").encode(),
        BAD_DATE,
        "the date line says 9999-12-31, after today",
        1,
    ),
    "date-line-2100.html.gz": Hostile(
        lambda: gz(html_page(DEC_09, "01 January 2100")),
        BAD_DATE,
        "the date line says 2100-01-01, after today",
        1,
    ),
    "10000-versions.txt": Hostile(
        many_versions, "inconsistent pages:", "KGS/USD: copies disagree (0.010000 0.1%", 0
    ),
    "5000-odd-lines.txt": Hostile(
        odd_lines, PARTIAL, "unreadable ticker line 'x0/USD = 0.0 1%'", 0, "2024-05-05"
    ),
    "malformed-rate.html": Hostile(
        lambda: html_page(
            tuple(("KZT", "0.0O199", "-0") if q[0] == "KZT" else q for q in DEC_09),
            "08 December 2025",
        ).encode(),
        PARTIAL,
        "KZT/USD: malformed rate '0.0O199'",
        0,
        "2025-12-08",
    ),
    # UTF-8 declared as windows-1251: every "•" reads as "вЂў", so only the first line
    "misdeclared-utf-8.html": Hostile(
        lambda: bullet_page(DEC_09, "07 December 2025", '<meta charset="windows-1251">').encode(),
        PARTIAL,
        "unreadable ticker line",
        0,
        "2025-12-07",
    ),
    "300-kb-rate.txt": Hostile(
        lambda: f"KGS/USD = 0.{'1' * 300_000} 0.5%\n20 March 2025\n".encode(),
        "pages with problems:",
        "KGS/USD: malformed rate '0.111111111111111111'",
        0,
    ),
}
# Awkward but valid: each is read whole, under its own date.
VALID = {
    "utf-16-le.html": (
        lambda: b"\xff\xfe" + html_page(DEC_09, "01 April 2024").encode("utf-16-le"),
        "2024-04-01",
    ),
    "utf-16-be.html": (
        lambda: b"\xfe\xff" + html_page(DEC_09, "02 April 2024").encode("utf-16-be"),
        "2024-04-02",
    ),
    "utf-16-meta.html": (
        lambda: (
            html_page(DEC_09, "03 April 2024")
            .replace("<head>", '<head><meta charset="utf-16">')
            .encode("utf-16")
        ),
        "2024-04-03",
    ),
    "cp1251-no-charset.html": (
        lambda: bullet_page(DEC_09, "04 April 2024").encode("cp1251"),
        "2024-04-04",
    ),
    "cp1252-no-charset.htm.gz": (
        lambda: gz(bullet_page(DEC_09, "05 April 2024", prose="Café").encode("cp1252")),
        "2024-04-05",
    ),
    "latin-1-meta.html": (
        lambda: bullet_page(
            DEC_09, "06 April 2024", '<meta charset="iso-8859-1">', prose="Café"
        ).encode("cp1252"),
        "2024-04-06",
    ),
    "utf-7-meta.html": (
        lambda: bullet_page(DEC_09, "07 April 2024", '<meta charset="utf-7">').encode(),
        "2024-04-07",
    ),
    "windows-1251-in-warc.warc": (
        lambda: warc_bytes(
            [
                WarcRecord(
                    bullet_page(DEC_09, "08 April 2024").encode("cp1251"),
                    datetime(2024, 4, 8, 9, tzinfo=UTC),
                    content_type="text/html; charset=windows-1251",
                )
            ],
            compress=False,
        ),
        "2024-04-08",
    ),
}


def write_good(project: Project) -> None:
    for name, data in GOOD.items():
        project.write(name, data())


def dates(project: Project) -> dict[str, int]:
    """Stored dates and the pairs of each."""
    rows = project.rows("SELECT CAST(date AS VARCHAR), count(*) FROM daily GROUP BY ALL")
    return {str(day): int(n) for day, n in rows}  # type: ignore[call-overload]


def listed(output: str, label: str) -> list[str]:
    lines = output.splitlines()
    at = next(i for i, t in enumerate(lines) if t.startswith(label))
    out = []
    for text in lines[at + 1 :]:
        if not text.startswith("  "):
            break
        out.append(text.strip())
    return out


def assert_clean(result: Result) -> None:
    """No traceback, no exception but the exit, and every line bounded."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    assert len(result.output) < 10_000, result.output[:2000]
    longest = max(result.output.splitlines(), key=len)
    assert len(longest) <= MAX_LINE, longest


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_file_is_listed_and_the_good_ones_are_stored(project: Project, name: str) -> None:
    write_good(project)
    case = HOSTILE[name]
    path = project.write(f"bad/{name}", case.data())

    result = project.backfill()

    assert_clean(result)
    assert result.exit_code == case.exit_code, result.output
    entries = [e for e in listed(result.stdout, case.section) if e.startswith(str(path))]
    assert len(entries) == 1, result.output
    assert case.reason in entries[0], entries[0]
    stored = dates(project)
    assert GOOD_DATES <= set(stored), result.output
    assert set(stored) - GOOD_DATES == ({case.stored} if case.stored else set())
    # what a page's problems leave in the store is bounded too
    [(longest,)] = project.rows("SELECT max(length(coalesce(detail, ''))) FROM captures")
    assert int(longest) <= 21 * 300  # type: ignore[call-overload]

    again = project.backfill()
    assert_clean(again)
    assert again.exit_code == case.exit_code
    if case.section == BAD_DATE:  # read again next time, and listed again
        assert "files read:               1 (3 unchanged" in again.stdout
        assert [e for e in listed(again.stdout, BAD_DATE) if e.startswith(str(path))]
    else:
        assert "files read:               0 (4 unchanged" in again.stdout
    assert dates(project) == stored


@pytest.mark.parametrize("name", sorted(VALID))
def test_an_awkward_but_valid_file_is_read_whole(project: Project, name: str) -> None:
    write_good(project)
    data, day = VALID[name]
    project.write(f"odd/{name}", data())

    result = project.backfill()

    assert_clean(result)
    assert result.exit_code == 0, result.output
    assert "pages with a ticker:      4" in result.stdout, result.output
    assert "pages with problems" not in result.stdout and PARTIAL not in result.stdout
    stored = dates(project)
    assert stored[day] == 5 and set(stored) == GOOD_DATES | {day}


def _write_all(project: Project) -> dict[str, Path]:
    write_good(project)
    paths = {name: project.write(f"bad/{name}", case.data()) for name, case in HOSTILE.items()}
    for name, (data, _) in VALID.items():
        project.write(f"odd/{name}", data())
    return paths


def test_every_hostile_file_at_once_in_worker_processes(project: Project) -> None:
    """A run big enough for the process pool reads in workers: a fault there must not
    stop the run either (fork: the workers are this process's copies)."""
    paths = _write_all(project)
    config = load_config(project.config)
    now = datetime(2026, 1, 1, tzinfo=UTC)

    summary = backfill_job.backfill(config, [str(project.dumps)], now=now, workers=2)

    assert summary.exit_code == 1
    lists = {
        BAD_DATE: summary.bad_dates,
        PARTIAL: summary.partial,
        "inconsistent pages:": summary.inconsistent,
        "pages with problems:": summary.problems,
    }
    for name, case in HOSTILE.items():
        [(_, reason)] = [e for e in lists[case.section] if e[0].startswith(str(paths[name]))]
        assert case.reason in reason and len(reason) <= 300
    assert summary.unreadable == []
    stored = dates(project)
    assert GOOD_DATES | {d for _, d in VALID.values()} <= set(stored)


def test_every_hostile_file_at_once_in_a_real_process(project: Project) -> None:
    _write_all(project)

    proc = ticker_subprocess(project.config, "backfill", str(project.dumps))

    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == ""  # no traceback, no warning
    assert len(proc.stdout) < 20_000
    assert max(len(line) for line in proc.stdout.splitlines()) <= MAX_LINE
    assert f"pages with a bad date:    {sum(c.section == BAD_DATE for c in HOSTILE.values())}" in (
        proc.stdout
    )


def test_thousands_of_unreadable_files_are_listed_fifty_and_counted(project: Project) -> None:
    write_good(project)
    for i in range(120):
        project.write(f"empty/e{i:04d}.txt", b"")

    result = project.backfill()

    assert_clean(result)
    assert result.exit_code == 1
    assert "files that could not be read: 120" in result.stdout
    entries = listed(result.stdout, "files that could not be read:")
    assert len(entries) == 51 and entries[-1] == "... and 70 more"
    assert all(e.endswith(": empty file, no page in it") for e in entries[:50])
    assert GOOD_DATES <= set(dates(project))


def test_a_date_option_after_today_is_a_usage_error(project: Project) -> None:
    project.write("listing.txt", text_page(MARCH_20, day=None))

    result = project.backfill(extra=["--date", "9999-12-31"])

    assert result.exit_code == 2
    message = one_error_line(result.stderr)
    assert message.startswith("error: --date 9999-12-31 is after today (")
    assert not project.db.exists()


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "worker-processes"])
def test_a_parser_fault_on_one_page_lists_it_and_stores_the_rest(
    project: Project, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    """Whatever a page makes the parser do, the run goes on: the page is listed (as a bug
    to report) and its file is read again next time."""
    write_good(project)
    poison = project.write("bad/poison.txt", text_page(DEC_09, "05 December 2025", "POISON"))
    real = TickerReader.read

    def read(self: TickerReader, page: Page, *args: Any, **kwargs: Any) -> Any:
        if b"POISON" in page.body:
            raise RecursionError("maximum recursion depth exceeded")
        return real(self, page, *args, **kwargs)

    monkeypatch.setattr(TickerReader, "read", read)  # forked workers inherit it
    config = load_config(project.config)
    now = datetime(2026, 1, 1, tzinfo=UTC)

    summary = backfill_job.backfill(config, [str(project.dumps)], now=now, workers=workers)

    assert summary.exit_code == 1
    [(origin, reason)] = summary.unreadable
    assert origin == str(poison)
    assert reason.startswith("the parser failed (RecursionError: maximum recursion depth")
    assert "bug" in reason
    assert set(dates(project)) == GOOD_DATES
    monkeypatch.undo()
    again = backfill_job.backfill(config, [str(project.dumps)], now=now, workers=workers)
    assert (again.files_read, again.unreadable, again.new) == (1, [], 5)


@settings(max_examples=300, deadline=None)
@given(
    captured=st.none() | st.datetimes(timezones=st.timezones()),
    day=st.dates(),
    dated=st.booleans(),
    given_date=st.none() | st.dates(),
)
def test_no_capture_time_or_date_line_raises_or_stores_a_day_to_come(
    captured: datetime | None, day: date, dated: bool, given_date: date | None
) -> None:
    """Any capture time a container may claim (year 1 to 9999, any zone) and any date line:
    a record, and quotes only under a date that is not after the capture day + 1, or
    after today for a page without a capture time."""
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    source = Source()
    line = f"{day.day:02d} {day:%B} {day.year:04d}" if dated else None
    page = Page("hostile.warc#1", text_page(MARCH_20, line).encode(), captured_at=captured)

    record = TickerReader().read(page, source, now=now, given_date=given_date)

    if record.quote_date is None:
        assert record.observations == () and record.outcome in ("bad_date", "undated")
        return
    assert record.outcome == "ok" and len(record.observations) == 5
    if captured is None:
        assert record.quote_date <= now.astimezone(source.tz).date()
    else:
        limit = captured.astimezone(source.tz).date() + timedelta(days=1)
        assert record.quote_date <= limit and captured <= now + timedelta(days=1)
