"""Validation of 5-field cron strings without importing the scheduler."""

from __future__ import annotations

import re

_FIELD_RE = re.compile(
    r"^(\*|\d+(-\d+)?|[a-z]{3}(-[a-z]{3})?)(/\d+)?(,(\*|\d+(-\d+)?|[a-z]{3}(-[a-z]{3})?)(/\d+)?)*$"
)


def validate_cron(expr: str) -> str | None:
    """None when `expr` is a 5-field cron string APScheduler accepts, else the problem."""
    fields = expr.split()
    if len(fields) != 5:
        return f"expected 5 fields (minute hour day month weekday), got {len(fields)}"
    for name, value in zip(("minute", "hour", "day", "month", "day_of_week"), fields, strict=True):
        if not _FIELD_RE.match(value.lower()):
            return f"the {name} field {value!r} is not a cron expression"
    try:
        from apscheduler.triggers.cron import CronTrigger

        CronTrigger.from_crontab(expr, timezone="UTC")
    except ValueError as exc:
        return str(exc)
    return None
