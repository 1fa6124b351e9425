"""Parser tests: fixtures against expected.json, hand-picked rules, and properties.

The fixtures are described in tests/fixtures/README.md. Text dumps go through
`parse_text` (and, as the pipeline reads them, through `page_text` first); HTML pages go
through `page_text` and then `parse_text`.
"""

from __future__ import annotations

import json
import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pages import MARCH_20, PAIRS, bullet_page, date_line, ticker_block

from ticker.models import Outcome, Quote, Reading
from ticker.sources.ticker import BlockCache, parse_text
from ticker.text import page_text

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED: dict[str, dict] = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
TEXT_FILES = sorted((FIXTURES / "dumps").glob("*.txt"))
HTML_FILES = sorted((FIXTURES / "html").glob("*.html"))

PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Inputs that broke an early parse.py are kept as regression tests: odd lines inside the
# block (odd_pair.txt), a byte-order mark or an XML declaration before the doctype
# (tca_bom.html), nesting deeper than libxml2's default limit, control characters in HTML.


# --- helpers --------------------------------------------------------------------------------


def as_expected(reading: Reading) -> dict:
    """A Reading in the shape of an expected.json entry."""
    return {
        "outcome": reading.outcome.value,
        "date": reading.date.isoformat() if reading.date else None,
        "quotes": [[q.pair, q.rate, q.change] for q in reading.quotes],
        "problems": bool(reading.problems),
    }


def read_text_fixture(name: str) -> str:
    # Bytes, then decode: read_text() would turn the CRLF fixture's \r\n into \n.
    return (FIXTURES / "dumps" / name).read_bytes().decode("utf-8")


def parse_fixture(name: str) -> Reading:
    if name.endswith(".html"):
        return parse_text(page_text((FIXTURES / "html" / name).read_bytes()))
    return parse_text(read_text_fixture(name))


def check_invariants(reading: Reading) -> None:
    """What every Reading must satisfy, whatever the input."""
    assert isinstance(reading.outcome, Outcome)
    pairs = [q.pair for q in reading.quotes]
    assert len(pairs) == len(set(pairs)), "one quote per pair"
    if reading.outcome is Outcome.OK:
        assert reading.quotes and reading.date is not None
    if reading.outcome is Outcome.UNDATED:
        assert reading.quotes and reading.date is None
    if reading.outcome is Outcome.NO_TICKER:
        assert reading.quotes == ()
    if reading.quotes:
        assert reading.copies >= 1
    for q in reading.quotes:
        assert re.fullmatch(r"[A-Z]{3}", q.base) and re.fullmatch(r"[A-Z]{3}", q.quote)
        assert re.fullmatch(r"\d+(\.\d+)?", q.rate), q
        assert re.fullmatch(r"[+-]?\d+(\.\d+)?", q.change), q
        assert q.rate_value > 0
        assert q.change_value.is_finite()
    for p in reading.problems:
        assert isinstance(p, str) and p


_MINUS = str.maketrans({"\u2212": "-", "\u2013": "-"})


def literally_present(q: Quote, text: str) -> bool:
    """The text holds the line `BASE/QUOTE = RATE CHANGE%` this quote claims to come from."""
    pattern = (
        rf"(?<![A-Za-z0-9/]){q.base}/{q.quote}\s*=\s*{re.escape(q.rate)}"
        rf"\s+[+]?{re.escape(q.change.lstrip('+'))}\s*%"
    )
    return re.search(pattern, text.translate(_MINUS)) is not None


def assert_only_literal_quotes(text: str) -> Reading:
    reading = parse_text(text)
    check_invariants(reading)
    for q in reading.quotes:
        assert literally_present(q, text), f"{q} is not printed in the input"
    return reading


ROWS_0320 = [(f"{base}/USD", rate, change) for base, rate, change in MARCH_20]
REAL_BLOCK = ticker_block(ROWS_0320) + "20 March 2025\n18 March 2025\n"


# --- fixtures against expected.json ----------------------------------------------------------


def test_expected_json_names_every_fixture_and_nothing_else():
    names = [p.name for p in TEXT_FILES + HTML_FILES]
    assert len(names) == len(set(names)), "fixture names must be unique across dumps/ and html/"
    assert set(names) == set(EXPECTED)
    for name, exp in EXPECTED.items():
        assert set(exp) == {"outcome", "date", "quotes", "problems"}, name
        assert exp["outcome"] in {o.value for o in Outcome}, name


def test_fixture_set_is_complete():
    """At least the kinds of page the suite is meant to cover are there."""
    outcomes = {e["outcome"] for e in EXPECTED.values()}
    assert outcomes == {"ok", "no_ticker", "undated", "inconsistent"}
    assert len(TEXT_FILES) >= 13 and len(HTML_FILES) >= 7


