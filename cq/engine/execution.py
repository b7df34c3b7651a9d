"""Running a claimed task, and making sure its outcome is recorded.

The function runs; what it returned or raised is then written by
``cq.engine.transitions``, which owns every change of status. Two kinds of error are
kept apart: the task's own (anything its function raises, ``BaseException``
included, and a value it returned that cannot be stored) go to its retry
rules; cq's own (the database failing to record the outcome) never re-run the
function. The outcome is written again, with backoff, until it lands or turns
out stale (the run was revoked, or declared LOST and claimed again meanwhile);
an outcome the database refuses for good is recorded as a plain FAILURE that
says why. A task never stays RUNNING under a live worker that is done with it.

An atomic task's own writes and its outcome commit in one transaction. If that
transaction fails at its end, the task's writes went with it, unless only the
COMMIT's reply was lost: the row tells which, and a run whose writes are gone
ends LOST (retried with ``retry_on_lost``). One that made no query loses
nothing, and its outcome is simply written again.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction

from .. import registry
from ..conf import settings
from ..exceptions import InvalidTask, SoftTimeLimitExceeded, TaskLost, TaskNotRegistered
from ..models import get_task_model
from . import current, database, tracing
from .inline import InlineTask
from .transitions import outcomes, queueing, settling

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

logger = logging.getLogger("cq.execution")  # its name before cq's subpackages: LOGGING settings use it

#: First and longest pause between two tries at recording an outcome the database did not take.
RECORD_PAUSE = 0.1
MAX_RECORD_PAUSE = 5.0

Write = Callable[[], None]


class _Failed(Exception):
    """The task's function raised ``error`` (or returned what cannot be recorded)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


def run(task: Task, batch: Batch | None = None) -> None:
    """Run a claimed task and record its outcome (in ``batch``, if given). The task's own errors
    never escape; an error that does is cq's, and the outcome is then not recorded."""
    with current.running(task), tracing.running(task, None if batch is None else batch.spans):
        try:
            fn = registry.find_for_row(task, strict=True)
        except TaskNotRegistered as error:  # a finder refuses the row for good (a forged path)
            record(task, functools.partial(outcomes.fail, task, error, False))
            return
        if fn is None:
            # The claim takes only rows this process knows, and those a finder may find (a Django
            # task's path, which this code may lack): such a row goes back to the queue, for a
            # worker that has its function, and this process claims its name no more.
            logger.warning("Worker %s has no task function %r: task %s is put back in the queue, for a worker "
                           "that has it.", task.worker, task.func_name, task.pk)
            registry.not_found(task.func_name)
            record(task, lambda: _put_back(task))
            return
        if batch is not None and fn.atomic:
            batch.run(task, fn)
        elif fn.atomic:
            _run_atomic(task, fn)
        else:
            _run_plain(task, fn)


def _put_back(task: Task) -> None:
    queueing.release(task.worker, [task.pk])


def _call(task: Task, fn: registry.TaskFunction[Any, Any]) -> Any:
    with _soft_time_limit(fn):
        value = fn.func(task, *task.args, **task.kwargs)
    return outcomes.result_of(task, value)


def _failure(task: Task, fn: registry.TaskFunction[Any, Any], error: BaseException) -> Write:
    return functools.partial(outcomes.fail, task, error, fn.should_retry(error, task.retries))


def _run_plain(task: Task, fn: registry.TaskFunction[Any, Any]) -> None:
    before = _metadata(task)
    try:
        value = _call(task, fn)
    except BaseException as error:  # sys.exit() or KeyboardInterrupt in a task fails the task, not the worker
        record(task, _failure(task, fn, error))
        _reraise_interrupt(error)
        return
    if not (outcomes.alone(task, value) and _succeeded_alone(task, value, _metadata(task) == before)):
        record(task, functools.partial(outcomes.succeed, task, value))


def _succeeded_alone(task: Task, value: Any, unchanged: bool) -> bool:
    """Record the success of a lone run in one statement (``outcomes.succeed_alone``; only its
    result and status when its logs, fields and progress are ``unchanged``); ``False`` when it
    was not written that way, for whatever reason: the caller then records it as usual."""
    try:
        return outcomes.succeed_alone(task, value, unchanged=unchanged)
    except DatabaseError:  # one statement: nothing was written, unless its reply alone was lost
        database.tidy()
        return False


