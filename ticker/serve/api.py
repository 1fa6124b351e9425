"""The API under /v2: Frankfurter's v2 surface over the store's series. Parameters are
checked in Frankfurter's order with its messages (422), records are made from the
series (`data.Series`) and written as JSON, NDJSON or CSV. No I/O here: the app passes
the series, the configured sources and today's date."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta

from ticker.config import Source
from ticker.models import shorten
from ticker.serve import precision
from ticker.serve.data import Provider, Route, Series

DEFAULT_BASE = "USD"  # every pair the ticker prints is against the US dollar
RATE_PARAMS = ("base", "quotes", "providers", "date", "from", "to", "group", "expand")
PAIR_PARAMS = ("date", "providers")
CURRENCY_PARAMS = ("scope", "providers")
COVERAGE_PARAMS = ("base", "quotes", "providers")
LOOKBACK_DAYS = 14  # how far back a date with no data of its own is answered from
MAX_RANGE_DAYS = 3653  # a daily range of ten years at most
MAX_PARAM_CHARS = 1000
LATEST_AHEAD = timedelta(days=1)  # the site's day may run ahead of UTC
_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
CSV_COLUMNS = ("date", "base", "quote", "rate", "provider", "pair", "printed_rate", "change_pct")


class ApiError(Exception):
    """An answer other than 200: the status and the message of its JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = shorten(message)


NOT_FOUND = "not found"


@dataclass(frozen=True)
class RateQuery:
    """A checked /rates request."""

    providers: tuple[str, ...]
    base: str
    quotes: tuple[str, ...] | None  # None: every quote
    kind: str  # "latest", "date" or "range"
    day: date | None = None  # kind "date"
    start: date | None = None  # kind "range"
    end: date | None = None
    end_given: bool = False
    group: str | None = None  # "week" or "month" (ranges only)
    expand: bool = False

    def csv_filename(self) -> str:
        """As Frankfurter names its CSV downloads: USD-KZT_2025-03-20.csv,
        USD-rates_2025-01-01_2025-12-09_monthly.csv."""
        parts = [self.providers[0]] if len(self.providers) == 1 else []
        one = self.quotes is not None and len(set(self.quotes)) == 1
        parts.append(
            f"{self.base}-{self.quotes[0]}" if one and self.quotes else f"{self.base}-rates"
        )
        if self.kind == "range":
            assert self.end is not None
            end = self.end if self.end_given else self.end - LATEST_AHEAD  # today
            parts.append(f"{self.start}_{end}")
        elif self.kind == "date":
            parts.append(f"{self.day}")
        else:
            parts.append("latest")
        if self.group:
            parts.append(f"{self.group}ly")
        return re.sub(r"[^A-Za-z0-9._-]", "", "_".join(parts) + ".csv")


@dataclass(frozen=True, slots=True)
class Record:
    """One answer of /rates: `rate` quote units per unit of base, and what it came from."""

    date: date
    base: str
    quote: str
    rate: str  # a JSON number literal
    provider: str
    pair: str | None = None  # the stored pair it was read from
    printed: str | None = None  # that pair's rate as printed (None: a mean or a cross rate)
    change: str | None = None  # the printed day's change in percent
    via: str | None = None  # the pivot of a cross rate
    days: int | None = None  # days in a week's or month's mean

    def json(self, expand: bool = False) -> str:
        out = (
            f'{{"date":"{self.date}","base":"{self.base}","quote":"{self.quote}",'
            f'"rate":{self.rate},"provider":"{self.provider}"'
        )
        if self.pair is not None:
            out += f',"pair":"{self.pair}"'
        if self.printed is not None:
            change = "null" if self.change is None else f'"{self.change}"'
            out += f',"printed_rate":"{self.printed}","change_pct":{change}'
        if self.via is not None:
            out += f',"via":"{self.via}"'
        if self.days is not None:
            out += f',"days":{self.days}'
        if expand and self.base != self.quote:
            own = f'{{"key":"{self.provider}","date":"{self.date}","rate":{self.rate}}}'
            out += f',"providers":[{own}]'
        return out + "}"

    def csv(self, expand: bool = False) -> str:
        cells = [
            f"{self.date}",
            self.base,
            self.quote,
            self.rate,
            self.provider,
            self.pair or "",
            self.printed or "",
            self.change or "",
        ]
        if expand:
            cells.append(f"{self.provider}:{self.rate}" if self.base != self.quote else "")
        return ",".join(cells) + "\n"


