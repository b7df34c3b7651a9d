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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Case, Q, Value, When
from django.db.models.functions import Cast
from django.utils import timezone

from . import canvas, current, doorbell, events, limits, registry
from .conf import settings
from .exceptions import CQError, InvalidTask, SoftTimeLimitExceeded, TaskNotRegistered
from .inline import InlineTask
from .logs import flush as flush_logs
from .models import TaskStatus, get_task_model, result_expiry
from .returning import update_returning, update_row

Task = get_task_model()

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
    admitted = _admitted([claimed[task_id] for task_id in dict.fromkeys(task_ids) if task_id in claimed], worker)
    events.status(admitted)
    return admitted


def release(task_ids: list[Any], worker: str) -> None:
    """Put back tasks ``worker`` claimed but never started (it stopped, or died, first)."""
    with transaction.atomic():
        mine = Task.objects.filter(pk__in=task_ids, status=S.RUNNING, worker=worker)
        found = list(mine.values_list("pk", "queue", "priority"))
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
    oldest = (Task.objects.select_for_update(skip_locked=True).filter(due, queue__in=queues)
              .order_by("-priority", "submitted"))
    with transaction.atomic():
        claimed = update_returning(Task.objects.filter(pk__in=oldest.values("pk")[:limit]),
                                   {"status": S.RUNNING, "started": now, "worker": worker})
    admitted = _admitted(sorted(claimed, key=lambda task: (-task.priority, task.submitted)), worker)
    events.status(admitted)
    return admitted


def _admitted(claimed: list[Task], worker: str) -> list[Task]:
    """Those of the tasks ``worker`` claimed that their concurrency and rate limits let start now;
    the others are back in the queue (see cq.limits). If admitting fails, all are put back:
    a task left RUNNING by a worker that is alive would never be run, nor found lost."""
    try:
        return limits.admit(claimed)
    except Exception:
        try:
            release([task.pk for task in claimed], worker)
        except Exception:
            logger.exception("Worker %s could not put back the tasks it claimed.", worker)
        raise


def _ready(now: datetime) -> Q:
    return Q(run_after__isnull=True) | Q(run_after__lte=now)


def run(task: Task, batch: Batch | None = None) -> None:
    """Run a claimed task and record its outcome (in ``batch``, if given). The task's own
    errors never escape."""
    current.start(task.pk)
    try:
        _run(task, batch)
    except _Revoked:
        logger.info("Task %s was revoked while it ran; its outcome is not recorded.", task.pk)
    finally:
        current.finish()
        # It no longer runs: a task of its key waiting for a free slot may start.
        limits.wake_on_commit([task.concurrency_key])


def _run(task: Task, batch: Batch | None) -> None:
    try:
        fn = registry.of_row(task)
    except TaskNotRegistered as error:
        _fail(task, error, retry=False)
        return
    try:
        if fn.atomic and batch is not None:
            before = _metadata(task)
            with _savepoint_on_first_query() as touched:
                with _soft_time_limit(fn):
                    value = fn.func(task, *task.args, **task.kwargs)
                if touched():
                    # Deferred constraints (foreign keys) are checked now, failing this task
                    # alone, rather than at the commit, failing the batch.
                    connection.check_constraints()
                if touched() or _metadata(task) != before or not batch.defer(task, value):
                    _record_return(task, value)
        elif fn.atomic:
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
    except (Exception, SystemExit) as error:  # sys.exit() in a task fails the task, not the worker
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


def _metadata(task: Task) -> tuple[int, ...]:
    """What a running task may change besides its result, by identity: log lines, fields and
    progress are replaced, never changed in place, when they change."""
    return id(task.log_records), id(task.fields), id(task.__dict__.get("progress"))


def batchable(task: Task) -> bool:
    """Whether ``task`` may run in a :class:`Batch`: it runs in a transaction anyway, and the
    database is PostgreSQL (SQLite checks deferred constraints only at the commit, where a
    violation would fail the whole batch; PostgreSQL checks them at the end of each task)."""
    fn = registry.for_row(task)
    return fn is not None and fn.atomic and connection.vendor == "postgresql"


