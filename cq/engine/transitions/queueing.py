"""Queueing: → QUEUED, with its doorbell rung once the transaction commits.

PENDING tasks launched (subtasks once their parent's function returned, chained tasks once
their previous one finished) or submitted; RETRY tasks whose time has come; FAILURE and LOST
top-level tasks retried now, as the same row. And RUNNING tasks that never started, back to
the queue: released by a worker that stopped or lost a claim's reply, or put back by a limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import F, QuerySet
from django.db.models.functions import Now

from ...models import RETRYABLE, TaskStatus, get_task_model
from ...transport import doorbell, events
from .. import clock
from ..returning import update_returning

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()


def launch(candidates: QuerySet[Task]) -> list[Any]:
    """Queue those of ``candidates`` still PENDING (a no-op for any queued meanwhile), in one
    statement; returns their ids."""
    found = update_returning(candidates.filter(status=TaskStatus.PENDING),
                             {"status": TaskStatus.QUEUED, "submitted": clock.now()},
                             ["queue", "priority", "top", "func_name", "status"])
    if found:
        doorbell.ring_on_commit([(task.pk, task.queue, task.priority) for task in found])
        events.status(found)
    return [task.pk for task in found]


def launch_next(task: Task, failed: bool = False) -> None:
    """Queue the tasks chained after ``task``: all on success, the ``force_chain`` ones on failure."""
    chained = Task.objects.filter(previous=task.pk)
    launch(chained.filter(force_chain=True) if failed else chained)


def submit(task: Task, args: list[Any], concurrency_key: str | None, trace: dict[str, str] | None = None) -> bool:
    """Queue the PENDING ``task`` with ``args`` (and ``trace``, its new trace context, if given);
    ``False`` if it is not PENDING."""
    now = clock.now()
    traced = {} if trace is None else {"trace": trace}
    with transaction.atomic():
        if not Task.objects.filter(pk=task.pk, status=TaskStatus.PENDING).update(
                status=TaskStatus.QUEUED, args=args, submitted=now, concurrency_key=concurrency_key, **traced):
            return False
        doorbell.ring_on_commit([(task.pk, task.queue, task.priority)])
    task.status, task.args, task.submitted, task.concurrency_key = TaskStatus.QUEUED, args, now, concurrency_key
    if trace is not None:
        task.trace = trace
    events.status([task])
    return True


def retry_now(task: Task) -> bool:
    """Queue again a top-level task that ended FAILURE or LOST, as the same row (its retries
    counted); ``False`` if it is not such a task. A task of a tree is retried by its tree."""
    if not retry_all(Task.objects.filter(pk=task.pk)):
        return False
    task.refresh_from_db()
    return True


def retry_all(candidates: QuerySet[Task]) -> list[Task]:
    """Queue again, as the same rows and in one statement, the top-level tasks of ``candidates``
    that ended FAILURE or LOST (the others are left as they are); returns those it queued."""
    now = clock.now()
    with transaction.atomic():
        found = update_returning(
            candidates.filter(parent__isnull=True, status__in=RETRYABLE),
            {"status": TaskStatus.QUEUED, "submitted": now, "started": None, "finished": None,
             "result_expiry": None, "run_after": None, "retries": F("retries") + 1, "last_retry": now},
            ["queue", "priority", "top", "func_name", "status"])
        if found:
            doorbell.ring_on_commit([(task.pk, task.queue, task.priority) for task in found])
            events.status(found)
    return found


def queue_retries(task_ids: list[Any]) -> int:
    """Queue at once the tasks among ``task_ids`` waiting to be retried; returns how many."""
    if not task_ids:
        return 0
    queued = update_returning(Task.objects.filter(pk__in=task_ids, status=TaskStatus.RETRY),
                              {"status": TaskStatus.QUEUED, "run_after": None, "submitted": clock.now()},
                              ["queue", "priority"])
    doorbell.ring_on_commit([(task.pk, task.queue, task.priority) for task in queued])
    return len(queued)


def release(worker: str, task_ids: Iterable[Any] | None = None, keep: Iterable[Any] = ()) -> int:
    """Put back what ``worker`` claimed but never started (it stopped or died first, or a claim's
    reply was lost): ``task_ids``, or with ``None`` every row RUNNING under ``worker`` but those in
    ``keep``. They are QUEUED again and their doorbells ring. Returns how many."""
    mine = Task.objects.filter(status=TaskStatus.RUNNING, worker=worker)
    if task_ids is not None:
        task_ids = list(task_ids)
        if not task_ids:
            return 0
        mine = mine.filter(pk__in=task_ids)
    keep = list(keep)
    if keep:
        mine = mine.exclude(pk__in=keep)
    found = update_returning(mine, {"status": TaskStatus.QUEUED, "started": None, "submitted": Now()},
                             ["queue", "priority"])
    doorbell.ring_on_commit([(task.pk, task.queue, task.priority) for task in found])
    return len(found)


def put_back(queryset: QuerySet[Task], **values: Any) -> int:
    """Return the claimed rows of ``queryset`` to QUEUED (a limit refused them); returns how many."""
    return queryset.update(status=TaskStatus.QUEUED, started=None, submitted=Now(), **values)
