"""Claiming: QUEUED (or a due RETRY) → RUNNING, for one worker, then admitted under limits.

A claim is one conditional UPDATE that skips rows another transaction holds locked, and rows
of functions this process does not know (``registry.claimable``: a worker deployed before or
after the code of a function leaves its rows QUEUED for the workers that have it); it stamps
the database's time in ``started`` and counts the attempt (see the package's docstring for
fencing). The tasks it takes whose function has a concurrency or rate limit
are then admitted, or put back, by ``cq.engine.limits``.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import connections, router
from django.db.models import F, Q
from django.db.models.functions import Now

from ... import registry
from ...models import TaskStatus, get_task_model
from ...transport import doorbell, events
from .. import clock, limits, statements
from ..returning import update_returning
from . import queueing

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

logger = logging.getLogger("cq.transitions")  # its name before cq's subpackages: LOGGING settings use it


def claim(task_ids: list[str], worker: str, queues: Iterable[str]) -> list[Task]:
    """Take for ``worker`` those of the tasks ``task_ids`` that are QUEUED, ready and in one of
    ``queues``, in the order given. A row locked by another transaction (an admin's edit) is
    skipped, not waited for: the database poll finds it later."""
    queues = list(queues)
    if not task_ids:
        return []
    if not queues:  # all paused since the doorbells were heard
        rows: list[Task] = []
    elif _on_postgresql():
        ids = [uuid.UUID(task_id) for task_id in task_ids]
        # One doorbell (the usual case under a steady trickle) has a statement of its own: its
        # generic plan is as cheap as a custom one, so PostgreSQL plans it once per connection.
        wanted, named = ("doorbell", ids) if len(ids) > 1 else ("one", ids[0])
        rows = _claim_locked(wanted, [named, TaskStatus.QUEUED, queues, clock.now(), *_known_arrays()], worker)
    else:
        ready = Task.objects.filter(_ready(), _known(), pk__in=task_ids, status=TaskStatus.QUEUED, queue__in=queues)
        rows = update_returning(ready, _claiming(worker))
    claimed = {str(task.pk): task for task in rows}
    missing = [task_id for task_id in task_ids if task_id not in claimed]
    if missing:
        _unclaimed(missing, queues)
    return _admitted([claimed[task_id] for task_id in dict.fromkeys(task_ids) if task_id in claimed], worker)


def _unclaimed(task_ids: list[str], queues: list[str]) -> None:
    """Of doorbells whose claim took nothing, warn of those whose task is not in the database, and
    ring again those of QUEUED tasks in a queue paused since the worker heard them: they are heard
    when it is resumed (a doorbell's task in any other state has nothing to ring for)."""
    rows = {str(pk): (queue, status, priority) for pk, queue, status, priority
            in Task.objects.filter(pk__in=task_ids).values_list("pk", "queue", "status", "priority")}
    for task_id in task_ids:
        if task_id not in rows:
            logger.warning("Skipping a doorbell for task %s, which is not in the database.", task_id)
    paused = [(task_id, queue, priority) for task_id, (queue, status, priority) in rows.items()
              if status == TaskStatus.QUEUED and queue not in queues]
    doorbell.ring_on_commit(paused)


def claim_due(worker: str, queues: Iterable[str], grace: float, limit: int = 1) -> list[Task]:
    """Take up to ``limit`` tasks that are due but were not claimed through a doorbell:
    QUEUED for ``grace`` seconds or more (their doorbell was lost), or RETRY whose time has come."""
    now, queues = clock.now(), list(queues)
    if not queues:
        return []
    cutoff = now - timedelta(seconds=grace)
    if _on_postgresql():
        claimed = _claim_locked("due", [TaskStatus.QUEUED, TaskStatus.RETRY, TaskStatus.RETRY, cutoff, now, queues,
                                        *_known_arrays(), limit], worker)
    else:
        # The status test comes first, as the cq_task_wait index states it: SQLite uses a
        # partial index only when the query repeats the index's condition.
        due = (Q(status__in=[TaskStatus.QUEUED, TaskStatus.RETRY])
               & (Q(status=TaskStatus.RETRY) | Q(submitted__lte=cutoff)) & _ready(now))
        oldest = Task.objects.filter(due, _known(), queue__in=queues).order_by("-priority", "submitted")
        claimed = update_returning(Task.objects.filter(pk__in=oldest.values("pk")[:limit]), _claiming(worker))
    return _admitted(sorted(claimed, key=lambda task: (-task.priority, task.submitted)), worker)


def _claiming(worker: str) -> dict[str, Any]:
    return {"status": TaskStatus.RUNNING, "started": Now(), "worker": worker, "attempt": F("attempt") + 1}


def _ready(now: Any = None) -> Q:
    now = now or clock.now()
    return Q(run_after__isnull=True) | Q(run_after__lte=now)


def _known() -> Q:
    """The rows of functions this process runs, as ``_KNOWN`` says (see ``registry.claimable``)."""
    names, marks, unfound = registry.claimable()
    if not marks:
        return Q(func_name__in=names)
    return Q(func_name__in=names) | (Q(fields__has_any_keys=marks) & ~Q(func_name__in=unfound))


_arrays: tuple[Any, list[str]] = (None, [])


def _known_arrays() -> list[str]:
    """``registry.claimable()``'s lists as PostgreSQL array literals, made once: psycopg would
    adapt each list (a name at a time, in Python) on every claim, which doubled its cost."""
    global _arrays
    lists = registry.claimable()
    if _arrays[0] is not lists:
        _arrays = (lists, [_array(names) for names in lists])
    return _arrays[1]


def _array(texts: list[str]) -> str:
    """``texts`` as a PostgreSQL array literal, each quoted."""
    quoted = ('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"' for text in texts)
    return "{" + ",".join(quoted) + "}"


def _on_postgresql() -> bool:
    return connections[router.db_for_write(Task)].vendor == "postgresql"


#: What a claim takes on PostgreSQL: by the ids its doorbells named, or the oldest due. Written
#: by hand, and built once: Django would compile the UPDATE and its locking subquery on every
#: claim, which costs more CPU than running them. ``{x}`` is the quoted column of field x.
#: ``_KNOWN`` takes the three lists of ``registry.claimable()``: as parameters, so that the
#: statement stays one, prepared once per connection.
_KNOWN = "({func_name} = ANY(%s::text[]) OR ({fields} ?| %s::text[] AND NOT {func_name} = ANY(%s::text[])))"
_WANTED = {
    "one": "{id} = %s AND {status} = %s AND {queue} = ANY(%s) AND ({run_after} IS NULL OR {run_after} <= %s) AND "
           + _KNOWN,
    "doorbell": "{id} = ANY(%s) AND {status} = %s AND {queue} = ANY(%s) AND ({run_after} IS NULL OR "
                "{run_after} <= %s) AND " + _KNOWN,
    # The status test repeats the cq_task_wait index's condition, for the planner. The function
    # test filters that index's scan: rows no worker here knows are stepped over, not taken.
    "due": "{status} IN (%s, %s) AND ({status} = %s OR {submitted} <= %s) AND ({run_after} IS NULL OR "
           "{run_after} <= %s) AND {queue} = ANY(%s) AND " + _KNOWN + " ORDER BY {priority} DESC, {submitted} "
           "LIMIT %s",
}


def _claim_locked(wanted: str, params: list[Any], worker: str) -> list[Task]:
    """Claim the rows ``_WANTED[wanted]`` finds, skipping those another transaction holds locked,
    in one statement (so with no transaction and COMMIT of its own). ``started`` is the
    database's time, and ``attempt`` counts the claim."""
    connection = connections[router.db_for_write(Task)]
    sql = statements.sql(connection, ("claim", Task, wanted), functools.partial(_claiming_sql, wanted))
    return statements.fetch(Task, connection, sql, [TaskStatus.RUNNING, worker, *params])


def _claiming_sql(wanted: str, quote: Callable[[str], str]) -> str:
    meta = Task._meta
    column = {field.name: quote(str(field.column)) for field in meta.concrete_fields}
    column["id"], table = quote(str(meta.pk.column)), quote(meta.db_table)
    return (f"UPDATE {table} SET {column['status']} = %s, {column['started']} = STATEMENT_TIMESTAMP(), "
            f"{column['worker']} = %s, {column['attempt']} = {column['attempt']} + 1 "
            f"WHERE {column['id']} IN (SELECT {column['id']} FROM {table} WHERE {_WANTED[wanted].format(**column)} "
            f"FOR UPDATE SKIP LOCKED) RETURNING {', '.join(column[field.name] for field in meta.concrete_fields)}")


def _admitted(claimed: list[Task], worker: str) -> list[Task]:
    """Those of the tasks ``worker`` claimed that their concurrency and rate limits let start now
    (the others are back in the queue, see cq.engine.limits). If admitting fails, all are put back: a
    task left RUNNING by a worker that is alive would never be run, nor found lost."""
    if claimed:
        clock.learn(claimed[0].started)  # type: ignore[arg-type]  # a claim always sets it
    try:
        admitted = limits.admit(claimed)
    except Exception:
        try:
            queueing.release(worker, [task.pk for task in claimed])
        except Exception:
            logger.exception("Worker %s could not put back the tasks it claimed.", worker)
        raise
    events.status(admitted)
    return admitted