# --- parameters ---------------------------------------------------------------------------


def check_names(params: Mapping[str, str], allowed: Sequence[str]) -> None:
    """Unknown parameters, and values longer than anyone needs, are refused."""
    unknown = sorted(k for k in params if k not in allowed)
    if unknown:
        raise ApiError(422, f"unknown parameter: {', '.join(unknown)}")
    for key, value in params.items():
        if len(value) > MAX_PARAM_CHARS:
            raise ApiError(422, f"parameter too long: {key} (at most {MAX_PARAM_CHARS} characters)")


def parse_date(text: str) -> date | None:
    """YYYY-MM-DD naming a real day, or None."""
    if not _DATE_RE.match(text):
        return None
    try:
        return date(int(text[:4]), int(text[5:7]), int(text[8:]))
    except ValueError:
        return None


def split(text: str) -> list[str]:
    """A comma-separated list as Frankfurter splits it (trailing empty items dropped)."""
    items = text.split(",")
    while items and items[-1] == "":
        items.pop()
    return items


def providers_param(
    params: Mapping[str, str], series: Series, defaults: Sequence[str]
) -> tuple[str, ...]:
    """The providers asked for (case-insensitive keys), or the default ones."""
    if "providers" not in params:
        return tuple(defaults)
    keys = list(dict.fromkeys(p.lower() for p in split(params["providers"])))
    unknown = [k for k in keys if k not in series.providers]
    if unknown:
        known = ", ".join(series.providers) or "none yet"
        raise ApiError(422, f"invalid provider: {','.join(unknown)} (providers: {known})")
    return tuple(keys)


def check_currencies(codes: Iterable[str], series: Series) -> None:
    bad = [c for c in codes if c not in series.currencies]
    if bad:
        known = ", ".join(series.currencies) or "none yet"
        raise ApiError(422, f"invalid currency: {','.join(bad)} (this server has {known})")


def rate_query(
    params: Mapping[str, str],
    series: Series,
    defaults: Sequence[str],
    today: date,
    allowed: Sequence[str] = RATE_PARAMS,
) -> RateQuery:
    """Check a /rates request in Frankfurter's order: unknown parameters, dates,
    conflicting dates, group, expand, currencies, providers, then the range."""
    check_names(params, allowed)
    dates: dict[str, date] = {}
    for key in ("date", "from", "to"):
        if key in params:
            day = parse_date(params[key])
            if day is None:
                raise ApiError(422, "invalid date")
            dates[key] = day
    if "date" in dates and ("from" in dates or "to" in dates):
        raise ApiError(422, "conflicting params")
    group = params.get("group")
    if group is not None:
        group = group.lower()
        if group not in ("week", "month"):
            raise ApiError(422, "invalid group")
    expand = [e.lower() for e in split(params.get("expand", ""))]
    bad = [e for e in expand if e != "providers"]
    if bad:
        raise ApiError(422, f"invalid expand: {','.join(bad)}")
    base = params.get("base", DEFAULT_BASE).upper()
    quotes = tuple(split(params["quotes"].upper())) if "quotes" in params else None
    check_currencies(([base] if "base" in params else []) + list(quotes or ()), series)
    providers = providers_param(params, series, defaults)
    query = RateQuery(providers, base, quotes, kind="latest", expand=bool(expand))
    if "date" in dates:
        return replace(query, kind="date", day=dates["date"])
    if "from" not in dates:
        return query  # `to` alone changes nothing, as in Frankfurter
    start, end = dates["from"], dates.get("to", today + LATEST_AHEAD)
    if start > end:
        raise ApiError(422, f"invalid date range: from {start} is after to {end}")
    if group is None and (end - start).days >= MAX_RANGE_DAYS:
        raise ApiError(
            422,
            "date range exceeds 10 years at daily granularity; aggregate with group=week "
            "or group=month, or split the range into shorter requests",
        )
    return replace(query, kind="range", start=start, end=end, end_given="to" in dates, group=group)


