"""What each chart draws, worked out without matplotlib: a pair's values in display
units with gaps and steps, the overview rebased to 100, and a fingerprint of each, so a
chart whose data did not change is not drawn again."""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from importlib import metadata as _metadata

from ticker.charts.labels import decimals, official_label, significant_digits
from ticker.config import IN_FORCE_DAYS
from ticker.models import Day, Series

CHART_VERSION = "1"  # bump when the drawing changes, so every chart is redrawn once
OFFICIAL_VERSION = "1"  # the same for the official rates' line (charts that have one)
DISPLAYS = ("per_usd", "usd_per_unit")
COARSE_DIGITS = 3  # a printed rate with fewer significant digits than this is coarse
FIGSIZE = (10.0, 6.0)  # inches
DPI = 120
_PAIR_RE = re.compile(r"^[A-Z]{3}/[A-Z]{3}$")


@dataclass(frozen=True, slots=True)
class PairChart:
    """What one pair's chart draws, computed without matplotlib."""

    pair: str
    display: str
    since: date
    until: date
    source_label: str
    dates: tuple[date, ...]  # x of the rate line, with one inserted day per gap
    values: tuple[float, ...]  # y of the rate line in display units; NaN breaks a gap
    bar_dates: tuple[date, ...]  # days with a printed change
    changes: tuple[float, ...]  # the day's change in percent, as printed
    falls: tuple[bool, ...]  # True where the printed change is negative ("-0" too)
    coarse: bool  # the printed rate has < COARSE_DIGITS significant digits: steps
    coarse_text: str  # a coarse printed rate, for the note ("0.00008")
    decimals: int  # the decimals the source prints the rate with
    last: Day
    last_value: float  # the last point in display units
    days_with_data: int
    fingerprint: str
    # The official rate of the currency (drawn under the ticker's line), in display units:
    # a step line (each rate in force until the next), broken where none was for long.
    official_dates: tuple[date, ...] = ()
    official_values: tuple[float, ...] = ()
    official_label: str = ""  # who publishes it, for the legend
    official_last: Day | None = None  # the official rate in force on the last day drawn

    @property
    def base(self) -> str:
        return self.pair.split("/")[0]

    @property
    def quote(self) -> str:
        return self.pair.split("/")[-1]

    @property
    def has_official(self) -> bool:
        return len(self.official_dates) > 1


@dataclass(frozen=True, slots=True)
class OverviewLine:
    """One pair in the overview: its values rebased to 100 at its first day in the window."""

    pair: str
    dates: tuple[date, ...]
    values: tuple[float, ...]  # index, first value = 100; NaN breaks a gap
    coarse: bool
    decimals: int  # the decimals the source prints the rate with
    first: date
    last: date
    last_value: float  # index on the last day with data

    @property
    def base(self) -> str:
        return self.pair.split("/")[0]


@dataclass(frozen=True, slots=True)
class OverviewChart:
    """What the overview draws: every pair with two or more days, rebased to 100."""

    display: str
    since: date
    until: date
    source_label: str
    lines: tuple[OverviewLine, ...]
    fingerprint: str


def pair_filename(pair: str) -> str:
    """The file name of a pair's chart: "KZT/USD" -> "KZT-USD.png"."""
    if _PAIR_RE.match(pair):
        return pair.replace("/", "-") + ".png"
    return (re.sub(r"[^A-Za-z0-9]+", "-", pair).strip("-") or "pair") + ".png"


@functools.lru_cache(maxsize=4096)
def is_coarse(rate_text: str) -> bool:
    """True when the printed rate carries fewer than COARSE_DIGITS significant digits."""
    return significant_digits(rate_text) < COARSE_DIGITS


def display_value(day: Day, display: str) -> float:
    """A day's rate in display units, whichever way its pair is written: "per_usd", units
    of the currency per US dollar (1/rate for KZT/USD, the rate for USD/KZT), or
    "usd_per_unit", US dollars per unit (NaN for a rate of 0)."""
    rate = day.rate_value
    usd_per_unit = not day.pair.startswith("USD/")
    if (display == "usd_per_unit") == usd_per_unit:
        return float(rate)
    return float(1 / rate) if rate else math.nan


def check_display(display: str) -> None:
    """Refuse a display other than "per_usd" or "usd_per_unit"."""
    if display not in DISPLAYS:
        raise ValueError(f"display must be one of {', '.join(DISPLAYS)}, not {display!r}")


