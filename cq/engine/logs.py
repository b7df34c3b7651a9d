"""Task log lines: ``cqt.log()``, and rolling them up to the top-level task.

Each task keeps its own lines on its row (the last ``limit`` of them), written
with its outcome. A top-level task's ``logs`` gathers the lines of its whole
tree, each marked with the ``origin`` task it came from, in time order.

``publish=True`` sends the line, and any held back before it, to receivers of
``cq.signals.task_log`` at once (the live view listens there);
``publish=False`` holds it until the next published line or the task's outcome.

A line is stored as ``cq.validation.storable_text`` makes it (a NUL as the characters ``\x00``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from .. import validation
from ..conf import settings
from ..models import TaskStatus, get_task_model
from ..signals import task_log
from ..transport import events

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

logger = logging.getLogger("cq.task")

_UNPUBLISHED = "_cq_unpublished_logs"


def log(task: Task, message: str, *, level: int = logging.INFO, publish: bool = True,
        limit: int | None = None) -> None:
    logger.log(level, "%s %s: %s", task.func_name, task.pk, message)
    record = {"message": validation.storable_text(str(message)), "timestamp": timezone.now().isoformat(),
              "level": logging.getLevelName(level)}
    task.log_records = [*task.log_records, record][-(limit or settings.LOG_LIMIT):]
    task.__dict__.setdefault(_UNPUBLISHED, []).append(record)
    if task.status != TaskStatus.RUNNING and not task._state.adding:
        # Outside a worker's run nothing else will write the line: store it now.
        Task.objects.filter(pk=task.pk).update(log_records=task.log_records)
    if publish:
        flush(task)


def flush(task: Task) -> None:
    """Publish the lines held back so far."""
    records = task.__dict__.pop(_UNPUBLISHED, None)
    if records:
        task_log.send(sender=type(task), task=task, records=records)
        events.log(task, records)


def tree_logs(task: Task) -> list[dict[str, Any]]:
    """The task's own lines; for a top-level task, those of its whole tree in time order."""
    records = [dict(record) for record in task.log_records]
    if task.top_id is not None or task._state.adding:
        return records
    for pk, lines in Task.objects.filter(top=task.pk).values_list("pk", "log_records"):
        records.extend({**record, "origin": str(pk)} for record in lines)
    records.sort(key=lambda record: record["timestamp"])
    return records
