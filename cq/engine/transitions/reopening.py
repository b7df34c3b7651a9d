"""Retrying from the failed step: failed members of a tree back to QUEUED (or PENDING), and the
waiting parents above them back to WAITING.

Which rows change, and how, is decided by ``cq.workflows.retrying``, which walks the tree; this
module only writes what it decided, in the caller's transaction. Each write is conditional on
the status the walk saw, so a row that changed meanwhile (a concurrent retry, a revoke) makes
the whole retry stop with :class:`Changed`, and the transaction rolls back.

Every row written keeps its failed outcome in ``history`` (status, error, exception, when it
finished, which attempt), so the error of the attempt being retried is not lost when the row
is cleared for its next run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.db.models import F

from ...exceptions import CQError
from ...models import TaskStatus, get_task_model
from ...transport import doorbell, events
from .. import clock

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()


class Changed(CQError):
    """A row was no longer in the status the retry's walk saw: somebody else changed the tree."""


def attempt_record(task: Task) -> dict[str, Any]:
    """The failed outcome of ``task`` as it goes into its ``history``."""
    return {"status": task.status, "error": task.error, "exception": task.exception or None,
            "finished": None if task.finished is None else task.finished.isoformat(), "attempt": task.attempt}


def requeue(tasks: Iterable[Task], pending: Iterable[Task] = ()) -> None:
    """Run again, as the same rows, the failed ``tasks`` (QUEUED, their doorbells rung on commit)
    and ``pending`` (PENDING: each is queued once the task it is chained after succeeds). Their
    retries are counted and their failed attempt kept in ``history``.

    Raises:
        Changed: a row was not in the status it was read with.
    """
    now = clock.now()
    queued: list[Task] = []
    for status, rows in ((TaskStatus.QUEUED, tasks), (TaskStatus.PENDING, pending)):
        for task in rows:
            _write(task, status=status, submitted=now, started=None, finished=None, result_expiry=None,
                   run_after=None, error=None, exception="", traceback="", retries=F("retries") + 1,
                   last_retry=now)
            task.retries += 1
            if status == TaskStatus.QUEUED:
                queued.append(task)
    doorbell.ring_on_commit([(task.pk, task.queue, task.priority) for task in queued])


def reopen(parents: Iterable[Task], *, clear_result: Iterable[Any] = ()) -> None:
    """Put back to WAITING the failed ``parents`` of rows being run again: each settles again
    (``settling.settle``) as its subtasks finish. Those in ``clear_result`` (workflows, whose
    result was the list of what failed) lose their result too.

    Raises:
        Changed: a row was not in the status it was read with.
    """
    clear = set(clear_result)
    for task in parents:
        values: dict[str, Any] = {"status": TaskStatus.WAITING, "finished": None, "result_expiry": None,
                                  "error": None}
        if task.pk in clear:
            values["result"] = None
        _write(task, **values)


def wait_on_header(chord: Task, header: Task, callback: Task) -> None:
    """A chord whose header is run again: it waits on the header once more, and then runs its
    ``callback`` row again with the header's new results (``cq.workflows.rules``), rather than
    a new one. The callback waits PENDING meanwhile."""
    kwargs = {**chord.kwargs, "callback_task": str(callback.pk)}
    Task.objects.filter(pk=chord.pk).update(waiting_on=header.pk, kwargs=kwargs)
    chord.waiting_on_id, chord.kwargs = header.pk, kwargs
    requeue((), pending=[callback])


def _write(task: Task, **values: Any) -> None:
    history = [*(task.history or []), attempt_record(task)]
    if not Task.objects.filter(pk=task.pk, status=task.status).update(history=history, **values):
        raise Changed(f"Task {task.pk} is no longer {task.get_status_display()}: it changed during the retry.")
    values.pop("retries", None)
    for name, value in {**values, "history": history}.items():
        setattr(task, name, value)
    events.status([task])
