"""Plain calls and CQ_SERIAL run task functions inline, subtasks and chains included."""

from __future__ import annotations

import pytest

from cq.exceptions import InvalidTask
from cq.models import Task
from tests.testapp import tasks
from tests.testapp.models import Record


def test_task_is_still_a_function():
    assert tasks.echo() == "a"
    assert tasks.echo.__name__ == "echo"
    assert callable(tasks.echo.delay)


@pytest.mark.django_db
def test_plain_call_writes_no_row():
    tasks.echo()
    assert not Task.objects.exists()


def test_plain_call_runs_subtasks_and_takes_returned_results():
    assert tasks.spawns_subtask_returns_own() == "d"
    assert tasks.returns_subtask_result() == "a"
    assert tasks.returns_subsubtask_result() == "a"
    assert tasks.subtask_then_chain() == 5


def test_plain_call_raises_the_task_error():
    with pytest.raises(ValueError, match="boom"):
        tasks.failing("boom")


@pytest.mark.django_db
def test_plain_call_runs_errorbacks_then_raises():
    with pytest.raises(RuntimeError):
        tasks.failing_with_errorback()
    assert Record.objects.get().key.startswith("errback:tests.testapp.tasks.failing_with_errorback:RuntimeError")


@pytest.mark.django_db
def test_serial_mode_runs_delay_inline(settings):
    settings.CQ_SERIAL = True
    task = tasks.logs_with_subtask.delay()
    assert (task.status, task.result) == (Task.STATUS_SUCCESS, "a")
    assert task.format_logs() == "First log from task_a.\nLog from task_b.\nSecond log from task_a."
    assert task.wait() is task
    assert not Task.objects.exists()


def test_serial_mode_refuses_options(settings):
    settings.CQ_SERIAL = True
    with pytest.raises(InvalidTask, match="CQ_SERIAL"):
        tasks.echo.delay_args(submit=False)
