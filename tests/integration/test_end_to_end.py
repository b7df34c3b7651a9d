"""manage.py cq_runworker processes against the real Redis and database."""

from __future__ import annotations

import pytest
from django.utils import timezone

from cq.models import RepeatingTask, Task, Worker, schedule_task
from tests.helpers import eventually
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)


def wait_until_done(ids: list, deadline_s: float) -> None:
    eventually(lambda: not Task.objects.filter(pk__in=ids).exclude(status__in=Task.STATUS_DONE).exists(),
               deadline_s, "the tasks to finish")


def test_two_workers_run_200_tasks_with_subtasks_and_chains(start_worker):
    # Given two workers of two processes each
    workers = [start_worker("-c", "2"), start_worker("-c", "2")]
    try:
        # When 200 top-level tasks are delayed: plain, with a chained subtask, and fanning out
        plain = [tasks.add.delay(i, i) for i in range(150)]
        trees = [tasks.tree_with_chain.delay(f"tree{i}") for i in range(25)]
        fans = [tasks.fan_out.delay(3, f"fan{i}") for i in range(25)]
        wait_until_done([t.pk for t in plain + trees + fans], deadline_s=120)
    finally:
        codes = [w.stop() for w in workers]
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
    outputs = "".join(w.output for w in workers)
    assert codes == [0, 0], outputs
    assert "Traceback" not in outputs, outputs


def test_sigterm_stops_an_idle_worker_cleanly(start_worker):
    worker = start_worker("-c", "1")
    task = tasks.add.delay(1, 2)
    wait_until_done([task.pk], deadline_s=30)
    assert worker.stop() == 0, worker.output
    assert not Task.objects.filter(status=Task.STATUS_RUNNING).exists()


def test_burst_runs_what_is_ready_and_exits(start_worker):
    task = tasks.tree_with_chain.delay("burst")
    worker = start_worker("--burst")
    assert worker.process.wait(60) == 0, worker.output
    assert "Ran 4 task(s)." in worker.output
    # It recorded itself while it ran, so a sweeper elsewhere would not take its tasks for lost.
    assert Worker.objects.get(pid=worker.process.pid).stopped is not None
    task.refresh_from_db()
    assert (task.status, task.result) == (Task.STATUS_SUCCESS, 13)


def test_worker_runs_a_due_repeating_task_and_advances_its_schedule(start_worker):
    rt = schedule_task(RepeatingTask, "*/5 * * * *", tasks.add, args=(20, 22), coalesce=False)
    RepeatingTask.objects.filter(pk=rt.pk).update(next_run=timezone.now())
    worker = start_worker("-c", "1")
    rt = eventually(lambda: RepeatingTask.objects.filter(pk=rt.pk, last_task__status="S").first(), 30,
                    "the repeating task to run")
    assert worker.stop() == 0, worker.output
    assert rt.last_task.result == 42
    assert rt.last_run <= rt.last_task.started
    assert rt.next_run > rt.last_run and rt.next_run.minute % 5 == 0
