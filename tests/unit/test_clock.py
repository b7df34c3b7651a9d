"""cq.engine.clock: the database's time as a process sees it, learned from what its claims return."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from cq.engine import clock


@pytest.fixture(autouse=True)
def keep_the_offset(monkeypatch):
    monkeypatch.setattr(clock, "_offset", timedelta(0))


def test_a_database_an_hour_ahead_moves_this_process_an_hour_ahead():
    clock.learn(timezone.now() + timedelta(hours=1))
    assert abs(clock.now() - timezone.now() - timedelta(hours=1)) < timedelta(seconds=1)
    clock.learn(timezone.now())  # the host's clock was put right
    assert abs(clock.now() - timezone.now()) < timedelta(seconds=1)


def test_a_round_trips_worth_of_difference_is_not_learned():
    """SQLite returns milliseconds, and a reply comes a little after the database read its clock:
    such differences must not make two times written a moment apart come out of order."""
    clock.learn(timezone.now() - timedelta(milliseconds=3))
    before = timezone.now()
    assert clock.now() >= before
