"""The sweeper and the maintenance commands built on it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from cq.models import Task, Worker
from cq.scheduling import sweeper
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def running_on(worker: str, task: Task, minutes_ago: float = 5) -> Task:
    Task.objects.filter(pk=task.pk).update(status=Task.STATUS_RUNNING, worker=worker,
                                           started=timezone.now() - timedelta(minutes=minutes_ago))
    task.refresh_from_db()
    return task


def test_task_of_a_silent_worker_becomes_lost_and_its_parent_incomplete(worker):
    parent = tasks.returns_subtask_result.delay()
    worker.run_once(0)
    child = running_on("ghost:1", Task.objects.get(parent=parent))
    Worker.objects.create(name="ghost:1", host="ghost", pid=1, last_heartbeat=timezone.now() - timedelta(minutes=5))
    assert sweeper.find_lost() == 1
    child.refresh_from_db()
    parent.refresh_from_db()
    assert (child.status, child.exception) == (Task.STATUS_LOST, "cq.exceptions.TaskLost")
    assert "ghost:1 stopped" in child.error
    assert parent.status == Task.STATUS_INCOMPLETE


def test_task_of_a_beating_worker_is_left_alone():
    task = running_on("alive:1", tasks.echo.delay())
    Worker.objects.create(name="alive:1", host="alive", pid=1)
    assert sweeper.find_lost() == 0
    task.refresh_from_db()
    assert task.status == Task.STATUS_RUNNING


def test_recently_started_task_of_an_unknown_worker_is_left_alone():
    task = running_on("new:1", tasks.echo.delay(), minutes_ago=0)
    assert sweeper.find_lost() == 0
    assert Task.objects.get(pk=task.pk).status == Task.STATUS_RUNNING


def test_lost_task_with_retry_on_lost_is_retried(drain):
    task = running_on("ghost:2", tasks.sleeps_on_first_run.delay("swept", seconds=0))
    assert sweeper.find_lost() == 1
    task.refresh_from_db()
    assert (task.status, task.retries) == (Task.STATUS_RETRY, 1)
    drain()
    assert task.wait().status == Task.STATUS_SUCCESS


def test_expired_results_are_deleted_with_their_subtasks(drain):
    top = tasks.spawns_subtask_returns_own.delay()
    kept = tasks.echo.delay()
    drain()
    Task.objects.filter(pk=top.pk).update(result_expiry=timezone.now() - timedelta(seconds=1))
    assert sweeper.delete_expired() == 2
    assert list(Task.objects.values_list("pk", flat=True)) == [kept.pk]


def test_old_worker_rows_are_pruned():
    Worker.objects.create(name="old:1", host="old", pid=1, stopped=timezone.now() - timedelta(days=2))
    Worker.objects.create(name="new:1", host="new", pid=1)
    assert sweeper.prune_workers() == 1
    assert list(Worker.objects.values_list("name", flat=True)) == ["new:1"]


def test_commands(capsys, drain):
    running_on("ghost:3", tasks.echo.delay())
    call_command("cq_check_lost")
    assert "1 lost task(s) found." in capsys.readouterr().out
    failed = tasks.failing.delay()
    tasks.echo.delay_args(submit=False)
    drain()
    call_command("cq_maintenance", "--clear", "--failed", "--lost", "--dry-run")
    assert "Removing 2 task(s) (dry run)." in capsys.readouterr().out
    call_command("cq_maintenance", "--clear", "--failed")
    assert not Task.objects.filter(pk=failed.pk).exists()
    assert Task.objects.filter(status=Task.STATUS_PENDING).exists()
    call_command("cq_maintenance")
    assert "0 lost task(s) found" in capsys.readouterr().out.split("\n")[-2]
    call_command("cq_clear_logs")
    assert "Cleared the logs of" in capsys.readouterr().out
    call_command("cq_retry")
    assert "Queued 0 task(s) for retry." in capsys.readouterr().out


def test_clear_logs_empties_finished_tasks_logs(drain):
    task = tasks.logs_alone.delay()
    drain()
    call_command("cq_clear_logs")
    task.refresh_from_db()
    assert task.log_records == []
