"""The supervisor behind ``cq_runworker``: N worker processes, watched and restarted.

Each child is a spawned process running a :class:`~cq.workers.worker.Worker`; it
writes which tasks it starts and finishes on its slate (``cq.workers.slate``, shared
memory the supervisor reads each tick, so the supervisor does nothing per task), and
takes its orders (stop) over a pipe. The supervisor:

- records each child's start and its heartbeats (``cq.workers.heartbeat``): it never
  runs task code, so a task that holds the GIL cannot starve them;

- restarts a child that exits (after ``--max-tasks-per-child`` tasks, or a
  crash), and records the task a dead child was running as LOST at once
  (retried with ``@task(retry_on_lost=True)``);
- kills a child whose task runs past its hard ``time_limit`` (the task ends
  FAILURE), or whose task was revoked with ``terminate=True``;
- on SIGTERM or SIGINT, tells its children to stop, lets running tasks finish
  for ``CQ_SHUTDOWN_GRACE`` seconds and then kills what is left; a second
  signal kills at once. Killed tasks become LOST, never stay RUNNING. Children
  ignore SIGTERM and SIGINT: systemd's default ``KillMode=control-group`` and
  Ctrl-C signal every process of the group, and only the supervisor decides
  what that means.
- when a child exits, settles every row RUNNING under its name: a task it
  started ends LOST; one it had claimed and not started is put back.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..conf import settings
from ..engine import database
from ..engine.transitions import outcomes, queueing
from ..exceptions import CQError, TaskLost, TimeLimitExceeded
from ..models import Worker as WorkerRow
from ..models import get_task_model
from . import heartbeat
from .child import main as child_main
from .heartbeat import Heartbeat, Incarnation
from .slate import Reading, Slate

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

logger = logging.getLogger("cq.supervisor")  # its name before cq's subpackages: LOGGING settings use it

_spawn = multiprocessing.get_context("spawn")
#: How often the supervisor looks at its children when nothing happens.
TICK = 0.25
#: A child that dies sooner than this after starting is restarted with a growing delay.
QUICK_DEATH = 5.0


@dataclass(eq=False)
class _Child:
    process: Any
    slate: Slate  # what it runs, as it writes it
    orders: Connection  # what the supervisor tells it
    started: float
    name: str  # this start's own name: host:pid:token
    queues: list[str]
    reading: Reading = field(default_factory=Reading)  # its slate as last read (see refresh)
    kill_error: CQError | None = None  # why we killed it, when its task should end FAILURE
    terminated: bool = False  # killed because its task was revoked with terminate=True

    def refresh(self) -> None:
        self.reading = self.slate.read()

    @property
    def task_id(self) -> str | None:
        """The task it runs now (the last it started and has not finished)."""
        return self.reading.current

    @property
    def running(self) -> set[str]:
        """Started and not finished: task_id, and those of its batch that ran before it, whose
        outcome is not yet committed."""
        return set(self.reading.running)

    def incarnation(self) -> Incarnation:
        now = self.slate.read()  # from the heartbeat's thread: read afresh
        return Incarnation(self.name, self.process.pid, self.queues, now.current, now.processed)

    def stop(self) -> None:
        try:
            self.orders.send("stop")
        except OSError:
            pass  # it is gone already

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
        self._exited: list[_Child] = []  # children gone whose rows are not settled yet
        self._stopping_since: float | None = None
        self._kill_now = False
        self._respawn_delay = 0.0
        self._respawn_at = 0.0
        self.heartbeat = Heartbeat(lambda: [c.incarnation() for c in list(self.children) if c.process.is_alive()])

    def run(self) -> None:
        self._install_signal_handlers()
        logger.info("Supervisor %d starting %d worker process(es) for queue(s) %s.", os.getpid(),
                    self.concurrency, ", ".join(self.queues))
        self.heartbeat.start()
        try:
            while True:
                if self._stopping_since is None:
                    self._top_up()
                elif not self.children:
                    if not self._exited or self._kill_now or time.monotonic() - self._stopping_since > self.grace:
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
            self.heartbeat.stop()
        logger.info("Supervisor %d stopped.", os.getpid())

    def stop(self, at_once: bool = False) -> None:
        if self._stopping_since is None:
            self._stopping_since = time.monotonic()
            for child in self.children:
                child.stop()
        self._kill_now = self._kill_now or at_once

    def _top_up(self) -> None:
        while len(self.children) < self.concurrency and time.monotonic() >= self._respawn_at:
            slate = Slate()
            orders, ordering = _spawn.Pipe(duplex=False)
            token = heartbeat.incarnation_name().rsplit(":", 1)[1]
            process = _spawn.Process(target=child_main, name="cq-worker", args=(
                slate.shared, orders, token, self.queues, self.poll_interval, self.max_tasks_per_child))
            process.start()
            orders.close()
            name = heartbeat.incarnation_name(process.pid, token)
            child = _Child(process, slate, ordering, time.monotonic(), name, self.queues)
            self.children.append(child)
            # Recorded before it can claim anything; if this fails, its first heartbeat records it.
            self._guarded(heartbeat.register, child.incarnation())

    def _read(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a child to exit, then read every child's slate."""
        sentinels = [c.process.sentinel for c in self.children]
        if sentinels:
            wait(sentinels, timeout)
        elif timeout:
            time.sleep(timeout)
        for child in self.children:
            child.refresh()

    def _enforce_time_limits(self) -> None:
        now = time.monotonic()
        for child in self.children:
            deadline = child.reading.deadline
            if deadline is not None and now > deadline and child.kill_error is None:
                limit = now - deadline
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
            self._exited.append(child)
            if time.monotonic() - child.started < QUICK_DEATH and child.process.exitcode != 0:
                self._respawn_delay = min(max(self._respawn_delay * 2, 1.0), 30.0)
                logger.error("Worker process %s exited with code %s right after starting; restarting in %.0f s.",
                             child.name, child.process.exitcode, self._respawn_delay)
            else:
                self._respawn_delay = 0.0
            self._respawn_at = time.monotonic() + self._respawn_delay
        for child in list(self._exited):
            if self._guarded(self._record_exit, child):
                self._exited.remove(child)

    def _record_exit(self, child: _Child) -> None:
        """Settle what the child left RUNNING: a task it started ends LOST (FAILURE when killed at
        its hard time limit); everything else under its name, claimed and never started (its
        supervisor may not even have heard of the claim), is put back."""
        queueing.release(child.name, keep=child.running)
        if child.task_id and not child.terminated:
            error = child.kill_error or TaskLost(
                f"Worker process {child.name} stopped (exit code {child.process.exitcode}) while running it.")
            outcomes.lose(child.task_id, child.name, error, lost=child.kill_error is None)
        for task_id in child.running - {child.task_id}:
            outcomes.lose(task_id, child.name, TaskLost(
                f"Worker process {child.name} stopped (exit code {child.process.exitcode}) before the outcome "
                f"was committed."))
        heartbeat.stopped(child.name, child.reading.processed)

    def _guarded(self, action: Callable[..., None], *args: Any) -> bool:
        """Run a database step; if the database fails, log it and carry on supervising. Returns
        whether it ran (the exit of a child is settled again at the next tick until it has)."""
        try:
            action(*args)
        except Exception:
            logger.exception("Supervisor %d: %s failed; carrying on.", os.getpid(), action.__name__)
            database.tidy()
            return False
        return True

    def _install_signal_handlers(self) -> None:
        def handle(signum: int, frame: FrameType | None) -> None:
            again = self._stopping_since is not None
            logger.info("Supervisor %d: %s.", os.getpid(), "stopping at once" if again else
                        f"letting running tasks finish (up to {self.grace:.0f} s; signal again to stop at once)")
            self.stop(at_once=again)

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