@pytest.mark.parametrize("name", [p.name for p in TEXT_FILES])
def test_text_fixture(name):
    reading = parse_text(read_text_fixture(name))
    check_invariants(reading)
    assert as_expected(reading) == EXPECTED[name]


@pytest.mark.parametrize("content_type", [None, "text/plain", "text/plain; charset=utf-8"])
@pytest.mark.parametrize("name", [p.name for p in TEXT_FILES])
def test_text_fixture_through_page_text(name, content_type):
    """As the pipeline reads a .txt file: bytes through page_text, then parse_text."""
    body = (FIXTURES / "dumps" / name).read_bytes()
    reading = parse_text(page_text(body, content_type))
    assert as_expected(reading) == EXPECTED[name]


def _html_params():
    for p in HTML_FILES:
        for ctype in (None, "text/html; charset=UTF-8"):
            yield pytest.param(p.name, ctype, id=f"{p.name}-{ctype}")


@pytest.mark.parametrize(("name", "content_type"), list(_html_params()))
def test_html_fixture(name, content_type):
    text = page_text((FIXTURES / "html" / name).read_bytes(), content_type)
    assert isinstance(text, str)
    assert "<li" not in text and "<span" not in text, "HTML must be rendered, not read raw"
    reading = parse_text(text)
    check_invariants(reading)
    assert as_expected(reading) == EXPECTED[name]


@pytest.mark.parametrize(
    "name", [n for n, e in EXPECTED.items() if e["outcome"] in ("ok", "inconsistent")]
)
def test_fixture_copies(name):
    assert parse_fixture(name).copies == 8


# --- the rules, one by one ------------------------------------------------------------------


def test_real_page_reading():
    reading = parse_fixture("tca_2025-03-20.txt")
    assert reading == Reading(
        Outcome.OK,
        tuple(Quote(*pair.split("/"), rate, change) for pair, rate, change in ROWS_0320),
        date(2025, 3, 20),
        8,
        (),
    )


@pytest.mark.parametrize("name", ["tca_2025-03-20.txt", "tca_2025-12-09.txt", "tca_normal.html"])
def test_negative_zero_keeps_its_sign(name):
    quotes = {q.pair: q for q in parse_fixture(name).quotes}
    kzt = quotes["KZT/USD"]
    assert kzt.change == "-0"
    assert kzt.change_value.is_signed() and kzt.change_value == 0
    assert quotes["UZS/USD"].change in ("0", "-0")


def test_negative_zero_and_zero_are_different_readings():
    minus = parse_text(ticker_block([("KZT/USD", "0.00199", "-0")]) + "20 March 2025\n")
    plus = parse_text(ticker_block([("KZT/USD", "0.00199", "0")]) + "20 March 2025\n")
    assert minus.quotes[0].change == "-0"
    assert plus.quotes[0].change == "0"
    assert not plus.quotes[0].change_value.is_signed()
    assert minus != plus


@pytest.mark.parametrize("rate", ["0.00008", "0.00200", "0.10020", "0.28570", "1.00000", "0.01"])
def test_rates_keep_their_exact_digits(rate):
    reading = parse_text(ticker_block([("UZS/USD", rate, "0")]) + "09 December 2025\n")
    assert reading.outcome is Outcome.OK
    assert reading.quotes[0].rate == rate
    assert reading.quotes[0].rate_value == Decimal(rate)


def test_coarse_uzs_rate_is_not_given_invented_precision():
    quotes = {q.pair: q for q in parse_fixture("tca_2025-12-09.txt").quotes}
    assert quotes["UZS/USD"].rate == "0.00008"
    assert quotes["TJS/USD"].rate == "0.10844"


@pytest.mark.parametrize("name", ["tca_2023-06-14_4pairs.txt", "tca_4pairs.html"])
def test_four_pair_page_gives_four_quotes(name):
    reading = parse_fixture(name)
    assert reading.outcome is Outcome.OK
    assert [q.pair for q in reading.quotes] == ["KGS/USD", "KZT/USD", "TJS/USD", "UZS/USD"]
    assert reading.date == date(2023, 6, 14)


@pytest.mark.parametrize("name", ["tca_2025-03-20.txt", "tca_normal.html", "tca_entities.html"])
def test_header_date_wins_over_the_article_date(name):
    reading = parse_fixture(name)
    assert reading.date == date(2025, 3, 20)  # not the article's 18 March 2025


def test_first_date_after_the_block_wins_and_later_dates_are_ignored():
    text = ticker_block(ROWS_0320, 2) + "05 May 2024\n01 January 2020\n\n31 December 2030\n"
    assert parse_text(text).date == date(2024, 5, 5)


def test_blank_lines_between_block_and_date_are_skipped():
    text = ticker_block(ROWS_0320, 2) + "\n\n   \n05 May 2024\n"
    assert parse_text(text).date == date(2024, 5, 5)


