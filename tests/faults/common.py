"""What the fault tests (tests/faults) share: settings, waiting for outcomes, a locked row.

Worker names are opaque here (they will carry an incarnation id): a process's pid comes from
its ``Worker`` row, never from its name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from django.db import connection
from django.db.models import Count

from cq.models import Task, Worker
from tests.helpers import eventually
from tests.testapp.models import Record

#: Worker settings that find lost doorbells, silent workers and stopping ones quickly.
FAST = {"CQ_QUEUED_GRACE": 1.0, "CQ_HEARTBEAT_INTERVAL": 0.5, "CQ_SHUTDOWN_GRACE": 30.0}
#: FAST, with a sweeper that finds a silent worker's tasks within about two seconds.
SWEEPING = {**FAST, "CQ_HEARTBEAT_INTERVAL": 0.3, "CQ_WORKER_TIMEOUT": 2.0, "CQ_SWEEP_INTERVAL": 0.3,
            "CQ_SCHEDULER_INTERVAL": 0.3, "CQ_SCHEDULER_LEASE": 1.0}


def pid_running(task: Task) -> int:
    """The pid of the process that runs (or ran) ``task``, from its worker's row."""
    return Worker.objects.get(name=Task.objects.get(pk=task.pk).worker).pid


def wait_until(check: Callable[[], Any], timeout: float) -> bool:
    """Like ``eventually`` for a step of the fault's timing, not a promise: ``False`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def final(task: Task, timeout: float, what: str = "") -> Task:
    """``task`` once it has reached a final status; fails after ``timeout`` seconds naming the status it kept."""
    try:
        return eventually(lambda: Task.objects.filter(pk=task.pk, status__in=Task.STATUS_DONE).first(), timeout,
                          what or f"task {task.func_name}{tuple(task.args)} to finish")
    except AssertionError as error:
        status = Task.objects.get(pk=task.pk).get_status_display()
        raise AssertionError(f"{error}; it is still {status}") from None


def outcome(task: Task) -> tuple[str, Any]:
    """``task``'s status as it is now, and its result or its error."""
    task.refresh_from_db()
    return task.get_status_display(), task.result if task.status == Task.STATUS_SUCCESS else task.error


def listing(outcomes: list[tuple[str, Any]]) -> str:
    """Outcomes for an assertion message (a string: pytest cuts the repr of a long list short)."""
    return "; ".join(f"{status}: {said!r}" for status, said in outcomes)


@contextmanager
def row_locked(task: Task) -> Iterator[None]:
    """``task``'s row locked FOR UPDATE by another session (an admin's edit, a report's query) for the block."""
    db = connection.settings_dict
    with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"]) as other:
        other.execute(f"SELECT id FROM {Task._meta.db_table} WHERE id = %s FOR UPDATE", [task.pk])
        try:
            yield
        finally:
            other.rollback()


def running(task: Task) -> Task:
    """Wait until ``task`` runs and its process's heartbeat names it. A RUNNING row alone is not
    enough: a process killed before it told its supervisor that it started the task leaves the
    task claimed but not started, and the supervisor rightly puts it back rather than LOST."""
    eventually(lambda: Worker.objects.filter(current_task=task.pk).exists(), 30,
               f"task {task.func_name} to start running")
    task = Task.objects.get(pk=task.pk)
    assert task.status == Task.STATUS_RUNNING, task.status
    return task


def pid_of(worker_name: str) -> int:
    """The pid of the worker process whose incarnation is named ``worker_name``."""
    return Worker.objects.get(name=worker_name).pid


def finished(tasks_: list[Task], timeout: float = 60) -> None:
    ids = [t.pk for t in tasks_]
    eventually(lambda: not Task.objects.filter(pk__in=ids).exclude(status__in=Task.STATUS_DONE).exists(),
               timeout, f"{len(ids)} tasks to finish")


def assert_ran_once_each(keys: list[str]) -> None:
    counts = dict(Record.objects.filter(key__in=keys).values("key").annotate(n=Count("id")).values_list("key", "n"))
    missing = [k for k in keys if k not in counts]
    twice = {k: n for k, n in counts.items() if n != 1}
    assert not missing and not twice, f"{len(missing)} never ran, {len(twice)} ran more than once"
