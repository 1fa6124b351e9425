"""A stand-in Frankfurter server (API v2) for the reference tests: `GET /v2/rates` with
`base`, `quotes`, `date` or `from`/`to`, `providers` and `expand=providers`, answering a
JSON array of `{"date", "base", "quote", "rate"}` as the real one does, 422 with
`{"message"}` for a request it refuses (an unknown parameter, a bad date or currency, a
range over five years with `providers`), and the faults the tests stage.

The banks' rates are invented: a random walk per currency, written with the digits each
bank publishes (NBK and CBU 2 decimals, NBKR and NBT 4, the manat's peg 3.5), on the days
each publishes (business days; NBT every day).

    bank = Frankfurter(Frankfurter.synthetic(date(2024, 1, 1), date(2025, 3, 31)))
    with LocalServer() as server:
        server.route("/v2/rates", bank)
        url = server.url("/v2")
"""

from __future__ import annotations

import bisect
import json
import math
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from conftest import LOCAL_HTTP, write_config
from pages import printed_change
from servers import _Handler

# What each bank publishes: its key, the currency, the decimals, whether it publishes
# every day (NBT carries its rate over weekends) or on business days only, and a path for
# the invented rates (units per US dollar on 1 January 2000 and 2026) with a daily noise.
BANKS: dict[str, tuple[str, int, bool, float, float, float]] = {
    "NBK": ("KZT", 2, False, 138.0, 515.0, 0.003),
    "NBKR": ("KGS", 4, False, 45.0, 87.45, 0.002),
    "CBU": ("UZS", 2, False, 140.0, 12100.0, 0.002),
    "NBT": ("TJS", 4, True, 2.2, 9.35, 0.002),
}
ANCHORS = (date(2000, 1, 1), date(2026, 1, 1))
PEG = ("TMT", "3.5", date(2015, 1, 1))  # the manat: 3.5 per US dollar since 2015
HOME = {quote: key for key, (quote, *_rest) in BANKS.items()}
PARAMS = {"base", "quotes", "providers", "date", "from", "to", "group", "expand"}
CARRY_DAYS = 7  # how far back a date without a rate looks for the one in force


def json_number(text: str) -> str:
    """A rate as Frankfurter's JSON writes a float: trailing zeros dropped, "3.0" kept."""
    value = Decimal(text)
    if value == value.to_integral_value():
        return f"{int(value)}.0"
    return format(value.normalize(), "f")