@pytest.mark.parametrize("name", ["listing_undated.txt", "tca_listing_undated.html"])
def test_listing_page_is_undated_and_its_post_dates_are_not_used(name):
    reading = parse_fixture(name)
    assert reading.outcome is Outcome.UNDATED
    assert reading.date is None
    assert len(reading.quotes) == 5
    assert not reading.problems


def test_a_date_that_is_not_the_first_line_after_the_block_is_not_the_quotes_date():
    text = ticker_block(ROWS_0320, 1) + "Viewing results 1 - 6 of 111\n20 March 2025\n"
    reading = parse_text(text)
    assert reading.outcome is Outcome.UNDATED and reading.date is None


def test_an_impossible_date_line_is_a_problem_not_a_date():
    reading = parse_text(ticker_block(ROWS_0320, 2) + "31 February 2025\n")
    assert reading.date is None
    assert reading.outcome is Outcome.UNDATED
    assert any("31 February 2025" in p for p in reading.problems)


def test_copies_that_disagree_are_flagged_and_name_the_pair():
    reading = parse_fixture("inconsistent_copies.txt")
    assert reading.outcome is Outcome.INCONSISTENT
    disagreeing = [p for p in reading.problems if "KZT/USD" in p]
    assert disagreeing, reading.problems
    assert any("0.00198" in p and "0.00199" in p for p in disagreeing)
    for other in ("KGS/USD", "TJS/USD", "UZS/USD", "TMT/USD"):
        assert not any(other in p for p in reading.problems)


def test_disagreeing_change_alone_is_inconsistent():
    text = ticker_block(ROWS_0320, 3) + "  • KZT/USD = 0.00199 0%\n20 March 2025\n"
    reading = parse_text(text)
    assert reading.outcome is Outcome.INCONSISTENT
    assert any("KZT/USD" in p for p in reading.problems)


def test_malformed_number_is_reported_and_the_pair_is_missing_not_zero():
    reading = parse_fixture("malformed_number.txt")
    assert "KZT/USD" not in [q.pair for q in reading.quotes]
    assert len(reading.quotes) == 4
    assert any("KZT/USD" in p and "0.0O199" in p for p in reading.problems)
    assert all(q.rate_value > 0 for q in reading.quotes)


def test_unknown_pair_is_read_as_printed():
    """The parser reports what the page prints; the pipeline drops pairs not configured."""
    reading = parse_fixture("unknown_code.txt")
    assert [q.pair for q in reading.quotes] == [
        "KGS/USD",
        "KZT/USD",
        "TJS/USD",
        "RUB/USD",
        "UZS/USD",
        "TMT/USD",
    ]
    assert reading.quotes[3] == Quote("RUB", "USD", "0.01230", "0.1")


@pytest.mark.parametrize(
    "line", ["../USD = 0.1 1%", "kzt/USD = 0.00199 -0%", "KZT/usd = 0.00199 -0%", "K1T/USD = 1 1%"]
)
def test_a_line_with_an_odd_pair_alone_is_no_ticker(line):
    reading = parse_text(f"  • {line}\n20 March 2025\n")
    assert reading.outcome is Outcome.NO_TICKER
    assert reading.quotes == ()


def test_a_line_with_an_odd_pair_yields_nothing_for_itself_only():
    text = (
        ticker_block(ROWS_0320, 2)
        + "  • ../USD = 0.1 1%\n"
        + ticker_block(ROWS_0320, 2)
        + "20 March 2025\n"
    )
    reading = parse_text(text)
    assert [q.pair for q in reading.quotes] == list(PAIRS)
    assert reading.date == date(2025, 3, 20)
    assert reading.copies == 4
    assert reading.outcome is Outcome.OK
    assert any("../USD" in p for p in reading.problems)


def test_odd_lines_in_every_copy_are_reported_once_each():
    reading = parse_fixture("odd_pair.txt")
    assert [q.pair for q in reading.quotes] == list(PAIRS)
    assert reading.copies == 8
    assert sum("../USD" in p for p in reading.problems) == 1
    assert sum("kzt/USD" in p for p in reading.problems) == 1


@pytest.mark.parametrize(
    "prose",
    [
        "the tenge fell to 520 per dollar",
        "USD/KZT",
        "1 USD = 12,600 UZS",
        "Dealers quoted USD/KZT at 505.20 by the close, down 0.4% on the week.",
        "A sign said USD/UZS = 12,600 (roughly 0.5% weaker than last month).",
        "KGS/USD 0.0116 and KZT/USD 0.0020, with no change figures.",
        "The som held at 87.45 per dollar, a 0.1% move.",
        "KZT/USD = 0.00199",
        "KZT/USD = 0.00199%",
        "KZT/USD = -0%",
        "KZT/USD rose 0.5%, to 0.00199",
    ],
)
def test_currency_prose_is_not_a_ticker(prose):
    for text in (prose, f"Analysis | Title\n\n{prose}\n\n20 March 2025\n"):
        reading = parse_text(text)
        assert reading.outcome is Outcome.NO_TICKER
        assert reading.quotes == ()


