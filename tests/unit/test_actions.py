"""Which actions may run on which rows (``cq.engine.actions``), asked alike by the task page (which
shows only those buttons), the JSON API (409 with the reason otherwise) and the bulk actions."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User

from cq.canvas import chord, group, stages
from cq.engine import actions
from cq.exceptions import InvalidTask
from cq.models import Task, TaskStatus
from cq.web import bulk
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)

API = "/cq/api/tasks/"


@pytest.fixture
def staff(client):
    client.force_login(User.objects.create(username="staff", is_staff=True))
    return client


def post(client, url):
    return client.post(url, "{}", content_type="application/json")


def refused(client, url):
    response = post(client, url)
    assert response.status_code == 409, response.content
    error = response.json()["error"]
    assert error["code"] == "wrong_status"
    return error["message"]


def can(task):
    task.refresh_from_db()
    return {name for name, allowed in actions.available(task).items() if allowed}


def test_a_finished_task_may_only_be_re_run_and_an_unfinished_one_only_stopped_or_re_run(drain):
    queued = tasks.add.delay(1, 2)
    assert can(queued) == {"revoke", "terminate", "rerun"}
    drain()
    assert can(queued) == {"rerun"}
    failed = tasks.failing.delay()
    drain()
    assert can(failed) == {"retry", "retry_failed", "rerun"}


def test_a_workflows_own_rows_are_never_re_run_and_never_retried_as_a_row(drain):
    Record.objects.create(key="broken:w:1")
    pipeline = stages([(tasks.mendable.s("w:0"), 2), (tasks.mendable.s("w:1"), 1)]).delay()
    drain()
    assert pipeline.wait().status == TaskStatus.FAILURE
    # A pipeline row ended FAILURE, yet no worker runs it: only the retry from the failed step works.
    assert can(pipeline) == {"retry_failed"}
    assert "no worker runs" in actions.refusal("retry", pipeline)
    with pytest.raises(InvalidTask, match="no worker runs"):
        pipeline.retry()  # the model's verb asks the same rules
    stage = Task.objects.get(parent=pipeline.pk, kwargs__stage=2)
    step = Task.objects.get(parent=stage.pk)
    assert can(stage) == set() and can(step) == set()  # inside the tree: retried by its top
    assert "re-run the task that started the workflow" in actions.refusal("rerun", step)
    user_subtask = tasks.mendable_tree.delay("u")
    drain()
    assert "rerun" in can(Task.objects.get(parent=user_subtask.pk, args=["u:b"]))  # a plain subtask: yes


def test_retry_failed_needs_something_to_run_again(drain):
    workflow = group([tasks.add.s(1, 2)]).delay()
    drain()
    assert "Success" in actions.refusal("retry_failed", workflow.wait())
    # A stage whose step succeeded with an unusable result: nothing that failed can be run again.
    pipeline = stages([(tasks.step_returns.s(3), 1)]).delay()
    drain()
    assert pipeline.wait().status == TaskStatus.FAILURE
    assert "Nothing in task" in actions.refusal("retry_failed", pipeline)


def test_the_api_answers_409_with_the_reason_for_each_action_that_cannot_run(staff, drain):
    done = tasks.add.delay(1, 2)
    callback = chord([tasks.add.s(1, 1)])(tasks.total.s())
    drain()
    assert "has finished (Success)" in refused(staff, f"{API}{done.pk}/revoke/")
    assert "Success" in refused(staff, f"{API}{done.pk}/retry/")
    assert "Success" in refused(staff, f"{API}{done.pk}/retry-failed/")
    member = Task.objects.get(parent__parent=callback.pk, func_name=tasks.add.name)
    assert "re-run the task that started the workflow" in refused(staff, f"{API}{callback.pk}/rerun/")
    assert "re-run the task that started the workflow" in refused(staff, f"{API}{member.pk}/rerun/")
    assert "part of a tree" in refused(staff, f"{API}{member.pk}/retry-failed/")
    assert Task.objects.filter(func_name=tasks.add.name).count() == 2  # nothing was queued
    response = staff.post(f"{API}{done.pk}/revoke/", json.dumps({"terminate": True}), content_type="application/json")
    assert response.status_code == 409 and response.json()["error"]["action"] == "terminate"


def test_the_api_retries_from_the_failed_step_and_a_second_retry_is_refused(staff, drain):
    Record.objects.create(key="broken:api:1")
    workflow = group([tasks.mendable.s("api:0"), tasks.mendable.s("api:1")]).delay()
    drain()
    Record.objects.filter(key="broken:api:1").delete()
    response = post(staff, f"{API}{workflow.pk}/retry-failed/")
    assert response.status_code == 201, response.content
    member = Task.objects.get(args=["api:1"])
    assert response.json()["task"]["status"] == "W" and response.json()["again"] == [str(member.pk)]
    assert "Waiting" in refused(staff, f"{API}{workflow.pk}/retry-failed/")
    drain()
    assert workflow.wait().status == TaskStatus.SUCCESS


def test_the_task_page_shows_only_the_buttons_that_would_work(staff, drain):
    Record.objects.create(key="broken:page:1")
    workflow = chord([tasks.mendable.s("page:0"), tasks.mendable.s("page:1")])(tasks.total.s())
    drain()
    page = staff.get(f"/cq/tasks/{workflow.pk}/").content.decode()
    assert 'data-action="retry-failed/"' in page
    for absent in ('data-action="rerun/"', 'data-action="retry/"', 'data-action="revoke/"'):
        assert absent not in page
    member = Task.objects.get(args=["page:1"])
    page = staff.get(f"/cq/tasks/{member.pk}/").content.decode()
    assert "data-action=" not in page  # a failed member of a chord: its top retries it


def test_bulk_retry_leaves_a_workflows_rows_alone(drain):
    Record.objects.create(key="broken:bulk:0")
    pipeline = stages([(tasks.mendable.s("bulk:0"), 1)]).delay()
    failed = tasks.failing.delay()
    drain()
    found = Task.objects.filter(status=TaskStatus.FAILURE)
    assert set(found.values_list("pk", flat=True)) >= {pipeline.pk, failed.pk}
    assert bulk.count(bulk.ACTIONS["retry"], found, User(is_staff=True)) == (found.count(), 1)
    assert bulk.ACTIONS["retry"].act([pipeline.pk, failed.pk], False) == 1
    assert pipeline.wait().status == TaskStatus.FAILURE
