"""Every page the tests use, built here: the ticker block and the pages around it (a text
dump, HTML as served, gzip, WARC), a plausible simulated series of daily quotes, and
dumps written from it. Nothing is read from outside the checkout.

The quotes of 20 March and 9 December 2025 are facts (FORMAT.md); every other rate is
invented, and every line around the ticker is filler of our own.

A quote is given as a `Quote`, or as a tuple (name, rate, change) where the name is a
pair ("KZT/USD") or a base against the dollar ("KZT").
"""

from __future__ import annotations

import gzip
import io
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

PAIRS = ("KGS/USD", "KZT/USD", "TJS/USD", "UZS/USD", "TMT/USD")
MONTHS = (
    "January February March April May June July August September October November December"
).split()

# The quotes of 20 March 2025 and 9 December 2025 (facts): base, rate, change.
MARCH_20 = (
    ("KGS", "0.01164", "0.87"),
    ("KZT", "0.00199", "-0"),
    ("TJS", "0.09168", "-0.11"),
    ("UZS", "0.00008", "0"),
    ("TMT", "0.28573", "-0.14"),
)
DEC_09 = (
    ("KGS", "0.01144", "0"),
    ("KZT", "0.00194", "-0"),
    ("TJS", "0.10844", "-0.46"),
    ("UZS", "0.00008", "0"),
    ("TMT", "0.28571", "0.28"),
)
# An older page (14 June 2023, invented rates): four pairs, TMT/USD had not joined yet.
FOUR_PAIRS = (
    ("KGS", "0.01143", "0.05"),
    ("KZT", "0.00224", "-0.23"),
    ("TJS", "0.09174", "0"),
    ("UZS", "0.00009", "-0"),
)

# Filler of our own: nothing here comes from a real article. The last paragraph mentions
# currencies in prose, which is not a ticker.
FILLER = (
    "The morning train to the invented town of Arbuz left twelve minutes late, and the "
    "conductor spent the delay explaining the timetable to a goat. ",
    "At the weekly market the apricot sellers moved to the shady side of the square; the "
    "tea stall followed them by noon. ",
    "A committee met to discuss the colour of the new footbridge and agreed to meet again. ",
    "The tenge and the som are mentioned in prose here, 1 USD = 520 KZT, which is not a ticker. ",
)
NOT_A_TICKER = "The tenge fell to 520 per dollar, 1 USD = 12,600 UZS, says nobody. USD/KZT"
LISTING = "Viewing results 1 - 6 of 111"  # what a listing page prints after the ticker
ARTICLE_DATE = "18 March 2025"  # an article's own date, further down: never the quotes'


# --- quotes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quote:
    pair: str
    rate: str
    change: str

    def line(self) -> str:
        """The quote as a text dump prints it, one line of the marquee."""
        return f"  \u2022 {self.pair} = {self.rate} {self.change}%"


QuoteLike = Quote | tuple[str, str, str]


def quotes_of(quotes: Iterable[QuoteLike]) -> list[Quote]:
    """Quotes from Quote objects or (name, rate, change) tuples; a bare base is against USD."""
    out = []
    for q in quotes:
        if not isinstance(q, Quote):
            name, rate, change = q
            q = Quote(name if "/" in name else f"{name}/USD", rate, change)
        out.append(q)
    return out


def date_line(day: date) -> str:
    """A date as the site prints it under the ticker: "05 March 2025"."""
    return f"{day.day:02d} {MONTHS[day.month - 1]} {day.year}"


def _printed(day: str | date) -> str:
    return day if isinstance(day, str) else date_line(day)


# --- a simulated series -----------------------------------------------------------------------

# A starting rate (US dollars per unit) and a daily volatility for each pair.
WALK = {
    "KGS/USD": (0.01164, 0.002),
    "KZT/USD": (0.00199, 0.004),
    "TJS/USD": (0.09168, 0.003),
    "UZS/USD": (0.0000751, 0.001),  # near a rounding edge: prints 0.00008 or 0.00007
    "TMT/USD": (0.28573, 0.00005),
}


@dataclass(frozen=True)
class DayQuotes:
    date: date
    quotes: tuple[Quote, ...]

    def by_pair(self) -> dict[str, Quote]:
        return {q.pair: q for q in self.quotes}


