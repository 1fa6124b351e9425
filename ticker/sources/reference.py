"""Official reference rates: a response of a Frankfurter server (API v2, `GET /rates`) in,
a Record of the published rates out.

The response is a JSON array of `{"date", "base", "quote", "rate"}`, one record per pair
and date; with `expand=providers` each record lists the providers behind it. Every date is
the date a rate is in force. The rates are kept exactly as the JSON numbers are written
(`478.77`), the pair as published (`USD/KZT`: tenge per US dollar), with the bank that
published the rate when the record names exactly one.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from ticker.models import Observation, Outcome, Page, Record, bounded_detail, shorten
from ticker.sources.base import capture_time, content_hash, page_key, too_late

if TYPE_CHECKING:
    from ticker.config import Source

# Part of every load key: bump it when a response may read differently.
READER_VERSION = 1
# A record dated this far before the window asked for is not the rate in force at its
# start (a range answer may open with the last rate published before it).
CARRY_BACK = timedelta(days=31)
# What the store keeps exactly: up to 10 digits before and after the point, as DuckDB's
# DECIMAL(20, 10). A JSON number has no leading zeros, no '+', and may have an exponent.
_RATE_RE = re.compile(r"^(?:0|[1-9][0-9]{0,9})(?:\.[0-9]{1,10})?$", re.ASCII)
_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", re.ASCII)
_CODE_RE = re.compile(r"^[A-Z]{3}$", re.ASCII)
_PUBLISHER_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,19}$", re.ASCII)
_SHOWN_PROBLEMS = 5  # records named in a problem line; the rest counted


class _Number(str):
    """A JSON number's text, as written (a JSON string is a plain str)."""


_KNOWN: set[str] = set()  # provider keys already found well formed


class ReferenceReader:
    """The reference kind's reader: the rates of the source's pairs in one response,
    each stored under the date the server gives it."""

    kind: ClassVar[str] = "reference"
    version: ClassVar[int] = READER_VERSION
    media_types: ClassVar[tuple[str, ...]] = ("application/json",)
    noun: ClassVar[str] = "response"

    def __init__(self, *, cache: bool = False) -> None:
        pass  # nothing worth keeping between responses

    def read(
        self, page: Page, source: Source, *, now: datetime, given_date: date | None = None
    ) -> Record:
        """Read one response. A record dated after the window asked for (or more than a
        day after the capture), or long before it, means the server is not answering
        the question: the whole response stores nothing (bad_date). A record that is
        not a rate (0, negative, not a number) is left out and named (partial)."""
        digest = content_hash(page.body)
        captured, captured_day, bad_date = capture_time(page, source, now)
        problems: list[str] = []
        observations: list[Observation] = []
        outcome = Outcome.OK.value
        pairs = set(source.pairs)
        data: Any = None
        canonical = _canonical(page.body, pairs)
        if canonical is None:
            try:
                data = json.loads(
                    page.body, parse_float=_Number, parse_int=_Number, parse_constant=str
                )  # NaN and Infinity are no JSON numbers: read as text, refused as such
            except (ValueError, RecursionError) as exc:  # UnicodeDecodeError: a ValueError
                problems.append(f"not JSON ({shorten(str(exc), 120)})")
        if canonical is not None:
            observations = canonical
            dates = [o.date for o in observations]
            bad_date = bad_date or _wrong_dates(dates, page.url, captured_day, source, now)
        elif problems:
            outcome = Outcome.BAD_RESPONSE.value
        elif isinstance(data, dict) and isinstance(data.get("message"), str):
            outcome = Outcome.BAD_RESPONSE.value
            problems.append(f"the server answered an error: {shorten(data['message'], 200)}")
        elif not isinstance(data, list):
            outcome = Outcome.BAD_RESPONSE.value
            what = "null" if data is None else type(data).__name__
            problems.append(f"not a list of rates but a JSON {what}")
        else:
            observations, skipped, dates = _observations(data, pairs)
            late = _wrong_dates(dates, page.url, captured_day, source, now)
            if bad_date is None and late:
                bad_date = late
            if skipped:
                problems.extend(_grouped(skipped))
                outcome = Outcome.PARTIAL.value
            if data and not observations and not skipped:
                problems.append(f"no rate of a pair of {source.name} in the response")
        if bad_date is not None:
            outcome, observations = Outcome.BAD_DATE.value, []
            problems.insert(0, bad_date)
        return Record(
            page_key=page_key(source.name, digest, page.captured_at, None, self.version),
            source=source.name,
            origin=page.origin,
            url=page.url,
            captured_at=captured,
            content_hash=digest,
            outcome=outcome,
            header_date=None,
            quote_date=None,
            date_basis="record" if observations else None,
            parser_version=self.version,
            copies=0,
            detail=bounded_detail(problems),
            observations=tuple(observations),
        )


