"""The JSON API under cq.urls: every endpoint, with its permission and bad-input cases."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission, User

from cq.models import Task
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)

API = "/cq/api/tasks/"


@pytest.fixture
def staff(client):
    client.force_login(User.objects.create(username="staff", is_staff=True))
    return client


@pytest.fixture
def ann(client):
    client.force_login(User.objects.create(username="ann"))
    return client


def post(client, url, body=None, raw=None):
    return client.post(url, raw if raw is not None else json.dumps(body or {}), content_type="application/json")


def error(response, status):
    assert response.status_code == status, response.content
    return response.json()["error"]["code"]


def test_staff_list_tasks_newest_first_and_filter_them(staff, drain):
    added = tasks.add.delay(1, 2)
    failed = tasks.failing.delay()
    drain()
    listed = staff.get(API).json()["tasks"]
    assert [t["id"] for t in listed] == [str(failed.pk), str(added.pk)]
    assert [t["id"] for t in staff.get(API, {"status": "F"}).json()["tasks"]] == [str(failed.pk)]
    assert [t["id"] for t in staff.get(API, {"func_name": tasks.add.name}).json()["tasks"]] == [str(added.pk)]
    assert [t["result"] for t in staff.get(API, {"q": str(added.pk)}).json()["tasks"]] == [3]
    assert staff.get(API, {"since": "2999-01-01T00:00:00Z"}).json()["tasks"] == []
    assert error(staff.get(API, {"since": "yesterday"}), 400) == "invalid"
    assert error(staff.get(API, {"since": "2026-02-30T00:00"}), 400) == "invalid"  # no such day
    assert error(staff.get(API, {"window": "1y"}), 400) == "invalid"
    assert len(staff.get(API, {"window": "15m"}).json()["tasks"]) == 2
    # Without an offset, a time is in the current time zone (no naive-datetime warning: they are errors here).
    assert len(staff.get(API, {"until": "2999-01-01T00:00"}).json()["tasks"]) == 2
    assert error(staff.get(API, {"owner": "ann"}), 400) == "invalid"  # cq.Task has no owner


def test_one_task_comes_with_its_tree_and_logs(staff, drain):
    top = tasks.logs_with_subtask.delay()
    drain()
    body = staff.get(f"{API}{top.pk}/").json()
    assert body["task"]["status"] == "S"
    assert [t["parent"] for t in body["tree"]] == [str(top.pk)]
    assert "Log from task_b." in [line["message"] for line in body["logs"]]
    assert error(staff.get(f"{API}00000000-0000-0000-0000-000000000000/"), 404) == "not_found"
    assert error(staff.get(f"{API}not-an-id/"), 404) == "not_found"


def test_staff_create_a_task_by_its_registered_name(staff, drain):
    response = post(staff, API, {"func_name": tasks.add.name, "args": [2, 3], "options": {"priority": 5}})
    assert response.status_code == 201
    created = Task.objects.get(pk=response.json()["task"]["id"])
    assert (created.status, created.priority) == ("Q", 5)
    drain()
    assert created.wait().result == 5


@pytest.mark.parametrize("body, raw, code", [
    ({"func_name": "os.system", "args": ["true"]}, None, "unknown_task"),
    ({"args": [1]}, None, "invalid"),
    ({"func_name": tasks.add.name, "args": {"a": 1}}, None, "invalid"),
    ({"func_name": tasks.add.name, "options": {"parent": "x"}}, None, "invalid"),
    ({"func_name": tasks.add.name, "options": {"priority": 1000}}, None, "invalid"),
    (None, "{not json", "invalid_json"),
    (None, "[1, 2]", "invalid_json"),
])
def test_bad_creations_are_refused_and_write_nothing(staff, body, raw, code):
    assert error(post(staff, API, body, raw), 400) == code
    assert not Task.objects.exists()


def test_who_may_do_what(client, ann):
    others = tasks.echo.delay_args(submit=False)
    assert error(post(ann, API, {"func_name": tasks.echo.name}), 403) == "forbidden"
    assert error(ann.get(API), 403) == "forbidden"
    assert error(ann.get(f"{API}{others.pk}/"), 403) == "forbidden"
    assert error(post(ann, f"{API}{others.pk}/revoke/"), 403) == "forbidden"
    assert error(ann.get(f"{API}{others.pk}/revoke/"), 405) == "method_not_allowed"
    user = User.objects.get(username="ann")
    user.user_permissions.add(Permission.objects.get(codename="add_task"))
    assert post(ann, API, {"func_name": tasks.echo.name}).status_code == 201
    client.logout()
    assert error(client.get(API), 401) == "not_logged_in"
    assert Task.objects.get(pk=others.pk).status == "P"


def test_revoke_retry_and_rerun(staff, drain):
    pending = tasks.echo.delay_args(submit=False)
    assert post(staff, f"{API}{pending.pk}/revoke/").json()["task"]["status"] == "E"
    assert error(post(staff, f"{API}{pending.pk}/revoke/"), 409) == "wrong_status"
    failed = tasks.fails_first_time.delay("api")
    drain()
    assert failed.wait().status == "F"
    retried = post(staff, f"{API}{failed.pk}/retry/").json()["task"]
    assert (retried["id"], retried["status"]) == (str(failed.pk), "Q")
    drain()
    assert failed.wait().status == "S"
    assert error(post(staff, f"{API}{failed.pk}/retry/"), 409) == "wrong_status"
    again = post(staff, f"{API}{failed.pk}/rerun/").json()["task"]
    assert again["id"] != str(failed.pk) and again["args"] == ["api"]
