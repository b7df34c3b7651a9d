"""The database's clock, as seen from this process.

Whether a worker is alive and when a task started are judged by the database's
clock (``Now()`` in SQL), so that a host whose clock is wrong cannot make
healthy tasks LOST. Times a process computes itself (when a task finished, when
its retry is due) use :func:`now`: its own clock corrected by the offset it
last read from the database. That reading costs nothing: a claim returns the
``started`` time the database gave it (:func:`learn`), so the offset is as
fresh as the process's last claim and as exact as a round trip.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

#: A difference between the clocks smaller than this is taken for the round trip's (and SQLite's
#: millisecond precision), not the clocks': ignored, so that times written a moment apart never
#: come out in the wrong order. Clocks that matter are off by seconds or hours.
NOISE = timedelta(seconds=1)

_offset = timedelta(0)


def learn(database_now: datetime) -> None:
    """The database said it was ``database_now`` just now (a claim's ``started``)."""
    global _offset
    measured = database_now - timezone.now()
    if abs(measured - _offset) > NOISE:
        _offset = measured


def now() -> datetime:
    """This process's best reading of the database's clock."""
    return timezone.now() + _offset
