"""The task this thread is running, if any.

It lets the worker know, without a query, whether the task it runs created
subtasks; and it keeps other code from adding subtasks to a task that runs
elsewhere (they would never be launched).
"""

from __future__ import annotations

import threading
from typing import Any

from .exceptions import InvalidTask

_local = threading.local()


def start(task_id: Any) -> None:
    _local.task_id, _local.spawned = task_id, False


def finish() -> None:
    _local.task_id, _local.spawned = None, False


def spawned() -> bool:
    """Whether the running task created subtasks."""
    return getattr(_local, "spawned", False)


def note_subtask(parent_id: Any) -> None:
    """A subtask of the RUNNING task ``parent_id`` is being created.

    Raises:
        InvalidTask: that task is not the one this thread runs.
    """
    if getattr(_local, "task_id", None) != parent_id:
        raise InvalidTask(f"Task {parent_id} is running in another process or thread: only the task itself "
                          f"can add subtasks while it runs.")
    _local.spawned = True
