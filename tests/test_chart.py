"""Tests of the chart stage: real PNGs under tmp_path, drawn data read back from the artists."""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ticker.charts import draw_charts
from ticker.charts.data import (
    DPI,
    FIGSIZE,
    chart_data,
    is_coarse,
    overview_data,
    pair_filename,
    skip_reason,
)
from ticker.charts.draw import build_overview_figure, build_pair_figure
from ticker.charts.files import ChartReport, read_fingerprint, save_png, write_charts
from ticker.charts.labels import FALL_COLOUR, RISE_COLOUR
from ticker.models import Day, Observation, Record, Series

if TYPE_CHECKING:
    from matplotlib.figure import Figure

START = date(2025, 1, 1)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def point(day: date, per_usd: float, change: str = "0", pair: str = "KZT/USD") -> Day:
    """A day printed like the site: USD per unit with 5 decimals, change as printed."""
    return Day("timesca", pair, day, f"{1 / per_usd:.5f}", change)


def series(
    pair: str, per_usd: Iterable[float], *, skip: Iterable[int] = (), start: date = START
) -> Series:
    """A daily series from `per_usd` values, leaving out the day offsets in `skip`."""
    left_out = set(skip)
    points = []
    for i, value in enumerate(per_usd):
        if i not in left_out:
            change = "-0.12" if i % 3 == 1 else ("0.25" if i % 3 == 2 else "0")
            points.append(point(start + timedelta(days=i), value, change))
    return Series("timesca", pair, tuple(points))


def five_pairs(days: int = 20) -> list[Series]:
    return [
        series("KGS/USD", [87 + 0.1 * i for i in range(days)]),
        series("KZT/USD", [500 + (i % 5) for i in range(days)], skip=[7, 8]),
        series("TJS/USD", [10.9 + 0.01 * i for i in range(days)]),
        series("UZS/USD", [12500 if i < days // 2 else 14286 for i in range(days)]),
        series("TMT/USD", [3.5] * days),
    ]


def ihdr_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    width, height = struct.unpack(">II", data[16:24])
    assert data.endswith(b"IEND\xaeB`\x82")
    return width, height


def artist(fig: Figure, gid: str) -> Any:
    """The one artist of `fig` with this gid."""
    found = [a for a in fig.findobj() if a.get_gid() == gid]
    assert len(found) == 1, f"{gid}: {found}"
    return found[0]


def temp_files(out: Path) -> list[Path]:
    return [p for p in out.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


# ---------------------------------------------------------------- files


def test_writes_one_valid_png_per_pair_and_an_overview(tmp_path: Path) -> None:
    report = write_charts(five_pairs(), tmp_path, since=START, until=START + timedelta(days=19))
    names = sorted(p.name for p in report.written)
    assert names == sorted(
        ["KGS-USD.png", "KZT-USD.png", "TJS-USD.png", "UZS-USD.png", "TMT-USD.png", "overview.png"]
    )
    assert report.unchanged == () and report.skipped == ()
    for path in report.written:
        assert path.parent == tmp_path
        assert ihdr_size(path) == (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))
        assert read_fingerprint(path) is not None
    assert temp_files(tmp_path) == []


def test_an_existing_file_is_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "KZT-USD.png"
    target.write_bytes(b"half a file")
    before = target.stat().st_ino
    report = write_charts([series("KZT/USD", [500, 501, 502])], tmp_path)
    assert target in report.written
    assert target.stat().st_ino != before  # renamed over, not written in place
    assert ihdr_size(target)
    assert temp_files(tmp_path) == []


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    import numpy as np

    target = tmp_path / "KZT-USD.png"
    with pytest.raises((TypeError, ValueError)):
        save_png(np.zeros((2, 2, 7), dtype=np.uint8), target, {})  # not an RGB image
    assert list(tmp_path.iterdir()) == []


def test_unchanged_charts_are_not_rewritten(tmp_path: Path) -> None:
    data = five_pairs()
    first = write_charts(data, tmp_path)
    stats = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in first.written}

    second = write_charts(data, tmp_path)
    assert second.written == ()
    assert sorted(p.name for p in second.unchanged) == sorted(stats)
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in second.unchanged} == stats

    # one KZT day printed differently: its chart and the overview are redrawn, no other
    kzt = data[1]
    changed = Series(kzt.source, kzt.pair, (*kzt.days[:-1], point(kzt.days[-1].date, 480)))
    third = write_charts([*data[:1], changed, *data[2:]], tmp_path)
    assert sorted(p.name for p in third.written) == ["KZT-USD.png", "overview.png"]
    assert (tmp_path / "KZT-USD.png").stat().st_ino != stats["KZT-USD.png"][0]
    assert (tmp_path / "KGS-USD.png").stat().st_ino == stats["KGS-USD.png"][0]