class Batch:
    """Quick atomic tasks, claimed together, run in one transaction that commits once for all.

    Each task runs in a savepoint taken just before its first query, so a task that fails
    rolls back its own writes and no other's, and its deferred constraints are checked as it
    ends. A task that made no query, logged nothing and
    returned a plain value has its outcome written together with the others' in one UPDATE,
    before the commit. If that UPDATE or the commit fails, nothing of the batch is kept and
    its tasks are still RUNNING: the worker records them LOST, as if its process had died.
    """

    def __init__(self) -> None:
        self.deferred: dict[Any, tuple[Task, Any]] = {}

    def defer(self, task: Task, value: Any) -> bool:
        """Keep ``value`` as ``task``'s result, to write at the end; ``False`` if it needs more
        than writing (a subtask or a task returned, subtasks created, or an invalid value)."""
        if isinstance(value, (Task, InlineTask)) or current.spawned():
            return False
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            return False
        self.deferred[task.pk] = (task, value)
        return True

    def write(self) -> None:
        """Record the deferred outcomes, then what follows them (chains, parents)."""
        if not self.deferred:
            return
        now = timezone.now()
        results = {pk: value for pk, (_, value) in self.deferred.items()}
        expiries = {pk: result_expiry(task, now) for pk, (task, _) in self.deferred.items()}
        written = update_returning(
            Task.objects.filter(pk__in=list(self.deferred), status=S.RUNNING),
            {"status": S.SUCCESS, "error": None, "finished": now,
             "result": _by_pk(results, Task._meta.get_field("result")),
             "result_expiry": _by_pk(expiries, Task._meta.get_field("result_expiry"))},
            ["parent", "has_next"])
        for row in written:
            task, value = self.deferred.pop(row.pk)
            task.status, task.result, task.error, task.finished = S.SUCCESS, value, None, now
            task.result_expiry, task.parent_id, task.has_next = expiries[row.pk], row.parent_id, row.has_next
            events.status([task])
            if task.has_next:
                canvas.launch_next(task)
            if task.parent_id is not None:
                canvas.settle(task.parent_id)
        for pk in self.deferred:
            logger.info("Task %s was revoked while it ran; its outcome is not recorded.", pk)


@contextmanager
def batch() -> Iterator[Batch]:
    """A transaction for a :class:`Batch`; the deferred outcomes are written as it ends."""
    with transaction.atomic():
        running = Batch()
        yield running
        running.write()


def _by_pk(values: dict[Any, Any], field: Any) -> Any:
    """``values[pk]`` for each row, as one value when they are all the same, or as a CASE."""
    first = next(iter(values.values()))
    if all(repr(value) == repr(first) for value in values.values()):
        return first
    cases = [When(pk=pk, then=Value(value, output_field=field)) for pk, value in values.items() if value is not None]
    expression = Case(*cases, default=None, output_field=field)
    if connection.features.requires_casted_case_in_updates:
        expression = Cast(expression, output_field=field)
    return expression


@contextmanager
def _savepoint_on_first_query() -> Iterator[Callable[[], bool]]:
    """Within a transaction, a savepoint taken only when the block makes its first query; a
    block that made none has nothing to roll back. Yields whether a query was made."""
    opened: list[transaction.Atomic] = []

    def take_savepoint(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if not opened:
            opened.append(transaction.atomic())  # first, so that the SAVEPOINT itself passes through
            opened[0].__enter__()
        return execute(sql, params, many, context)

    with connection.execute_wrapper(take_savepoint):
        try:
            yield lambda: bool(opened)
        except BaseException as error:
            if opened:
                opened[0].__exit__(type(error), error, error.__traceback__)
            raise
        if opened:
            opened[0].__exit__(None, None, None)


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
    fn = registry.for_row(task)
    return (fn and fn.time_limit) or settings.TIME_LIMIT


def abandon(task_id: Any, worker: str, error: CQError, *, lost: bool) -> None:
    """Record the end of a task whose worker process is gone: LOST (retried with ``retry_on_lost``),
    or FAILURE for one killed at its hard time limit (retried by its retry rules). Only a row still
    RUNNING on ``worker`` is touched."""
    task = Task.objects.filter(pk=task_id, status=S.RUNNING, worker=worker).first()
    if task is None:
        return
    fn = registry.for_row(task)
    if lost:
        retry = fn is not None and fn.should_retry_lost(task.retries)
    else:
        retry = fn is not None and fn.should_retry(error, task.retries)
    try:
        _fail(task, error, retry, status=S.LOST if lost else S.FAILURE)
    except _Revoked:
        pass
    limits.wake_on_commit([task.concurrency_key])


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
    fields.update(log_records=task.log_records, errbacks=task.errbacks, fields=task.fields,
                  progress=task.__dict__.get("progress"))
    written = update_row(Task, task.pk, {"status": S.RUNNING}, fields, ["parent", "has_next"])
    if written is None:
        raise _Revoked
    for name, value in fields.items():
        setattr(task, name, value)
    parent_id, has_next = written
    task.parent_id = parent_id if parent_id is None or isinstance(parent_id, uuid.UUID) else uuid.UUID(parent_id)
    task.has_next = bool(has_next)
    flush_logs(task)
    events.status([task])
