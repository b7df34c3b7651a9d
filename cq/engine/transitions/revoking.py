"""Revoking: anything unfinished → REVOKED, for a task's whole tree and what is chained after it.

A revoked task is never run; one already running finishes, but its outcome is not recorded
(its writes are fenced), unless its worker process is killed (``terminate``).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import Q

from ... import signals
from ...models import REVOCABLE, TaskStatus, Worker, get_task_model
from ...transport import events
from .. import clock, limits
from ..returning import update_returning
from . import settling

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()


def revoke(roots: Iterable[Any], ids: set[Any], terminate: bool) -> set[Any]:
    """Revoke the unfinished tasks among ``ids`` (the trees of the tasks ``roots``, by primary key,
    walked by ``cq.workflows.trees``); with ``terminate``, ask the supervisors running them to kill
    their processes. Returns the ids it revoked. A waiting parent of a root outside ``ids`` settles."""
    now = clock.now()
    revoked: set[Any] = set()
    with transaction.atomic():
        running = list(Task.objects.filter(pk__in=ids, status=TaskStatus.RUNNING).values_list(
            "pk", "worker", "concurrency_key", "queue"))
        revocable = Task.objects.filter(pk__in=ids, status__in=REVOCABLE)
        # Events and task_finished's listeners get whole rows, as the update left them.
        fields: list[str] | None = None if events.enabled() or signals.task_finished.has_listeners() else []
        # Revoked tasks expire like finished ones, by their result_ttl or their function's
        # retention rule: one UPDATE per expiry (a tree's tasks usually share one).
        expiring: dict[Any, list[Q]] = {}
        for ttl, name in set(revocable.values_list("result_ttl", "func_name")):
            expiry = settling.result_expiry(Task(result_ttl=ttl, func_name=name), now, TaskStatus.REVOKED)
            expiring.setdefault(expiry, []).append(Q(result_ttl=ttl, func_name=name))
        for expiry, which in expiring.items():
            rows = update_returning(revocable.filter(functools.reduce(operator.or_, which)), {
                "status": TaskStatus.REVOKED, "finished": now, "result_expiry": expiry}, fields)
            if fields is None:
                events.status(rows)
            revoked.update(row.pk for row in rows)
        for pk, worker, _key, _queue in running if terminate else ():
            Worker.objects.filter(name=worker).update(terminate_task=pk)
        limits.wake_on_commit([(key, queue) for _pk, _worker, key, queue in running])
        parents = set(Task.objects.filter(pk__in=list(roots), parent__isnull=False)
                      .values_list("parent_id", flat=True))
        for parent_id in sorted(parents - ids):  # in primary-key order, as settling_at_end() does
            settling.settle(parent_id)
    return revoked