def test_other_options_redraw(tmp_path: Path) -> None:
    data = [series("KZT/USD", [500, 501, 502])]
    write_charts(data, tmp_path)
    assert len(write_charts(data, tmp_path, display="usd_per_unit").written) == 2
    assert len(write_charts(data, tmp_path, display="usd_per_unit", source_label="x").written) == 2
    since = START - timedelta(days=5)  # the title's date range is drawn too
    window = write_charts(data, tmp_path, display="usd_per_unit", source_label="x", since=since)
    assert len(window.written) == 2


def test_a_broken_file_is_redrawn(tmp_path: Path) -> None:
    data = [series("KZT/USD", [500, 501, 502])]
    write_charts(data, tmp_path)
    target = tmp_path / "KZT-USD.png"
    fingerprint = read_fingerprint(target)
    target.write_bytes(target.read_bytes()[:-20])  # truncated: no IEND
    assert read_fingerprint(target) is None
    assert target in write_charts(data, tmp_path).written
    assert read_fingerprint(target) == fingerprint


def test_a_chart_does_not_depend_on_the_one_drawn_before(tmp_path: Path) -> None:
    """render_charts refills one Figure for every pair: nothing may leak between pairs."""
    kzt = series("KZT/USD", [500 + (i % 4) for i in range(15)], skip=[4])
    uzs = series("UZS/USD", [12500, 12500, 14286, 14286, 12500] * 3)
    write_charts([uzs, kzt], tmp_path / "after", since=START)
    write_charts([kzt], tmp_path / "alone", since=START)
    after = (tmp_path / "after" / "KZT-USD.png").read_bytes()
    assert after == (tmp_path / "alone" / "KZT-USD.png").read_bytes()


# ---------------------------------------------------------------- skipped


def test_no_data_and_one_point_are_skipped_with_a_reason(tmp_path: Path) -> None:
    data = [
        Series("timesca", "KZT/USD", ()),
        series("KGS/USD", [87.0]),
        series("TJS/USD", [10.9, 10.95, 11.0]),
    ]
    report = write_charts(data, tmp_path, since=date(2025, 1, 1), until=date(2025, 3, 1))
    assert report.skipped == (
        ("KZT/USD", "KZT/USD: no data between 2025-01-01 and 2025-03-01"),
        (
            "KGS/USD",
            "KGS/USD: only one day of data (2025-01-01) between 2025-01-01 and 2025-03-01; "
            "a chart needs two or more",
        ),
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["TJS-USD.png", "overview.png"]


def test_nothing_to_draw_skips_the_overview_too(tmp_path: Path) -> None:
    report = write_charts([Series("timesca", "KZT/USD", ())], tmp_path)
    assert report == ChartReport(
        written=(),
        unchanged=(),
        skipped=(
            ("KZT/USD", "KZT/USD: no data in the store"),
            ("overview", "overview: no pair has two or more days in the store"),
        ),
    )
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="no data"):
        chart_data(Series("timesca", "KZT/USD", ()))
    assert skip_reason(series("KZT/USD", [500, 501])) is None


def test_bad_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="display"):
        write_charts([], tmp_path, display="usd")
    with pytest.raises(ValueError, match="after"):
        write_charts([], tmp_path, since=date(2025, 2, 1), until=date(2025, 1, 1))


# ---------------------------------------------------------------- what is drawn