@pytest.mark.parametrize(
    "name", [n for n, e in EXPECTED.items() if e["outcome"] == "no_ticker" and "tca" not in n]
)
def test_no_ticker_fixtures_do_mention_currencies(name):
    """The no-ticker fixtures are meant to tempt the parser: they talk about rates."""
    folder = "html" if name.endswith(".html") else "dumps"
    text = (FIXTURES / folder / name).read_text(encoding="utf-8")
    assert "USD" in text and "%" in text
    reading = parse_fixture(name)
    assert reading == Reading(Outcome.NO_TICKER)


def test_ticker_drawn_by_script_is_no_ticker():
    """The quote strings in <script> and <template> are not rendered text."""
    body = (FIXTURES / "html" / "tca_js_ticker.html").read_bytes()
    assert b"KGS/USD = 0.01164 0.87%" in body
    text = page_text(body)
    assert "0.01164" not in text
    assert parse_text(text).outcome is Outcome.NO_TICKER


def test_empty_and_blank_input():
    assert parse_text("") == Reading(Outcome.NO_TICKER)
    assert parse_text("\n \n\t") == Reading(Outcome.NO_TICKER)
    assert parse_text(page_text(b"")) == Reading(Outcome.NO_TICKER)
    assert parse_text(page_text(b"", "text/html")) == Reading(Outcome.NO_TICKER)
    assert parse_text(page_text(b"<html></html>")) == Reading(Outcome.NO_TICKER)


def test_page_text_decodes_utf8_and_keeps_a_plain_dump_as_is():
    text = REAL_BLOCK + "filler\n"
    assert page_text(text.encode("utf-8")) == text
    assert page_text(b"\xef\xbb\xbf" + text.encode("utf-8")) == text


def test_page_text_of_a_non_utf8_page_keeps_its_ascii_ticker():
    body = (REAL_BLOCK + "caf\xe9 au lait\n").encode("cp1252")
    reading = parse_text(page_text(body))
    assert reading.outcome is Outcome.OK and len(reading.quotes) == 5


def test_xhtml_page_with_xml_declaration_is_read_as_html():
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html>\n'
        b'<html xmlns="http://www.w3.org/1999/xhtml"><head><title>t</title></head><body>'
        b"<ul><li>KGS/USD = 0.01164 0.87%</li></ul><div>20 March 2025</div></body></html>"
    )
    reading = parse_text(page_text(body))
    assert reading.outcome is Outcome.OK
    assert reading.date == date(2025, 3, 20)


# --- the page's encoding: byte-order mark, then HTTP charset, then <meta>, then a fallback -


CYRILLIC = "Курс тенге"


META_1251 = '<meta charset="windows-1251">'


@pytest.mark.parametrize(
    ("body", "content_type", "prose"),
    [
        # no charset anywhere, not UTF-8: windows-1252, whose 0x95 is the bullet
        pytest.param(bullet_page().encode("cp1251"), None, None, id="undeclared-cp1251"),
        pytest.param(bullet_page().encode("cp1251"), "text/html", None, id="no-http-charset"),
        pytest.param(
            bullet_page().encode("cp1251"),
            "text/html; charset=windows-1251",
            CYRILLIC,
            id="http-charset",
        ),
        pytest.param(
            bullet_page(head=META_1251).encode("cp1251"), None, CYRILLIC, id="meta-charset"
        ),
        pytest.param(
            bullet_page(
                prose="Café",
                head='<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">',
            ).encode("cp1252"),
            None,
            "Café",
            id="latin-1-label-means-windows-1252",
        ),
        pytest.param(
            bullet_page(head='<meta charset="koi8-r">').encode("cp1251"),
            'text/html; charset="CP1251"',
            CYRILLIC,
            id="http-charset-over-meta",
        ),
        pytest.param(
            b"\xef\xbb\xbf" + bullet_page(head=META_1251).encode("utf-8"),
            "text/html; charset=windows-1251",
            CYRILLIC,
            id="utf-8-bom-over-both",
        ),
        pytest.param(
            b"\xff\xfe" + bullet_page(head=META_1251).encode("utf-16-le"),
            "text/html; charset=windows-1251",
            CYRILLIC,
            id="utf-16-le-bom-over-both",
        ),
        pytest.param(bullet_page().encode("utf-16"), None, CYRILLIC, id="utf-16-bom"),
        pytest.param(
            b"\xfe\xff" + bullet_page().encode("utf-16-be"), None, CYRILLIC, id="utf-16-be-bom"
        ),
        pytest.param(
            bullet_page(head='<meta charset="utf-7">').encode("utf-8"),
            None,
            CYRILLIC,
            id="utf-7-is-no-page-encoding",
        ),
        pytest.param(
            bullet_page(head='<meta charset="no-such-charset">').encode("cp1251"),
            "text/html; charset=rot13",
            None,
            id="unknown-labels-ignored",
        ),
    ],
)
def test_page_encoding_byte_order_mark_http_charset_meta_then_fallback(body, content_type, prose):
    text = page_text(body, content_type)
    reading = parse_text(text)
    assert reading.outcome is Outcome.OK, reading.problems
    assert [q.pair for q in reading.quotes] == list(PAIRS)
    assert reading.problems == ()
    if prose:
        assert prose in text


