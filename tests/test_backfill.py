"""`ticker backfill` into a real DuckDB file under tmp_path, from files built by each test:
counts, idempotence, revisions, dating, every input format, and bad input."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import Project, one_error_line, ticker_subprocess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pages import (
    DEC_09,
    FOUR_PAIRS,
    MARCH_20,
    WarcRecord,
    gz,
    html_page,
    no_ticker_page,
    text_page,
    warc_bytes,
)

from ticker import backfill as backfill_job
from ticker.config import load_config
from ticker.dumps import SOURCE_HEADER


def line(output: str, label: str) -> str:
    """The value after `label` on its summary line."""
    for text in output.splitlines():
        if text.startswith(label):
            return text[len(label) :].strip()
    raise AssertionError(f"no {label!r} line in:\n{output}")


def section(output: str, label: str) -> list[str]:
    """The indented lines listed under a summary line."""
    lines = output.splitlines()
    start = next(i for i, t in enumerate(lines) if t.startswith(label))
    out = []
    for text in lines[start + 1 :]:
        if not text.startswith("  "):
            break
        out.append(text.strip())
    return out


def export_rows(project: Project) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = json.loads(project.export("json"))
    return rows


def by_pair(project: Project, day: str) -> dict[str, tuple[str, str]]:
    return {
        r["pair"]: (r["rate"], r["change_pct"]) for r in export_rows(project) if r["date"] == day
    }


# --- counts, idempotence ------------------------------------------------------------------


def test_summary_counts_every_kind_of_page(project: Project) -> None:
    project.write("a/march.txt", text_page(MARCH_20, "20 March 2025"))
    project.write("a/december.txt", text_page(DEC_09, "09 December 2025"))
    project.write("b/older.txt", text_page(FOUR_PAIRS, "14 June 2023"))
    listing = project.write("b/listing.txt", text_page(MARCH_20, day=None))
    project.write("other.txt", no_ticker_page(markup=False))
    project.write("notes.md", "not a page dump: not read")

    result = project.backfill()

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert line(out, "files read:") == "5"
    assert line(out, "pages with a ticker:") == "4"
    assert line(out, "observations:") == "14 new, 0 already stored, 0 revised"
    assert line(out, "pages without ticker:") == "1"
    assert line(out, "undated pages:") == "1"
    assert section(out, "undated pages:")[0] == str(listing)
    assert line(out, "inconsistent pages:") == "0"
    assert line(out, "files that could not be read:") == "0"
    assert project.table_counts() == {
        "captures": 5,
        "observations": 14,
        "sightings": 14,
        "loaded_files": 5,
    }


def test_second_run_skips_the_files_and_changes_nothing(project: Project) -> None:
    project.write("march.txt", text_page(MARCH_20, "20 March 2025"))
    project.write("december.txt.gz", gz(text_page(DEC_09, "09 December 2025")))
    project.write("listing.html", html_page(MARCH_20, day=None))
    assert project.backfill().exit_code == 0
    before = project.snapshot()
    csv_before, json_before = project.export("csv"), project.export("json")

    again = project.backfill()

    assert again.exit_code == 0, again.output
    assert line(again.stdout, "files read:") == "0 (3 unchanged since the last run, skipped)"
    assert line(again.stdout, "observations:") == "0 new, 0 already stored, 0 revised"
    assert line(again.stdout, "undated pages:") == "0"
    assert project.snapshot() == before
    assert project.export("csv") == csv_before
    assert project.export("json") == json_before


def test_a_touched_file_is_read_again_but_adds_nothing(project: Project) -> None:
    path = project.write("march.txt", text_page())
    project.backfill()
    before = project.snapshot()
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))

    again = project.backfill()

    assert line(again.stdout, "files read:") == "1"
    assert line(again.stdout, "pages with a ticker:") == "1 (1 loaded before)"
    assert line(again.stdout, "observations:") == "0 new, 0 already stored, 0 revised"
    assert project.snapshot() == before


def test_the_same_page_in_two_files_adds_nothing(project: Project) -> None:
    page = text_page(MARCH_20, "20 March 2025")
    project.write("one/page.txt", page)
    project.write("two/copy.txt", page)
    first = project.backfill()
    assert line(first.stdout, "pages with a ticker:") == "2 (1 loaded before)"
    assert line(first.stdout, "observations:") == "5 new, 0 already stored, 0 revised"

    later = project.write("three/another-copy.txt", page)
    again = project.backfill(later)

    assert line(again.stdout, "pages with a ticker:") == "1 (1 loaded before)"
    assert line(again.stdout, "observations:") == "0 new, 0 already stored, 0 revised"
    assert project.table_counts()["captures"] == 1
    assert project.table_counts()["observations"] == 5


def test_the_same_quotes_on_another_page_are_already_stored(project: Project) -> None:
    project.write("article.txt", text_page(MARCH_20, "20 March 2025", note="an article"))
    project.write("another.txt", text_page(MARCH_20, "20 March 2025", note="another one"))

    result = project.backfill()

    assert line(result.stdout, "observations:") == "5 new, 5 already stored, 0 revised"
    assert project.table_counts() == {
        "captures": 2,
        "observations": 5,
        "sightings": 10,
        "loaded_files": 2,
    }


# --- revisions and the daily series -------------------------------------------------------


def test_a_later_capture_with_other_values_is_kept_as_a_revision(project: Project) -> None:
    revised = tuple(("KZT", "0.00201", "1.01") if q[0] == "KZT" else q for q in MARCH_20)
    first = project.write("1-morning.txt", text_page(MARCH_20, "20 March 2025"))
    project.backfill(first)
    second = project.write("2-evening.txt", text_page(revised, "20 March 2025", note="later"))

    result = project.backfill(second)

    assert line(result.stdout, "observations:") == "0 new, 4 already stored, 1 revised"
    kzt = project.rows(
        """SELECT revision, rate_text, change_text FROM observations
           WHERE pair = 'KZT/USD' AND date = DATE '2025-03-20' ORDER BY revision"""
    )
    assert kzt == [(1, "0.00199", "-0"), (2, "0.00201", "1.01")]
    assert by_pair(project, "2025-03-20")["KZT/USD"] == ("0.00201", "1.01")
    assert len(export_rows(project)) == 5  # still one row per source, pair and date

    # A third capture showing the first values again: no new revision, and it is now
    # the latest capture, so the daily series shows its values.
    third = project.write("3-night.txt", text_page(MARCH_20, "20 March 2025", note="night"))
    result = project.backfill(third)
    assert line(result.stdout, "observations:") == "0 new, 5 already stored, 0 revised"
    assert project.table_counts()["observations"] == 6
    assert by_pair(project, "2025-03-20")["KZT/USD"] == ("0.00199", "-0")


def test_the_latest_capture_time_wins_whatever_the_loading_order(project: Project) -> None:
    revised = tuple(("TJS", "0.09200", "0.35") if q[0] == "TJS" else q for q in MARCH_20)
    evening = datetime(2025, 3, 20, 14, 0, tzinfo=UTC)
    morning = datetime(2025, 3, 20, 3, 0, tzinfo=UTC)
    late = project.write(
        "late.warc.gz", warc_bytes([WarcRecord(html_page(revised), evening)], compress=True)
    )
    early = project.write(
        "early.warc.gz", warc_bytes([WarcRecord(html_page(MARCH_20), morning)], compress=True)
    )
    project.backfill(late)

    result = project.backfill(early)  # loaded last, captured first

    assert line(result.stdout, "observations:") == "0 new, 4 already stored, 1 revised"
    assert by_pair(project, "2025-03-20")["TJS/USD"] == ("0.09200", "0.35")


# --- the quotes' date -----------------------------------------------------------------------


def test_undated_pages_are_listed_and_their_quotes_not_stored(project: Project) -> None:
    listing = project.write("listing.txt", text_page(MARCH_20, day=None))
    project.write("dated.txt", text_page(DEC_09, "09 December 2025"))

    result = project.backfill()

    assert result.exit_code == 0
    assert line(result.stdout, "undated pages:") == "1"
    undated = section(result.stdout, "undated pages:")
    assert undated[0] == str(listing)
    assert "re-run with --date YYYY-MM-DD" in undated[1]
    assert line(result.stdout, "observations:") == "5 new, 0 already stored, 0 revised"
    assert {r["date"] for r in export_rows(project)} == {"2025-12-09"}
    outcomes = {row[0]: row[1] for row in project.rows("SELECT origin, outcome FROM captures")}
    assert outcomes[str(listing)] == "undated"


def test_date_option_dates_undated_pages_only(project: Project) -> None:
    project.write("listing.txt", text_page(MARCH_20, day=None))
    project.write("dated.txt", text_page(DEC_09, "09 December 2025"))
    project.backfill()

    result = project.backfill(extra=["--date", "2025-03-21"])

    assert result.exit_code == 0, result.output
    # --date makes the files a new reading; the dated page keeps its own date.
    assert line(result.stdout, "files read:") == "2"
    assert line(result.stdout, "undated pages:") == "0"
    assert line(result.stdout, "observations:") == "5 new, 0 already stored, 0 revised"
    dates = {r["date"] for r in export_rows(project)}
    assert dates == {"2025-03-21", "2025-12-09"}
    basis = project.rows("SELECT DISTINCT date_basis FROM captures ORDER BY ALL")
    assert ("given",) in basis and ("header",) in basis


def test_a_bad_date_option_is_refused(project: Project) -> None:
    project.write("listing.txt", text_page(MARCH_20, day=None))
    result = project.backfill(extra=["--date", "21.03.2025"])
    assert result.exit_code == 2
    assert "YYYY-MM-DD" in result.output or "%Y-%m-%d" in result.output


@pytest.mark.parametrize("compress", [False, True], ids=["warc", "warc.gz"])
def test_warc_date_dates_undated_pages_in_the_source_time_zone(
    project: Project, compress: bool
) -> None:
    # 20:30 UTC on the 19th is already the 20th in Almaty.
    captured = datetime(2025, 3, 19, 20, 30, tzinfo=UTC)
    local_day = captured.astimezone(ZoneInfo("Asia/Almaty")).date()
    assert local_day == date(2025, 3, 20)
    records = [
        WarcRecord(html_page(MARCH_20, day=None), captured),
        WarcRecord(html_page(DEC_09, day=None), captured, status="404 Not Found"),
        WarcRecord("{}", captured, content_type="application/json"),
        # the date line wins over the capture time (the 19th, while Almaty is on the 20th)
        WarcRecord(html_page(DEC_09, day="19 March 2025"), captured),
    ]
    name = "archive.warc.gz" if compress else "archive.warc"
    path = project.write(name, warc_bytes(records, compress))

    result = project.backfill(path)

    assert result.exit_code == 0, result.output
    assert line(result.stdout, "files read:") == "1"
    assert line(result.stdout, "pages with a ticker:") == "2"
    assert line(result.stdout, "undated pages:") == "0"
    assert by_pair(project, local_day.isoformat())["UZS/USD"] == ("0.00008", "0")
    assert by_pair(project, "2025-03-19")["TJS/USD"] == ("0.10844", "-0.46")
    captures = project.rows(
        "SELECT origin, url, epoch_ms(captured_at), date_basis FROM captures ORDER BY id"
    )
    stamp = int(captured.timestamp() * 1000)
    assert captures == [
        (f"{path}#1", "https://timesca.com/", stamp, "capture"),
        (f"{path}#4", "https://timesca.com/", stamp, "header"),
    ]


def test_warc_ticker_source_header_names_the_source(tmp_path: Path) -> None:
    extra = '[[sources]]\nname = "timesca"\n\n[[sources]]\nname = "mirror"\nurl = "https://example.org/"\n'
    project = Project(tmp_path / "p", extra=extra)
    plain = warc_bytes([WarcRecord(html_page(MARCH_20))], compress=False)
    # ticker's own archive marks each record with the source it was fetched for
    marked = plain.replace(
        b"WARC-Type: response\r\n",
        f"{SOURCE_HEADER}: mirror\r\nWARC-Type: response\r\n".encode(),
        1,
    )
    assert marked != plain
    path = project.write("mirror.warc", marked)

    result = project.backfill(path)

    assert result.exit_code == 0, result.output
    assert {r["source"] for r in export_rows(project)} == {"mirror"}


# --- input formats --------------------------------------------------------------------------


def test_html_htm_and_gzipped_inputs(project: Project) -> None:
    days = {
        "page.html": ("01 February 2025", "2025-02-01"),
        "page2.htm": ("02 February 2025", "2025-02-02"),
        "page3.html.gz": ("03 February 2025", "2025-02-03"),
        "page4.txt.gz": ("04 February 2025", "2025-02-04"),
        "page5.TXT": ("05 February 2025", "2025-02-05"),
    }
    for name, (day, _) in days.items():
        page = text_page(MARCH_20, day) if ".txt" in name.lower() else html_page(MARCH_20, day)
        project.write(name, gz(page) if name.endswith(".gz") else page)

    result = project.backfill()

    assert result.exit_code == 0, result.output
    assert line(result.stdout, "files read:") == "5"
    assert line(result.stdout, "observations:") == "25 new, 0 already stored, 0 revised"
    assert {r["date"] for r in export_rows(project)} == {iso for _, iso in days.values()}


def test_globs_and_single_files(project: Project) -> None:
    a = project.write("x/2025/a.txt", text_page(MARCH_20, "20 March 2025"))
    project.write("x/2026/b.txt", text_page(DEC_09, "09 December 2025"))
    project.write("x/2026/c.html", html_page(FOUR_PAIRS, "14 June 2023"))

    result = project.backfill(str(project.dumps / "x" / "**" / "*.txt"))

    assert result.exit_code == 0, result.output
    assert line(result.stdout, "files read:") == "2"
    result = project.backfill(a, str(project.dumps / "x" / "2026" / "*.html"))
    assert line(result.stdout, "files read:") == "1 (1 unchanged since the last run, skipped)"


def test_a_four_pair_page_gives_four_observations_and_no_tmt(project: Project) -> None:
    project.write("older.txt", text_page(FOUR_PAIRS, "14 June 2023"))

    result = project.backfill()

    assert line(result.stdout, "observations:") == "4 new, 0 already stored, 0 revised"
    pairs = [r["pair"] for r in export_rows(project)]
    assert pairs == ["KGS/USD", "KZT/USD", "TJS/USD", "UZS/USD"]
    assert project.rows("SELECT count(*) FROM observations WHERE pair = 'TMT/USD'") == [(0,)]


def test_signs_and_digits_are_kept_as_printed(project: Project) -> None:
    quotes = (("KGS", "0.01100", "0"), ("KZT", "0.00200", "-0"), ("UZS", "0.00008", "-0.5"))
    project.write("page.txt", text_page(quotes, "02 May 2024"))

    project.backfill()

    csv_text = project.export("csv")
    assert csv_text.splitlines() == [
        "source,pair,date,rate,change_pct",
        "timesca,KGS/USD,2024-05-02,0.01100,0",
        "timesca,KZT/USD,2024-05-02,0.00200,-0",
        "timesca,UZS/USD,2024-05-02,0.00008,-0.5",
    ]
    assert by_pair(project, "2024-05-02")["KZT/USD"] == ("0.00200", "-0")
    stored = project.rows(
        "SELECT CAST(rate AS VARCHAR), rate_text, CAST(change_pct AS VARCHAR), change_text"
        " FROM observations WHERE pair = 'KZT/USD'"
    )
    assert stored == [("0.0020000000", "0.00200", "0.0000", "-0")]


def test_an_inconsistent_page_is_listed_and_not_stored(project: Project) -> None:
    block = text_page(MARCH_20, "20 March 2025", copies=4)
    other = text_page(tuple(("KZT", "0.00198", "-0") if q[0] == "KZT" else q for q in MARCH_20))
    # four good copies, then four copies with KZT/USD printed otherwise
    page = block.split("20 March 2025")[0] + other
    path = project.write("disagree.txt", page)

    result = project.backfill()

    assert result.exit_code == 0
    assert line(result.stdout, "inconsistent pages:") == "1"
    listed = section(result.stdout, "inconsistent pages:")
    assert listed == [f"{path}: KZT/USD: copies disagree (0.00198 -0%, 0.00199 -0%)"]
    assert project.table_counts()["observations"] == 0


def test_file_names_with_odd_characters_are_kept_exactly(project: Project) -> None:
    path = project.write('we,ird "name"\nwith newline.txt', text_page())

    project.backfill()

    assert project.rows("SELECT origin FROM captures") == [(str(path),)]
    again = project.backfill()
    assert line(again.stdout, "files read:") == "0 (1 unchanged since the last run, skipped)"


def test_a_file_name_that_is_not_utf8_is_stored_escaped_and_skipped_next_time(
    project: Project,
) -> None:
    raw = os.fsencode(project.dumps) + b"/caf\xe9.txt"
    with open(raw, "wb") as fh:
        fh.write(text_page().encode())

    first = project.backfill()
    again = project.backfill()

    assert first.exit_code == 0, first.output
    assert project.rows("SELECT origin FROM captures") == [
        (str(project.dumps) + "/caf\\udce9.txt",)
    ]
    assert line(again.stdout, "files read:") == "0 (1 unchanged since the last run, skipped)"


# --- bad input ------------------------------------------------------------------------------


def _truncated_warc() -> bytes:
    """Two records (each its own gzip member), cut in the middle of the second."""
    first = WarcRecord(html_page(MARCH_20, "20 March 2025"))
    second = WarcRecord(html_page(DEC_09, "09 December 2025"))
    head = len(warc_bytes([first], compress=True))
    data = warc_bytes([first, second], compress=True)
    return data[: head + (len(data) - head) // 2]


def _corrupt_warc() -> bytes:
    good = warc_bytes([WarcRecord(html_page(MARCH_20, "20 March 2025"))], compress=False)
    return good + b"this is not a WARC record\r\n\r\nat all"


BAD_FILES = {
    "empty.txt": (lambda: b"", "empty file"),
    "blank.txt": (lambda: b"  \n\n\t\n", "empty file"),
    "binary.txt": (lambda: bytes(range(256)) * 40, "binary data"),
    "image.html": (lambda: b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(500), "binary data"),
    "truncated.txt.gz": (lambda: gz(text_page() * 20)[:300], "truncated gzip"),
    "corrupt.txt.gz": (
        lambda: b"\x1f\x8b\x08\x00" + bytes(6) + b"not deflate data" * 8,
        "corrupt gzip",
    ),
    "truncated.warc.gz": (_truncated_warc, "WARC"),
    "corrupt.warc": (_corrupt_warc, "corrupt WARC file"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_file_is_reported_and_everything_else_is_stored(project: Project, name: str) -> None:
    project.write("good/first.txt", text_page(DEC_09, "09 December 2025"))
    project.backfill()
    before = project.snapshot()
    data, reason = BAD_FILES[name]
    bad = project.write(name, data())
    project.write("good/second.txt", text_page(FOUR_PAIRS, "14 June 2023"))

    result = project.backfill()

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert line(result.stdout, "files that could not be read:") == "1"
    (listed,) = section(result.stdout, "files that could not be read:")
    # the file, or the record of a WARC file (path#2), and the reason
    assert listed.startswith((f"{bad}: ", f"{bad}#")) and reason in listed, listed
    after = project.snapshot()
    for table, rows in before.items():
        assert set(rows) <= set(after[table]), table  # nothing already stored changed
    assert "2023-06-14" in {r["date"] for r in export_rows(project)}
    if ".warc" in name:  # the record before the fault is kept
        assert "2025-03-20" in {r["date"] for r in export_rows(project)}
    # the bad file is not remembered as loaded: a fixed file is read next time
    again = project.backfill()
    assert line(again.stdout, "files read:") == "1 (2 unchanged since the last run, skipped)"


def test_a_huge_file_is_refused_without_reading_it_all(project: Project) -> None:
    huge = project.dumps / "huge.txt"
    with huge.open("wb") as fh:
        fh.write(text_page().encode())
        fh.truncate(21 * 1024 * 1024)  # sparse: fast to make
    project.write("good.txt", text_page(DEC_09, "09 December 2025"))

    result = project.backfill()

    assert result.exit_code == 1
    assert section(result.stdout, "files that could not be read:") == [
        f"{huge}: larger than 20 MB, not a page dump"
    ]
    assert line(result.stdout, "observations:") == "5 new, 0 already stored, 0 revised"


def test_an_unreadable_file_is_reported(project: Project) -> None:
    path = project.write("secret.txt", text_page())
    project.write("good.txt", text_page(DEC_09, "09 December 2025"))
    path.chmod(0)
    try:
        try:
            path.read_bytes()
        except PermissionError:
            pass
        else:
            pytest.skip("running as a user who can read a file with mode 000 (root)")
        result = project.backfill()
    finally:
        path.chmod(0o644)

    assert result.exit_code == 1
    assert section(result.stdout, "files that could not be read:") == [
        f"{path}: cannot be read: Permission denied"
    ]
    assert line(result.stdout, "observations:") == "5 new, 0 already stored, 0 revised"


def test_a_page_with_malformed_numbers_keeps_its_good_pairs(project: Project) -> None:
    quotes = tuple(("KZT", "0.0O199", "-0") if q[0] == "KZT" else q for q in MARCH_20)
    path = project.write("typo.txt", text_page(quotes, "20 March 2025"))

    result = project.backfill()

    assert result.exit_code == 0, result.output
    assert line(result.stdout, "pages read in part:") == "1"
    assert section(result.stdout, "pages read in part:") == [
        f"{path}: KZT/USD: malformed rate '0.0O199'",
        "(their other quotes were stored; the lines named could not be read)",
    ]
    assert sorted(by_pair(project, "2025-03-20")) == ["KGS/USD", "TJS/USD", "TMT/USD", "UZS/USD"]
    assert project.rows("SELECT outcome, quote_date FROM captures") == [
        ("partial", date(2025, 3, 20))
    ]


def test_an_unknown_currency_code_is_reported_and_not_stored(project: Project) -> None:
    path = project.write(
        "rub.txt", text_page((*MARCH_20, ("RUB", "0.01100", "0.2")), "20 March 2025")
    )

    result = project.backfill()

    assert result.exit_code == 0, result.output
    assert section(result.stdout, "pages with problems:") == [
        f"{path}: RUB/USD is not a configured pair of timesca; ignored"
    ]
    assert line(result.stdout, "observations:") == "5 new, 0 already stored, 0 revised"
    assert project.rows("SELECT count(*) FROM observations WHERE pair LIKE 'RUB%'") == [(0,)]
    assert project.rows("SELECT count(*) FROM captures WHERE detail LIKE '%RUB/USD%'") == [(1,)]


def test_only_the_configured_pairs_are_stored(tmp_path: Path) -> None:
    project = Project(tmp_path / "p", pairs=("KZT/USD", "UZS/USD"))
    project.write("page.txt", text_page())

    result = project.backfill()

    assert line(result.stdout, "observations:") == "2 new, 0 already stored, 0 revised"
    assert [r["pair"] for r in export_rows(project)] == ["KZT/USD", "UZS/USD"]


def test_missing_paths_and_empty_globs_are_listed(project: Project) -> None:
    project.write("good.txt", text_page())
    missing = project.root / "no-such-dir"
    pattern = str(project.root / "*.nothing")

    result = project.backfill(project.dumps, missing, pattern)

    assert result.exit_code == 1
    assert section(result.stdout, "files that could not be read:") == [
        f"{missing}: no such file or directory",
        f"{pattern}: no file matches this pattern",
    ]
    assert line(result.stdout, "observations:") == "5 new, 0 already stored, 0 revised"


def test_nothing_to_read_creates_no_database(project: Project) -> None:
    result = project.backfill(project.root / "nowhere")
    assert result.exit_code == 1
    assert not project.db.exists()


def test_an_unknown_source_is_a_clean_error(project: Project) -> None:
    project.write("page.txt", text_page())

    result = project.backfill(extra=["--source", "nope"])

    assert result.exit_code == 2
    message = one_error_line(result.stderr)
    assert message == f"error: {project.config}: no source named 'nope' (configured: timesca)"
    assert not project.db.exists()


def test_a_named_source_stores_under_its_name(tmp_path: Path) -> None:
    extra = '[[sources]]\nname = "timesca"\n\n[[sources]]\nname = "mirror"\nurl = "https://example.org/"\n'
    project = Project(tmp_path / "p", extra=extra)
    project.write("page.txt", text_page())

    first = project.backfill(extra=["--source", "mirror"])
    second = project.backfill()  # the default source: a new reading of the same file

    assert first.exit_code == second.exit_code == 0
    assert line(second.stdout, "files read:") == "1"
    rows = export_rows(project)
    assert {r["source"] for r in rows} == {"mirror", "timesca"}
    assert len(rows) == 10


def test_backfill_as_a_process_reports_bad_files_with_exit_code_1(project: Project) -> None:
    project.write("good.txt", text_page())
    bad = project.write("bad.txt.gz", b"\x1f\x8b\x08\x00garbage")

    proc = ticker_subprocess(project.config, "backfill", str(project.dumps))

    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"  {bad}: " in proc.stdout
    assert "observations:             5 new, 0 already stored, 0 revised" in proc.stdout


def test_unknown_source_as_a_process_is_one_line(project: Project) -> None:
    project.write("page.txt", text_page())

    proc = ticker_subprocess(project.config, "backfill", str(project.dumps), "--source", "zz")

    assert proc.returncode == 2
    assert "no source named 'zz'" in one_error_line(proc.stderr)


# --- worker processes and batches -----------------------------------------------------------


def _many_pages(project: Project, count: int) -> None:
    for i in range(count):
        day = date(2024, 1, 1 + i % 28)
        quotes = tuple((b, f"0.{i % 7 + 1:05d}", c) for b, _, c in MARCH_20)
        page = text_page(quotes, f"{day.day:02d} {day:%B %Y}", note=f"page {i}")
        if i % 5 == 0:
            project.write(
                f"d{i % 3}/p{i:03d}.html.gz", gz(html_page(quotes, f"{day:%d %B %Y}", str(i)))
            )
        elif i % 11 == 0:
            project.write(f"d{i % 3}/p{i:03d}.txt", text_page(quotes, day=None))
        else:
            project.write(f"d{i % 3}/p{i:03d}.txt", page)
    project.write("d1/broken.txt.gz", b"\x1f\x8b\x08\x00broken")


def _run(project: Project, **kwargs: object) -> backfill_job.BackfillSummary:
    config = load_config(project.config)
    now = datetime(2025, 6, 1, tzinfo=UTC)
    return backfill_job.backfill(config, [str(project.dumps)], now=now, **kwargs)  # type: ignore[arg-type]


def test_worker_processes_and_small_batches_give_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    single = Project(tmp_path / "single")
    _many_pages(single, 60)
    pooled = Project(tmp_path / "pooled")
    shutil.copytree(single.dumps, pooled.dumps, dirs_exist_ok=True)
    # same origins in both: compare relative to each dumps directory
    one = _run(single, workers=1)
    monkeypatch.setattr(backfill_job, "BATCH_PAGES", 7)
    many = _run(pooled, workers=2)

    def strip(summary: backfill_job.BackfillSummary, root: Path) -> dict[str, object]:
        rel = str(root)
        text = json.dumps(summary.__dict__, default=str).replace(rel, "<dumps>")
        loaded: dict[str, object] = json.loads(text)
        return loaded

    assert strip(one, single.dumps) == strip(many, pooled.dumps)
    assert one.files_read == 61 and len(one.unreadable) == 1 and one.new > 0
    assert single.export("csv") == pooled.export("csv")
    assert single.table_counts() == pooled.table_counts()


def test_progress_counts_every_file(project: Project) -> None:
    _many_pages(project, 12)
    seen: list[int] = []

    def progress(items: object, total: int) -> object:
        seen.append(total)
        count = 0
        for item in items:  # type: ignore[attr-defined]
            count += 1
            yield item
        seen.append(count)

    _run(project, progress=progress)

    assert seen == [13, 13]


# --- a property: order and repetition do not matter -----------------------------------------

PAGE = st.tuples(
    st.sampled_from(["18 March 2025", "20 March 2025", None]),
    st.sampled_from(["0.00199", "0.00200", "0.00201"]),
    st.sampled_from(["-0", "0", "0.12"]),
    st.booleans(),  # html or text
)


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(pages=st.lists(PAGE, min_size=1, max_size=6), order=st.randoms(use_true_random=False))
def test_any_pages_in_any_order_loaded_twice_give_the_same_export(
    pages: list[tuple[str | None, str, str, bool]], order: random.Random
) -> None:
    # Captures of one date differ only by capture time, so each page is a WARC record with
    # its own: the daily series then does not depend on the loading order.
    exports = []
    with tempfile.TemporaryDirectory() as tmp:
        for attempt in range(2):
            project = Project(Path(tmp) / f"run{attempt}")
            files = []
            for i, (day, kzt, change, as_html) in enumerate(pages):
                quotes = tuple((b, kzt if b == "KZT" else r, change) for b, r, _ in MARCH_20)
                body = html_page(quotes, day, str(i)) if as_html else text_page(quotes, day, str(i))
                at = datetime(2025, 3, 19, 8 + i, tzinfo=UTC)
                data = warc_bytes([WarcRecord(body, at)], compress=False)
                files.append(project.write(f"{i:02d}.warc", data))
            if attempt:
                order.shuffle(files)
            assert project.backfill(*files).exit_code == 0
            first = project.export("csv")
            assert project.backfill(*files).exit_code == 0
            assert project.export("csv") == first
            exports.append(first)
    assert exports[0] == exports[1]


def test_stage_directories_of_killed_backfills_are_removed(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = temp / f"{backfill_job.STAGE_PREFIX}{int(gone.stdout)}-abc"
    alive = temp / f"{backfill_job.STAGE_PREFIX}{os.getpid()}-def"
    other = temp / "ticker-something-else"
    for d in (dead, alive, other):
        d.mkdir()
        (d / "0000000000.pages.csv").write_text("x\n", encoding="utf-8")
    project.write("page.txt", text_page())

    result = project.backfill()

    assert result.exit_code == 0, result.output
    assert not dead.exists()
    assert alive.exists() and other.exists()
    assert sorted(p.name for p in temp.iterdir()) == sorted([alive.name, other.name])
