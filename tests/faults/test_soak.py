"""Soak: thousands of tasks with subtasks, chains and failures while worker processes are killed,
and, in the second test, while the network to the database is cut again and again.

Runs with `make test-soak`. CQ_SOAK_TASKS sets the size (10,000 by default); the test with
partitions runs min(CQ_SOAK_TASKS, 3,000) unless CQ_SOAK_PARTITION_TASKS says otherwise, to stay
near 2-3 minutes. Each reports what it counted and fails if any task was lost silently (left
unfinished), ran twice, or kept its atomic write without succeeding (or the reverse).
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.db.models.functions import Now

from cq.models import Task, Worker
from tests.faults.proxy import PgProxy
from tests.helpers import WorkerProcess
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = [pytest.mark.soak, pytest.mark.django_db(transaction=True)]

SIZE = int(os.environ.get("CQ_SOAK_TASKS", "10000"))
PARTITION_SIZE = int(os.environ.get("CQ_SOAK_PARTITION_TASKS", str(min(SIZE, 3000))))
KILL_EVERY = 3.0
#: A partition starts this often, and lasts between these many seconds (well under CQ_WORKER_TIMEOUT).
PARTITION_EVERY = 5.0
PARTITION_SECONDS = (0.5, 2.0)
#: A task RUNNING this long under a worker that beats but runs something else was abandoned.
ABANDONED_AFTER = 15.0
#: The soak gives up when no task has finished for this long (a task stuck for good), or after DEADLINE.
STALL = 60.0
DEADLINE = 900.0
WORKER_SETTINGS = {"CQ_QUEUED_GRACE": 2.0, "CQ_HEARTBEAT_INTERVAL": 1.0}


def test_soak_with_killed_workers(start_worker):
    workers = [start_worker("-c", "1", settings=WORKER_SETTINGS) for _ in range(2)]
    soak(workers, SIZE)


@pytest.mark.postgres
def test_soak_with_killed_workers_and_database_partitions(start_worker):
    db = settings.DATABASES["default"]
    # The workers (supervisors and their processes) reach PostgreSQL through the proxy; the test does not.
    with PgProxy(upstream=(db["HOST"], int(db["PORT"]))) as proxy:
        workers = [start_worker("-c", "1", settings=WORKER_SETTINGS, pg_port=proxy.port) for _ in range(2)]
        soak(workers, PARTITION_SIZE, proxy)
        assert proxy.partitions and proxy.errors == [], proxy.errors


def soak(workers: list[WorkerProcess], size: int, proxy: PgProxy | None = None) -> None:
    rng = random.Random(20261122)
    # About one top-level task in ten spawns a subtask and a chained task; one in twenty fails.
    top_level = int(size / 1.2)
    started = time.monotonic()
    for batch in range(0, top_level, 500):
        with transaction.atomic():
            for i in range(batch, min(batch + 500, top_level)):
                kind = tasks.soak_atomic if i // 50 % 2 else tasks.soak  # in runs, which batch
                kind.delay(f"t{i}", rng.random() < 0.1, rng.random() < 0.05)
    kills = partitions = 0
    next_kill = time.monotonic() + KILL_EVERY
    next_partition = time.monotonic() + PARTITION_EVERY
    active = Task.objects.filter(status__in="QRWY")
    left, progressed = active.count(), time.monotonic()
    abandoned: set[str] = set()
    next_look = time.monotonic() + 2
    while left:
        now = time.monotonic()
        assert now - started < DEADLINE, f"the soak did not finish in {DEADLINE / 60:.0f} minutes"
        if now - progressed > STALL:
            break  # stuck: the checks below say what is left
        if now >= next_kill:
            kills += kill_one(workers)
            next_kill = now + KILL_EVERY
        if proxy is not None and now >= next_partition:
            proxy.partition(rng.uniform(*PARTITION_SECONDS))
            partitions += 1
            next_partition = now + PARTITION_EVERY
        if now >= next_look:
            abandoned |= abandoned_now()
            next_look = now + 2
        time.sleep(0.1)
        if (now_left := active.count()) < left:
            left, progressed = now_left, time.monotonic()
    elapsed = time.monotonic() - started
    if proxy is not None:
        proxy.heal()
    codes = [w.stop() for w in workers]

    counts = dict(Task.objects.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
    runs = Record.objects.values("key").annotate(n=Count("id"))
    duplicated = runs.filter(n__gt=1).count()
    # A task chained after one that failed or was lost stays PENDING: accounted for, never run.
    # So does one whose parent was lost or failed before it could be launched.
    never_launched = (Q(previous__status__in=Task.STATUS_ERROR) | Q(previous__status=Task.STATUS_PENDING)
                      | Q(parent__status__in=Task.STATUS_ERROR))
    leftovers = Task.objects.exclude(status__in=Task.STATUS_DONE).exclude(
        Q(status=Task.STATUS_PENDING) & never_launched)
    unaccounted = leftovers.count()
    details = list(leftovers.values_list("status", "func_name", "parent__status", "previous__status")[:10])
    faults = f"{kills} worker processes killed" + (
        f", {partitions} database partitions ({proxy.refused} connections refused)" if proxy else "")
    print(f"\nsoak: {sum(counts.values())} tasks in {elapsed:.0f} s, {faults}; by status {counts}; "
          f"lost silently {unaccounted} (by status {dict(leftovers.values_list('status').annotate(n=Count('id')))}); "
          f"ran twice {duplicated}")
    # An atomic task's Record commits with its outcome: kept if and only if its own run succeeded
    # (SUCCESS, or INCOMPLETE: it succeeded, a subtask of it did not). Those left unfinished are
    # counted above (a WAITING one has its Record).
    recorded = set(Record.objects.values_list("key", flat=True))
    finished = Task.objects.filter(func_name=tasks.soak_atomic.name, status__in=Task.STATUS_DONE)
    mismatched = [(args[0], status, (error or "")[:100]) for args, status, error in
                  finished.values_list("args", "status", "error")
                  if (args[0] in recorded) != (status in {Task.STATUS_SUCCESS, Task.STATUS_INCOMPLETE})]
    in_batches = Task.objects.filter(status=Task.STATUS_LOST, error__contains="before the outcome was committed")
    print(f"soak: LOST with a killed batch, having run but not committed: {in_batches.count()}")
    print(f"soak: atomic tasks whose Record disagrees with their final status: {len(mismatched)} {mismatched[:3]}")
    lost = Task.objects.filter(status=Task.STATUS_LOST).values_list("error", flat=True)
    print(f"soak: LOST, by reason: {Counter(_reason(error) for error in lost)}")
    print(f"soak: RUNNING over {ABANDONED_AFTER:.0f} s under a live worker running something else: {len(abandoned)}")
    if proxy is not None:
        # Only one task in twenty fails on purpose; the others ended FAILURE on a database error
        # (their own query's, which is fair, or cq's, which is not).
        other = Task.objects.filter(status=Task.STATUS_FAILURE).exclude(error__contains="fails on purpose")
        print(f"soak: FAILURE for another reason than the task's own: {other.count()}, e.g. "
              f"{[e[:120] for e in other.values_list('error', flat=True)[:3]]}")
    assert unaccounted == 0, details
    assert duplicated == 0
    assert mismatched == [], mismatched[:10]
    assert codes == [0] * len(workers)
    # A row never stays RUNNING under a live worker that is not running it.
    assert not abandoned, (f"{len(abandoned)} task(s) stayed RUNNING over {ABANDONED_AFTER:.0f} s under a worker "
                           f"that was beating and running something else, e.g. {sorted(abandoned)[:3]}")


def _reason(error: str) -> str:
    """An error message without the names and numbers that vary."""
    return re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|[\w.-]+:\d+(:[\w-]+)?|\d+(\.\d+)?", "#", error or "")[:100]


def abandoned_now() -> set[str]:
    """Tasks RUNNING for ABANDONED_AFTER seconds or more under a worker that beat in the last
    3 s and says it runs another task (or none), by the database's clock."""
    alive = Worker.objects.filter(stopped__isnull=True, last_heartbeat__gte=Now() - timedelta(seconds=3))
    running = dict(alive.values_list("name", "current_task"))
    stale = Task.objects.filter(status=Task.STATUS_RUNNING, worker__in=list(running),
                                started__lt=Now() - timedelta(seconds=ABANDONED_AFTER))
    return {str(pk) for pk, worker in stale.values_list("pk", "worker") if running[worker] != pk}


def kill_one(workers: list[WorkerProcess]) -> int:
    """SIGKILL one worker process that is running a task; returns how many were killed (0 or 1).
    A row may outlive its process (a supervisor cut off from the database could not record the
    exit), so only a live child of one of our supervisors is killed."""
    supervisors = {w.process.pid for w in workers}
    busy = Worker.objects.filter(stopped__isnull=True, current_task__isnull=False).values_list("pid", flat=True)
    victims = [pid for pid in busy if parent_of(pid) in supervisors]
    if not victims:
        return 0
    try:
        os.kill(random.choice(victims), signal.SIGKILL)
    except ProcessLookupError:
        return 0
    return 1


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state: the parent's pid