def _run_atomic(task: Task, fn: registry.TaskFunction[Any, Any]) -> None:
    touched = _Touched()
    value: Any = None
    alone = False
    before = _metadata(task)
    try:
        with transaction.atomic():
            with touched.watching():
                value = _call(task, fn)
            # A run that made no query has nothing to commit with its outcome.
            alone = not touched.queried and outcomes.alone(task, value)
            if not alone:
                _succeed(task, value)
        if alone and not _succeeded_alone(task, value, _metadata(task) == before):
            record(task, functools.partial(outcomes.succeed, task, value))
    except _Failed as failed:
        record(task, _failure(task, fn, failed.error))
        _reraise_interrupt(failed.error)
    except outcomes.Stale:
        _log_stale(task)
    except DatabaseError as error:
        # cq's own write, or the COMMIT, failed: the task's writes went with the transaction,
        # or committed with its outcome if only the COMMIT's reply was lost.
        if not _transient(error):
            record(task, functools.partial(outcomes.unstorable, task, error))
        elif not touched.queried:
            record(task, functools.partial(outcomes.succeed, task, value))
        else:
            record(task, functools.partial(_lost_unless_committed, task, error))


def _succeed(task: Task, value: Any) -> None:
    try:
        outcomes.succeed(task, value)
    except InvalidTask as error:  # it returned a task it may not adopt: the task's error
        raise _Failed(error) from error


def _lost_unless_committed(task: Task, error: BaseException) -> None:
    outcomes.lose(task.pk, task.worker, TaskLost(
        f"The transaction of its outcome did not commit ({type(error).__name__}: {error}); its writes were "
        f"rolled back."), attempt=task.attempt)