# The encodings of the WHATWG Encoding Standard, by a label of each.
WEB_ENCODINGS = """utf-8 utf-16 utf-16le utf-16be ibm866 iso-8859-2 iso-8859-3 iso-8859-4
    iso-8859-5 iso-8859-6 iso-8859-7 iso-8859-8 iso-8859-10 iso-8859-13 iso-8859-14
    iso-8859-15 iso-8859-16 koi8-r koi8-u macintosh x-mac-cyrillic windows-874 windows-1250
    windows-1251 windows-1252 windows-1253 windows-1254 windows-1255 windows-1256
    windows-1257 windows-1258 gbk gb18030 big5 euc-jp iso-2022-jp shift_jis euc-kr""".split()


def _declared_encodings():
    for encoding in WEB_ENCODINGS:
        yield encoding, "http"
        if not encoding.startswith("utf-16"):  # a <meta> readable as ASCII: not UTF-16
            yield encoding, "meta"


@pytest.mark.parametrize(("encoding", "where"), list(_declared_encodings()))
def test_every_page_encoding_declared_reads_the_whole_ticker(encoding, where):
    codec = {"windows-874": "cp874", "x-mac-cyrillic": "mac-cyrillic"}.get(encoding, encoding)
    bullet = "•"
    try:
        bullet.encode(codec)
    except UnicodeEncodeError:
        bullet = "*"
    head = f'<meta charset="{encoding}">' if where == "meta" else ""
    body = bullet_page(prose="plain prose", head=head, bullet=bullet).encode(codec)
    content_type = f"text/html; charset={encoding}" if where == "http" else None
    reading = parse_text(page_text(body, content_type))
    assert reading.outcome is Outcome.OK and [q.pair for q in reading.quotes] == list(PAIRS)


def test_a_text_dump_honours_the_http_charset():
    body = (REAL_BLOCK.replace("•", "*") + "Курс\n").encode("koi8-r")
    text = page_text(body, "text/plain; charset=koi8-r")
    assert "Курс" in text
    assert parse_text(text).outcome is Outcome.OK


def test_ticker_nested_300_deep_still_renders():
    body = (
        b"<!DOCTYPE html><html><body>"
        + b"<div>" * 300
        + b"<ul><li>KGS/USD = 0.01164 0.87%</li></ul><div>20 March 2025</div>"
        + b"</div>" * 300
        + b"</body></html>"
    )
    reading = parse_text(page_text(body))
    assert reading.quotes == (Quote("KGS", "USD", "0.01164", "0.87"),)


def test_ticker_nested_200_deep_renders():
    body = (
        b"<!DOCTYPE html><html><body>"
        + b"<div>" * 200
        + b"<ul><li>KGS/USD = 0.01164 0.87%</li></ul><div>20 March 2025</div>"
        + b"</div>" * 200
        + b"</body></html>"
    )
    reading = parse_text(page_text(body))
    assert reading.outcome is Outcome.OK
    assert reading.quotes == (Quote("KGS", "USD", "0.01164", "0.87"),)


@pytest.mark.parametrize(
    "text",
    [
        "x" * 1_000_000,
        "KGS/USD = " * 100_000,
        "../USD = 0.1 1%\n" * 50_000,
        "KGS/USD = " + "0" * 1_000_000,
        "KGS/USD = 0.01164 " + "-" * 1_000_000,
        "  • KGS/USD = 0.01164 0.87%" * 20_000 + "\n20 March 2025",
        "/USD =" * 200_000,
        "•" * 500_000 + "KGS/USD = 0.01164 0.87%",
        ticker_block(ROWS_0320, 1) + " " * 1_000_000 + "20 March 2025",
    ],
    ids=lambda t: repr(t[:24]),
)
def test_very_long_lines_do_not_raise(text):
    assert_only_literal_quotes(text)
    assert_only_literal_quotes(page_text(text.encode("utf-8")))


