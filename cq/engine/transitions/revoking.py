"""Revoking: anything unfinished → REVOKED, for a task's whole tree and what is chained after it.

A revoked task is never run; one already running finishes, but its outcome is not recorded
(its writes are fenced), unless its worker process is killed (``terminate``).
"""

from __future__ import annotations

import functools
import operator
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Q

from ... import signals
from ...models import REVOCABLE, TaskStatus, Worker, get_task_model
from ...transport import events
from .. import clock, limits
from . import settling

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()


def revoke(task: Task, ids: set[Any], terminate: bool) -> None:
    """Revoke the unfinished tasks among ``ids`` (``task``'s tree, walked by ``cq.workflows.trees.revoke``);
    with ``terminate``, ask the supervisors running them to kill their processes."""
    now = clock.now()
    with transaction.atomic():
        running = list(Task.objects.filter(pk__in=ids, status=TaskStatus.RUNNING).values_list("pk", "worker",
                                                                                   "concurrency_key"))
        revocable = Task.objects.filter(pk__in=ids, status__in=REVOCABLE)
        if events.enabled() or signals.task_finished.has_listeners():
            revoked = list(revocable)
            for row in revoked:
                row.status, row.finished = TaskStatus.REVOKED, now
            events.status(revoked)
        # Revoked tasks expire like finished ones, by their result_ttl or their function's
        # retention rule: one UPDATE per expiry (a tree's tasks usually share one).
        expiring: dict[Any, list[Q]] = {}
        for ttl, name in set(revocable.values_list("result_ttl", "func_name")):
            expiry = settling.result_expiry(Task(result_ttl=ttl, func_name=name), now, TaskStatus.REVOKED)
            expiring.setdefault(expiry, []).append(Q(result_ttl=ttl, func_name=name))
        for expiry, which in expiring.items():
            revocable.filter(functools.reduce(operator.or_, which)).update(status=TaskStatus.REVOKED, finished=now,
                                                                           result_expiry=expiry)
        for pk, worker, _key in running if terminate else ():
            Worker.objects.filter(name=worker).update(terminate_task=pk)
        limits.wake_on_commit([key for _pk, _worker, key in running])
        parent_id = Task.objects.filter(pk=task.pk).values_list("parent_id", flat=True).get()
        if parent_id is not None and parent_id not in ids:
            settling.settle(parent_id)
