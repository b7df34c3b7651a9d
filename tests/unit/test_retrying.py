"""Retry from the failed step (``task.retry_failed()``, ``cq.workflows.retrying``): only what
failed runs again, what succeeded is reused, and the tree carries on. Tasks run in this process
(``drain``) through the real channel layer; ``mendable`` fails while its key is "broken"."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from cq.canvas import chord, group, stages
from cq.exceptions import InvalidTask
from cq.models import Task, TaskStatus
from cq.workflows import retrying
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)


def brake(*keys: str) -> None:
    for key in keys:
        Record.objects.create(key=f"broken:{key}")


def mend(*keys: str) -> None:
    Record.objects.filter(key__in=[f"broken:{key}" for key in keys]).delete()


def runs(key: str) -> int:
    return Record.objects.filter(key=f"ran:{key}").count()


def row(key: str) -> Task:
    """The one mendable task run with ``key``."""
    return Task.objects.get(func_name=tasks.mendable.name, args__0=key)


def fresh(task: Task) -> Task:
    task.refresh_from_db()
    return task


def test_a_subtask_tree_runs_the_failed_subtask_again_and_its_parent_settles(drain):
    brake("t:b")
    top = tasks.mendable_tree.delay("t")
    drain()
    assert fresh(top).status == TaskStatus.INCOMPLETE
    failed = row("t:b")
    assert failed.status == TaskStatus.FAILURE and failed.attempt == 1
    mend("t:b")

    top.retry_failed()

    assert top.status == TaskStatus.WAITING and top.finished is None and top.error is None
    failed = fresh(failed)
    assert failed.status == TaskStatus.QUEUED and failed.retries == 1 and failed.error is None
    assert failed.history == [{"status": "F", "error": "t:b is broken", "exception": "builtins.RuntimeError",
                               "finished": failed.history[0]["finished"], "attempt": 1}]
    assert failed.history[0]["finished"] is not None
    drain()
    assert fresh(top).status == TaskStatus.SUCCESS and top.result == "t"
    assert (runs("t:a"), runs("t:b"), runs("t:c")) == (1, 2, 1)
    assert fresh(failed).attempt == 2 and failed.status == TaskStatus.SUCCESS


def test_a_chain_in_a_tree_runs_its_failed_link_and_then_the_links_that_never_ran(drain):
    brake("c:a")
    top = tasks.mendable_tree.delay("c")
    drain()
    assert fresh(top).status == TaskStatus.INCOMPLETE
    assert row("c:c").status == TaskStatus.PENDING  # chained after the failed link: never launched
    mend("c:a")

    top.retry_failed()

    assert row("c:a").status == TaskStatus.QUEUED and row("c:c").status == TaskStatus.PENDING
    drain()
    assert fresh(top).status == TaskStatus.SUCCESS
    assert (runs("c:a"), runs("c:b"), runs("c:c")) == (2, 1, 1)


def test_a_top_level_chain_goes_on_from_its_failed_link(drain):
    brake("l:2")
    first = tasks.mendable.delay("l:1")
    second = first.chain(tasks.mendable, ("l:2",))
    third = second.chain(tasks.mendable, ("l:3",))
    drain()
    assert [fresh(t).status for t in (first, second, third)] == ["S", "F", "P"]
    mend("l:2")

    second.retry_failed()  # a failure of its own function: the same row, queued again

    drain()
    assert [fresh(t).status for t in (first, second, third)] == ["S", "S", "S"]
    assert (runs("l:1"), runs("l:2"), runs("l:3")) == (1, 2, 1)
    assert second.retries == 1 and second.history[0]["status"] == "F"


def test_a_group_runs_its_failed_members_again_and_ends_with_every_result_in_order(drain):
    brake("g:1", "g:3")
    workflow = group([tasks.mendable.s(f"g:{n}", n) for n in range(4)]).delay()
    drain()
    assert fresh(workflow).status == TaskStatus.INCOMPLETE
    assert len(workflow.result["failed"]) == 2
    mend("g:1", "g:3")

    workflow.retry_failed()

    assert workflow.status == TaskStatus.WAITING and workflow.result is None
    assert workflow.history[0]["status"] == "I" and "2 of 4 members failed" in workflow.history[0]["error"]
    drain()
    assert fresh(workflow).status == TaskStatus.SUCCESS and workflow.result == [0, 1, 2, 3]
    assert [runs(f"g:{n}") for n in range(4)] == [1, 2, 1, 2]


def test_a_chord_whose_header_failed_runs_the_failed_members_then_its_callback_once(drain):
    brake("h:2")
    workflow = chord([tasks.mendable.s(f"h:{n}", n) for n in (1, 2, 3)])(tasks.total.s())
    drain()
    assert fresh(workflow).status == TaskStatus.INCOMPLETE
    assert not Task.objects.filter(func_name=tasks.total.name).exists()  # the callback never ran
    mend("h:2")

    workflow.retry_failed()

    drain()
    assert fresh(workflow).status == TaskStatus.SUCCESS and workflow.result == 6
    callback = Task.objects.get(func_name=tasks.total.name)
    assert callback.args == [[1, 2, 3]] and callback.attempt == 1
    assert [runs(f"h:{n}") for n in (1, 2, 3)] == [1, 2, 1]


def test_a_chord_allowing_failures_runs_the_failed_members_then_the_same_callback_with_the_full_list(drain):
    brake("a:2")
    workflow = chord([tasks.mendable.s(f"a:{n}", n) for n in (1, 2, 3)], allow_failures=True)(tasks.total.s())
    drain()
    # The callback was given None for the failed member, and failed on it.
    callback = Task.objects.get(func_name=tasks.total.name)
    assert callback.status == TaskStatus.FAILURE and callback.args == [[1, None, 3]]
    assert fresh(workflow).status == TaskStatus.INCOMPLETE
    mend("a:2")

    workflow.retry_failed()

    assert fresh(callback).status == TaskStatus.PENDING  # it waits for the header again
    drain()
    assert fresh(workflow).status == TaskStatus.SUCCESS and workflow.result == 6
    assert Task.objects.filter(func_name=tasks.total.name).count() == 1
    callback = fresh(callback)
    assert callback.args == [[1, 2, 3]] and callback.attempt == 2 and callback.retries == 1
    assert callback.history[0]["exception"] == "builtins.TypeError"
    assert [runs(f"a:{n}") for n in (1, 2, 3)] == [1, 2, 1]
    assert "callback_task" not in workflow.kwargs


def test_a_chord_allowing_failures_whose_callback_failed_alone_runs_only_the_callback(drain):
    workflow = chord([tasks.mendable.s(f"o:{n}", n) for n in (1, 2)], allow_failures=True)(tasks.failing.s())
    drain()
    assert fresh(workflow).status == TaskStatus.INCOMPLETE
    plan = retrying.plan(workflow)
    assert [t.func_name for t in plan.queued] == [tasks.failing.name] and not plan.chords
    workflow.retry_failed()
    drain()
    assert fresh(workflow).status == TaskStatus.INCOMPLETE  # failing always fails
    assert [runs(f"o:{n}") for n in (1, 2)] == [1, 1]
    assert Task.objects.get(func_name=tasks.failing.name).retries == 1


def test_a_pipeline_stopped_at_stage_two_goes_on_to_its_next_stages(drain):
    brake("p:2b")
    pipeline = stages([(tasks.mendable.s("p:1"), 3), (tasks.mendable.s("p:2a"), 2),
                       (tasks.mendable.s("p:2b"), 2), (tasks.mendable.s("p:3"), 1)], params={"job": 1}).delay()
    drain()
    assert fresh(pipeline).status == TaskStatus.FAILURE and "Stage 2 of 3" in pipeline.error
    assert runs("p:3") == 0
    mend("p:2b")

    pipeline.retry_failed()

    drain()
    assert fresh(pipeline).status == TaskStatus.SUCCESS
    assert pipeline.result == {"job": 1, "p:1": True, "p:2a": True, "p:2b": True, "p:3": True}
    assert [runs(key) for key in ("p:1", "p:2a", "p:2b", "p:3")] == [1, 1, 2, 1]
    assert Task.objects.filter(parent=pipeline.pk).count() == 3  # one row per stage, none written twice


def test_the_demos_shape_a_task_returning_a_pipeline_whose_step_returns_a_chord(drain):
    brake("d:2")
    top = tasks.mendable_job.delay("d")
    drain()
    assert fresh(top).status == TaskStatus.INCOMPLETE and runs("d:last") == 0
    mend("d:2")
    started = {t.pk: t.started for t in Task.objects.filter(top=top.pk, status=TaskStatus.SUCCESS)}

    top.retry_failed()

    drain()
    assert fresh(top).status == TaskStatus.SUCCESS
    assert top.result == {"job": "d", "d:first": True, "total": 6, "d:last": True}
    assert [runs(f"d:{n}") for n in (1, 2, 3)] == [1, 2, 1] and runs("d:first") == runs("d:last") == 1
    for pk, when in started.items():  # nothing that had succeeded ran again
        assert Task.objects.get(pk=pk).started == when


def test_a_task_that_failed_in_its_own_function_is_queued_again_like_retry(drain):
    brake("own")
    task = tasks.mendable.delay("own")
    drain()
    mend("own")
    task.retry_failed()
    assert task.status == TaskStatus.QUEUED and task.retries == 1 and len(task.history) == 1
    drain()
    assert fresh(task).status == TaskStatus.SUCCESS and runs("own") == 2


def test_there_is_nothing_to_retry_on_a_success_a_subtask_or_a_retry_already_under_way(drain):
    brake("n:b")
    top = tasks.mendable_tree.delay("n")
    done = tasks.mendable.delay("n:ok")
    drain()
    with pytest.raises(InvalidTask, match="Success: only a top-level task that ended Incomplete or Failure"):
        done.retry_failed()
    with pytest.raises(InvalidTask, match="part of a tree"):
        row("n:b").retry_failed()
    top.retry_failed()
    with pytest.raises(InvalidTask, match="Waiting"):
        top.retry_failed()
    assert fresh(row("n:b")).retries == 1 and len(row("n:b").history) == 1


def test_two_concurrent_retries_queue_the_failed_rows_once(drain):
    brake("x:1")
    workflow = group([tasks.mendable.s("x:0"), tasks.mendable.s("x:1")]).delay()
    drain()
    mend("x:1")
    barrier = threading.Barrier(2)
    outcomes: list[bool] = []

    def retry() -> None:
        try:
            barrier.wait(10)
            outcomes.append(retrying.retry_failed(Task.objects.get(pk=workflow.pk)))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=retry) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == [False, True]
    again = row("x:1")
    assert again.status == TaskStatus.QUEUED and again.retries == 1 and len(again.history) == 1
    assert len(fresh(workflow).history) == 1
    drain()
    assert fresh(workflow).status == TaskStatus.SUCCESS and runs("x:1") == 2