def test_a_long_one_line_ticker_is_read():
    text = "  • KGS/USD = 0.01164 0.87%" * 20_000 + "\n20 March 2025\n"
    reading = parse_text(text)
    assert reading.outcome is Outcome.OK
    assert reading.copies == 20_000


# --- properties -----------------------------------------------------------------------------

rates = st.integers(1, 999_999).map(lambda n: f"{n // 100_000}.{n % 100_000:05d}")


@st.composite
def changes(draw) -> str:
    special = draw(st.sampled_from([None, "0", "-0", "0.87", "-0.11", "-0.00", "0.0"]))
    if special is not None:
        return special
    sign = draw(st.sampled_from(["", "-"]))
    whole = draw(st.integers(0, 99))
    places = draw(st.integers(0, 2))
    frac = "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=places, max_size=places)))
    return f"{sign}{whole}" + (f".{frac}" if frac else "")


@st.composite
def tickers(draw):
    chosen = draw(st.sets(st.sampled_from(PAIRS), min_size=1))
    rows = [(pair, draw(rates), draw(changes())) for pair in PAIRS if pair in chosen]
    copies = draw(st.integers(1, 10))
    day = draw(st.none() | st.dates(date(1990, 1, 1), date(2099, 12, 31)))
    return rows, copies, day


filler = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ,.\n", max_size=300)


def expected_reading(rows, copies, day) -> Reading:
    quotes = tuple(Quote(*pair.split("/"), rate, change) for pair, rate, change in rows)
    return Reading(Outcome.OK if day else Outcome.UNDATED, quotes, day, copies, ())


@PROPS
@given(
    tickers(),
    st.sampled_from(["", "  "]),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
    filler,
)
@example(([("KZT/USD", "0.00199", "-0")], 8, date(2025, 3, 20)), "", "\n", True, "")
@example(([("UZS/USD", "0.00200", "0")], 1, None), "  ", "\r\n", False, "")
def test_generated_ticker_round_trips(ticker, indent, newline, article_date, tail):
    rows, copies, day = ticker
    text = ticker_block(rows, copies, indent, newline)
    if day is not None:
        text += date_line(day) + newline
        if article_date:
            text += date_line(date(2001, 2, 3)) + newline  # a later date: ignored
    text += newline + tail
    assert parse_text(text) == expected_reading(rows, copies, day)
    # The pipeline reads a .txt file through page_text first: the same reading.
    assert parse_text(page_text(text.encode("utf-8"))) == expected_reading(rows, copies, day)


def _cls(change: str) -> str:
    return "down" if change.startswith("-") else "up"


@st.composite
def html_pages(draw, ticker) -> str:
    rows, copies, day = ticker
    gap = st.sampled_from([" ", "&nbsp;", "\n      ", "&#160;", " &nbsp;"])
    bullet = draw(st.sampled_from(["", '<span class="fx-bullet">&bull;</span> ', "• "]))
    items = []
    for _ in range(copies):
        for pair, rate, change in rows:
            items.append(
                f'<li class="fx-item {_cls(change)}">{bullet}<span class="fx-pair">{pair}</span>'
                f'{draw(gap)}={draw(gap)}<span class="fx-rate">{rate}</span>{draw(gap)}'
                f'<span class="fx-change {_cls(change)}">{change}%</span></li>'
            )
    sep = draw(st.sampled_from(["", "\n", "\n        "]))
    date_html = f'<div class="date">{date_line(day)}</div>' if day else ""
    words = draw(st.text(alphabet="abcdefghij klmnop", max_size=200))
    return (
        '<!DOCTYPE html>\n<html lang="en-US"><head><meta charset="UTF-8">'
        "<title>KGS/USD = 9.99999 9.99% in the title is not rendered</title>"
        "<style>.fx-item{display:inline-block}</style>"
        '<script>var rows = ["TMT/USD = 9.99999 9.99%"];</script></head>\n'
        '<body class="single"><div id="page"><header id="masthead">'
        f'<div class="fx-ticker marquee"><ul class="fx-list">{sep}{sep.join(items)}{sep}</ul></div>'
        f"{date_html}"
        '<nav><ul class="menu"><li><a href="/">Home</a></li><li><a href="/about/">About</a></li>'
        "</ul></nav></header>"
        '<main><article><h1 class="entry-title">Generated page</h1>'
        '<time datetime="2001-02-03">03 February 2001</time>'
        f"<p>{words}</p></article></main></div></body></html>"
    )


@PROPS
@given(st.data(), tickers(), st.sampled_from([None, "text/html", "text/html; charset=utf-8"]))
def test_generated_ticker_round_trips_through_html(data, ticker, content_type):
    page = data.draw(html_pages(ticker))
    text = page_text(page.encode("utf-8"), content_type)
    assert parse_text(text) == expected_reading(*ticker)


