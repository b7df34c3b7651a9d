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
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Count, Min, Q
from django.utils import timezone

from .. import validation
from ..conf import settings
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
    """The controls as this process last read them."""

    def __init__(self) -> None:
        self.at = float("-inf")
        self.controls: dict[str, Control] = {}
        self.lock = threading.Lock()


_read = _Read()


def controls() -> dict[str, Control]:
    """Every queue's controls, read from the database at most every :data:`REFRESH` seconds."""
    with _read.lock:
        if time.monotonic() - _read.at >= REFRESH:
            _read.controls = {row.name: Control(row.paused, row.concurrency) for row in Queue.objects.all()}
            _read.at = time.monotonic()
        return _read.controls


def forget() -> None:
    """Read the controls again at the next question (after a change made by this process)."""
    with _read.lock:
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


def waiting(now: datetime) -> Any:
    """Per queue: ``depth``, the QUEUED tasks that may run at ``now``, and ``oldest``, the first one's
    submission. (The status filter is written twice so that the waiting tasks' index serves it.)"""
    return (Task.objects.filter(status__in=[TaskStatus.QUEUED, TaskStatus.RETRY])
            .filter(status=TaskStatus.QUEUED).filter(Q(run_after__isnull=True) | Q(run_after__lte=now))
            .values("queue").annotate(depth=Count("pk"), oldest=Min("submitted")).order_by("queue"))


def overview() -> list[dict[str, Any]]:
    """Every queue that has controls, waiting tasks or a live worker serving it: its controls (as
    :func:`as_json`), ``depth``, ``waited`` (seconds the oldest has waited, or None) and ``workers``
    (how many live worker processes serve it), by name."""
    now = timezone.now()
    rows = {row.name: row for row in Queue.objects.all()}
    depths = {found["queue"]: found for found in waiting(now)}
    alive = Worker.objects.filter(stopped__isnull=True,
                                  last_heartbeat__gte=now - timedelta(seconds=settings.WORKER_TIMEOUT))
    serving: dict[str, int] = {}
    for served in alive.values_list("queues", flat=True):
        for name in served:
            serving[name] = serving.get(name, 0) + 1
    overview = []
    for name in sorted(set(rows) | set(depths) | set(serving)):
        found = depths.get(name)
        overview.append({**as_json(rows.get(name), name), "depth": found["depth"] if found else 0,
                         "waited": (now - found["oldest"]).total_seconds() if found else None,
                         "workers": serving.get(name, 0)})
    return overview


def as_json(row: Queue | None, name: str) -> dict[str, Any]:
    """A queue's controls as the JSON API and the dashboard show them."""
    if row is None:
        return {"queue": name, "paused": False, "concurrency": None, "changed": None, "changed_by": ""}
    return {"queue": row.name, "paused": row.paused, "concurrency": row.concurrency,
            "changed": row.changed.isoformat(), "changed_by": row.changed_by}
