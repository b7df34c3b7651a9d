"""Settling a waiting parent (WAITING → SUCCESS, INCOMPLETE or FAILURE), and what follows
every final status: errbacks once it commits, the tasks chained after it, its waiting parent.

A parent settles as its subtasks finish: a plain tree once all succeeded (SUCCESS) or one
failed (INCOMPLETE); a group, chord or stages by the rule of its kind (``cq.workflows.rules``).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Case, Value, When

from ... import retention
from ...exceptions import CQError
from ...models import ERROR, TaskStatus, get_task_model
from ...transport import events
from ...workflows import errbacks, rules
from .. import clock
from . import queueing

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

_local = threading.local()


def result_expiry(task: Task, finished: datetime, status: str) -> datetime | None:
    """When a task that ended ``status`` at ``finished`` may be cleaned up (``None``: never): its
    own ``result_ttl``, else the retention rule of its function and status (``cq.retention``)."""
    ttl = retention.keep(task.func_name, status, task.result_ttl)
    return None if ttl is None else finished + timedelta(seconds=ttl)


def follow(task: Task, status: TaskStatus, cause: BaseException | None) -> None:
    """What follows ``task``'s final ``status``: its errbacks once that commits, the tasks chained
    after it, and its waiting parent."""
    failed = status != TaskStatus.SUCCESS
    if failed:
        transaction.on_commit(functools.partial(errbacks.run_errbacks, task, cause or CQError(task.error)))
    if task.has_next:
        queueing.launch_next(task, failed=failed)
    if task.parent_id is not None:
        settle(task.parent_id, cause if failed else None)


def settle(task_id: Any, cause: BaseException | None = None) -> None:
    """Finish a WAITING task whose subtasks are all done; then its parent, and so on up.

    Must run inside a transaction; ``cause`` is the error that made a subtask fail, handed to
    errbacks. Groups, chords and stages decide by their own rules (``cq.workflows.rules``).
    """
    pending = getattr(_local, "settling", None)
    if pending is not None:
        pending.append((task_id, cause))
        return
    task = Task.objects.select_for_update().filter(pk=task_id).first()
    if task is None or task.status != TaskStatus.WAITING:
        return
    rule = rules.RULES.get(task.func_name)
    if rule is None:
        outcome = _tree_outcome(task)
    else:
        # A workflow names its own failures (every failed member of a group), so the error
        # that woke it is not necessarily the one it reports.
        outcome, cause = rule(task), None
    if outcome is None:
        return
    status, fields = outcome
    now = clock.now()
    fields.update(status=status, finished=now, result_expiry=result_expiry(task, now, status))
    Task.objects.filter(pk=task.pk, status=TaskStatus.WAITING).update(**fields)
    for name, value in fields.items():
        setattr(task, name, value)
    events.status([task])
    follow(task, status, cause)


@contextmanager
def settling_at_end() -> Iterator[None]:
    """Within the block, parents are settled when it ends (if it ends well), once each and in
    primary-key order: a batch's transaction then locks parents in one order, and two batches
    cannot deadlock over the same groups."""
    pending: list[tuple[Any, BaseException | None]] = []
    _local.settling = pending
    try:
        yield
    finally:
        _local.settling = None
    causes: dict[Any, BaseException | None] = {}
    for task_id, cause in pending:
        causes[task_id] = causes.get(task_id) or cause
    for task_id in sorted(causes):
        settle(task_id, causes[task_id])


def _tree_outcome(task: Task) -> rules.Outcome | None:
    """SUCCESS once every subtask succeeded; INCOMPLETE as soon as one failed; else ``None``."""
    # One row at most: the first subtask not yet successful, failed ones first. None: all succeeded.
    failed_first = Case(When(status__in=ERROR, then=Value(0)), default=Value(1))
    unsettled = (Task.objects.filter(parent=task.pk).exclude(status=TaskStatus.SUCCESS)
                 .order_by(failed_first).values_list("pk", "status", "error").first())
    if unsettled is None:
        result = task.result
        if task.waiting_on_id is not None:
            result = Task.objects.filter(pk=task.waiting_on_id).values_list("result", flat=True).get()
        return TaskStatus.SUCCESS, {"result": result}
    pk, status, error = unsettled
    if status in ERROR:
        error = f"Subtask {pk} ended {TaskStatus(status).label}: {error or ''}".rstrip(": ")
        return TaskStatus.INCOMPLETE, {"error": error}
    return None
