"""The daily series read back for people: the newest quote of each pair (with the
official rate in force on its date, once official rates are stored), and one pair's
history. (Exports are in ticker.export.)"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, localcontext
from typing import Any

from ticker.config import IN_FORCE_DAYS, REFERENCE, Config, official_pair
from ticker.models import Day
from ticker.store import Store, read

OFFICIAL_DIGITS = 6  # significant digits of an official rate turned to the ticker's direction


@dataclass(frozen=True, slots=True)
class Official:
    """The official rate in force on a quote's date, in the quote's direction."""

    rate: str  # "0.00208868": US dollars per tenge for KZT/USD
    date: date  # the date of the official rate used (on or before the quote's)
    deviation_pct: str  # the quote against it, in percent: "-4.72"
    published: Day  # the official rate as published (USD/KZT 478.77)

    def as_dict(self) -> dict[str, Any]:
        return {
            "official_rate": self.rate,
            "official_date": self.date.isoformat(),
            "deviation_pct": self.deviation_pct,
        }


def latest(config: Config) -> list[Day]:
    """The newest day of each source and pair."""
    with Store.open(config.store_path, config.lock_timeout, read_only=True) as store:
        return read.latest(store)


def latest_with_officials(config: Config) -> tuple[list[Day], dict[Day, Official] | None]:
    """The newest day of each source and pair, and for each quote of a ticker the
    official rate in force on its date (None when no official rate is stored)."""
    with Store.open(config.store_path, config.lock_timeout, read_only=True) as store:
        rows = read.latest(store)
        if not any(r.source == REFERENCE for r in rows):
            return rows, None
        return rows, officials(store, rows)


def officials(store: Store, days: Sequence[Day]) -> dict[Day, Official]:
    """For each day of a ticker, the official rate in force on its date: the newest one
    published for it at most IN_FORCE_DAYS before."""
    out: dict[Day, Official] = {}
    for day in days:
        if day.source == REFERENCE:
            continue
        pair = official_pair(day.pair)
        if pair is None:
            continue
        found = read.in_force(
            store, REFERENCE, pair, day.date, day.date - timedelta(days=IN_FORCE_DAYS - 1)
        )
        if found is not None:
            out[day] = official(day, found)
    return out


def official(day: Day, published: Day) -> Official:
    """The official rate `published` (units per US dollar) in the direction of `day`'s
    pair, and `day`'s rate against it."""
    with localcontext() as ctx:
        ctx.prec = 28
        value = published.rate_value
        if not day.pair.startswith("USD/"):
            value = 1 / value
        shown = value.quantize(Decimal(10) ** (value.adjusted() - OFFICIAL_DIGITS + 1))
        deviation = (day.rate_value / value - 1) * 100
    return Official(
        rate=format(shown, "f"),
        date=published.date,
        deviation_pct=f"{deviation:.2f}",
        published=published,
    )


def history(
    config: Config,
    pair: str | Sequence[str],
    since: date | None = None,
    until: date | None = None,
    source: str | None = None,
) -> list[Day]:
    """One pair's daily series (of one source, or all), by source and date; several
    pairs at once (a currency in both directions)."""
    if source is not None:
        config.source(source)  # a source that is not configured is a usage error
    with Store.open(config.store_path, config.lock_timeout, read_only=True) as store:
        return read.history(store, pair, since, until, source)
