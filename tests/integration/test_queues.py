"""Queue controls (cq.engine.queues) obeyed by real cq_runworker supervisors on PostgreSQL or SQLite."""

from __future__ import annotations

import time

import pytest

from cq.engine import queues
from cq.models import Task
from tests.helpers import eventually
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def count(ids: list, status: str) -> int:
    return Task.objects.filter(pk__in=ids, status=status).count()


def test_a_paused_queue_holds_its_tasks_on_every_worker_until_it_is_resumed(start_worker):
    # Given the "reports" queue paused, and two supervisors serving it (their database poll
    # would pick up a task queued 0.5 s ago, so only the pause holds them back)
    queues.pause("reports", by="the test")
    workers = [start_worker("-c", "1", "-Q", "reports,default", settings={"CQ_QUEUED_GRACE": 0.5})
               for _ in range(2)]
    ran = tasks.echo.delay("ready")
    eventually(lambda: Task.objects.get(pk=ran.pk).status == Task.STATUS_SUCCESS, 30, "the workers to start")
    try:
        # When 200 tasks are queued to it
        created = [t.pk for t in tasks.timed_report.delay_many([()] * 200)]
        # Then for 5 s none is claimed, while the workers run the default queue's tasks
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            assert count(created, Task.STATUS_QUEUED) == 200
            tasks.echo.delay("still running")
            time.sleep(0.2)
        assert not Task.objects.filter(pk__in=created).exclude(attempt=0).exists()
        # And once it is resumed, all 200 have run within 5 s
        queues.resume("reports", by="the test")
        eventually(lambda: count(created, Task.STATUS_SUCCESS) == 200, 5, "the 200 tasks to run after the resume")
    finally:
        for worker in workers:
            assert worker.stop() == 0, worker.output
    assert not Task.objects.filter(func_name="tests.testapp.tasks.echo").exclude(status=Task.STATUS_SUCCESS).exists()
    assert all("Traceback" not in worker.output for worker in workers)


def test_a_queue_cap_holds_across_two_supervisors(start_worker):
    # Given "reports" capped at 2, and two supervisors of three processes each, whose database
    # poll never picks up a waiting task (only the doorbell a finishing task rings starts the next)
    queues.limit("reports", 2, by="the test")
    workers = [start_worker("-c", "3", "-Q", "reports", settings={"CQ_QUEUED_GRACE": 3600}) for _ in range(2)]
    try:
        # When twelve tasks of 0.3 s are queued at once
        created = [t.pk for t in tasks.timed_report.delay_many([(0.3,)] * 12)]
        eventually(lambda: count(created, Task.STATUS_SUCCESS) == 12, 60, "the twelve tasks to run")
    finally:
        for worker in workers:
            assert worker.stop() == 0, worker.output
    # Then never more than two ran at once, and two did
    spans = sorted(tuple(t.result) for t in Task.objects.filter(pk__in=created))
    most = max(sum(1 for start, end in spans if start <= moment < end) for moment, _ in spans)
    assert most == 2, spans
    assert all("Traceback" not in worker.output for worker in workers)


def test_raising_a_cap_lets_waiting_tasks_run_at_once(start_worker):
    # Given "reports" capped at 1 while a long task runs in it and another waits for the slot
    queues.limit("reports", 1, by="the test")
    worker = start_worker("-c", "2", "-Q", "reports", settings={"CQ_QUEUED_GRACE": 3600})
    try:
        long = tasks.timed_report.delay(3)
        eventually(lambda: Task.objects.get(pk=long.pk).status == Task.STATUS_RUNNING, 30, "the long task to start")
        waiting = tasks.timed_report.delay()
        # Claimed (attempt 1), then put back by the cap: QUEUED again, while the long one runs.
        eventually(lambda: Task.objects.filter(pk=waiting.pk, attempt__gte=1, status=Task.STATUS_QUEUED).exists(),
                   10, "the second task to be refused")
        # When the cap is raised to 2, then the waiting task runs while the long one still runs
        queues.limit("reports", 2, by="the test")
        eventually(lambda: Task.objects.get(pk=waiting.pk).status == Task.STATUS_SUCCESS, 2.5,
                   "the waiting task to run once the cap is raised")
        assert Task.objects.get(pk=long.pk).status == Task.STATUS_RUNNING
    finally:
        assert worker.stop() == 0, worker.output