def test_per_usd_draws_one_over_the_printed_rate() -> None:
    data = series("KZT/USD", [500, 502.5, 497])
    fig = build_pair_figure(chart_data(data))
    line = artist(fig, "rate")
    expected = [1 / float(p.rate) for p in data.days]  # 1/0.00200, 1/0.00199, 1/0.00201
    assert list(line.get_ydata()) == pytest.approx(expected)
    assert line.get_drawstyle() == "default"

    fig = build_pair_figure(chart_data(data, "usd_per_unit"))
    ydata = artist(fig, "rate").get_ydata()
    assert list(ydata) == pytest.approx([0.002, 0.00199, 0.00201])


def test_a_missing_day_breaks_the_line() -> None:
    data = series("KZT/USD", [500, 501, 502, 503, 504, 505], skip=[3, 4])  # 4 and 5 Jan missing
    chart = chart_data(data)
    fig = build_pair_figure(chart)
    line = artist(fig, "rate")
    ydata = list(line.get_ydata())
    assert [math.isnan(y) for y in ydata] == [False, False, False, True, False]
    assert chart.dates[3] == date(2025, 1, 4)  # the day after the last one before the gap
    import matplotlib.dates as mdates

    xdata = line.get_xdata()
    assert mdates.num2date(xdata[3]).date() == date(2025, 1, 4)
    assert mdates.num2date(xdata[4]).date() == date(2025, 1, 6)


def test_a_lone_day_between_gaps_gets_a_dot() -> None:
    data = series("KZT/USD", [500, 501, 502, 503, 504, 505, 506], skip=[1, 3])  # 1 and 3 alone
    fig = build_pair_figure(chart_data(data))
    dots = artist(fig, "isolated").get_ydata()
    assert list(dots) == pytest.approx([1 / 0.00200, 1 / 0.00199])


def test_rises_and_falls_are_bars_in_two_colours() -> None:
    day = [START + timedelta(days=i) for i in range(4)]
    data = Series(
        "timesca",
        "KZT/USD",
        (
            Day("timesca", "KZT/USD", day[0], "0.00200", "0.5"),
            Day("timesca", "KZT/USD", day[1], "0.00199", "-0.5"),
            Day("timesca", "KZT/USD", day[2], "0.00199", "-0"),
            Day("timesca", "KZT/USD", day[3], "0.00199", "0"),
        ),
    )
    fig = build_pair_figure(chart_data(data))
    import matplotlib.dates as mdates
    from matplotlib.colors import same_color

    def bars(gid: str) -> list[tuple[date, float]]:
        line = artist(fig, gid)
        xs, ys = line.get_xdata(), line.get_ydata()
        return [
            (mdates.num2date(x).date(), y)
            for x, y in zip(xs[1::3], ys[1::3], strict=True)  # (day, 0), (day, h), NaN
        ]

    assert same_color(artist(fig, "rises").get_color(), RISE_COLOUR)
    assert same_color(artist(fig, "falls").get_color(), FALL_COLOUR)
    assert bars("rises") == [(day[0], 0.5), (day[3], 0.0)]
    assert bars("falls") == [(day[1], -0.5), (day[2], 0.0)]  # "-0" is a fall too small to show


def test_coarse_rates_are_steps_with_a_note() -> None:
    assert is_coarse("0.00008") and is_coarse("0.00010")
    assert not is_coarse("0.00199") and not is_coarse("0.01164") and not is_coarse("0.28573")
    uzs = series("UZS/USD", [12500, 12500, 14286, 12500])
    assert [p.rate for p in uzs.days] == ["0.00008", "0.00008", "0.00007", "0.00008"]
    fig = build_pair_figure(chart_data(uzs))
    assert artist(fig, "rate").get_drawstyle() == "steps-post"
    texts = " ".join(t.get_text() for t in fig.texts)
    assert "the source prints 5 decimals" in texts and "coarse" in texts.lower()

    kzt = build_pair_figure(chart_data(series("KZT/USD", [500, 501])))
    visible = " ".join(t.get_text() for t in kzt.texts if t.get_visible())
    assert "Coarse" not in visible


