"""Charts job: each pair's daily series and an overview, drawn as PNG files.

    data.py    what each chart draws (values, gaps, steps, fingerprints), no matplotlib
    labels.py  currencies' names, units and colours; dates and values in words
    draw.py    the matplotlib figures
    files.py   the PNG files, rewritten only when their data changed

matplotlib is imported only when a chart is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ticker.config import IN_FORCE_DAYS, REFERENCE, Config, official_pair
from ticker.errors import UsageError
from ticker.models import Day
from ticker.store import Store, read

if TYPE_CHECKING:
    from ticker.charts.files import ChartReport


@dataclass(frozen=True)
class ChartRun:
    """What `draw_charts` did, and the window it drew."""

    since: date | None
    until: date | None
    report: ChartReport | None  # None when the store holds no data for the source


def draw_charts(
    config: Config,
    *,
    now: datetime,
    since: date | None = None,
    until: date | None = None,
    pairs: Sequence[str] | None = None,
    everything: bool = False,
    out_dir: Path | None = None,
    source_name: str | None = None,
) -> ChartRun:
    """Draw each pair and the overview for the window: the last [charts] window_days of
    data (ending at the newest date stored, or `until`), or all of it with `everything`."""
    from ticker.charts.files import write_charts

    source = config.source(source_name)
    if source.name == REFERENCE:
        raise UsageError(
            "the official rates are drawn on the charts of the ticker's pairs, under the "
            "ticker's line; give a [[sources]] name, or none"
        )
    wanted = tuple(pairs) if pairs else source.pairs
    with Store.open(config.store_path, config.lock_timeout, read_only=True) as store:
        first, last = read.date_span(store, source.name)
        if first is None or last is None:
            return ChartRun(since, until, None)
        today = now.astimezone(source.tz).date()  # the source's day, not UTC's
        end = until or min(last, today)
        # The window never starts before the first stored day: a store younger than
        # window_days is drawn from its first day, not from an empty stretch before it.
        # (Counted in ordinals: a window reaching before 1 January of year 1 starts there.)
        window_start = date.fromordinal(max(end.toordinal() - config.charts.window_days + 1, 1))
        start = since or (first if everything or first > window_start else window_start)
        if start > end:
            began = "--since" if since else "the first stored day"
            ended = "--until" if until else ("today" if last > today else "the newest stored day")
            raise UsageError(
                f"nothing to draw: the window would start on {start} ({began}), after it "
                f"ends on {end} ({ended}); data is stored from {first} to {last}"
            )
        if end < first or start > last:
            raise UsageError(
                f"nothing to draw: no data between {start} and {end}; data is stored from "
                f"{first} to {last}"
            )
        series = read.series(store, source.name, wanted, start, end)
        officials = _officials(store, source.name, wanted, start, end)
    report = write_charts(
        series,
        out_dir or config.charts.dir,
        display=config.charts.display,
        since=start,
        until=end,
        source_label=source.label,
        officials=officials,
    )
    return ChartRun(start, end, report)


def _officials(
    store: Store, source: str, pairs: Sequence[str], since: date, until: date
) -> dict[str, tuple[Day, ...]]:
    """The official rates of each pair's currency in the window (from a week before its
    start: the rate in force on its first day), by the pair."""
    if source == REFERENCE:
        return {}
    wanted = {p: o for p in pairs if (o := official_pair(p)) is not None}
    if not wanted:
        return {}
    start = date.fromordinal(max(since.toordinal() - IN_FORCE_DAYS, 1))
    found = {
        s.pair: s.days for s in read.series(store, REFERENCE, list(wanted.values()), start, until)
    }
    return {p: found[o] for p, o in wanted.items() if found.get(o)}
