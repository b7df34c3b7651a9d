"""Task trees: subtasks, chained tasks, and revoking a task with everything under and after it.

A parent whose function has returned is WAITING until its subtasks are done.
Every change below a parent ends in ``settle`` (``cq.engine.transitions.settling``),
which locks the parent's row and decides: all subtasks succeeded (SUCCESS), one
of them failed or was revoked (INCOMPLETE), or not yet. Because each finishing subtask writes
its own status *before* it locks the parent, whichever of two siblings locks
second sees the other's status, so a tree never hangs on a race. Groups, chords
and stages are trees of the same kind (``cq.workflows.groups``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.db.models import Q

from .. import registry
from ..engine.transitions import revoking
from ..models import get_task_model

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()


def subtask(parent: Task, func: Any, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None,
            **options: Any) -> Task:
    return registry.require(registry.name_of(func)).delay_args(args, kwargs, parent=parent, **options)


def chain(previous: Task, func: Any, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None,
          **options: Any) -> Task:
    return registry.require(registry.name_of(func)).delay_args(args, kwargs, previous=previous, **options)


def revoke(task: Task, terminate: bool = False) -> None:
    """Revoke ``task`` and every task under it or chained after it that has not finished.

    A revoked task is never run; one already running finishes, but its outcome is
    not recorded and an atomic task's writes are rolled back; with ``terminate``
    its worker process is killed instead. A waiting parent of ``task`` ends
    INCOMPLETE.
    """
    revoke_all([task.pk], terminate)
    task.refresh_from_db(fields=["status", "finished"])


def revoke_all(task_ids: Iterable[Any], terminate: bool = False) -> set[Any]:
    """Revoke, as :func:`revoke` does each, the tasks of ``task_ids`` with their trees (in one
    statement per ``result_ttl``); returns the ids of every task it revoked, those under and
    after them too."""
    roots = list(task_ids)
    ids, frontier = set(roots), roots
    while frontier:
        frontier = [pk for pk in Task.objects.filter(Q(parent__in=frontier) | Q(previous__in=frontier))
                    .values_list("pk", flat=True) if pk not in ids]
        ids.update(frontier)
    return revoking.revoke(roots, ids, terminate)
