"""Concurrency and rate limits: whether a task just claimed may start now.

The claim is a conditional UPDATE that knows nothing of limits, so that a task
without one costs no query more. The tasks it returns whose function has a
limit (``@task(max_concurrency=..., rate_limit=...)``) are then *admitted*, one
at a time, each in a short transaction; a task refused goes back to QUEUED. It
does not fail, and runs once it may:

- **Concurrency.** A task is put back when ``max_concurrency`` others of its
  ``concurrency_key`` are RUNNING. Counting and putting back are one UPDATE,
  which on PostgreSQL follows an advisory lock on the key: a statement reads a
  snapshot taken when it starts, so the lock must be taken by an earlier
  statement for the count to see what the lock's previous holder committed.
  SQLite lets one transaction write at a time, so the UPDATE alone is enough
  there. Tasks claimed by others and not yet admitted count too: two tasks
  claimed at once may both be refused only if something else of their key is
  running, because the second to take the lock sees the first put back. A task
  put back waits without a doorbell: when a task of its key stops running (it
  finishes, fails, waits for subtasks, is lost), the worker rings the doorbell
  of the one waiting longest, after that task's commit and under the same lock,
  so that a put-back committed meanwhile is seen. The database poll, after
  ``CQ_QUEUED_GRACE``, is the safety net.
- **Rate.** ``rate_limit="N/m"`` spaces the starts of a function's tasks at
  least a minute/N apart, across all workers (no bursts, so no window of a
  minute ever holds more than N starts). A start is a compare-and-set UPDATE of
  the function's :class:`~cq.models.RateLimit` row. A task refused is put back
  with ``run_after`` at a start time booked for it, each booked a little more
  than the interval after the previous one, so that waiting tasks come due one
  at a time; the scheduler rings each as it comes due.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from django.db import IntegrityError, transaction
from django.db.models import Func, IntegerField, Q, QuerySet, Subquery
from django.db.models.lookups import GreaterThanOrEqual
from django.utils import timezone

from .. import registry
from ..models import Queue, RateLimit, TaskStatus, get_task_model
from ..transport import doorbell
from . import clock, database, queues
from .transitions import queueing

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

logger = logging.getLogger("cq.limits")  # its name before cq's subpackages: LOGGING settings use it


#: Added between two booked starts, so that a waiting task that starts a few milliseconds late
#: does not push the next one, booked right after it, back to the end of the line.
MAX_SLACK = timedelta(seconds=0.05)


def admit(tasks: list[Task]) -> list[Task]:
    """Of ``tasks``, just claimed, those their limits let start now, in order; the others go
    back to QUEUED. Tasks of functions without limits, in queues without a cap, cost no query."""
    caps = queues.controls()
    limited = {}
    for task in tasks:
        fn = registry.find(task.func_name)
        cap = caps.get(task.queue, queues.FREE).concurrency
        if cap is not None or (fn is not None and fn.limited):
            limited[task.pk] = (fn, cap)
    if not limited:
        return tasks
    # Tasks of this claim not yet admitted do not count against each other's limit.
    undecided = set(limited)
    refused = set()
    for task in tasks:
        if task.pk in limited:
            if not _admit(task, *limited[task.pk], undecided):
                refused.add(task.pk)
            undecided.discard(task.pk)
    return [task for task in tasks if task.pk not in refused]


def _admit(task: Task, fn: registry.TaskFunction[Any, Any] | None, cap: int | None, undecided: set[Any]) -> bool:
    with transaction.atomic():
        now = clock.now()
        # The queue's lock before the key's, always: two admissions never wait on each other crosswise.
        if cap is not None and _queue_full(task, undecided):
            return False
        if fn is None:
            return True
        if fn.max_concurrency is not None and task.concurrency_key is not None:
            slot = Slot("concurrency", task.concurrency_key)
            _lock(slot)
            if _put_back_if_full(task, slot, fn.max_concurrency, undecided):
                return False
        if fn.rate_interval is not None:
            booked = _take_start(fn.name, fn.rate_interval, now)
            if booked is not None:
                queueing.put_back(Task.objects.filter(pk=task.pk, status=TaskStatus.RUNNING), run_after=booked)
                return False
            # Its start is the one the rate limit counted.
            Task.objects.filter(pk=task.pk).update(started=now)
            task.started = now
    return True


@dataclass(frozen=True)
class Slot:
    """What a limit counts running tasks of: a concurrency key (``"concurrency"``) or a queue."""

    kind: Literal["concurrency", "queue"]
    value: str

    def tasks(self) -> QuerySet[Task]:
        column = "concurrency_key" if self.kind == "concurrency" else "queue"
        return Task.objects.filter(**{column: self.value})


def _queue_full(task: Task, undecided: set[Any]) -> bool:
    """Put ``task`` back to QUEUED if its queue's cap is reached. The cap is read again under the
    queue's lock, which a change of it takes too: a doorbell rung by raising it always finds the
    new cap, and a task put back meanwhile QUEUED to be woken."""
    slot = Slot("queue", task.queue)
    _lock(slot)
    cap = Queue.objects.filter(name=task.queue).values_list("concurrency", flat=True).first()
    return cap is not None and _put_back_if_full(task, slot, cap, undecided)


def _put_back_if_full(task: Task, slot: Slot, limit: int, undecided: set[Any]) -> bool:
    """Put ``task`` back to QUEUED if ``limit`` other tasks of its ``slot`` are running (the
    caller holds the slot's lock)."""
    running = (slot.tasks().filter(status=TaskStatus.RUNNING)
               .exclude(pk__in=undecided).order_by()
               .annotate(n=Func("pk", function="COUNT", output_field=IntegerField())).values("n"))
    full = (Task.objects.filter(pk=task.pk, status=TaskStatus.RUNNING)
            .filter(GreaterThanOrEqual(Subquery(running), limit)))
    return bool(queueing.put_back(full))


def _take_start(name: str, interval: timedelta, now: datetime) -> datetime | None:
    """Start a task of function ``name`` now, if its rate allows (``None``); otherwise book the
    next free start time for it and return that."""
    if RateLimit.objects.filter(key=name, last_start__lte=now - interval).update(last_start=now):
        return None
    row = RateLimit.objects.select_for_update().filter(key=name).first()
    if row is None:  # the function's first start
        try:
            with transaction.atomic():
                RateLimit.objects.create(key=name, last_start=now, booked_until=now)
            return None
        except IntegrityError:  # another worker's first start came first
            row = RateLimit.objects.select_for_update().get(key=name)
    booked = max(row.last_start + interval, row.booked_until + interval + min(interval / 10, MAX_SLACK))
    RateLimit.objects.filter(key=name).update(booked_until=booked)
    return booked


def _lock(slot: Slot) -> None:
    """Serialise, until the transaction ends, whatever counts or frees the running tasks of ``slot``
    (and, for a queue, changes its cap: ``cq.engine.queues.change``)."""
    database.lock(slot.kind, slot.value)


def wake_on_commit(stopped: Iterable[tuple[str | None, str]]) -> None:
    """Once the current transaction commits, wake a waiting task for each limit that tasks which
    stopped running counted against: ``stopped`` gives their ``(concurrency_key, queue)``. A failure
    is logged, not raised: the poll is the safety net."""
    caps = queues.controls()
    slots = []
    for key, queue in stopped:
        if key is not None:
            slots.append(Slot("concurrency", key))
        if caps.get(queue, queues.FREE).concurrency is not None:
            slots.append(Slot("queue", queue))
    for slot in dict.fromkeys(slots):
        transaction.on_commit(functools.partial(_wake_or_log, slot))


def _wake_or_log(slot: Slot) -> None:
    try:
        wake(slot)
    except Exception:
        logger.exception("Could not wake a task waiting for %s %r; the database poll will find it after "
                         "CQ_QUEUED_GRACE seconds.", "concurrency key" if slot.kind == "concurrency" else "queue",
                         slot.value)


def wake(slot: Slot) -> None:
    """Ring the doorbell of the task counted against ``slot`` that may run now: of highest
    priority, then the one that has waited longest."""
    now = timezone.now()
    with transaction.atomic():
        _lock(slot)
        # The status test repeats the cq_task_wait index's condition, for SQLite (see claim_due).
        waiting = (slot.tasks().filter(status__in=[TaskStatus.QUEUED, TaskStatus.RETRY])
                   .filter(Q(run_after__isnull=True) | Q(run_after__lte=now), status=TaskStatus.QUEUED)
                   .order_by("-priority", "submitted").values_list("pk", "queue", "priority"))
        doorbell.ring_on_commit(list(waiting[:1]))
