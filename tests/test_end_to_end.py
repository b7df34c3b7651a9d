"""manage.py cq_runworker processes against the real Redis and database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from cq.models import RepeatingTask, Task, schedule_task
from tests.helpers import eventually
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent


def start_worker(*extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CQ_TEST_DB_NAME": connection.settings_dict["NAME"], "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "django", "cq_runworker", "--settings=tests.settings", "--poll-interval=0.5", *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_until_done(ids: list, deadline_s: float) -> None:
    eventually(lambda: not Task.objects.filter(pk__in=ids).exclude(status__in=Task.STATUS_DONE).exists(),
               deadline_s, "the tasks to finish")


def stop(worker: subprocess.Popen[bytes]) -> str:
    worker.send_signal(signal.SIGTERM)
    output, _ = worker.communicate(timeout=30)
    return output.decode()


def test_two_workers_run_200_tasks_with_subtasks_and_chains():
    # Given two worker processes
    workers = [start_worker(), start_worker()]
    try:
        # When 200 top-level tasks are delayed: plain, with a chained subtask, and fanning out
        plain = [tasks.add.delay(i, i) for i in range(150)]
        trees = [tasks.tree_with_chain.delay(f"tree{i}") for i in range(25)]
        fans = [tasks.fan_out.delay(3, f"fan{i}") for i in range(25)]
        wait_until_done([t.pk for t in plain + trees + fans], deadline_s=120)
    finally:
        outputs = [stop(w) for w in workers]
    # Then every one finished with the right result, and each ran exactly once
    for i, t in enumerate(plain):
        t.refresh_from_db()
        assert (t.status, t.result) == (Task.STATUS_SUCCESS, 2 * i)
    for t in trees + fans:
        t.refresh_from_db()
        assert t.status == Task.STATUS_SUCCESS, t.error
    assert [t.result for t in trees] == [13] * 25
    assert Task.objects.count() == 150 + 25 * 4 + 25 * 4
    assert Task.objects.exclude(status=Task.STATUS_SUCCESS).count() == 0
    assert Record.objects.count() == 25 + 25 * 3 == Record.objects.values("key").distinct().count()
    assert {t.worker for t in Task.objects.all()} - {""}, "no worker recorded"
    assert all(w.returncode == 0 for w in workers), outputs
    assert "Traceback" not in "".join(outputs), outputs


def test_sigterm_stops_an_idle_worker_cleanly():
    worker = start_worker()
    try:
        task = tasks.add.delay(1, 2)
        wait_until_done([task.pk], deadline_s=30)
    finally:
        output = stop(worker)
    assert worker.returncode == 0, output
    assert not Task.objects.filter(status=Task.STATUS_RUNNING).exists()


def test_burst_runs_what_is_ready_and_exits():
    task = tasks.tree_with_chain.delay("burst")
    worker = start_worker("--burst")
    output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, output
    assert b"Ran 4 task(s)." in output
    task.refresh_from_db()
    assert (task.status, task.result) == (Task.STATUS_SUCCESS, 13)


def test_worker_runs_a_due_repeating_task_and_advances_its_schedule():
    rt = schedule_task(RepeatingTask, "*/5 * * * *", tasks.add, args=(20, 22), coalesce=False)
    RepeatingTask.objects.filter(pk=rt.pk).update(next_run=timezone.now())
    worker = start_worker()
    try:
        rt = eventually(lambda: RepeatingTask.objects.filter(pk=rt.pk, last_task__status="S").first(), 30,
                        "the repeating task to run")
    finally:
        output = stop(worker)
    assert worker.returncode == 0, output
    assert rt.last_task.result == 42
    assert rt.last_run <= rt.last_task.started
    assert rt.next_run > rt.last_run and rt.next_run.minute % 5 == 0
