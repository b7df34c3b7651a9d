"""A rolling deploy through real cq_runworker processes: a worker whose code lacks a function
leaves its tasks QUEUED (its doorbell and its database poll both pass them by); a worker of the
newer code runs them once, and runs a row queued under a function's old name through its alias."""

from __future__ import annotations

import time

import pytest
from django.utils import timezone

from cq.models import Task, Worker
from cq.transport import doorbell
from cq.web.dashboard import unknown_functions
from tests.helpers import eventually
from tests.testapp import deployed, tasks
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)

#: The old worker's poll looks for tasks QUEUED this long (s): several polls pass in the wait below.
GRACE = 0.5


def test_a_worker_without_the_function_leaves_the_task_queued_and_one_with_it_runs_it_once(
        start_worker, monkeypatch):
    old = start_worker("-c", "1", settings={"CQ_QUEUED_GRACE": GRACE})
    old_row = eventually(lambda: Worker.objects.filter(stopped__isnull=True).first(), 60, "the old worker's row")
    assert tasks.echo.name in old_row.functions and deployed.added.name not in old_row.functions
    assert "tests.testapp.retired.old_name" not in old_row.functions

    added = deployed.added.delay("deploy")
    renamed = Task.objects.create(func_name="tests.testapp.retired.old_name", status=Task.STATUS_QUEUED,
                                  args=["old"], submitted=timezone.now())
    doorbell.ring([renamed.pk])
    known = tasks.echo.delay("still working")  # the old worker runs what it knows meanwhile
    eventually(lambda: Task.objects.get(pk=known.pk).status == Task.STATUS_SUCCESS, 60, "the old worker to run echo")

    # For several of the old worker's polls, both rows stay QUEUED and untouched.
    deadline = time.monotonic() + 8 * GRACE + 2
    while time.monotonic() < deadline:
        for row in Task.objects.filter(pk__in=[added.pk, renamed.pk]):
            assert (row.status, row.attempt, row.worker) == (Task.STATUS_QUEUED, 0, ""), old.output
        time.sleep(0.1)
    waiting = {(row["queue"], row["func_name"]): row["count"] for row in unknown_functions(timezone.now())}
    assert waiting == {("default", deployed.added.name): 1, ("default", "tests.testapp.retired.old_name"): 1}

    monkeypatch.setenv("CQ_TEST_DEPLOYED", "1")  # tests/testapp/tasks.py then imports tests/testapp/deployed.py
    new = start_worker("-c", "1")
    try:
        for task in (added, renamed):
            eventually(lambda task=task: Task.objects.get(pk=task.pk).status == Task.STATUS_SUCCESS, 60,
                       f"the new worker to run {task.func_name}")
    finally:
        assert new.stop() == 0, new.output
        assert old.stop() == 0, old.output
    new_row = Worker.objects.exclude(pk=old_row.pk).get()
    assert {deployed.added.name, deployed.renamed.name, "tests.testapp.retired.old_name"} <= set(new_row.functions)
    for task in (added, renamed):
        row = Task.objects.get(pk=task.pk)
        assert (row.status, row.attempt, row.worker) == (Task.STATUS_SUCCESS, 1, new_row.name)
    assert Record.objects.filter(key="deploy").count() == 1
    assert Record.objects.filter(key="renamed:old").count() == 1
    assert "Traceback" not in old.output + new.output, old.output + new.output
