"""Signatures, groups, chords and stages, through the real channel layer and worker loop."""

from __future__ import annotations

import dataclasses
from itertools import pairwise

import pytest

from cq.canvas import chord, group, signature, stages
from cq.engine import execution
from cq.engine.transitions import claims, outcomes
from cq.exceptions import InvalidTask, TaskLost, TaskNotRegistered
from cq.models import Task
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)


def run_in_order(*queued: Task) -> None:
    """Claim and run these tasks one after another, in this order, in this process."""
    for claimed in claims.claim([str(t.pk) for t in queued], "test", ["default"]):
        execution.run(claimed)


def members(workflow: Task) -> list[Task]:
    by_pk = {str(t.pk): t for t in Task.objects.filter(parent=workflow.pk)}
    return [by_pk[pk] for pk in workflow.kwargs["members"]]


def stage_rows(pipeline: Task) -> list[Task]:
    return sorted(Task.objects.filter(parent=pipeline.pk), key=lambda row: row.kwargs["stage"])


def plain(value: object) -> object:
    return value


# -- Signatures ---------------------------------------------------------------------------


def test_signature_keeps_the_function_its_arguments_and_queue():
    sig = tasks.power.s(2, exponent=10)
    assert (sig.name, sig.args, dict(sig.kwargs), sig.queue) == (tasks.power.name, (2,), {"exponent": 10}, "default")
    assert tasks.report.s("x").queue == "reports"
    assert sig.set(queue="reports").queue == "reports" and sig.queue == "default"


def test_signature_cannot_be_changed_after_it_is_made():
    numbers = [1, 2]
    sig = tasks.echo.s(numbers, key={"a": 1})
    numbers.append(3)
    assert sig.args == ([1, 2],)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sig.name = "other"
    with pytest.raises(TypeError):
        sig.kwargs["key"] = 2


def test_signature_with_arguments_that_are_not_json_is_refused():
    with pytest.raises(InvalidTask, match="args of task 'echo' are not JSON-serialisable"):
        tasks.echo.s(object())
    with pytest.raises(InvalidTask, match="kwargs of task 'echo' are not JSON-serialisable"):
        signature("echo", kwargs={"when": {1, 2}})
    assert not Task.objects.exists()


def test_signature_of_an_unregistered_function_is_refused():
    with pytest.raises(TaskNotRegistered, match="'no.such.task'"):
        signature("no.such.task")
    with pytest.raises(TaskNotRegistered, match="decorate it with @cq.task"):
        signature(plain)
    with pytest.raises(InvalidTask, match="Queue 'Bad Queue'"):
        tasks.echo.s().set(queue="Bad Queue")


def test_signature_delay_queues_one_task_with_its_errbacks(drain):
    task = tasks.failing.s("boom").on_error(tasks.record_errorback, key="sig").delay()
    assert drain() == 1
    assert task.wait().status == Task.STATUS_FAILURE
    assert Record.objects.filter(key=f"sig:{tasks.failing.name}:ValueError:boom").count() == 1


# -- Groups -------------------------------------------------------------------------------


def test_group_result_is_the_member_results_in_the_order_given(drain):
    task = group([tasks.power.s(i, 2) for i in range(10)]).delay()
    assert task.status == Task.STATUS_WAITING
    assert drain() == 10
    task.wait()
    assert (task.status, task.result) == (Task.STATUS_SUCCESS, [i**2 for i in range(10)])
    assert Task.objects.filter(top=task).count() == 10


def test_group_result_keeps_the_given_order_when_members_finish_in_another(worker):
    task = group([tasks.echo.s(i) for i in range(5)]).delay()
    run_in_order(*reversed(members(task)))
    task.refresh_from_db()
    assert (task.status, task.result) == (Task.STATUS_SUCCESS, [[i] for i in range(5)])


def test_group_with_failed_members_ends_incomplete_once_all_finished_naming_them(worker):
    task = group([tasks.fails_for.s(i, failing=[1, 3]) for i in range(5)]).delay()
    first, *others = members(task)
    run_in_order(others[0])  # member 1 fails: the group waits for the others all the same
    task.refresh_from_db()
    assert task.status == Task.STATUS_WAITING
    run_in_order(first, *others[1:])
    task.refresh_from_db()
    assert task.status == Task.STATUS_INCOMPLETE
    assert task.error.startswith("2 of 5 members failed: #1 ")
    assert "#3 " in task.error and "ended Failure: no 3" in task.error
    failed = task.result["failed"]
    assert [(f["index"], f["status"], f["error"]) for f in failed] == [(1, "F", "no 1"), (3, "F", "no 3")]
    assert failed[0]["task"] == str(others[0].pk)


