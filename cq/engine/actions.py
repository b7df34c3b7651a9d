"""Which actions may run on a task row, and why not: the one answer that the dashboard (which
shows only the buttons that would work), the JSON API (409 with the reason otherwise), the
bulk actions (``cq.web.bulk``) and the model's ``task.retry()`` and ``task.retry_failed()``
(``InvalidTask`` with the reason otherwise) all ask.

- ``revoke`` and ``terminate``: a task that has not finished.
- ``retry`` (the same row, again): a top-level task that ended FAILURE or LOST, and that a
  worker can run: not a group, chord or pipeline row, which no worker runs.
- ``retry_failed`` (from the failed step, ``cq.workflows.retrying``): a top-level task that
  ended INCOMPLETE or FAILURE with something in its tree to run again.
- ``rerun`` (a new task like it): a task whose function is registered, and that is not one of a
  workflow's own rows: neither a group, chord, stage or pipeline row, nor a member the engine
  wrote under one (a re-run of those would run outside the workflow that gives them meaning).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db.models import Q

from .. import registry
from ..exceptions import InvalidTask
from ..models import RETRYABLE, REVOCABLE, TaskStatus, get_task_model
from ..workflows import retrying
from ..workflows.rules import RULES
from .transitions import queueing

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

#: Every action, in the order the dashboard shows its buttons.
ACTIONS = ("revoke", "terminate", "retry", "retry_failed", "rerun")

#: The rows ``retry`` applies to, as a filter (the bulk retry's selection).
RETRY_APPLIES = Q(parent__isnull=True, status__in=sorted(RETRYABLE)) & ~Q(func_name__in=sorted(RULES))
#: The rows ``revoke`` applies to, as a filter.
REVOKE_APPLIES = Q(status__in=sorted(REVOCABLE))


def refusal(action: str, task: Any, tree: list[Any] | None = None) -> str | None:
    """Why ``action`` cannot run on ``task`` now, in a sentence; ``None`` when it can. ``tree`` is
    the rows under a top-level ``task``, when the caller has them already."""
    status = TaskStatus(task.status)
    if action in ("revoke", "terminate"):
        return None if status.revocable else f"Task {task.pk} has finished ({status.label}): nothing to stop."
    if action == "retry":
        if task.parent_id is not None:
            return f"Task {task.pk} is part of a tree: retry its top-level task from the failed step."
        if task.func_name in RULES:
            return f"Task {task.pk} is a {task.func_name} row, which no worker runs: retry it from the failed step."
        if not status.retryable:
            return f"Task {task.pk} is {status.label}: only a top-level task that ended Failure or Lost is retried."
        return None
    if action == "retry_failed":
        if task.parent_id is not None:
            return f"Task {task.pk} is part of a tree: retry its top-level task from the failed step."
        if status not in retrying.FROM:
            return (f"Task {task.pk} is {status.label}: only a top-level task that ended Incomplete or "
                    f"Failure is retried from the failed step.")
        if not retrying.plan(task, tree):
            return f"Nothing in task {task.pk}'s tree failed in a way that running it again could mend."
        return None
    if action == "rerun":
        if task.func_name in RULES or _in_workflow(task):
            return (f"Task {task.pk} is a row its workflow wrote ({task.func_name}): re-run the task that "
                    f"started the workflow instead.")
        if registry.find(task.func_name) is None:
            return f"No task function is registered as {task.func_name!r} here: a re-run would fail."
        return None
    raise ValueError(f"No action is called {action!r}; there are {', '.join(ACTIONS)}.")


def available(task: Any, tree: list[Any] | None = None) -> dict[str, bool]:
    """Each action, and whether it may run on ``task`` now (the dashboard's buttons)."""
    return {action: refusal(action, task, tree) is None for action in ACTIONS}


def retry(task: Any) -> None:
    """``task.retry()`` (django-cq's): queue again, as the same row, a top-level task that ended
    FAILURE or LOST; its retries are counted.

    Raises:
        InvalidTask: it is not such a task (the reason says why; ``rerun()`` queues a copy of a task).
    """
    task.refresh_from_db()
    reason = refusal("retry", task)
    if reason is None and queueing.retry_now(task):
        return
    raise InvalidTask(reason or f"Task {task.pk} changed meanwhile: it is {task.get_status_display()}.")


def retry_failed(task: Any) -> None:
    """``task.retry_failed()``: retry the top-level ``task`` from its failed step.

    Raises:
        InvalidTask: there is nothing to retry (the reason says why), or another retry got there first.
    """
    task.refresh_from_db()
    reason = refusal("retry_failed", task)
    if reason is None and retrying.retry_failed(task):
        return
    raise InvalidTask(reason or f"Task {task.pk} changed meanwhile (another retry got there first).")


def _in_workflow(task: Any) -> bool:
    """Whether the engine wrote ``task`` under a workflow's row (a member, a step, a callback)."""
    if task.parent_id is None:
        return False
    return Task.objects.filter(pk=task.parent_id, func_name__in=sorted(RULES)).exists()
