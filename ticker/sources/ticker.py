"""The page-header ticker of a news site: pages (HTML or text) in, a Record of the day's
quotes out.

`parse_text` reads the ticker block at the top of a page's text and the date line after
it: a plain function of its text. `TickerReader.read` decodes a page, parses it, keeps
the configured pairs and decides the date the quotes are stored under.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import date, datetime
from typing import TYPE_CHECKING, ClassVar

from ticker.config import PAIR_RE
from ticker.models import Observation, Outcome, Page, Quote, Reading, Record, bounded_detail
from ticker.sources.base import capture_time, content_hash, page_key, too_late
from ticker.text import page_text

if TYPE_CHECKING:
    from ticker.config import Source

# Part of every page's and file's load key: bump it when a page may read differently, so
# a re-run of backfill parses what is already loaded again.
PARSER_VERSION = 3

# One ticker line: "KGS/USD = 0.01164 0.87%". Tokens may be split over lines because
# an HTML rendering can put each <span> on a line of its own.
_WS = r"[ \t\r\n\u00a0\u2009\u202f]"
_QUOTE_RE = re.compile(
    rf"(?<![A-Za-z0-9/])([A-Z]{{3}})/([A-Z]{{3}}){_WS}*={_WS}*([^\s%=]+){_WS}+([^\s%=]+){_WS}*%"
)
# Between two lines of the block: whitespace and list bullets only.
_SEP = r"[\s\u00a0\u2009\u202f•·●▪◦*|\-–—]*"
_NEXT_RE = re.compile(_SEP + _QUOTE_RE.pattern)
# A line shaped like a ticker line whose pair or numbers are not readable ("../USD = 0.1
# 1%", "kzt/USD = ..."): reported and skipped, so the rest of the block is still read.
_ODD_LINE_RE = re.compile(_SEP + r"([^\n=%/]{0,12}/[^\n=%]{0,12}=[^\n%]{1,40}%)[ \t]*(?=\r?\n|$)")
# A cheap scan for where a quote could start: "/USD =" (a literal first character is fast).
_CANDIDATE_RE = re.compile(rf"/[A-Z]{{3}}{_WS}*=")
# ASCII digits only: \d also matches "０" or "٠", which Decimal reads but DuckDB refuses.
_RATE_RE = re.compile(r"^\d{1,9}\.\d{1,10}$|^\d{1,9}$", re.ASCII)
_CHANGE_RE = re.compile(r"^[+-]?\d{1,6}(?:\.\d{1,4})?$", re.ASCII)
_MONTHS = {
    name: i
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        start=1,
    )
    for name in names
}
# "20 March 2025"; a weekday before it ("Thursday, 20 March 2025") is allowed.
_DATE_RE = re.compile(
    r"^(?:(?:mon|tue|tues|wed|wednes|thu|thurs|fri|sat|satur|sun)(?:day)?\.?,?\s+)?"
    r"([0-9]{1,2})\s+([A-Za-z]{3,9})\.?,?\s+([0-9]{4})$",
    re.IGNORECASE,
)
_MINUS = str.maketrans({"\u2212": "-", "\u2013": "-"})
_NOTHING = Reading(Outcome.NO_TICKER)
# What a block's lines read as: quotes, problems, copies, whether the copies disagree,
# and the lines that could not be read (Reading.unreadable).
_BlockReading = tuple[tuple[Quote, ...], tuple[str, ...], int, bool, tuple[str, ...]]
_SHOWN_VARIANTS = 4  # versions of a pair named in a "copies disagree" problem


class BlockCache:
    """The readings of ticker blocks seen lately, kept by a caller that parses many pages
    in a row (a backfill worker): pages of one day print the same block, and a block's
    reading is a function of its text. parse_text reads the same with or without one."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.blocks: dict[str | tuple[str, int, int, str], _BlockReading] = {}
        self.last: tuple[str, _BlockReading] | None = None  # the last block, its text