def window_days(series: Series, since: date | None, until: date | None) -> list[Day]:
    """The series' days in the window, oldest first."""
    points = list(series.days)
    if any(a.date > b.date for a, b in zip(points, points[1:], strict=False)):
        points.sort(key=lambda p: p.date)
    if since is None and until is None:
        return points
    return [
        p
        for p in points
        if (since is None or p.date >= since) and (until is None or p.date <= until)
    ]


def with_gaps(
    points: Sequence[Day], values: Sequence[float], coarse: bool
) -> tuple[tuple[date, ...], tuple[float, ...]]:
    """The line's x and y: a NaN the day after each point followed by a gap of more than
    one day; a coarse (steps-post) line also gets its last value held to the next day."""
    xs: list[date] = []
    ys: list[float] = []
    one_day = timedelta(days=1)
    prev: date | None = None
    for p, v in zip(points, values, strict=True):
        if prev is not None and (p.date - prev).days > 1:
            xs.append(prev + one_day)
            ys.append(math.nan)
        xs.append(p.date)
        ys.append(v)
        prev = p.date
    if coarse and prev is not None and prev < date.max:
        xs.append(prev + one_day)
        ys.append(ys[-1])
    return tuple(xs), tuple(ys)


@functools.lru_cache(maxsize=1)
def renderer_version() -> str:
    """matplotlib's version, part of every fingerprint (an upgrade redraws once)."""
    try:
        return _metadata.version("matplotlib")
    except _metadata.PackageNotFoundError:  # pragma: no cover - matplotlib is a dependency
        return "?"


def data_fingerprint(kind: str, options: Sequence[object], rows: Sequence[str]) -> str:
    """sha256 of what a chart draws: its options, its data rows and the chart version."""
    digest = hashlib.sha256()
    head = [CHART_VERSION, renderer_version(), FIGSIZE, DPI, kind, *options]
    digest.update(repr(head).encode())
    digest.update("\n".join(rows).encode())
    return digest.hexdigest()


def window_text(since: date | None, until: date | None) -> str:
    """The window in words, for skip reasons: "between 2025-01-01 and 2025-03-01"."""
    if since and until:
        return f"between {since} and {until}"
    if since:
        return f"since {since}"
    if until:
        return f"until {until}"
    return "in the store"


def no_chart_reason(
    pair: str, points: Sequence[Day], since: date | None, until: date | None
) -> str | None:
    """Why these points make no chart, or None."""
    if not points:
        return f"{pair}: no data {window_text(since, until)}"
    if len(points) == 1:
        return (
            f"{pair}: only one day of data ({points[0].date}) "
            f"{window_text(since, until)}; a chart needs two or more"
        )
    return None


def skip_reason(series: Series, since: date | None = None, until: date | None = None) -> str | None:
    """Why a pair gets no chart (no data, one day only), or None when it can be drawn."""
    return no_chart_reason(series.pair, window_days(series, since, until), since, until)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A drawable series' points in the window and their values in display units."""

    pair: str
    points: list[Day]
    values: list[float]
    coarse_texts: list[str]


def prepare(points: list[Day], pair: str, display: str) -> Prepared:
    """Values in display units and the coarse printed rates, computed once per series."""
    values = [display_value(p, display) for p in points]
    coarse_texts = [p.rate for p in points if is_coarse(p.rate)]
    return Prepared(pair, points, values, coarse_texts)


def official_line(
    points: Sequence[Day], display: str, until: date | None
) -> tuple[tuple[date, ...], tuple[float, ...]]:
    """The official rates' x and y for a steps-post line: each rate holds until the next
    one, a NaN breaks the line where none came for IN_FORCE_DAYS, and the last one holds
    to the day after it (within the window)."""
    xs: list[date] = []
    ys: list[float] = []
    prev: Day | None = None
    for p in points:
        if prev is not None and (p.date - prev.date).days > IN_FORCE_DAYS:
            xs.append(prev.date + timedelta(days=1))
            ys.append(math.nan)
        xs.append(p.date)
        ys.append(display_value(p, display))
        prev = p
    if prev is not None and prev.date < date.max and (until is None or prev.date <= until):
        xs.append(prev.date + timedelta(days=1))
        ys.append(ys[-1])
    return tuple(xs), tuple(ys)


