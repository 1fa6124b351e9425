"""Check stage: data-quality findings over the stored series.

`snapshot` reads what the checks need from the store in one go; everything else here is
a pure function of that snapshot, the configured sources and `now`.

Printed numbers are intervals, not points: a rate printed with d decimals stands for
[r - 0.5*10^-d, r + 0.5*10^-d], and the day's change is rounded to 2 decimals with
trailing zeros dropped ("0.8" is 0.80, "-0" a fall too small to show). Every comparison
here allows exactly what the printed digits allow, computed with exact fractions.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from ticker.config import IN_FORCE_DAYS, REFERENCE, REFERENCE_SLACK, official_pair
from ticker.models import Day, bounded_detail, shorten
from ticker.store import Store, read
from ticker.store.read import BadPage, Revision

if TYPE_CHECKING:
    from ticker.config import Config, Source

# The site rounds the day's change to this many decimals and drops trailing zeros.
CHANGE_DECIMALS = 2
# A change that misses the rates' interval by at most this many percentage points is
# a rounding quirk (warning), beyond it a contradiction (error).
MARGINAL_POINTS = Fraction(1, 100)
# Jumps: a day's move counts as one when it is beyond every one of these.
JUMP_SIGMAS = 8.0  # robust standard deviations (1.4826 * median absolute deviation)
JUMP_MIN_LOG = 0.02  # about 2 %: smaller daily moves are never called jumps
JUMP_MIN_STEPS = 2.0  # printed units of the rate: a coarse rate moves a unit by rounding
JUMP_MIN_MOVES = 20  # fewer moves than this say too little about what is usual
MAD_TO_SIGMA = 1.4826
UTC_ZONE = ZoneInfo("UTC")  # for a stored source no longer in the config


class Level(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


LEVEL_ORDER = {Level.ERROR: 0, Level.WARNING: 1, Level.INFO: 2}
# Kinds in report order, with the one-line explanation printed above their findings.
KINDS: dict[str, str] = {
    "change_mismatch": "printed change does not match the stored rates of the day before",
    "reference_mismatch": "ticker values no reading of their digits brings near the official rate",
    "future_date": "dates after today: a misprinted date line or a wrong --date",
    "jump": "moves far outside the pair's usual daily moves",
    "revision": "dates whose values changed between captures",
    "inconsistent_page": "pages whose ticker copies disagree (their quotes were not stored)",
    "stale_source": "sources whose newest observation is older than [status] stale_after",
    "no_data": "configured sources with nothing stored",
    "gap": "missing days inside a series",
    "pair_disappeared": "pairs that stop before the rest of their source",
    "pair_missing": "configured pairs never stored",
    "pair_appeared": "pairs that start after the rest of their source",
    "pair_unconfigured": "stored pairs no longer in the config",
}


# --- what is read from the store ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    days: tuple[Day, ...] = ()
    revisions: tuple[Revision, ...] = ()
    bad_pages: tuple[BadPage, ...] = ()
    # (source, pair, date) -> the page the daily series' values of that day came from,
    # for the days after Snapshot's `after` date (the candidates for future_date)
    origins: Mapping[tuple[str, str, date], str] = field(default_factory=dict)


def snapshot(
    store: Store, after: date | None = None, days: Sequence[Day] | None = None
) -> Snapshot:
    """Everything the checks read, fetched whole (DuckDB 2 wants every result finished);
    with `after`, also the origins of the days after that date. `days`: the daily series
    when the caller has read it already."""
    return Snapshot(
        days=tuple(read.daily(store) if days is None else days),
        revisions=tuple(read.revisions(store)),
        bad_pages=tuple(read.inconsistent_pages(store)),
        origins=read.day_origins(store, after) if after is not None else {},
    )


# --- findings -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    level: Level
    source: str
    pair: str | None
    date: date | None
    message: str
    score: float = 0.0  # how bad, to put the worst first within a kind
    data: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "level": self.level.value,
            "source": self.source,
            "pair": self.pair,
            "date": self.date.isoformat() if self.date else None,
            "message": self.message,
            **self.data,
        }


@dataclass(frozen=True, slots=True)
class Comparison:
    """A ticker pair against the official rates over the days both have: the median
    deviation, and how close it comes to the official rate of the same day, the day
    before and two days before (a lagging ticker shows yesterday's rate)."""

    source: str
    pair: str
    official_pair: str
    days: int  # days compared (with an official rate in force)
    median_deviation_pct: float
    median_off_pct: tuple[float | None, float | None, float | None]  # by lag 0, 1, 2 days
    lag_days: int | None  # the lag that fits clearly best; None: too few days to say

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "pair": self.pair,
            "official_pair": self.official_pair,
            "days_compared": self.days,
            "median_deviation_pct": round(self.median_deviation_pct, 4),
            "median_abs_deviation_pct_by_lag": [
                None if v is None else round(v, 4) for v in self.median_off_pct
            ],
            "lag_days": self.lag_days,
        }


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]
    checked: Mapping[str, int]
    now: datetime
    comparisons: tuple[Comparison, ...] = ()  # the ticker against the official rates
    tolerance_pct: float = 1.0

    @property
    def exit_code(self) -> int:
        return 1 if any(f.level is Level.ERROR for f in self.findings) else 0

    def by_level(self) -> dict[str, int]:
        counts = {level.value: 0 for level in Level}
        for f in self.findings:
            counts[f.level.value] += 1
        return counts

    def by_kind(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for f in self.findings:
            per = counts.setdefault(f.kind, {})
            per[f.level.value] = per.get(f.level.value, 0) + 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        out = {
            "now": self.now.isoformat(),
            "levels": self.by_level(),
            "kinds": self.by_kind(),
            "checked": dict(self.checked),
            "findings": [f.as_dict() for f in self.findings],
        }
        if self.comparisons:
            out["reference"] = {
                "tolerance_pct": self.tolerance_pct,
                "pairs": [c.as_dict() for c in self.comparisons],
            }
        return out


def check(
    snap: Snapshot,
    sources: Sequence[Source],
    stale_after: float,
    now: datetime,
    *,
    tolerance_pct: float = 1.0,
) -> Report:
    """Run every check; findings sorted by level, kind, then worst first. Official rates
    (source `reference`) are compared with the tickers and checked for revisions,
    future dates and staleness; the checks of a ticker's own series leave them out."""
    series = _series(snap.days)
    ticker = {k: v for k, v in series.items() if k[0] != REFERENCE}
    checked: dict[str, int] = {
        "sources": len({d.source for d in snap.days}),
        "pairs": len(series),
        "days": len(snap.days),  # daily values: a day of a pair of a source
    }
    findings: list[Finding] = []
    findings += check_changes(ticker, checked)
    findings += check_future(series, sources, now, snap.origins)
    findings += check_jumps(ticker, checked)
    findings += check_revisions(snap.revisions)
    findings += check_bad_pages(snap.bad_pages)
    findings += check_stale(series, sources, stale_after, now)
    findings += check_gaps(ticker)
    findings += check_pairs(ticker, sources)
    comparisons: list[Comparison] = []
    if len(ticker) < len(series):
        found, comparisons = check_reference(series, tolerance_pct, checked)
        findings += found
    kind_order = {k: i for i, k in enumerate(KINDS)}
    findings.sort(
        key=lambda f: (
            LEVEL_ORDER[f.level],
            kind_order.get(f.kind, len(kind_order)),
            -f.score,
            f.source,
            f.pair or "",
            f.date or date.min,
        )
    )
    return Report(tuple(findings), checked, now, tuple(comparisons), tolerance_pct)


def _series(days: Iterable[Day]) -> dict[tuple[str, str], list[Day]]:
    out: dict[tuple[str, str], list[Day]] = defaultdict(list)
    for d in days:
        out[(d.source, d.pair)].append(d)
    for points in out.values():
        points.sort(key=lambda d: d.date)
    return dict(out)


# --- what a printed number stands for -----------------------------------------------------


def decimals(text: str) -> int:
    """Digits after the decimal point of a printed number: "0.00199" -> 5, "-0" -> 0."""
    _, _, frac = text.partition(".")
    return len(frac)


@lru_cache(maxsize=65536)
def rate_interval(text: str) -> tuple[Fraction, Fraction]:
    """The values a printed rate stands for: 0.00199 -> [0.001985, 0.001995]."""
    value = Fraction(text)
    half = Fraction(1, 2 * 10 ** decimals(text))
    return value - half, value + half


@lru_cache(maxsize=65536)
def change_interval(text: str, site_decimals: int = CHANGE_DECIMALS) -> tuple[Fraction, Fraction]:
    """The changes (percent) a printed change stands for.

    The site rounds to `site_decimals` and drops trailing zeros, so "0.8" stands for
    [0.795, 0.805]; "0" for [0, 0.005] and "-0" for a fall too small to show, [-0.005, 0].
    """
    half = Fraction(1, 2 * 10 ** max(decimals(text), site_decimals))
    value = Fraction(text)
    if value == 0:
        return (-half, Fraction(0)) if text.strip().startswith("-") else (Fraction(0), half)
    return value - half, value + half


def implied_change(prev_rate: str, rate: str) -> tuple[Fraction, Fraction]:
    """The day's change in percent that two printed rates allow, lowest to highest."""
    lo0, hi0 = rate_interval(prev_rate)
    lo1, hi1 = rate_interval(rate)
    if lo0 <= 0:  # a rate printed as 0.00000 allows any change
        return Fraction(-100), Fraction(10**9)
    return (lo1 / hi0 - 1) * 100, (hi1 / lo0 - 1) * 100


def change_miss(prev_rate: str, rate: str, change: str) -> Fraction:
    """How many percentage points the printed change misses what the rates allow (0: fits)."""
    if _clearly_fits(prev_rate, rate, change):
        return Fraction(0)
    lo, hi = implied_change(prev_rate, rate)
    clo, chi = change_interval(change)
    return max(lo - chi, clo - hi, Fraction(0))


def _clearly_fits(prev_rate: str, rate: str, change: str) -> bool:
    """The common case in floats: the printed change is well inside what the rates
    allow (by more than float error), so the exact fractions need not be worked out."""
    r0, r1, c = float(prev_rate), float(rate), float(change)
    h0, h1 = 0.5 * 10.0 ** -decimals(prev_rate), 0.5 * 10.0 ** -decimals(rate)
    if r0 - h0 <= 0:
        return False
    lo, hi = ((r1 - h1) / (r0 + h0) - 1) * 100, ((r1 + h1) / (r0 - h0) - 1) * 100
    margin = 1e-9 * (1 + abs(lo) + abs(hi))
    return lo + margin < c < hi - margin


def _pct(value: Fraction | float) -> str:
    return f"{float(value):+.3f}%"


# --- the checks ---------------------------------------------------------------------------


def check_changes(
    series: Mapping[tuple[str, str], Sequence[Day]], checked: dict[str, int] | None = None
) -> list[Finding]:
    """Each day's printed change against the change between its rate and the day before's.

    Only days whose previous calendar day is stored can be checked. A day that repeats
    the day before exactly (rate and change: the site did not update, as on weekends)
    is not a new reading and is skipped.
    """
    out: list[Finding] = []
    n_checked = n_repeat = n_unchecked = 0
    for (source, pair), days in series.items():
        for prev, day in zip(days, days[1:], strict=False):
            if (day.date - prev.date).days != 1:
                n_unchecked += 1
                continue
            if day.change is None:  # a source that publishes no change (a reference rate)
                continue
            if (day.rate, day.change) == (prev.rate, prev.change):
                n_repeat += 1
                continue
            n_checked += 1
            miss = change_miss(prev.rate, day.rate, day.change)
            if miss == 0:
                continue
            lo, hi = implied_change(prev.rate, day.rate)
            level = Level.WARNING if miss <= MARGINAL_POINTS else Level.ERROR
            out.append(
                Finding(
                    "change_mismatch",
                    level,
                    source,
                    pair,
                    day.date,
                    f"{source} {pair} {day.date}: printed change {day.change}% but the rates "
                    f"{prev.rate} ({prev.date}) -> {day.rate} allow {_pct(lo)} to {_pct(hi)}; "
                    f"off by {float(miss):.3f} points",
                    float(miss),
                    {
                        "previous_date": prev.date.isoformat(),
                        "previous_rate": prev.rate,
                        "rate": day.rate,
                        "change_pct": day.change,
                        "allowed_low": round(float(lo), 6),
                        "allowed_high": round(float(hi), 6),
                        "off_by_points": round(float(miss), 6),
                    },
                )
            )
    if checked is not None:
        checked["changes_checked"] = n_checked
        checked["changes_repeated_day"] = n_repeat
        checked["changes_without_previous_day"] = n_unchecked
    return out


# --- the ticker against the official rates ------------------------------------------------

MIN_LAG_DAYS = 10  # fewer compared days than this say nothing about a lag
LAG_MARGIN = 0.8  # a lag fits clearly better when it is off by at most this share as much


@dataclass(frozen=True, slots=True)
class _Official:
    """A pair's official rates: their dates and values in the ticker's direction."""

    dates: list[date]
    days: list[Day]
    values: list[float]  # the ticker's direction (1 / rate for KZT/USD)
    invert: bool


def _officials(days: Sequence[Day], invert: bool) -> _Official:
    values = [(1 / v if invert else v) if (v := float(d.rate)) > 0 else math.nan for d in days]
    return _Official([d.date for d in days], list(days), values, invert)


def _in_force(off: _Official, day: date) -> int | None:
    """The index of the official rate in force on `day` (published at most
    IN_FORCE_DAYS before it), or None."""
    i = bisect.bisect_right(off.dates, day) - 1
    if i < 0 or (day - off.dates[i]).days >= IN_FORCE_DAYS or not off.values[i] > 0:
        return None
    return i


def _exact(off: _Official, i: int) -> Fraction:
    value = Fraction(off.days[i].rate)
    return 1 / value if off.invert else value


def _within(rate: str, off: _Official, i: int, tol: float) -> bool:
    """Whether some reading of the printed `rate` is within `tol` (a fraction) of the
    official rate `i`: the printed range and the tolerance band around it meet."""
    value = off.values[i]
    half = 0.5 * 10.0 ** -decimals(rate)
    r = float(rate)
    lo, hi = value * (1 - tol), value * (1 + tol)
    margin = 1e-9 * value
    if r - half > hi + margin or r + half < lo - margin:
        return False
    if r - half < hi - margin and r + half > lo + margin:
        return True
    exact = _exact(off, i)  # on the edge: the exact fractions decide
    plo, phi = rate_interval(rate)
    t = Fraction(tol)
    return plo <= exact * (1 + t) and phi >= exact * (1 - t)


def check_reference(
    series: Mapping[tuple[str, str], Sequence[Day]],
    tolerance_pct: float,
    checked: dict[str, int] | None = None,
) -> tuple[list[Finding], list[Comparison]]:
    """Each ticker value against the official rate in force on its date.

    reference_mismatch: no reading of the printed digits comes within tolerance_pct of
    the official rate (a warning when the official rate of one or two days before is
    within reach: the ticker lags; an error otherwise). Per pair, the median deviation
    and the median distance to the official rate of the same day, the day before and two
    days before: a lagging ticker is closest to an earlier one."""
    tol = tolerance_pct / 100
    out: list[Finding] = []
    comparisons: list[Comparison] = []
    compared = 0
    for (source, pair), days in series.items():
        if source == REFERENCE:
            continue
        op = official_pair(pair)
        published = series.get((REFERENCE, op)) if op else None
        if not published:
            continue
        assert op is not None
        off = _officials(published, invert=not pair.startswith("USD/"))
        deviations: list[float] = []
        by_lag: list[list[float]] = [[], [], []]
        for day in days:
            i = _in_force(off, day.date)
            if i is None:
                continue
            r = float(day.rate)
            value = off.values[i]
            deviation = r / value - 1
            deviations.append(deviation)
            earlier = [_in_force(off, day.date - timedelta(days=k)) for k in (1, 2)]
            if all(j is not None for j in earlier):
                by_lag[0].append(abs(deviation))
                for k, j in enumerate(earlier, 1):
                    assert j is not None
                    by_lag[k].append(abs(r / off.values[j] - 1))
            if _within(day.rate, off, i, tol):
                continue
            out.append(_mismatch(source, pair, day, off, i, earlier, deviation, tolerance_pct))
        if not deviations:
            continue
        compared += len(deviations)
        medians = tuple(statistics.median(v) * 100 if v else None for v in by_lag)
        comparisons.append(
            Comparison(
                source,
                pair,
                op,
                len(deviations),
                statistics.median(deviations) * 100,
                (medians[0], medians[1], medians[2]),
                _lag(medians, len(by_lag[0])),
            )
        )
    if checked is not None:
        checked["official_rates_compared"] = compared
    return out, comparisons


def _lag(medians: tuple[float | None, ...], n: int) -> int | None:
    """0 when the ticker is closest to the official rate of its own day, 1 or 2 when it
    is clearly closer to the one of a day or two before; None on too few days."""
    if n < MIN_LAG_DAYS or medians[0] is None:
        return None
    best = min(range(3), key=lambda k: (medians[k] if medians[k] is not None else math.inf, k))
    same = medians[0]
    if best and (medians[best] or 0.0) < LAG_MARGIN * same:
        return best
    return 0


def _mismatch(
    source: str,
    pair: str,
    day: Day,
    off: _Official,
    i: int,
    earlier: Sequence[int | None],
    deviation: float,
    tolerance_pct: float,
) -> Finding:
    tol = tolerance_pct / 100
    published = off.days[i]
    lag = next(
        (
            (k, j)
            for k, j in enumerate(earlier, 1)
            if j is not None and j != i and _within(day.rate, off, j, tol)
        ),
        None,
    )
    by = f", {published.publisher}" if published.publisher else ""
    official = _official_text(off.values[i])
    lo, hi = rate_interval(day.rate)
    message = (
        f"{source} {pair} {day.date}: printed {day.rate} ({float(lo):.10g} to {float(hi):.10g}) "
        f"but the official rate in force was {official} ({published.pair} {published.rate} "
        f"of {published.date}{by}): {deviation * 100:+.2f}%, beyond [reference] tolerance_pct "
        f"= {tolerance_pct:g}%"
    )
    if lag is not None:
        lagged = off.days[lag[1]]
        message += (
            f"; it matches the official rate of {lagged.date} ({lagged.rate}), "
            f"{lag[0]} day{'s' if lag[0] > 1 else ''} before: the ticker lags"
        )
    return Finding(
        "reference_mismatch",
        Level.WARNING if lag is not None else Level.ERROR,
        source,
        pair,
        day.date,
        message,
        abs(deviation) * 100,
        {
            "rate": day.rate,
            "official_pair": published.pair,
            "official_rate": published.rate,
            "official_date": published.date.isoformat(),
            "official_publisher": published.publisher,
            "official_in_ticker_direction": official,
            "deviation_pct": round(deviation * 100, 6),
            "tolerance_pct": tolerance_pct,
            "matches_days_before": lag[0] if lag is not None else None,
        },
    )


def _official_text(value: float) -> str:
    """An official rate turned to the ticker's direction, to 6 significant digits."""
    return f"{value:.6g}" if 1e-4 <= abs(value) < 1e9 else f"{value:.6f}".rstrip("0")


def _min_log_move(prev_rate: str, rate: str) -> float:
    """The smallest log move two printed rates allow (0 when their intervals touch)."""
    lo0, hi0 = rate_interval(prev_rate)
    lo1, hi1 = rate_interval(rate)
    if lo1 > hi0:
        return math.log(lo1 / hi0)
    if hi1 < lo0 and hi1 > 0:
        return math.log(hi1 / lo0)
    return 0.0


def check_jumps(
    series: Mapping[tuple[str, str], Sequence[Day]], checked: dict[str, int] | None = None
) -> list[Finding]:
    """Moves far outside the pair's usual daily moves.

    Usual: the median and the median absolute deviation (MAD) of the pair's daily log
    moves between printed rates (a move over a gap of g days is scaled by 1/sqrt(g)). A
    jump is beyond JUMP_SIGMAS robust sigmas, beyond JUMP_MIN_STEPS printed units of the
    rate, and beyond JUMP_MIN_LOG, and it stays so at the most favourable reading of the
    printed digits.
    """
    out: list[Finding] = []
    n_pairs = 0
    for (source, pair), days in series.items():
        moves: list[tuple[Day, Day, float, float, float]] = []
        for prev, day in zip(days, days[1:], strict=False):
            r0, r1 = float(prev.rate), float(day.rate)
            if r0 <= 0 or r1 <= 0:
                continue
            root = math.sqrt((day.date - prev.date).days)
            step = 10.0 ** -decimals(day.rate) / r1
            moves.append(
                (
                    prev,
                    day,
                    math.log(r1 / r0) / root,
                    _min_log_move(prev.rate, day.rate) / root,
                    step,
                )
            )
        if len(moves) < JUMP_MIN_MOVES:
            continue
        n_pairs += 1
        ys = [m[2] for m in moves]
        med = statistics.median(ys)
        sigma = MAD_TO_SIGMA * statistics.median(abs(y - med) for y in ys)
        step = statistics.median(m[4] for m in moves)
        threshold = max(JUMP_SIGMAS * sigma, JUMP_MIN_STEPS * step, JUMP_MIN_LOG)
        for prev, day, y, y_min, _ in moves:
            # y_min is the move at the most favourable reading of the printed digits
            if abs(y - med) <= threshold or abs(y_min - med) <= threshold:
                continue
            move = (float(day.rate) / float(prev.rate) - 1) * 100
            if day.change is None:
                agree = "the source publishes no change to compare"
            elif (day.date - prev.date).days != 1:
                agree = f"the printed change {day.change}% is of a day not stored"
            elif change_miss(prev.rate, day.rate, day.change) == 0:
                agree = f"the printed change {day.change}% agrees: a real move"
            else:
                agree = f"the printed change {day.change}% does not: likely a bad value"
            usual = sigma if sigma > 0 else step
            out.append(
                Finding(
                    "jump",
                    Level.WARNING,
                    source,
                    pair,
                    day.date,
                    f"{source} {pair} {day.date}: {prev.rate} ({prev.date}) -> {day.rate}, "
                    f"{move:+.1f}%, {abs(y - med) / max(usual, 1e-12):.0f}x the usual daily "
                    f"move ({usual * 100:.2f}%); {agree}",
                    abs(y - med) / threshold,
                    {
                        "previous_date": prev.date.isoformat(),
                        "previous_rate": prev.rate,
                        "rate": day.rate,
                        "change_pct": day.change,
                        "move_pct": round(move, 4),
                        "usual_move_pct": round(usual * 100, 4),
                        "threshold_pct": round(math.expm1(threshold) * 100, 4),
                    },
                )
            )
    if checked is not None:
        checked["pairs_checked_for_jumps"] = n_pairs
    return out


def check_revisions(revisions: Iterable[Revision]) -> list[Finding]:
    """One finding per (source, pair, date) stored with more than one set of values."""
    groups: dict[tuple[str, str, date], list[Revision]] = defaultdict(list)
    for r in revisions:
        groups[(r.source, r.pair, r.date)].append(r)
    out = []
    for (source, pair, day), revs in groups.items():
        revs.sort(key=lambda r: r.revision)
        rates = [float(r.rate) for r in revs]
        spread = (max(rates) / min(rates) - 1) * 100 if min(rates) > 0 else math.inf
        shown = "; ".join(f"#{r.revision} {_version(r)} from {r.origin}" for r in revs)
        out.append(
            Finding(
                "revision",
                Level.WARNING,
                source,
                pair,
                day,
                f"{source} {pair} {day}: {len(revs)} versions, rates {spread:.2f}% apart: {shown}",
                spread,
                {
                    "versions": [
                        {
                            "revision": r.revision,
                            "rate": r.rate,
                            "change_pct": r.change,
                            "origin": r.origin,
                        }
                        for r in revs
                    ],
                    "rate_spread_pct": round(spread, 4),
                },
            )
        )
    return out


def _version(r: Revision) -> str:
    """A stored version as printed (rate and change) or as published (rate and bank)."""
    if r.change is not None:
        return f"{r.rate} {r.change}%"
    return f"{r.rate} ({r.publisher})" if r.publisher else r.rate


def check_bad_pages(pages: Iterable[BadPage]) -> list[Finding]:
    out = []
    for p in pages:
        # Stored details come from pages (older versions stored them whole): shortened.
        lines = p.detail.splitlines()
        disagree = [line for line in lines if "disagree" in line]
        when = p.header_date.isoformat() if p.header_date else (p.captured_at or "undated")
        what = "; ".join(disagree) or "; ".join(lines) or "copies disagree"
        detail = bounded_detail(lines) or ""
        out.append(
            Finding(
                "inconsistent_page",
                Level.WARNING,
                p.source,
                None,
                p.header_date,
                f"{p.origin} ({when}): {shorten(what)}",
                float(len(disagree)),
                {"origin": p.origin, "captured_at": p.captured_at, "detail": detail},
            )
        )
    return out


def check_future(
    series: Mapping[tuple[str, str], Sequence[Day]],
    sources: Sequence[Source],
    now: datetime,
    origins: Mapping[tuple[str, str, date], str] | None = None,
) -> list[Finding]:
    """Dates after today in the source's time zone (a day of slack: the site's "today"
    may run ahead of the configured zone). Nothing can be quoted for them yet: a date
    line misprinted (or misread) or a wrong --date put quotes there, and they blind
    `ticker status`, whose newest observation then never ages."""
    zones = {s.name: s.tz for s in sources}
    found: dict[tuple[str, date], list[str]] = defaultdict(list)
    for (source, pair), days in series.items():
        today = now.astimezone(zones.get(source, UTC_ZONE)).date()
        for d in reversed(days):
            if d.date <= today + timedelta(days=1):
                break
            found[(source, d.date)].append(pair)
    out = []
    for (source, day), pairs in found.items():
        zone = zones.get(source, UTC_ZONE)
        today = now.astimezone(zone).date()
        pages = sorted({o for p in pairs if (o := (origins or {}).get((source, p, day)))})
        came = f"; from {', '.join(pages[:3])}" if pages else ""
        more = f" and {len(pages) - 3} more" if len(pages) > 3 else ""
        pairs.sort()
        out.append(
            Finding(
                "future_date",
                Level.ERROR,
                source,
                pairs[0] if len(pairs) == 1 else None,
                day,
                shorten(
                    f"{source} {day}: {', '.join(pairs)} stored for a date after today "
                    f"({today}, {zone.key}): a misprinted date line or a wrong --date{came}{more}"
                ),
                float((day - today).days),
                {"pairs": pairs, "today": today.isoformat(), "origins": pages},
            )
        )
    return out


def day_start(day: date, tz: ZoneInfo) -> datetime:
    """Midnight at the start of `day` in the source's time zone, as `ticker status` counts."""
    return datetime.combine(day, time(), tzinfo=tz)


def check_stale(
    series: Mapping[tuple[str, str], Sequence[Day]],
    sources: Sequence[Source],
    stale_after: float,
    now: datetime,
) -> list[Finding]:
    """Configured sources whose newest observation is older than stale_after (or absent).

    The age of a quote dated D is counted from the start of D in the source's time zone,
    as `ticker status` counts it.
    """
    newest: dict[str, date] = {}
    for (source, _pair), days in series.items():
        if days:
            newest[source] = max(newest.get(source, date.min), days[-1].date)
    out = []
    for src in sources:
        last = newest.get(src.name)
        if last is None:
            out.append(
                Finding(
                    "no_data",
                    Level.WARNING,
                    src.name,
                    None,
                    None,
                    f"{src.name}: nothing stored yet; run `ticker backfill PATH` or "
                    "`ticker scrape`",
                )
            )
            continue
        age = (now - day_start(last, src.tz)).total_seconds()
        limit = stale_after + (REFERENCE_SLACK if src.name == REFERENCE else 0.0)
        if age > limit:
            out.append(
                Finding(
                    "stale_source",
                    Level.WARNING,
                    src.name,
                    None,
                    last,
                    f"{src.name}: newest observation is of {last}, {_age(age)} old "
                    f"(stale after {_age(limit)}, [status] stale_after"
                    + (" and 4 days for weekends and holidays)" if limit > stale_after else ")"),
                    age,
                    {"age_seconds": round(age), "stale_after_seconds": round(limit)},
                )
            )
    return out


def _age(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    return f"{seconds / 3600:.1f} hours"


def _runs(missing: Sequence[date]) -> list[tuple[date, date]]:
    """Consecutive dates grouped into (first, last) runs."""
    runs: list[tuple[date, date]] = []
    for d in missing:
        if runs and (d - runs[-1][1]).days == 1:
            runs[-1] = (runs[-1][0], d)
        else:
            runs.append((d, d))
    return runs


def _span_text(first: date, last: date) -> str:
    n = (last - first).days + 1
    return f"{first}" if n == 1 else f"{first} to {last} ({n} days)"


def check_gaps(series: Mapping[tuple[str, str], Sequence[Day]]) -> list[Finding]:
    """Missing days. Days a whole source lacks are reported once for the source; the
    days one pair lacks while others of its source have data, once per pair."""
    by_source: dict[str, set[date]] = defaultdict(set)
    for (source, _pair), days in series.items():
        by_source[source].update(d.date for d in days)
    out: list[Finding] = []
    for source, dates in sorted(by_source.items()):
        ordered = sorted(dates)
        missing = [
            prev + timedelta(days=k)
            for prev, nxt in zip(ordered, ordered[1:], strict=False)
            for k in range(1, (nxt - prev).days)
        ]
        for first, last in _runs(missing):
            n = (last - first).days + 1
            out.append(
                Finding(
                    "gap",
                    Level.WARNING,
                    source,
                    None,
                    first,
                    f"{source}: no pair has data for {_span_text(first, last)}",
                    float(n),
                    {"first": first.isoformat(), "last": last.isoformat(), "days": n},
                )
            )
    for (source, pair), days in sorted(series.items()):
        have = {d.date for d in days}
        missing = [
            d.date + timedelta(days=k)
            for d, nxt in zip(days, days[1:], strict=False)
            for k in range(1, (nxt.date - d.date).days)
        ]
        missing = [m for m in missing if m in by_source[source] and m not in have]
        for first, last in _runs(missing):
            n = (last - first).days + 1
            out.append(
                Finding(
                    "gap",
                    Level.WARNING,
                    source,
                    pair,
                    first,
                    f"{source} {pair}: missing on {_span_text(first, last)} "
                    "while other pairs have data",
                    float(n),
                    {"first": first.isoformat(), "last": last.isoformat(), "days": n},
                )
            )
    return out


def check_pairs(
    series: Mapping[tuple[str, str], Sequence[Day]], sources: Sequence[Source]
) -> list[Finding]:
    """Pairs that start late, stop early, never appear, or are no longer configured."""
    spans: dict[str, tuple[date, date]] = {}
    for (source, _pair), days in series.items():
        if not days:
            continue
        lo, hi = spans.get(source, (date.max, date.min))
        spans[source] = (min(lo, days[0].date), max(hi, days[-1].date))
    configured = {s.name: s for s in sources}
    out: list[Finding] = []
    for (source, pair), days in sorted(series.items()):
        if not days:
            continue
        first, last = spans[source]
        src = configured.get(source)
        if src is not None and pair not in src.pairs:
            out.append(
                Finding(
                    "pair_unconfigured",
                    Level.INFO,
                    source,
                    pair,
                    days[-1].date,
                    f"{source} {pair}: stored ({days[0].date} to {days[-1].date}) but not in "
                    f"the pairs of [[sources]] {source!r}; add it there to chart and check it",
                )
            )
        if days[0].date > first:
            late = (days[0].date - first).days
            out.append(
                Finding(
                    "pair_appeared",
                    Level.INFO,
                    source,
                    pair,
                    days[0].date,
                    f"{source} {pair}: first seen on {days[0].date}, {late} days after the "
                    f"source's first day ({first})",
                    float(late),
                )
            )
        if days[-1].date < last:
            gone = (last - days[-1].date).days
            out.append(
                Finding(
                    "pair_disappeared",
                    Level.WARNING,
                    source,
                    pair,
                    days[-1].date,
                    f"{source} {pair}: last seen on {days[-1].date}, while {source} has data "
                    f"up to {last} ({gone} days later)",
                    float(gone),
                )
            )
    for src in sources:
        if src.name not in spans:
            continue  # reported as no_data
        for pair in src.pairs:
            if (src.name, pair) not in series:
                out.append(
                    Finding(
                        "pair_missing",
                        Level.WARNING,
                        src.name,
                        pair,
                        None,
                        f"{src.name} {pair}: configured but never stored, although "
                        f"{src.name} has data from {spans[src.name][0]} to {spans[src.name][1]}",
                    )
                )
    return out


# --- text output --------------------------------------------------------------------------


def _n(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def format_report(report: Report, limit: int = 10) -> list[str]:
    """The report as lines: a summary, then each kind with its worst `limit` cases."""
    levels = report.by_level()
    c = report.checked
    lines = [
        f"checked {_n(c.get('days', 0), 'daily value')} of {_n(c.get('pairs', 0), 'pair')} from "
        f"{_n(c.get('sources', 0), 'source')}; {c.get('changes_checked', 0)} printed changes "
        f"compared with the rates ({c.get('changes_without_previous_day', 0)} without the "
        f"day before, {c.get('changes_repeated_day', 0)} repeating it)",
        f"{_n(levels['error'], 'error')}, {_n(levels['warning'], 'warning')}, "
        f"{_n(levels['info'], 'note')}",
    ]
    if report.comparisons:
        lines.append("")
        lines.append(
            f"against the official rates ({c.get('official_rates_compared', 0)} days compared, "
            f"[reference] tolerance_pct = {report.tolerance_pct:g}% beyond the printed digits):"
        )
        lines += [f"  {comparison_text(x)}" for x in report.comparisons]
    groups: dict[tuple[Level, str], list[Finding]] = {}
    for f in report.findings:
        groups.setdefault((f.level, f.kind), []).append(f)
    for (level, kind), found in groups.items():
        lines.append("")
        lines.append(f"{level.value}: {kind} ({len(found)}): {KINDS.get(kind, kind)}")
        for f in found[:limit]:
            lines.append(f"  {f.message}")
        if len(found) > limit:
            lines.append(f"  ... and {len(found) - limit} more (--limit N or --json shows them)")
    return lines


_LAG_WORDS = ("the same day", "the day before", "two days before")


def comparison_text(x: Comparison) -> str:
    """One pair against the official rates, in words."""
    head = (
        f"{x.source} {x.pair}: {_n(x.days, 'day')} against {REFERENCE} {x.official_pair}, "
        f"median deviation {x.median_deviation_pct:+.2f}%"
    )
    off = x.median_off_pct
    if x.lag_days is None or off[0] is None:
        return head + "; too few days to tell a lag"
    others = ", ".join(
        f"{_LAG_WORDS[k]} {off[k]:.2f}%" for k in range(3) if k != x.lag_days and off[k] is not None
    )
    closest = f"{_LAG_WORDS[x.lag_days]} ({off[x.lag_days]:.2f}% off, median)"
    if x.lag_days:
        return (
            f"{head}; lags {_n(x.lag_days, 'day')}: closest to the official rate of {closest}, "
            f"against {others}"
        )
    return f"{head}; closest to the official rate of {closest}, against {others}"


def run_check(config: Config, now: datetime) -> Report:
    """Open the store read-only for the one read, then check what was read."""
    with Store.open(config.store_path, config.lock_timeout, read_only=True) as store:
        # every time zone's today + 1 is after yesterday in UTC
        snap = snapshot(store, after=now.astimezone(UTC_ZONE).date() - timedelta(days=1))
    return check_config(config, snap, now)


def check_config(config: Config, snap: Snapshot, now: datetime) -> Report:
    """`check` with what the config says: its sources (and the official rates once they
    are stored), stale_after and [reference] tolerance_pct."""
    sources = tuple(config.sources)
    if any(d.source == REFERENCE for d in snap.days):
        sources += (config.reference,)
    return check(snap, sources, config.stale_after, now, tolerance_pct=config.tolerance_pct)
