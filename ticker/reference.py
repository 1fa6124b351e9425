"""Reference job: the official rates of the configured pairs, fetched from a Frankfurter
server (API v2) over a range of dates and stored as the source `reference`.

Each pair is asked of the bank that publishes it, in windows of at most five years (the
server caps ranges asked with `providers`). Each response is fetched, archived, read and
stored as the scrape job does with a page, every request recorded as an attempt.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from ticker import scrape
from ticker.config import REFERENCE, Config
from ticker.errors import UsageError
from ticker.models import Attempt
from ticker.store import Store, read

if TYPE_CHECKING:
    import requests

# The bank that publishes each currency's official rate (Frankfurter's provider keys) and
# the first date Frankfurter has of it. The manat has been pegged at 3.5 per US dollar
# since 2015: it is asked for without a provider, and the server gives the peg.
PROVIDERS: dict[str, str] = {"KZT": "NBK", "KGS": "NBKR", "UZS": "CBU", "TJS": "NBT"}
FIRST_DAYS: dict[str, date] = {
    "KZT": date(2000, 1, 1),
    "KGS": date(1999, 1, 1),
    "UZS": date(1994, 7, 1),
    "TJS": date(2001, 1, 1),
    "TMT": date(2015, 1, 1),
}
WINDOW_YEARS = 5  # the longest range the server answers for one request with providers
EMPTY_STORE_DAYS = 30  # the default range on a store without a ticker day
DAEMON_OVERLAP = timedelta(days=14)  # the daemon asks again from this before the newest


@dataclass(frozen=True)
class Request:
    """One request: a pair's official rates over a window of dates."""

    pair: str  # as published: USD/KZT
    since: date
    until: date
    url: str


@dataclass(frozen=True)
class ReferenceRun:
    """What a fetch of the official rates asked for and what came of each request."""

    since: date
    until: date
    requests: tuple[Request, ...]
    attempts: tuple[Attempt, ...]
    left_out: tuple[str, ...] = ()  # pairs not asked for, and why

    @property
    def exit_code(self) -> int:
        return 0 if all(a.success for a in self.attempts) else 1

    def describe(self, attempt: Attempt) -> str:
        """The attempt's line, naming the pair and the window it asked for."""
        line = scrape.describe_attempt(attempt)
        for request in self.requests:
            if request.url == attempt.url:
                what = f"{REFERENCE} {request.pair} {request.since}..{request.until}"
                return what + line[len(attempt.source) :]
        return line


def fetch_reference(
    config: Config,
    now: datetime,
    *,
    since: date | None = None,
    until: date | None = None,
    incremental: bool = False,
    session: requests.Session | None = None,
    state: scrape.ScrapeState | None = None,
    stop: threading.Event | None = None,
) -> ReferenceRun:
    """Fetch and store the official rates of every reference pair from `since` to
    `until` (default: from the first stored day of the ticker, or the last 30 days on
    a store without one, to today in the reference's time zone). `incremental` (the
    daemon) asks only from two weeks before the newest official rate stored. Never
    raises for a network, response or database fault: each is an attempt's outcome."""
    source = config.reference
    today = now.astimezone(source.tz).date()
    if until is not None and until > today + timedelta(days=1):
        raise UsageError(
            f"--until {until} is after tomorrow ({today + timedelta(days=1)} in "
            f"{source.tz.key}); no official rate is published further ahead"
        )
    if since is not None and until is not None and since > until:
        raise UsageError(f"--since {since} is after --until {until}")
    end = until or today
    start = since if since is not None else _default_start(config, today, end, incremental)
    requests_, left_out = plan(config, start, end)
    sources = [replace(source, url=r.url) for r in requests_]
    attempts = (
        scrape.scrape(
            config,
            now,
            session=session,
            state=state,
            stop=stop,
            sources=sources,
            conditional=False,  # each window is asked once a run; no validator fits
            give_up=server_down,
        )
        if sources
        else []
    )
    asked = {a.url for a in attempts}
    skipped = [r for r in requests_ if r.url not in asked]
    if skipped and attempts and server_down(attempts[-1]):
        left_out.append(
            f"{len(skipped)} more request{'s' if len(skipped) != 1 else ''} "
            f"({', '.join(dict.fromkeys(r.pair for r in skipped))}): the server failed "
            f"({attempts[-1].outcome}); the next run asks again"
        )
    return ReferenceRun(start, end, tuple(requests_), tuple(attempts), tuple(left_out))


