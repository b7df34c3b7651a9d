"""Running tasks through the real channel layer and worker loop: outcomes, retries, atomicity."""

from __future__ import annotations

import pytest
from django.utils import timezone

from cq.models import Task
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)


def test_delay_creates_a_queued_row_with_its_signature():
    before = timezone.now()
    task = tasks.echo.delay(1, "two")
    assert before <= task.submitted <= timezone.now()
    row = Task.objects.get(pk=task.pk)
    assert row.status == Task.STATUS_QUEUED
    assert row.signature == {"func_name": "echo", "args": [1, "two"], "kwargs": {}}


def test_task_succeeds_with_its_return_value(drain):
    task = tasks.add.delay(2, 3)
    assert drain() == 1
    task.wait()
    assert task.status == Task.STATUS_SUCCESS
    assert task.result == 5
    assert task.started is not None and task.finished >= task.started
    assert task.worker == "test-worker"


def test_task_failure_records_error_exception_and_traceback(drain):
    task = tasks.failing.delay("boom")
    drain()
    task.wait()
    assert task.status == Task.STATUS_FAILURE
    assert task.error == "boom"
    assert task.exception == "builtins.ValueError"
    assert "raise ValueError(message)" in task.traceback


def test_errorback_is_called_with_task_and_error(drain):
    task = tasks.failing_with_errorback.delay()
    drain()
    task.wait()
    assert task.status == Task.STATUS_FAILURE
    assert list(Record.objects.values_list("key", flat=True)) == [
        "errback:tests.testapp.tasks.failing_with_errorback:RuntimeError:broken"]


def test_errorback_is_not_called_on_success(drain):
    task = tasks.failing_with_errorback.delay(fail=False)
    drain()
    assert task.wait().status == Task.STATUS_SUCCESS
    assert not Record.objects.exists()


def test_errorback_path_tampered_in_the_database_is_not_imported(drain):
    task = tasks.failing_with_errorback.delay_args(submit=False)
    task.errorback(tasks.record_errorback)
    entry = Task.objects.get(pk=task.pk).errbacks[0]
    forged = {**entry, "path": entry["path"].replace("tests.testapp.tasks.record_errorback", "os.system")}
    Task.objects.filter(pk=task.pk).update(errbacks=[forged])
    task.submit()
    drain()
    assert task.wait().status == Task.STATUS_FAILURE
    # The task's own errorback (registered while running) ran; the forged one did not.
    assert Record.objects.count() == 1


def test_retry_on_a_listed_exception_until_retries_are_used_up(drain):
    task = tasks.retried.delay(error="exception")
    drain()
    task.refresh_from_db()
    assert task.status == Task.STATUS_FAILURE
    assert task.retries == 3
    assert Record.objects.filter(key="retried").count() == 4
    assert task.last_retry is not None


def test_retry_on_a_predicate_until_retries_are_used_up(drain):
    task = tasks.retried.delay(error="predicate")
    drain()
    task.refresh_from_db()
    assert (task.status, task.retries) == (Task.STATUS_FAILURE, 3)
    assert task.error == "hello there"


def test_no_retry_for_an_error_that_matches_no_rule(drain):
    task = tasks.retried.delay(error="other")
    drain()
    task.refresh_from_db()
    assert (task.status, task.retries) == (Task.STATUS_FAILURE, 0)


def test_no_retry_when_the_task_succeeds(drain):
    task = tasks.retried.delay()
    drain()
    task.refresh_from_db()
    assert (task.status, task.retries, task.result) == (Task.STATUS_SUCCESS, 0, "done")


def test_retried_task_succeeds_and_clears_the_error(drain):
    task = tasks.fails_then_succeeds.delay("flaky", 2)
    drain()
    task.refresh_from_db()
    assert (task.status, task.retries, task.result) == (Task.STATUS_SUCCESS, 2, 3)
    assert task.error is None


def test_retry_waits_with_exponential_backoff(drain, settings):
    settings.CQ_RETRY_BACKOFF = 30
    task = tasks.retried.delay(error="exception")
    drain()
    task.refresh_from_db()
    assert (task.status, task.retries) == (Task.STATUS_RETRY, 1)
    assert 29 <= (task.run_after - task.last_retry).total_seconds() <= 31
    Task.objects.filter(pk=task.pk).update(run_after=timezone.now())
    drain()
    task.refresh_from_db()
    assert (task.status, task.retries) == (Task.STATUS_RETRY, 2)
    assert 59 <= (task.run_after - task.last_retry).total_seconds() <= 61