# --- records --------------------------------------------------------------------------------


def records(query: RateQuery, series: Series, today: date) -> list[Record]:
    """The records /rates answers, sorted as Frankfurter sorts them: by quote (latest and
    one date), by date then quote (ranges); providers in the order asked."""
    out: list[Record] = []
    order = {key: i for i, key in enumerate(query.providers)}
    for key in query.providers:
        provider = series.providers.get(key)
        if provider is not None:
            out += _provider_records(query, provider, today)
    if query.kind == "range":
        out.sort(key=lambda r: (r.date, r.quote, order[r.provider]))
    else:
        out.sort(key=lambda r: (r.quote, order[r.provider]))
    return out


def _provider_records(query: RateQuery, provider: Provider, today: date) -> list[Record]:
    routes = provider.routes(query.base)
    found: list[Record] = []
    for route in routes.values():
        if query.kind == "latest":
            days = _at_most([route.last_on_or_before(today + LATEST_AHEAD)])
        elif query.kind == "date":
            assert query.day is not None
            last = route.last_on_or_before(query.day)
            days = _at_most([last if last and last >= query.day - _lookback() else None])
        else:
            assert query.start is not None and query.end is not None
            if query.group:
                found += _group(route, provider.key, query.start, query.end, query.group)
                continue
            days = list(route.between(query.start, query.end))
            if not days or days[0] != query.start:
                before = route.last_on_or_before(query.start - timedelta(days=1))
                if before is not None and before >= query.start - _lookback():
                    days.insert(0, before)
        for day in days:
            rec = _record(route, provider.key, day)
            if rec is not None:
                found.append(rec)
    visible = [r for r in found if query.quotes is None or r.quote in query.quotes]
    if query.base in provider.currencies and (query.quotes is None or query.base in query.quotes):
        anchor = visible or found  # /rate/USD/USD: the dates of every quote
        if query.kind == "range":
            ones = sorted({r.date for r in anchor})
        else:
            ones = [max(r.date for r in anchor)] if anchor else []
        visible += [Record(d, query.base, query.base, "1", provider.key) for d in ones]
    return visible


def _lookback() -> timedelta:
    return timedelta(days=LOOKBACK_DAYS)


def _at_most(days: Iterable[date | None]) -> list[date]:
    return [d for d in days if d is not None]


def _record(route: Route, provider: str, day: date) -> Record | None:
    value = route.at(day)
    if value is None:
        return None
    stored = value.day
    return Record(
        date=day,
        base=route.base,
        quote=route.quote,
        rate=value.rate,
        provider=provider,
        pair=route.pair,
        printed=stored.rate if stored else None,
        change=stored.change if stored else None,
        via=route.pivot,
    )


def _bucket(day: date, group: str) -> date:
    return day - timedelta(days=day.weekday()) if group == "week" else day.replace(day=1)


def _group(route: Route, provider: str, start: date, end: date, group: str) -> list[Record]:
    """One record per week (dated its Monday) or month (its first day): the mean of the
    days of the range in it, with the digits the printed rates allow."""
    buckets: dict[date, list[precision.Estimate]] = {}
    for day in route.between(start, end):
        e = route.estimate(day)
        if e is not None:
            buckets.setdefault(_bucket(day, group), []).append(e)
    return [
        Record(
            date=when,
            base=route.base,
            quote=route.quote,
            rate=precision.shortest(precision.mean(es)),
            provider=provider,
            pair=route.pair,
            via=route.pivot,
            days=len(es),
        )
        for when, es in sorted(buckets.items())
    ]


