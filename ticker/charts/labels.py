"""What charts call things: currencies' names, unit words and colours, dates and values
in words. About currencies, never about one site: the credit line comes from the source's
label, the precision from the printed data."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date
from decimal import Decimal

# Currency names and the unit word used in axis labels ("tenge per US dollar").
CURRENCIES: dict[str, tuple[str, str]] = {
    "KGS": ("Kyrgyz som", "som"),
    "KZT": ("Kazakh tenge", "tenge"),
    "TJS": ("Tajik somoni", "somoni"),
    "UZS": ("Uzbek sum", "sum"),
    "TMT": ("Turkmen manat", "manat"),
    "USD": ("US dollar", "US dollars"),
    "EUR": ("Euro", "euros"),
    "RUB": ("Russian rouble", "roubles"),
    "CNY": ("Chinese yuan", "yuan"),
    "AZN": ("Azerbaijani manat", "manat"),
    "AFN": ("Afghan afghani", "afghani"),
}
# One colour per currency everywhere (Okabe-Ito, colour-blind safe); the bar colours
# for rises and falls are the two Okabe-Ito colours not given to a currency.
COLOURS: dict[str, str] = {
    "KGS": "#E69F00",  # orange
    "KZT": "#009E73",  # bluish green
    "TJS": "#CC79A7",  # reddish purple
    "UZS": "#56B4E9",  # sky blue
    "TMT": "#333333",  # near black
}
OTHER_COLOUR = "#7F7F7F"  # a currency without a colour of its own
OFFICIAL_COLOUR = "#222222"  # the official rate's line, under every currency's
# The banks behind the official rates, by their Frankfurter provider keys; and who sets a
# currency's rate where the rates name no bank (the manat's peg).
BANKS: dict[str, str] = {
    "NBK": "National Bank of Kazakhstan",
    "NBKR": "National Bank of the Kyrgyz Republic",
    "CBU": "Central Bank of Uzbekistan",
    "NBT": "National Bank of Tajikistan",
    "CBT": "Central Bank of Turkmenistan",
}
UNNAMED_BANKS: dict[str, str] = {
    "TMT": "Central Bank of Turkmenistan (peg)",
}
RISE_COLOUR = "#0072B2"  # blue
FALL_COLOUR = "#D55E00"  # vermillion
NOTE_COLOUR = "#8C3B00"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def significant_digits(text: str) -> int:
    """Significant digits of a printed number: "0.00008" -> 1, "0.01164" -> 4."""
    digits = Decimal(text).as_tuple().digits
    return len("".join(map(str, digits)).lstrip("0"))


def decimals(text: str) -> int:
    """Digits after the decimal point of a printed number: "0.00199" -> 5, "-0" -> 0."""
    return len(text.partition(".")[2])


def day_text(d: date) -> str:
    """A date for titles: "20 Mar 2025" (no locale involved)."""
    return f"{d.day} {_MONTHS[d.month - 1]} {d.year}"


def unit_word(code: str) -> str:
    """The unit word of a currency code: "KZT" -> "tenge"."""
    return CURRENCIES.get(code, (code, code))[1]


def currency_name(code: str) -> str:
    """The name of a currency code: "KZT" -> "Kazakh tenge"."""
    return CURRENCIES.get(code, (code, code))[0]


def quote_unit(code: str) -> str:
    """The quote currency in the singular: "USD" -> "US dollar"."""
    return "US dollar" if code == "USD" else currency_name(code)


def axis_label(base: str, quote: str, display: str) -> str:
    """The y-axis units: "tenge per US dollar" or "US dollars per tenge"."""
    if display == "per_usd":
        return f"{unit_word(base)} per {quote_unit(quote)}"
    return f"{unit_word(quote)} per {unit_word(base)}"


def fmt_value(value: float) -> str:
    """A value in display units with about four significant digits: "502.5", "12,500"."""
    if not math.isfinite(value):
        return "n/a"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:,.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.5f}"


def source_text(label: str) -> str:
    """The source note of a chart, from the source's label (`[[sources]] label`)."""
    return f"Source: {label}"


def currency_colour(base: str) -> str:
    """The currency's fixed colour (grey for a currency not in COLOURS)."""
    return COLOURS.get(base, OTHER_COLOUR)


def official_label(pair: str, publishers: Sequence[str | None]) -> str:
    """Who publishes a pair's official rates, for a legend: the banks the rates name
    ("National Bank of Kazakhstan (NBK)"), else who sets the currency's rate."""
    named = list(dict.fromkeys(p for p in publishers if p))
    if named:
        return ", ".join(f"{BANKS[p]} ({p})" if p in BANKS else p for p in named)
    currency = pair.split("/")[-1] if pair.startswith("USD/") else pair.split("/")[0]
    return UNNAMED_BANKS.get(currency, "official rate")
