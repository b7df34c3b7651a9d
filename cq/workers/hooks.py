"""What a worker tells whoever watches it: no-op hooks, overridden by the supervisor's pipe.

It imports no models, so that a spawned worker process can load it before ``django.setup()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..models import Task


class Hooks:
    """What a worker tells whoever watches it (the supervisor); does nothing by default."""

    def tasks_claimed(self, tasks: list[Task]) -> None:
        """``tasks`` were claimed; they will run one after another."""

    def task_started(self, task: Task) -> None:
        """``task`` is about to run. If telling fails (``OSError``), it is not started."""

    def task_finished(self, task: Task) -> None:
        """``task``'s outcome is recorded."""

    def keep_going(self) -> bool:
        """Checked before each task: ``False`` stops the worker (its supervisor said so, or is gone)."""
        return True