# A response as Frankfurter writes it: compact, the keys in this order, no escapes; a
# record of one provider names it. Such a body is read by one pattern, record by record;
# any other (spaces, other keys or order, a record left out) by the JSON parser.
_NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_CANONICAL = re.compile(
    r'\{"date":"([0-9]{4}-[0-9]{2}-[0-9]{2})","base":"([A-Z]{3})","quote":"([A-Z]{3})",'
    rf'"rate":({_NUMBER})(?:,"providers":\[\{{"key":"([A-Z][A-Z0-9_]{{0,19}})",'
    rf'"rate":{_NUMBER}\}}\])?\}}(,|\])',
    re.ASCII,
)


def _canonical(body: bytes, pairs: set[str]) -> list[Observation] | None:
    """The observations of a canonical response whose every record is a rate of one of
    `pairs` on a distinct date, as the JSON parser would read them; None for any other
    body (the parser reads it, and says what is wrong)."""
    if not (body.startswith(b'[{"date":"') and body.rstrip().endswith(b"}]")):
        return None
    try:
        text = body.decode("utf-8").rstrip()
    except UnicodeDecodeError:
        return None
    out: list[Observation] = []
    seen: set[tuple[str, str]] = set()
    days: dict[str, date] = {}
    pos, end = 1, len(text)
    match = _CANONICAL.match
    while pos < end:
        m = match(text, pos)
        if m is None:
            return None
        day_text, base, quote, rate, publisher, after = m.groups()
        pair = base + "/" + quote
        key = (pair, day_text)
        if (
            pair not in pairs
            or key in seen
            or not _RATE_RE.match(rate)
            or not rate.strip("0.")
            or (after == "]") != (m.end() == end)
        ):
            return None
        seen.add(key)
        day = days.get(day_text)
        if day is None:
            try:
                day = days[day_text] = date.fromisoformat(day_text)
            except ValueError:
                return None
        out.append(Observation(pair, day, rate, None, publisher))
        pos = m.end()
    return out


def _observations(
    data: list[Any], pairs: set[str]
) -> tuple[list[Observation], list[tuple[str, str]], list[date]]:
    """The observations of the records of the wanted pairs; the records left out, each
    as (why, which); and the dates of every record that names one."""
    out: dict[tuple[str, date], Observation] = {}
    skipped: list[tuple[str, str]] = []
    dates: list[date] = []
    disagree: set[tuple[str, date]] = set()
    days: dict[str, date] = {}  # a response of several pairs repeats its dates
    for item in data:
        # The common case first: a record of a wanted pair, each field as documented.
        try:
            pair = item["base"] + "/" + item["quote"]
            day_text, rate = item["date"], item["rate"]
            day = days.get(day_text) if type(day_text) is str else None
            if day is None and type(day_text) is str and _DATE_RE.match(day_text):
                day = days[day_text] = date.fromisoformat(day_text)
            fast = (
                day is not None
                and pair in pairs
                and type(rate) is _Number
                and _RATE_RE.match(rate) is not None
                and bool(rate.strip("0."))
            )
        except (TypeError, KeyError, ValueError):
            fast = False
        if not fast:
            found = _slow(item, pairs, skipped, dates)
            if found is None:
                continue
            pair, day, rate = found
        else:
            assert day is not None
            dates.append(day)
        key = (pair, day)
        seen = out.get(key)
        if seen is not None:
            if seen.rate != rate:
                disagree.add(key)
            continue
        out[key] = Observation(pair, day, str(rate), None, _publisher(item))
    for key in disagree:
        seen = out.pop(key)
        skipped.append(("given twice with other rates", f"{key[0]} {key[1]} ({seen.rate}, ...)"))
    return list(out.values()), skipped, dates


