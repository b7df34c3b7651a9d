"""The supervisor behind ``cq_runworker``: N worker processes, watched and restarted.

Each child is a spawned process running a :class:`~cq.worker.Worker`; it
tells the supervisor over a pipe which task it starts and finishes. The
supervisor:

- restarts a child that exits (after ``--max-tasks-per-child`` tasks, or a
  crash), and records the task a dead child was running as LOST at once
  (retried with ``@task(retry_on_lost=True)``);
- kills a child whose task runs past its hard ``time_limit`` (the task ends
  FAILURE), or whose task was revoked with ``terminate=True``;
- on SIGTERM or SIGINT, lets running tasks finish for ``CQ_SHUTDOWN_GRACE``
  seconds and then kills what is left; a second signal kills at once. Killed
  tasks become LOST, never stay RUNNING.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import Any

from django.db import close_old_connections
from django.utils import timezone

from . import execution
from .child import main as child_main
from .conf import settings
from .exceptions import CQError, TaskLost, TimeLimitExceeded
from .models import Worker as WorkerRow
from .models import get_task_model
from .worker import Hooks

Task = get_task_model()

logger = logging.getLogger(__name__)

_spawn = multiprocessing.get_context("spawn")
#: How often the supervisor looks at its children when nothing happens.
TICK = 0.25
#: A child that dies sooner than this after starting is restarted with a growing delay.
QUICK_DEATH = 5.0


@dataclass(eq=False)
class _Child:
    process: Any
    conn: Connection
    started: float
    task_id: str | None = None  # the task it runs now
    claimed: set[str] = field(default_factory=set)  # claimed and not finished
    running: set[str] = field(default_factory=set)  # started and not finished: task_id, and those of
    # its batch that ran before it, whose outcome is not yet committed
    deadline: float | None = None
    kill_error: CQError | None = None  # why we killed it, when its task should end FAILURE
    terminated: bool = False  # killed because its task was revoked with terminate=True

    @property
    def name(self) -> str:
        return f"{socket.gethostname()}:{self.process.pid}"

    def kill(self) -> None:
        try:
            os.kill(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Supervisor:
    def __init__(self, *, concurrency: int, queues: Iterable[str] = ("default",),
                 max_tasks_per_child: int | None = None, poll_interval: float | None = None,
                 grace: float | None = None) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be 1 or more, not {concurrency}")
        self.concurrency = concurrency
        self.queues = list(queues)
        self.max_tasks_per_child = max_tasks_per_child
        self.poll_interval = poll_interval
        self.grace = settings.SHUTDOWN_GRACE if grace is None else grace
        self.children: list[_Child] = []
        self._stopping_since: float | None = None
        self._kill_now = False
        self._respawn_delay = 0.0
        self._respawn_at = 0.0

    def run(self) -> None:
        self._install_signal_handlers()
        logger.info("Supervisor %d starting %d worker process(es) for queue(s) %s.", os.getpid(),
                    self.concurrency, ", ".join(self.queues))
        try:
            while True:
                if self._stopping_since is None:
                    self._top_up()
                elif not self.children:
                    break
                elif self._kill_now or time.monotonic() - self._stopping_since > self.grace:
                    for child in self.children:
                        child.kill()
                self._read(TICK)
                self._enforce_time_limits()
                self._guarded(self._terminate_revoked)
                self._reap()
        finally:
            for child in self.children:
                child.kill()
            self._read(0)
            self._reap()
        logger.info("Supervisor %d stopped.", os.getpid())

    def stop(self, at_once: bool = False) -> None:
        if self._stopping_since is None:
            self._stopping_since = time.monotonic()
            for child in self.children:
                if child.process.is_alive():
                    os.kill(child.process.pid, signal.SIGTERM)
        self._kill_now = self._kill_now or at_once

    def _top_up(self) -> None:
        while len(self.children) < self.concurrency and time.monotonic() >= self._respawn_at:
            receiving, sending = _spawn.Pipe(duplex=False)
            process = _spawn.Process(target=child_main, name="cq-worker", args=(
                sending, self.queues, self.poll_interval, self.max_tasks_per_child))
            process.start()
            sending.close()
            self.children.append(_Child(process, receiving, time.monotonic()))

    def _read(self, timeout: float) -> None:
        waitables = [c.conn for c in self.children] + [c.process.sentinel for c in self.children]
        if waitables:
            wait(waitables, timeout)
        elif timeout:
            time.sleep(timeout)
        for child in self.children:
            try:
                while child.conn.poll():
                    event, task_ids, limit = child.conn.recv()
                    if event == "claimed":
                        child.claimed.update(task_ids)
                    elif event == "start":
                        child.task_id = task_ids[0]
                        child.claimed.add(child.task_id)
                        child.running.add(child.task_id)
                        child.deadline = time.monotonic() + limit if limit else None
                    else:
                        child.claimed.discard(task_ids[0])
                        child.running.discard(task_ids[0])
                        if task_ids[0] == child.task_id:
                            child.task_id = child.deadline = None
            except (EOFError, OSError):
                pass  # the child is gone; _reap handles it

    def _enforce_time_limits(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.deadline is not None and now > child.deadline and child.kill_error is None:
                limit = now - child.deadline
                child.kill_error = TimeLimitExceeded(
                    f"Task {child.task_id} ran past its hard time limit; its worker process {child.name} "
                    f"was killed {limit:.1f} s after the limit.")
                logger.warning("%s", child.kill_error)
                child.kill()

    def _terminate_revoked(self) -> None:
        busy = {child.name: child for child in self.children if child.task_id}
        if not busy:
            return
        requests = WorkerRow.objects.filter(name__in=busy, terminate_task__isnull=False)
        handled = []
        for name, task_id in requests.values_list("name", "terminate_task"):
            child = busy[name]
            if str(task_id) == child.task_id and not child.terminated:
                logger.info("Killing worker process %s: its task %s was revoked with terminate=True.", name, task_id)
                child.terminated = True
                child.kill()
            handled.append(name)
        if handled:
            WorkerRow.objects.filter(name__in=handled).update(terminate_task=None)

    def _reap(self) -> None:
        for child in [c for c in self.children if not c.process.is_alive()]:
            self._read(0)
            child.process.join()
            self.children.remove(child)
            self._guarded(self._record_exit, child)
            if time.monotonic() - child.started < QUICK_DEATH and child.process.exitcode != 0:
                self._respawn_delay = min(max(self._respawn_delay * 2, 1.0), 30.0)
                logger.error("Worker process %s exited with code %s right after starting; restarting in %.0f s.",
                             child.name, child.process.exitcode, self._respawn_delay)
            else:
                self._respawn_delay = 0.0
            self._respawn_at = time.monotonic() + self._respawn_delay
        close_old_connections()

    def _record_exit(self, child: _Child) -> None:
        unstarted = child.claimed - child.running
        if unstarted:
            execution.release(list(unstarted), child.name)
        if child.task_id and not child.terminated:
            error = child.kill_error or TaskLost(
                f"Worker process {child.name} stopped (exit code {child.process.exitcode}) while running it.")
            execution.abandon(child.task_id, child.name, error, lost=child.kill_error is None)
        for task_id in child.running - {child.task_id}:
            execution.abandon(task_id, child.name, TaskLost(
                f"Worker process {child.name} stopped (exit code {child.process.exitcode}) before the outcome "
                f"was committed."), lost=True)
        WorkerRow.objects.filter(name=child.name, stopped__isnull=True).update(
            stopped=timezone.now(), current_task=None)

    def _guarded(self, action: Callable[..., None], *args: Any) -> None:
        """Run a database step; if the database fails, log it and carry on supervising
        (a task left RUNNING by a failed step is found by the sweeper later)."""
        try:
            action(*args)
        except Exception:
            logger.exception("Supervisor %d: %s failed; carrying on.", os.getpid(), action.__name__)
            close_old_connections()

    def _install_signal_handlers(self) -> None:
        def handle(signum: int, frame: FrameType | None) -> None:
            again = self._stopping_since is not None
            logger.info("Supervisor %d: %s.", os.getpid(), "stopping at once" if again else
                        f"letting running tasks finish (up to {self.grace:.0f} s; signal again to stop at once)")
            self.stop(at_once=again)

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)


class PipeHooks(Hooks):
    """A worker process's hooks: report to the supervisor over the pipe."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.parent = multiprocessing.parent_process()

    def tasks_claimed(self, tasks: list[Task]) -> None:
        self.conn.send(("claimed", [str(task.pk) for task in tasks], None))

    def task_started(self, task: Task) -> None:
        self.conn.send(("start", [str(task.pk)], execution.hard_time_limit(task)))

    def task_finished(self, task: Task) -> None:
        self.conn.send(("done", [str(task.pk)], None))

    def keep_going(self) -> bool:
        return self.parent is None or self.parent.is_alive()
