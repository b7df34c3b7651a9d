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


# -- Odd input: always a 400 in the API's shape, never a 500, and nothing written ---------------

NESTED = "[" * 100_000 + "]" * 100_000


def create(client, **options):
    return post(client, API, {"func_name": tasks.echo.name, "args": [1], "options": options})


@pytest.mark.parametrize("options", [
    {"eta": "not a time"}, {"eta": "99999-01-01T00:00:00Z"}, {"eta": "9999-12-31T23:59:59-23:00"},
    {"eta": "0001-01-01T00:00:00+01:00"}, {"eta": "2026-02-30T00:00:00Z"}, {"eta": "2026-01-01T00:00:00+99:00"},
    {"eta": 5}, {"eta": ["2026-01-01"]},
    {"countdown": 1e300}, {"countdown": -1}, {"countdown": "5"}, {"countdown": True}, {"countdown": [5]},
    {"countdown": 10 ** 400}, {"countdown": 5, "eta": "2030-01-01T00:00:00Z"},
    {"queue": 5}, {"queue": ["default"]}, {"queue": {"a": 1}}, {"queue": "Not A Queue"}, {"queue": "q\u0000"},
    {"queue": ""},
    {"result_ttl": -1}, {"result_ttl": 1.5}, {"result_ttl": True}, {"result_ttl": 2_147_483_648}, {"result_ttl": "5"},
    {"priority": 101}, {"priority": -101}, {"priority": 1.5}, {"priority": True}, {"priority": "5"},
    {"priority": 10 ** 30},
    {"unique_key": "k\u0000"}, {"unique_key": ""}, {"unique_key": 5}, {"unique_key": "k" * 256},
    {"fields": {"note": "a\u0000b"}}, {"fields": {"a\u0000": 1}}, {"fields": [1]}, {"fields": {"status": "S"}},
])
def test_odd_options_are_refused_with_400(staff, options):
    assert error(create(staff, **options), 400) == "invalid"
    assert not Task.objects.exists()


@pytest.mark.parametrize("raw", [
    '{"func_name": "echo", "args": [NaN]}', '{"func_name": "echo", "args": [Infinity]}',
    '{"func_name": "echo", "args": [-Infinity]}', '{"func_name": "echo", "kwargs": {"x": NaN}}',
    '{"func_name": "echo", "options": {"countdown": NaN}}', '{"func_name": "echo", "options": {"countdown": Infinity}}',
    '{"func_name": "echo", "args": [1e999]}',  # read as infinity
    '{"func_name": "echo", "args": [' + "1" * 5000 + "]}",  # more digits than Python turns into an int
    '{"func_name": "echo", "args": ["\\u0000"]}', '{"func_name": "echo", "kwargs": {"\\u0000": 1}}',
    '{"func_name": "echo", "args": ["\\ud800"]}',  # a lone surrogate: not Unicode
    '{"func_name": "echo\\u0000"}',
    '{"func_name": "echo", "args": ' + NESTED + "}", NESTED, '{"a": ' * 100_000 + "1" + "}" * 100_000,
    '{"func_name": "echo", "args": ' + "[" * 300 + "]" * 300 + "}",  # deeper than cq stores
    b'{"func_name": "echo", "args": ["\xff"]}',  # not UTF-8
])
def test_bodies_json_or_cq_cannot_take_are_refused_with_400(staff, raw):
    response = post(staff, API, raw=raw)
    assert response.status_code == 400, response.content
    assert set(response.json()["error"]) == {"code", "message"}
    assert not Task.objects.exists()


@pytest.mark.parametrize("query", [
    {"status": "S\u0000"}, {"func_name": "x\u0000"}, {"since": "9999-12-31T23:59:59-23:00"},
    {"until": "0001-01-01T00:00:00+01:00"}, {"since": "2026-01-01T00:00:00+99:00"}, {"since": "\u0000"},
    {"owner": "a\u0000"}, {"window": "\u0000"},
])
def test_odd_list_filters_are_refused_with_400(staff, query):
    assert error(staff.get(API, query), 400) == "invalid"


def test_odd_ids_and_action_bodies(staff):
    pending = tasks.echo.delay_args(submit=False)
    for task_id in ("%00", "x" * 5000, "%ff%fe"):
        assert error(staff.get(f"{API}{task_id}/"), 404) == "not_found"
        assert error(post(staff, f"{API}{task_id}/revoke/"), 404) == "not_found"
    for raw in ("[NaN]", NESTED, '{"terminate": NaN}'):
        assert error(post(staff, f"{API}{pending.pk}/revoke/", raw=raw), 400) == "invalid_json"
    assert Task.objects.get(pk=pending.pk).status == "P"


def test_a_body_over_djangos_size_limit_is_a_400(staff, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = post(staff, API, {"func_name": tasks.echo.name, "args": ["x" * 2000]})
    assert error(response, 400) == "too_large"
    assert not Task.objects.exists()
