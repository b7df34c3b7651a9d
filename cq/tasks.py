"""cq's own task functions, kept from django-cq."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db.models import Q
from django.utils import timezone

from .engine.transitions import queueing
from .models import TaskStatus, get_task_model
from .registry import task

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()


@task("cq.tasks.retry_tasks")
def retry_tasks(cqt: Any, retry_delay: float | None = None) -> int:
    """Queue every task waiting to be retried whose time has come; returns how many.

    Workers retry tasks by themselves; this is for django-cq code that called it.
    With ``retry_delay`` (minutes, django-cq's meaning), a task is due once
    ``retries² × retry_delay`` minutes have passed since its last attempt.
    """
    now = timezone.now()
    waiting = Task.objects.filter(status=TaskStatus.RETRY)
    due: Iterable[Any]
    if retry_delay is None:
        due = waiting.filter(Q(run_after__isnull=True) | Q(run_after__lte=now))
    else:
        due = [t for t in waiting.only("pk", "retries", "last_retry")
               if t.last_retry is None or now - t.last_retry >= timedelta(minutes=t.retries**2 * retry_delay)]
    ids = [t.pk for t in due]
    queued = queueing.queue_retries(ids)
    for pk in ids:
        cqt.log(f"Retrying: {pk}", publish=False)
    return queued
