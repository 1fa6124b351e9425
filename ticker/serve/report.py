"""The report page at /: the newest quotes (with the official rate beside them where the
store holds one), the charts, the sources' status and what `ticker check` finds, as
plain HTML (no script) from one Jinja2 template."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from ticker import check, status
from ticker.charts.data import pair_filename
from ticker.charts.files import OVERVIEW_NAME
from ticker.charts.labels import currency_name, unit_word
from ticker.config import Config
from ticker.models import Day
from ticker.serve import precision
from ticker.serve.api import LOOKBACK_DAYS
from ticker.serve.data import Series
from ticker.serve.snapshot import LoaderState, Snapshot

FINDINGS_SHOWN = 5  # messages shown per kind of finding; `ticker check --json` has all

_ENV = Environment(
    loader=PackageLoader("ticker.serve", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class Quote:
    """One row of the newest quotes."""

    source: str
    pair: str
    code: str  # the currency quoted against the US dollar
    name: str
    date: dt.date
    printed: str
    change: str | None
    direction: str  # "up", "down" or "flat", from the printed change's sign
    per_usd: str | None  # units per US dollar, with the digits the printed rate allows
    unit: str
    official: str | None = None  # units per US dollar of another source (a central bank)
    official_source: str | None = None
    official_date: dt.date | None = None
    deviation: str | None = None  # the ticker against the official rate, in percent


def chart_names(config: Config, first: bool = False) -> list[str]:
    """The chart files the server may serve: one per configured pair, and the overview
    (with `first`, only the pairs of the first source, which `ticker chart` draws by
    default). Only these names ever reach the file system."""
    pairs = config.sources[0].pairs if first else config.pairs
    return [OVERVIEW_NAME, *(pair_filename(p) for p in pairs)]


def quotes(config: Config, series: Series, providers: Sequence[str]) -> list[Quote]:
    """The newest day of every pair of the default providers, in the config's order, each
    with the newest official rate on or before it from any other provider."""
    order = {pair: i for i, pair in enumerate(config.pairs)}
    out: list[Quote] = []
    for key in providers:
        provider = series.providers.get(key)
        if provider is None:
            continue
        for pair in sorted(provider.pairs, key=lambda p: (order.get(p, len(order)), p)):
            day = provider.pairs[pair].days[-1]
            out.append(_quote(day, series, key))
    return out


def _quote(day: Day, series: Series, key: str) -> Quote:
    base, quote = day.pair.split("/")
    code = base if quote == "USD" else quote
    per_usd = precision.inverse_text(day.rate) if quote == "USD" else day.rate
    change = day.change
    direction = "flat"
    if change is not None:
        direction = "down" if change.startswith("-") else "up" if change.strip("0.") else "flat"
    row = Quote(
        source=day.source,
        pair=day.pair,
        code=code,
        name=currency_name(code),
        date=day.date,
        printed=day.rate,
        change=change,
        direction=direction,
        per_usd=per_usd,
        unit=unit_word(code),
    )
    for other in series.providers.values():
        if other.key == key:
            continue
        route = other.routes("USD").get(code)
        when = route.last_on_or_before(day.date) if route else None
        if route is None or when is None or (day.date - when).days > LOOKBACK_DAYS:
            continue
        value = route.at(when)
        if value is None:
            continue
        deviation = None
        if per_usd is not None:
            official = float(value.rate)
            deviation = f"{(float(per_usd) - official) / official * 100:+.2f}"
        return Quote(
            **{
                **row.__dict__,
                "official": value.rate,
                "official_source": other.key,
                "official_date": when,
                "deviation": deviation,
            }
        )
    return row


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(int(seconds), 0)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {s // 60}m" if hours else f"{s // 60}m"


def _when(t: datetime | None) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if t else "never"


def render(
    config: Config,
    snap: Snapshot,
    found: check.Report,
    state: LoaderState,
    providers: Sequence[str],
    charts: Mapping[str, bool],
    now: datetime,
) -> str:
    """The page for this snapshot at `now`, with what `ticker check` finds in it.
    `charts`: which chart files exist."""
    rows = status.assess(config, snap.facts, now)
    sources = [
        {
            "name": r.source,
            "state": ", ".join(s for s, on in (("stale", r.stale), ("failing", r.failing)) if on)
            or "fresh",
            "ok": not (r.stale or r.failing or r.unsettled),
            "last_attempt": _when(r.last_attempt),
            "outcome": r.last_outcome or "-",
            "last_success": _when(r.last_success),
            "failures": r.failures,
            "newest": r.newest_date.isoformat() if r.newest_date else "none",
            "age": "future" if r.future else _age(r.age),
            "error": r.last_error if r.failing else None,
            "waiting": r.waiting,
            "unstored": r.unstored,
        }
        for r in rows
    ]
    groups: dict[str, list[check.Finding]] = {}
    for f in found.findings:
        groups.setdefault(f.kind, []).append(f)
    findings = [
        {
            "kind": kind,
            "level": found[0].level.value,
            "count": len(found),
            "about": check.KINDS.get(kind, kind),
            "messages": [f.message for f in found[:FINDINGS_SHOWN]],
            "more": max(len(found) - FINDINGS_SHOWN, 0),
        }
        for kind, found in groups.items()
    ]
    shown = [name for name in chart_names(config) if charts.get(name)]
    context: dict[str, Any] = {
        "title": "Currency ticker report",
        "label": config.sources[0].label,
        "now": _when(now),
        "read_at": _when(snap.read_at),
        "changed_at": _when(snap.changed_at),
        "read_error": state.error,
        "error_since": _when(state.error_since) if state.error_since else None,
        "quotes": quotes(config, snap.series, providers),
        "charts": shown,
        "missing_charts": [n for n in chart_names(config, first=True) if not charts.get(n)],
        "sources": sources,
        "levels": found.by_level(),
        "checked": found.checked,
        "findings": findings,
        "days": len(snap.days),
    }
    return _ENV.get_template("report.html").render(**context)


def chart_exists(config: Config) -> dict[str, bool]:
    """Which of the chart files are there to show."""
    return {name: Path(config.charts.dir, name).is_file() for name in chart_names(config)}
