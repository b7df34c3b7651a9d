"""The outcome of a run: RUNNING → SUCCESS, WAITING, FAILURE, RETRY or LOST.

Every write is fenced on the run's attempt (see the package's docstring): a run that is no
longer RUNNING under its attempt raises :class:`Stale` and records nothing. What follows a
final status (errbacks, chained tasks, the waiting parent) is ``settling.follow``.
"""

from __future__ import annotations

import functools
import logging
import traceback
import uuid
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import connections, router, transaction

from ... import registry, validation
from ...conf import settings
from ...exceptions import CQError, InvalidTask, TaskLost
from ...models import TaskStatus, get_task_model
from ...transport import events
from .. import clock, current, limits, statements
from ..inline import InlineTask
from ..logs import flush as flush_logs
from ..returning import update_row
from . import queueing, settling

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

logger = logging.getLogger("cq.transitions")  # its name before cq's subpackages: LOGGING settings use it


class Stale(CQError):
    """The run's row is no longer RUNNING under its attempt: it was revoked, or declared LOST
    (and maybe claimed again). Its outcome is not recorded."""


def result_of(task: Task, value: Any) -> Any:
    """What ``task``'s function returned, as it will be recorded.

    Raises:
        InvalidTask: a value no database can store (not JSON, NaN, NUL), or the task itself; an
        error of the task's, handled by its retry rules.
    """
    if isinstance(value, InlineTask):
        value = value.result
    if isinstance(value, Task):
        if value.pk == task.pk:
            raise InvalidTask(f"Task {task.pk} returned itself.")
        return value
    validation.check_storable(value, f"the result of task {task.func_name!r}")
    return value


def succeed(task: Task, value: Any) -> None:
    """Record what ``task``'s function returned (see :func:`result_of`): SUCCESS; or WAITING
    until the task it returned, or the subtasks it created, have finished."""
    if isinstance(value, Task):
        _adopt(task, value)
        _write(task, status=TaskStatus.WAITING, waiting_on_id=value.pk)
    elif current.spawned():
        _write(task, status=TaskStatus.WAITING, result=value)
    else:
        _end(task, TaskStatus.SUCCESS, result=value, error=None)
        return
    queueing.launch(Task.objects.filter(parent=task.pk, previous__isnull=True))
    settling.settle(task.pk)


def alone(task: Task, value: Any) -> bool:
    """Whether ``task``'s success leaves nothing to follow, as far as this process knows: it
    returned a plain value, created no subtask, and had no parent and no chained task when it
    was claimed. Its outcome may then be written by :func:`succeed_alone`."""
    return not (isinstance(value, Task) or current.spawned() or task.parent_id is not None or task.has_next)


def succeed_alone(task: Task, value: Any, *, unchanged: bool = False) -> bool:
    """Record SUCCESS for a run that is :func:`alone`, in one statement, with no transaction of
    its own: there is nothing to write with it (nor its logs, fields and progress, when they are
    ``unchanged`` since the claim). Returns ``False``, having written nothing, when the row says
    otherwise (a task adopted it, or was chained after it, while it ran) or the run
    is stale: the caller then records it with :func:`succeed`, which tells these apart."""
    now = clock.now()
    return _write(task, alone=True, minimal=unchanged, status=TaskStatus.SUCCESS, result=value, error=None,
                  finished=now, result_expiry=settling.result_expiry(task, now, TaskStatus.SUCCESS))


def fail(task: Task, error: BaseException, retry: bool, status: TaskStatus = TaskStatus.FAILURE) -> None:
    """Record that ``task``'s run failed with ``error``: RETRY after a backoff, or ``status``."""
    fields: dict[str, Any] = {"error": validation.storable_text(str(error)),
              "exception": f"{type(error).__module__}.{type(error).__qualname__}"[:255],
              "traceback": validation.storable_text("".join(traceback.format_exception(error)))}
    if not retry:
        _end(task, status, cause=error, **fields)
        return
    backoff = min(settings.RETRY_BACKOFF * 2**task.retries, settings.RETRY_BACKOFF_MAX)
    now = clock.now()
    _write(task, status=TaskStatus.RETRY, retries=task.retries + 1, last_retry=now,
           run_after=now + timedelta(seconds=backoff), **fields)
    logger.info("Task %s failed (%s); retry %d in %.1f s.", task.pk, error, task.retries, backoff)


