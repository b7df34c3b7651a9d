"""The worker loop behind ``manage.py cq_runworker``.

A worker takes a doorbell only when it is free to run the task it names
(channels' own ``runworker`` prefetches greedily and loses what it buffered
when it dies). Between doorbells it looks in the database for work the
doorbells missed: QUEUED tasks nobody claimed within ``CQ_QUEUED_GRACE``
seconds, and retries that have come due. If Redis goes away, the worker keeps
running tasks found in the database and reconnects with backoff.
"""

from __future__ import annotations

import itertools
import logging
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import FrameType

from django.db import close_old_connections, connection, connections

from . import doorbell, execution, metadata
from .conf import settings
from .exceptions import TaskLost
from .heartbeat import Heartbeat
from .models import get_task_model

Task = get_task_model()

logger = logging.getLogger(__name__)

MAX_BACKOFF = 10.0
#: Most doorbells a worker takes at once, and only while its tasks finish within QUICK.
BATCH = 20
QUICK = 0.01
#: Longest a batch of quick tasks keeps its transaction open before committing.
BATCH_SECONDS = 0.1


class Hooks:
    """What a worker tells whoever watches it (the supervisor); does nothing by default."""

    def tasks_claimed(self, tasks: list[Task]) -> None:
        """``tasks`` were claimed; they will run one after another."""

    def task_started(self, task: Task) -> None:
        """``task`` is about to run."""

    def task_finished(self, task: Task) -> None:
        """``task``'s outcome is recorded."""

    def keep_going(self) -> bool:
        """Checked between tasks: ``False`` stops the worker (its supervisor is gone, say)."""
        return True


class Worker:
    """Runs tasks one at a time until :meth:`stop` is called."""

    def __init__(self, *, queues: Iterable[str] = ("default",), poll_interval: float | None = None,
                 queued_grace: float | None = None, name: str | None = None, max_tasks: int | None = None,
                 hooks: Hooks | None = None) -> None:
        self.name = name or execution.worker_name()
        self.queues = list(queues)
        self.poll_interval = settings.POLL_INTERVAL if poll_interval is None else poll_interval
        self.queued_grace = settings.QUEUED_GRACE if queued_grace is None else queued_grace
        self.max_tasks = max_tasks
        self.hooks = hooks or Hooks()
        self.processed = 0
        self.current: Task | None = None
        self._stopping = threading.Event()
        self._next_poll = 0.0
        self._backoff = 0.0
        self._listen_again_at = 0.0
        self._backlog = False  # the last look in the database found work: more may be waiting
        self._batch = 1  # doorbells to take at once: more only while tasks are quick

    def run(self, signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
        """Run until stopped, recording a heartbeat; ``signals`` stop it once the running task is done."""
        self._install_signal_handlers(signals)
        logger.info("Worker %s waiting for tasks of queue(s) %s.", self.name, ", ".join(self.queues))
        try:
            with self.beating(), metadata.writing_aside():
                while not self._stopping.is_set() and self.hooks.keep_going():
                    self.run_once(self.poll_interval)
                    if self.max_tasks is not None and self.processed >= self.max_tasks:
                        break
        finally:
            if not connection.in_atomic_block:
                connections.close_all()
        logger.info("Worker %s stopped after %d task(s).", self.name, self.processed)

    def stop(self) -> None:
        self._stopping.set()

    @contextmanager
    def beating(self) -> Iterator[None]:
        """Record this worker in the Worker table and beat while the block runs, so that the
        sweeper knows its running tasks are not lost."""
        heartbeat = Heartbeat(self.name, self.queues, lambda: (self.current and self.current.pk, self.processed))
        heartbeat.start()
        try:
            yield
        finally:
            heartbeat.stop()

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
            task_ids = self._listen(0 if self._backlog else wait)
            heard = len(task_ids)
            ran += self._run_claimed(execution.claim(task_ids, self.name))
            if not self._stopping.is_set() and (not ran or time.monotonic() >= self._next_poll):
                self._next_poll = time.monotonic() + self.poll_interval
                due = execution.claim_due(self.name, self.queues, self.queued_grace)
                self._backlog = bool(due)
                ran += self._run_claimed(due)
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
            room = self._batch if self.max_tasks is None else max(min(self._batch, self.max_tasks - self.processed), 1)
            ids = doorbell.listen(self.queues, room, wait)
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

    def _run_claimed(self, tasks: list[Task]) -> int:
        """Run claimed tasks in order, quick atomic ones in batches; put back those not
        started when the worker stops."""
        if len(tasks) > 1:
            self.hooks.tasks_claimed(tasks)
        done = 0
        while done < len(tasks):
            if done and self._stopping.is_set():
                execution.release([t.pk for t in tasks[done:]], self.name)
                break
            batchable = list(itertools.takewhile(execution.batchable, tasks[done:]))
            if len(batchable) > 1:
                done += self._run_batch(batchable)
            else:
                self._run(tasks[done])
                done += 1
        return done

    def _run(self, task: Task) -> None:
        _tidy_connections()
        self.current = task
        self.hooks.task_started(task)
        began = time.monotonic()
        try:
            execution.run(task)
        except Exception:
            logger.exception("Worker %s could not record the outcome of task %s.", self.name, task.pk)
        finally:
            self.current = None
            self.processed += 1
            self.hooks.task_finished(task)
            _tidy_connections()
        # Take several doorbells at once only while tasks are quick: a slow task must not
        # hold back others that another worker could run.
        self._batch = BATCH if time.monotonic() - began < QUICK else 1

    def _run_batch(self, tasks: list[Task]) -> int:
        """Run atomic tasks one after another in one transaction (see execution.Batch), until
        they are done, the worker stops, or the transaction has been open BATCH_SECONDS; they
        are reported finished once it commits. Returns how many ran."""
        _tidy_connections()
        ran: list[Task] = []
        began = time.monotonic()
        try:
            with execution.batch() as batch:
                for task in tasks:
                    if ran and (self._stopping.is_set() or time.monotonic() - began > BATCH_SECONDS):
                        break
                    self.current = task
                    self.hooks.task_started(task)
                    ran.append(task)
                    execution.run(task, batch)
        except Exception as error:
            logger.exception("Worker %s could not commit the outcome of %d task(s); recording them LOST.",
                             self.name, len(ran))
            self._abandon(ran, error)
        finally:
            self.current = None
            self.processed += len(ran)
            for task in ran:
                self.hooks.task_finished(task)
            _tidy_connections()
        self._batch = BATCH if time.monotonic() - began < QUICK * len(ran) else 1
        return len(ran)

    def _abandon(self, tasks: list[Task], error: Exception) -> None:
        lost = TaskLost(f"The transaction that recorded its outcome failed: {type(error).__name__}: {error}")
        try:
            for task in tasks:
                execution.abandon(task.pk, self.name, lost, lost=True)
        except Exception:
            logger.exception("Worker %s could not record tasks LOST; the sweeper will.", self.name)
            _tidy_connections()

    def _install_signal_handlers(self, signals: Iterable[int]) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handle(signum: int, frame: FrameType | None) -> None:
            if self._stopping.is_set():
                raise SystemExit(f"Worker {self.name} stopped at once by a second signal.")
            logger.info("Worker %s finishing its task before it stops (signal %d again stops at once).",
                        self.name, signum)
            self.stop()

        for signum in signals:
            signal.signal(signum, handle)


def _tidy_connections() -> None:
    """Drop broken or expired database connections, as Django does around a request.

    Not inside an atomic block: a test case's transaction must survive (cq.testing).
    """
    if not connection.in_atomic_block:
        close_old_connections()