def pair_chart(
    prep: Prepared,
    display: str,
    since: date | None,
    until: date | None,
    source_label: str,
    official: Sequence[Day] = (),
) -> PairChart:
    """A pair's chart data from its prepared series, with the official rates of its
    currency in the window when there are any."""
    points = prep.points
    lo, hi = since or points[0].date, until or points[-1].date
    coarse = bool(prep.coarse_texts)
    xs, ys = with_gaps(points, prep.values, coarse)
    rows = [f"{p.date} {p.rate} {p.change}" for p in points]
    # the rate in force on the first day (published before it), and those in the window
    before = [p for p in official if p.date < lo][-1:]
    official = before + [p for p in official if lo <= p.date <= hi]
    official_xs: tuple[date, ...] = ()
    official_ys: tuple[float, ...] = ()
    label = ""
    last_official = None
    if len(official) > 1:
        official_xs, official_ys = official_line(official, display, hi)
        label = official_label(official[0].pair, [p.publisher for p in official])
        last_official = next((p for p in reversed(official) if p.date <= points[-1].date), None)
        rows.append(f"official {OFFICIAL_VERSION} {label}")
        rows.extend(f"{p.date} {p.rate} {p.publisher}" for p in official)
    changed = [p for p in points if p.change is not None]
    return PairChart(
        pair=prep.pair,
        display=display,
        since=lo,
        until=hi,
        source_label=source_label,
        dates=xs,
        values=ys,
        bar_dates=tuple(p.date for p in changed),
        changes=tuple(float(p.change or 0) for p in changed),
        falls=tuple(p.change.startswith("-") for p in changed if p.change is not None),
        coarse=coarse,
        coarse_text=prep.coarse_texts[-1] if coarse else "",
        decimals=max(decimals(p.rate) for p in points),
        last=points[-1],
        last_value=prep.values[-1],
        days_with_data=len(points),
        fingerprint=data_fingerprint("pair", (prep.pair, display, lo, hi, source_label), rows),
        official_dates=official_xs,
        official_values=official_ys,
        official_label=label,
        official_last=last_official,
    )


def chart_data(
    series: Series,
    display: str = "per_usd",
    *,
    since: date | None = None,
    until: date | None = None,
    source_label: str = "",
    official: Sequence[Day] = (),
) -> PairChart:
    """What a pair's chart draws (raises ValueError when skip_reason() gives a reason),
    with the official rates of its currency when given."""
    check_display(display)
    points = window_days(series, since, until)
    reason = no_chart_reason(series.pair, points, since, until)
    if reason:
        raise ValueError(reason)
    prep = prepare(points, series.pair, display)
    return pair_chart(prep, display, since, until, source_label, official)


def overview_chart(
    prepared: Sequence[Prepared],
    display: str,
    since: date | None,
    until: date | None,
    source_label: str,
) -> OverviewChart | None:
    """The overview's data from the prepared series; None when there is none."""
    lines: list[OverviewLine] = []
    rows: list[str] = []
    for prep in prepared:
        base = next((v for v in prep.values if math.isfinite(v) and v != 0), math.nan)
        index = [v / base * 100 for v in prep.values]
        coarse = bool(prep.coarse_texts)
        xs, ys = with_gaps(prep.points, index, coarse)
        first, last = prep.points[0].date, prep.points[-1].date
        places = max(decimals(p.rate) for p in prep.points)
        lines.append(OverviewLine(prep.pair, xs, ys, coarse, places, first, last, index[-1]))
        rows.append(prep.pair)
        rows.extend(f"{p.date} {p.rate}" for p in prep.points)
    if not lines:
        return None
    lo = since or min(line.first for line in lines)
    hi = until or max(line.last for line in lines)
    fingerprint = data_fingerprint("overview", (display, lo, hi, source_label), rows)
    return OverviewChart(display, lo, hi, source_label, tuple(lines), fingerprint)


def overview_data(
    series: Sequence[Series],
    display: str = "per_usd",
    *,
    since: date | None = None,
    until: date | None = None,
    source_label: str = "",
) -> OverviewChart | None:
    """Every pair with two or more days, rebased to 100 at its first value; None if none."""
    check_display(display)
    prepared: list[Prepared] = []
    seen: set[str] = set()
    for s in series:
        points = window_days(s, since, until)
        if s.pair not in seen and not no_chart_reason(s.pair, points, since, until):
            prepared.append(prepare(points, s.pair, display))
        seen.add(s.pair)
    return overview_chart(prepared, display, since, until, source_label)
