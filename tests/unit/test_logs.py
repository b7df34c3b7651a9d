"""cqt.log(): lines roll up to the top-level task; publish controls when receivers hear them."""

from __future__ import annotations

import pytest

from cq.models import Task
from cq.signals import task_log
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def test_logs_are_stored_on_the_task(drain):
    task = tasks.logs_alone.delay()
    drain()
    task.wait()
    assert task.format_logs() == "Log from task_b."
    assert task.logs[0]["level"] == "INFO"


@pytest.mark.parametrize("publish", [True, False])
def test_logs_of_subtasks_roll_up_to_the_top_level_task_in_order(drain, publish):
    task = tasks.logs_with_subtask.delay(publish=publish)
    drain()
    task.wait()
    assert task.status == Task.STATUS_SUCCESS
    assert task.format_logs() == "First log from task_a.\nSecond log from task_a.\nLog from task_b."
    child = task.subtasks.get()
    assert [record.get("origin") for record in task.logs] == [None, None, str(child.pk)]


def test_published_lines_reach_receivers_at_once_and_held_lines_with_the_next(drain):
    heard: list[list[str]] = []

    def receiver(sender, task, records, **kwargs):
        heard.append([record["message"] for record in records])

    task_log.connect(receiver)
    try:
        task = tasks.logs_with_subtask.delay(publish=False)
        drain()
    finally:
        task_log.disconnect(receiver)
    assert task.wait().status == Task.STATUS_SUCCESS
    # Held-back lines are published together when the task's outcome is written.
    assert heard == [["First log from task_a.", "Second log from task_a."], ["Log from task_b."]]


def test_log_limit_keeps_the_latest_lines(drain):
    task = tasks.echo.delay_args(submit=False)
    for i in range(5):
        task.log(f"line {i}", limit=3)
    task.refresh_from_db()
    assert task.format_logs() == "line 2\nline 3\nline 4"


def test_a_line_holding_nul_is_stored_escaped():
    pending = tasks.echo.delay_args(submit=False)
    pending.log("before\x00after")  # not running: written at once
    assert Task.objects.get(pk=pending.pk).format_logs() == "before\\x00after"
