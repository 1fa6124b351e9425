"""The daily series read back for people: the newest quote of each pair, and one pair's
history. (Exports are in ticker.export.)"""

from __future__ import annotations

from datetime import date

from ticker.config import Config
from ticker.models import Day
from ticker.store import Store, read


def latest(config: Config) -> list[Day]:
    """The newest day of each source and pair."""
    with Store.open(config.store_path, config.lock_timeout, read_only=True) as store:
        return read.latest(store)


def history(
    config: Config,
    pair: str,
    since: date | None = None,
    until: date | None = None,
    source: str | None = None,
) -> list[Day]:
    """One pair's daily series (of one source, or all), by source and date."""
    if source is not None:
        config.source(source)  # a source that is not configured is a usage error
    with Store.open(config.store_path, config.lock_timeout, read_only=True) as store:
        return read.history(store, pair, since, until, source)