def parse_text(text: str, cache: BlockCache | None = None) -> Reading:
    """Read the ticker block at the top of a page's text, and the date line after it."""
    first = None
    for candidate in _CANDIDATE_RE.finditer(text):
        first = _QUOTE_RE.match(text, max(candidate.start() - 3, 0))
        if first is not None:
            break
    if first is None:
        return _NOTHING
    start = first.start()
    # Pages read one after another mostly print the block of the page before. Its lines
    # come out the same when the text is the same up to where that block ended and the
    # block goes no further here (a match depends only on the text after the one before;
    # a block ending in an odd line is not kept, as that match looks past its end).
    last = cache.last if cache is not None else None
    if last is not None and text.startswith(last[0], start):
        end = start + len(last[0])
        if _NEXT_RE.match(text, end) is None and _ODD_LINE_RE.match(text, end) is None:
            return _reading(text, end, last[1])

    lines: list[tuple[str, str, str, str]] = [first.groups()]  # type: ignore[list-item]
    end = cycle_start = first.end()
    repeats_checked = ends_odd = False
    repeats: tuple[str, int, int, int] | None = None  # the block's text, told shortly
    odd: dict[str, None] = {}
    while True:
        match = _NEXT_RE.match(text, end)
        if match is None:
            loose = _ODD_LINE_RE.match(text, end)
            if loose is None:
                break
            odd[loose.group(1).strip()[:60]] = None
            end = loose.end()
            ends_odd = True
            continue
        line: tuple[str, str, str, str] = match.groups()  # type: ignore[assignment]
        lines.append(line)
        end = match.end()
        ends_odd = False
        if not repeats_checked and line == lines[0]:
            # The marquee repeats its lines verbatim. Where the text after this line is an
            # exact copy of lines[1:], the matches there would be the same (a match depends
            # only on the text after the previous one), so count copies by string compare.
            repeats_checked = True
            period, cycle = text[cycle_start:end], lines[1:]
            head, copies = text[start:end], 0
            while text.startswith(period, end):
                lines.extend(cycle)
                end += len(period)
                copies += 1
            repeats = (head, cycle_start - start, copies, end)

    if cache is None:
        return _reading(text, end, _read_lines(lines, odd))
    # Pages of one day print the same block: its lines are a function of its text, so
    # their reading is kept. The key tells that text without hashing all the copies: the
    # first line and one period of the marquee, how many more periods followed, and the
    # text after them.
    block: str | tuple[str, int, int, str]
    if repeats is None:
        block = text[start:end]
    else:
        head, first_line, copies, after = repeats
        block = (head, first_line, copies, text[after:end])
    known = cache.blocks.get(block)
    if known is None:
        if len(cache.blocks) >= cache.size:
            cache.blocks.clear()
        known = cache.blocks[block] = _read_lines(lines, odd)
    cache.last = None if ends_odd else (text[start:end], known)
    return _reading(text, end, known)


def _reading(text: str, end: int, known: _BlockReading) -> Reading:
    """The Reading of a page whose block ends at `end` and reads as `known`."""
    quotes, block_problems, copies, disagree, unreadable = known
    problems = list(block_problems)
    page_date, date_problem = _date_after(text, end)
    if date_problem:
        problems.append(date_problem)
    if disagree:
        outcome = Outcome.INCONSISTENT
    elif not quotes:
        outcome = Outcome.NO_TICKER
    elif page_date is None:
        outcome = Outcome.UNDATED
    else:
        outcome = Outcome.OK
    return Reading(outcome, quotes, page_date, copies, tuple(problems), unreadable)


def _read_lines(lines: list[tuple[str, str, str, str]], odd: dict[str, None]) -> _BlockReading:
    """The quotes of a block's lines, its problems, its copies and whether they disagree."""
    # The marquee repeats the block: validate each distinct line once.
    problems: list[str] = [f"unreadable ticker line {o!r}; ignored" for o in odd]
    unreadable: list[str] = ["?"] * len(odd)
    quotes: dict[str, Quote] = {}
    variants: dict[str, set[tuple[str, str]]] = {}
    counts: dict[str, int] = {}
    for (base, quote, rate, change), n in Counter(lines).items():
        pair = f"{base}/{quote}"
        rate, change = rate.translate(_MINUS), change.translate(_MINUS)
        variants.setdefault(pair, set()).add((rate, change))
        bad = _number_problem(pair, rate, change)
        if bad:
            problems.append(bad)
            unreadable.append(pair)
            continue
        counts[pair] = counts.get(pair, 0) + n
        quotes.setdefault(pair, Quote(base, quote, rate, change))

    disagree = sorted(p for p, v in variants.items() if len(v) > 1)
    for pair in disagree:
        seen = sorted(variants[pair])
        shown = ", ".join(f"{r[:20]} {c[:20]}%" for r, c in seen[:_SHOWN_VARIANTS])
        if len(seen) > _SHOWN_VARIANTS:
            shown += f", ... {len(seen)} versions in all"
        problems.append(f"{pair}: copies disagree ({shown})")
    # A pair whose only copies were malformed yields no quote: it is missing, not zero.
    copies = max(counts.values(), default=0)
    return tuple(quotes.values()), tuple(problems), copies, bool(disagree), tuple(unreadable)


