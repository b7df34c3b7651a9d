"""Fault injection with real processes, on SQLite and PostgreSQL: killed workers, restarted and
flushed Redis, time limits.

Each test starts its own cq_runworker processes; those that break Redis start their own
redis-server on a free port. Nothing here touches the shared Redis's other keys.
"""

from __future__ import annotations

import os
import signal

import pytest

from cq.models import Task, Worker
from tests.faults.common import FAST, assert_ran_once_each, finished, pid_of, running
from tests.helpers import eventually
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)


def test_killed_child_leaves_its_task_lost_and_is_replaced(start_worker):
    worker = start_worker("-c", "2", settings=FAST)
    task = running(tasks.sleeps.delay(60))
    os.kill(pid_of(task.worker), signal.SIGKILL)
    task = eventually(lambda: Task.objects.filter(pk=task.pk, status=Task.STATUS_LOST).first(), 15,
                      "the task to be marked LOST")
    assert "stopped (exit code -9) while running it" in task.error
    assert task.exception == "cq.exceptions.TaskLost"
    # The supervisor started a replacement, and other tasks keep flowing.
    eventually(lambda: Worker.objects.filter(stopped__isnull=True).count() == 2, 15, "a replacement process")
    others = [tasks.add.delay(i, 1) for i in range(10)]
    finished(others)
    assert [t.wait().result for t in others] == [i + 1 for i in range(10)]
    assert worker.stop() == 0, worker.output


def test_killed_child_task_with_retry_on_lost_runs_again(start_worker):
    worker = start_worker("-c", "1", settings=FAST)
    task = running(tasks.sleeps_on_first_run.delay("lost-once"))
    os.kill(pid_of(task.worker), signal.SIGKILL)
    finished([task], timeout=30)
    task.refresh_from_db()
    assert (task.status, task.result, task.retries) == (Task.STATUS_SUCCESS, "second run", 1)
    assert Record.objects.filter(key="lost-once").count() == 2
    assert worker.stop() == 0, worker.output


def test_sigterm_lets_running_tasks_finish_and_nothing_stays_running(start_worker):
    worker = start_worker("-c", "2", settings=FAST)
    slow = [tasks.sleeps.delay(2, key=f"term{i}") for i in range(2)]
    for task in slow:
        running(task)
    assert worker.stop(signal.SIGTERM) == 0, worker.output
    for task in slow:
        task.refresh_from_db()
        assert task.status == Task.STATUS_SUCCESS
    assert not Task.objects.filter(status=Task.STATUS_RUNNING).exists()
    assert Record.objects.filter(key__startswith="term").count() == 2


def test_second_signal_stops_at_once_and_the_task_becomes_lost(start_worker):
    worker = start_worker("-c", "1", settings=FAST)
    task = running(tasks.sleeps.delay(60))
    worker.send(signal.SIGTERM)
    eventually(lambda: "signal again to stop at once" in worker.output, 10, "the supervisor to start stopping")
    assert worker.stop(signal.SIGINT, timeout=15) == 0, worker.output
    task.refresh_from_db()
    assert task.status == Task.STATUS_LOST


def test_hard_time_limit_kills_the_process_and_fails_the_task(start_worker):
    worker = start_worker("-c", "1", settings=FAST)
    task = tasks.overruns_hard_limit.delay()
    finished([task], timeout=30)
    task.refresh_from_db()
    assert task.status == Task.STATUS_FAILURE
    assert task.exception == "cq.exceptions.TimeLimitExceeded"
    assert "hard time limit" in task.error
    assert (task.finished - task.started).total_seconds() < 10
    assert worker.stop() == 0, worker.output


def test_soft_time_limit_raises_inside_the_task(start_worker):
    worker = start_worker("-c", "1", settings=FAST)
    task = tasks.overruns_soft_limit.delay("soft")
    finished([task], timeout=30)
    task.refresh_from_db()
    assert (task.status, task.exception) == (Task.STATUS_FAILURE, "cq.exceptions.SoftTimeLimitExceeded")
    assert Record.objects.filter(key="soft").exists()  # the task caught it and cleaned up
    assert worker.stop() == 0, worker.output


def test_revoke_with_terminate_kills_the_running_task(start_worker):
    worker = start_worker("-c", "1", settings=FAST)
    task = running(tasks.sleeps.delay(60, key="terminated"))
    old_pid = pid_of(task.worker)
    task.revoke(terminate=True)
    eventually(lambda: Worker.objects.filter(pid=old_pid, stopped__isnull=False).exists(), 15,
               "the process running it to be killed")
    task.refresh_from_db()
    assert task.status == Task.STATUS_REVOKED
    assert not Record.objects.filter(key="terminated").exists()
    after = tasks.add.delay(1, 1)
    finished([after])
    assert pid_of(after.wait().worker) != old_pid
    assert worker.stop() == 0, worker.output