def test_titles_name_the_pair_the_currency_the_window_and_the_source() -> None:
    data = series("KZT/USD", [500, 502.5, 497])
    label = "An invented bulletin (bulletin.example) rates box"
    chart = chart_data(data, since=date(2024, 12, 25), until=date(2025, 1, 3), source_label=label)
    fig = build_pair_figure(chart)
    texts = " | ".join(t.get_text() for t in fig.texts)
    assert "KZT/USD" in texts and "Kazakh tenge" in texts
    assert "25 Dec 2024 to 3 Jan 2025" in texts
    assert f"Source: {label}, printed as US dollars per tenge (5 decimals)" in texts
    axes = fig.get_axes()
    assert axes[0].get_ylabel() == "tenge per US dollar"
    label = artist(fig, "last-label").get_text()
    assert "497.5 tenge per US dollar on 3 Jan 2025" in label and "0.00201" in label


def test_the_overview_rebases_every_pair_to_100() -> None:
    data = five_pairs(days=10)
    chart = overview_data(data)
    assert chart is not None
    fig = build_overview_figure(chart)
    for s in data:
        ydata = [y for y in artist(fig, f"index-{s.pair}").get_ydata() if not math.isnan(y)]
        first = 1 / float(s.days[0].rate)
        expected = [1 / float(p.rate) / first * 100 for p in s.days]
        assert ydata[0] == pytest.approx(100)
        assert ydata[: len(expected)] == pytest.approx(expected)
    labels = [artist(fig, f"end-{s.pair}").get_text() for s in data]  # the last index value
    assert labels == ["KGS 101.0", "KZT 101.0", "TJS 100.8", "UZS 114.3", "TMT 100.0"]


def test_pair_file_names() -> None:
    assert pair_filename("KZT/USD") == "KZT-USD.png"
    assert pair_filename("../x") == "x.png"


def test_importing_the_stage_does_not_import_matplotlib() -> None:
    code = "import sys, ticker.charts.data, ticker.charts.files; print('matplotlib' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "MPLBACKEND": ""},
    )
    assert out.stdout.strip() == "False"


def test_the_window_starts_at_the_first_stored_day_when_the_store_is_younger(
    tmp_path: Path,
) -> None:
    """A store holding less than window_days is drawn from its first day, so the overview
    rebases every pair on that day instead of noting that each one "starts later"."""
    import dataclasses
    from datetime import UTC, datetime

    from ticker.config import ChartsConfig, Config
    from ticker.store import Store
    from ticker.store.write import write_records

    config = dataclasses.replace(
        Config(),
        store_path=tmp_path / "t.duckdb",
        charts=ChartsConfig(dir=tmp_path / "charts", window_days=365),
    )
    days = [date(2025, 3, 20), date(2025, 4, 20)]
    pages = [
        Record(
            f"k{d}",
            "timesca",
            f"p/{d}",
            None,
            None,
            f"h{d}",
            "ok",
            d,
            d,
            "header",
            2,
            8,
            None,
            (Observation("KZT/USD", d, f"0.0019{i}", "-0"),),
        )
        for i, d in enumerate(days)
    ]
    with Store.open(config.store_path) as store:
        write_records(store, pages, datetime(2025, 5, 1, tzinfo=UTC))
    run = draw_charts(config, now=datetime(2025, 5, 1, tzinfo=UTC), pairs=["KZT/USD"])
    assert (run.since, run.until) == (days[0], days[1])
    assert run.report is not None and (tmp_path / "charts" / "KZT-USD.png") in run.report.written
    # an explicit --since still wins
    run = draw_charts(
        config, now=datetime(2025, 5, 1, tzinfo=UTC), pairs=["KZT/USD"], since=date(2025, 1, 1)
    )
    assert run.since == date(2025, 1, 1)


# ---------------------------------------------------------------- the calendar's edges


def _store_days(db: Path, days: Iterable[date]) -> None:
    """Store KZT (fine) and UZS (coarse, drawn as steps) quotes for each day."""
    from ticker.store import Store
    from ticker.store.write import write_records

    pages = [
        Record(
            f"k{d}",
            "timesca",
            f"p/{d}",
            None,
            None,
            f"h{d}",
            "ok",
            d,
            d,
            "header",
            2,
            8,
            None,
            (
                Observation("KZT/USD", d, f"0.0019{i % 10}", "-0"),
                Observation("UZS/USD", d, "0.00008", "0.1"),
            ),
        )
        for i, d in enumerate(days)
    ]
    with Store.open(db) as store:
        write_records(store, pages, datetime(2025, 5, 1, tzinfo=UTC))


