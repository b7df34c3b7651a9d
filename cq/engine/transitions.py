"""Every change of a task's status, and what follows it, in one place.

Only the functions here write ``status``::

    PENDING ──launch/submit──▶ QUEUED ──claim──▶ RUNNING ──succeed──▶ SUCCESS, or WAITING
    RETRY (when due) ──claim──▶ RUNNING        RUNNING ──fail──▶ FAILURE, or RETRY
    RUNNING ──release──▶ QUEUED (claimed, never started)
    RUNNING ──lose──▶ LOST, or RETRY (its process died, or its transaction did not commit)
    WAITING ──settle──▶ SUCCESS, INCOMPLETE (FAILURE for a pipeline)
    anything unfinished ──revoke──▶ REVOKED    FAILURE, LOST ──retry_now──▶ QUEUED

**Fencing.** Each claim adds one to the row's ``attempt``. Every later write of that run
(its outcome here, its progress and fields in ``cq.engine.metadata``) is conditional on
``status = RUNNING AND attempt = n``, so a run that was declared LOST and claimed again
(a zombie) can never overwrite the newer attempt. A write that matches no row raises
:class:`Stale`: the run's outcome is somebody else's to record now.

**The database's clock.** A claim stamps ``started`` with ``Now()``; heartbeats and the
sweeper's cutoff use it too (``cq.workers.heartbeat``, ``cq.scheduling.sweeper``). Times computed here use
``cq.engine.clock``, corrected by what each claim returns.

**What follows a final status** (:func:`_follow`) is written once: errbacks once it
commits, chained tasks queued, the waiting parent settled. Inside
:func:`settling_at_end` (a batch) parents are settled at the end, once each, in
primary-key order, so that two batches never lock the same parents in opposite orders.
"""

from __future__ import annotations

import functools
import logging
import threading
import traceback
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.db import connections, router, transaction
from django.db.models import BooleanField, Case, F, Q, QuerySet, Value, When
from django.db.models.expressions import RawSQL
from django.db.models.functions import Now

from .. import registry, signals, validation
from ..conf import settings
from ..exceptions import CQError, InvalidTask, TaskLost
from ..models import ERROR, RETRYABLE, REVOCABLE, TaskStatus, Worker, get_task_model, result_expiry
from ..transport import doorbell, events
from ..workflows import errbacks, rules
from . import clock, current, limits
from .inline import InlineTask
from .logs import flush as flush_logs
from .returning import by_pk, update_returning, update_row

Task = get_task_model()

logger = logging.getLogger("cq.transitions")  # its name before cq's subpackages: LOGGING settings use it


_local = threading.local()


class Stale(CQError):
    """The run's row is no longer RUNNING under its attempt: it was revoked, or declared LOST
    (and maybe claimed again). Its outcome is not recorded."""


# -- Claiming: QUEUED (or a due RETRY) -> RUNNING ----------------------------------------------


def claim(task_ids: list[str], worker: str, queues: Iterable[str]) -> list[Task]:
    """Take for ``worker`` those of the tasks ``task_ids`` that are QUEUED, ready and in one of
    ``queues``, in the order given. A row locked by another transaction (an admin's edit) is
    skipped, not waited for: the database poll finds it later."""
    if not task_ids:
        return []
    queues = list(queues)
    if _on_postgresql():
        rows = _claim_locked("doorbell", [[uuid.UUID(task_id) for task_id in task_ids], TaskStatus.QUEUED, queues,
                                          clock.now()], worker)
    else:
        ready = Task.objects.filter(_ready(), pk__in=task_ids, status=TaskStatus.QUEUED, queue__in=queues)
        rows = update_returning(ready, _claiming(worker))
    claimed = {str(task.pk): task for task in rows}
    missing = [task_id for task_id in task_ids if task_id not in claimed]
    if missing:
        known = {str(pk) for pk in Task.objects.filter(pk__in=missing).values_list("pk", flat=True)}
        for task_id in missing:
            if task_id not in known:
                logger.warning("Skipping a doorbell for task %s, which is not in the database.", task_id)
    return _admitted([claimed[task_id] for task_id in dict.fromkeys(task_ids) if task_id in claimed], worker)


