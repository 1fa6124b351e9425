"""Check stage: data-quality findings over the stored series.

`snapshot` reads what the checks need from the store in one go; everything else here is
a pure function of that snapshot, the configured sources and `now`.

Printed numbers are intervals, not points: a rate printed with d decimals stands for
[r - 0.5*10^-d, r + 0.5*10^-d], and the day's change is rounded to 2 decimals with
trailing zeros dropped ("0.8" is 0.80, "-0" a fall too small to show). Every comparison
here allows exactly what the printed digits allow, computed with exact fractions.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]
    checked: Mapping[str, int]
    now: datetime

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
        return {
            "now": self.now.isoformat(),
            "levels": self.by_level(),
            "kinds": self.by_kind(),
            "checked": dict(self.checked),
            "findings": [f.as_dict() for f in self.findings],
        }


def check(snap: Snapshot, sources: Sequence[Source], stale_after: float, now: datetime) -> Report:
    """Run every check; findings sorted by level, kind, then worst first."""
    series = _series(snap.days)
    checked: dict[str, int] = {
        "sources": len({d.source for d in snap.days}),
        "pairs": len(series),
        "days": len(snap.days),
    }
    findings: list[Finding] = []
    findings += check_changes(series, checked)
    findings += check_future(series, sources, now, snap.origins)
    findings += check_jumps(series, checked)
    findings += check_revisions(snap.revisions)
    findings += check_bad_pages(snap.bad_pages)
    findings += check_stale(series, sources, stale_after, now)
    findings += check_gaps(series)
    findings += check_pairs(series, sources)
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
    return Report(tuple(findings), checked, now)


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
        shown = "; ".join(f"#{r.revision} {r.rate} {r.change}% from {r.origin}" for r in revs)
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
        if age > stale_after:
            out.append(
                Finding(
                    "stale_source",
                    Level.WARNING,
                    src.name,
                    None,
                    last,
                    f"{src.name}: newest observation is of {last}, {_age(age)} old "
                    f"(stale after {_age(stale_after)}, [status] stale_after)",
                    age,
                    {"age_seconds": round(age), "stale_after_seconds": round(stale_after)},
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
        f"checked {_n(c.get('days', 0), 'day')} of {_n(c.get('pairs', 0), 'pair')} from "
        f"{_n(c.get('sources', 0), 'source')}; {c.get('changes_checked', 0)} printed changes "
        f"compared with the rates ({c.get('changes_without_previous_day', 0)} without the "
        f"day before, {c.get('changes_repeated_day', 0)} repeating it)",
        f"{_n(levels['error'], 'error')}, {_n(levels['warning'], 'warning')}, "
        f"{_n(levels['info'], 'note')}",
    ]
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


def run_check(config: Config, now: datetime) -> Report:
    """Open the store read-only for the one read, then check what was read."""
    with Store.open(config.store_path, config.lock_timeout, read_only=True) as store:
        # every time zone's today + 1 is after yesterday in UTC
        snap = snapshot(store, after=now.astimezone(UTC_ZONE).date() - timedelta(days=1))
    return check(snap, config.sources, config.stale_after, now)
