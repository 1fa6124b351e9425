"""The series as the API sees it: each provider (a source of the store) with its pairs'
daily series, the currencies they cover, and the routes from a base currency to every
quote it can be given in: a stored pair read as printed, read the other way round, or
a cross rate through the currency the provider's pairs share."""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property

from ticker.charts.labels import currency_name
from ticker.config import PAIR_RE, SOURCE_NAME_RE
from ticker.models import Day
from ticker.serve import precision
from ticker.serve.precision import Estimate

_RATE_RE = re.compile(r"^[0-9]{1,12}(\.[0-9]{1,12})?$")
_CHANGE_RE = re.compile(r"^-?[0-9]{1,12}(\.[0-9]{1,12})?$")

# ISO 4217 numeric codes and the usual signs, for /currencies (a code not listed has null).
ISO_NUMERIC = {
    "USD": "840",
    "KZT": "398",
    "KGS": "417",
    "TJS": "972",
    "UZS": "860",
    "TMT": "934",
    "EUR": "978",
    "RUB": "643",
    "CNY": "156",
    "AZN": "944",
    "AFN": "971",
}
SYMBOLS = {"USD": "$", "KZT": "₸", "EUR": "€", "RUB": "₽", "CNY": "¥"}


def usable(day: Day) -> bool:
    """A stored day the API can serve: names and numbers of the shapes ticker stores (the
    readers check them; this keeps whatever else a database might hold out of answers)."""
    return bool(
        SOURCE_NAME_RE.match(day.source)
        and PAIR_RE.match(day.pair)
        and _RATE_RE.match(day.rate)
        and (day.change is None or _CHANGE_RE.match(day.change))
        and precision.printed(day.rate)[1] > 0
    )


@dataclass(frozen=True)
class PairSeries:
    """One stored pair of one provider, oldest first."""

    pair: str
    days: tuple[Day, ...]

    @cached_property
    def dates(self) -> tuple[date, ...]:
        return tuple(d.date for d in self.days)

    @cached_property
    def by_date(self) -> dict[date, Day]:
        return {d.date: d for d in self.days}

    @property
    def base(self) -> str:
        return self.pair[:3]

    @property
    def quote(self) -> str:
        return self.pair[4:]


@dataclass(frozen=True)
class Leg:
    """A currency's value in the provider's pivot currency, from one stored pair: the pair
    CUR/PIVOT as printed, or PIVOT/CUR inverted."""

    series: PairSeries
    inverted: bool

    def estimate(self, day: Day) -> Estimate | None:
        e = precision.printed(day.rate)
        return precision.inverse(e) if self.inverted else e


@dataclass(frozen=True)
class Value:
    """A rate of a route on one day, with what it was made from."""

    date: date
    rate: str  # a JSON number, with the digits the printed rates allow
    day: Day | None  # the stored day read (direct or inverted); None for a cross rate


@dataclass(frozen=True)
class Route:
    """How a provider gives `quote` per unit of `base`: "direct" (the stored pair
    BASE/QUOTE, as printed), "inverse" (QUOTE/BASE, inverted) or "cross" (through the
    pivot: both currencies' values in it, divided)."""

    base: str
    quote: str
    kind: str
    series: PairSeries | None = None
    legs: tuple[Leg, Leg] | None = None
    pivot: str | None = None

    @cached_property
    def dates(self) -> tuple[date, ...]:
        if self.series is not None:
            return self.series.dates
        assert self.legs is not None
        first, second = (leg.series.by_date for leg in self.legs)
        return tuple(sorted(set(first) & set(second)))

    def at(self, day: date) -> Value | None:
        """The rate on `day` (None when there is none, or no inverse of a zero)."""
        if self.series is not None:
            stored = self.series.by_date.get(day)
            if stored is None:
                return None
            if self.kind == "direct":
                return Value(day, stored.rate, stored)
            inverted = precision.inverse_text(stored.rate)
            return None if inverted is None else Value(day, inverted, stored)
        e = self.estimate(day)
        return None if e is None else Value(day, precision.shortest(e), None)

    def estimate(self, day: date) -> Estimate | None:
        """The range of the rate on `day`, for means over weeks and months."""
        if self.series is not None:
            stored = self.series.by_date.get(day)
            if stored is None:
                return None
            e = precision.printed(stored.rate)
            return e if self.kind == "direct" else precision.inverse(e)
        assert self.legs is not None
        b_leg, q_leg = self.legs
        b_day, q_day = b_leg.series.by_date.get(day), q_leg.series.by_date.get(day)
        if b_day is None or q_day is None:
            return None
        b, q = b_leg.estimate(b_day), q_leg.estimate(q_day)
        return None if b is None or q is None else precision.quotient(b, q)

    def last_on_or_before(self, day: date) -> date | None:
        i = bisect.bisect_right(self.dates, day)
        return self.dates[i - 1] if i else None

    def between(self, first: date, last: date) -> Sequence[date]:
        lo = bisect.bisect_left(self.dates, first)
        hi = bisect.bisect_right(self.dates, last)
        return self.dates[lo:hi]

    @property
    def pair(self) -> str | None:
        return self.series.pair if self.series is not None else None


