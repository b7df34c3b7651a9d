"""The worker loop behind ``manage.py cq_runworker``.

A worker takes a doorbell only when it is free to run the task it names
(channels' own ``runworker`` prefetches greedily and loses what it buffered
when it dies). Between doorbells it looks in the database for work the
doorbells missed: QUEUED tasks nobody claimed within ``CQ_QUEUED_GRACE``
seconds, and retries that have come due. If Redis goes away, the worker keeps
running tasks found in the database and reconnects with backoff.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from django.db import close_old_connections, connection, connections

from . import doorbell, execution
from .conf import settings
from .models import Task

logger = logging.getLogger(__name__)

MAX_BACKOFF = 10.0


class Worker:
    """Runs tasks one at a time until :meth:`stop` is called."""

    def __init__(self, *, poll_interval: float | None = None, queued_grace: float | None = None,
                 name: str | None = None) -> None:
        self.name = name or execution.worker_name()
        self.poll_interval = settings.POLL_INTERVAL if poll_interval is None else poll_interval
        self.queued_grace = settings.QUEUED_GRACE if queued_grace is None else queued_grace
        self.processed = 0
        self._stopping = threading.Event()
        self._next_poll = 0.0
        self._backoff = 0.0
        self._listen_again_at = 0.0

    def run(self) -> None:
        """Run until stopped; SIGTERM or SIGINT stop it once the running task is done."""
        self._install_signal_handlers()
        logger.info("Worker %s waiting for tasks on %r.", self.name, settings.CHANNEL)
        try:
            while not self._stopping.is_set():
                self.run_once(self.poll_interval)
        finally:
            if not connection.in_atomic_block:
                connections.close_all()
        logger.info("Worker %s stopped after %d task(s).", self.name, self.processed)

    def stop(self) -> None:
        self._stopping.set()

    def drain(self) -> int:
        """Run tasks until no doorbell is waiting and none is due; returns how many ran."""
        total = 0
        while True:
            heard, ran = self.step(0)
            total += ran
            if not heard and not ran:
                return total

    def run_once(self, wait: float) -> int:
        """Wait up to ``wait`` seconds for a doorbell and run its task, then any the database says
        are due. Returns how many tasks ran. Errors of the database or Redis are logged, not raised.
        """
        return self.step(wait)[1]

    def step(self, wait: float) -> tuple[int, int]:
        heard = ran = 0
        try:
            task_ids = self._listen(wait)
            heard = len(task_ids)
            for task_id in task_ids:
                ran += self._run(execution.claim(task_id, self.name))
            if not ran or time.monotonic() >= self._next_poll:
                self._next_poll = time.monotonic() + self.poll_interval
                for task in execution.claim_due(self.name, self.queued_grace):
                    ran += self._run(task)
        except Exception:
            logger.exception("Worker %s could not take work; trying again shortly.", self.name)
            _tidy_connections()
            self._stopping.wait(min(wait, 1.0))
        return heard, ran

    def _listen(self, wait: float) -> list[str]:
        if time.monotonic() < self._listen_again_at:
            self._stopping.wait(min(wait, self._listen_again_at - time.monotonic()))
            return []
        try:
            ids = doorbell.listen(1, wait)
        except Exception as error:
            self._backoff = min(max(self._backoff * 2, 0.5), MAX_BACKOFF)
            self._listen_again_at = time.monotonic() + self._backoff
            logger.warning("Worker %s cannot hear doorbells (%s: %s); running tasks from the database "
                           "and trying again in %.1f s.", self.name, type(error).__name__, error, self._backoff)
            return []
        if self._backoff:
            logger.info("Worker %s hears doorbells again.", self.name)
            self._backoff = 0.0
        return ids

    def _run(self, task: Task | None) -> int:
        if task is None:
            return 0
        _tidy_connections()
        try:
            execution.run(task)
        except Exception:
            logger.exception("Worker %s could not record the outcome of task %s.", self.name, task.pk)
        finally:
            _tidy_connections()
        self.processed += 1
        return 1

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handle(signum: int, frame: FrameType | None) -> None:
            if self._stopping.is_set():
                raise SystemExit(f"Worker {self.name} stopped at once by a second signal.")
            logger.info("Worker %s finishing its task before it stops (signal %d again stops at once).",
                        self.name, signum)
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)


def _tidy_connections() -> None:
    """Drop broken or expired database connections, as Django does around a request.

    Not inside an atomic block: a test case's transaction must survive (cq.testing).
    """
    if not connection.in_atomic_block:
        close_old_connections()