def printed_change(true_pct: float) -> str:
    """The site's way: rounded half up to 2 decimals, trailing zeros dropped, "-0" kept."""
    rounded = Decimal(repr(true_pct)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if rounded == 0:
        return "-0" if true_pct < 0 else "0"
    return format(rounded.normalize(), "f")


def simulate(
    start: date, days: int, pairs: tuple[str, ...] = PAIRS, seed: int = 1
) -> list[DayQuotes]:
    """A consistent daily series: rates printed to 5 decimals from a random walk, and
    each day's change computed from the unrounded rates, the way the site prints it."""
    rng = random.Random(seed)
    true = {p: WALK[p][0] for p in pairs}
    out = []
    for i in range(days):
        quotes = []
        for p in pairs:
            prev = true[p]
            true[p] = prev * (1 + rng.gauss(0, WALK[p][1]))
            quotes.append(Quote(p, f"{true[p]:.5f}", printed_change((true[p] / prev - 1) * 100)))
        out.append(DayQuotes(start + timedelta(days=i), tuple(quotes)))
    return out


# --- text dumps -------------------------------------------------------------------------------


def ticker_block(
    quotes: Iterable[QuoteLike], copies: int = 8, first_indent: str = "", newline: str = "\n"
) -> str:
    """The marquee as a text dump shows it: `copies` copies of the quotes, one a line; the
    first line starts at the bullet (after `first_indent`)."""
    lines = [q.line() for q in quotes_of(quotes)] * copies
    if lines:
        lines[0] = first_indent + lines[0].lstrip()
    return newline.join(lines) + newline


def text_page(
    quotes: Iterable[QuoteLike] = MARCH_20,
    day: str | date | None = "20 March 2025",
    note: str = "",
    copies: int = 8,
) -> str:
    """A text dump: the ticker block, the site's date line (None: a listing page, undated),
    the article's own date, `note` (to tell pages apart), filler."""
    after = _printed(day) if day is not None else LISTING
    filler = "".join(f"{p.rstrip()}\n" for p in FILLER)
    return f"{ticker_block(quotes, copies)}{after}\n{ARTICLE_DATE}\n\n{note}\n{filler}"


def no_ticker_page(markup: bool = True) -> str:
    """A page without the ticker (another site, or the site under maintenance) that talks
    about currencies in prose: HTML, or (markup=False) a text dump."""
    if not markup:
        return f"Analysis | a page of another site\n\n{FILLER[1]}\n{NOT_A_TICKER}\n"
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Maintenance</title></head>"
        "<body><header><a href='/'>Logo</a></header><main><h1>Back soon</h1><p>"
        + FILLER[1] * 10
        + f"{NOT_A_TICKER}</p></main></body></html>"
    )


# --- HTML -------------------------------------------------------------------------------------


def html_page(
    quotes: Iterable[QuoteLike] = MARCH_20,
    day: str | date | None = "20 March 2025",
    note: str = "",
    copies: int = 8,
    paragraphs: int = 12,
    kb: int | None = None,
) -> str:
    """A news page as served: the ticker marquee in the header (`copies` copies), the date
    line after it (None: a listing page, undated), then an article of `paragraphs`
    paragraphs of filler (or as many as make about `kb` KB) with its own date."""
    quotes = quotes_of(quotes)
    if kb is not None:
        none = len(html_page(quotes, day, note, copies, 0))
        cycle = len(html_page(quotes, day, note, copies, len(FILLER))) - none
        paragraphs = max(1, round((kb * 1024 - none) * len(FILLER) / cycle))
    items = []
    for _ in range(copies):
        for q in quotes:
            cls = "down" if q.change.startswith("-") else "up"
            items.append(
                f"      <li><span>{q.pair}</span> = <span>{q.rate}</span> "
                f'<span class="{cls}">{q.change}%</span></li>'
            )
    if day is None:
        date_div = f'    <div class="results">{LISTING}</div>\n'
    else:
        date_div = f'    <div class="header-date">{_printed(day)}</div>\n'
    body = "\n".join(f"      <p>{FILLER[i % len(FILLER)] * 3}</p>" for i in range(paragraphs))
    title = "An invented story about a footbridge" + (f" {note}" if note else "")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<title>An invented story | The Times of Central Asia</title>\n"
        "<style>.up{color:#090}.down{color:#c00}</style>\n"
        "<script>window.dataLayer = window.dataLayer || [];</script>\n</head>\n<body>\n"
        '  <header class="site-header">\n    <div class="currency-ticker">\n'
        '    <ul class="marquee">\n'
        + "\n".join(items)
        + "\n    </ul>\n    </div>\n"
        + date_div
        + '    <nav><ul><li><a href="/news">News</a></li><li><a href="/opinion">Opinion</a>'
        "</li></ul></nav>\n  </header>\n  <main>\n    <article>\n"
        f'      <h1>{title}</h1>\n      <p class="posted">{ARTICLE_DATE}</p>\n'
        + body
        + "\n    </article>\n  </main>\n  <footer>Filler footer text.</footer>\n</body>\n</html>\n"
    )