def test_group_with_a_lost_member_ends_incomplete(worker):
    task = group([tasks.echo.s(1), tasks.echo.s(2)]).delay()
    lost, kept = members(task)
    claims.claim([str(lost.pk)], "gone", ["default"])
    outcomes.lose(lost.pk, "gone", TaskLost("its worker died"))  # as the supervisor does
    run_in_order(kept)
    task.refresh_from_db()
    assert task.status == Task.STATUS_INCOMPLETE
    assert task.error == f"1 of 2 members failed: #0 echo ({lost.pk}) ended Lost: its worker died"


def test_group_error_names_ten_failed_members_and_its_result_lists_them_all(drain):
    task = group([tasks.fails_for.s(i, failing=list(range(12))) for i in range(12)]).delay()
    drain()
    task.wait()
    assert task.error.count(" ended Failure: ") == 10 and task.error.endswith("; and 2 more")
    assert [f["index"] for f in task.result["failed"]] == list(range(12))


def test_group_member_errbacks_are_called_when_that_member_fails(drain):
    task = group([tasks.fails_for.s(1).on_error(tasks.record_errorback, key="m1"),
                  tasks.fails_for.s(2, failing=[2]).on_error(tasks.record_errorback, key="m2")]).delay()
    drain()
    assert task.wait().status == Task.STATUS_INCOMPLETE
    assert list(Record.objects.values_list("key", flat=True)) == [f"m2:{tasks.fails_for.name}:ValueError:no 2"]


def test_group_returned_by_a_task_gives_that_task_its_result(drain):
    task = tasks.returns_group.delay(4)
    drain()
    task.wait()
    assert (task.status, task.result) == (Task.STATUS_SUCCESS, [0, 1, 4, 9])
    assert Task.objects.filter(top=task).count() == 5  # the group and its members, in the task's tree


def test_revoking_a_group_revokes_its_members(drain):
    task = group([tasks.echo.s(i) for i in range(3)]).delay()
    task.revoke()
    assert drain() == 0
    assert set(Task.objects.values_list("status", flat=True)) == {Task.STATUS_REVOKED}


@pytest.mark.parametrize("bad, error, match", [
    ([], InvalidTask, "needs at least one member"),
    (tasks.echo.s(1), InvalidTask, "takes a list of signatures"),
    ([tasks.echo.s(1), 42], InvalidTask, "not 42"),
    ([tasks.echo.s(1), "no.such.task"], TaskNotRegistered, "'no.such.task'"),
    ([tasks.echo.s(1), plain], InvalidTask, "not <function plain"),
])
def test_bad_group_is_refused_at_the_caller_and_nothing_is_written(bad, error, match):
    with pytest.raises(error, match=match):
        group(bad).delay()
    assert not Task.objects.exists()


def test_workflows_are_refused_under_cq_serial(settings):
    settings.CQ_SERIAL = True
    with pytest.raises(InvalidTask, match="CQ_SERIAL"):
        group([tasks.echo.s(1)]).delay()
    assert not Task.objects.exists()


# -- Chords -------------------------------------------------------------------------------


def test_chord_calls_back_once_with_100_results_in_order(drain):
    task = chord([tasks.power.s(i, 1) for i in range(100)])(tasks.records_results.s())
    assert drain() == 101
    task.wait()
    assert (task.status, task.result) == (Task.STATUS_SUCCESS, list(range(100)))
    callback = Task.objects.get(pk=task.waiting_on_id)
    assert (callback.func_name, callback.parent_id) == (tasks.records_results.name, task.pk)
    assert Record.objects.filter(key="callback").count() == 1


def test_chord_callback_gets_the_results_before_its_own_arguments(drain):
    task = chord([tasks.echo.s("a"), tasks.echo.s("b")], tasks.echo.s("own")).delay()
    drain()
    assert task.wait().result == [[["a"], ["b"]], "own"]


def test_chord_with_a_failed_member_skips_the_callback_and_calls_its_errback(drain):
    callback = tasks.records_results.s().on_error(tasks.record_errorback_briefly, key="chord")
    task = chord([tasks.fails_for.s(i, failing=[2, 7]) for i in range(10)])(callback)
    drain()
    task.wait()
    assert task.status == Task.STATUS_INCOMPLETE
    assert "callback did not run" in task.error
    assert "2 of 10 members failed: #2 " in task.error and "#7 " in task.error
    assert [f["index"] for f in task.result["failed"]] == [2, 7]
    assert not Record.objects.filter(key="callback").exists()
    assert not Task.objects.filter(func_name=tasks.records_results.name).exists()
    # The errback is called once, with the chord and an error naming the failed members.
    errbacks = list(Record.objects.filter(key__startswith="chord:").values_list("key", flat=True))
    assert len(errbacks) == 1 and errbacks[0].startswith("chord:cq.chord:CQError:The header failed")


