"""Bad input is refused at .delay() time, in the caller, and nothing is written."""

from __future__ import annotations

import datetime

import pytest
from django.db import transaction

from cq.exceptions import InvalidTask, TaskNotRegistered
from cq.models import Task
from cq.registry import task
from cq.transport import doorbell
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def test_arguments_that_are_not_json_are_refused():
    with pytest.raises(InvalidTask, match="args of task 'echo' are not JSON-serialisable"):
        tasks.echo.delay(datetime.date(2026, 1, 1))
    with pytest.raises(InvalidTask, match="kwargs of task"):
        tasks.add.delay(a=1, b={1, 2})
    assert not Task.objects.exists()


def test_unregistered_function_is_refused():
    def plain(cqt):
        return 1

    parent = tasks.echo.delay_args(submit=False)
    with pytest.raises(TaskNotRegistered, match="not a task function"):
        parent.subtask(plain)
    with pytest.raises(TaskNotRegistered, match="'no.such.task'"):
        parent.subtask("no.such.task")
    assert Task.objects.count() == 1


def test_unknown_option_is_refused():
    with pytest.raises(InvalidTask, match="Unknown option"):
        tasks.echo.delay_args(urgency=3)
    assert not Task.objects.exists()


def test_wait_on_an_unsaved_task_is_refused():
    with pytest.raises(InvalidTask, match="saved task"):
        Task(func_name="echo").wait()


def test_wait_with_a_timeout_returns_the_unfinished_task():
    queued = tasks.echo.delay()
    assert queued.wait(timeout=20).status == Task.STATUS_QUEUED


def test_doorbell_rings_only_after_commit():
    with transaction.atomic():
        created = tasks.echo.delay()
        assert doorbell.listen(["default"], 10, 0) == []
    assert doorbell.listen(["default"], 10, 0) == [str(created.pk)]


def test_rolled_back_delay_leaves_neither_row_nor_doorbell():
    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.echo.delay()
        raise RuntimeError
    assert not Task.objects.exists()
    assert doorbell.listen(["default"], 10, 0) == []


def test_two_functions_cannot_share_a_name():
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="Two task functions are registered as 'echo'"):
        @task("echo")
        def another_echo(cqt):
            return None


def test_errorback_that_cannot_be_imported_is_refused():
    parent = tasks.echo.delay_args(submit=False)
    with pytest.raises(InvalidTask, match="cannot be imported"):
        parent.errorback(lambda task, error: None)
    assert Task.objects.get().errbacks == []


def test_models_delay_is_django_cqs_spelling_of_delay_args():
    from cq.models import delay

    created = delay(tasks.add, (1, 2), submit=False)
    assert (created.status, created.args, created.func_name) == (Task.STATUS_PENDING, [1, 2],
                                                                 "tests.testapp.tasks.add")


def test_delay_many_queues_every_call_with_one_insert(drain):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        created = tasks.add.delay_many([(1, 2), [3, 4], {"a": 5, "b": 6}])
    # One statement: an INSERT, or on PostgreSQL a COPY.
    inserts = [q for q in captured.captured_queries if q["sql"].startswith(("INSERT", "COPY"))]
    assert len(inserts) == 1
    assert [t.status for t in created] == [Task.STATUS_QUEUED] * 3
    odd = tasks.echo.delay_many([("é\t\n\\", {"n": [1, None, True], "s": "x'y\""}), ()])
    assert drain() == 5
    assert [t.wait().result for t in created] == [3, 7, 11]
    assert [t.wait().result for t in odd] == [["é\t\n\\", {"n": [1, None, True], "s": "x'y\""}], "a"]
    assert Task.objects.get(pk=odd[0].pk).kwargs == {}


def test_delay_many_refuses_bad_calls_and_writes_nothing():
    with pytest.raises(InvalidTask, match="not JSON-serialisable"):
        tasks.echo.delay_many([(1,), (object(),)])
    with pytest.raises(InvalidTask, match="list or tuple of arguments or a dict"):
        tasks.echo.delay_many([1, 2])
    with pytest.raises(InvalidTask, match="not parent"):
        tasks.echo.delay_many([(1,)], parent=None)
    assert not Task.objects.exists()


def test_subtask_of_a_task_running_elsewhere_is_refused():
    running = tasks.echo.delay()
    Task.objects.filter(pk=running.pk).update(status=Task.STATUS_RUNNING)
    running.refresh_from_db()
    with pytest.raises(InvalidTask, match="only the task itself can add subtasks"):
        running.subtask(tasks.echo)
    assert Task.objects.count() == 1