def _slow(
    item: Any, pairs: set[str], skipped: list[tuple[str, str]], dates: list[date]
) -> tuple[str, date, str] | None:
    """A record the common case did not take: its pair, date and rate when it is one
    after all, else None with why it is left out added to `skipped`."""
    if not isinstance(item, dict):
        skipped.append(("not a record", shorten(repr(item), 40)))
        return None
    day_text, base, quote, rate = (item.get(k) for k in ("date", "base", "quote", "rate"))
    if not (isinstance(day_text, str) and _DATE_RE.match(day_text)):
        skipped.append(("no date YYYY-MM-DD", shorten(repr(day_text), 40)))
        return None
    try:
        day = date.fromisoformat(day_text)
    except ValueError:
        skipped.append(("not a real date", day_text))
        return None
    dates.append(day)
    if not (isinstance(base, str) and isinstance(quote, str)):
        skipped.append(("no base and quote", day_text))
        return None
    if not (_CODE_RE.match(base) and _CODE_RE.match(quote)):
        skipped.append(("not currency codes", f"{base[:10]!r}/{quote[:10]!r} {day_text}"))
        return None
    pair = f"{base}/{quote}"
    if pair not in pairs:
        if base != quote:  # the identity row (USD/USD = 1) is no one's rate
            skipped.append(("not a pair of the reference; ignored", pair))
        return None
    where = f"{pair} {day_text}"
    if not isinstance(rate, _Number):
        skipped.append(("rate not a number", f"{where}: {shorten(repr(rate), 30)}"))
        return None
    if rate.startswith("-") or not rate.strip("0.eE+-"):
        skipped.append(("rate not positive", f"{where}: {rate[:30]}"))
        return None
    if not _RATE_RE.match(rate):
        skipped.append(
            (
                "rate not written with at most 10 digits before and after the point",
                f"{where}: {rate[:30]}",
            )
        )
        return None
    return pair, day, rate


def _publisher(item: dict[str, Any]) -> str | None:
    """The one provider a record names (`provider`, or `providers` with expand=providers,
    leaving out those marked excluded), else None."""
    listed = item.get("providers")
    if type(listed) is list and len(listed) == 1:  # the common case: one, not excluded
        only = listed[0]
        if type(only) is dict and len(only) == 2 and type(key := only.get("key")) is str:
            if key not in _KNOWN:
                if not _PUBLISHER_RE.match(key):
                    return None
                _KNOWN.add(key)
            return key
    named = item.get("provider")
    if isinstance(named, str):
        return named if _PUBLISHER_RE.match(named) else None
    if not isinstance(listed, list):
        return None
    keys = [
        str(p["key"])
        for p in listed
        if isinstance(p, dict) and not p.get("excluded") and isinstance(p.get("key"), str)
    ]
    if len(keys) == 1 and _PUBLISHER_RE.match(keys[0]):
        return keys[0]
    return None


def _grouped(skipped: list[tuple[str, str]]) -> list[str]:
    """One problem line per reason, naming the first few records."""
    by_reason: dict[str, list[str]] = {}
    for why, which in skipped:
        by_reason.setdefault(why, []).append(which)
    lines = []
    for why, records in by_reason.items():
        n = len(records)
        shown = ", ".join(records[:_SHOWN_PROBLEMS])
        more = f" and {n - _SHOWN_PROBLEMS} more" if n > _SHOWN_PROBLEMS else ""
        lines.append(f"{n} record{'s' if n != 1 else ''} left out, {why}: {shown}{more}")
    return lines


def window(url: str | None) -> tuple[date | None, date | None]:
    """The dates a request asked for: `date`, or `from` and `to` (None where not given)."""
    if not url:
        return None, None
    query = parse_qs(urlsplit(url).query)

    def one(key: str) -> date | None:
        values = query.get(key)
        if not values:
            return None
        try:
            return date.fromisoformat(values[0])
        except ValueError:
            return None

    asked = one("date")
    if asked is not None:
        return asked, asked
    return one("from"), one("to")


def _wrong_dates(
    dates: list[date], url: str | None, captured_day: date | None, source: Source, now: datetime
) -> str | None:
    """Why the dates of a response cannot be the rates asked for, or None."""
    if not dates:
        return None
    first, last = min(dates), max(dates)
    since, until = window(url)
    if until is not None and last > until:
        return (
            f"the server dated a rate {last}, after the {until} asked for: not the rates "
            "asked for; nothing stored"
        )
    if since is not None and first < since - CARRY_BACK:
        return (
            f"the server dated a rate {first}, more than {CARRY_BACK.days} days before the "
            f"{since} asked for: not the rates asked for; nothing stored"
        )
    late = too_late(last, "header", captured_day, source, now)
    if late is not None:
        return late.replace("the date line says", "the server dated a rate") + "; nothing stored"
    return None