def claim_due(worker: str, queues: Iterable[str], grace: float, limit: int = 1) -> list[Task]:
    """Take up to ``limit`` tasks that are due but were not claimed through a doorbell:
    QUEUED for ``grace`` seconds or more (their doorbell was lost), or RETRY whose time has come."""
    now, queues = clock.now(), list(queues)
    cutoff = now - timedelta(seconds=grace)
    if _on_postgresql():
        claimed = _claim_locked("due", [TaskStatus.QUEUED, TaskStatus.RETRY, TaskStatus.RETRY, cutoff, now, queues,
                                        limit], worker)
    else:
        # The status test comes first, as the cq_task_wait index states it: SQLite uses a
        # partial index only when the query repeats the index's condition.
        due = (Q(status__in=[TaskStatus.QUEUED, TaskStatus.RETRY])
               & (Q(status=TaskStatus.RETRY) | Q(submitted__lte=cutoff)) & _ready(now))
        oldest = Task.objects.filter(due, queue__in=queues).order_by("-priority", "submitted")
        claimed = update_returning(Task.objects.filter(pk__in=oldest.values("pk")[:limit]), _claiming(worker))
    return _admitted(sorted(claimed, key=lambda task: (-task.priority, task.submitted)), worker)


def _claiming(worker: str) -> dict[str, Any]:
    return {"status": TaskStatus.RUNNING, "started": Now(), "worker": worker, "attempt": F("attempt") + 1}


def _ready(now: Any = None) -> Q:
    now = now or clock.now()
    return Q(run_after__isnull=True) | Q(run_after__lte=now)


def _on_postgresql() -> bool:
    return connections[router.db_for_write(Task)].vendor == "postgresql"


#: What a claim takes on PostgreSQL: by the ids its doorbells named, or the oldest due. Written
#: by hand, and built once: Django would compile the UPDATE and its locking subquery on every
#: claim, which costs more CPU than running them. ``{x}`` is the quoted column of field x.
_WANTED = {
    "doorbell": "{id} = ANY(%s) AND {status} = %s AND {queue} = ANY(%s) AND ({run_after} IS NULL OR {run_after} <= %s)",
    # The status test repeats the cq_task_wait index's condition, for the planner.
    "due": "{status} IN (%s, %s) AND ({status} = %s OR {submitted} <= %s) AND ({run_after} IS NULL OR "
           "{run_after} <= %s) AND {queue} = ANY(%s) ORDER BY {priority} DESC, {submitted} LIMIT %s",
}
_claims: dict[tuple[str, str], str] = {}


def _claim_locked(wanted: str, params: list[Any], worker: str) -> list[Task]:
    """Claim the rows ``_WANTED[wanted]`` finds, skipping those another transaction holds locked,
    in one statement (so with no transaction and COMMIT of its own). ``started`` is the
    database's time, and ``attempt`` counts the claim."""
    connection = connections[router.db_for_write(Task)]
    sql = _claims.get((connection.alias, wanted))
    if sql is None:
        quote, meta = connection.ops.quote_name, Task._meta
        column = {field.name: quote(field.column) for field in meta.concrete_fields}
        column["id"], table = quote(meta.pk.column), quote(meta.db_table)
        sql = _claims[(connection.alias, wanted)] = (
            f"UPDATE {table} SET {column['status']} = %s, {column['started']} = STATEMENT_TIMESTAMP(), "
            f"{column['worker']} = %s, {column['attempt']} = {column['attempt']} + 1 "
            f"WHERE {column['id']} IN (SELECT {column['id']} FROM {table} WHERE {_WANTED[wanted].format(**column)} "
            f"FOR UPDATE SKIP LOCKED) RETURNING {', '.join(quote(field.column) for field in meta.concrete_fields)}")
    return list(Task.objects.db_manager(connection.alias).raw(sql, [TaskStatus.RUNNING, worker, *params]))


def _admitted(claimed: list[Task], worker: str) -> list[Task]:
    """Those of the tasks ``worker`` claimed that their concurrency and rate limits let start now
    (the others are back in the queue, see cq.engine.limits). If admitting fails, all are put back: a
    task left RUNNING by a worker that is alive would never be run, nor found lost."""
    if claimed:
        clock.learn(claimed[0].started)
    try:
        admitted = limits.admit(claimed)
    except Exception:
        try:
            release(worker, [task.pk for task in claimed])
        except Exception:
            logger.exception("Worker %s could not put back the tasks it claimed.", worker)
        raise
    events.status(admitted)
    return admitted


# -- Putting back: RUNNING -> QUEUED, for tasks that never started ------------------------------


