"""The task being run here: by this thread, or by the coroutine it awaits.

One ``ContextVar``, set by the worker around each run (:func:`running`): a thread
sees only its own run, and a coroutine task function (run through
``async_to_sync``) and the threads it hands work to (``sync_to_async``) see the
run that started them. It lets the worker know, without a query, whether the
task it runs created subtasks; it keeps other code from adding subtasks to a
task that runs elsewhere (they would never be launched); and it is the row a
Django task reaches through ``cq.backends.running_task()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from ..exceptions import InvalidTask


class _Run:
    """One run: its task row, and whether it created subtasks (shared by every context that sees it)."""

    def __init__(self, task: Any) -> None:
        self.task = task
        self.spawned = False


_run: ContextVar[_Run | None] = ContextVar("cq_current_run", default=None)


@contextmanager
def running(task: Any) -> Iterator[None]:
    """Within the block, ``task`` is the task being run here."""
    token = _run.set(_Run(task))
    try:
        yield
    finally:
        _run.reset(token)


def task() -> Any | None:
    """The task row being run here, or ``None``."""
    run = _run.get()
    return None if run is None else run.task


def spawned() -> bool:
    """Whether the task being run here created subtasks."""
    run = _run.get()
    return run is not None and run.spawned


def note_subtask(parent_id: Any) -> None:
    """A subtask of the RUNNING task ``parent_id`` is being created.

    Raises:
        InvalidTask: that task is not the one being run here.
    """
    run = _run.get()
    if run is None or run.task.pk != parent_id:
        raise InvalidTask(f"Task {parent_id} is running in another process or thread: only the task itself "
                          f"can add subtasks while it runs.")
    run.spawned = True