def test_retry_tasks_requeues_due_retries(drain, settings):
    settings.CQ_RETRY_BACKOFF = 3600
    task = tasks.retried.delay(error="exception")
    drain()
    assert tasks.retried  # the function is registered under its dotted name
    from cq.tasks import retry_tasks

    assert retry_tasks(retry_delay=0) == 1
    task.refresh_from_db()
    assert task.status == Task.STATUS_QUEUED
    drain()
    task.refresh_from_db()
    assert (task.status, task.retries) == (Task.STATUS_RETRY, 2)


def test_atomic_task_failure_rolls_back_its_writes(drain):
    task = tasks.writes_then_maybe_fails_atomic.delay("atomic-fail", True)
    drain()
    assert task.wait().status == Task.STATUS_FAILURE
    assert not Record.objects.filter(key="atomic-fail").exists()


def test_atomic_task_success_keeps_its_writes(drain):
    task = tasks.writes_then_maybe_fails_atomic.delay("atomic-ok", False)
    drain()
    assert task.wait().status == Task.STATUS_SUCCESS
    assert Record.objects.filter(key="atomic-ok").exists()


def test_non_atomic_task_failure_keeps_its_writes(drain):
    task = tasks.writes_then_maybe_fails_non_atomic.delay("plain-fail", True)
    drain()
    assert task.wait().status == Task.STATUS_FAILURE
    assert Record.objects.filter(key="plain-fail").exists()


def test_non_atomic_task_success_keeps_its_writes(drain):
    task = tasks.writes_then_maybe_fails_non_atomic.delay("plain-ok", False)
    drain()
    assert task.wait().status == Task.STATUS_SUCCESS
    assert Record.objects.filter(key="plain-ok").exists()


def test_result_that_is_not_json_fails_the_task_with_a_clear_error(drain):
    task = tasks.returns_object.delay()
    drain()
    task.wait()
    assert task.status == Task.STATUS_FAILURE
    assert "not JSON-serialisable" in task.error


def test_task_whose_function_is_no_longer_registered_stays_queued(drain):
    """Not failed: a worker whose code has the function may come (tests/unit/test_deploys.py)."""
    task = Task.objects.create(func_name="tests.gone", status=Task.STATUS_QUEUED)
    from cq.transport import doorbell

    doorbell.ring([task.pk])
    drain()
    task.refresh_from_db()
    assert (task.status, task.attempt, task.error) == (Task.STATUS_QUEUED, 0, None)


def test_result_expiry_follows_result_ttl(drain):
    task = tasks.add.delay_args((1, 1), result_ttl=60)
    drain()
    task.wait()
    assert (task.result_expiry - task.finished).total_seconds() == 60


def test_a_task_chained_after_a_lone_run_while_it_runs_is_launched(drain):
    # Its claimed row had no chained task, so its success is first tried as one lone UPDATE;
    # the row says otherwise by then, and the outcome is recorded the usual way.
    first = tasks.chains_after_itself.delay("chained")
    drain()
    assert first.wait().status == Task.STATUS_SUCCESS
    following = Task.objects.get(previous=first.pk)
    assert following.wait().status == Task.STATUS_SUCCESS
    assert Record.objects.filter(key="chained").count() == 1


@pytest.mark.postgres  # on SQLite (BEGIN IMMEDIATE) the running atomic task holds the write lock
def test_a_lone_run_adopted_while_it_runs_settles_its_new_parent(worker, tmp_path):
    import threading
    import time

    from django.db import connections

    from cq.workers.worker import Worker

    def run_child():
        try:
            worker.run_once(5)
        finally:
            connections.close_all()

    go = tmp_path / "go"
    child = tasks.adopted_while_running.delay(str(go))
    thread = threading.Thread(target=run_child)
    thread.start()
    deadline = time.monotonic() + 10
    while Task.objects.get(pk=child.pk).status != Task.STATUS_RUNNING:
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.01)
    parent = tasks.returns_task.delay(str(child.pk))
    assert Worker(queued_grace=3600, name="other-worker").run_once(5) == 1
    assert Task.objects.get(pk=parent.pk).status == Task.STATUS_WAITING
    go.touch()
    thread.join(10)
    assert child.wait().status == Task.STATUS_SUCCESS
    assert child.parent_id == parent.pk
    parent.wait()
    assert (parent.status, parent.result) == (Task.STATUS_SUCCESS, "adopted")
