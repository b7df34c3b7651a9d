"""Retry from the failed step: run again only what failed in a top-level task's tree, reuse what
succeeded, and let the tree carry on as if nothing had failed.

:func:`plan` walks the tree from its top (one query reads every row of it) and decides; the
writes are ``cq.engine.transitions.reopening``'s. Going down from the top, through rows that
did not succeed:

- a task that failed in its own function (FAILURE, LOST, or REVOKED with no subtask) is queued
  again as the same row; PENDING instead when it is chained after a task that runs again, which
  queues it once it succeeds, as chained tasks always are. Tasks chained after a failed one were
  never launched: they stay PENDING and follow it.
- a waiting parent that ended INCOMPLETE (a subtask failed), a pipeline that ended FAILURE, or a
  revoked task with subtasks goes back to WAITING, and the walk goes on into its subtasks: every
  failed one of a tree or a group, the current stage of a pipeline (the earlier ones succeeded),
  the header of a chord whose header failed. Its rule settles it again as they finish
  (``cq.workflows.rules``): a group with all its results, a pipeline with its next stage.
- a chord whose callback failed: the callback runs again. With ``allow_failures`` the callback
  may have been given ``None`` for members that failed: those run again first, and the same
  callback row then runs once with the full list.

A parent goes back to WAITING only if something under it runs again (else nothing would ever
settle it); tasks that succeeded, and unfinished ones, are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import transaction

from ..engine.transitions import reopening
from ..models import ERROR, TaskStatus, get_task_model
from .groups import CHORD, GROUP, STAGES
from .rules import RULES

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

#: The statuses of a top-level task that a retry from the failed step starts from.
FROM = frozenset({TaskStatus.INCOMPLETE, TaskStatus.FAILURE})


@dataclass
class Plan:
    """What a retry changes: rows queued again, rows PENDING again (after a link that runs
    again), parents WAITING again, and chords that wait on their header again."""

    queued: list[Task] = field(default_factory=list)
    pending: list[Task] = field(default_factory=list)
    reopened: list[Task] = field(default_factory=list)
    chords: list[tuple[Task, Task, Task]] = field(default_factory=list)  # (chord, header, callback)

    def __bool__(self) -> bool:
        return bool(self.queued or self.pending)


def plan(top: Task, rows: list[Task] | None = None) -> Plan:
    """What retrying the top-level ``top`` from its failed step would change (``rows``: the tasks
    under it, read here if not given). An empty plan: there is nothing to retry."""
    found = Plan()
    if top.parent_id is not None or top.status not in FROM:
        return found
    if rows is None:
        rows = list(Task.objects.filter(top=top.pk))
    walk = _Walk(top, rows, found)
    walk.visit(top)
    return found


def retry_failed(task: Task) -> bool:
    """Retry the top-level ``task`` from its failed step (see the module); ``False`` when there is
    nothing to retry: it is not a top-level task that ended INCOMPLETE or FAILURE, nothing under
    it failed, or another retry got there first. ``task`` is read again."""
    try:
        with transaction.atomic():
            top = (Task.objects.select_for_update()
                   .filter(pk=task.pk, parent__isnull=True, status__in=sorted(FROM)).first())
            found = plan(top) if top is not None else Plan()
            if found:
                reopening.reopen(found.reopened, clear_result=[row.pk for row in found.reopened
                                                               if row.func_name in RULES])
                reopening.requeue(found.queued, found.pending)
                for chord, header, callback in found.chords:
                    reopening.wait_on_header(chord, header, callback)
    except reopening.Changed:  # another retry, or a revoke, changed the tree first: all rolled back
        found = Plan()
    task.refresh_from_db()
    return bool(found)


class _Walk:
    def __init__(self, top: Task, rows: list[Task], found: Plan) -> None:
        self.by_pk: dict[Any, Task] = {row.pk: row for row in [top, *rows]}
        self.children: dict[Any, list[Task]] = {}
        for row in rows:
            self.children.setdefault(row.parent_id, []).append(row)
        self.found = found
        self.again: set[Any] = set()  # the rows that run again

    def visit(self, row: Task) -> bool:
        """Plan ``row``, which did not succeed; whether anything under it (or it) runs again."""
        if row.status not in ERROR:
            return False
        subtasks = self.children.get(row.pk, [])
        parent = row.func_name in RULES or row.status == TaskStatus.INCOMPLETE or (
            row.status == TaskStatus.REVOKED and bool(subtasks))
        if not parent:
            self._run_again(row)
            return True
        if row.func_name == STAGES or (row.func_name == CHORD and row.waiting_on_id is not None):
            current = self.by_pk.get(row.waiting_on_id)
            if current is None:
                return False
            something = self._chord(row, current) if row.func_name == CHORD else self.visit(current)
        else:
            something = False
            for child in sorted(subtasks, key=lambda child: child.created):
                something = self.visit(child) or something
        if something:
            self.found.reopened.append(row)
        return something

    def _chord(self, chord: Task, current: Task) -> bool:
        if current.func_name == GROUP:  # the header failed, so the callback never ran
            return self.visit(current)
        header = next((row for row in self.children.get(chord.pk, []) if row.func_name == GROUP), None)
        failed_members = header is not None and any(
            member.status in ERROR for member in self.children.get(header.pk, []))
        if header is None or not failed_members:
            return self.visit(current)  # the callback failed with every result: it runs again
        # allow_failures: the callback had None for the failed members. Those run again, then
        # the same callback row with the full list.
        for member in self.children.get(header.pk, []):
            self.visit(member)
        self.found.reopened.append(header)
        self.found.chords.append((chord, header, current))
        return True

    def _run_again(self, row: Task) -> None:
        self.again.add(row.pk)
        previous = self.by_pk.get(row.previous_id) if row.previous_id is not None else None
        if row.previous_id is not None and previous is None:  # a chain link outside the tree
            previous = Task.objects.filter(pk=row.previous_id).first()
        if previous is not None and (previous.pk in self.again or previous.status != TaskStatus.SUCCESS):
            self.found.pending.append(row)
        else:
            self.found.queued.append(row)

