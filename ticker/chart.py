"""Chart stage: each pair's daily series and an overview drawn as PNG files."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import re
import struct
import textwrap
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from importlib import metadata as _metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from ticker.models import Point, Series
from ticker.output import make_dir, write_file

if TYPE_CHECKING:  # matplotlib is imported only by the functions that draw
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.text import Annotation

CHART_VERSION = "1"  # bump when the drawing changes, so every chart is redrawn once
DISPLAYS = ("per_usd", "usd_per_unit")
COARSE_DIGITS = 3  # a printed rate with fewer significant digits than this is coarse
FIGSIZE = (10.0, 6.0)  # inches
DPI = 120
FINGERPRINT_KEY = "Ticker-Fingerprint"
OVERVIEW_NAME = "overview.png"
OVERVIEW_KEY = "overview"  # the `pair` of a skipped overview in ChartReport.skipped
STALE_TEMP_SECONDS = 3600.0
LOG_SCALE_RATIO = 2.5  # the overview turns logarithmic when its index spans more than this

# Currency names and the unit word used in axis labels ("tenge per US dollar").
CURRENCIES: dict[str, tuple[str, str]] = {
    "KGS": ("Kyrgyz som", "som"),
    "KZT": ("Kazakh tenge", "tenge"),
    "TJS": ("Tajik somoni", "somoni"),
    "UZS": ("Uzbek sum", "sum"),
    "TMT": ("Turkmen manat", "manat"),
    "USD": ("US dollar", "US dollars"),
}
# One colour per currency everywhere (Okabe-Ito, colour-blind safe); the bar colours
# for rises and falls are the two Okabe-Ito colours not given to a currency.
COLOURS: dict[str, str] = {
    "KGS": "#E69F00",  # orange
    "KZT": "#009E73",  # bluish green
    "TJS": "#CC79A7",  # reddish purple
    "UZS": "#56B4E9",  # sky blue
    "TMT": "#333333",  # near black
}
OTHER_COLOUR = "#7F7F7F"
RISE_COLOUR = "#0072B2"  # blue
FALL_COLOUR = "#D55E00"  # vermillion
NOTE_COLOUR = "#8C3B00"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_UNIX_ORDINAL = date(1970, 1, 1).toordinal()
_PRINTED_STEP = 1e-5  # the source prints 5 decimals
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PAIR_RE = re.compile(r"^[A-Z]{3}/[A-Z]{3}$")


@dataclass(frozen=True, slots=True)
class ChartReport:
    """What render_charts did: files written, files left as they were, pairs skipped."""

    written: tuple[Path, ...] = ()
    unchanged: tuple[Path, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()  # (pair or "overview", reason)


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
    last: Point
    last_value: float  # the last point in display units
    days_with_data: int
    fingerprint: str

    @property
    def base(self) -> str:
        return self.pair.split("/")[0]

    @property
    def quote(self) -> str:
        return self.pair.split("/")[-1]


@dataclass(frozen=True, slots=True)
class OverviewLine:
    """One pair in the overview: its values rebased to 100 at its first day in the window."""

    pair: str
    dates: tuple[date, ...]
    values: tuple[float, ...]  # index, first value = 100; NaN breaks a gap
    coarse: bool
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


# ---------------------------------------------------------------- pure data


def pair_filename(pair: str) -> str:
    """The file name of a pair's chart: "KZT/USD" -> "KZT-USD.png"."""
    if _PAIR_RE.match(pair):
        return pair.replace("/", "-") + ".png"
    return (re.sub(r"[^A-Za-z0-9]+", "-", pair).strip("-") or "pair") + ".png"


def significant_digits(text: str) -> int:
    """Significant digits of a printed number: "0.00008" -> 1, "0.01164" -> 4."""
    digits = Decimal(text).as_tuple().digits
    return len("".join(map(str, digits)).lstrip("0"))


@functools.lru_cache(maxsize=4096)
def is_coarse(rate_text: str) -> bool:
    """True when the printed rate carries fewer than COARSE_DIGITS significant digits."""
    return significant_digits(rate_text) < COARSE_DIGITS