def release(worker: str, task_ids: Iterable[Any] | None = None, keep: Iterable[Any] = ()) -> int:
    """Put back what ``worker`` claimed but never started (it stopped or died first, or a claim's
    reply was lost): ``task_ids``, or with ``None`` every row RUNNING under ``worker`` but those in
    ``keep``. They are QUEUED again and their doorbells ring. Returns how many."""
    mine = Task.objects.filter(status=TaskStatus.RUNNING, worker=worker)
    if task_ids is not None:
        task_ids = list(task_ids)
        if not task_ids:
            return 0
        mine = mine.filter(pk__in=task_ids)
    keep = list(keep)
    if keep:
        mine = mine.exclude(pk__in=keep)
    found = update_returning(mine, {"status": TaskStatus.QUEUED, "started": None, "submitted": Now()},
                             ["queue", "priority"])
    doorbell.ring_on_commit([(task.pk, task.queue, task.priority) for task in found])
    return len(found)


def reconcile(worker: str, started: Iterable[Any], why: str) -> None:
    """Settle every row still RUNNING under ``worker``, an incarnation that runs none of them now:
    those it ``started`` end LOST (``why``); the others it never started, so they are put back."""
    started = list(started)
    release(worker, keep=started)
    for task_id in started:
        lose(task_id, worker, TaskLost(why))


def put_back(queryset: QuerySet[Task], **values: Any) -> int:
    """Return the claimed rows of ``queryset`` to QUEUED (a limit refused them); returns how many."""
    return queryset.update(status=TaskStatus.QUEUED, started=None, submitted=Now(), **values)


# -- The outcome of a run: RUNNING -> SUCCESS, WAITING, FAILURE, RETRY or LOST -----------------


def result_of(task: Task, value: Any) -> Any:
    """What ``task``'s function returned, as it will be recorded.

    Raises:
        InvalidTask: a value no database can store (not JSON, NaN, NUL), or the task itself; an
        error of the task's, handled by its retry rules.
    """
    if isinstance(value, InlineTask):
        value = value.result
    if isinstance(value, Task):
        if value.pk == task.pk:
            raise InvalidTask(f"Task {task.pk} returned itself.")
        return value
    validation.check_storable(value, f"the result of task {task.func_name!r}")
    return value


def succeed(task: Task, value: Any) -> None:
    """Record what ``task``'s function returned (see :func:`result_of`): SUCCESS; or WAITING
    until the task it returned, or the subtasks it created, have finished."""
    if isinstance(value, Task):
        _adopt(task, value)
        _write(task, status=TaskStatus.WAITING, waiting_on_id=value.pk)
    elif current.spawned():
        _write(task, status=TaskStatus.WAITING, result=value)
    else:
        _end(task, TaskStatus.SUCCESS, result=value, error=None)
        return
    launch(Task.objects.filter(parent=task.pk, previous__isnull=True))
    settle(task.pk)


def fail(task: Task, error: BaseException, retry: bool, status: TaskStatus = TaskStatus.FAILURE) -> None:
    """Record that ``task``'s run failed with ``error``: RETRY after a backoff, or ``status``."""
    fields = {"error": validation.storable_text(str(error)),
              "exception": f"{type(error).__module__}.{type(error).__qualname__}"[:255],
              "traceback": validation.storable_text("".join(traceback.format_exception(error)))}
    if not retry:
        _end(task, status, cause=error, **fields)
        return
    backoff = min(settings.RETRY_BACKOFF * 2**task.retries, settings.RETRY_BACKOFF_MAX)
    now = clock.now()
    _write(task, status=TaskStatus.RETRY, retries=task.retries + 1, last_retry=now,
           run_after=now + timedelta(seconds=backoff), **fields)
    logger.info("Task %s failed (%s); retry %d in %.1f s.", task.pk, error, task.retries, backoff)


def unstorable(task: Task, error: BaseException) -> None:
    """Record FAILURE with as little as can be: the database refused the run's full outcome
    (its result, logs, fields or progress), and the error says why."""
    message = validation.storable_text(f"cq could not store this task's outcome ({type(error).__name__}: {error}).")
    _end(task, TaskStatus.FAILURE, cause=CQError(message), minimal=True, error=message, traceback="",
         exception=f"{type(error).__module__}.{type(error).__qualname__}"[:255])