NOW_DAYS = (date(2025, 3, 20), date(2025, 3, 21), date(2025, 3, 23))
YEAR_1 = (date(1, 1, 1), date(1, 1, 2), date(1, 1, 4))
YEAR_9999 = (date(9999, 12, 28), date(9999, 12, 29), date(9999, 12, 31))


@pytest.mark.parametrize(
    ("days", "args", "outcome"),
    [
        (NOW_DAYS, ["--since", "9999-12-30"], "after it ends on 2025-03-23"),
        (NOW_DAYS, ["--until", "0001-01-01"], "after it ends on 0001-01-01 (--until)"),
        (NOW_DAYS, ["--since", "0001-01-01", "--until", "0001-01-02"], "no data between"),
        (YEAR_1, [], "drawn"),  # the window_days before 4 Jan of year 1 start on 1 Jan
        (YEAR_1, ["--all"], "drawn"),
        (YEAR_1, ["--since", "0001-01-01", "--until", "0001-01-02"], "drawn"),
        (YEAR_9999, ["--until", "9999-12-31"], "drawn"),
        (YEAR_9999, ["--all"], "after it ends on"),  # stored days after today
        (YEAR_1 + YEAR_9999, ["--all", "--until", "9999-12-31"], "drawn"),
    ],
)
def test_windows_at_the_edges_of_the_calendar_draw_or_say_why(
    tmp_path: Path, days: tuple[date, ...], args: list[str], outcome: str
) -> None:
    """matplotlib's dates run from year 1 to 9999; a window at either edge is drawn, and
    one that holds no stored day is one usage error, never a traceback."""
    from conftest import Project, one_error_line

    project = Project(tmp_path / "p", charts="charts")
    _store_days(project.db, days)
    result = project.run("chart", "--pair", "KZT", "--pair", "UZS", *args)
    if outcome == "drawn":
        assert result.exit_code == 0, result.output
        for name in ("KZT-USD.png", "UZS-USD.png", "overview.png"):
            assert read_fingerprint(project.root / "charts" / name) is not None
    else:
        assert result.exit_code == 2, result.output
        line = one_error_line(result.stderr)
        assert "nothing to draw" in line and outcome in line
        assert f"data is stored from {days[0]} to {days[-1]}" in line


def test_a_window_reaching_before_year_1_starts_there(tmp_path: Path) -> None:
    import dataclasses
    from datetime import UTC, datetime

    from ticker.config import ChartsConfig, Config

    config = dataclasses.replace(
        Config(),
        store_path=tmp_path / "t.duckdb",
        charts=ChartsConfig(dir=tmp_path / "charts", window_days=10**9),
    )
    _store_days(config.store_path, YEAR_1 + NOW_DAYS)
    now = datetime(2025, 5, 1, tzinfo=UTC)
    run = draw_charts(config, now=now, pairs=["KZT/USD"])
    assert (run.since, run.until) == (date(1, 1, 1), date(2025, 3, 23))
    assert run.report is not None and len(run.report.written) == 2


def test_the_window_ends_on_today_in_the_source_time_zone(tmp_path: Path) -> None:
    """At 20:00 UTC it is already the next day in Almaty (+05:00): that day's quotes,
    once stored, are in the window."""
    import dataclasses

    from ticker.config import ChartsConfig, Config

    config = dataclasses.replace(
        Config(), store_path=tmp_path / "t.duckdb", charts=ChartsConfig(dir=tmp_path / "c")
    )
    _store_days(config.store_path, (date(2025, 3, 20), date(2025, 3, 21)))
    evening = datetime(2025, 3, 20, 20, 0, tzinfo=UTC)  # 21 March, 01:00 in Almaty
    run = draw_charts(config, now=evening, pairs=["KZT/USD"])
    assert (run.since, run.until) == (date(2025, 3, 20), date(2025, 3, 21))