@PROPS
@given(tickers(), filler)
def test_text_after_the_date_line_never_changes_the_reading(ticker, tail):
    rows, copies, day = ticker
    assume(day is not None)
    head = ticker_block(rows, copies) + date_line(day) + "\n"
    assert parse_text(head + tail) == parse_text(head) == expected_reading(rows, copies, day)


@st.composite
def uneven_blocks(draw):
    """A marquee whose copies vary: pairs missing from some copies, a value changed in
    some, separators that differ between lines. Returns the text and the lines in order."""
    base = {pair: (draw(rates), draw(changes())) for pair in PAIRS}
    lines = []
    for _ in range(draw(st.integers(1, 10))):
        for pair in PAIRS:
            if draw(st.integers(0, 9)) == 0:
                continue  # this pair is missing from this copy
            rate, change = base[pair]
            if draw(st.integers(0, 14)) == 0:
                rate, change = draw(rates), draw(changes())  # this copy disagrees (maybe)
            lines.append((pair, rate, change))
    assume(lines)
    seps = st.sampled_from(["\n  • ", "\n", " ", "", "\n\n  • ", "\r\n  · ", "\n\u00a0• "])
    text = draw(st.sampled_from(["", "  • "]))
    for i, (pair, rate, change) in enumerate(lines):
        text += (draw(seps) if i else "") + f"{pair} = {rate} {change}%"
    return text, lines


@PROPS
@given(uneven_blocks(), st.none() | st.dates(date(1990, 1, 1), date(2099, 12, 31)))
def test_uneven_copies_are_counted_and_compared_line_by_line(block_lines, day):
    """Against a plain line-by-line reading: first-seen quotes, copies = the most lines of
    one pair, inconsistent exactly when some pair shows two different values."""
    text, lines = block_lines
    text += "\n" + (date_line(day) if day else "") + "\nfiller\n"
    first: dict[str, tuple[str, str]] = {}
    seen: dict[str, set[tuple[str, str]]] = {}
    count: dict[str, int] = {}
    for pair, rate, change in lines:
        first.setdefault(pair, (rate, change))
        seen.setdefault(pair, set()).add((rate, change))
        count[pair] = count.get(pair, 0) + 1
    disagree = {pair for pair, values in seen.items() if len(values) > 1}

    reading = parse_text(text)
    check_invariants(reading)
    assert [(q.pair, q.rate, q.change) for q in reading.quotes] == [
        (pair, *values) for pair, values in first.items()
    ]
    assert reading.copies == max(count.values())
    assert reading.date == day
    if disagree:
        assert reading.outcome is Outcome.INCONSISTENT
        for pair in disagree:
            assert any(pair in p for p in reading.problems), (pair, reading.problems)
        for pair in set(PAIRS) - disagree:
            assert not any(pair in p for p in reading.problems)
    else:
        assert reading.outcome is (Outcome.OK if day else Outcome.UNDATED)
        assert reading.problems == ()


TOKENS = [
    "KGS/USD",
    "KZT/USD",
    "TMT/USD",
    "RUB/USD",
    "kzt/USD",
    "../USD",
    "/USD",
    "USD/KZT",
    " = ",
    "=",
    " ",
    "  ",
    "\n",
    "\r\n",
    "  • ",
    "•",
    "0.01164",
    "0.00008",
    "0.0O199",
    "0.00000",
    "12,600",
    "520",
    "-0",
    "0",
    "-0.11",
    "+1.5",
    "%",
    "-",
    "\u2212",
    "\u00a0",
    "20 March 2025",
    "31 February 2025",
    "<li>",
    "</li>",
    "<span>",
    "&nbsp;",
]
soup = st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=4)), max_size=60).map("".join)


@PROPS
@given(st.one_of(st.text(), soup))
@example("the tenge fell to 520 per dollar; USD/KZT; 1 USD = 12,600 UZS")
@example("KGS/USD = 0.01164 0.87%")
@example("KZT/USD = 0.0O199 -0%\n20 March 2025")
def test_random_text_yields_only_quotes_it_literally_prints(text):
    assert_only_literal_quotes(text)


any_bytes = st.one_of(st.binary(), soup.map(lambda s: s.encode("utf-8", "surrogatepass")))
content_types = st.sampled_from(
    [None, "text/html", "text/plain", "application/xhtml+xml", "text/html; x"]
)


@PROPS
@given(any_bytes, content_types)
@example(b"\xff\xfe" + "KGS/USD = 0.01164 0.87%".encode("utf-16-le"), None)
@example(b"<html><body>\x00<li>KGS/USD = 0.01164 0.87%</li>", None)
@example(b"<!-- unterminated comment <li>KGS/USD = 0.01164 0.87%</li>", "text/html")
def test_random_bytes_through_page_text_never_invent_quotes(body, content_type):
    text = page_text(body, content_type)
    assert isinstance(text, str)
    assert_only_literal_quotes(text)