# --- bodies ---------------------------------------------------------------------------------


def json_body(recs: Sequence[Record], expand: bool = False) -> bytes:
    return ("[" + ",".join(r.json(expand) for r in recs) + "]").encode()


def ndjson_body(recs: Sequence[Record], expand: bool = False) -> bytes:
    return "".join(r.json(expand) + "\n" for r in recs).encode()


def csv_body(recs: Sequence[Record], expand: bool = False) -> bytes:
    """Frankfurter's CSV: a header and a line per record; nothing at all when empty."""
    if not recs:
        return b""
    head = ",".join(CSV_COLUMNS + (("providers",) if expand else ())) + "\n"
    return (head + "".join(r.csv(expand) for r in recs)).encode()


# --- the catalogue --------------------------------------------------------------------------


def currencies(params: Mapping[str, str], series: Series) -> list[dict[str, object]]:
    """/currencies: every currency of the store (or of the providers asked for)."""
    check_names(params, CURRENCY_PARAMS)
    if "scope" in params and params["scope"] != "all":
        raise ApiError(422, "invalid scope")
    wanted = providers_param(params, series, list(series.providers))
    return [
        info.as_dict()
        for info in series.currencies.values()
        if any(key in wanted for key in info.providers)
    ]


def currency(code: str, series: Series) -> dict[str, object]:
    info = series.currencies.get(code.upper())
    if info is None:
        raise ApiError(404, NOT_FOUND)
    return info.as_dict()


def provider_entry(provider: Provider, source: Source | None, today: date) -> dict[str, object]:
    """A /providers entry: a source of the store, with what the config says of it."""
    last = provider.last
    missed = None if last is None else max((today - last).days - 1, 0)
    return {
        "key": provider.key,
        "name": source.label if source else provider.key,
        "country_code": None,
        "rate_type": source.kind if source else None,
        "pivot_currency": provider.pivot,
        "data_url": source.url if source else None,
        "terms_url": None,
        "start_date": provider.first.isoformat() if provider.first else None,
        "end_date": last.isoformat() if last else None,
        "publish_cadence": "daily",
        "frequency": "daily",
        "publishes_missed": missed,
        "currencies": sorted(provider.currencies - {provider.pivot}),
    }


def providers(
    series: Series, sources: Mapping[str, Source], today: Mapping[str, date]
) -> list[dict[str, object]]:
    return [provider_entry(p, sources.get(key), today[key]) for key, p in series.providers.items()]


def coverage(
    params: Mapping[str, str], series: Series, defaults: Sequence[str]
) -> dict[str, object]:
    """/coverage: the first and last dates /rates with these filters answers anything."""
    check_names(params, COVERAGE_PARAMS)
    base = params.get("base", DEFAULT_BASE).upper()
    quotes = tuple(split(params["quotes"].upper())) if "quotes" in params else None
    check_currencies(([base] if "base" in params else []) + list(quotes or ()), series)
    keys = providers_param(params, series, defaults)
    first: date | None = None
    last: date | None = None
    for key in keys:
        provider = series.providers.get(key)
        if provider is None:
            continue
        for quote, route in provider.routes(base).items():
            if route.dates and (quotes is None or quote in quotes):
                first = min(first or route.dates[0], route.dates[0])
                last = max(last or route.dates[-1], route.dates[-1])
    return {
        "base": base,
        "quotes": list(quotes) if quotes is not None else None,
        "providers": list(keys) if "providers" in params else None,
        "start_date": first.isoformat() if first else None,
        "end_date": last.isoformat() if last else None,
    }
