"""Records passed between the stages: pages in, readings out, series for charts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum


class Outcome(StrEnum):
    """What became of one page. The parser gives the first four; the pipeline, which
    knows the configured pairs and the clock, adds partial and bad_date."""

    OK = "ok"
    NO_TICKER = "no_ticker"
    UNDATED = "undated"
    INCONSISTENT = "inconsistent"
    PARTIAL = "partial"  # stored, but ticker lines of configured pairs were unreadable
    BAD_DATE = "bad_date"  # a date or capture time that cannot be right; nothing stored


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
    """What one page says: its quotes (one per pair), header date and outcome."""

    outcome: Outcome
    quotes: tuple[Quote, ...] = ()
    date: date | None = None
    copies: int = 0
    problems: tuple[str, ...] = ()  # malformed lines, disagreeing copies, bad date lines
    # Ticker lines that could not be read: the pair each names (BASE/QUOTE), or "?" when
    # the pair itself is unreadable.
    unreadable: tuple[str, ...] = ()


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
class Point:
    """One day of a pair's daily series, as stored."""

    date: date
    rate: Decimal  # US dollars per one unit of the base currency
    rate_text: str
    change: Decimal  # the day's change in percent, as printed
    change_text: str


@dataclass(frozen=True, slots=True)
class Series:
    """A pair's daily series from one source, oldest first."""

    source: str
    pair: str
    points: tuple[Point, ...] = field(default_factory=tuple)
