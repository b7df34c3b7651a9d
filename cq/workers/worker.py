"""The worker loop behind ``manage.py cq_runworker``.

A worker takes a doorbell only when it is free to run the task it names
(channels' own ``runworker`` prefetches greedily and loses what it buffered
when it dies). Between doorbells it looks in the database for work the
doorbells missed: QUEUED tasks nobody claimed within ``CQ_QUEUED_GRACE``
seconds, and retries that have come due. If Redis goes away, the worker keeps
running tasks found in the database and reconnects with backoff.

A worker owns no RUNNING row between two tasks. When a claim fails it may have
committed all the same (its reply lost), so before it claims again the worker
reconciles: whatever is RUNNING under its name and was never started goes back
to the queue.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

from django.db import connection, connections

from ..conf import settings
from ..engine import database, execution, metadata, queues
from ..engine.transitions import claims, outcomes, queueing
from ..models import get_task_model
from ..transport import doorbell
from . import heartbeat
from .heartbeat import Heartbeat, Incarnation
from .hooks import Hooks

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

logger = logging.getLogger("cq.worker")  # its name before cq's subpackages: LOGGING settings use it

MAX_BACKOFF = 10.0
#: Most doorbells a worker takes at once, and only while its tasks finish within QUICK.
BATCH = 20
QUICK = 0.01
#: Longest a batch of quick tasks keeps its transaction open before committing.
BATCH_SECONDS = 0.1


class _SupervisorGone(Exception):
    """The worker could not tell its supervisor that it starts a task: it must not start it."""


class Worker:
    """Runs tasks one at a time until :meth:`stop` is called."""

    def __init__(self, *, queues: Iterable[str] = ("default",), poll_interval: float | None = None,
                 queued_grace: float | None = None, name: str | None = None, max_tasks: int | None = None,
                 hooks: Hooks | None = None) -> None:
        self.name = name or heartbeat.incarnation_name()
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
        self._unsettled = False  # a step failed: rows RUNNING under this name may be left over
        self._unrecorded: dict[object, Task] = {}  # started, and their outcome could not be recorded

    def run(self, signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
        """Run until stopped; ``signals`` stop it once the running task is done. Its heartbeat is
        its supervisor's to record (or see :meth:`beating`)."""
        self._install_signal_handlers(signals)
        logger.info("Worker %s waiting for tasks of queue(s) %s.", self.name, ", ".join(self.queues))
        try:
            with metadata.writing_aside():
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
        """Record this worker in the Worker table and beat from a thread of this process while the
        block runs (``--burst``; under ``cq_runworker`` the supervisor beats instead)."""

        def me() -> list[Incarnation]:
            return [Incarnation(self.name, os.getpid(), self.queues, self.current and self.current.pk, self.processed)]

        heartbeat.register(me()[0])
        beats = Heartbeat(me)
        beats.start()
        try:
            yield
        finally:
            beats.stop()
            heartbeat.stopped(self.name, self.processed)

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
            if self._unsettled:
                self._reconcile()
            serving = queues.serving(self.queues)
            if len(serving) < len(self.queues):  # a queue is paused: look again soon for its resume
                wait = min(wait, queues.REFRESH)
            task_ids = self._listen(serving, 0 if self._backlog else wait)
            heard = len(task_ids)
            if task_ids:
                self._unsettled = True  # until the claim's reply is in
                claimed = claims.claim(task_ids, self.name, queues.serving(self.queues))
                self._unsettled = False
                ran += self._run_claimed(claimed)
            if not self._stopping.is_set() and (not ran or time.monotonic() >= self._next_poll):
                self._next_poll = time.monotonic() + self.poll_interval
                self._unsettled = True
                due = claims.claim_due(self.name, queues.serving(self.queues), self.queued_grace)
                self._unsettled = False
                self._backlog = bool(due)
                ran += self._run_claimed(due)
        except Exception:
            logger.exception("Worker %s could not take work; trying again shortly.", self.name)
            self._unsettled = True
            database.tidy()
            self._stopping.wait(min(wait, 1.0))
        return heard, ran

    def _reconcile(self) -> None:
        """Settle rows left RUNNING under this worker by a step that failed: those it never started
        (a claim whose reply was lost) go back to the queue; those it ran and could not record end
        LOST."""
        outcomes.reconcile(self.name, list(self._unrecorded), "Its worker could not record its outcome.")
        self._finished(self._unrecorded.values())
        self._unrecorded.clear()
        self._unsettled = False

    def _listen(self, serving: list[str], wait: float) -> list[str]:
        """Doorbells of the queues this worker serves (none paused), waiting up to ``wait`` seconds."""
        if not serving:
            self._stopping.wait(wait)
            return []
        if time.monotonic() < self._listen_again_at:
            self._stopping.wait(min(wait, self._listen_again_at - time.monotonic()))
            return []
        try:
            room = self._batch if self.max_tasks is None else max(min(self._batch, self.max_tasks - self.processed), 1)
            ids = doorbell.listen(serving, room, wait)
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
        """Run claimed tasks in order, quick atomic ones in batches; put back those not started
        when the worker stops, or when it cannot tell its supervisor that it starts one."""
        done = 0
        try:
            if len(tasks) > 1:
                self._tell(self.hooks.tasks_claimed, tasks)
            while done < len(tasks):
                if self._stopping.is_set() or not self.hooks.keep_going():
                    self.stop()
                    break
                batchable = list(itertools.takewhile(execution.batchable, tasks[done:]))
                if len(batchable) > 1:
                    done += self._run_batch(batchable)
                else:
                    self._run(tasks[done])
                    done += 1
        except _SupervisorGone:
            logger.warning("Worker %s lost its supervisor; it puts back %d task(s) it had not started and stops.",
                           self.name, len(tasks) - done)
            self.stop()
        unstarted = [task.pk for task in tasks[done:] if task.pk not in self._unrecorded]
        if unstarted:
            queueing.release(self.name, unstarted)
        return done

    def _tell(self, hook: Callable[[Any], None], what: Any) -> None:
        try:
            hook(what)
        except OSError as error:  # a broken pipe: nobody would record the task LOST should this process die
            raise _SupervisorGone from error

    def _finished(self, tasks: Iterable[Task]) -> None:
        """Tell the supervisor these tasks' outcomes are recorded (a supervisor gone needs no telling)."""
        try:
            for task in tasks:
                self.hooks.task_finished(task)
        except OSError:
            self.stop()

    def _run(self, task: Task) -> None:
        database.tidy()
        self._tell(self.hooks.task_started, task)
        self.current = task
        began = time.monotonic()
        try:
            execution.run(task)
        except Exception:
            logger.exception("Worker %s could not record the outcome of task %s.", self.name, task.pk)
            self._unrecorded[task.pk] = task
            self._unsettled = True
        else:
            self._finished([task])
        finally:
            self.current = None
            self.processed += 1
            database.tidy()
        # Take several doorbells at once only while tasks are quick: a slow task must not
        # hold back others that another worker could run.
        self._batch = BATCH if time.monotonic() - began < QUICK else 1

    def _run_batch(self, tasks: list[Task]) -> int:
        """Run atomic tasks one after another in one transaction (see execution.Batch), until
        they are done, the worker stops, or the transaction has been open BATCH_SECONDS; they
        are reported finished once it commits. Returns how many ran."""
        database.tidy()
        ran: list[Task] = []
        began = time.monotonic()
        running = execution.Batch()
        try:
            with execution.batch() as running:
                for task in tasks:
                    if ran and (self._stopping.is_set() or time.monotonic() - began > BATCH_SECONDS
                                or not self.hooks.keep_going()):
                        break
                    self._tell(self.hooks.task_started, task)
                    self.current = task
                    ran.append(task)
                    execution.run(task, running)
        except _SupervisorGone:
            if ran:
                self._record_again(running, ran, OSError("the supervisor is gone"))
            raise
        except Exception as error:
            logger.exception("Worker %s could not commit the outcome of %d task(s); recording each on its own.",
                             self.name, len(ran))
            self._record_again(running, ran, error)
        else:
            self._finished(ran)
        finally:
            self.current = None
            self.processed += len(ran)
            database.tidy()
        self._batch = BATCH if time.monotonic() - began < QUICK * len(ran) else 1
        return len(ran)

    def _record_again(self, running: execution.Batch, ran: list[Task], error: BaseException) -> None:
        database.tidy()
        try:
            running.record_again(error)
        except Exception:
            logger.exception("Worker %s could not record the outcome of %d task(s).", self.name, len(ran))
            self._unrecorded.update((task.pk, task) for task in ran)
            self._unsettled = True
            return
        self._finished(ran)

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
