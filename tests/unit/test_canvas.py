"""Subtasks, chains, revoking and submitting, through the real channel layer and worker loop."""

from __future__ import annotations

import pytest

from cq.exceptions import DuplicateSubmitError, InvalidTask
from cq.models import Task
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)


def statuses(parent: Task) -> list[str]:
    return [t.status for t in parent.subtasks.order_by("created")]


def test_task_with_a_subtask_keeps_its_own_result(drain):
    task = tasks.spawns_subtask_returns_own.delay()
    assert drain() == 2
    task.wait()
    assert (task.status, task.result) == (Task.STATUS_SUCCESS, "d")


def test_task_returning_a_subtask_takes_its_result(drain):
    task = tasks.returns_subtask_result.delay()
    drain()
    task.wait()
    assert (task.status, task.result) == (Task.STATUS_SUCCESS, "a")
    assert task.waiting_on.parent_id == task.pk


def test_task_returning_a_subsubtask_takes_its_result(drain, worker):
    task = tasks.returns_subsubtask_result.delay()
    assert drain() == 3
    task.wait()
    assert (task.status, task.result) == (Task.STATUS_SUCCESS, "a")
    assert Task.objects.filter(top=task).count() == 2


def test_parents_wait_while_their_subtasks_are_queued(worker):
    # Given a task whose subtask has a subtask of its own
    task = tasks.returns_subsubtask_result.delay()
    # When only the first two tasks have run
    assert worker.run_once(0) == 1
    assert worker.run_once(0) == 1
    # Then both parents wait and the innermost task is queued
    task.wait(timeout=50)
    assert task.status == Task.STATUS_WAITING
    child = task.subtasks.get()
    assert child.status == Task.STATUS_WAITING
    assert child.subtasks.get().status == Task.STATUS_QUEUED


def test_failed_subtask_makes_its_parent_incomplete(drain):
    task = tasks.returns_failing_subtask.delay()
    drain()
    task.wait()
    assert task.status == Task.STATUS_INCOMPLETE
    assert task.result is None
    assert "ended Failure: b" in task.error


def test_failed_subsubtask_makes_every_ancestor_incomplete(drain):
    task = tasks.returns_failing_subsubtask.delay()
    drain()
    task.wait()
    assert task.status == Task.STATUS_INCOMPLETE
    assert task.subtasks.get().status == Task.STATUS_INCOMPLETE
    assert task.error


def test_chain_runs_after_its_previous_task_and_reads_its_result(drain):
    task = tasks.subtask_then_chain.delay()
    assert drain() == 3
    task.wait()
    assert (task.status, task.result) == (Task.STATUS_SUCCESS, 5)


def test_chain_on_a_top_level_task_runs_after_it(drain):
    first = tasks.three.delay()
    second = first.chain(tasks.add_previous, (4,))
    assert second.status == Task.STATUS_PENDING
    drain()
    second.wait()
    assert (second.status, second.result) == (Task.STATUS_SUCCESS, 7)
    assert second.previous_id == first.pk


def test_chain_on_a_finished_task_starts_at_once(drain):
    first = tasks.three.delay()
    drain()
    first.wait()
    second = first.chain(tasks.add_previous, (1,))
    drain()
    assert second.wait().result == 4


def test_chain_after_a_failure_runs_only_when_forced(drain):
    first = tasks.failing.delay()
    plain = first.chain(tasks.named, ("plain",))
    forced = first.chain(tasks.named, ("forced",), force_chain=True)
    drain()
    plain.refresh_from_db()
    assert forced.wait().result == "forced"
    assert plain.status == Task.STATUS_PENDING


def test_tree_with_forced_chains(drain):
    a = tasks.force_a.delay(force_chain=True)
    drain()
    a.wait()
    b, e, h = a.subtasks.order_by("created")
    assert [a.status, b.status, e.status, h.status] == ["I", "I", "S", "I"]
    assert statuses(b) == ["S", "F"]
    assert statuses(e) == ["S", "S"]
    assert statuses(h) == ["S", "F"]


def test_tree_without_forced_chains_stops_at_the_failure(drain):
    a = tasks.force_a.delay(force_chain=False)
    drain()
    a.wait()
    b, e, h = a.subtasks.order_by("created")
    assert [a.status, b.status, e.status, h.status] == ["I", "I", "P", "P"]
    assert statuses(b) == ["S", "F"]
    assert not e.subtasks.exists() and not h.subtasks.exists()


def test_many_subtasks_all_finish_before_their_parent(drain):
    task = tasks.fan_out.delay(20, "fan")
    assert drain() == 21
    task.wait()
    assert (task.status, task.result) == (Task.STATUS_SUCCESS, 20)
    assert Record.objects.filter(key__startswith="fan:").count() == 20


