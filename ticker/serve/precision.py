"""How many digits a derived rate may carry. A printed rate is a range, not a point:
`0.00199` stands for anything from 0.001985 to 0.001995. The inverse (tenge per dollar)
or a cross rate of such numbers is a range too, and is written as the shortest decimal
number inside it, the one nearest the exact quotient when several are that short:
1/0.00199 = 502.51..., anything from 501.25 to 503.78, is written 503; 1/0.00008 (from
11765 to 13333) is 12000. The number never claims digits the page did not print."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache

# (lowest, exact, highest) value a printed number, or one computed from printed
# numbers, stands for.
Estimate = tuple[Fraction, Fraction, Fraction]


@lru_cache(maxsize=65536)
def printed(text: str) -> Estimate:
    """The range a printed number stands for: half a unit of its last digit either side."""
    mid = Fraction(text)
    decimals = len(text.partition(".")[2])
    half = Fraction(1, 2 * 10**decimals)
    return (mid - half, mid, mid + half)


def inverse(e: Estimate) -> Estimate | None:
    """1/x over the range (None when the range reaches 0: no inverse to speak of)."""
    lo, mid, hi = e
    if lo <= 0:
        return None
    return (1 / hi, 1 / mid, 1 / lo)


def quotient(a: Estimate, b: Estimate) -> Estimate | None:
    """a/b over both ranges (None when b's range reaches 0)."""
    if b[0] <= 0 or a[0] < 0:
        return None
    return (a[0] / b[2], a[1] / b[1], a[2] / b[0])


def mean(estimates: Sequence[Estimate]) -> Estimate:
    """The mean over several days, and the range the means of their ranges span."""
    n = len(estimates)
    return (
        sum((e[0] for e in estimates), Fraction(0)) / n,
        sum((e[1] for e in estimates), Fraction(0)) / n,
        sum((e[2] for e in estimates), Fraction(0)) / n,
    )


def shortest(e: Estimate) -> str:
    """The shortest decimal number in the range, nearest the exact value among those as
    short (a tie goes to the even last digit), written without an exponent."""
    lo, mid, hi = e
    if hi <= 0:
        raise ValueError(f"not a positive range: {e}")
    # The coarsest step worth trying: one power of ten above the range's top.
    k = -math.floor(math.log10(float(hi))) - 1
    for _ in range(60):
        scale = Fraction(10) ** k
        first, last = math.ceil(lo * scale), math.floor(hi * scale)
        if first <= last:
            n = min(max(round(mid * scale), first), last)
            return _decimal(n, k)
        k += 1
    return _decimal(round(mid * Fraction(10) ** k), k)  # a range too narrow to matter


def _decimal(n: int, k: int) -> str:
    """n * 10**-k as plain decimal text: (503, 0) -> "503", (12, -3) -> "12000",
    (20887, 7) -> "0.0020887"."""
    if k <= 0:
        return str(n * 10**-k)
    digits = str(n).rjust(k + 1, "0")
    return f"{digits[:-k]}.{digits[-k:]}"


@lru_cache(maxsize=65536)
def inverse_text(text: str) -> str | None:
    """The inverse of a printed rate, written as `shortest` says (None for a rate of 0)."""
    e = inverse(printed(text))
    return None if e is None else shortest(e)