@PROPS
@given(any_bytes, content_types)
@example(b"\x01", "text/html")
@example(b"<html><body><p>page one\x0cpage two</p></body></html>", None)
def test_random_bytes_through_page_text_never_raise(body, content_type):
    assert isinstance(page_text(body, content_type), str)


@pytest.mark.parametrize("char", ["\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f"])
def test_control_character_in_an_html_page_does_not_raise(char):
    body = (
        "<!DOCTYPE html><html><body><ul><li>KGS/USD = 0.01164 0.87%</li></ul>"
        f"<div>20 March 2025</div><p>a form{char}feed</p></body></html>"
    ).encode()
    reading = parse_text(page_text(body))
    assert reading.outcome is Outcome.OK
    assert reading.quotes == (Quote("KGS", "USD", "0.01164", "0.87"),)


@st.composite
def mutated_block(draw) -> str:
    text = REAL_BLOCK + "\nFiller paragraph one.\n"
    for _ in range(draw(st.integers(1, 12))):
        i = draw(st.integers(0, len(text) - 1))
        n = draw(st.integers(1, 4))
        kind = draw(st.sampled_from(["delete", "duplicate", "replace"]))
        if kind == "delete":
            text = text[:i] + text[i + n :]
        elif kind == "duplicate":
            text = text[:i] + text[i : i + n] + text[i:]
        else:
            text = text[:i] + draw(st.text(min_size=1, max_size=n)) + text[i + n :]
        if not text:
            text = " "
    return text


@PROPS
@given(mutated_block())
def test_mutations_of_a_real_block_never_raise_or_invent_quotes(text):
    reading = assert_only_literal_quotes(text)
    if reading.date is not None:
        # A date comes only from a date line the (mutated) text still prints.
        d = reading.date
        assert re.search(rf"\b0*{d.day}\s+[A-Za-z]{{3,9}}\.?,?\s+{d.year}\b", text), d
    html = as_html(text)
    assert_only_literal_quotes(page_text(html.encode("utf-8", "surrogatepass")))


def as_html(text: str) -> str:
    return "<!DOCTYPE html><html><body><ul><li>" + text.replace("\n", "</li><li>") + "</ul>"


@PROPS
@given(mutated_block())
@example(REAL_BLOCK.replace("K", "\x08", 1))
def test_mutations_of_a_real_block_in_html_never_raise(text):
    page_text(as_html(text).encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("20 March 2025", date(2025, 3, 20)),
        ("Thursday, 20 March 2025", date(2025, 3, 20)),
        ("Thu 20 Mar 2025", date(2025, 3, 20)),
        ("09 December 2025", date(2025, 12, 9)),
        ("Viewing results 1 - 6 of 111", None),
        ("20 Marchember 2025", None),
    ],
)
def test_date_line_right_after_the_block(line: str, expected: date | None) -> None:
    reading = parse_text(f"  • KGS/USD = 0.01164 0.87%\n  • KZT/USD = 0.00199 -0%\n{line}\n")
    assert reading.date == expected
    assert reading.outcome == (Outcome.OK if expected else Outcome.UNDATED)


# --- the block cache a caller may keep -----------------------------------------------------


@st.composite
def page_runs(draw):
    """Pages one after another as a backfill meets them: a few tickers, each printed by
    several pages (other date lines, articles, copies), some with an odd line after the
    block or a block that goes on with another ticker's lines."""
    pool = draw(st.lists(tickers(), min_size=1, max_size=3))
    pages = []
    for _ in range(draw(st.integers(1, 12))):
        rows, copies, day = draw(st.sampled_from(pool))
        text = ticker_block(rows, draw(st.sampled_from([copies, copies + 1])))
        odd = draw(st.sampled_from(["", "  • ../USD = 0.1 1%", "  • KZT/USD = 0.5 1%"]))
        text += odd + (draw(st.sampled_from(["\n", "x\n"])) if odd else "")
        when = draw(st.none() | st.dates(date(2020, 1, 1), date(2026, 1, 1)))
        text += f"{date_line(when)}\n" if when else ""
        pages.append(text + draw(filler))
    return pages


ODD_THEN = "  • KZT/USD = 0.00199 -0%\n" * 3 + "  • ../USD = 0.1 1%"


@PROPS
@given(page_runs())
@example([ODD_THEN + "\n20 March 2025\n", ODD_THEN + "x\n20 March 2025\n"])
@example([ODD_THEN + "x\n", ODD_THEN + "\n"])
def test_a_block_cache_never_changes_a_reading(pages):
    """Readings with a cache kept over a run of pages are the readings without one."""
    cache = BlockCache(size=2)  # small: its clearing is exercised too
    assert [parse_text(text, cache) for text in pages] == [parse_text(text) for text in pages]
