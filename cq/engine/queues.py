"""Queue controls: an operator pauses, resumes or caps a queue, and every worker obeys within a second.

The controls are :class:`~cq.models.Queue` rows, so they hold across all workers and restarts,
and change without a deploy (from ``cq_queue``, the admin, the JSON API or the dashboard, all
through :func:`change`). A queue without a row runs freely.

- **Paused.** Its tasks are accepted and stay QUEUED; the scheduler still fires. A worker
  neither listens for the queue's doorbells nor claims its rows, so the doorbells wait in Redis
  and are heard as soon as the queue is resumed. A doorbell heard in the moment between a pause
  and a worker's next read of the controls finds its claim refused; its task then waits for the
  database poll (``CQ_QUEUED_GRACE``) after the resume.
- **Capped.** ``concurrency`` is the most tasks of the queue running at once, across all
  workers. It is a limit like a function's ``max_concurrency`` (``cq.engine.limits`` admits a
  claimed task or puts it back, under a lock of the queue); a task of the queue that stops
  running wakes the one that waited longest.

Workers read the rows at most every :data:`REFRESH` seconds (one small query), so a change
reaches every worker within a second, and a task costs no query more.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Q
from django.db.models.functions import Coalesce, Greatest, Now
from django.utils import timezone

from .. import validation
from ..exceptions import InvalidQueue
from ..models import Queue, TaskStatus, Worker, get_task_model
from ..transport import doorbell, events
from . import database

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

logger = logging.getLogger("cq.queues")

#: Seconds a process trusts its last read of the controls.
REFRESH = 0.5
#: Most waiting tasks whose doorbells ring when a cap is raised or lifted; the database poll
#: finds the others.
RING_LIMIT = 1000


@dataclass(frozen=True)
class Control:
    paused: bool = False
    concurrency: int | None = None


FREE = Control()
_UNCHANGED: Any = object()


class _Read:
    """The controls as this process last read them. Asked on every claim and outcome, so it takes
    no lock: two threads that find it stale at once both read the rows, and either answer is new."""

    def __init__(self) -> None:
        self.at = float("-inf")
        self.controls: dict[str, Control] = {}


_read = _Read()


def controls() -> dict[str, Control]:
    """Every queue's controls, read from the database at most every :data:`REFRESH` seconds."""
    if time.monotonic() - _read.at >= REFRESH:
        _read.controls = {row.name: Control(row.paused, row.concurrency) for row in Queue.objects.all()}
        _read.at = time.monotonic()
    return _read.controls


def forget() -> None:
    """Read the controls again at the next question (after a change made by this process)."""
    _read.at = float("-inf")


def of(queue: str) -> Control:
    return controls().get(queue, FREE)


def serving(queues: Iterable[str]) -> list[str]:
    """Those of ``queues`` that are not paused, in order."""
    known = controls()
    return [queue for queue in queues if not known.get(queue, FREE).paused]


def cap(queue: str) -> int | None:
    """The most tasks of ``queue`` that may run at once, or ``None``."""
    return of(queue).concurrency


def pause(name: str, by: str) -> Queue:
    return change(name, by=by, paused=True)


def resume(name: str, by: str) -> Queue:
    return change(name, by=by, paused=False)


def limit(name: str, concurrency: int | None, by: str) -> Queue:
    return change(name, by=by, concurrency=concurrency)


def change(name: str, *, by: str, paused: bool | None = None, concurrency: Any = _UNCHANGED) -> Queue:
    """Set a queue's controls (those given), say who did it in the log and on the websocket, and
    ring the doorbells of tasks a raised or lifted cap lets run. Returns the queue's row.

    Raises:
        InvalidQueue: a bad queue name, or a cap that is not a whole number of at least 1 (or None).
    """
    validation.controlled_queue(name)
    if concurrency is not _UNCHANGED:
        validation.queue_concurrency(concurrency)
    if paused is not None and not isinstance(paused, bool):
        raise InvalidQueue(f"paused takes true or false, not {validation.excerpt(paused, 60)}.")
    by = validation.storable_text(str(by))[:255]
    with transaction.atomic():
        if concurrency is not _UNCHANGED:
            database.lock("queue", name)  # as an admission under the cap does (cq.engine.limits)
        row, _ = Queue.objects.select_for_update().get_or_create(name=name)
        before = Control(row.paused, row.concurrency)
        if paused is not None:
            row.paused = paused
        if concurrency is not _UNCHANGED:
            row.concurrency = concurrency
        row.changed, row.changed_by = timezone.now(), by
        row.save()
        after = Control(row.paused, row.concurrency)
        _ring_freed(name, before, after)
        events.queue(_event(row))
    forget()
    logger.info("Queue %s %s by %s.", name, describe(before, after), by or "(unknown)")
    return row


