"""Cron arithmetic in several time zones, across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError

from cq.scheduling.cron import next_fire, upcoming, validate_crontab, validate_timezone


def local(zone: str, *args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone))


@pytest.mark.parametrize(("zone", "expected_utc_hour"), [
    ("UTC", 3), ("Europe/Paris", 1), ("America/New_York", 7), ("Asia/Kolkata", 22), ("Australia/Sydney", 17),
])
def test_next_fire_reads_the_crontab_in_the_task_zone(zone, expected_utc_hour):
    fire = next_fire("30 3 * * *", zone, datetime(2026, 6, 10, 12, 0, tzinfo=UTC))
    assert fire.tzinfo == UTC
    assert fire.astimezone(ZoneInfo(zone)).strftime("%H:%M") == "03:30"
    assert fire.hour == expected_utc_hour


def test_slot_in_the_repeated_hour_fires_once_when_clocks_go_back():
    # London: 2026-10-25 02:00 BST becomes 01:00 GMT, so 01:30 happens twice.
    first = next_fire("30 1 * * *", "Europe/London", local("Europe/London", 2026, 10, 25, 0, 50))
    assert first == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 01:30 BST
    second = next_fire("30 1 * * *", "Europe/London", first, previous=first)
    assert second == datetime(2026, 10, 26, 1, 30, tzinfo=UTC)  # the next day, not 01:30 GMT


def test_minutely_slots_of_the_repeated_hour_are_not_fired_twice():
    fires = upcoming("*/20 * * * *", "Europe/London", local("Europe/London", 2026, 10, 25, 0, 50), 5)
    walls = [f.astimezone(ZoneInfo("Europe/London")).strftime("%H:%M") for f in fires]
    assert walls == ["01:00", "01:20", "01:40", "02:00", "02:20"]
    assert (fires[3] - fires[2]).total_seconds() == 80 * 60  # 01:40 BST to 02:00 GMT


def test_slot_in_the_skipped_hour_fires_once_when_clocks_go_forward():
    # London: 2026-03-29 01:00 GMT becomes 02:00 BST, so 01:00 and 01:30 never happen.
    fires = upcoming("0,30 * * * *", "Europe/London", local("Europe/London", 2026, 3, 29, 0, 10), 4)
    walls = [f.astimezone(ZoneInfo("Europe/London")).strftime("%H:%M %Z") for f in fires]
    assert walls == ["00:30 GMT", "02:00 BST", "02:30 BST", "03:00 BST"]
    daily = upcoming("30 1 * * *", "Europe/London", local("Europe/London", 2026, 3, 29, 0, 10), 2)
    assert [f.astimezone(ZoneInfo("Europe/London")).strftime("%d %H:%M") for f in daily] == ["29 02:00", "30 01:30"]


def test_new_york_spring_forward_and_fall_back():
    spring = upcoming("30 2 * * *", "America/New_York", local("America/New_York", 2026, 3, 8, 0, 0), 2)
    assert [f.astimezone(ZoneInfo("America/New_York")).strftime("%d %H:%M") for f in spring] == ["08 03:00",
                                                                                                 "09 02:30"]
    fall = upcoming("30 1 * * *", "America/New_York", local("America/New_York", 2026, 11, 1, 0, 0), 2)
    assert [f.astimezone(ZoneInfo("America/New_York")).strftime("%d %H:%M") for f in fall] == ["01 01:30",
                                                                                               "02 01:30"]


@pytest.mark.parametrize("expression", ["* * * *", "* * * * * *", "61 * * * *", "* 24 * * *", "a b c d e", ""])
def test_invalid_crontabs_are_refused_with_a_reason(expression):
    with pytest.raises(ValidationError, match="crontab"):
        validate_crontab(expression)


def test_unknown_time_zone_is_refused():
    with pytest.raises(ValidationError, match="not a known time zone"):
        validate_timezone("Mars/Olympus_Mons")
    validate_timezone("Europe/Paris")
