"""Django's Tasks framework on cq (cq.backends.CQBackend): the behaviours of Django's own tests
of its framework (enqueue, results, defer, priority, queues, context, signals, errors, async
tasks), run through cq's worker."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from cq.models import Task
from tests.helpers import eventually
from tests.testapp import jobs
from tests.testapp import tasks as cq_tasks
from tests.testapp.models import Record

try:
    from django.tasks import TaskResultStatus, default_task_backend, signals, task_backends
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch
except ImportError:
    from django_tasks import TaskResultStatus, default_task_backend, signals, task_backends
    from django_tasks.exceptions import InvalidTaskError as InvalidTask
    from django_tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch

pytestmark = pytest.mark.django_db(transaction=True)

READY, RUNNING, FAILED, SUCCESSFUL = (TaskResultStatus.READY, TaskResultStatus.RUNNING, TaskResultStatus.FAILED,
                                      TaskResultStatus.SUCCESSFUL)


def test_the_default_backend_is_cq():
    from cq.backends import CQBackend

    assert isinstance(task_backends["default"], CQBackend) and default_task_backend.alias == "default"
    assert (default_task_backend.supports_defer, default_task_backend.supports_async_task,
            default_task_backend.supports_get_result, default_task_backend.supports_priority) == (True,) * 4


def test_enqueue_writes_a_row_a_worker_runs_and_get_result_reads_back(drain):
    result = jobs.noop.enqueue(1, two=3)
    assert (result.status, result.is_finished, result.args, result.kwargs) == (READY, False, [1], {"two": 3})
    assert result.enqueued_at is not None and result.started_at is None and result.worker_ids == []
    row = Task.objects.get(pk=result.id)
    assert (row.func_name, row.status) == ("tests.testapp.jobs.noop", Task.STATUS_QUEUED)
    with pytest.raises(ValueError, match="Task has not finished yet"):
        _ = result.return_value
    assert drain() == 1
    result.refresh()
    assert (result.status, result.is_finished, result.return_value, result.attempts) == (SUCCESSFUL, True, None, 1)
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at and result.worker_ids == ["test-worker"]
    again = jobs.noop.get_result(result.id)
    assert (again.id, again.status, again.task.func) == (result.id, SUCCESSFUL, jobs.noop.func)
    assert default_task_backend.get_result(result.id).status == SUCCESSFUL


def test_return_values_come_back_through_json(drain):
    answer, a_set = jobs.meaning_of_life.enqueue(), jobs.returns_a_set.enqueue()
    drain()
    answer.refresh(), a_set.refresh()
    assert answer.return_value == 42
    assert a_set.status == FAILED and a_set.errors[0].exception_class is TypeError  # a set is not JSON


def test_a_failed_task_carries_its_exception_class_path_and_traceback(drain):
    result = jobs.fails.enqueue("This Task failed due to ValueError")
    drain()
    result.refresh()
    assert (result.status, result.is_finished) == (FAILED, True)
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value
    [error] = result.errors
    assert error.exception_class_path == "builtins.ValueError" and error.exception_class is ValueError
    assert error.traceback.endswith("ValueError: This Task failed due to ValueError\n")


def test_get_result_refuses_unknown_ids_other_tasks_and_cq_tasks(drain):
    meaning = jobs.meaning_of_life.enqueue()
    for unknown in ("00000000-0000-0000-0000-000000000000", "not an id"):
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(unknown)
    with pytest.raises(TaskResultMismatch):
        jobs.noop.get_result(meaning.id)
    with pytest.raises(TaskResultDoesNotExist):  # a row of cq's own @task is not a Django task's result
        default_task_backend.get_result(str(cq_tasks.add.delay(1, 2).pk))


async def test_aenqueue_and_aget_result(database_thread):
    result = await jobs.meaning_of_life.aenqueue()
    assert (await jobs.meaning_of_life.aget_result(result.id)).status == READY
    await result.arefresh()
    assert result.status == READY


def test_async_task_functions_run_on_the_worker(drain):
    answer, recorded = jobs.meaning_of_life_async.enqueue(), jobs.records_async.enqueue("async")
    assert drain() == 2
    answer.refresh(), recorded.refresh()
    assert (answer.return_value, recorded.return_value) == (42, "async")
    assert Record.objects.filter(key="async").exists()


def test_enqueue_inside_a_transaction_rings_on_commit(drain):
    with transaction.atomic():
        result = jobs.noop.enqueue()
        assert drain() == 0  # no doorbell before the commit
    assert drain() == 1
    result.refresh()
    assert result.status == SUCCESSFUL
    with transaction.atomic():
        rolled_back = jobs.noop.enqueue()
        transaction.set_rollback(True)
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(rolled_back.id)


def test_run_after_defers_the_task(drain):
    later = timezone.now() + timedelta(hours=1)
    result = jobs.noop.using(run_after=later).enqueue()
    assert result.task.run_after == later
    assert drain() == 0
    assert Task.objects.get(pk=result.id).run_after == later
    with pytest.raises(InvalidTask, match="aware"):
        jobs.noop.using(run_after=later.replace(tzinfo=None))


def test_priority_and_queue_reach_the_row_and_are_validated():
    result = jobs.report.enqueue("x")
    row = Task.objects.get(pk=result.id)
    assert (row.priority, row.queue, result.task.priority, result.task.queue_name) == (5, "reports", 5, "reports")
    row = Task.objects.get(pk=jobs.noop.using(priority=-100, queue_name="reports").enqueue().id)
    assert (row.priority, row.queue) == (-100, "reports")
    for priority in (101, -101, 1.5):
        with pytest.raises(InvalidTask, match="priority"):
            jobs.noop.using(priority=priority)
    with pytest.raises(InvalidTask, match="Queue 'elsewhere' is not valid"):
        jobs.noop.using(queue_name="elsewhere")


def test_higher_priority_runs_first(worker):
    low, high = jobs.records.using(priority=-10).enqueue("low"), jobs.records.using(priority=10).enqueue("high")
    worker.run_once(0)
    assert (default_task_backend.get_result(high.id).status, default_task_backend.get_result(low.id).status) == (
        SUCCESSFUL, READY)


def test_takes_context_gets_the_result_and_its_attempt(drain):
    result = jobs.knows_itself.enqueue()
    drain()
    result.refresh()
    assert result.return_value == {"id": result.id, "attempt": 1}


def test_a_retried_task_counts_its_attempts_and_workers(drain, settings):
    settings.TASKS = {"default": {"BACKEND": "cq.backends.CQBackend", "QUEUES": ["default", "reports"],
                                  "OPTIONS": {"RETRIES": 2}}}
    from tests.testapp import jobs as reloaded

    result = reloaded.fails_on_first_attempt.enqueue("attempts")
    eventually(lambda: drain() and default_task_backend.get_result(result.id).is_finished, 10, "the retry to run")
    result.refresh()
    assert (result.status, result.return_value, result.attempts) == (SUCCESSFUL, 2, 2)
    assert result.worker_ids == ["test-worker", "test-worker"]
    assert sorted(Record.objects.values_list("key", flat=True)) == ["attempts:1", "attempts:2"]


def test_signals_are_sent_at_enqueue_start_and_finish(drain):
    heard = []

    def listen(signal):
        def receiver(sender, task_result, **kwargs):
            heard.append((signal, task_result.id, task_result.status))
        return receiver

    receivers = {name: listen(name) for name in ("enqueued", "started", "finished")}
    signals.task_enqueued.connect(receivers["enqueued"])
    signals.task_started.connect(receivers["started"])
    signals.task_finished.connect(receivers["finished"])
    try:
        done, failed = jobs.noop.enqueue(), jobs.fails.enqueue()
        drain()
    finally:
        signals.task_enqueued.disconnect(receivers["enqueued"])
        signals.task_started.disconnect(receivers["started"])
        signals.task_finished.disconnect(receivers["finished"])
    assert [h for h in heard if h[1] == done.id] == [
        ("enqueued", done.id, READY), ("started", done.id, RUNNING), ("finished", done.id, SUCCESSFUL)]
    assert [h for h in heard if h[1] == failed.id][-1] == ("finished", failed.id, FAILED)


def test_django_tasks_log_through_djangos_logger(drain, caplog):
    name = signals.logger.name  # django.tasks, or django_tasks for the package
    with caplog.at_level("DEBUG", logger=name):
        result = jobs.fails.enqueue()
        drain()
    lines = [r.getMessage() for r in caplog.records if r.name == name and result.id in r.getMessage()]
    assert len(lines) == 3 and "enqueued" in lines[0]
    assert "state=RUNNING" in lines[1] and "state=FAILED" in lines[2]


def test_revoked_and_lost_tasks_read_as_failed_with_a_cq_error(drain):
    revoked = jobs.noop.enqueue()
    Task.objects.get(pk=revoked.id).revoke()
    revoked.refresh()
    assert revoked.status == FAILED and revoked.errors[0].exception_class_path == "cq.exceptions.TaskRevoked"
    from cq.exceptions import TaskRevoked

    assert revoked.errors[0].exception_class is TaskRevoked
    lost = jobs.noop.enqueue()
    Task.objects.filter(pk=lost.id).update(status=Task.STATUS_LOST, exception="cq.exceptions.TaskLost",
                                           error="The worker stopped.", started=timezone.now(), worker="w1")
    lost.refresh()
    assert (lost.status, lost.errors[0].exception_class_path, lost.worker_ids) == (
        FAILED, "cq.exceptions.TaskLost", ["w1"])


def test_a_django_task_is_a_cq_task_row_with_logs_admin_and_dashboard(drain, admin_client):
    result = jobs.meaning_of_life.enqueue()
    drain()
    assert f"/cq/tasks/{result.id}/" in admin_client.get(f"/admin/cq/task/{result.id}/change/").content.decode()
    assert "tests.testapp.jobs.meaning_of_life" in admin_client.get(f"/cq/tasks/{result.id}/").content.decode()
    assert admin_client.get(f"/cq/api/tasks/{result.id}/").json()["task"]["result"] == 42


def test_django_and_cq_tasks_mix_in_one_module(drain):
    result = cq_tasks.django_task_beside_cq_tasks.enqueue(2, 3)
    cq_row = cq_tasks.add.delay(1, 1)
    drain()
    result.refresh()
    assert (result.return_value, cq_row.wait().result) == (5, 2)


def test_bad_options_and_queues_are_refused_when_the_backend_is_built(settings):
    from django.core.exceptions import ImproperlyConfigured

    from cq.backends import CQBackend

    with pytest.raises(ImproperlyConfigured, match="not colour"):
        CQBackend("x", {"OPTIONS": {"colour": "red"}})
    with pytest.raises(ImproperlyConfigured, match="not a cq queue name"):
        CQBackend("x", {"QUEUES": ["Has Spaces"]})
    for ttl in (-1, 2 ** 31, 1.5, True):
        with pytest.raises(ImproperlyConfigured, match="result_ttl'] is a whole number of seconds"):
            CQBackend("x", {"OPTIONS": {"RESULT_TTL": ttl}})


def test_arguments_and_times_no_database_stores_are_refused_and_nothing_is_written():
    from datetime import datetime
    from datetime import timezone as tz

    from cq.exceptions import InvalidTask as InvalidCQTask

    with transaction.atomic():
        for args in ([float("nan")], ["a\x00b"], [{"k": float("inf")}]):
            with pytest.raises(InvalidCQTask, match="PostgreSQL cannot store it"):
                jobs.noop.enqueue(*args)
        edge = datetime(9999, 12, 31, 23, tzinfo=tz(-timedelta(hours=23)))
        with pytest.raises(InvalidCQTask, match="no time that can be stored"):
            jobs.noop.using(run_after=edge).enqueue()
        assert not Task.objects.exists()  # and on PostgreSQL the transaction still runs statements


def test_a_task_that_exits_fails_and_its_worker_goes_on(drain):
    result, after = jobs.exits.enqueue(), jobs.noop.enqueue()
    assert drain() == 2
    result.refresh(), after.refresh()
    assert (result.status, result.errors[0].exception_class, after.status) == (FAILED, SystemExit, SUCCESSFUL)


def test_a_django_task_reports_progress_and_logs_as_its_cq_row(drain, admin_client):
    from cq.backends import running_task

    with pytest.raises(RuntimeError, match="No Django task is running"):
        running_task()
    result, from_coroutine = jobs.reports_as_cq_task.enqueue(4), jobs.reports_from_a_coroutine.enqueue()
    drain()
    row = Task.objects.get(pk=result.id)
    assert (row.progress["percent"], [line["message"] for line in row.logs]) == (100.0, ["all steps done"])
    page = admin_client.get(f"/cq/tasks/{result.id}/").content.decode()
    assert "all steps done" in page and f'id="progress" data-task="{result.id}" max="100" value="100"' in page
    assert Task.objects.get(pk=from_coroutine.id).logs[0]["message"] == "from a coroutine"
    assert default_task_backend.get_result(from_coroutine.id).return_value == from_coroutine.id


def test_djangos_own_checks_of_a_task_still_apply(settings):
    try:
        from django.tasks import task
    except ImportError:
        from django_tasks import task

    def nested():
        return None

    with pytest.raises(InvalidTask, match="module level"):
        task(nested)
    with pytest.raises(InvalidTask, match="context"):
        task(takes_context=True)(jobs.meaning_of_life.func)
    with pytest.raises(InvalidTask, match="Queue 'Bad Queue' is not valid"):
        jobs.noop.using(queue_name="Bad Queue")
    # With no QUEUES, Django allows any queue name; cq still wants one it can name a channel after.
    settings.TASKS = {"default": {"BACKEND": "cq.backends.CQBackend", "QUEUES": []}}
    with pytest.raises(InvalidTask, match="not a cq queue name"):
        jobs.noop.using(queue_name="Bad Queue")
    assert Task.objects.get(pk=jobs.noop.using(queue_name="any-queue").enqueue().id).queue == "any-queue"


def test_arguments_are_normalised_as_djangos_backends_do():
    with pytest.raises(TypeError):  # Django's own error for a value JSON cannot hold
        jobs.noop.enqueue(timedelta(seconds=1))
    assert not Task.objects.exists()
    result = jobs.noop.enqueue(b"bytes", ("a", "tuple"), key=b"value")
    assert (result.args, result.kwargs) == (["bytes", ["a", "tuple"]], {"key": "value"})
    row = Task.objects.get()
    assert (row.args, row.kwargs) == (["bytes", ["a", "tuple"]], {"key": "value"})


def test_the_backend_check_says_when_cq_is_not_an_installed_app(settings):
    from django.test import override_settings

    from cq.backends import CQBackend

    assert CQBackend("default", {}).check() == []
    without = [app for app in settings.INSTALLED_APPS if app != "cq"]
    with override_settings(INSTALLED_APPS=without):
        errors = CQBackend("default", {}).check()
    assert [error.id for error in errors] == ["cq.E002"]
    assert "Add 'cq' to INSTALLED_APPS" in errors[0].hint