def display_value(rate: Decimal, display: str) -> float:
    """A stored rate (USD per unit) in display units; 1/rate for "per_usd" (NaN for 0)."""
    if display == "usd_per_unit":
        return float(rate)
    return float(1 / rate) if rate else math.nan


def _check_display(display: str) -> None:
    """Refuse a display other than "per_usd" or "usd_per_unit"."""
    if display not in DISPLAYS:
        raise ValueError(f"display must be one of {', '.join(DISPLAYS)}, not {display!r}")


def _window_points(series: Series, since: date | None, until: date | None) -> list[Point]:
    """The series' points in the window, oldest first."""
    points = list(series.points)
    if any(a.date > b.date for a, b in zip(points, points[1:], strict=False)):
        points.sort(key=lambda p: p.date)
    if since is None and until is None:
        return points
    return [
        p
        for p in points
        if (since is None or p.date >= since) and (until is None or p.date <= until)
    ]


def _with_gaps(
    points: Sequence[Point], values: Sequence[float], coarse: bool
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
def _renderer_version() -> str:
    """matplotlib's version, part of every fingerprint (an upgrade redraws once)."""
    try:
        return _metadata.version("matplotlib")
    except _metadata.PackageNotFoundError:  # pragma: no cover - matplotlib is a dependency
        return "?"


def _fingerprint(kind: str, options: Sequence[object], rows: Sequence[str]) -> str:
    """sha256 of what a chart draws: its options, its data rows and the chart version."""
    digest = hashlib.sha256()
    head = [CHART_VERSION, _renderer_version(), FIGSIZE, DPI, kind, *options]
    digest.update(repr(head).encode())
    digest.update("\n".join(rows).encode())
    return digest.hexdigest()


def _window_text(since: date | None, until: date | None) -> str:
    """The window in words, for skip reasons: "between 2025-01-01 and 2025-03-01"."""
    if since and until:
        return f"between {since} and {until}"
    if since:
        return f"since {since}"
    if until:
        return f"until {until}"
    return "in the store"


def _reason(
    pair: str, points: Sequence[Point], since: date | None, until: date | None
) -> str | None:
    """Why these points make no chart, or None."""
    if not points:
        return f"{pair}: no data {_window_text(since, until)}"
    if len(points) == 1:
        return (
            f"{pair}: only one day of data ({points[0].date}) "
            f"{_window_text(since, until)}; a chart needs two or more"
        )
    return None


def skip_reason(series: Series, since: date | None = None, until: date | None = None) -> str | None:
    """Why a pair gets no chart (no data, one day only), or None when it can be drawn."""
    return _reason(series.pair, _window_points(series, since, until), since, until)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A drawable series' points in the window and their values in display units."""

    pair: str
    points: list[Point]
    values: list[float]
    coarse_texts: list[str]


def _prepare(points: list[Point], pair: str, display: str) -> _Prepared:
    """Values in display units and the coarse printed rates, computed once per series."""
    values = [display_value(p.rate, display) for p in points]
    coarse_texts = [p.rate_text for p in points if is_coarse(p.rate_text)]
    return _Prepared(pair, points, values, coarse_texts)


def _pair_chart(
    prep: _Prepared, display: str, since: date | None, until: date | None, source_label: str
) -> PairChart:
    """A pair's chart data from its prepared series."""
    points = prep.points
    lo, hi = since or points[0].date, until or points[-1].date
    coarse = bool(prep.coarse_texts)
    xs, ys = _with_gaps(points, prep.values, coarse)
    rows = [f"{p.date} {p.rate_text} {p.change_text}" for p in points]
    return PairChart(
        pair=prep.pair,
        display=display,
        since=lo,
        until=hi,
        source_label=source_label,
        dates=xs,
        values=ys,
        bar_dates=tuple(p.date for p in points),
        changes=tuple(float(p.change) for p in points),
        falls=tuple(p.change.is_signed() for p in points),
        coarse=coarse,
        coarse_text=prep.coarse_texts[-1] if coarse else "",
        last=points[-1],
        last_value=prep.values[-1],
        days_with_data=len(points),
        fingerprint=_fingerprint("pair", (prep.pair, display, lo, hi, source_label), rows),
    )


def chart_data(
    series: Series,
    display: str = "per_usd",
    *,
    since: date | None = None,
    until: date | None = None,
    source_label: str = "timesca",
) -> PairChart:
    """What a pair's chart draws (raises ValueError when skip_reason() gives a reason)."""
    _check_display(display)
    points = _window_points(series, since, until)
    reason = _reason(series.pair, points, since, until)
    if reason:
        raise ValueError(reason)
    return _pair_chart(_prepare(points, series.pair, display), display, since, until, source_label)


def _overview(
    prepared: Sequence[_Prepared],
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
        xs, ys = _with_gaps(prep.points, index, coarse)
        first, last = prep.points[0].date, prep.points[-1].date
        lines.append(OverviewLine(prep.pair, xs, ys, coarse, first, last, index[-1]))
        rows.append(prep.pair)
        rows.extend(f"{p.date} {p.rate_text}" for p in prep.points)
    if not lines:
        return None
    lo = since or min(line.first for line in lines)
    hi = until or max(line.last for line in lines)
    fingerprint = _fingerprint("overview", (display, lo, hi, source_label), rows)
    return OverviewChart(display, lo, hi, source_label, tuple(lines), fingerprint)


def overview_data(
    series: Sequence[Series],
    display: str = "per_usd",
    *,
    since: date | None = None,
    until: date | None = None,
    source_label: str = "timesca",
) -> OverviewChart | None:
    """Every pair with two or more days, rebased to 100 at its first value; None if none."""
    _check_display(display)
    prepared: list[_Prepared] = []
    seen: set[str] = set()
    for s in series:
        points = _window_points(s, since, until)
        if s.pair not in seen and not _reason(s.pair, points, since, until):
            prepared.append(_prepare(points, s.pair, display))
        seen.add(s.pair)
    return _overview(prepared, display, since, until, source_label)


# ---------------------------------------------------------------- text helpers


def _day(d: date) -> str:
    """A date for titles: "20 Mar 2025" (no locale involved)."""
    return f"{d.day} {_MONTHS[d.month - 1]} {d.year}"


def _unit(code: str) -> str:
    """The unit word of a currency code: "KZT" -> "tenge"."""
    return CURRENCIES.get(code, (code, code))[1]


def _name(code: str) -> str:
    """The name of a currency code: "KZT" -> "Kazakh tenge"."""
    return CURRENCIES.get(code, (code, code))[0]


def _quote_unit(code: str) -> str:
    """The quote currency in the singular: "USD" -> "US dollar"."""
    return "US dollar" if code == "USD" else _name(code)


def _axis_label(base: str, quote: str, display: str) -> str:
    """The y-axis units: "tenge per US dollar" or "US dollars per tenge"."""
    if display == "per_usd":
        return f"{_unit(base)} per {_quote_unit(quote)}"
    return f"{_unit(quote)} per {_unit(base)}"


def _fmt_value(value: float) -> str:
    """A value in display units with about four significant digits: "502.5", "12,500"."""
    if not math.isfinite(value):
        return "n/a"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:,.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.5f}"


def _source_text(label: str) -> str:
    """The source note of a chart."""
    if label == "timesca":
        return "Source: The Times of Central Asia (timesca.com) currency ticker"
    return f"Source: {label}"


def _colour(base: str) -> str:
    """The currency's fixed colour (grey for a currency not in COLOURS)."""
    return COLOURS.get(base, OTHER_COLOUR)


# ---------------------------------------------------------------- drawing

_LEFT, _RIGHT = 0.085, 0.975
_FOOTER_CHARS = 140  # 8-point notes across the width of the figure
_FOOTER_STEP = 0.032  # figure fraction per footer line


def _new_figure() -> Figure:
    """An empty Figure on an Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _style_axes(ax: Axes) -> None:
    """Light grid beneath the data, no top or right spine, 9-point tick labels."""
    ax.grid(True, color="#DDDDDD", linewidth=0.7)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=9)


def _x_limits(since: date, until: date) -> tuple[float, float]:
    """The date axis limits: the window with room for the first and last day's bar."""
    import matplotlib.dates as mdates

    # matplotlib's dates end at 1 January of year 1: the room is kept inside them
    first = float(mdates.date2num(date.min))
    return max(float(mdates.date2num(since)) - 0.7, first), float(mdates.date2num(until)) + 0.7


def _date_axis(ax: Axes) -> None:
    """Readable dates: AutoDateLocator with ConciseDateFormatter."""
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _decimals(step: float) -> int:
    """The fewest decimals that write a tick step exactly (0.0025 -> 4, 250 -> 0)."""
    for decimals in range(12):
        if abs(round(step, decimals) - step) <= abs(step) * 1e-6:
            return decimals
    return 12


def _value_axis(ax: Axes) -> None:
    """Plain tick labels with thousands separators, decimals from the tick spacing."""
    from matplotlib.ticker import Formatter, MaxNLocator

    class PlainFormatter(Formatter):
        """Plain numbers ("12,500", "87.5", "0.00008"): no offset, no scientific notation."""

        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"{x:,.{_decimals(abs(x) or 1.0)}f}"

        def format_ticks(self, values: Sequence[float]) -> list[str]:
            step = abs(values[1] - values[0]) if len(values) > 1 else abs(values[0]) or 1.0
            return [f"{v:,.{_decimals(step)}f}" for v in values]

    ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_formatter(PlainFormatter())


def _date_numbers(dates: Sequence[date]) -> Any:
    """Dates as matplotlib date numbers (a float array)."""
    import matplotlib.dates as mdates
    import numpy as np

    days = np.fromiter((d.toordinal() for d in dates), dtype=np.float64, count=len(dates))
    return days - _UNIX_ORDINAL + float(mdates.date2num(np.datetime64("1970-01-01")))


class _PairFigure:
    """A pair chart's Figure, built once and refilled for each pair: the axes, ticks and
    texts are made once per run instead of once per chart."""

    def __init__(self) -> None:
        from matplotlib.patches import Patch
        from matplotlib.ticker import MaxNLocator

        self.fig = fig = _new_figure()
        self.grid = fig.add_gridspec(
            2, 1, height_ratios=(3, 1), left=_LEFT, right=_RIGHT, top=0.82, hspace=0.1
        )
        self.ax = ax = fig.add_subplot(self.grid[0])
        self.bars = bars = fig.add_subplot(self.grid[1], sharex=ax)
        # the rate; a day with no neighbour draws no segment, so it gets a dot of its own
        (self.line,) = ax.plot([], [], linewidth=1.5, solid_joinstyle="round", gid="rate")
        (self.alone,) = ax.plot([], [], "o", markersize=2.5, gid="isolated")
        (self.last,) = ax.plot([], [], "o", markersize=5, gid="last")
        self.label: Annotation | None = None
        _style_axes(ax)
        _value_axis(ax)
        ax.tick_params(labelbottom=False)
        ax.xaxis.offsetText.set_visible(False)
        # the daily change: one Line2D per colour, a thick butt-capped segment per day with
        # NaN between days (thousands of bars in one artist draw far faster than Rectangles)
        (self.rises,) = bars.plot([], [], color=RISE_COLOUR, solid_capstyle="butt", gid="rises")
        (self.falls,) = bars.plot([], [], color=FALL_COLOUR, solid_capstyle="butt", gid="falls")
        bars.axhline(0, color="#555555", linewidth=0.8)
        _style_axes(bars)
        bars.yaxis.set_major_locator(MaxNLocator(nbins=4))
        bars.set_ylabel("day's change, %", fontsize=10)
        bars.legend(
            handles=[
                Patch(color=RISE_COLOUR, label="rise"),
                Patch(color=FALL_COLOUR, label="fall"),
            ],
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            ncols=2,
            fontsize=8,
            frameon=False,
            borderaxespad=0.1,
            handlelength=1.0,
        )
        _date_axis(bars)
        self.title = fig.text(_LEFT, 0.955, "", fontsize=15, weight="bold", va="top")
        self.subtitle = fig.text(_LEFT, 0.905, "", fontsize=10.5, color="#333333", va="top")
        self.note = fig.text(_LEFT, 0.868, "", fontsize=9, color=NOTE_COLOUR, va="top")
        self.footer = _Footer(fig)

    def show(self, chart: PairChart) -> Figure:
        """Fill the figure with one pair's chart and return it."""
        import numpy as np

        ax, bars = self.ax, self.bars
        colour = _colour(chart.base)
        unit = _unit(chart.base)
        unit_label = _axis_label(chart.base, chart.quote, chart.display)
        total_days = (chart.until - chart.since).days + 1
        shown = "shown as 1/rate" if chart.display == "per_usd" else "shown as printed"
        footer_lines = self.footer.show(
            f"{_source_text(chart.source_label)}, printed as US dollars per {unit} "
            f"(5 decimals); {shown}.",
            f"Bars: the day's change as printed by the source (of US dollars per {unit}). "
            f"Data on {chart.days_with_data} of {total_days} days; days without data are blank.",
        )
        self.grid.update(bottom=0.09 + _FOOTER_STEP * footer_lines)
        for axes in (ax, bars):  # GridSpec.update moves only pyplot's axes: move ours
            spec = axes.get_subplotspec()
            if spec is not None:
                axes.set_position(spec.get_position(self.fig))
        x_lim = _x_limits(chart.since, chart.until)
        ax.set_xlim(*x_lim)

        x = _date_numbers(chart.dates)
        y = np.array(chart.values, dtype=float)
        self.line.set_data(x, y)
        self.line.set_color(colour)
        self.line.set_drawstyle("steps-post" if chart.coarse else "default")
        finite = np.isfinite(y)
        alone = np.zeros_like(finite)
        if not chart.coarse and len(y) > 1:  # steps draw a lone day as a one-day step
            alone = finite & ~np.r_[False, finite[:-1]] & ~np.r_[finite[1:], False]
        self.alone.set_data(x[alone], y[alone])
        self.alone.set_color(colour)
        ax.set_ylabel(unit_label, fontsize=10)

        # the last value, marked, and labelled in a band kept free of data above the line
        lo, hi = (float(y[finite].min()), float(y[finite].max())) if finite.any() else (0.0, 0.0)
        if hi > lo:
            span = hi - lo
            ax.set_ylim(lo - 0.08 * span, hi + 0.34 * span)
        else:  # a flat line sits in the middle, with the same band above it
            floor = 3 * _PRINTED_STEP if chart.display == "usd_per_unit" else 1e-6
            span = max(abs(hi) * 0.01, floor)
            ax.set_ylim(lo - span, hi + span)
        last_x = float(_date_numbers([chart.last.date])[0])
        self.last.set_data([last_x], [chart.last_value])
        self.last.set_color(colour)
        if chart.display == "per_usd":
            text = (
                f"{_fmt_value(chart.last_value)} {unit_label} on {_day(chart.last.date)}\n"
                f"(printed {chart.last.rate_text} US dollars per {unit})"
            )
        else:
            text = f"{chart.last.rate_text} {unit_label}\non {_day(chart.last.date)}"
        on_right = (last_x - x_lim[0]) / (x_lim[1] - x_lim[0]) > 0.4
        if self.label is not None:
            self.label.remove()
        self.label = ax.annotate(
            text,
            xy=(last_x, chart.last_value),
            xytext=(last_x, 0.975),
            textcoords=ax.get_xaxis_transform(),
            ha="right" if on_right else "left",
            va="top",
            fontsize=9,
            bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": colour, "lw": 1.0},
            arrowprops={
                "arrowstyle": "-",
                "color": colour,
                "lw": 0.8,
                "shrinkB": 4,
                "relpos": (1.0 if on_right else 0.0, 0.0),
            },
            gid="last-label",
        )

        # the daily change as bars, rises and falls in two colours
        bx = _date_numbers(chart.bar_dates)
        heights = np.array(chart.changes, dtype=float)
        axes_pt = (_RIGHT - _LEFT) * FIGSIZE[0] * 72
        width_pt = max(0.8 * axes_pt / (x_lim[1] - x_lim[0]), 72 / DPI)
        falls = np.array(chart.falls, dtype=bool)
        for artist, picked in ((self.rises, ~falls), (self.falls, falls)):
            n = int(picked.sum())
            bar_x = np.repeat(bx[picked], 3)
            bar_x[2::3] = np.nan
            bar_y = np.column_stack((np.zeros(n), heights[picked], np.full(n, np.nan))).ravel()
            artist.set_data(bar_x, bar_y)
            artist.set_linewidth(width_pt)
        low, high = min(0.0, float(heights.min())), max(0.0, float(heights.max()))
        pad = (high - low) * 0.08 or 0.05
        bars.set_ylim(low - pad, high + pad)

        self.title.set_text(f"{chart.pair}  {_name(chart.base)}")
        self.subtitle.set_text(
            f"{unit_label[0].upper()}{unit_label[1:]}, {_day(chart.since)} to {_day(chart.until)}"
        )
        self.note.set_visible(chart.coarse)
        if chart.coarse:
            digits = significant_digits(chart.coarse_text)
            self.note.set_text(
                f"Coarse: the source prints 5 decimals ({chart.coarse_text} US dollars per "
                f"{unit}, {digits} significant digit{'s' if digits != 1 else ''}), "
                "so the values move in steps."
            )
        return self.fig


def build_pair_figure(chart: PairChart) -> Figure:
    """The Figure of one pair's chart (rate above, daily change bars below), not saved."""
    return _PairFigure().show(chart)


class _Footer:
    """Small grey notes at the bottom of a figure, wrapped to its width."""

    def __init__(self, fig: Figure, slots: int = 4) -> None:
        self.texts = [
            fig.text(_LEFT, 0.012 + _FOOTER_STEP * i, "", fontsize=8, color="#555555")
            for i in range(slots)
        ]

    def show(self, *notes: str) -> int:
        """Show the notes, first on top; returns the number of lines used."""
        lines = [line for note in notes for line in textwrap.wrap(note, _FOOTER_CHARS)]
        lines = lines[: len(self.texts)]
        for i, text in enumerate(self.texts):
            text.set_text(lines[len(lines) - 1 - i] if i < len(lines) else "")
        return len(lines)


def _spread_labels(ys: list[float], gap: float) -> list[float]:
    """Move label positions apart so that neighbours are at least `gap` apart."""
    order = sorted(range(len(ys)), key=lambda i: ys[i])
    placed = [ys[i] for i in order]
    for k in range(1, len(placed)):
        placed[k] = max(placed[k], placed[k - 1] + gap)
    shift = (placed[-1] - ys[order[-1]]) / 2 if placed else 0.0  # recentre the block
    for k in range(len(placed)):
        placed[k] -= min(shift, placed[k] - ys[order[k]])
    for k in range(1, len(placed)):
        placed[k] = max(placed[k], placed[k - 1] + gap)
    out = [0.0] * len(ys)
    for k, i in enumerate(order):
        out[i] = placed[k]
    return out


def build_overview_figure(chart: OverviewChart) -> Figure:
    """The Figure of the overview (every pair rebased to 100), not saved."""
    import numpy as np
    from matplotlib.lines import Line2D

    if chart.display == "per_usd":
        hint = "Up: the currency buys fewer dollars (weaker); down: stronger."
    else:
        hint = "Up: the currency buys more dollars (stronger); down: weaker."
    notes = [hint]
    late = [line for line in chart.lines if line.first > chart.since]
    if late:
        notes.append(
            "Starting later, rebased at their first day: "
            + ", ".join(f"{line.base} {_day(line.first)}" for line in late)
            + "."
        )
    coarse = [line.base for line in chart.lines if line.coarse]
    if coarse:
        notes.append(
            f"{', '.join(coarse)}: printed to 5 decimals, so the values are coarse (steps)."
        )
    fig = _new_figure()
    footer_lines = _Footer(fig).show(" ".join(notes), f"{_source_text(chart.source_label)}.")
    right = 0.89
    bottom = 0.075 + _FOOTER_STEP * footer_lines
    ax = fig.add_axes((_LEFT, bottom, right - _LEFT, 0.82 - bottom))
    for line in chart.lines:
        x = _date_numbers(line.dates)
        y = np.array(line.values, dtype=float)
        ax.plot(
            x,
            y,
            color=_colour(line.base),
            linewidth=1.4,
            drawstyle="steps-post" if line.coarse else "default",
            gid=f"index-{line.pair}",
            zorder=1.9 if line.coarse else 2.0,  # coarse steps beneath the finer lines
            label=f"{line.pair}  {_name(line.base)}",
        )
    ax.axhline(100, color="#777777", linewidth=0.9, linestyle=(0, (4, 3)), zorder=1)
    _style_axes(ax)
    finite = np.concatenate([np.array(line.values, dtype=float) for line in chart.lines])
    finite = finite[np.isfinite(finite) & (finite > 0)]
    log_scale = bool(len(finite)) and float(finite.max() / finite.min()) > LOG_SCALE_RATIO
    if log_scale:  # a devaluation would flatten every other line: equal ratios, equal steps
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.{_decimals(v)}f}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        _value_axis(ax)
    ax.margins(y=0.08)
    _date_axis(ax)
    ax.set_xlim(*_x_limits(chart.since, chart.until))
    ylabel = "index, first day = 100"
    ax.set_ylabel(ylabel + (", log scale" if log_scale else ""), fontsize=10)

    # labels at the right end of each line, pushed apart where lines end close together
    ends = [
        (line, float(_date_numbers([line.last])[0]), line.last_value)
        for line in chart.lines
        if math.isfinite(line.last_value)
    ]
    for line, x_end, y_end in ends:
        ax.plot([x_end], [y_end], "o", color=_colour(line.base), markersize=4)
    ax.get_ylim()  # settle the autoscaled limits before converting to pixels
    end_px = [float(ax.transData.transform((0.0, e[2]))[1]) for e in ends]
    label_px = _spread_labels(end_px, 9 * 1.35 * DPI / 72)
    for (line, _x, y_end), y_px, l_px in zip(ends, end_px, label_px, strict=True):
        ax.annotate(
            f"{line.base} {y_end:,.1f}",
            xy=(1.0, y_end),
            xycoords=ax.get_yaxis_transform(),
            xytext=(6, (l_px - y_px) * 72 / DPI),
            textcoords="offset points",
            fontsize=9,
            color=_colour(line.base),
            weight="bold",
            va="center",
            ha="left",
            annotation_clip=False,
            gid=f"end-{line.pair}",
        )
    handles = [
        Line2D(
            [], [], color=_colour(line.base), linewidth=2.5, label=f"{line.pair} {_name(line.base)}"
        )
        for line in chart.lines
    ]
    ax.legend(
        handles=handles,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.01),
        ncols=len(handles),
        fontsize=8.5,
        frameon=False,
        borderaxespad=0.0,
        handlelength=1.5,
        columnspacing=1.2,
    )
    fig.text(
        _LEFT,
        0.955,
        "Central Asian currencies against the US dollar",
        fontsize=15,
        weight="bold",
        va="top",
    )
    fig.text(
        _LEFT,
        0.905,
        f"{'Units per US dollar' if chart.display == 'per_usd' else 'US dollars per unit'}, "
        f"each rebased to 100 at its first day, {_day(chart.since)} to {_day(chart.until)}",
        fontsize=10.5,
        color="#333333",
        va="top",
    )
    return fig