@dataclass
class Provider:
    """A source of the store and its pairs."""

    key: str
    pairs: dict[str, PairSeries]
    _routes: dict[str, dict[str, Route]] = field(default_factory=dict, repr=False)

    @cached_property
    def currencies(self) -> frozenset[str]:
        return frozenset(c for s in self.pairs.values() for c in (s.base, s.quote))

    @cached_property
    def pivot(self) -> str | None:
        """The currency every pair of the provider has (USD for the ticker), if one."""
        shared = set(self.currencies)
        for s in self.pairs.values():
            shared &= {s.base, s.quote}
        return next(iter(shared)) if len(shared) == 1 else None

    @cached_property
    def first(self) -> date | None:
        return min((s.dates[0] for s in self.pairs.values() if s.days), default=None)

    @cached_property
    def last(self) -> date | None:
        return max((s.dates[-1] for s in self.pairs.values() if s.days), default=None)

    def routes(self, base: str) -> dict[str, Route]:
        """Every quote this provider can give per unit of `base`, and how."""
        if base not in self._routes:
            self._routes[base] = self._find_routes(base)
        return self._routes[base]

    def _find_routes(self, base: str) -> dict[str, Route]:
        found: dict[str, Route] = {}
        if base not in self.currencies:
            return found
        for s in self.pairs.values():
            if s.base == base:
                found[s.quote] = Route(base, s.quote, "direct", series=s)
        for s in self.pairs.values():
            if s.quote == base and s.base not in found:
                found[s.base] = Route(base, s.base, "inverse", series=s)
        pivot = self.pivot
        if pivot is None or base == pivot:
            return found
        base_leg = self._leg(base, pivot)
        if base_leg is None:
            return found
        for code in sorted(self.currencies - {base, pivot} - set(found)):
            leg = self._leg(code, pivot)
            if leg is not None:
                found[code] = Route(base, code, "cross", legs=(base_leg, leg), pivot=pivot)
        return found

    def _leg(self, code: str, pivot: str) -> Leg | None:
        if f"{code}/{pivot}" in self.pairs:
            return Leg(self.pairs[f"{code}/{pivot}"], inverted=False)
        if f"{pivot}/{code}" in self.pairs:
            return Leg(self.pairs[f"{pivot}/{code}"], inverted=True)
        return None


@dataclass(frozen=True)
class CurrencyInfo:
    code: str
    providers: tuple[str, ...]
    first: date
    last: date

    def as_dict(self, detail: bool = False) -> dict[str, object]:
        return {
            "iso_code": self.code,
            "iso_numeric": ISO_NUMERIC.get(self.code),
            "name": currency_name(self.code),
            "symbol": SYMBOLS.get(self.code),
            "start_date": self.first.isoformat(),
            "end_date": self.last.isoformat(),
            "providers": list(self.providers),
        }


class Series:
    """The daily series of the store, by provider, as the API serves it."""

    def __init__(self, days: Iterable[Day]) -> None:
        grouped: dict[str, dict[str, list[Day]]] = {}
        self.skipped = 0  # stored days the API does not serve (see `usable`)
        for day in days:
            if not usable(day):
                self.skipped += 1
                continue
            grouped.setdefault(day.source, {}).setdefault(day.pair, []).append(day)
        self.providers: dict[str, Provider] = {
            key: Provider(
                key,
                {
                    pair: PairSeries(pair, tuple(sorted(ds, key=lambda d: d.date)))
                    for pair, ds in sorted(pairs.items())
                },
            )
            for key, pairs in sorted(grouped.items())
        }

    @cached_property
    def currencies(self) -> dict[str, CurrencyInfo]:
        spans: dict[str, tuple[set[str], date, date]] = {}
        for p in self.providers.values():
            for s in p.pairs.values():
                for code in (s.base, s.quote):
                    keys, first, last = spans.get(code, (set(), s.dates[0], s.dates[-1]))
                    keys.add(p.key)
                    spans[code] = (keys, min(first, s.dates[0]), max(last, s.dates[-1]))
        return {
            code: CurrencyInfo(code, tuple(sorted(keys)), first, last)
            for code, (keys, first, last) in sorted(spans.items())
        }
