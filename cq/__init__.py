"""cq: a durable task queue that lives inside Django and Channels.

Glossary, used the same way in the code and the docs:

- *task function*: a function decorated with ``@task``; its first parameter,
  ``cqt``, is the task it runs as.
- *task*: one run of a task function, a ``cq.models.Task`` row.
- *doorbell*: the channel-layer message "task <id> is ready"; it carries the id
  and nothing else, the row is the truth.
- *worker*: a ``manage.py cq_runworker`` process that claims and runs tasks.

This module imports no models and reads no settings, so ``from cq import task``
is safe anywhere.
"""

from __future__ import annotations

from .exceptions import CQError, DuplicateSubmitError, InvalidTask, TaskNotRegistered
from .registry import task

__all__ = [
    # Task functions
    "task",
    # Errors
    "CQError",
    "DuplicateSubmitError",
    "InvalidTask",
    "TaskNotRegistered",
]
