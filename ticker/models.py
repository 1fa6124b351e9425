"""Records passed between the stages: pages in; readings, records and attempts out; the
days of a series back out of the store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    """What became of a page, a response or a fetch attempt: a kind's reader gives the
    first six and bad_response, fetching and storing the others. ok and not_modified are
    the successes."""

    OK = "ok"
    NO_TICKER = "no_ticker"
    UNDATED = "undated"
    INCONSISTENT = "inconsistent"
    PARTIAL = "partial"  # stored, but lines of configured pairs were unreadable
    BAD_DATE = "bad_date"  # a date or capture time that cannot be right; nothing stored
    NOT_MODIFIED = "not_modified"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    CONNECTION_ERROR = "connection_error"
    TLS_ERROR = "tls_error"
    REDIRECT_LOOP = "redirect_loop"
    TRUNCATED = "truncated"
    NOT_HTML = "not_html"
    PARSE_ERROR = "parse_error"
    BAD_RESPONSE = "bad_response"  # not the documented shape (an error object, not JSON)
    ARCHIVE_ERROR = "archive_error"
    STORE_LOCKED = "store_locked"
    STORE_ERROR = "store_error"


SUCCESS_OUTCOMES = frozenset({Outcome.OK.value, Outcome.NOT_MODIFIED.value})

# Lines made from page content (a problem, a reason) are cut to this many characters
# before they are printed or stored: a hostile page must not flood a terminal or a row.
LINE_LIMIT = 300
MAX_DETAIL_LINES = 20  # problems of one page kept in captures.detail; the rest counted


def shorten(text: str, limit: int = LINE_LIMIT) -> str:
    """`text`, cut to `limit` characters with an ellipsis when it is longer."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def bounded_detail(problems: Sequence[str]) -> str | None:
    """A page's problems as captures.detail keeps them, one a line: each line shortened,
    at most MAX_DETAIL_LINES of them (a hostile page can have thousands)."""
    lines = [shorten(p) for p in problems[:MAX_DETAIL_LINES]]
    if len(problems) > MAX_DETAIL_LINES:
        lines.append(f"... and {len(problems) - MAX_DETAIL_LINES} more problems")
    return "\n".join(lines) or None


def detail_line(detail: str | None) -> str:
    """A stored detail as one shortened line, for a summary or an attempt's error."""
    return shorten((detail or "").replace("\n", "; "))


@dataclass(frozen=True, slots=True)
class Page:
    """One page body and where it came from (a file, a WARC record or a URL)."""

    origin: str
    body: bytes
    captured_at: datetime | None = None  # aware; None when the container gives no time
    url: str | None = None
    source: str | None = None  # set when the container names it (ticker's own archive)
    content_type: str | None = None
    capture_problem: str | None = None  # why the container's capture time is unusable


@dataclass(frozen=True, slots=True)
class Quote:
    """One ticker line: BASE/QUOTE = RATE CHANGE%, kept exactly as printed."""

    base: str
    quote: str
    rate: str  # printed text, e.g. "0.00008": never reformatted
    change: str  # printed text without "%", e.g. "-0": the sign is kept

    @property
    def pair(self) -> str:
        return f"{self.base}/{self.quote}"

    @property
    def rate_value(self) -> Decimal:
        return Decimal(self.rate)

    @property
    def change_value(self) -> Decimal:
        return Decimal(self.change)


@dataclass(frozen=True, slots=True)
class Reading:
    """What the ticker parser makes of one page's text: its quotes (one per pair), header
    date and outcome."""

    outcome: Outcome
    quotes: tuple[Quote, ...] = ()
    date: date | None = None
    copies: int = 0
    problems: tuple[str, ...] = ()  # malformed lines, disagreeing copies, bad date lines
    # Ticker lines that could not be read: the pair each names (BASE/QUOTE), or "?" when
    # the pair itself is unreadable.
    unreadable: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Observation:
    """One dated value as published: the pair written in the direction of its number
    (KZT/USD = US dollars per tenge), the rate and the day's change as printed."""

    pair: str
    date: date
    rate: str  # exactly as published: "0.00008", "478.77"
    change: str | None = None  # percent as printed ("-0"); None when none is published
    publisher: str | None = None  # who published it ("NBK"), when the source says so