class _Touched:
    """Whether the task's function made a query; whatever it raises is the task's error (a
    database error included), unlike an error of cq's own writes after it."""

    def __init__(self) -> None:
        self.queried = False

    @contextmanager
    def watching(self) -> Iterator[None]:
        def note(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
            self.queried = True
            return execute(sql, params, many, context)

        try:
            with connection.execute_wrapper(note):
                yield
        except BaseException as error:
            raise _Failed(error) from error


def record(task: Task, write: Write) -> None:
    """Run ``write``, which records ``task``'s outcome, in a transaction of its own, until it
    lands or is stale. A database that cannot be reached (or picked this transaction as a
    deadlock's victim) is tried again with backoff, for as long as it takes: the task is RUNNING
    under a live worker meanwhile, so nothing else records it. A write the database refuses for
    good (a value it cannot store) becomes a plain FAILURE that says why."""
    pause = RECORD_PAUSE
    minimal = False
    while True:
        try:
            with transaction.atomic():
                write()
            return
        except outcomes.Stale:
            _log_stale(task)
            return
        except DatabaseError as error:
            if not minimal and not _transient(error):
                logger.error("The database refused the outcome of task %s (%s: %s); recording a plain FAILURE.",
                             task.pk, type(error).__name__, error)
                write, minimal = functools.partial(outcomes.unstorable, task, error), True
                continue
            if connection.in_atomic_block:  # a batch's, or a test's: it is gone with the error
                raise
            logger.warning("Could not record the outcome of task %s (%s: %s); trying again in %.1f s.",
                           task.pk, type(error).__name__, error, pause)
            connection.close()
            time.sleep(pause)
            pause = min(pause * 2, MAX_RECORD_PAUSE)


def _transient(error: BaseException) -> bool:
    """Whether the same write may pass later: the database was out of reach, or chose this
    transaction as a deadlock's victim; not when it refused the values written."""
    if isinstance(error, OperationalError | InterfaceError):
        return True
    return not connection.in_atomic_block and not connection.is_usable()


def _log_stale(task: Task) -> None:
    logger.info("Task %s was revoked, or lost and claimed again, while it ran; its outcome is not recorded.", task.pk)


def _reraise_interrupt(error: BaseException) -> None:
    """A KeyboardInterrupt that Ctrl-C may have raised (in a worker run in a terminal) stops the
    worker once the task's failure is recorded; worker processes ignore SIGINT, so there it
    can only come from the task's code."""
    if (isinstance(error, KeyboardInterrupt) and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        raise error


def batchable(task: Task) -> bool:
    """Whether ``task`` may run in a :class:`Batch`: it runs in a transaction anyway, and the
    database is PostgreSQL (SQLite checks deferred constraints only at the commit, where a
    violation would fail the whole batch; PostgreSQL checks them at the end of each task)."""
    fn = registry.find_for_row(task)
    return fn is not None and fn.atomic and connection.vendor == "postgresql"


class Batch:
    """Quick atomic tasks, claimed together, run in one transaction that commits once for all.

    Each task runs in a savepoint taken just before its first query, with its outcome, so a
    task that fails, or whose outcome the database refuses, rolls back its own writes and no
    other's, and its deferred constraints are checked as it ends. A task that made no query,
    logged nothing and returned a plain value has its outcome written together with the
    others' in one UPDATE, before the commit. Parents are settled at the end, in primary-key
    order. If the transaction fails, :meth:`record_again` records each outcome on its own.
    """

    def __init__(self) -> None:
        self.deferred: list[tuple[Task, Any]] = []
        #: How to record each task's outcome again should the batch's transaction fail (``None``:
        #: its writes were in the transaction, so it ends LOST unless that committed after all).
        #: Noted before each write, so that a write the transaction dies in is covered too.
        self.again: dict[Any, tuple[Task, Write | None]] = {}
        #: The tasks' spans, ended once their outcomes are written (cq.engine.tracing).
        self.spans: list[Any] = []

    def run(self, task: Task, fn: registry.TaskFunction[Any, Any]) -> None:
        before = _metadata(task)
        try:
            with _savepoint_on_first_query() as touched:
                try:
                    value = _call(task, fn)
                    if touched():
                        # Deferred constraints (foreign keys) are checked now, failing this task
                        # alone, rather than at the commit, failing the batch.
                        connection.check_constraints()
                except BaseException as error:
                    raise _Failed(error) from error
                if not touched() and _metadata(task) == before and self._defer(task, value):
                    return
                self._note(task, None if touched() else functools.partial(outcomes.succeed, task, value))
                _succeed(task, value)
        except _Failed as failed:
            write = _failure(task, fn, failed.error)
            self._note(task, write)
            record(task, write)
            _reraise_interrupt(failed.error)
        except outcomes.Stale:
            self.again.pop(task.pk, None)
            _log_stale(task)
        except DatabaseError as error:
            if _transient(error):
                raise  # the batch's transaction is gone; what was noted covers this task
            write = functools.partial(outcomes.unstorable, task, error)
            self._note(task, write)
            record(task, write)

    def _note(self, task: Task, write: Write | None) -> None:
        self.again[task.pk] = (task, write)

    def _defer(self, task: Task, value: Any) -> bool:
        """Keep ``value`` as ``task``'s result, to write at the end with the others'; ``False`` if
        recording it needs more than a write (it returned a task, or created subtasks)."""
        if isinstance(value, Task | InlineTask) or current.spawned():
            return False
        self.deferred.append((task, value))
        self._note(task, functools.partial(outcomes.succeed, task, value))
        return True

    def record_again(self, error: BaseException) -> None:
        """The batch's transaction failed with ``error``: record each task's outcome on its own. A
        task whose writes were rolled back with it ends LOST; the others' outcomes are written as
        they were (each a no-op if the COMMIT had in fact gone through)."""
        try:
            for task, write in self.again.values():
                record(task, write or functools.partial(_lost_unless_committed, task, error))
        finally:
            tracing.finish(self.spans)


@contextmanager
def batch() -> Iterator[Batch]:
    """A transaction for a :class:`Batch`; the deferred outcomes are written as it ends. When each
    deferred run is alone (``outcomes.alone``), nothing needs to commit with them: they are
    written after it, in one statement of their own (a batch of no-ops then needs no
    transaction at all), and any the statement leaves alone are recorded one by one."""
    running = Batch()
    alone = False
    with transaction.atomic(), settling.settling_at_end():
        yield running
        alone = all(outcomes.alone(task, value) for task, value in running.deferred)
        if not alone:
            outcomes.succeed_many(running.deferred)
    try:
        if alone:
            for task, value in outcomes.succeed_many(running.deferred, alone=True):
                record(task, functools.partial(outcomes.succeed, task, value))
    finally:
        tracing.finish(running.spans)


def _metadata(task: Task) -> tuple[int, ...]:
    """What a running task may change besides its result, by identity: log lines, fields and
    progress are replaced, never changed in place, when they change."""
    return id(task.log_records), id(task.fields), id(task.__dict__.get("progress"))


@contextmanager
def _savepoint_on_first_query() -> Iterator[Callable[[], bool]]:
    """Within a transaction, a savepoint taken only when the block makes its first query; a
    block that made none has nothing to roll back. Yields whether a query was made."""
    opened: list[transaction.Atomic] = []

    def take_savepoint(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if not opened:
            opened.append(transaction.atomic())  # first, so that the SAVEPOINT itself passes through
            opened[0].__enter__()
        return execute(sql, params, many, context)

    with connection.execute_wrapper(take_savepoint):
        try:
            yield lambda: bool(opened)
        except BaseException as error:
            if opened:
                opened[0].__exit__(type(error), error, error.__traceback__)
            raise
        if opened:
            opened[0].__exit__(None, None, None)


@contextmanager
def _soft_time_limit(fn: registry.TaskFunction[Any, Any]) -> Iterator[None]:
    """Raise ``SoftTimeLimitExceeded`` in the task once its soft limit passes (main thread only:
    it takes SIGALRM, so a worker thread inside a test runs without it)."""
    seconds = fn.soft_time_limit or settings.SOFT_TIME_LIMIT
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise SoftTimeLimitExceeded(f"Task {fn.name!r} ran past its soft time limit of {seconds} s.")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def hard_time_limit(task: Task) -> float | None:
    """Seconds after which the supervisor kills the process running ``task``."""
    fn = registry.find_for_row(task)
    return (fn and fn.time_limit) or settings.TIME_LIMIT

