"""Firing repeating tasks as their slots come due, and releasing delayed tasks (countdown, eta).

What the scheduler (``cq.scheduling.scheduler``) does each tick, and "run now" in the admin.
Firing is exactly-once by construction, whatever the number of schedulers: a
slot fires only through ``UPDATE ... SET next_run = <next> WHERE next_run =
<slot>``, and the run's task row is written in that same transaction.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import F, Min

from .. import registry
from ..engine import dispatch
from ..exceptions import InvalidTask
from ..models import UNFINISHED, RepeatingTask, TaskStatus, get_task_model
from ..transport import doorbell
from .cron import next_fire

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

logger = logging.getLogger("cq.schedule")  # its name before cq's subpackages: LOGGING settings use it

#: Statuses during which a coalescing repeating task does not launch again.
STILL_RUNNING = UNFINISHED


def fire(rt: RepeatingTask, now: datetime) -> Task | None:
    """Fire the due slot ``rt.next_run`` once, and schedule the next one.

    A slot missed while no scheduler ran fires once; the slots after it are
    skipped up to ``now``. Returns the task launched, or ``None`` when another
    scheduler fired this slot first or the run was coalesced.
    """
    slot = rt.next_run
    assert slot is not None, "due rows have a next run"
    following = next_fire(rt.crontab, rt.timezone, max(now, slot), previous=slot)
    with transaction.atomic():
        if not RepeatingTask.objects.filter(pk=rt.pk, next_run=slot, enabled=True).update(next_run=following):
            return None
        rt.next_run = following
        if registry.find(rt.func_name) is None:
            logger.error("Skipping %s at %s: no task function is registered as %r.", rt, slot, rt.func_name)
            return None
        if coalesced(rt):
            logger.info("Skipping %s at %s: an earlier run is still active.", rt, slot)
            return None
        try:
            return launch(rt, now)
        except InvalidTask as error:  # a row written around its validation: it would fail every tick
            logger.error("Skipping %s at %s: %s", rt, slot, error)
            return None


def coalesced(rt: RepeatingTask) -> bool:
    """Whether ``rt`` skips a run now: it coalesces, and a run of its function is still active."""
    return rt.coalesce and Task.objects.filter(func_name=rt.func_name, status__in=STILL_RUNNING).exists()


def submit(rt: RepeatingTask, now: datetime) -> Task | None:
    """Run ``rt`` now, outside its schedule (django-cq's ``RepeatingTask.submit()``): ``None``
    while it coalesces (:func:`coalesced`); otherwise its run is queued, ``last_run`` set, and
    ``next_run`` moved to the crontab's first slot after now."""
    if coalesced(rt):
        logger.info("Not submitting %s: an earlier run is still active.", rt)
        return None
    with transaction.atomic():
        task = launch(rt, now)
        update_next_run(rt, now)
        RepeatingTask.objects.filter(pk=rt.pk).update(next_run=rt.next_run)
    return task


def update_next_run(rt: RepeatingTask, now: datetime) -> None:
    """Set (not save) ``rt.next_run``: the crontab's first slot after ``now`` in its time zone, or
    ``None`` while it is disabled."""
    rt.next_run = next_fire(rt.crontab, rt.timezone, now) if rt.enabled else None


def launch(rt: RepeatingTask, now: datetime) -> Task:
    """Start a run of ``rt`` now ("run now" in the admin does this too)."""
    with transaction.atomic():
        task = dispatch.create(rt.func_name, rt.args, rt.kwargs, submit=True, result_ttl=rt.result_ttl)
        RepeatingTask.objects.filter(pk=rt.pk).update(last_run=now, last_task=task)
    rt.last_run, rt.last_task = now, task
    return task


def release_delayed(now: datetime, limit: int = 500) -> int:
    """Ring the doorbells of delayed tasks that have come due; returns how many.

    A delayed task is QUEUED with ``run_after`` ahead of ``submitted``; ringing it
    sets ``submitted``, which also restarts its grace period for the worker poll.
    """
    due = Task.objects.filter(status=TaskStatus.QUEUED, run_after__lte=now, submitted__lt=F("run_after"))
    found = list(due.values_list("pk", "queue", "priority")[:limit])
    if found:
        with transaction.atomic():
            Task.objects.filter(pk__in=[pk for pk, *_ in found], submitted__lt=F("run_after")).update(submitted=now)
            doorbell.ring_on_commit(found)
    return len(found)


def next_due(now: datetime) -> datetime | None:
    """The earliest time at which a repeating task or a delayed task is due."""
    times = [
        RepeatingTask.objects.filter(enabled=True).aggregate(at=Min("next_run"))["at"],
        Task.objects.filter(status=TaskStatus.QUEUED, run_after__gt=now, submitted__lt=F("run_after"))
        .aggregate(at=Min("run_after"))["at"],
    ]
    return min((t for t in times if t is not None), default=None)


def due_repeating_tasks(now: datetime) -> list[RepeatingTask]:
    return list(RepeatingTask.objects.filter(enabled=True, next_run__lte=now).order_by("next_run"))