# Values JSON allows or Python writes, but no database cq supports stores as they are.
UNSTORABLE = {"nan": float("nan"), "infinity": float("inf"), "nul": "a\x00b", "nul_key": {"k\x00": 1},
              "surrogate": "\ud800", "deep": [[[[1]]]], "object": object()}


@pytest.mark.parametrize("name", UNSTORABLE)
def test_values_no_database_stores_are_refused_in_the_caller_and_its_transaction_goes_on(name, monkeypatch):
    from cq import canvas, validation

    monkeypatch.setattr(validation, "MAX_DEPTH", 3)  # "deep" nests 4 levels
    bad = UNSTORABLE[name]
    with transaction.atomic():
        kept = tasks.echo.delay_args(submit=False)
        calls = {
            "delay": lambda: tasks.echo.delay(1, bad),
            "delay_args": lambda: tasks.add.delay_args(kwargs={"a": 1, "b": bad}),
            "delay_many": lambda: tasks.echo.delay_many([(1,), (bad,)]),
            "using": lambda: tasks.echo.using(fields={"x": bad}).delay(),
            "signature": lambda: tasks.echo.s(bad),
            "subtask": lambda: kept.subtask(tasks.echo, (bad,)),
            "chain": lambda: kept.chain(tasks.echo, (bad,)),
            "submit": lambda: kept.submit(bad),
            "update": lambda: kept.update(fields={"x": [bad]}),
            "errorback": lambda: canvas.errorback(kept, tasks.record_errorback, (bad,)),
            "on_error": lambda: tasks.echo.s().on_error(tasks.record_errorback, key=bad),
        }
        for call, run in calls.items():
            with pytest.raises(InvalidTask):
                run()
                pytest.fail(f"{call}() took {bad!r}")
        # Nothing reached the database, so on PostgreSQL the transaction is not aborted.
        assert list(Task.objects.values_list("pk", "status", "args", "fields", "errbacks")) == [
            (kept.pk, Task.STATUS_PENDING, [], {}, [])]
    assert Task.objects.get().pk == kept.pk


def test_the_deepest_json_cq_takes_is_stored_and_read_back(drain):
    from cq.validation import MAX_DEPTH

    deepest: object = "bottom"
    for _ in range(MAX_DEPTH - 1):  # the args list is the first level
        deepest = [deepest]
    task = tasks.echo.delay(deepest)
    assert Task.objects.get(pk=task.pk).args == [deepest]
    with pytest.raises(InvalidTask, match=f"deeper than {MAX_DEPTH} levels"):
        tasks.echo.delay([deepest])


def test_options_are_checked_by_one_rule_each_before_anything_is_written():
    for options, message in [
        ({"queue": 5}, "Queue 5 must be"), ({"queue": ""}, "Queue '' must be"),
        ({"result_ttl": -1}, "result_ttl="), ({"result_ttl": 2 ** 31}, "result_ttl="),
        ({"result_ttl": True}, "result_ttl="), ({"countdown": 1e300}, "past the end of the calendar"),
        ({"countdown": float("nan")}, "countdown="), ({"unique_key": "k\x00"}, "unique_key= takes a string"),
        ({"eta": datetime.datetime(9999, 12, 31, 23, tzinfo=datetime.timezone(-datetime.timedelta(hours=23)))},
         "no time that can be stored"),
    ]:
        with pytest.raises(InvalidTask, match=message):
            tasks.echo.delay_args(**options)
        if "unique_key" not in options:
            with pytest.raises(InvalidTask, match=message):
                tasks.echo.delay_many([(1,)], **options)
    assert not Task.objects.exists()


def test_the_lean_insert_writes_the_row_save_would_write():
    from django.forms.models import model_to_dict

    lean = tasks.echo.delay_args((1, "two"), priority=3, unique_key="lean")
    saved = Task(func_name=lean.func_name, args=lean.args, kwargs=lean.kwargs, status=lean.status, queue=lean.queue,
                 priority=lean.priority, unique_key="saved", created=lean.created, submitted=lean.submitted)
    saved.save(force_insert=True)
    skip = {"id", "unique_key"}
    as_written = {k: v for k, v in model_to_dict(Task.objects.get(pk=lean.pk)).items() if k not in skip}
    assert as_written == {k: v for k, v in model_to_dict(Task.objects.get(pk=saved.pk)).items() if k not in skip}


def test_a_receiver_of_the_models_signals_gets_them_from_delay():
    from django.db.models import signals

    heard = []

    def receiver(sender, instance, **kwargs):
        heard.append((kwargs.get("created"), instance.func_name))

    signals.post_save.connect(receiver, sender=Task)
    try:
        tasks.noop.delay()
    finally:
        signals.post_save.disconnect(receiver, sender=Task)
    assert heard == [(True, tasks.noop.name)]
