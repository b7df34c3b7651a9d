"""Concurrency limits: whether a task just claimed may start now.

The claim is a conditional UPDATE that knows nothing of limits, so that a task
without one costs no query more. The tasks it returns whose function has a
limit (``@task(concurrency_key=..., max_concurrency=...)``) are then *admitted*, one
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
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import Func, IntegerField, Q, Subquery
from django.db.models.lookups import GreaterThanOrEqual
from django.utils import timezone

from . import doorbell, registry
from .models import TaskStatus, get_task_model

Task = get_task_model()

logger = logging.getLogger(__name__)

S = TaskStatus


def admit(tasks: list[Task]) -> list[Task]:
    """Of ``tasks``, just claimed, those their limits let start now, in order; the others go
    back to QUEUED. Tasks of functions without limits cost no query."""
    limited = {task.pk: fn for task in tasks if (fn := registry.lookup(task.func_name)) is not None and fn.limited}
    if not limited:
        return tasks
    # Tasks of this claim not yet admitted do not count against each other's limit.
    undecided = set(limited)
    refused = set()
    for task in tasks:
        if task.pk in limited:
            if not _admit(task, limited[task.pk], undecided):
                refused.add(task.pk)
            undecided.discard(task.pk)
    return [task for task in tasks if task.pk not in refused]


def _admit(task: Task, fn: registry.TaskFunction[Any, Any], undecided: set[Any]) -> bool:
    with transaction.atomic():
        now = timezone.now()
        if fn.max_concurrency is not None and task.concurrency_key is not None:
            if _put_back_if_full(task, fn.max_concurrency, undecided, now):
                return False
    return True


def _put_back_if_full(task: Task, limit: int, undecided: set[Any], now: datetime) -> bool:
    """Put ``task`` back to QUEUED if ``limit`` other tasks of its key are running."""
    _lock(task.concurrency_key)
    running = (Task.objects.filter(concurrency_key=task.concurrency_key, status=S.RUNNING)
               .exclude(pk__in=undecided).order_by()
               .annotate(n=Func("pk", function="COUNT", output_field=IntegerField())).values("n"))
    full = Task.objects.filter(pk=task.pk, status=S.RUNNING).filter(GreaterThanOrEqual(Subquery(running), limit))
    return bool(full.update(status=S.QUEUED, started=None, submitted=now))


def _lock(key: str) -> None:
    """Serialise, until the transaction ends, whatever counts or frees the slots of ``key``."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"cq.concurrency:{key}"])


def wake_on_commit(keys: Iterable[str | None]) -> None:
    """Once the current transaction commits, wake a task waiting for each of ``keys`` (tasks of
    these keys have stopped running). A failure is logged, not raised: the poll is the safety net."""
    for key in dict.fromkeys(keys):
        if key is not None:
            transaction.on_commit(functools.partial(_wake_or_log, key))


def _wake_or_log(key: str) -> None:
    try:
        wake(key)
    except Exception:
        logger.exception("Could not wake a task waiting for concurrency key %r; the database poll will "
                         "find it after CQ_QUEUED_GRACE seconds.", key)


def wake(key: str) -> None:
    """Ring the doorbell of the task of ``key`` that has waited longest and may run now."""
    now = timezone.now()
    with transaction.atomic():
        _lock(key)
        # The status test repeats the cq_task_wait index's condition, for SQLite (see claim_due).
        waiting = (Task.objects.filter(status__in=[S.QUEUED, S.RETRY])
                   .filter(Q(run_after__isnull=True) | Q(run_after__lte=now), status=S.QUEUED, concurrency_key=key)
                   .order_by("submitted").values_list("pk", "queue"))
        doorbell.ring_on_commit(list(waiting[:1]))
