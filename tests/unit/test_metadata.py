"""Metadata of a project's own on tasks (fields), progress, re-running a task, priority."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from cq import task
from cq.exceptions import InvalidTask
from cq.models import Task
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)


def test_fields_come_from_the_decorator_the_call_and_the_running_task(drain):
    queued = tasks.updates_fields.using(fields={"customer": 42}).delay_args(kwargs={"stage": "sent"})
    assert Task.objects.get(pk=queued.pk).fields == {"customer": 42}  # stored at enqueue
    other = tasks.reports_progress.delay_args((1, "open"))
    assert Task.objects.get(pk=other.pk).fields == {"kind": "report"}  # the decorator's
    Record.objects.create(key="open")
    assert drain() == 2
    queued.refresh_from_db()
    assert queued.fields == {"customer": 42, "stage": "sent"}
    assert queued.result == ["customer", "stage"]
    other.refresh_from_db()
    assert (other.status, other.error, other.fields) == ("S", None, {"kind": "report", "steps_done": 1})
    # A plain ORM filter finds them.
    assert list(Task.objects.filter(fields__customer=42).exclude(status=Task.STATUS_REVOKED)) == [queued]


def test_bad_fields_and_priorities_are_refused_where_they_are_given():
    with pytest.raises(InvalidTask, match="fields= takes a dict"):
        tasks.echo.delay_args(fields=["a"])
    with pytest.raises(InvalidTask, match="cannot set status: cq's own column"):
        tasks.echo.delay_args(fields={"status": "S"})
    with pytest.raises(InvalidTask, match="not JSON-serialisable"):
        tasks.echo.using(fields={"when": object()}).delay()
    with pytest.raises(InvalidTask, match="priority= takes a whole number from -100 to 100"):
        tasks.echo.delay_args(priority=101)
    with pytest.raises(InvalidTask, match="priority="):
        tasks.echo.delay_many([(1,)], priority="high")
    assert not Task.objects.exists()
    with pytest.raises(ImproperlyConfigured, match="priority= takes a whole number"):
        task("bad-priority", priority=1.5)(lambda cqt: None)
    with pytest.raises(ImproperlyConfigured, match="fields= takes a dict"):
        task("bad-fields", fields="x")(lambda cqt: None)


def test_progress_is_checked_and_works_inline():
    inline = tasks.reports_progress.__wrapped__  # the plain function, given an inline cqt below
    assert callable(inline)
    task_ = Task(func_name="x")
    with pytest.raises(InvalidTask, match="numbers of 0 or more"):
        task_.progress(-1)
    with pytest.raises(InvalidTask, match="message string"):
        task_.progress(1, 2, message=3)
    task_.progress(1, 4)
    assert task_.progress == {"current": 1, "total": 4, "percent": 25.0, "message": None}
    Record.objects.create(key="inline")
    assert tasks.reports_progress(2, "inline") == 2  # a plain call: progress kept in memory


def test_a_parent_waiting_on_subtasks_shows_how_many_finished(drain):
    parent = tasks.spawns_subtask_returns_own.delay()
    assert drain() >= 1
    parent.refresh_from_db()
    assert parent.status == Task.STATUS_SUCCESS
    assert parent.tree_progress == {}  # it no longer waits: its own (none reported)
    waiting = Task.objects.create(func_name=tasks.noop.name, status=Task.STATUS_WAITING)
    Task.objects.create(func_name=tasks.noop.name, parent=waiting, status=Task.STATUS_SUCCESS)
    Task.objects.create(func_name=tasks.noop.name, parent=waiting, status=Task.STATUS_QUEUED)
    assert waiting.tree_progress == {"current": 1, "total": 2, "percent": 50.0, "message": None}


def test_rerun_queues_the_same_call_again(drain):
    first = tasks.add.using(fields={"batch": 7}, priority=5).delay(2, 3)
    drain()
    again = first.wait().rerun()
    assert again.pk != first.pk
    assert (again.func_name, again.args, again.kwargs, again.fields, again.priority, again.status) == (
        first.func_name, [2, 3], {}, {"batch": 7}, 5, Task.STATUS_QUEUED)
    drain()
    assert again.wait().result == 5


def test_higher_priority_runs_first_through_doorbells_and_the_database(worker):
    from django.db import transaction

    from tests.testapp.models import Record

    with transaction.atomic():  # their doorbells ring together: each score says its priority
        created = [tasks.counts_run.using(priority=p).delay(f"p{p}") for p in (0, -5, 10, 3)]
    # An idle worker takes its first doorbell alone, then the rest at once; either way,
    # the highest first.
    while worker.run_once(0):
        pass
    order = list(Record.objects.order_by("id").values_list("key", flat=True))
    assert order == ["p10", "p3", "p0", "p-5"]
    assert {t.wait().status for t in created} == {Task.STATUS_SUCCESS}


def test_the_databases_look_for_work_takes_the_highest_priority_first():
    from cq.engine.transitions import claims

    low = tasks.echo.using(priority=-1).delay("low")
    high = tasks.echo.using(priority=7).delay("high")
    assert [t.pk for t in claims.claim_due("test", ["default"], 0, limit=1)] == [high.pk]
    assert [t.pk for t in claims.claim_due("test", ["default"], 0, limit=1)] == [low.pk]


def test_a_progress_message_holding_nul_is_stored_escaped_and_numbers_must_be_finite():
    pending = tasks.echo.delay_args(submit=False)
    pending.progress(1, 2, "half\x00way")  # not running: written at once
    assert Task.objects.get(pk=pending.pk).progress["message"] == "half\\x00way"
    for current, total in ((float("nan"), 2), (1, float("inf")), (10 ** 400, None)):
        with pytest.raises(InvalidTask, match="finite numbers of 0 or more"):
            pending.progress(current, total)
    assert Task.objects.get(pk=pending.pk).progress["current"] == 1


def test_fields_for_columns_of_the_projects_model_refuse_nul_too(monkeypatch):
    from cq.engine import metadata

    # A task model with a text column of its own (CQ_TASK_MODEL), as own_columns() reports it.
    monkeypatch.setattr(metadata, "own_columns", lambda: {"owner_name": "owner_name"})
    row = Task(func_name="x")
    with pytest.raises(InvalidTask, match="column 'owner_name' of task 'x'.*NUL"):
        metadata.apply_fields(row, {"owner_name": "a\x00b"})
    with pytest.raises(InvalidTask, match="NUL character"):
        metadata.apply_fields(row, {"note": "a\x00b"})
    assert row.fields == {}
