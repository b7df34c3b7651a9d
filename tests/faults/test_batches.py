"""Faults of issue 14 in batches: PostgreSQL runs quick atomic tasks claimed together in one
transaction (cq.engine.execution.Batch), so one task's trouble could end every task of its batch.
Injected from outside into real ``cq_runworker`` processes.

Each test reproduces its fault on the worker as it was when the issue was opened, and asserts
what the README promises instead: one task's failure is its own. The numbers are the items of
the issue.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from django.db import connection, transaction

from cq.canvas import group
from cq.models import Task
from cq.transport import doorbell
from tests.faults.common import FAST, finished, listing, outcome, row_locked, wait_until
from tests.testapp import tasks

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@contextmanager
def doorbells_held() -> Iterator[None]:
    """Tasks queued in the block ring no doorbell: the test rings them itself."""
    with mock.patch.object(doorbell, "ring", lambda *args, **kwargs: None):
        yield


def ring_as_a_batch(task_ids: list[Any], queue: str = "default") -> None:
    """Ring ``task_ids`` behind 10 no-op tasks, in one send. An idle worker takes its first
    doorbell alone, and several at once only after a quick task: the no-ops make it quick."""
    with doorbells_held():
        noops = tasks.noop.delay_many([()] * 10, queue=queue)
    doorbell.ring([*(t.pk for t in noops), *task_ids], queue)


def claimed_together(task_ids: list[Any]) -> int:
    """The most of ``task_ids`` claimed in one UPDATE (they share their ``started``)."""
    return max(Counter(Task.objects.filter(pk__in=task_ids).values_list("started", flat=True)).values())


def claimed_with_others(task: Task) -> bool:
    """Whether another task was claimed in the same UPDATE as ``task`` (they share their ``started``)."""
    started = Task.objects.filter(pk=task.pk).values_list("started", flat=True).get()
    return Task.objects.filter(started=started).exclude(pk=task.pk).exists()


@pytest.mark.parametrize("kind", ["nan", "inf", "nul"])
def test_a_result_postgresql_cannot_store_fails_its_own_task_not_its_batch(start_worker, kind):
    """8a. A result JSON accepts and jsonb refuses (NaN, Infinity, a NUL character): the batch's
    UPDATE of deferred outcomes fails, and with it the whole batch's transaction."""
    worker = start_worker("-c", "1", settings=FAST)
    kinds = ["ok", "ok", kind, "ok", "ok"]
    for _ in range(3):  # until the worker took the bad one in a batch
        with doorbells_held():
            created = tasks.returns_value.delay_many([(k, n) for n, k in enumerate(kinds)])
        ring_as_a_batch([t.pk for t in created])
        finished(created, 10)
        outcomes = [outcome(t) for t in created]
        assert [status for status, _ in outcomes] == ["Success", "Success", "Failure", "Success", "Success"], (
            listing(outcomes))
        assert [result for _, result in outcomes[:2] + outcomes[3:]] == ["ok 0", "ok 1", "ok 3", "ok 4"], (
            listing(outcomes))
        assert outcomes[2][1], listing(outcomes)
        if claimed_with_others(created[2]):
            break
    else:
        raise AssertionError(f"the fault was not injected: the task returning {kind} never ran in a batch")
    assert worker.stop() == 0, worker.output


def waiting_for_locks() -> int:
    """How many sessions on the test database wait for a lock now."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0]


def groups_settled_by_batches(queues: list[str]) -> tuple[list[Task], bool]:
    """20 groups of 4 members, members 0 and 2 on ``queues[0]``, 1 and 3 on ``queues[1]``, run by
    one worker each; returns the groups once finished, and whether each worker took 20 of its
    members in one batch."""
    with doorbells_held():  # they ring below
        groups = [group([tasks.power.s(g, i).set(queue=queues[i % 2]) for i in range(4)]).delay() for g in range(20)]
    members = {g.pk: list(Task.objects.filter(parent=g.pk).order_by("args").values_list("pk", flat=True))
               for g in groups}
    # The table's rows in an order of their own, as updates and maintenance leave them: the even
    # members' rows by group, the odd members' rows in the groups' reverse order. A batch locks its
    # groups in the order of its members' rows (its UPDATE ... RETURNING scans the table), so the
    # worker of odd members locks them in the order opposite to the even members' worker's.
    table = Task._meta.db_table
    member, number = "(args->>1)::int", "(args->>0)::int"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL lock_timeout = '10s'")  # behind the workers' short transactions
        cursor.execute(f"CREATE INDEX cqtest_order ON {table} "
                       f"(({member} % 2), (CASE WHEN {member} % 2 = 0 THEN {number} ELSE -{number} END))")
        cursor.execute(f"CLUSTER {table} USING cqtest_order")
        cursor.execute("DROP INDEX cqtest_order")
    # Left alone, two such batches deadlock only if their commits overlap (about half the runs
    # here). So the middle group's row is held from outside while both reach it, each holding
    # the groups it locked before; let go, whichever takes it next needs one the other holds.
    others = Task.objects.filter(parent__in=[g.pk for g in groups if g != groups[10]]).exclude(
        status__in=Task.STATUS_DONE)
    with row_locked(groups[10]):
        for parity, queue in enumerate(queues):
            ring_as_a_batch([members[g.pk][i] for i in range(parity, 4, 2) for g in groups], queue)
        # A step of the fault's timing, not a promise: workers that wait for no row are fine too.
        wait_until(lambda: waiting_for_locks() >= 2 or not others.exists(), 3)
    finished(groups, 10)
    batched = all(claimed_together([members[g.pk][i] for i in range(parity, 4, 2) for g in groups]) >= 10
                  for parity in range(2))
    return groups, batched


def test_batches_settling_the_same_groups_in_other_orders_do_not_lose_their_tasks(start_worker):
    """8b. Each member of a group that finishes in a batch locks its group's row until the batch
    commits. Two worker processes whose batches hold members of the same groups lock those rows in
    other orders, and may deadlock: PostgreSQL then aborts one batch, whose tasks end LOST."""
    queues = ["evens", "odds"]  # a worker for the even members of every group, one for the odd ones
    workers = [start_worker("-c", "1", "--queues", queue, settings=FAST) for queue in queues]
    for _ in range(3):  # until both workers ran their members in batches
        groups, batched = groups_settled_by_batches(queues)
        lost = Task.objects.filter(parent__in=[g.pk for g in groups], status=Task.STATUS_LOST)
        outcomes = Counter(Task.objects.filter(pk__in=[g.pk for g in groups]).values_list("status", flat=True))
        assert outcomes == {Task.STATUS_SUCCESS: 20}, (
            f"groups: {dict(outcomes)}; {lost.count()} members LOST, as {lost.first() and lost.first().error!r}")
        if batched:
            break
    for worker in workers:
        assert worker.stop() == 0, worker.output