def lose(task_id: Any, worker: str, error: CQError, *, lost: bool = True, attempt: int | None = None) -> bool:
    """Record the end of a run that cannot report it (its process is gone, or its transaction did
    not commit): LOST, retried with ``retry_on_lost``; or FAILURE, retried by its rules, for one
    killed at its hard time limit (``lost=False``). Only a row still RUNNING on ``worker`` (and
    under ``attempt``, when given) is touched; returns whether it was."""
    found = Task.objects.filter(pk=task_id, status=TaskStatus.RUNNING, worker=worker)
    task = (found if attempt is None else found.filter(attempt=attempt)).first()
    if task is None:
        return False
    fn = registry.find_for_row(task)
    if lost:
        retry = fn is not None and fn.should_retry_lost(task.retries)
    else:
        retry = fn is not None and fn.should_retry(error, task.retries)
    try:
        with transaction.atomic():
            fail(task, error, retry, status=TaskStatus.LOST if lost else TaskStatus.FAILURE)
    except Stale:
        return False
    return True


def succeed_many(runs: list[tuple[Task, Any]]) -> None:
    """Record SUCCESS for quick tasks of a batch in one UPDATE: tasks that made no query, created
    nothing and returned a plain value (``result_of``'s). A stale run is left alone."""
    if not runs:
        return
    now = clock.now()
    field = Task._meta.get_field
    expiries = {task.pk: result_expiry(task, now) for task, _ in runs}
    written = {row.pk: row for row in update_returning(
        Task.objects.filter(_attempts([task for task, _ in runs]), status=TaskStatus.RUNNING),
        {"status": TaskStatus.SUCCESS, "error": None, "finished": now,
         "result": by_pk({task.pk: value for task, value in runs}, field("result")),
         "result_expiry": by_pk(expiries, field("result_expiry"))},
        ["parent", "has_next"])}
    for task, value in runs:
        row = written.get(task.pk)
        if row is None:
            logger.info("Task %s was revoked or lost while it ran; its outcome is not recorded.", task.pk)
            continue
        task.status, task.result, task.error, task.finished = TaskStatus.SUCCESS, value, None, now
        task.result_expiry, task.parent_id, task.has_next = expiries[task.pk], row.parent_id, row.has_next
        events.status([task])
        limits.wake_on_commit([task.concurrency_key])
        _follow(task, TaskStatus.SUCCESS, None)


def _attempts(tasks: list[Task]) -> RawSQL:
    """``(id, attempt) IN (...)``: the rows of these runs, fenced on their attempts. Raw, since
    as ``Q`` objects OR-ed together a batch's fence cost more to build than its UPDATE."""
    connection = connections[router.db_for_write(Task)]
    quote = connection.ops.quote_name
    columns = f"({quote(Task._meta.pk.column)}, {quote(Task._meta.get_field('attempt').column)})"
    params = [value for task in tasks for value in (Task._meta.pk.get_db_prep_value(task.pk, connection), task.attempt)]
    return RawSQL(f"{columns} IN ({', '.join(['(%s, %s)'] * len(tasks))})", params, output_field=BooleanField())


def _end(task: Task, status: TaskStatus, *, cause: BaseException | None = None, minimal: bool = False,
         **values: Any) -> None:
    now = clock.now()
    _write(task, minimal=minimal, status=status, finished=now, result_expiry=result_expiry(task, now), **values)
    _follow(task, status, cause)


def _write(task: Task, *, minimal: bool = False, **values: Any) -> None:
    """Write the run's outcome, with its logs, errbacks, fields and progress (not when
    ``minimal``), if the row is still RUNNING under the run's attempt.

    It reads back ``parent`` and ``has_next`` as they are now: another task may have adopted
    this one (returned it) or chained a task after it while it ran.
    """
    if not minimal:
        values.update(log_records=task.log_records, errbacks=task.errbacks, fields=task.fields,
                      progress=task.__dict__.get("progress"))
    running = {"status": TaskStatus.RUNNING, "attempt": task.attempt}
    written = update_row(Task, task.pk, running, values, ["parent", "has_next"])
    if written is None:
        raise Stale(f"Task {task.pk} is no longer running as attempt {task.attempt}.")
    for name, value in values.items():
        setattr(task, name, value)
    task.parent_id = _uuid(written[0])
    task.has_next = bool(written[1])
    flush_logs(task)
    events.status([task])
    # It no longer runs: a task of its key waiting for a free slot may start.
    limits.wake_on_commit([task.concurrency_key])


