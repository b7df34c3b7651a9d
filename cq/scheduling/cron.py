"""Cron expressions: validating them and finding when they fire next.

Times go in and come out as aware UTC datetimes; the expression is read in
the repeating task's own time zone. Across daylight-saving changes each local
slot fires exactly once: a slot in the skipped hour fires at the first valid
instant after it (croniter moves it), and when the clocks go back, the
repeated hour's slots are not fired a second time, because a fire's local wall
time must come after the previous fire's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from django.core.exceptions import ValidationError

#: Enough to step over a repeated hour of minutely slots.
_MAX_SKIPS = 200


def validate_crontab(expression: str) -> None:
    """Raises ``ValidationError`` unless ``expression`` is a valid 5-field cron expression."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValidationError(
            f"{expression!r} has {len(fields)} field(s); a crontab has 5: minute hour day-of-month month "
            f"day-of-week, e.g. '30 3 * * *' for 03:30 every day.", code="crontab")
    if not croniter.is_valid(expression, strict=True):
        raise ValidationError(f"{expression!r} is not a valid crontab (minute 0-59, hour 0-23, day 1-31, "
                              f"month 1-12, weekday 0-6).", code="crontab")


def validate_timezone(name: str) -> None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"{name!r} is not a known time zone (e.g. 'Europe/Paris', 'UTC').",
                              code="timezone") from None


def next_fire(expression: str, timezone: str, after: datetime, previous: datetime | None = None) -> datetime:
    """The first instant after ``after`` at which ``expression`` fires in ``timezone``.

    ``previous`` is the last slot that fired: a slot whose local wall time is not
    later than it (the repeated hour after clocks go back) is skipped.
    """
    zone = ZoneInfo(timezone)
    floor = previous.astimezone(zone).replace(tzinfo=None) if previous else None
    slots = croniter(expression, after.astimezone(zone))
    for _ in range(_MAX_SKIPS):
        slot = slots.get_next(datetime)
        if floor is None or slot.replace(tzinfo=None) > floor:
            return slot.astimezone(UTC)
    raise ValueError(f"{expression!r} in {timezone} found no slot after {after}")  # pragma: no cover


def upcoming(expression: str, timezone: str, after: datetime, count: int,
             previous: datetime | None = None) -> list[datetime]:
    """The next ``count`` fires after ``after``."""
    fires = []
    for _ in range(count):
        after = previous = next_fire(expression, timezone, after, previous)
        fires.append(after)
    return fires
