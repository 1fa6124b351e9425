"""What every kind of source has in common: the reader's shape, and the rules for the
dates a record may carry (a date that cannot be right stores nothing)."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, ClassVar, Protocol

from ticker.models import Page, Record

if TYPE_CHECKING:
    from ticker.config import Source


class Reader(Protocol):
    """Turns what a source of one kind sends (a page, a response) into a Record of dated
    observations. A reader may keep caches between calls; its owner makes one per run
    (a backfill worker) and the readings are the same with or without them."""

    kind: ClassVar[str]
    # Part of every load key: bump it when a page may read differently, so a re-run of
    # backfill reads what is already loaded again.
    version: ClassVar[int]
    # The Content-Types a fetch of this kind takes (a prefix match, without parameters).
    media_types: ClassVar[tuple[str, ...]]
    # What one fetch of it is called in messages: "page", "response".
    noun: ClassVar[str]

    def read(
        self, page: Page, source: Source, *, now: datetime, given_date: date | None = None
    ) -> Record: ...


def content_hash(body: bytes) -> str:
    return hashlib.sha1(body, usedforsecurity=False).hexdigest()


def page_key(
    source: str, digest: str, captured_at: datetime | None, day: date | None, version: int
) -> str:
    """What identifies one load of a page: its source, content, capture time, the date it
    is stored under and the reader's version. The same page loaded again adds nothing."""
    stamp = captured_at.isoformat() if captured_at else ""
    text = f"{source}\0{digest}\0{stamp}\0{day or ''}\0{version}"
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def capture_time(
    page: Page, source: Source, now: datetime
) -> tuple[datetime | None, date | None, str | None]:
    """The page's capture time and its day in the source's time zone, or why it cannot
    be right (then neither is used): in the future, or out of the calendar's range."""
    if page.capture_problem:
        return None, None, page.capture_problem
    captured = page.captured_at
    if captured is None:
        return None, None, None
    shown = captured.isoformat()[:40]
    try:
        if captured > now + timedelta(days=1):
            now_utc = now.astimezone(UTC)
            return (
                None,
                None,
                f"capture time {shown} is in the future (now: {now_utc:%Y-%m-%d %H:%M}Z)",
            )
        day = captured.astimezone(source.tz).date()
    except (OverflowError, ValueError):
        return None, None, f"capture time {shown} is out of range"
    return captured, day, None


def too_late(
    day: date, basis: str | None, captured_day: date | None, source: Source, now: datetime
) -> str | None:
    """Why a date cannot be right: more than a day after its capture day, or after today
    (in the source's time zone) for a page without a capture time."""
    what = "--date is" if basis == "given" else "the date line says"
    if captured_day is not None:
        if day > captured_day + timedelta(days=1):
            return (
                f"{what} {day}, more than a day after the page was captured "
                f"({captured_day}, {source.tz.key})"
            )
        return None
    today = now.astimezone(source.tz).date()
    if day > today:
        return f"{what} {day}, after today ({today}, {source.tz.key})"
    return None