def describe(before: Control, after: Control) -> str:
    """What changed, in words: "paused", "resumed, capped at 4 running"."""
    said = []
    if before.paused != after.paused:
        said.append("paused" if after.paused else "resumed")
    if before.concurrency != after.concurrency:
        said.append("uncapped" if after.concurrency is None else f"capped at {after.concurrency} running")
    return ", ".join(said) or "unchanged"


def _ring_freed(name: str, before: Control, after: Control) -> None:
    """Ring the doorbells of tasks a raised or lifted cap lets run: a task a cap put back waits
    without one (``cq.engine.limits``)."""
    if before.concurrency is None or after.concurrency == before.concurrency:
        return
    more = RING_LIMIT if after.concurrency is None else after.concurrency - before.concurrency
    if more <= 0:
        return
    now = timezone.now()
    # The status test is written twice so that the waiting tasks' index serves it (see claims).
    waiting = (Task.objects.filter(status__in=[TaskStatus.QUEUED, TaskStatus.RETRY])
               .filter(Q(run_after__isnull=True) | Q(run_after__lte=now), status=TaskStatus.QUEUED, queue=name)
               .order_by("-priority", "submitted").values_list("pk", "queue", "priority"))
    doorbell.ring_on_commit(list(waiting[:min(more, RING_LIMIT)]))


def _event(row: Queue) -> dict[str, Any]:
    return {"event": "queue", "queue": row.name, "paused": row.paused, "concurrency": row.concurrency,
            "by": row.changed_by, "at": row.changed.isoformat()}


@dataclass
class State:
    """One queue, now: its controls, its tasks and the live workers that serve it."""

    name: str
    paused: bool = False
    concurrency: int | None = None
    changed: datetime | None = None
    changed_by: str = ""
    #: QUEUED and due now; QUEUED for later (a countdown or an eta); waiting to be retried.
    queued: int = 0
    scheduled: int = 0
    retry: int = 0
    running: int = 0
    #: Seconds the oldest task QUEUED and due has waited since it was due, by the database's clock.
    oldest_wait: float | None = None
    workers: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"queue": self.name, "paused": self.paused, "concurrency": self.concurrency,
                "changed": self.changed and self.changed.isoformat(), "changed_by": self.changed_by,
                "queued": self.queued, "scheduled": self.scheduled, "retry": self.retry, "running": self.running,
                "oldest_wait": self.oldest_wait, "workers": self.workers}


@dataclass
class Overview:
    queues: dict[str, State]
    workers_alive: int


def overview() -> Overview:
    """Every queue that has tasks waiting or running, controls or a live worker ("default"
    always), by name; and how many worker processes are alive. Each count is one query an index
    serves (the partial ``wait`` and ``run`` indexes, ``last_heartbeat``); the dashboard, the JSON
    API and the metrics all read it here."""
    found: dict[str, State] = {}

    def of(name: str) -> State:
        return found.setdefault(name, State(name))

    of("default")
    ready = Q(run_after__isnull=True) | Q(run_after__lte=Now())
    due = Greatest(F("submitted"), Coalesce(F("run_after"), F("submitted")))
    age = ExpressionWrapper(Now() - due, output_field=DurationField())
    waiting = (Task.objects.filter(status__in=[TaskStatus.QUEUED, TaskStatus.RETRY]).values("queue")
               .annotate(queued=Count("pk", filter=Q(status=TaskStatus.QUEUED) & ready),
                         scheduled=Count("pk", filter=Q(status=TaskStatus.QUEUED) & ~ready),
                         retry=Count("pk", filter=Q(status=TaskStatus.RETRY)),
                         oldest=Max(age, filter=Q(status=TaskStatus.QUEUED) & ready)).order_by())
    for row in waiting:
        state = of(row["queue"])
        state.queued, state.scheduled, state.retry = row["queued"], row["scheduled"], row["retry"]
        state.oldest_wait = None if row["oldest"] is None else max(row["oldest"].total_seconds(), 0.0)
    for row in Task.objects.filter(status=TaskStatus.RUNNING).values("queue").annotate(n=Count("pk")).order_by():
        of(row["queue"]).running = row["n"]
    alive = 0
    for served in Worker.objects.alive().values_list("queues", flat=True):
        alive += 1
        for name in served or ():
            of(name).workers += 1
    for row in Queue.objects.all():
        state = of(row.name)
        state.paused, state.concurrency, state.changed, state.changed_by = (
            row.paused, row.concurrency, row.changed, row.changed_by)
    return Overview(dict(sorted(found.items())), alive)


def as_json(row: Queue) -> dict[str, Any]:
    """A queue's controls as the JSON API answers a change of them."""
    return {"queue": row.name, "paused": row.paused, "concurrency": row.concurrency,
            "changed": row.changed.isoformat(), "changed_by": row.changed_by}