def test_revoke_before_submit_prevents_the_run(drain):
    task = tasks.returns_subtask_result.delay_args(submit=False)
    task.revoke()
    task.submit()  # ignored for a revoked task, as in django-cq
    assert drain() == 0
    assert task.wait().status == Task.STATUS_REVOKED
    assert not task.subtasks.exists()


def test_revoke_after_submit_prevents_the_run(drain):
    task = tasks.returns_subtask_result.delay()
    task.revoke()
    assert drain() == 0
    task.refresh_from_db()
    assert task.status == Task.STATUS_REVOKED
    assert not task.subtasks.exists()


def test_revoke_after_run_revokes_the_waiting_subtasks(worker):
    task = tasks.returns_subtask_result.delay()
    assert worker.run_once(0) == 1
    task.refresh_from_db()
    assert task.status == Task.STATUS_WAITING
    task.revoke()
    assert worker.drain() == 0
    assert task.status == Task.STATUS_REVOKED
    assert task.subtasks.get().status == Task.STATUS_REVOKED


def test_revoking_a_finished_task_keeps_its_status_but_revokes_its_chain(drain):
    first = tasks.failing.delay()
    drain()
    later = first.chain(tasks.named, ("never",))
    first.refresh_from_db()
    first.revoke()
    later.refresh_from_db()
    assert (first.status, later.status) == (Task.STATUS_FAILURE, Task.STATUS_REVOKED)


def test_revoking_a_waiting_subtask_makes_its_parent_incomplete(worker):
    task = tasks.returns_subsubtask_result.delay()
    worker.run_once(0)
    worker.run_once(0)
    task.subtasks.get().revoke()
    task.refresh_from_db()
    assert task.status == Task.STATUS_INCOMPLETE
    assert "Revoked" in task.error


def test_submit_prepends_arguments(drain):
    task = tasks.echo.delay_args(submit=False)
    task.submit("hello")
    drain()
    task.wait()
    assert (task.status, task.args, task.result) == (Task.STATUS_SUCCESS, ["hello"], ["hello"])


def test_submit_prepends_several_arguments_before_existing_ones(drain):
    task = tasks.echo.delay_args(args=("world",), submit=False)
    task.submit("hello", "there")
    drain()
    assert task.wait().result == ["hello", "there", "world"]


def test_submitting_twice_raises(drain):
    task = tasks.echo.delay()
    with pytest.raises(DuplicateSubmitError, match="Queued, not Pending"):
        task.submit()
    assert drain() == 1


def test_pending_task_does_not_run_until_submitted(drain):
    task = tasks.echo.delay_args(submit=False)
    assert drain() == 0
    task.refresh_from_db()
    assert task.status == Task.STATUS_PENDING


def test_subtask_of_a_finished_task_is_refused(drain):
    task = tasks.echo.delay()
    drain()
    task.wait()
    with pytest.raises(InvalidTask, match="finished"):
        task.subtask(tasks.echo)


def test_active_lists_unfinished_tasks(drain):
    done = tasks.echo.delay()
    drain()
    pending = tasks.echo.delay_args(submit=False)
    queued = tasks.echo.delay()
    assert set(Task.objects.active()) == {pending, queued}
    assert done not in Task.objects.active()


def test_failure_codes_sort_before_unfinished_ones():
    # canvas.settle() relies on it to find a failed subtask with a one-row query.
    from cq.models import ERROR, TaskStatus

    unfinished = set(TaskStatus) - set(ERROR) - {TaskStatus.SUCCESS}
    assert max(ERROR) < min(unfinished)


def test_django_cqs_module_chain_and_task_retry(drain):
    from cq.models import chain

    first = tasks.add.delay(1, 2)
    second = chain(tasks.add_previous, (4,), previous=first)
    assert Task.objects.get(pk=second.pk).status == Task.STATUS_PENDING  # waits for first
    drain()
    assert second.wait().result == 7
    with pytest.raises(InvalidTask, match="only a top-level task that ended Failure or Lost"):
        first.retry()  # it succeeded: rerun() would queue a copy
    failed = tasks.failing.delay("once")
    drain()
    assert failed.wait().status == Task.STATUS_FAILURE
    failed.retry()
    failed.refresh_from_db()
    assert (failed.status, failed.retries) == (Task.STATUS_QUEUED, 1)
    drain()
    assert failed.wait().status == Task.STATUS_FAILURE  # ran again, as the same row


def test_django_cqs_import_paths_still_work():
    from cq.decorators import task as decorator
    from cq.models import CQError, DuplicateSubmitError, RepeatingTask, Task, chain, delay, schedule_task
    from cq.tasks import retry_tasks

    assert issubclass(DuplicateSubmitError, CQError)
    assert callable(decorator) and callable(chain) and callable(delay) and callable(schedule_task)
    assert hasattr(RepeatingTask, "submit") and hasattr(Task, "retry") and retry_tasks.name == "cq.tasks.retry_tasks"