def _number_problem(pair: str, rate: str, change: str) -> str | None:
    if not _RATE_RE.match(rate):
        return f"{pair}: malformed rate {rate[:20]!r}"
    if not _CHANGE_RE.match(change):
        return f"{pair}: malformed change {change[:20]!r}%"
    if not rate.strip("0."):
        return f"{pair}: rate {rate!r} is zero"
    return None


def _date_after(text: str, pos: int) -> tuple[date | None, str | None]:
    """The page's 'today' date: the first non-blank line after the block, if it is one."""
    rest = text[pos : pos + 400]
    for raw in rest.splitlines():
        line = raw.strip(" \t\r\n\u00a0\u2009\u202f•·")
        if not line:
            continue
        m = _DATE_RE.match(line)
        if m is None:
            return None, None
        month = _MONTHS.get(m.group(2).lower())
        if month is None:
            return None, None
        try:
            return date(int(m.group(3)), month, int(m.group(1))), None
        except ValueError:
            return None, f"date line {line!r} is not a real date"
    return None, None


class TickerReader:
    """The ticker kind's reader: a page's quotes of the source's configured pairs, dated
    by the page's date line, else its capture time, else the date the user gives."""

    kind: ClassVar[str] = "ticker"
    version: ClassVar[int] = PARSER_VERSION
    media_types: ClassVar[tuple[str, ...]] = ("text/html", "application/xhtml+xml", "text/plain")
    noun: ClassVar[str] = "page"

    def __init__(self, *, cache: bool = False) -> None:
        self.cache = BlockCache() if cache else None

    def read(
        self, page: Page, source: Source, *, now: datetime, given_date: date | None = None
    ) -> Record:
        """Parse one page and decide the date its quotes are stored under. A date that
        cannot be right (more than a day after the capture time, after today for a page
        without one, or a capture time that is no usable time) stores nothing: outcome
        bad_date."""
        digest = content_hash(page.body)
        reading = parse_text(page_text(page.body, page.content_type), self.cache)
        problems = list(reading.problems)
        quotes = []
        for q in reading.quotes:
            if q.pair in source.pairs:
                quotes.append(q)
            elif PAIR_RE.match(q.pair):
                problems.append(f"{q.pair} is not a configured pair of {source.name}; ignored")
        captured, captured_day, bad_date = capture_time(page, source, now)
        outcome = reading.outcome.value
        quote_date: date | None = None
        basis: str | None = None
        if reading.outcome in (Outcome.OK, Outcome.UNDATED) and quotes:
            if reading.date is not None:
                quote_date, basis = reading.date, "header"
            elif captured_day is not None:
                quote_date, basis = captured_day, "capture"
            elif given_date is not None:
                quote_date, basis = given_date, "given"
            if bad_date is None and quote_date is not None:
                bad_date = too_late(quote_date, basis, captured_day, source, now)
            # Partial: a configured pair is missing and a line that could be its is
            # unreadable (one naming it, or one whose pair cannot be made out).
            missing = set(source.pairs) - {q.pair for q in quotes}
            unread = [u for u in reading.unreadable if u in missing or (u == "?" and missing)]
            if bad_date is not None:
                outcome, quote_date, basis = Outcome.BAD_DATE.value, None, None
            elif quote_date is None:
                outcome = Outcome.UNDATED.value
            elif unread:
                outcome = Outcome.PARTIAL.value
            else:
                outcome = Outcome.OK.value
        elif reading.outcome is Outcome.OK and not quotes:
            outcome = Outcome.NO_TICKER.value
            problems.append(f"no configured pair of {source.name} in the ticker")
        if bad_date is not None:
            problems.insert(0, bad_date)
        observations = (
            tuple(Observation(q.pair, quote_date, q.rate, q.change) for q in quotes)
            if quote_date
            else ()
        )
        return Record(
            page_key=page_key(source.name, digest, page.captured_at, quote_date, self.version),
            source=source.name,
            origin=page.origin,
            url=page.url,
            captured_at=captured,
            content_hash=digest,
            outcome=outcome,
            header_date=reading.date,
            quote_date=quote_date,
            date_basis=basis,
            parser_version=self.version,
            copies=reading.copies,
            detail=bounded_detail(problems),
            observations=observations,
        )