@dataclass(frozen=True, slots=True)
class Record:
    """What one page or response adds to the store: a capture row and its observations
    (stored only when it is ok or partial, and dated)."""

    page_key: str  # identifies one load: source, content, capture time, date, reader
    source: str
    origin: str  # file path, path#record, or URL
    url: str | None
    captured_at: datetime | None
    content_hash: str
    outcome: str
    header_date: date | None  # the date the page itself prints
    quote_date: date | None  # the date its observations were stored under (one page)
    date_basis: str | None  # header, capture, given; record: each observation its own
    parser_version: int
    copies: int
    detail: str | None
    observations: tuple[Observation, ...] = ()


@dataclass
class PageTally:
    """What the pages read came to, as the summaries of backfill and recover count them:
    with a ticker or without, and the pages of each outcome worth a look, listed as
    (origin, the page's problems on one line)."""

    with_ticker: int = 0
    no_ticker: int = 0
    undated: list[tuple[str, str]] = field(default_factory=list)
    inconsistent: list[tuple[str, str]] = field(default_factory=list)
    partial: list[tuple[str, str]] = field(default_factory=list)
    bad_dates: list[tuple[str, str]] = field(default_factory=list)

    def tally(self, record: Record, limit: int | None = None) -> bool:
        """Count one page; list it under its outcome when that is undated,
        inconsistent, partial or bad_date (at most `limit` entries a list). False when
        its outcome has no list."""
        if record.outcome == Outcome.NO_TICKER:
            self.no_ticker += 1
        else:
            self.with_ticker += 1
        listed = {
            Outcome.UNDATED: self.undated,
            Outcome.INCONSISTENT: self.inconsistent,
            Outcome.PARTIAL: self.partial,
            Outcome.BAD_DATE: self.bad_dates,
        }.get(Outcome(record.outcome))
        if listed is None:
            return False
        if limit is None or len(listed) < limit:
            listed.append((record.origin, detail_line(record.detail)))
        return True


@dataclass(frozen=True, slots=True)
class Attempt:
    """One fetch of one source and what came of it."""

    id: str  # a UUID made by ticker, so a late (spooled) record is never doubled
    source: str
    url: str
    started_at: datetime  # aware; also the capture time of the page
    duration: float  # seconds
    outcome: str
    http_status: int | None = None
    nbytes: int = 0
    error: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    final_url: str | None = None
    archive_path: str | None = None
    capture_id: int | None = None
    new: int = 0
    already: int = 0
    revised: int = 0

    @property
    def success(self) -> bool:
        return self.outcome in SUCCESS_OUTCOMES


@dataclass(frozen=True, slots=True)
class Day:
    """One day of a pair's daily series: the latest capture's values, as printed."""

    source: str
    pair: str
    date: date
    rate: str  # as printed: "0.00199"
    change: str | None  # as printed: "-0"; None where the source publishes no change
    publisher: str | None = None  # who published it, where the source says so ("NBK")

    @property
    def rate_value(self) -> Decimal:
        return Decimal(self.rate)

    @property
    def change_value(self) -> Decimal | None:
        return None if self.change is None else Decimal(self.change)

    def as_dict(self) -> dict[str, Any]:
        """The row of an export and of `--json` output."""
        return {
            "source": self.source,
            "pair": self.pair,
            "date": self.date.isoformat(),
            "rate": self.rate,
            "change_pct": self.change,
        }


@dataclass(frozen=True, slots=True)
class Series:
    """A pair's daily series from one source, oldest first."""

    source: str
    pair: str
    days: tuple[Day, ...] = field(default_factory=tuple)
