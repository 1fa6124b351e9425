"""`ticker check`: the pure checks, and the command over a real DuckDB file loaded by the
real backfill of generated dumps."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import pytest
from conftest import ticker_in_process, write_config
from hypothesis import given
from hypothesis import strategies as st
from pages import PAIRS, DayQuotes, Quote, printed_change, simulate, text_page

from ticker.check import (
    Day,
    Level,
    change_interval,
    change_miss,
    check,
    format_report,
    implied_change,
    rate_interval,
    run_check,
)
from ticker.config import load_config

START = date(2024, 1, 1)
F = Fraction


# --- what printed digits allow ----------------------------------------------------------


def test_rate_interval_is_half_a_printed_unit_each_side() -> None:
    assert rate_interval("0.00199") == (F("0.001985"), F("0.001995"))
    assert rate_interval("0.00008") == (F("0.000075"), F("0.000085"))
    assert rate_interval("1") == (F("0.5"), F("1.5"))


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("0.87", "0.865", "0.875"),
        ("-0.11", "-0.115", "-0.105"),
        ("0.8", "0.795", "0.805"),  # trailing zero dropped: 0.80
        ("1", "0.995", "1.005"),
        ("0", "0", "0.005"),
        ("-0", "-0.005", "0"),  # a fall too small to show: the sign is information
        ("0.125", "0.1245", "0.1255"),  # more digits than the site prints: their precision
    ],
)
def test_change_interval(text: str, low: str, high: str) -> None:
    assert change_interval(text) == (F(low), F(high))


def test_implied_change_is_wide_for_coarse_rates() -> None:
    lo, hi = implied_change("0.00008", "0.00007")  # UZS: one significant digit
    assert lo < -20 and hi == 0
    lo, hi = implied_change("0.28571", "0.28573")  # TMT: five
    assert 0 < lo < hi < F("0.011")


def test_change_miss() -> None:
    assert change_miss("0.00199", "0.00198", "-0.5") == 0
    assert change_miss("0.00008", "0.00007", "-0.1") == 0  # UZS allows a lot
    assert change_miss("0.01164", "0.01170", "-0") > 0.4  # "-0" is a fall, not a rise
    assert change_miss("0.01164", "0.01164", "-0") == 0
    # a rise of at least 0.0035 %: "-0" misses by a hair, a rounding quirk
    assert 0 < change_miss("0.28571", "0.28573", "-0") < F(1, 100)


@pytest.mark.parametrize(
    ("true", "text"),
    [(0.871, "0.87"), (-0.004, "-0"), (0.004, "0"), (0.8, "0.8"), (1.0, "1"), (-0.115, "-0.12")],
)
def test_generated_changes_print_like_the_site(true: float, text: str) -> None:
    assert printed_change(true) == text


# --- the checks on a snapshot --------------------------------------------------------------


def _days(series: list[DayQuotes], source: str = "timesca") -> list[Day]:
    return [Day(source, q.pair, d.date, q.rate, q.change) for d in series for q in d.quotes]


def _report(days: list[Day], now: datetime | None = None, pairs: tuple[str, ...] = PAIRS):
    from ticker.check import Snapshot
    from ticker.config import Source

    last = max((d.date for d in days), default=START)
    now = now or datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC)
    return check(Snapshot(days=tuple(days)), (Source(pairs=pairs),), 2 * 86400, now)


def test_consistent_generated_series_has_no_findings() -> None:
    report = _report(_days(simulate(START, 400)))
    assert report.findings == ()
    assert report.exit_code == 0
    assert report.checked["changes_checked"] > 1900


def test_a_printed_change_the_rates_cannot_explain_is_an_error_worst_first() -> None:
    days = _days(simulate(START, 60))
    bad = {
        (date(2024, 1, 20), "KGS/USD"): "2.5",
        (date(2024, 1, 30), "TJS/USD"): "-7",
    }
    days = [replace(d, change=bad.get((d.date, d.pair), d.change)) for d in days]
    report = _report(days)
    errors = [f for f in report.findings if f.level is Level.ERROR]
    assert [(f.kind, f.pair, f.date) for f in errors] == [
        ("change_mismatch", "TJS/USD", date(2024, 1, 30)),  # off by ~7 points: first
        ("change_mismatch", "KGS/USD", date(2024, 1, 20)),
    ]
    assert "printed change -7%" in errors[0].message
    assert report.exit_code == 1


def test_repeated_days_and_days_after_a_gap_are_not_compared() -> None:
    series = simulate(START, 30)
    weekend = [
        series[10],
        DayQuotes(series[10].date + timedelta(days=1), series[10].quotes),
        DayQuotes(series[10].date + timedelta(days=2), series[10].quotes),
    ]
    # the day after the "weekend" compares with the repeated values: still consistent
    monday = DayQuotes(series[10].date + timedelta(days=3), series[11].quotes)
    after_gap = DayQuotes(series[10].date + timedelta(days=9), series[20].quotes)
    report = _report(_days([*weekend, monday, after_gap]))
    assert [f.kind for f in report.findings] == ["gap"]
    assert report.checked["changes_repeated_day"] == 10
    assert report.checked["changes_without_previous_day"] == 5


def test_jump_far_outside_usual_moves() -> None:
    days = _days(simulate(START, 200))
    target = date(2024, 5, 1)

    def bump(d: Day) -> Day:
        if d.pair == "KZT/USD" and d.date == target:
            return replace(d, rate=f"{float(d.rate) * 1.25:.5f}")
        return d

    report = _report([bump(d) for d in days])
    jumps = [f for f in report.findings if f.kind == "jump"]
    # up 25 % on the day, down again the next: two moves, both far outside
    assert {(f.pair, f.date) for f in jumps} == {
        ("KZT/USD", target),
        ("KZT/USD", target + timedelta(days=1)),
    }
    assert all(f.level is Level.WARNING for f in jumps)
    assert "does not: likely a bad value" in jumps[0].message
    # the printed changes of both days contradict the rates: errors too
    errors = {(f.pair, f.date) for f in report.findings if f.level is Level.ERROR}
    assert errors == {("KZT/USD", target), ("KZT/USD", target + timedelta(days=1))}


def test_coarse_uzs_steps_are_not_jumps_but_a_real_one_is() -> None:
    series = simulate(START, 300, pairs=("UZS/USD",))
    rates = {d.quotes[0].rate for d in series}
    assert len(rates) >= 2  # the printed rate flips between neighbouring units
    assert _report(_days(series), pairs=("UZS/USD",)).findings == ()
    days = _days(series)
    days[150] = replace(days[150], rate="0.00004", change="-50")
    jumps = [f for f in _report(days, pairs=("UZS/USD",)).findings if f.kind == "jump"]
    assert [f.date for f in jumps][:1] == [days[150].date]
    assert "agrees" in jumps[0].message


def test_a_devaluation_with_its_printed_change_is_a_jump_not_an_error() -> None:
    series = simulate(START, 100, pairs=("KZT/USD",))
    days = _days(series)
    prev = float(days[70].rate)
    for i in range(71, 100):
        days[i] = replace(days[i], rate=f"{float(days[i].rate) * 0.75:.5f}")
    days[71] = replace(days[71], change=printed_change((float(days[71].rate) / prev - 1) * 100))
    report = _report(days, pairs=("KZT/USD",))
    assert [(f.kind, f.level) for f in report.findings] == [("jump", Level.WARNING)]
    assert report.exit_code == 0


def test_gaps_pairs_appearing_disappearing_and_missing() -> None:
    series = simulate(START, 120)
    days = _days(series)
    source_gap = {START + timedelta(days=k) for k in range(50, 55)}
    days = [d for d in days if d.date not in source_gap]
    days = [d for d in days if not (d.pair == "KGS/USD" and d.date == START + timedelta(60))]
    days = [d for d in days if not (d.pair == "TMT/USD" and d.date < START + timedelta(30))]
    days = [d for d in days if not (d.pair == "TJS/USD" and d.date > START + timedelta(100))]
    report = _report(days, pairs=(*PAIRS, "AZN/USD"))
    found = {(f.kind, f.level.value, f.pair, f.date) for f in report.findings}
    assert found == {
        ("gap", "warning", None, START + timedelta(50)),
        ("gap", "warning", "KGS/USD", START + timedelta(60)),
        ("pair_appeared", "info", "TMT/USD", START + timedelta(30)),
        ("pair_disappeared", "warning", "TJS/USD", START + timedelta(100)),
        ("pair_missing", "warning", "AZN/USD", None),
    }
    gap = next(f for f in report.findings if f.kind == "gap" and f.pair is None)
    assert "2024-02-20 to 2024-02-24 (5 days)" in gap.message
    # the source-wide gap is not repeated for every pair
    assert sum(f.kind == "gap" for f in report.findings) == 2


def test_stale_source_relative_to_now_and_the_sources_time_zone() -> None:
    days = _days(simulate(START, 10))
    last = START + timedelta(days=9)  # 2024-01-10
    # Asia/Almaty was UTC+6 until 2024-03-01: 2024-01-10 starts at 2024-01-09 18:00 UTC,
    # and is two days old at 2024-01-11 18:00 UTC (as `ticker status` counts)
    fresh = datetime(2024, 1, 11, 17, 59, tzinfo=UTC)
    stale = datetime(2024, 1, 11, 18, 1, tzinfo=UTC)
    assert not [f for f in _report(days, now=fresh).findings if f.kind == "stale_source"]
    found = [f for f in _report(days, now=stale).findings if f.kind == "stale_source"]
    assert [(f.date, f.level) for f in found] == [(last, Level.WARNING)]
    assert "[status] stale_after" in found[0].message


def test_empty_store_reports_no_data_and_exits_0() -> None:
    report = _report([])
    assert [f.kind for f in report.findings] == ["no_data"]
    assert report.exit_code == 0
    assert "ticker backfill" in report.findings[0].message


def test_format_report_limits_and_says_how_to_see_more() -> None:
    days = _days(simulate(START, 60))
    days = [replace(d, change=str(9 + i)) if d.pair == "KGS/USD" else d for i, d in enumerate(days)]
    lines = format_report(_report(days), limit=3)
    assert lines[1].startswith("59 errors")
    at = lines.index(next(line for line in lines if line.startswith("error: change_mismatch")))
    assert len([line for line in lines[at + 1 : at + 5] if line.startswith("  timesca")]) == 3
    assert "and 56 more" in lines[at + 4]


# --- the command over a real store loaded by the real backfill -----------------------------


def _load(tmp_path: Path, pages: dict[str, str], **config: object) -> Path:
    cfg = write_config(tmp_path, **config)  # type: ignore[arg-type]
    dumps = tmp_path / "dumps"
    for name, text in pages.items():
        (dumps / name).parent.mkdir(parents=True, exist_ok=True)
        (dumps / name).write_text(text, encoding="utf-8")
    result = ticker_in_process(cfg, "backfill", str(dumps))
    assert result.exit_code == 0, result.output
    return cfg


def _pages(series: list[DayQuotes]) -> dict[str, str]:
    return {f"d/{i:04d}.txt": text_page(d.quotes, d.date) for i, d in enumerate(series)}


def _check(cfg: Path, *args: str) -> tuple[int, str]:
    result = ticker_in_process(cfg, "check", *args)
    return result.exit_code, result.stdout


def test_check_command_clean_store(tmp_path: Path) -> None:
    cfg = _load(tmp_path, _pages(simulate(START, 90)))
    code, out = _check(cfg)
    assert code == 0, out
    assert out.startswith("checked 450 daily values of 5 pairs from 1 source; 4")  # 90 days
    assert "printed changes compared with the rates (0 without the day before" in out
    assert "0 errors" in out.splitlines()[1]


def test_check_command_finds_each_kind_in_a_real_store(tmp_path: Path) -> None:
    series = simulate(START, 90)
    pages = _pages(series)
    # a bad printed change
    wrong = series[30]
    bad = tuple(replace(q, change="3") if q.pair == "TJS/USD" else q for q in wrong.quotes)
    pages["d/0030.txt"] = text_page(bad, wrong.date)
    day = series[40]
    # a revision: the same date captured again later with another KZT rate
    other = tuple(replace(q, rate="0.00250") if q.pair == "KZT/USD" else q for q in day.quotes)
    pages["e/0040-again.txt"] = text_page(other, day.date)
    # an inconsistent page: its copies disagree
    mixed = text_page(series[41].quotes, series[41].date).replace(
        series[41].quotes[0].line(), Quote("KGS/USD", "0.01000", "0").line(), 1
    )
    pages["e/0041-mixed.txt"] = mixed
    # a gap: two days not loaded
    del pages["d/0060.txt"], pages["d/0061.txt"]
    cfg = _load(tmp_path, pages)

    code, out = _check(cfg, "--json")
    assert code == 1
    report = json.loads(out)
    kinds = {(f["kind"], f["level"], f["pair"], f["date"]) for f in report["findings"]}
    assert ("change_mismatch", "error", "TJS/USD", str(wrong.date)) in kinds
    assert ("revision", "warning", "KZT/USD", str(day.date)) in kinds
    assert ("inconsistent_page", "warning", None, str(series[41].date)) in kinds
    assert ("gap", "warning", None, str(series[60].date)) in kinds
    assert ("stale_source", "warning", None, str(series[-1].date)) in kinds
    assert report["levels"]["error"] >= 1
    revision = next(f for f in report["findings"] if f["kind"] == "revision")
    assert [v["rate"] for v in revision["versions"]] == [
        day.by_pair()["KZT/USD"].rate,
        "0.00250",
    ]
    assert revision["versions"][1]["origin"].endswith("0040-again.txt")
    # errors come first
    assert report["findings"][0]["level"] == "error"

    code, text = _check(cfg)
    assert code == 1
    assert "error: change_mismatch" in text
    assert text.index("error:") < text.index("warning:")


def test_run_check_reads_the_store_read_only(tmp_path: Path) -> None:
    cfg = _load(tmp_path, _pages(simulate(START, 30)))
    config = load_config(cfg)
    before = config.store_path.stat().st_mtime_ns
    report = run_check(config, datetime(2024, 2, 1, tzinfo=UTC))
    assert report.checked["days"] == 150
    assert config.store_path.stat().st_mtime_ns == before


def test_check_help_has_an_example() -> None:
    result = ticker_in_process(None, "check", "--help")
    assert result.exit_code == 0
    assert "Example" in result.output and "ticker check --json" in result.output


rates_text = st.from_regex(r"0\.[0-9]{5}", fullmatch=True).filter(lambda t: float(t) > 0)
changes_text = st.from_regex(r"-?[0-9]{1,2}(\.[0-9]{1,2})?", fullmatch=True)


@given(rates_text, rates_text, changes_text)
def test_the_float_shortcut_agrees_with_exact_fractions(prev: str, rate: str, change: str) -> None:
    from ticker.check import _clearly_fits

    lo, hi = implied_change(prev, rate)
    clo, chi = change_interval(change)
    exact = max(lo - chi, clo - hi, Fraction(0))
    if _clearly_fits(prev, rate, change):
        assert exact == 0
    assert change_miss(prev, rate, change) == exact


# --- dates after today, and what stored pages may hold ---------------------------------------


def test_dates_after_today_are_an_error_and_not_a_fresh_source() -> None:
    days = _days(simulate(START, 10))  # 2024-01-01 to 2024-01-10
    # 02:00 on 2024-01-06 in Almaty (UTC+6 then): tomorrow, the 7th, may be the site's
    # "today" already; the 8th, 9th and 10th cannot
    now = datetime(2024, 1, 5, 20, 0, tzinfo=UTC)
    report = _report(days, now=now)
    found = [f for f in report.findings if f.kind == "future_date"]
    assert [(f.date, f.level, f.pair) for f in found] == [
        (START + timedelta(days=k), Level.ERROR, None) for k in (9, 8, 7)
    ]
    assert found[0].data["pairs"] == sorted(PAIRS) and found[0].data["today"] == "2024-01-06"
    assert "after today (2024-01-06, Asia/Almaty)" in found[0].message
    assert report.exit_code == 1
    assert not [f for f in report.findings if f.kind == "stale_source"]
    # errors first, and the kind is explained
    lines = format_report(report)
    assert lines[3].startswith("error: future_date (3): dates after today")


def test_future_dates_in_a_real_store_name_their_page(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    typo = simulate(date(2031, 5, 1), 1)[0]
    (dumps / "typo.txt").write_text(text_page(typo.quotes, typo.date), encoding="utf-8")
    config = load_config(cfg)
    # loaded when 2031 had come (or by a version that took any date)
    from ticker.backfill import backfill

    assert backfill(config, [str(dumps)], now=datetime(2031, 5, 2, tzinfo=UTC)).new == 5

    report = run_check(config, datetime(2025, 3, 20, tzinfo=UTC))

    [found] = [f for f in report.findings if f.kind == "future_date"]
    assert found.date == date(2031, 5, 1) and found.data["origins"] == [str(dumps / "typo.txt")]
    assert found.message.endswith(f"from {dumps / 'typo.txt'}")
    assert report.exit_code == 1


def test_a_huge_stored_detail_is_shortened() -> None:
    from ticker.check import BadPage, Snapshot

    detail = "KGS/USD: copies disagree (" + ", ".join(f"0.0{i} 1%" for i in range(30_000)) + ")"
    lines = "\n".join(f"unreadable ticker line 'x{i}/USD = 1 1%'; ignored" for i in range(5000))
    bad = BadPage("timesca", "/dumps/flood.txt", None, date(2025, 3, 20), f"{detail}\n{lines}")
    report = check(Snapshot(bad_pages=(bad,)), (), 2 * 86400, datetime(2025, 3, 21, tzinfo=UTC))
    [found] = report.findings
    assert found.kind == "inconsistent_page" and len(found.message) <= 350
    assert found.message.startswith("/dumps/flood.txt (2025-03-20): KGS/USD: copies disagree (")
    assert len(found.data["detail"]) <= 21 * 300
    assert max(len(line) for line in format_report(report)) <= 350
