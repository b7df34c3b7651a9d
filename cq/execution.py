"""Claiming a task and running it to its next status.

A task runs only after a conditional UPDATE moved it from QUEUED (or a due
RETRY) to RUNNING, so a doorbell that arrives twice runs nothing twice. An
atomic task's own writes and its outcome commit in one transaction; every
outcome is written with ``WHERE status = RUNNING``, so a task revoked while it
ran keeps REVOKED (and an atomic one's writes roll back).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from . import canvas, current, doorbell, registry
from .conf import settings
from .exceptions import CQError, InvalidTask, SoftTimeLimitExceeded, TaskNotRegistered
from .inline import InlineTask
from .logs import flush as flush_logs
from .models import Task, TaskStatus, result_expiry
from .returning import update_returning, update_row

logger = logging.getLogger(__name__)

S = TaskStatus


class _Revoked(Exception):
    """The row left RUNNING while the task ran: someone revoked it."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim(task_ids: list[str], worker: str) -> list[Task]:
    """Take for ``worker`` those of the tasks ``task_ids`` still QUEUED, in the order given."""
    if not task_ids:
        return []
    now = timezone.now()
    claimed = {str(task.pk): task for task in update_returning(
        Task.objects.filter(_ready(now), pk__in=task_ids, status=S.QUEUED),
        {"status": S.RUNNING, "started": now, "worker": worker})}
    missing = [task_id for task_id in task_ids if task_id not in claimed]
    if missing:
        known = {str(pk) for pk in Task.objects.filter(pk__in=missing).values_list("pk", flat=True)}
        for task_id in missing:
            if task_id not in known:
                logger.warning("Skipping a doorbell for task %s, which is not in the database.", task_id)
    return [claimed[task_id] for task_id in dict.fromkeys(task_ids) if task_id in claimed]


def release(task_ids: list[Any], worker: str) -> None:
    """Put back tasks ``worker`` claimed but never started (it stopped, or died, first)."""
    with transaction.atomic():
        mine = Task.objects.filter(pk__in=task_ids, status=S.RUNNING, worker=worker)
        found = list(mine.values_list("pk", "queue"))
        mine.update(status=S.QUEUED, started=None, submitted=timezone.now())
        doorbell.ring_on_commit(found)


def claim_due(worker: str, queues: list[str], grace: float, limit: int = 1) -> list[Task]:
    """Take up to ``limit`` tasks that are due but were not claimed through a doorbell:
    QUEUED for ``grace`` seconds or more (their doorbell was lost), or RETRY whose time has come.
    """
    now = timezone.now()
    # The status test comes first, as the cq_task_waiting index states it: SQLite uses a
    # partial index only when the query repeats the index's condition.
    due = (Q(status__in=[S.QUEUED, S.RETRY])
           & (Q(status=S.RETRY) | Q(submitted__lte=now - timedelta(seconds=grace))) & _ready(now))
    oldest = Task.objects.select_for_update(skip_locked=True).filter(due, queue__in=queues).order_by("submitted")
    with transaction.atomic():
        claimed = update_returning(Task.objects.filter(pk__in=oldest.values("pk")[:limit]),
                                   {"status": S.RUNNING, "started": now, "worker": worker})
    return sorted(claimed, key=lambda task: task.submitted)


def _ready(now: datetime) -> Q:
    return Q(run_after__isnull=True) | Q(run_after__lte=now)


def run(task: Task) -> None:
    """Run a claimed task and record its outcome. The task's own errors never escape."""
    current.start(task.pk)
    try:
        _run(task)
    except _Revoked:
        logger.info("Task %s was revoked while it ran; its outcome is not recorded.", task.pk)
    finally:
        current.finish()


def _run(task: Task) -> None:
    try:
        fn = registry.get(task.func_name)
    except TaskNotRegistered as error:
        _fail(task, error, retry=False)
        return
    try:
        if fn.atomic:
            with transaction.atomic():
                with _soft_time_limit(fn):
                    value = fn.func(task, *task.args, **task.kwargs)
                _record_return(task, value)
        else:
            with _soft_time_limit(fn):
                value = fn.func(task, *task.args, **task.kwargs)
            with transaction.atomic():
                _record_return(task, value)
    except _Revoked:
        raise
    except Exception as error:
        _fail(task, error, fn.should_retry(error, task.retries))


def _record_return(task: Task, value: Any) -> None:
    if isinstance(value, InlineTask):
        value = value.result
    if isinstance(value, Task):
        _wait_on(task, value)
        return
    try:
        json.dumps(value)
    except (TypeError, ValueError) as error:
        raise InvalidTask(f"Task {task.func_name!r} returned a value that is not JSON-serialisable "
                          f"({error}).") from None
    if current.spawned():
        _update(task, status=S.WAITING, result=value)
        canvas.launch_subtasks(task)
        canvas.settle(task.pk)
        return
    now = timezone.now()
    _update(task, status=S.SUCCESS, result=value, error=None, finished=now, result_expiry=result_expiry(task, now))
    if task.has_next:
        canvas.launch_next(task)
    if task.parent_id is not None:
        canvas.settle(task.parent_id)


