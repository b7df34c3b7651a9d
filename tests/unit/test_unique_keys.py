"""Unique tasks: ``unique_key`` keeps one active task per key (the INSERT in cq.engine.dispatch)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from cq.exceptions import InvalidTask
from cq.models import Task
from cq.transport import doorbell
from tests.helpers import eventually
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)


def doorbells() -> list[str]:
    """The task ids whose doorbells are waiting (taking them)."""
    return doorbell.listen(["default"], 100, 0)


def test_unique_key_returns_the_active_task_instead_of_queueing_a_second():
    first = tasks.echo.delay_args((1,), unique_key="invoice:42")
    second = tasks.echo.delay_args((2,), unique_key="invoice:42")
    assert second.pk == first.pk and second.args == [1]
    assert Task.objects.count() == 1
    assert doorbells() == [str(first.pk)]
    other = tasks.echo.delay_args((3,), unique_key="invoice:43")
    assert other.pk != first.pk


def test_unique_key_is_free_again_once_its_task_finished(drain):
    pending = tasks.echo.delay_args((1,), unique_key="k", submit=False)
    assert tasks.echo.delay_args((2,), unique_key="k").pk == pending.pk  # a pending task holds it too
    pending.submit()
    assert drain() == 1 and pending.wait().status == Task.STATUS_SUCCESS
    failing = tasks.failing.delay_args(unique_key="k")
    assert failing.pk != pending.pk
    assert drain() == 1 and failing.wait().status == Task.STATUS_FAILURE
    again = tasks.echo.delay_args((3,), unique_key="k")
    assert again.pk not in {pending.pk, failing.pk}
    assert again.status == Task.STATUS_QUEUED


def test_unique_key_inside_the_callers_transaction_keeps_the_transaction_usable():
    with transaction.atomic():
        first = tasks.echo.delay_args((1,), unique_key="k")
        assert tasks.echo.delay_args((2,), unique_key="k").pk == first.pk
        Record.objects.create(key="after the refused insert")
    assert Task.objects.count() == 1 and Record.objects.count() == 1
    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.echo.delay_args((3,), unique_key="rolled back")
        raise RuntimeError
    assert not Task.objects.filter(unique_key="rolled back").exists()


def test_concurrent_enqueues_of_one_unique_key_make_one_task():
    threads_count, keys = 6, [f"race:{i}" for i in range(5)]
    barrier = threading.Barrier(threads_count)
    got: list[list] = [[] for _ in range(threads_count)]
    errors: list[BaseException] = []

    def enqueue(i: int) -> None:
        try:
            for key in keys:
                barrier.wait(30)  # every thread inserts this key at the same moment
                got[i].append(tasks.echo.delay_args((i,), unique_key=key).pk)
        except BaseException as error:
            errors.append(error)
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=enqueue, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    for k, key in enumerate(keys):
        rows = list(Task.objects.filter(unique_key=key).values_list("pk", flat=True))
        assert len(rows) == 1
        assert {got[i][k] for i in range(threads_count)} == {rows[0]}


def another_session_waits_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # else a transaction sees one snapshot of the stats
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0] > 0


def test_unique_key_insert_waits_for_an_uncommitted_twin_and_returns_it():
    outcome: dict = {}

    def enqueue() -> None:
        try:
            outcome["task"] = tasks.echo.delay_args((2,), unique_key="twin")
        except BaseException as error:
            outcome["error"] = error
        finally:
            connection.close()

    thread = threading.Thread(target=enqueue)
    with transaction.atomic():
        first = tasks.echo.delay_args((1,), unique_key="twin")
        thread.start()
        # The other insert cannot be decided before this transaction ends: on PostgreSQL it waits
        # for it on the unique index; SQLite lets one transaction write at a time.
        if connection.vendor == "postgresql":
            eventually(another_session_waits_on_a_lock, 30, "the second insert to wait for the first")
    thread.join(60)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["task"].pk == first.pk
    assert Task.objects.count() == 1


def test_bad_unique_keys_are_refused_and_nothing_is_written():
    for key in (42, "", "x" * 256):
        with pytest.raises(InvalidTask, match="unique_key= takes a string"):
            tasks.echo.delay_args(unique_key=key)
    parent = tasks.echo.delay_args(submit=False)
    with pytest.raises(InvalidTask, match="for top-level tasks"):
        parent.subtask(tasks.echo, unique_key="child")
    with pytest.raises(InvalidTask, match="delay_many\\(\\) takes no unique_key"):
        tasks.echo.delay_many([(1,), (2,)], unique_key="many")
    assert list(Task.objects.values_list("pk", flat=True)) == [parent.pk]


def test_unique_key_under_cq_serial_runs_inline(settings):
    settings.CQ_SERIAL = True
    assert tasks.echo.delay_args((1,), unique_key="k").result == [1]
    assert tasks.echo.delay_args((2,), unique_key="k").result == [2]
    assert not Task.objects.exists()