# ---------------------------------------------------------------- files


def read_fingerprint(path: Path) -> str | None:
    """The fingerprint stored in a PNG's text chunk, or None (no file, not a whole PNG)."""
    found: str | None = None
    try:
        with path.open("rb") as fh:
            if fh.read(8) != _PNG_SIGNATURE:
                return None
            while True:
                head = fh.read(8)
                if len(head) < 8:
                    return None  # truncated: no IEND
                length, kind = struct.unpack(">I4s", head)
                if kind == b"tEXt" and length < 4096:
                    key, _, value = fh.read(length).partition(b"\0")
                    if key == FINGERPRINT_KEY.encode():
                        found = value.decode("latin-1")
                    fh.seek(4, os.SEEK_CUR)
                elif kind == b"IEND":
                    return found
                else:
                    fh.seek(length + 4, os.SEEK_CUR)
    except OSError:
        return None


def _save_png(rgb: Any, path: Path, metadata: dict[str, str]) -> None:
    """Encode and write the PNG the way ticker.output writes every file: a regular file
    replaced whole (temporary file, rename), a link or device written through."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in metadata.items():
        info.add_text(key, value)

    def encode(fh: BinaryIO) -> None:
        Image.fromarray(rgb, "RGB").save(fh, "png", pnginfo=info, dpi=(DPI, DPI))

    write_file(path, encode)


class _Writer:
    """Draws a Figure, then encodes and writes its PNG on one worker thread (PIL's encoder
    and the file system let go of the GIL) while the next chart is drawn."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ticker-chart-png")
        self.pending: list[Future[None]] = []

    def write(self, fig: Figure, path: Path, fingerprint: str, title: str) -> None:
        """Queue the PNG of `fig` as it is now (the Figure may be reused at once)."""
        import numpy as np
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = fig.canvas
        if not isinstance(canvas, FigureCanvasAgg):
            canvas = FigureCanvasAgg(fig)
        canvas.draw()
        rgb = np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])  # a copy
        metadata = {
            "Title": title,
            "Software": f"ticker chart {CHART_VERSION}, matplotlib {_renderer_version()}",
            FINGERPRINT_KEY: fingerprint,
        }
        self.pending.append(self.pool.submit(_save_png, rgb, path, metadata))

    def close(self) -> None:
        """Wait for every queued file; raise the first error, if any."""
        try:
            for future in self.pending:
                future.result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _remove_stale_temps(out_dir: Path) -> None:
    """Remove temporary files an interrupted run left behind (older than an hour)."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    for tmp in out_dir.glob(".*.png.tmp"):
        with contextlib.suppress(OSError):
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()


def render_charts(
    series: Sequence[Series],
    out_dir: Path,
    *,
    display: str = "per_usd",
    since: date | None = None,
    until: date | None = None,
    source_label: str = "timesca",
) -> ChartReport:
    """Write one PNG per pair and overview.png to out_dir; unchanged charts are not rewritten."""
    _check_display(display)
    if since and until and since > until:
        raise ValueError(f"the window starts ({since}) after it ends ({until})")
    out_dir = Path(out_dir)
    make_dir(out_dir)
    _remove_stale_temps(out_dir)
    written: list[Path] = []
    unchanged: list[Path] = []
    skipped: list[tuple[str, str]] = []
    prepared: list[_Prepared] = []
    seen: set[str] = set()
    figure: _PairFigure | None = None  # one Figure, refilled for every pair
    writer = _Writer()
    try:
        for s in series:
            if s.pair in seen:
                skipped.append((s.pair, f"{s.pair}: given twice (source {s.source}); drawn once"))
                continue
            seen.add(s.pair)
            points = _window_points(s, since, until)
            reason = _reason(s.pair, points, since, until)
            if reason:
                skipped.append((s.pair, reason))
                continue
            prep = _prepare(points, s.pair, display)
            prepared.append(prep)
            chart = _pair_chart(prep, display, since, until, source_label)
            path = out_dir / pair_filename(s.pair)
            if read_fingerprint(path) == chart.fingerprint:
                unchanged.append(path)
                continue
            figure = figure or _PairFigure()
            title = f"{chart.pair} {_name(chart.base)} {chart.since} to {chart.until}"
            writer.write(figure.show(chart), path, chart.fingerprint, title)
            written.append(path)
        if figure is not None:
            figure.fig.clear()

        overview = _overview(prepared, display, since, until, source_label)
        path = out_dir / OVERVIEW_NAME
        if overview is None:
            reason = f"overview: no pair has two or more days {_window_text(since, until)}"
            skipped.append((OVERVIEW_KEY, reason))
        elif read_fingerprint(path) == overview.fingerprint:
            unchanged.append(path)
        else:
            fig = build_overview_figure(overview)
            title = f"Overview {overview.since} to {overview.until}"
            writer.write(fig, path, overview.fingerprint, title)
            fig.clear()
            written.append(path)
    finally:
        writer.close()
    return ChartReport(tuple(written), tuple(unchanged), tuple(skipped))