# A fault of the server rather than of one request: the requests after it are not made.
_SERVER_FAULTS = frozenset({"connection_error", "timeout", "tls_error", "redirect_loop"})


def server_down(attempt: Attempt) -> bool:
    """Whether the server failed in a way the next request would meet too: no
    connection, no answer in time, or 5xx and 429 after the retries."""
    if attempt.outcome in _SERVER_FAULTS:
        return True
    status = attempt.http_status or 0
    return attempt.outcome == "http_error" and (status >= 500 or status == 429)


def _default_start(config: Config, today: date, end: date, incremental: bool) -> date:
    """The first stored day of the ticker (or 30 days back); the daemon's from two weeks
    before the newest official rate stored."""
    with Store.open(config.store_path, config.lock_timeout, read_only=True) as store:
        first, _ = read.sources_span(store, [s.name for s in config.sources])
        newest = read.sources_span(store, [REFERENCE])[1] if incremental else None
    start = first if first is not None else today - timedelta(days=EMPTY_STORE_DAYS)
    if newest is not None:
        start = max(start, newest - DAEMON_OVERLAP)
    return min(start, end)


def plan(config: Config, since: date, until: date) -> tuple[list[Request], list[str]]:
    """The requests for the reference pairs from `since` to `until`: per pair, windows of
    at most WINDOW_YEARS, none before the first day the server has of the currency; and
    the pairs left out, with why."""
    out: list[Request] = []
    left_out: list[str] = []
    base_url = config.reference.url
    for pair in config.reference.pairs:
        base, _, quote = pair.partition("/")
        first = FIRST_DAYS.get(quote)
        start = max(since, first) if first is not None else since
        if start > until:
            left_out.append(f"{pair}: no official rate before {first}")
            continue
        for lo, hi in windows(start, until):
            query = [("base", base), ("quotes", quote)]
            if quote in PROVIDERS:
                query.append(("providers", PROVIDERS[quote]))
            query += [("from", lo.isoformat()), ("to", hi.isoformat()), ("expand", "providers")]
            out.append(Request(pair, lo, hi, f"{base_url}/rates?{urlencode(query)}"))
    return out, left_out


def windows(since: date, until: date, years: int = WINDOW_YEARS) -> list[tuple[date, date]]:
    """[since, until] cut into windows of at most `years` calendar years each."""
    out = []
    lo = since
    while lo <= until:
        hi = min(_years_later(lo, years) - timedelta(days=1), until)
        out.append((lo, hi))
        lo = hi + timedelta(days=1)
    return out


def _years_later(day: date, years: int) -> date:
    """The same day `years` later (28 February for 29 February); date.max past year 9999."""
    if day.year + years > date.max.year:
        return date.max
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def summary(run: ReferenceRun, seconds: float) -> str:
    """One line for the daemon's log: requests, outcomes, counts."""
    ok = sum(1 for a in run.attempts if a.success)
    new = sum(a.new for a in run.attempts)
    already = sum(a.already for a in run.attempts)
    revised = sum(a.revised for a in run.attempts)
    failed = [a.outcome for a in run.attempts if not a.success]
    return (
        f"{len(run.attempts)} requests for {run.since} to {run.until}, {ok} ok"
        + (f", {len(failed)} failed ({', '.join(sorted(set(failed)))})" if failed else "")
        + f", {new} new, {already} already stored, {revised} revised, {seconds:.2f} s"
    )