def test_chord_allowing_failures_calls_back_with_none_for_failed_members(drain):
    header = [tasks.fails_for.s(i, failing=[1, 3]) for i in range(5)]
    task = chord(header, allow_failures=True)(tasks.records_results.s())
    drain()
    task.wait()
    assert (task.status, task.result) == (Task.STATUS_SUCCESS, [0, None, 2, None, 4])
    assert Record.objects.filter(key="callback").count() == 1


def test_chord_whose_callback_fails_is_incomplete_and_calls_its_errback_once(drain):
    task = chord([tasks.echo.s(1)])(tasks.failing.s().on_error(tasks.record_errorback_briefly, key="cb"))
    drain()
    task.wait()
    assert task.status == Task.STATUS_INCOMPLETE
    assert task.error.startswith(f"The callback failed: {tasks.failing.name} (")
    assert task.result["failed"][0]["status"] == Task.STATUS_FAILURE
    assert Record.objects.filter(key__startswith="cb:").count() == 1


def test_chord_whose_header_is_revoked_ends_incomplete_without_calling_back(drain):
    task = chord([tasks.echo.s(1), tasks.echo.s(2)])(tasks.records_results.s())
    Task.objects.get(pk=task.waiting_on_id).revoke()
    assert drain() == 0
    task.refresh_from_db()
    assert task.status == Task.STATUS_INCOMPLETE
    assert task.error == "The header failed, so the callback did not run: it ended Revoked"
    assert [(f["func_name"], f["status"]) for f in task.result["failed"]] == [("cq.group", Task.STATUS_REVOKED)]
    assert not Record.objects.exists()


def test_chord_without_a_callback_is_refused_and_nothing_is_written():
    with pytest.raises(InvalidTask, match="no callback"):
        chord([tasks.echo.s(1)]).delay()
    with pytest.raises(TaskNotRegistered):
        chord([tasks.echo.s(1)])("no.such.task")
    with pytest.raises(InvalidTask, match="at least one member"):
        chord([])(tasks.echo.s())
    assert not Task.objects.exists()


# -- Stages -------------------------------------------------------------------------------


def etl(fail: str | None = None) -> list[tuple]:
    names = [("extract", 3), ("clean", 2), ("audit", 2), ("load", 1)]
    return [(tasks.pipeline_step.s(name, fail=name == fail), priority) for name, priority in names]


def test_stages_run_by_priority_each_after_every_step_above_it_finished(drain):
    pipeline = stages(etl(), params={"last": "start"}).delay()
    assert drain() == 4
    pipeline.wait()
    assert pipeline.status == Task.STATUS_SUCCESS, pipeline.error
    # Each stage's steps started after every step of the stage before it had finished.
    steps = [list(Task.objects.filter(parent=stage.pk)) for stage in stage_rows(pipeline)]
    assert [sorted(step.args[0] for step in stage) for stage in steps] == [["extract"], ["audit", "clean"], ["load"]]
    for before, after in pairwise(steps):
        assert max(step.finished for step in before) < min(step.started for step in after)


def test_stages_start_every_step_of_a_priority_together(worker):
    pipeline = stages(etl(), params={}).delay()
    assert worker.run_once(0) == 1  # extract
    clean, audit = members(stage_rows(pipeline)[1])
    # Both steps of priority 2 are queued at once, so that two workers run them in parallel.
    assert (clean.status, audit.status) == (Task.STATUS_QUEUED, Task.STATUS_QUEUED)
    assert clean.submitted == audit.submitted
    assert Task.objects.filter(func_name=tasks.pipeline_step.name).count() == 3  # not load, yet


def test_stages_params_flow_down_and_merge_in_the_order_listed(worker):
    # Given a pipeline whose second stage's steps finish in the reverse of their listed order
    pipeline = stages(etl(), params={"last": "start", "source": "s3"}).delay()
    worker.run_once(0)
    clean, audit = members(stage_rows(pipeline)[1])
    run_in_order(audit, clean)
    worker.drain()
    pipeline.wait()
    # Then each step saw the params of the stages above it, merged in the order listed
    assert pipeline.status == Task.STATUS_SUCCESS
    assert pipeline.result == {"source": "s3", "last": "load", "extract_saw": "start", "clean_saw": "extract",
                               "audit_saw": "extract", "load_saw": "audit"}
    assert clean.wait().kwargs["params"] == {"source": "s3", "last": "extract", "extract_saw": "start"}