@dataclass
class Frankfurter:
    """The /rates endpoint as a LocalServer reply. `rates`: bank key (or "PEG") ->
    {date: rate text}. `today` ends an open range. Faults: `max_years` (the cap of a
    range with providers), `date_offset` (every date answered that many days later),
    `empty_404` (an empty answer as 404 {"message": "not found"}, as older versions)."""

    rates: Mapping[str, Mapping[date, str]]
    today: date = field(default_factory=date.today)
    max_years: int = 5
    date_offset: int = 0
    empty_404: bool = False
    asked: list[str] = field(default_factory=list)  # every request's path and query
    _cache: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sorted: dict[str, list[date]] = field(default_factory=dict)

    @staticmethod
    def synthetic(
        since: date, until: date, seed: int = 7, every_day: bool = False
    ) -> dict[str, dict[date, str]]:
        """Every bank's rates from `since` to `until` (the peg from 2015), each published
        with its own digits on its own days (`every_day`: all on every day)."""
        rng = random.Random(seed)
        out: dict[str, dict[date, str]] = {}
        span = (ANCHORS[1] - ANCHORS[0]).days
        for key, (_quote, digits, daily, first, last, vol) in BANKS.items():
            series: dict[date, str] = {}
            noise = 0.0
            day = since
            while day <= until:
                noise = 0.98 * noise + rng.gauss(0.0, vol)
                t = (day - ANCHORS[0]).days / span
                value = first * (last / first) ** t * math.exp(noise)
                if daily or every_day or day.weekday() < 5:
                    series[day] = f"{value:.{digits}f}"
                day += timedelta(days=1)
            out[key] = series
        peg: dict[date, str] = {}
        day = max(since, PEG[2])
        while day <= until:
            if every_day or day.weekday() < 5:
                peg[day] = PEG[1]
            day += timedelta(days=1)
        out["PEG"] = peg
        return out

    def __call__(self, h: _Handler) -> None:
        with self._lock:
            self.asked.append(h.path)
            cached = self._cache.get(h.path)
        if cached is None:
            cached = self.answer(h.path)
            with self._lock:
                self._cache[h.path] = cached
        status, body = cached
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=utf-8")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    # --- the API ------------------------------------------------------------------------

    def answer(self, path: str) -> tuple[int, bytes]:
        """The status and body the endpoint gives for a request path with its query."""
        query = {k: v[-1] for k, v in parse_qs(urlsplit(path).query).items()}
        unknown = sorted(set(query) - PARAMS)
        if unknown:
            return _error(422, f"unknown parameter: {', '.join(unknown)}")
        try:
            asked = {k: date.fromisoformat(query[k]) for k in ("date", "from", "to") if k in query}
        except ValueError:
            return _error(422, "invalid date")
        if "date" in asked and ("from" in asked or "to" in asked):
            return _error(422, "conflicting params")
        if query.get("group") not in (None, "week", "month"):
            return _error(422, "invalid group")
        if query.get("expand") not in (None, "providers"):
            return _error(422, f"invalid expand: {query['expand']}")
        base = query.get("base", "EUR").upper()
        quotes = [q for q in query.get("quotes", "").upper().split(",") if q]
        bad = [c for c in [base, *quotes] if not (len(c) == 3 and c.isalpha())]
        if bad:
            return _error(422, f"invalid currency: {','.join(bad)}")
        providers = [p for p in query.get("providers", "").upper().split(",") if p]
        if "from" in asked:
            lo, hi = asked["from"], asked.get("to", self.today)
            if providers and hi >= _years_later(lo, self.max_years):
                return _error(
                    422,
                    f"date range too long: at most {self.max_years} years per request "
                    "with providers",
                )
        else:
            lo = hi = asked.get("date", self.today)
        if base != "USD":
            return _error(422, f"this stand-in quotes against USD only, not {base}")
        expand = query.get("expand") == "providers"
        rows: list[tuple[date, str, str]] = []
        for quote in quotes or sorted({q for q, *_ in BANKS.values()} | {PEG[0]}):
            rows += self._series_rows(quote, providers, lo, hi, expand, single="from" not in asked)
        rows.sort()
        if not rows and self.empty_404:
            return _error(404, "not found")
        body = "[" + ",".join(text for _, _, text in rows) + "]"
        return 200, body.encode()

    def _series_rows(
        self,
        quote: str,
        providers: list[str],
        lo: date,
        hi: date,
        expand: bool,
        single: bool,
    ) -> list[tuple[date, str, str]]:
        if providers:
            keys = [p for p in providers if _quote_of(p) == quote]
        elif quote == PEG[0]:
            keys = ["PEG"]
        else:
            keys = [HOME[quote]] if quote in HOME else []
        out = []
        for key in keys:
            series = self.rates.get(key, {})
            days = self._days(key, series)
            if single:  # one date (or the latest): the rate in force on it
                i = bisect.bisect_right(days, hi) - 1
                chosen = [days[i]] if i >= 0 and days[i] >= hi - timedelta(CARRY_DAYS) else []
            else:
                start, end = bisect.bisect_left(days, lo), bisect.bisect_right(days, hi)
                chosen = days[start:end]
                # a range opening on a day without a rate opens with the one in force then
                if (not chosen or chosen[0] != lo) and start > 0:
                    if days[start - 1] >= lo - timedelta(CARRY_DAYS):
                        chosen.insert(0, days[start - 1])
            for day in chosen:
                rate = json_number(series[day])
                shown = day + timedelta(days=self.date_offset)
                record = (
                    f'{{"date":"{shown.isoformat()}","base":"USD","quote":"{quote}","rate":{rate}'
                )
                if expand and key != "PEG":
                    record += f',"providers":[{{"key":"{key}","rate":{rate}}}]'
                out.append((day, quote, record + "}"))
        return out

    def _days(self, key: str, series: Mapping[date, str]) -> list[date]:
        with self._lock:
            days = self._sorted.get(key)
            if days is None or len(days) != len(series):
                days = self._sorted[key] = sorted(series)
        return days


def _quote_of(key: str) -> str | None:
    if key in BANKS:
        return BANKS[key][0]
    if key == "CBT":
        return PEG[0]
    return None


def _years_later(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def _error(status: int, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"status": status, "message": message}).encode()


def reply_json(body: Any, status: int = 200) -> Callable[[_Handler], None]:
    """Any JSON body (an error object, a wrong shape) with this status."""
    data = (body if isinstance(body, bytes) else json.dumps(body).encode()) or b""

    def reply(h: _Handler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return reply


def reference_config(
    directory: Path, ticker_url: str, reference_url: str, extra: str = "", timeout: float = 2
) -> Path:
    """A config for the reference tests (conftest's write_config): the store, archive and
    charts in `directory`, the ticker at `ticker_url`, the stand-in at `reference_url`,
    short waits (`timeout` for [http] timeout); `extra`: more [reference] keys."""
    http = LOCAL_HTTP | {"timeout": timeout, "retries": 1, "max_retry_after": 1, "deadline": 10}
    return write_config(
        directory,
        lock_timeout=2,
        url=ticker_url,
        http=http,
        extra=f"\n[reference]\nurl = {json.dumps(reference_url)}\n{extra}",
    )


def in_force(series: Mapping[date, str], day: date) -> str | None:
    """The rate of `series` in force on `day`: the newest at most CARRY_DAYS before."""
    for back in range(CARRY_DAYS):
        found = series.get(day - timedelta(days=back))
        if found is not None:
            return found
    return None


def ticker_quotes(
    rates: Mapping[str, Mapping[date, str]], day: date, lag: Mapping[str, int] | None = None
) -> list[tuple[str, str, str]]:
    """The ticker of `day` as a site that copies the official rates would print it: US
    dollars per unit to 5 decimals and the day's change, each currency `lag` days late."""
    out = []
    for key in (*BANKS, "PEG"):
        quote = BANKS[key][0] if key in BANKS else PEG[0]
        late = (lag or {}).get(quote, 0)
        now = in_force(rates[key], day - timedelta(days=late))
        before = in_force(rates[key], day - timedelta(days=late + 1))
        if now is None or before is None:
            continue
        value, prev = 1 / Decimal(now), 1 / Decimal(before)
        change = float((value / prev - 1) * 100)
        out.append((quote, f"{value:.5f}", printed_change(change)))
    return out