def unstorable(task: Task, error: BaseException) -> None:
    """Record FAILURE with as little as can be: the database refused the run's full outcome
    (its result, logs, fields or progress), and the error says why."""
    message = validation.storable_text(f"cq could not store this task's outcome ({type(error).__name__}: {error}).")
    _end(task, TaskStatus.FAILURE, cause=CQError(message), minimal=True, error=message, traceback="",
         exception=f"{type(error).__module__}.{type(error).__qualname__}"[:255])


def lose(task_id: Any, worker: str, error: CQError, *, lost: bool = True, attempt: int | None = None) -> bool:
    """Record the end of a run that cannot report it (its process is gone, or its transaction did
    not commit): LOST, retried with ``retry_on_lost``; or FAILURE, retried by its rules, for one
    killed at its hard time limit (``lost=False``). Only a row still RUNNING on ``worker`` (and
    under ``attempt``, when given) is touched; returns whether it was."""
    found = Task.objects.filter(pk=task_id, status=TaskStatus.RUNNING, worker=worker)
    task = (found if attempt is None else found.filter(attempt=attempt)).first()
    if task is None:
        return False
    fn = registry.find_for_row(task)
    if lost:
        retry = fn is not None and fn.should_retry_lost(task.retries)
    else:
        retry = fn is not None and fn.should_retry(error, task.retries)
    try:
        with transaction.atomic():
            fail(task, error, retry, status=TaskStatus.LOST if lost else TaskStatus.FAILURE)
    except Stale:
        return False
    return True


def reconcile(worker: str, started: Iterable[Any], why: str) -> None:
    """Settle every row still RUNNING under ``worker``, an incarnation that runs none of them now:
    those it ``started`` end LOST (``why``); the others it never started, so they are put back."""
    started = list(started)
    queueing.release(worker, keep=started)
    for task_id in started:
        lose(task_id, worker, TaskLost(why))


def succeed_many(runs: list[tuple[Task, Any]], *, alone: bool = False) -> list[tuple[Task, Any]]:
    """Record SUCCESS for quick tasks of a batch, on PostgreSQL, in one UPDATE written once: tasks
    that made no query, created nothing and returned a plain value (``result_of``'s). A stale run
    is left alone. With ``alone`` (every run is :func:`alone`, and the statement runs outside any
    transaction), a row that now has a parent or a chained task is left alone too, and returned
    with the stale ones: the caller records those with :func:`succeed`, which tells them apart.
    """
    if not runs:
        return []
    now = clock.now()
    connection = connections[router.db_for_write(Task)]
    result: Any = Task._meta.get_field("result")
    expiries = [settling.result_expiry(task, now, TaskStatus.SUCCESS) for task, _ in runs]
    params: list[Any] = [TaskStatus.SUCCESS, now,
              [task.pk for task, _ in runs], [task.attempt for task, _ in runs],
              [result.get_db_prep_save(value, connection) for _, value in runs], expiries,
              TaskStatus.RUNNING]
    sql = statements.sql(connection, ("succeed_many", alone), functools.partial(_succeeding, alone))
    written = {_uuid(pk): (parent, has_next) for pk, parent, has_next in statements.run(connection, sql, params)}
    left = []
    for (task, value), expiry in zip(runs, expiries, strict=True):
        if task.pk not in written:
            if alone:
                left.append((task, value))
            else:
                logger.info("Task %s was revoked or lost while it ran; its outcome is not recorded.", task.pk)
            continue
        parent, has_next = written[task.pk]
        task.status, task.result, task.error, task.finished = TaskStatus.SUCCESS, value, None, now
        task.result_expiry, task.parent_id, task.has_next = expiry, _uuid(parent), bool(has_next)
        events.status([task])
        limits.wake_on_commit([(task.concurrency_key, task.queue)])
        settling.follow(task, TaskStatus.SUCCESS, None)
    return left


