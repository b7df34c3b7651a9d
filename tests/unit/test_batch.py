"""Quick atomic tasks claimed together run as one batch, in one transaction, on PostgreSQL.

Each outcome below is the same with or without batches (SQLite runs each task in its own
transaction); on PostgreSQL the tests also check that the tasks did share one batch.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cq.models import Task
from tests.testapp import tasks
from tests.testapp.models import Note, Record

pytestmark = pytest.mark.django_db(transaction=True)

BATCHES = connection.vendor == "postgresql"


@pytest.fixture
def worker(worker, monkeypatch):
    # Tasks under a second count as quick here, however loaded the machine running the tests.
    monkeypatch.setattr("cq.workers.worker.QUICK", 1.0)
    tasks.noop.delay()
    worker.run_once(0)  # a quick task: the worker now claims several doorbells at a time
    worker.run_once(0)  # and its periodic look in the database is done
    return worker


def statuses(created: list[Task]) -> list[str]:
    by_pk = dict(Task.objects.filter(pk__in=[t.pk for t in created]).values_list("pk", "status"))
    return [by_pk[t.pk] for t in created]


def run_together(worker, count: int) -> list[dict]:
    """Run the ``count`` waiting tasks in one step of ``worker``; returns its queries."""
    with CaptureQueriesContext(connection) as captured:
        assert worker.run_once(0) == count
    if BATCHES:  # one claim, then one transaction for all
        assert [q["sql"] for q in captured.captured_queries].count("COMMIT") == 1
    return captured.captured_queries


def test_a_failing_task_rolls_back_its_own_writes_and_no_other(worker):
    created = tasks.writes_then_maybe_fails_atomic.delay_many([("a", False), ("b", True), ("c", False)])
    run_together(worker, 3)
    assert statuses(created) == ["S", "F", "S"]
    assert sorted(Record.objects.values_list("key", flat=True)) == ["a", "c"]
    assert Task.objects.get(pk=created[1].pk).error == "after writing"


def test_a_dangling_foreign_key_fails_its_own_task_not_the_batch(worker):
    from django.db import transaction

    with transaction.atomic():  # the three doorbells ring together, at the commit
        created = [tasks.noop.delay(), tasks.leaves_dangling_reference.delay(), tasks.noop.delay()]
    run_together(worker, 3)
    assert statuses(created) == ["S", "F", "S"]
    assert Task.objects.get(pk=created[1].pk).exception == "django.db.utils.IntegrityError"
    assert not Note.objects.exists()


def test_a_task_revoked_while_its_batch_runs_keeps_revoked(worker):
    from django.db import transaction

    with transaction.atomic():
        created = [tasks.revokes_next_noop.delay(), tasks.noop.delay(), tasks.echo.delay(1)]
    run_together(worker, 3)
    assert statuses(created) == ["S", "E", "S"]
    assert Task.objects.get(pk=created[2].pk).result == [1]


def test_results_of_a_batch_are_each_tasks_own(worker):
    created = tasks.add.delay_many([(i, i) for i in range(6)])
    queries = run_together(worker, 6)
    assert [t.wait().result for t in created] == [2 * i for i in range(6)]
    if BATCHES:  # the six outcomes are one UPDATE
        assert sum(q["sql"].startswith("UPDATE") for q in queries) == 2  # the claim, the outcomes


@pytest.mark.postgres  # batches run on PostgreSQL only: `make test` runs this in its PostgreSQL pass
def test_a_batch_whose_transaction_fails_records_each_outcome_on_its_own(worker, caplog):
    """The batch's connection dies in its second task. That task's error is its own (FAILURE); the
    first task wrote a Record in the batch's transaction, now rolled back, so it ends LOST; the
    third made no query, so its SUCCESS is simply recorded again."""
    from django.db import transaction

    with transaction.atomic():
        created = [tasks.counts_run.delay("rolled back"), tasks.drops_database_connection.delay(),
                   tasks.echo.delay(3)]
    assert worker.run_once(0) == 3
    assert statuses(created) == ["L", "F", "S"]
    assert "could not commit the outcome of 2 task(s); recording each on its own" in caplog.text
    assert "transaction of its outcome did not commit" in Task.objects.get(pk=created[0].pk).error
    assert not Record.objects.filter(key="rolled back").exists()
    assert "terminating connection" in Task.objects.get(pk=created[1].pk).error


def statements_inside_transactions(queries: list[dict]) -> list[str]:
    """The statements run between a BEGIN and its COMMIT or ROLLBACK (Django logs both, even for a
    block that sent nothing to the database)."""
    opened, inside = False, []
    for query in queries:
        if query["sql"] in ("BEGIN", "COMMIT", "ROLLBACK"):
            opened = query["sql"] == "BEGIN"
        elif opened:
            inside.append(query["sql"])
    return inside


def test_a_batch_of_tasks_that_made_no_query_needs_no_transaction(worker):
    created = tasks.add.delay_many([(i, i) for i in range(4)])
    queries = run_together(worker, 4)
    assert [t.wait().result for t in created] == [0, 2, 4, 6]
    assert statements_inside_transactions(queries) == []  # the claim, then the four outcomes in one UPDATE


@pytest.mark.postgres  # batches run on PostgreSQL only
def test_a_batched_run_with_a_task_chained_after_it_meanwhile_launches_it(worker):
    from cq import registry
    from cq.engine import execution
    from cq.engine.transitions import claims

    created = tasks.add.delay_many([(1, 1), (2, 2)])
    claimed = claims.claim([str(t.pk) for t in created], "test-worker", ["default"])
    # After the claim, the second gets a chained task: its claimed row says it has none.
    following = Task.objects.get(pk=created[1].pk).chain(tasks.noop)
    with execution.batch() as running:
        for task in claimed:
            running.run(task, registry.require(task.func_name))
    assert [t.wait().status for t in created] == [Task.STATUS_SUCCESS] * 2
    assert Task.objects.get(pk=following.pk).status == Task.STATUS_QUEUED  # launched by the usual path