def _adopt(task: Task, child: Task) -> None:
    """``task`` returned ``child``: make it a subtask, whose result ``task`` takes when it is done."""
    child_parent = Task.objects.filter(pk=child.pk).values_list("parent_id", flat=True).get()
    if child_parent is None:
        top = task.top_id or task.pk
        Task.objects.filter(pk=child.pk).update(parent=task.pk, top=top)
        Task.objects.filter(top=child.pk).update(top=top)
    elif child_parent != task.pk:
        raise InvalidTask(f"Task {task.pk} returned task {child.pk}, which is a subtask of another task "
                          f"({child_parent}); return a task you created, or its result.")


def _follow(task: Task, status: TaskStatus, cause: BaseException | None) -> None:
    """What follows ``task``'s final ``status``: its errbacks once that commits, the tasks chained
    after it, and its waiting parent."""
    failed = status != TaskStatus.SUCCESS
    if failed:
        transaction.on_commit(functools.partial(errbacks.run_errbacks, task, cause or CQError(task.error)))
    if task.has_next:
        launch_next(task, failed=failed)
    if task.parent_id is not None:
        settle(task.parent_id, cause if failed else None)


# -- Settling a waiting parent: WAITING -> SUCCESS, INCOMPLETE or FAILURE -----------------------


def settle(task_id: Any, cause: BaseException | None = None) -> None:
    """Finish a WAITING task whose subtasks are all done; then its parent, and so on up.

    Must run inside a transaction; ``cause`` is the error that made a subtask fail, handed to
    errbacks. Groups, chords and stages decide by their own rules (``cq.workflows.rules``).
    """
    pending = getattr(_local, "settling", None)
    if pending is not None:
        pending.append((task_id, cause))
        return
    task = Task.objects.select_for_update().filter(pk=task_id).first()
    if task is None or task.status != TaskStatus.WAITING:
        return
    rule = rules.RULES.get(task.func_name)
    if rule is None:
        outcome = _tree_outcome(task)
    else:
        # A workflow names its own failures (every failed member of a group), so the error
        # that woke it is not necessarily the one it reports.
        outcome, cause = rule(task), None
    if outcome is None:
        return
    status, fields = outcome
    now = clock.now()
    fields.update(status=status, finished=now, result_expiry=result_expiry(task, now))
    Task.objects.filter(pk=task.pk, status=TaskStatus.WAITING).update(**fields)
    for name, value in fields.items():
        setattr(task, name, value)
    events.status([task])
    _follow(task, status, cause)


@contextmanager
def settling_at_end() -> Iterator[None]:
    """Within the block, parents are settled when it ends (if it ends well), once each and in
    primary-key order: a batch's transaction then locks parents in one order, and two batches
    cannot deadlock over the same groups."""
    pending: list[tuple[Any, BaseException | None]] = []
    _local.settling = pending
    try:
        yield
    finally:
        _local.settling = None
    causes: dict[Any, BaseException | None] = {}
    for task_id, cause in pending:
        causes[task_id] = causes.get(task_id) or cause
    for task_id in sorted(causes):
        settle(task_id, causes[task_id])


def _tree_outcome(task: Task) -> rules.Outcome | None:
    """SUCCESS once every subtask succeeded; INCOMPLETE as soon as one failed; else ``None``."""
    # One row at most: the first subtask not yet successful, failed ones first. None: all succeeded.
    failed_first = Case(When(status__in=ERROR, then=Value(0)), default=Value(1))
    unsettled = (Task.objects.filter(parent=task.pk).exclude(status=TaskStatus.SUCCESS)
                 .order_by(failed_first).values_list("pk", "status", "error").first())
    if unsettled is None:
        result = task.result
        if task.waiting_on_id is not None:
            result = Task.objects.filter(pk=task.waiting_on_id).values_list("result", flat=True).get()
        return TaskStatus.SUCCESS, {"result": result}
    pk, status, error = unsettled
    if status in ERROR:
        error = f"Subtask {pk} ended {TaskStatus(status).label}: {error or ''}".rstrip(": ")
        return TaskStatus.INCOMPLETE, {"error": error}
    return None


# -- Revoking: anything unfinished -> REVOKED ----------------------------------------------------