def test_stages_stop_at_the_first_failure_and_name_the_failed_step(drain):
    pipeline = stages(etl(fail="clean"), params={"last": "start"}).delay()
    drain()
    pipeline.wait()
    assert pipeline.status == Task.STATUS_FAILURE
    assert pipeline.error.startswith("Stage 2 of 3 (priority 2) failed: 1 of 2 steps failed: #0 ")
    assert "ended Failure: clean broke" in pipeline.error
    failed = pipeline.result["failed"]
    assert (pipeline.result["stage"], failed[0]["func_name"], failed[0]["error"]) == (
        2, tasks.pipeline_step.name, "clean broke")
    assert Task.objects.get(pk=failed[0]["task"]).args == ["clean"]
    assert pipeline.result["params"] == {"last": "extract", "extract_saw": "start"}
    # The step beside it ran; the stage below never started.
    ran = list(Task.objects.filter(func_name=tasks.pipeline_step.name).values_list("args", flat=True))
    assert sorted(ran) == [["audit"], ["clean"], ["extract"]]


def test_stages_keep_the_errbacks_of_later_steps(drain):
    # A later stage's steps are stored as JSON in the pipeline's row until their stage starts.
    broken = tasks.pipeline_step.s("load", fail=True).on_error(tasks.record_errorback, key="load")
    pipeline = stages([(tasks.pipeline_step.s("extract"), 2), (broken, 1)]).delay()
    drain()
    assert pipeline.wait().status == Task.STATUS_FAILURE
    assert Record.objects.get().key == f"load:{tasks.pipeline_step.name}:RuntimeError:load broke"


def test_stages_step_returning_something_else_than_a_dict_fails_its_stage(drain):
    pipeline = stages([(tasks.returns_a_string, 1), (tasks.pipeline_step.s("after"), 0)]).delay()
    drain()
    pipeline.wait()
    assert pipeline.status == Task.STATUS_FAILURE
    assert "returned 'not a dict', not a dict of params to update" in pipeline.error


def test_stages_accept_registered_names(drain):
    pipeline = stages([(tasks.adds_one.name, 2), (tasks.adds_one.name, 1)], params={"n": 1}).delay()
    assert drain() == 2
    assert pipeline.wait().result == {"n": 3}


def test_stages_log_to_the_pipeline_task(drain):
    pipeline = stages([(tasks.pipeline_step.s("one"), 1)], params={"last": "x"}).delay()
    drain()
    pipeline.wait()
    assert pipeline.result == {"last": "one", "one_saw": "x"}
    messages = [record["message"] for record in pipeline.logs]
    assert messages == [f"Stage 1 of 1 (priority 1): {tasks.pipeline_step.name}", "one saw {'last': 'x'}"]


@pytest.mark.parametrize("steps, params, error, match", [
    ([], None, InvalidTask, "at least one step"),
    ([tasks.echo.s()], None, InvalidTask, "takes \\(step, priority\\) pairs"),
    ([(tasks.echo.s(), "high")], None, InvalidTask, "must be an integer"),
    ([(tasks.echo.s(), True)], None, InvalidTask, "must be an integer"),
    ([(tasks.pipeline_step.s("a", params={}), 1)], None, InvalidTask, "given params= by the pipeline"),
    ([("no.such.task", 1)], None, TaskNotRegistered, "'no.such.task'"),
    ([(tasks.echo.s(), 1)], {"when": object()}, InvalidTask, "params of task 'cq.stages' are not JSON"),
    ([(tasks.echo.s(), 1)], ["not", "a", "dict"], InvalidTask, "params as a dict"),
])
def test_bad_stages_are_refused_at_the_caller_and_nothing_is_written(steps, params, error, match):
    with pytest.raises(error, match=match):
        stages(steps, params=params).delay()
    assert not Task.objects.exists()


def test_members_and_callbacks_get_their_functions_priority_fields_and_limits(drain):
    summed = chord([tasks.bills_customer.s("acme", 1), tasks.bills_customer.s("zeta", 2)])(
        tasks.records_results.s())
    members = Task.objects.filter(func_name=tasks.bills_customer.name).order_by("concurrency_key")
    assert [(m.concurrency_key, m.priority, m.fields) for m in members] == [
        ("customer:acme", 4, {"kind": "billing"}), ("customer:zeta", 4, {"kind": "billing"})]
    drain()
    assert summed.wait().result == [1, 2]
