"""A minute's sample of each queue, for the queues page's charts of the last hour.

How deep a queue was twenty minutes ago cannot be read back from the task rows cheaply (a row
keeps only its latest status), so the scheduler's leader writes it down as it goes: at each sweep
it looks whether the minute that just ended has its samples, and if not, takes them
(:func:`take`), one :class:`~cq.models.QueueSample` per queue:

- ``queued``, ``running`` and ``oldest_wait``: the queue as :func:`cq.engine.queues.overview`
  sees it when the sample is taken, a few seconds after the minute ended (within
  ``CQ_SWEEP_INTERVAL``);
- ``finished``: the tasks of the queue that finished within that minute, exactly, counted over
  the partial index on ``finished`` (one query for all queues).

A minute is sampled once: the unique constraint on (minute, queue) turns a second sample, by a
restarted leader or two leaders at once, into nothing. A minute no leader saw (none ran) has no
sample; the charts leave it blank rather than draw a zero. Samples older than a day are deleted
when a sample is taken. All of it costs the leader three small queries a minute and one a sweep;
a task costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db.models import Count
from django.utils import timezone

from ..engine import queues
from ..models import QueueSample, get_task_model

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

MINUTE = timedelta(minutes=1)
#: How long samples are kept.
KEEP = timedelta(days=1)
#: What a queue's sample holds, in the order the charts and the JSON API give them.
FIELDS = ("queued", "running", "finished", "oldest_wait")


def last_minute(now: datetime | None = None) -> datetime:
    """The minute that ended last, by its first instant."""
    return (now or timezone.now()).replace(second=0, microsecond=0) - MINUTE


def take(now: datetime | None = None) -> int:
    """Sample every queue for the minute that ended last, unless that minute has its samples
    already; delete samples older than :data:`KEEP`. Returns how many queues were sampled (0 when
    the minute had its samples)."""
    minute = last_minute(now)
    if QueueSample.objects.filter(minute=minute).exists():
        return 0
    taken = record(minute)
    QueueSample.objects.filter(minute__lt=minute - KEEP).delete()
    return taken


def record(minute: datetime) -> int:
    """Sample every queue for ``minute``: its state now, and the tasks that finished within that
    minute. A queue sampled for that minute already (by another leader) keeps its sample. Returns
    how many queues were sampled."""
    finished = dict(Task._default_manager.filter(finished__gte=minute, finished__lt=minute + MINUTE)
                    .values_list("queue").annotate(n=Count("pk")).order_by())
    states = queues.overview().queues
    samples = []
    for name in sorted(set(states) | set(finished)):
        state = states.get(name) or queues.State(name)  # a queue whose last task finished just now
        samples.append(QueueSample(queue=name, minute=minute, queued=state.queued, running=state.running,
                                   oldest_wait=state.oldest_wait, finished=finished.get(name, 0)))
    # Another leader's samples of this minute win; ours are dropped (the unique constraint).
    QueueSample.objects.bulk_create(samples, ignore_conflicts=True)
    return len(samples)


@dataclass
class History:
    """Each queue's samples over the last ``minutes`` minutes, oldest first: one list per field of
    :data:`FIELDS`, a number per minute, ``None`` for a minute nobody sampled."""

    start: datetime
    minutes: int
    queues: dict[str, dict[str, list[Any]]]

    def of(self, queue: str) -> dict[str, Any]:
        """One queue's samples as the JSON API gives them (a queue never sampled: all ``None``)."""
        series = self.queues.get(queue) or self._blank()
        return {"start": self.start.isoformat(), "minutes": self.minutes, **series}

    def _blank(self) -> dict[str, list[Any]]:
        return {field: [None] * self.minutes for field in FIELDS}


def history(minutes: int = 60, now: datetime | None = None) -> History:
    """The samples of the last ``minutes`` minutes that ended (one query over the unique index).
    In a minute that has samples, a queue without one had nothing: its numbers are 0."""
    start = last_minute(now) - (minutes - 1) * MINUTE
    rows = QueueSample.objects.filter(minute__gte=start, minute__lt=start + minutes * MINUTE).values(
        "queue", "minute", *FIELDS)
    found: dict[str, dict[str, list[Any]]] = {}
    sampled: set[int] = set()
    for row in rows:
        index = int((row["minute"] - start).total_seconds() // 60)
        sampled.add(index)
        series = found.setdefault(row["queue"], {field: [None] * minutes for field in FIELDS})
        for field in FIELDS:
            series[field][index] = row[field]
    for series in found.values():
        for index in sampled:
            for field in ("queued", "running", "finished"):
                if series[field][index] is None:
                    series[field][index] = 0
    return History(start, minutes, found)
