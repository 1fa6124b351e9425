"""Kinds of sources. A kind is one module here: it says what it accepts (the media types
a fetch of it takes) and its reader turns what it receives into a Record of dated
observations (`base.Reader`). The pipeline, the store, status, check and the daemon treat
every kind alike; a source names its kind in the config (`[[sources]] kind`).

    ticker      the page-header ticker of a news site (sources/ticker.py)
    reference   official rates from a Frankfurter server, as JSON (sources/reference.py)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ticker.sources.base import Reader

# kind -> "module:class" of its reader, imported when first used (a command that only
# reads the store loads none of them).
KINDS: dict[str, str] = {
    "ticker": "ticker.sources.ticker:TickerReader",
    "reference": "ticker.sources.reference:ReferenceReader",
}


def reader(kind: str, *, cache: bool = False) -> Reader:
    """A new reader of `kind`; `cache`: one that keeps caches between pages, for a caller
    that reads many (the readings are the same)."""
    module, _, name = KINDS[kind].partition(":")
    cls = getattr(importlib.import_module(module), name)
    return cls(cache=cache)
