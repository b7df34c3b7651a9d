"""Repeating tasks: validating, rescheduling and firing them, and releasing delayed tasks.

Firing is exactly-once by construction, whatever the number of schedulers: a
slot fires only through ``UPDATE ... SET next_run = <next> WHERE next_run =
<slot>``, and the run's task row is written in that same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Min
from django.utils import timezone

from . import dispatch, registry, validation
from .cron import next_fire, validate_crontab, validate_timezone
from .exceptions import InvalidTask, TaskNotRegistered
from .models import UNFINISHED, RepeatingTask, TaskStatus, get_task_model
from .transport import doorbell

Task = get_task_model()

logger = logging.getLogger(__name__)

#: Statuses during which a coalescing repeating task does not launch again.
STILL_RUNNING = UNFINISHED


def validate_repeating_task(rt: Any) -> None:
    """Raises ``ValidationError`` (by field) for a function that is not registered, arguments
    that are not a JSON list and object that cq can store (``cq.validation.check_storable``),
    or a ``result_ttl`` that is not one (``cq.validation.result_ttl``)."""
    errors: dict[str, str] = {}
    try:
        registry.require(rt.func_name)
    except TaskNotRegistered:
        errors["func_name"] = f"No task function is registered as {rt.func_name!r}."
    if not isinstance(rt.args, list):
        errors["args"] = "Arguments must be a JSON list, e.g. [1, \"two\"]."
    if not isinstance(rt.kwargs, dict):
        errors["kwargs"] = "Keyword arguments must be a JSON object, e.g. {\"limit\": 10}."
    for field in ("args", "kwargs"):
        try:
            validation.check_storable(getattr(rt, field), f"the {field}")
        except InvalidTask as error:
            errors.setdefault(field, str(error))
    try:
        validation.result_ttl(getattr(rt, "result_ttl", None))
    except InvalidTask as error:
        errors["result_ttl"] = str(error)
    if errors:
        raise ValidationError(errors)


def reschedule(rt: Any, now: datetime | None = None) -> None:
    """Set ``next_run`` from the crontab when it is unset or the schedule changed."""
    schedule = (rt.crontab, rt.timezone, rt.enabled)
    if getattr(rt, "_loaded_schedule", None) == schedule and (rt.next_run is not None or not rt.enabled):
        return
    rt.next_run = next_fire(rt.crontab, rt.timezone, now or timezone.now(), rt.last_run) if rt.enabled else None
    rt._loaded_schedule = schedule


def build_repeating_task(cls: type[Any], crontab: str, func: Callable[..., Any] | str, args: Iterable[Any] = (),
                         kwargs: dict[str, Any] | None = None, **fields: Any) -> Any:
    rt = cls(crontab=crontab, func_name=registry.name_of(func), args=list(args),
             kwargs={} if kwargs is None else kwargs, **fields)
    validate_crontab(rt.crontab)
    validate_timezone(rt.timezone)
    validate_repeating_task(rt)
    # A historical model (in a migration) has neither our save() nor signals: set next_run here.
    rt.next_run = next_fire(rt.crontab, rt.timezone, timezone.now()) if rt.enabled else None
    rt.save()
    return rt


def fire(rt: RepeatingTask, now: datetime) -> Task | None:
    """Fire the due slot ``rt.next_run`` once, and schedule the next one.

    A slot missed while no scheduler ran fires once; the slots after it are
    skipped up to ``now``. Returns the task launched, or ``None`` when another
    scheduler fired this slot first or the run was coalesced.
    """
    slot = rt.next_run
    following = next_fire(rt.crontab, rt.timezone, max(now, slot), previous=slot)
    with transaction.atomic():
        if not RepeatingTask.objects.filter(pk=rt.pk, next_run=slot, enabled=True).update(next_run=following):
            return None
        rt.next_run = following
        if registry.find(rt.func_name) is None:
            logger.error("Skipping %s at %s: no task function is registered as %r.", rt, slot, rt.func_name)
            return None
        if rt.coalesce and Task.objects.filter(func_name=rt.func_name, status__in=STILL_RUNNING).exists():
            logger.info("Skipping %s at %s: an earlier run is still active.", rt, slot)
            return None
        try:
            return launch(rt, now)
        except InvalidTask as error:  # a row written around its validation: it would fail every tick
            logger.error("Skipping %s at %s: %s", rt, slot, error)
            return None


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