def test_redis_restart_mid_stream_loses_nothing_and_runs_nothing_twice(start_worker, private_redis):
    worker = start_worker("-c", "2", settings=FAST, redis_url=private_redis.url)
    keys = [f"restart{i}" for i in range(500)]
    queued = [tasks.counts_run.delay(key) for key in keys]
    eventually(lambda: Record.objects.filter(key__startswith="restart").exists(), 30, "some tasks to run")
    private_redis.restart()  # every doorbell still in Redis is gone
    finished(queued, timeout=120)
    assert_ran_once_each(keys)
    assert Task.objects.filter(pk__in=[t.pk for t in queued], status=Task.STATUS_SUCCESS).count() == 500
    assert worker.stop() == 0, worker.output


def test_redis_flushall_with_tasks_queued_loses_nothing(start_worker, private_redis):
    keys = [f"flush{i}" for i in range(500)]
    queued = [tasks.counts_run.delay(key) for key in keys]
    private_redis.client().flushall()
    worker = start_worker("-c", "2", settings=FAST, redis_url=private_redis.url)
    finished(queued, timeout=120)
    assert_ran_once_each(keys)
    assert worker.stop() == 0, worker.output


def test_tasks_delayed_while_redis_is_down_all_run(start_worker, private_redis):
    # Given two worker processes listening on a Redis that then stops
    worker = start_worker("-c", "2", settings=FAST, redis_url=private_redis.url)
    eventually(lambda: worker.output.count("waiting for tasks") == 2, 30, "both processes to listen")
    private_redis.stop()
    eventually(lambda: worker.output.count("cannot hear doorbells") >= 2, 30, "the workers to notice")
    # When 100 tasks are delayed (the callers get no error) and Redis comes back
    keys = [f"down{i}" for i in range(100)]
    queued = [tasks.counts_run.delay(key) for key in keys]
    private_redis.start()
    # Then every task runs once, and the workers hear doorbells again
    finished(queued, timeout=120)
    assert_ran_once_each(keys)
    eventually(lambda: worker.output.count("hears doorbells again") == 2, 30, "the workers to reconnect")
    after = tasks.add.delay(2, 2)
    assert eventually(lambda: Task.objects.filter(pk=after.pk, status="S").exists(), 10, "a task after Redis came back")
    assert worker.stop() == 0, worker.output


def test_max_tasks_per_child_replaces_processes(start_worker):
    worker = start_worker("-c", "1", "--max-tasks-per-child", "2", settings=FAST)
    done = [tasks.add.delay(i, i) for i in range(6)]
    finished(done)
    assert len({t.wait().worker for t in done}) >= 3
    assert worker.stop() == 0, worker.output


def test_worker_only_takes_its_queues(start_worker):
    reports = start_worker("-c", "1", "--queues", "reports", "--no-scheduler", settings=FAST)
    defaults = start_worker("-c", "1", "--queues", "default", "--no-scheduler", settings=FAST)
    report, plain = tasks.report.delay("q3"), tasks.add.delay(1, 2)
    finished([report, plain])
    report.refresh_from_db()
    plain.refresh_from_db()
    assert report.queue == "reports" and report.result == "report q3"
    reports_pids = {w.pid for w in Worker.objects.all() if w.queues == ["reports"]}
    assert pid_of(report.worker) in reports_pids
    assert pid_of(plain.worker) not in reports_pids
    assert reports.stop() == 0 and defaults.stop() == 0


def test_workers_record_heartbeats(start_worker):
    worker = start_worker("-c", "2", settings=FAST)
    rows = eventually(lambda: list(Worker.objects.filter(stopped__isnull=True)) if
                      Worker.objects.filter(stopped__isnull=True).count() == 2 else None, 30, "two worker rows")
    first_beats = {w.name: w.last_heartbeat for w in rows}
    eventually(lambda: all(w.last_heartbeat > first_beats[w.name] for w in Worker.objects.filter(
        name__in=first_beats)), 10, "the heartbeats to advance")
    assert all(w.alive and w.queues == ["default"] for w in Worker.objects.filter(name__in=first_beats))
    assert worker.stop() == 0, worker.output
    assert all(not w.alive for w in Worker.objects.filter(name__in=first_beats))


def test_a_django_task_whose_worker_is_killed_ends_failed_with_task_lost(start_worker):
    # Where cq differs from django-tasks' database backend on purpose (README): the task of a
    # killed worker does not stay RUNNING; Django's API reads it FAILED, its error cq's TaskLost.
    from tests.testapp import jobs

    worker = start_worker("-c", "1", settings=FAST)
    result = jobs.sleeps.enqueue(60)
    task = running(Task.objects.get(pk=result.id))
    os.kill(pid_of(task.worker), signal.SIGKILL)
    eventually(lambda: Task.objects.filter(pk=task.pk, status=Task.STATUS_LOST).exists(), 15, "LOST")
    result.refresh()
    assert result.status.name == "FAILED"
    assert result.errors[-1].exception_class_path == "cq.exceptions.TaskLost"
    assert worker.stop() == 0, worker.output
