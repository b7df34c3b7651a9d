"""A worker process started by the supervisor: its entry point, and how it talks to its supervisor
(its slate, ``cq.workers.slate``, which the supervisor reads; and a pipe of orders).

The process is spawned, not forked, so nothing here touches Django's models
before ``django.setup()``. It ignores SIGTERM and SIGINT: systemd (with its
default ``KillMode=control-group``), ``docker stop`` of a shell and Ctrl-C
signal every process of the group, and a worker process that acted on them
would stop its task, or stop at once on hearing the signal again from its
supervisor. It stops when its supervisor tells it to, over a pipe, or when its
supervisor is gone.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import django

from .hooks import Hooks
from .slate import Slate

if TYPE_CHECKING:
    from ..models import Task


def main(shared: Any, orders: Connection, token: str, queues: list[str], poll_interval: float | None,
         max_tasks: int | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    django.setup()
    # app loading: these import the task model, which only django.setup() loads (a spawned
    # process starts with nothing imported but this module).
    from ..engine.execution import hard_time_limit
    from .heartbeat import incarnation_name
    from .worker import Worker

    hooks = SupervisedHooks(Slate(shared), orders, hard_time_limit)
    Worker(queues=queues, poll_interval=poll_interval, max_tasks=max_tasks, hooks=hooks,
           name=incarnation_name(token=token)).run(signals=())


class SupervisedHooks(Hooks):
    """A worker process's hooks: write what it runs on its slate, take its supervisor's orders from a pipe."""

    def __init__(self, slate: Slate, orders: Connection, time_limit: Callable[[Task], float | None]) -> None:
        self.slate = slate
        self.orders = orders
        self.time_limit = time_limit
        self.parent = multiprocessing.parent_process()
        self._stopping = False

    def task_started(self, task: Task) -> None:
        self.slate.started(task.pk, self.time_limit(task))

    def task_finished(self, task: Task) -> None:
        self.slate.finished(task.pk)

    def keep_going(self) -> bool:
        try:
            while not self._stopping and self.orders.poll():
                self._stopping = self.orders.recv() == "stop"
        except (EOFError, OSError):  # the supervisor closed its end: it is gone
            self._stopping = True
        return not self._stopping and (self.parent is None or self.parent.is_alive())