def _wait_on(task: Task, child: Task) -> None:
    """The task returned ``child``: adopt it as a subtask and take its result when it is done."""
    if child.pk == task.pk:
        raise InvalidTask(f"Task {task.pk} returned itself.")
    child_parent = Task.objects.filter(pk=child.pk).values_list("parent_id", flat=True).get()
    if child_parent is None:
        top = task.top_id or task.pk
        Task.objects.filter(pk=child.pk).update(parent=task.pk, top=top)
        Task.objects.filter(top=child.pk).update(top=top)
    elif child_parent != task.pk:
        raise InvalidTask(f"Task {task.pk} returned task {child.pk}, which is a subtask of another task "
                          f"({child_parent}); return a task you created, or its result.")
    _update(task, status=S.WAITING, waiting_on_id=child.pk)
    canvas.launch_subtasks(task)
    canvas.settle(task.pk)


@contextmanager
def _soft_time_limit(fn: registry.TaskFunction[Any, Any]) -> Iterator[None]:
    """Raise ``SoftTimeLimitExceeded`` in the task once its soft limit passes (main thread only:
    it takes SIGALRM, so a worker thread inside a test runs without it)."""
    seconds = fn.soft_time_limit or settings.SOFT_TIME_LIMIT
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise SoftTimeLimitExceeded(f"Task {fn.name!r} ran past its soft time limit of {seconds} s.")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def hard_time_limit(task: Task) -> float | None:
    """Seconds after which the supervisor kills the process running ``task``."""
    fn = registry.lookup(task.func_name)
    return (fn and fn.time_limit) or settings.TIME_LIMIT


def abandon(task_id: Any, worker: str, error: CQError, *, lost: bool) -> None:
    """Record the end of a task whose worker process is gone: LOST (retried with ``retry_on_lost``),
    or FAILURE for one killed at its hard time limit (retried by its retry rules). Only a row still
    RUNNING on ``worker`` is touched."""
    task = Task.objects.filter(pk=task_id, status=S.RUNNING, worker=worker).first()
    if task is None:
        return
    fn = registry.lookup(task.func_name)
    if lost:
        retry = fn is not None and fn.should_retry_lost(task.retries)
    else:
        retry = fn is not None and fn.should_retry(error, task.retries)
    try:
        _fail(task, error, retry, status=S.LOST if lost else S.FAILURE)
    except _Revoked:
        pass


def _fail(task: Task, error: Exception, retry: bool, status: TaskStatus = S.FAILURE) -> None:
    with transaction.atomic():
        _record_failure(task, error, retry, status)


def _record_failure(task: Task, error: Exception, retry: bool, status: TaskStatus = S.FAILURE) -> None:
    now = timezone.now()
    fields: dict[str, Any] = {
        "error": str(error),
        "exception": f"{type(error).__module__}.{type(error).__qualname__}",
        "traceback": "".join(traceback.format_exception(error)),
    }
    if retry:
        backoff = min(settings.RETRY_BACKOFF * 2**task.retries, settings.RETRY_BACKOFF_MAX)
        _update(task, status=S.RETRY, retries=task.retries + 1, last_retry=now,
                run_after=now + timedelta(seconds=backoff), **fields)
        logger.info("Task %s failed (%s); retry %d in %.1f s.", task.pk, error, task.retries, backoff)
        return
    _update(task, status=status, finished=now, result_expiry=result_expiry(task, now), **fields)
    transaction.on_commit(lambda: canvas.run_errbacks(task, error))
    if task.has_next:
        canvas.launch_next(task, failed=True)
    if task.parent_id is not None:
        canvas.settle(task.parent_id, cause=error)


def _update(task: Task, **fields: Any) -> None:
    """Write the outcome, with the task's logs and errbacks, if the row is still RUNNING.

    It reads back ``parent`` and ``has_next`` as they are now: another task may have
    adopted this one (returned it) or chained a task after it while it ran.
    """
    fields.update(log_records=task.log_records, errbacks=task.errbacks)
    written = update_row(Task, task.pk, {"status": S.RUNNING}, fields, ["parent", "has_next"])
    if written is None:
        raise _Revoked
    for name, value in fields.items():
        setattr(task, name, value)
    parent_id, has_next = written
    task.parent_id = parent_id if parent_id is None or isinstance(parent_id, uuid.UUID) else uuid.UUID(parent_id)
    task.has_next = bool(has_next)
    flush_logs(task)