def revoke(task: Task, ids: set[Any], terminate: bool) -> None:
    """Revoke the unfinished tasks among ``ids`` (``task``'s tree, walked by ``cq.workflows.trees.revoke``);
    with ``terminate``, ask the supervisors running them to kill their processes."""
    now = clock.now()
    with transaction.atomic():
        running = list(Task.objects.filter(pk__in=ids, status=TaskStatus.RUNNING).values_list("pk", "worker",
                                                                                   "concurrency_key"))
        revocable = Task.objects.filter(pk__in=ids, status__in=REVOCABLE)
        if events.enabled() or signals.task_finished.has_listeners():
            revoked = list(revocable)
            for row in revoked:
                row.status, row.finished = TaskStatus.REVOKED, now
            events.status(revoked)
        # Revoked tasks expire like finished ones; a tree's tasks usually share one result_ttl.
        for ttl in set(revocable.values_list("result_ttl", flat=True)):
            expiry = result_expiry(Task(result_ttl=ttl), now)
            revocable.filter(result_ttl=ttl).update(status=TaskStatus.REVOKED, finished=now, result_expiry=expiry)
        for pk, worker, _key in running if terminate else ():
            Worker.objects.filter(name=worker).update(terminate_task=pk)
        limits.wake_on_commit([key for _pk, _worker, key in running])
        parent_id = Task.objects.filter(pk=task.pk).values_list("parent_id", flat=True).get()
        if parent_id is not None and parent_id not in ids:
            settle(parent_id)


# -- Queueing: PENDING, RETRY, FAILURE or LOST -> QUEUED ------------------------------------------


def launch(candidates: QuerySet[Task]) -> list[Any]:
    """Queue those of ``candidates`` still PENDING (a no-op for any queued meanwhile)."""
    found = list(candidates.filter(status=TaskStatus.PENDING).values_list("pk", "queue", "priority"))
    ids = [pk for pk, *_ in found]
    if ids:
        Task.objects.filter(pk__in=ids, status=TaskStatus.PENDING).update(status=TaskStatus.QUEUED,
                                                                          submitted=clock.now())
        doorbell.ring_on_commit(found)
        if events.enabled():
            events.status(Task.objects.filter(pk__in=ids).only("pk", "top", "func_name", "status"))
    return ids


def launch_next(task: Task, failed: bool = False) -> None:
    """Queue the tasks chained after ``task``: all on success, the ``force_chain`` ones on failure."""
    chained = Task.objects.filter(previous=task.pk)
    launch(chained.filter(force_chain=True) if failed else chained)


def submit(task: Task, args: list[Any], concurrency_key: str | None) -> bool:
    """Queue the PENDING ``task`` with ``args``; ``False`` if it is not PENDING."""
    now = clock.now()
    with transaction.atomic():
        if not Task.objects.filter(pk=task.pk, status=TaskStatus.PENDING).update(
                status=TaskStatus.QUEUED, args=args, submitted=now, concurrency_key=concurrency_key):
            return False
        doorbell.ring_on_commit([(task.pk, task.queue, task.priority)])
    task.status, task.args, task.submitted, task.concurrency_key = TaskStatus.QUEUED, args, now, concurrency_key
    events.status([task])
    return True


def retry_now(task: Task) -> bool:
    """Queue again a top-level task that ended FAILURE or LOST, as the same row (its retries
    counted); ``False`` if it is not such a task. A task of a tree is retried by its tree."""
    now = clock.now()
    with transaction.atomic():
        updated = Task.objects.filter(pk=task.pk, parent__isnull=True, status__in=RETRYABLE).update(
            status=TaskStatus.QUEUED, submitted=now, started=None, finished=None, result_expiry=None,
            run_after=None, retries=F("retries") + 1, last_retry=now)
        if updated:
            task.refresh_from_db()
            doorbell.ring_on_commit([(task.pk, task.queue, task.priority)])
            events.status([task])
    return bool(updated)


def queue_retries(task_ids: list[Any]) -> int:
    """Queue at once the tasks among ``task_ids`` waiting to be retried; returns how many."""
    if not task_ids:
        return 0
    queued = update_returning(Task.objects.filter(pk__in=task_ids, status=TaskStatus.RETRY),
                              {"status": TaskStatus.QUEUED, "run_after": None, "submitted": clock.now()},
                              ["queue", "priority"])
    doorbell.ring_on_commit([(task.pk, task.queue, task.priority) for task in queued])
    return len(queued)


def _uuid(value: Any) -> Any:
    return value if value is None or isinstance(value, uuid.UUID) else uuid.UUID(value)