def bullet_page(
    quotes: Iterable[QuoteLike] = MARCH_20,
    day: str | date = "20 March 2025",
    head: str = "",
    prose: str = "Курс тенге",
    bullet: str = "\u2022",
) -> str:
    """A page as a Cyrillic news site may serve it: the ticker lines start with a bullet,
    and there is no charset unless `head` gives one."""
    items = "".join(f"<li>{bullet} {q.pair} = {q.rate} {q.change}%</li>" for q in quotes_of(quotes))
    return (
        f"<!DOCTYPE html><html><head>{head}</head><body><header><ul>{items * 8}</ul>"
        f"<div>{_printed(day)}</div></header><p>{prose}</p></body></html>"
    )


def changed_markup_page(
    quotes: Iterable[QuoteLike] = MARCH_20, day: str | date = "20 March 2025"
) -> str:
    """The ticker redesigned: figures in data attributes and a table, no 'PAIR = RATE'."""
    rows = "".join(
        f'<tr data-pair="{q.pair}"><td class="c">{q.pair.split("/")[0]}</td>'
        f'<td data-rate="{q.rate}"></td><td>{q.change}</td></tr>'
        for q in quotes_of(quotes)
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>TCA</title></head><body>"
        f"<header><table class='fx-widget'>{rows}</table>"
        f"<div class='header-date'>{_printed(day)}</div></header>"
        "<main><p>" + FILLER[0] * 20 + "</p></main></body></html>"
    )


# --- containers: gzip, WARC -------------------------------------------------------------------


def gz(data: str | bytes) -> bytes:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return gzip.compress(raw, mtime=0)


@dataclass(frozen=True)
class WarcRecord:
    """One record for warc_bytes: a response (an HTTP status line and headers) or other."""

    body: str | bytes
    date: datetime | None = None  # aware; None leaves warcio's own WARC-Date (now)
    url: str = "https://timesca.com/"
    status: str = "200 OK"
    content_type: str = "text/html; charset=utf-8"
    rec_type: str = "response"


def warc_bytes(records: Sequence[WarcRecord], compress: bool) -> bytes:
    """A WARC file written with warcio's WARCWriter (gzip members when compress)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=compress)
    for rec in records:
        body = rec.body.encode("utf-8") if isinstance(rec.body, str) else rec.body
        headers = None
        if rec.rec_type == "response":
            headers = StatusAndHeaders(
                rec.status, [("Content-Type", rec.content_type)], protocol="HTTP/1.1"
            )
        record = writer.create_warc_record(
            rec.url,
            rec.rec_type,
            payload=io.BytesIO(body),
            http_headers=headers,
            warc_content_type="text/plain" if rec.rec_type == "resource" else None,
        )
        if rec.date is not None:
            stamp = rec.date.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            record.rec_headers.replace_header("WARC-Date", stamp)
        writer.write_record(record)
    return buf.getvalue()


# --- dumps on disk ----------------------------------------------------------------------------


def write_dumps(
    root: Path, days: list[DayQuotes], per_dir: int = 500, prefix: str = "page"
) -> list[Path]:
    """One text dump per day under root/NNN/, in date order (the order backfill reads them)."""
    paths = []
    for i, day in enumerate(days):
        sub = root / f"{i // per_dir:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"{prefix}_{i:06d}.txt"
        path.write_text(text_page(day.quotes, day.date), encoding="utf-8")
        paths.append(path)
    return paths