def _succeeding(alone: bool, quote: Callable[[str], str]) -> str:
    """The UPDATE of :func:`succeed_many`: its runs come as arrays, unnested, so that one statement
    (prepared once) serves a batch of any size. Fenced on each run's attempt."""
    column = {field.name: quote(str(field.column)) for field in Task._meta.concrete_fields}
    guard = f" AND t.{column['parent']} IS NULL AND NOT t.{column['has_next']}" if alone else ""
    return (f"UPDATE {quote(Task._meta.db_table)} AS t SET {column['status']} = %s, {column['error']} = NULL, "
            f"{column['finished']} = %s, {column['result']} = run.result, {column['result_expiry']} = run.expiry "
            f"FROM unnest(%s::uuid[], %s::integer[], %s::jsonb[], %s::timestamptz[]) "
            f"AS run(id, attempt, result, expiry) "
            f"WHERE t.{column['id']} = run.id AND t.{column['attempt']} = run.attempt AND t.{column['status']} = %s"
            f"{guard} RETURNING t.{column['id']}, t.{column['parent']}, t.{column['has_next']}")


def _end(task: Task, status: TaskStatus, *, cause: BaseException | None = None, minimal: bool = False,
         **values: Any) -> None:
    now = clock.now()
    expiry = settling.result_expiry(task, now, status)
    _write(task, minimal=minimal, status=status, finished=now, result_expiry=expiry, **values)
    settling.follow(task, status, cause)


def _write(task: Task, *, minimal: bool = False, alone: bool = False, **values: Any) -> bool:
    """Write the run's outcome, with its logs, errbacks, fields and progress (not when
    ``minimal``), if the row is still RUNNING under the run's attempt (and, when ``alone``, has
    no parent and no chained task: else it returns ``False``; a stale run raises :class:`Stale`).

    It reads back ``parent`` and ``has_next`` as they are now: another task may have adopted
    this one (returned it) or chained a task after it while it ran.
    """
    if not minimal:
        values.update(log_records=task.log_records, errbacks=task.errbacks, fields=task.fields,
                      progress=task.__dict__.get("progress"))
    running: dict[str, Any] = {"status": TaskStatus.RUNNING, "attempt": task.attempt}
    if alone:
        running.update(parent=None, has_next=False)
    written = update_row(Task, task.pk, running, values, ["parent", "has_next"])
    if written is None:
        if alone:
            return False
        raise Stale(f"Task {task.pk} is no longer running as attempt {task.attempt}.")
    for name, value in values.items():
        setattr(task, name, value)
    task.parent_id = _uuid(written[0])
    task.has_next = bool(written[1])
    flush_logs(task)
    events.status([task])
    # It no longer runs: a task of its key waiting for a free slot may start.
    limits.wake_on_commit([(task.concurrency_key, task.queue)])
    return True


def _adopt(task: Task, child: Task) -> None:
    """``task`` returned ``child``: make it a subtask, whose result ``task`` takes when it is done."""
    child_parent = Task.objects.filter(pk=child.pk).values_list("parent_id", flat=True).get()
    if child_parent is None:
        top = task.top_id or task.pk
        Task.objects.filter(pk=child.pk).update(parent=task.pk, top=top)
        Task.objects.filter(top=child.pk).update(top=top)
    elif child_parent != task.pk:
        raise InvalidTask(f"Task {task.pk} returned task {child.pk}, which is a subtask of another task "
                          f"({child_parent}); return a task you created, or its result.")


def _uuid(value: Any) -> Any:
    return value if value is None or isinstance(value, uuid.UUID) else uuid.UUID(value)
