"""Drawing: a pair's chart (the rate above, the day's change as bars below) and the
overview (every pair rebased to 100), as matplotlib Figures on an Agg canvas. Imported
only when a chart is drawn."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from ticker.charts.data import DPI, FIGSIZE, OverviewChart, PairChart
from ticker.charts.labels import (
    FALL_COLOUR,
    NOTE_COLOUR,
    OFFICIAL_COLOUR,
    RISE_COLOUR,
    axis_label,
    currency_colour,
    currency_name,
    day_text,
    fmt_value,
    significant_digits,
    source_text,
    unit_word,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.legend import Legend
    from matplotlib.text import Annotation

LOG_SCALE_RATIO = 2.5  # the overview turns logarithmic when its index spans more than this
_UNIX_ORDINAL = date(1970, 1, 1).toordinal()

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


class PairFigure:
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
        # the official rate, thin and beneath; the ticker's rate above it; a day with no
        # neighbour draws no segment, so it gets a dot of its own
        (self.official,) = ax.plot(
            [], [], color=OFFICIAL_COLOUR, drawstyle="steps-post", gid="official"
        )
        (self.line,) = ax.plot([], [], linewidth=1.5, solid_joinstyle="round", gid="rate")
        (self.alone,) = ax.plot([], [], "o", markersize=2.5, gid="isolated")
        (self.last,) = ax.plot([], [], "o", markersize=5, gid="last")
        self.label: Annotation | None = None
        self.legend: Legend | None = None
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
        colour = currency_colour(chart.base)
        unit = unit_word(chart.base)
        unit_label = axis_label(chart.base, chart.quote, chart.display)
        total_days = (chart.until - chart.since).days + 1
        shown = "shown as 1/rate" if chart.display == "per_usd" else "shown as printed"
        footer_lines = self.footer.show(
            f"{source_text(chart.source_label)}, printed as US dollars per {unit} "
            f"({chart.decimals} decimals); {shown}.",
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
        official_y = np.array(chart.official_values, dtype=float)
        self.official.set_data(_date_numbers(chart.official_dates), official_y)
        # Where the printed rate is coarse the official line is the one to read: drawn
        # over the steps, which fade; elsewhere it is a thin line under the ticker's.
        read_official = chart.coarse and chart.has_official
        self.official.set_linewidth(1.3 if read_official else 0.8)
        self.official.set_zorder(2.5 if read_official else 1.9)
        self.line.set_alpha(0.55 if read_official else None)
        finite = np.isfinite(y)
        alone = np.zeros_like(finite)
        if not chart.coarse and len(y) > 1:  # steps draw a lone day as a one-day step
            alone = finite & ~np.r_[False, finite[:-1]] & ~np.r_[finite[1:], False]
        self.alone.set_data(x[alone], y[alone])
        self.alone.set_color(colour)
        ax.set_ylabel(unit_label, fontsize=10)

        # the last value, marked, and labelled in a band kept free of data above the line
        drawn = np.concatenate([y[finite], official_y[np.isfinite(official_y)]])
        lo, hi = (float(drawn.min()), float(drawn.max())) if len(drawn) else (0.0, 0.0)
        if hi > lo:
            span = hi - lo
            ax.set_ylim(lo - 0.08 * span, hi + 0.34 * span)
        else:  # a flat line sits in the middle, with the same band above it
            printed_step = 10.0**-chart.decimals  # the rate's last printed digit
            floor = 3 * printed_step if chart.display == "usd_per_unit" else 1e-6
            span = max(abs(hi) * 0.01, floor)
            ax.set_ylim(lo - span, hi + span)
        last_x = float(_date_numbers([chart.last.date])[0])
        self.last.set_data([last_x], [chart.last_value])
        self.last.set_color(colour)
        if chart.display == "per_usd":
            text = (
                f"{fmt_value(chart.last_value)} {unit_label} on {day_text(chart.last.date)}\n"
                f"(printed {chart.last.rate} US dollars per {unit})"
            )
        else:
            text = f"{chart.last.rate} {unit_label}\non {day_text(chart.last.date)}"
        if chart.has_official and chart.official_last is not None:
            published = chart.official_last
            text += (
                f"\nofficial: {published.rate} {unit_word(chart.base)} per US dollar"
                f" ({day_text(published.date)})"
            )
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
        if self.legend is not None:
            self.legend.remove()
            self.legend = None
        if chart.has_official:
            from matplotlib.lines import Line2D

            self.legend = ax.legend(
                handles=[
                    Line2D([], [], color=colour, linewidth=1.5, label=chart.source_label),
                    Line2D(
                        [],
                        [],
                        color=OFFICIAL_COLOUR,
                        linewidth=1.3 if read_official else 0.8,
                        label=f"Official rate: {chart.official_label}, via Frankfurter",
                    ),
                ],
                loc="upper left" if on_right else "upper right",
                fontsize=8,
                frameon=False,
                borderaxespad=0.3,
                handlelength=1.6,
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

        self.title.set_text(f"{chart.pair}  {currency_name(chart.base)}")
        self.subtitle.set_text(
            f"{unit_label[0].upper()}{unit_label[1:]}, "
            f"{day_text(chart.since)} to {day_text(chart.until)}"
        )
        self.note.set_visible(chart.coarse)
        if chart.coarse:
            digits = significant_digits(chart.coarse_text)
            self.note.set_text(
                f"Coarse: the source prints {chart.decimals} decimals ({chart.coarse_text} US "
                f"dollars per {unit}, {digits} significant digit{'s' if digits != 1 else ''}), "
                "so the values move in steps."
                + (
                    "\nThe official rate, the black line, is the one to read."
                    if read_official
                    else ""
                )
            )
        return self.fig


def build_pair_figure(chart: PairChart) -> Figure:
    """The Figure of one pair's chart (rate above, daily change bars below), not saved."""
    return PairFigure().show(chart)


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
            + ", ".join(f"{line.base} {day_text(line.first)}" for line in late)
            + "."
        )
    coarse = [line.base for line in chart.lines if line.coarse]
    if coarse:
        places = max(line.decimals for line in chart.lines if line.coarse)
        notes.append(
            f"{', '.join(coarse)}: printed to {places} decimals, so the values are coarse (steps)."
        )
    fig = _new_figure()
    footer_lines = _Footer(fig).show(" ".join(notes), f"{source_text(chart.source_label)}.")
    right = 0.89
    bottom = 0.075 + _FOOTER_STEP * footer_lines
    ax = fig.add_axes((_LEFT, bottom, right - _LEFT, 0.82 - bottom))
    for line in chart.lines:
        x = _date_numbers(line.dates)
        y = np.array(line.values, dtype=float)
        ax.plot(
            x,
            y,
            color=currency_colour(line.base),
            linewidth=1.4,
            drawstyle="steps-post" if line.coarse else "default",
            gid=f"index-{line.pair}",
            zorder=1.9 if line.coarse else 2.0,  # coarse steps beneath the finer lines
            label=f"{line.pair}  {currency_name(line.base)}",
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
        ax.plot([x_end], [y_end], "o", color=currency_colour(line.base), markersize=4)
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
            color=currency_colour(line.base),
            weight="bold",
            va="center",
            ha="left",
            annotation_clip=False,
            gid=f"end-{line.pair}",
        )
    handles = [
        Line2D(
            [],
            [],
            color=currency_colour(line.base),
            linewidth=2.5,
            label=f"{line.pair} {currency_name(line.base)}",
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
        f"each rebased to 100 at its first day, {day_text(chart.since)} to {day_text(chart.until)}",
        fontsize=10.5,
        color="#333333",
        va="top",
    )
    return fig
