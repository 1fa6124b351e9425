"""Parse stage: page text in, a Reading out. One pure function for every kind of input."""

from __future__ import annotations

import codecs
import email.message
import re
from collections import Counter
from datetime import date

from ticker.models import Outcome, Quote, Reading

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
# Readings of the blocks seen lately (a memo: parse_text stays a function of its text).
_BLOCKS: dict[str | tuple[str, int, int, str], _BlockReading] = {}
_LAST_BLOCK: list[tuple[str, _BlockReading] | None] = [None]  # the last block, its text


def parse_text(text: str) -> Reading:
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
    last = _LAST_BLOCK[0]
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
    known = _BLOCKS.get(block)
    if known is None:
        if len(_BLOCKS) >= 256:
            _BLOCKS.clear()
        known = _BLOCKS[block] = _read_lines(lines, odd)
    _LAST_BLOCK[0] = None if ends_odd else (text[start:end], known)
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


# --- bytes to text -------------------------------------------------------------------------

_HTML_SNIFF = re.compile(
    rb"^(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*"
    rb"<(?:!doctype\s+html|html|head|body|meta|title|link|script|div|ul)\b",
    re.I | re.S,
)
_HTML_SNIFF_TEXT = re.compile(_HTML_SNIFF.pattern.decode("latin-1"), re.I | re.S)
_BLOCK_TAGS = frozenset(
    """address article aside blockquote body br dd details div dl dt fieldset figcaption figure
    footer form h1 h2 h3 h4 h5 h6 header hr li main nav ol p pre section summary table tbody
    td tfoot th thead tr ul option title marquee""".split()
)
_DROP_TAGS = ("script", "style", "noscript", "template", "svg", "head")


# Encodings a page may declare, as Python names: the WHATWG Encoding Standard's. Other
# codecs Python knows (utf-7, unicode_escape, rot13) are no page encodings.
_WEB_ENCODINGS = frozenset(
    """utf-8 utf-16 utf-16-le utf-16-be cp866 iso8859-2 iso8859-3 iso8859-4 iso8859-5
    iso8859-6 iso8859-7 iso8859-8 iso8859-10 iso8859-13 iso8859-14 iso8859-15 iso8859-16
    koi8-r koi8-u mac-roman mac-cyrillic cp874 cp1250 cp1251 cp1252 cp1253 cp1254 cp1255
    cp1256 cp1257 cp1258 gbk gb18030 big5 euc_jp iso2022_jp shift_jis euc_kr""".split()
)
# WHATWG reads these labels as other encodings: latin-1 and ASCII pages are windows-1252
# (whose 0x80-0x9f hold the ticker's bullet "\u2022", dashes and quotes), and so on.
_WEB_ALIASES = {
    "iso8859-1": "cp1252",
    "ascii": "cp1252",
    "iso8859-9": "cp1254",
    "iso8859-11": "cp874",
    "tis-620": "cp874",
    "gb2312": "gbk",
    "windows-874": "cp874",
    "x-mac-cyrillic": "mac-cyrillic",
}
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
# <meta charset="x"> and <meta http-equiv="Content-Type" content="text/html; charset=x">
_META_CHARSET = re.compile(rb"<meta\s[^>]*?charset\s*=\s*[\"']?\s*([A-Za-z0-9._:-]{1,40})", re.I)
_META_SCAN = 64 * 1024  # where a <meta charset> may be: the head, not the whole page


def web_encoding(label: str | None) -> str | None:
    """The Python codec of an encoding label a page or server declares, or None when it
    names no page encoding."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower()[:40]
    try:
        name = _WEB_ALIASES.get(label) or codecs.lookup(label).name
    except LookupError:
        return None
    name = _WEB_ALIASES.get(name, name)
    return name if name in _WEB_ENCODINGS else None


def _http_charset(content_type: str | None) -> str | None:
    if not content_type:
        return None
    header = email.message.Message()
    header["content-type"] = content_type
    return web_encoding(header.get_content_charset())


def page_encoding(body: bytes, content_type: str | None = None) -> tuple[str | None, int]:
    """The encoding a page declares, as the WHATWG Encoding Standard reads it, and the
    length of its byte-order mark: the byte-order mark wins; then the charset of the HTTP
    Content-Type; then a <meta charset>. None when the page declares none."""
    for bom, codec in _BOMS:
        if body.startswith(bom):
            return codec, len(bom)
    declared = _http_charset(content_type)
    if declared is None:
        meta = _META_CHARSET.search(body, 0, _META_SCAN)
        declared = web_encoding(meta.group(1).decode("ascii")) if meta else None
        if declared is not None and declared.startswith("utf-16"):
            declared = "utf-8"  # a <meta> readable as ASCII is not in UTF-16 (WHATWG)
    return declared, 0


def looks_like_html(body: bytes | str, content_type: str | None = None) -> bool:
    if content_type:
        return "html" in content_type.lower()
    if isinstance(body, str):
        return _HTML_SNIFF_TEXT.match(body[:2048]) is not None
    return _HTML_SNIFF.match(body[:2048]) is not None


def decode(body: bytes, content_type: str | None = None) -> str:
    """Bytes to str in the encoding the page declares (page_encoding); else UTF-8 when the
    bytes are valid UTF-8, else windows-1252 (as browsers read an undeclared page). Bytes
    not valid in the encoding become U+FFFD: the ASCII ticker of a page declared wrongly
    survives."""
    codec, bom = page_encoding(body, content_type)
    if codec is not None:
        return body[bom:].decode(codec, errors="replace")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("cp1252", errors="replace")


def html_to_text(body: bytes | str, content_type: str | None = None) -> str:
    """Render HTML to text the way a browser's 'save as text' would: blocks on lines.
    Bytes are decoded first (decode: the byte-order mark, the HTTP charset, the <meta
    charset>, then UTF-8 or windows-1252).

    The tree is only read, never modified, so odd characters in a page cannot upset lxml.
    """
    import lxml.etree
    import lxml.html

    text = body if isinstance(body, str) else decode(body, content_type)
    if not text.strip():
        return ""
    # libxml2 gets UTF-8 and is told so: it then ignores the page's own <meta charset>,
    # which decode has already honoured (or overruled, for a BOM or an HTTP charset).
    data = text.encode("utf-8", errors="replace")
    # huge_tree: libxml2 otherwise stops at ~256 nested elements and drops the rest.
    parser = lxml.html.HTMLParser(
        huge_tree=True, remove_comments=True, remove_pis=True, encoding="utf-8"
    )
    try:
        root = lxml.html.document_fromstring(data, parser=parser)
    except (lxml.etree.ParserError, ValueError):
        return ""
    out: list[str] = []
    walker = lxml.etree.iterwalk(root, events=("start", "end"))
    for event, el in walker:
        tag = el.tag
        name = tag.lower() if isinstance(tag, str) else ""
        if event == "start":
            if name in _DROP_TAGS:
                walker.skip_subtree()
                continue
            if name in _BLOCK_TAGS:
                out.append("\n")
            if el.text and name:
                out.append(el.text)
        else:
            if name in _BLOCK_TAGS:
                out.append("\n")
            if el.tail:
                out.append(el.tail)
    return "".join(out)


def page_text(body: bytes, content_type: str | None = None) -> str:
    """The text the parser reads: decoded, and through an HTML parser when it is HTML
    (by its Content-Type, else by how it starts once decoded: UTF-16 HTML too)."""
    text = decode(body, content_type)
    if looks_like_html(text, content_type):
        return html_to_text(text)
    return text
