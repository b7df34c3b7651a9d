"""Bulk actions (cq.web.bulk): retrying and revoking every task a list's filters match, through
the JSON API, the dashboard and the module itself, in batches, with a count first."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from cq.models import Task
from cq.web import bulk
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)

API = "/cq/api/bulk/"
heard: list[dict] = []


def remember(task_id, event):
    heard.append(event)


@pytest.fixture
def staff(client):
    client.force_login(User.objects.create(username="staff", is_staff=True))
    return client


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(bulk, "BATCH_SIZE", 2)


def post(client, url, body):
    return client.post(url, json.dumps(body), content_type="application/json")


def failed(drain, n, key="bulk"):
    """``n`` top-level tasks that ended FAILURE, and succeed when run again."""
    made = [tasks.fails_first_time.delay(f"{key}{i}") for i in range(n)]
    drain()
    assert set(Task.objects.filter(pk__in=[t.pk for t in made]).values_list("status", flat=True)) == {"F"}
    return made


def statuses(made):
    return sorted(Task.objects.filter(pk__in=[t.pk for t in made]).values_list("status", flat=True))


# -- The JSON API -------------------------------------------------------------------------------

def test_a_dry_run_counts_what_matches_and_what_the_action_applies_to(staff, drain):
    made = failed(drain, 3)
    added = tasks.add.delay(1, 2)
    drain()
    counted = staff.get(f"{API}retry/", {"status": "F,S"}).json()
    assert counted == {"action": "retry", "matched": 4, "applicable": 3, "skipped": 1}
    assert staff.get(f"{API}revoke/", {"status": "F,S"}).json()["applicable"] == 0
    assert staff.get(f"{API}retry/", {"func_name": tasks.add.name}).json()["matched"] == 1
    assert statuses(made) == ["F"] * 3 and Task.objects.get(pk=added.pk).status == "S"


def test_retry_acts_in_batches_and_answers_with_counts(staff, drain, small_batches, settings, caplog):
    heard.clear()
    settings.CQ_NOTIFIERS = ["tests.unit.test_bulk.remember"]
    made = failed(drain, 5)
    tasks.add.delay(1, 2)
    drain()
    heard.clear()
    with caplog.at_level("INFO", logger="cq.web.bulk"):
        response = post(staff, f"{API}retry/?window=1h", {"expected": 6})
    assert response.status_code == 200, response.content
    assert response.json() == {"action": "retry", "matched": 6, "acted": 5, "skipped": 1, "batches": 3}
    assert statuses(made) == ["Q"] * 5
    assert set(Task.objects.filter(pk__in=[t.pk for t in made]).values_list("retries", flat=True)) == {1}
    assert sorted(event["task"] for event in heard if event["status"] == "Q") == sorted(str(t.pk) for t in made)
    assert "staff (user" in caplog.text and "bulk-retry: 5 of 6 matching tasks, 1 skipped, in 3 batch" in caplog.text
    drain()  # their doorbells rang as each batch committed
    assert statuses(made) == ["S"] * 5


def test_acting_takes_the_count_seen_and_refuses_another_with_both(staff, drain):
    made = failed(drain, 3)
    response = post(staff, f"{API}retry/?status=F", {"expected": 2})
    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "count_changed", "message": "3 tasks match now, not the 2 expected: count them again.",
        "expected": 2, "matched": 3}
    for body in ({}, {"expected": "3"}, {"expected": True}, {"expected": -1}, {"expected": 3, "terminate": True}):
        response = post(staff, f"{API}retry/?status=F", body)
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid", body
    assert post(staff, f"{API}retry/?since=yesterday", {"expected": 3}).status_code == 400
    assert post(staff, f"{API}archive/?status=F", {"expected": 3}).status_code == 404
    assert statuses(made) == ["F"] * 3


def test_only_those_who_may_list_tasks_act_on_them(client, drain):
    made = failed(drain, 2)
    assert client.get(f"{API}retry/").status_code == 401
    client.force_login(User.objects.create(username="ann"))
    for response in (client.get(f"{API}retry/"), post(client, f"{API}retry/", {"expected": 2}),
                     post(client, f"{API}revoke/", {"expected": 2})):
        assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert statuses(made) == ["F"] * 2


def test_revoke_stops_queued_tasks_of_a_function_no_worker_knows(staff, small_batches):
    # Rows queued under a name that this deploy no longer has (renamed, say), and one that still runs.
    gone = [tasks.echo.delay(i) for i in range(3)]
    Task.objects.filter(pk__in=[t.pk for t in gone]).update(func_name="myapp.tasks.renamed_away")
    kept = tasks.echo.delay("kept")
    query = "?status=Q&func_name=myapp.tasks.renamed_away"
    assert staff.get(f"{API}revoke/{query}").json() == {"action": "revoke", "matched": 3, "applicable": 3,
                                                         "skipped": 0}
    done = post(staff, f"{API}revoke/{query}", {"expected": 3}).json()
    assert done == {"action": "revoke", "matched": 3, "acted": 3, "skipped": 0, "batches": 2}
    assert statuses(gone) == ["E"] * 3 and Task.objects.get(pk=kept.pk).status == "Q"


def test_revoke_takes_each_tasks_tree_and_skips_finished_ones(staff, drain):
    parent = tasks.echo.delay_args(submit=False)
    after = parent.chain(tasks.echo, args=("after",))
    finished = tasks.add.delay(1, 1)
    drain()
    query = "?status=P,S&window=1h"
    assert staff.get(f"{API}revoke/{query}").json()["matched"] == 3
    done = post(staff, f"{API}revoke/{query}", {"expected": 3, "terminate": False}).json()
    # Both pending tasks are revoked (the chained one with the first, as revoke() takes it);
    # the finished one is skipped.
    assert (done["acted"], done["skipped"]) == (2, 1)
    assert statuses([parent, after]) == ["E", "E"] and Task.objects.get(pk=finished.pk).status == "S"


# -- The module: batches, each its own transaction --------------------------------------------

@pytest.fixture
def third_batch_fails(monkeypatch):
    """Retry, but the third batch raises."""
    calls = []
    original = bulk.ACTIONS["retry"]

    def act(ids, terminate):
        calls.append(ids)
        if len(calls) == 3:
            raise RuntimeError("the third batch fails")
        return original.act(ids, terminate)

    monkeypatch.setitem(bulk.ACTIONS, "retry", dataclasses.replace(original, act=act))
    return original


def test_each_batch_commits_on_its_own(drain, small_batches, third_batch_fails):
    made = failed(drain, 5)
    user = User.objects.create(username="ops", is_staff=True)
    with pytest.raises(RuntimeError):
        bulk.apply(bulk.ACTIONS["retry"], Task.objects.filter(status="F"), user, expected=5)
    assert statuses(made) == ["F", "Q", "Q", "Q", "Q"]  # two batches of two committed
    # What is left is one task; counted again and expected as such, it is retried.
    done = bulk.apply(third_batch_fails, Task.objects.filter(status="F"), user, expected=1)
    assert (done.matched, done.acted, done.batches) == (1, 1, 1)
    assert statuses(made) == ["Q"] * 5


def test_batches_commit_one_by_one_even_under_atomic_requests(staff, drain, small_batches, third_batch_fails,
                                                               monkeypatch):
    from django.db import connection

    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    made = failed(drain, 5)
    with pytest.raises(RuntimeError):
        post(staff, f"{API}retry/?status=F", {"expected": 5})
    assert statuses(made) == ["F", "Q", "Q", "Q", "Q"]


def test_a_retry_skips_subtasks_and_what_did_not_fail(drain):
    top = tasks.returns_failing_subtask.delay()
    drain()
    sub = Task.objects.get(parent=top.pk)
    assert (Task.objects.get(pk=top.pk).status, sub.status) == ("I", "F")
    user = User.objects.create(username="ops", is_staff=True)
    assert bulk.count(bulk.ACTIONS["retry"], Task.objects.all(), user) == (2, 0)
    done = bulk.apply(bulk.ACTIONS["retry"], Task.objects.all(), user, expected=2)
    assert (done.acted, done.skipped) == (0, 2)
    assert sub.status == Task.objects.get(pk=sub.pk).status == "F"


# -- The dashboard ------------------------------------------------------------------------------

def test_the_dashboard_confirms_the_count_then_retries(drain):
    Task.objects.bulk_create([Task(func_name=tasks.fails_first_time.name, args=[f"many{i}"], status="F")
                              for i in range(1234)])
    tasks.add.delay(2, 2)
    drain()
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.create(username="staff", is_staff=True))
    assert 'href="/cq/bulk/retry/?status=F"' in client.get("/cq/", {"status": "F"}).content.decode()
    page = client.get("/cq/bulk/retry/", {"status": "F"}).content.decode()
    assert "Retry 1,234 failed or lost tasks?" in page
    assert 'name="expected" value="1234"' in page
    # A POST without the form's CSRF token is refused, as everywhere in Django.
    assert client.post("/cq/bulk/retry/?status=F", {"expected": "1234"}).status_code == 403
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
    response = client.post("/cq/bulk/retry/?status=F", {"expected": "1234", "csrfmiddlewaretoken": token})
    assert response.status_code == 200
    assert 'data-acted="1234" data-skipped="0"' in response.content.decode()
    assert "in 3 batches" in response.content.decode()
    assert not Task.objects.filter(status="F").exists()
    assert Task.objects.filter(status="Q").count() == 1234


def test_the_dashboard_asks_again_when_the_count_changed(staff, drain):
    made = failed(drain, 2)
    page = staff.get("/cq/bulk/revoke/?status=F").content.decode()
    assert "No unfinished tasks to revoke" in page and "<form method=\"post\">" not in page  # failed is finished
    response = staff.post("/cq/bulk/revoke/?status=F", {"expected": "2"})  # posted all the same: all skipped
    assert 'data-acted="0" data-skipped="2"' in response.content.decode()
    response = staff.post("/cq/bulk/retry/?status=F", {"expected": "5"})
    assert response.status_code == 409
    page = response.content.decode()
    assert "2 tasks match now, not 5" in page and "Retry 2 failed or lost tasks?" in page
    assert staff.post("/cq/bulk/retry/?status=F", {"expected": "many"}).status_code == 400
    assert staff.get("/cq/bulk/retry/", {"since": "last week"}).status_code == 400
    assert staff.get("/cq/bulk/archive/").status_code == 404
    assert statuses(made) == ["F", "F"]


def test_the_dashboards_bulk_pages_are_for_staff_only(client, drain):
    made = failed(drain, 1)
    client.force_login(User.objects.create(username="ann"))
    assert client.get("/cq/bulk/retry/").status_code == 302
    assert client.post("/cq/bulk/retry/", {"expected": "1"}).status_code == 302
    assert statuses(made) == ["F"]


# -- A task model with an owner: each user acts on their own ----------------------------------

def allow_odd_tickets(user, task):
    return task.owner_id == user.pk and task.fields["ticket"] % 2 == 1


@pytest.mark.custom_model
def test_a_user_acts_only_on_the_tasks_they_may_see(owned, client, settings):
    ann, bob = User.objects.create(username="ann"), User.objects.create(username="bob")
    mine = [tasks.echo.using(fields={"owner": ann, "ticket": i}).delay_args(submit=False) for i in range(4)]
    theirs = tasks.echo.using(fields={"owner": bob, "ticket": 1}).delay_args(submit=False)
    client.force_login(ann)
    assert client.get(f"{API}revoke/").json()["matched"] == 4
    # With CQ_TASK_ACCESS, each task is asked about: here, only the odd tickets are ann's to touch.
    settings.CQ_TASK_ACCESS = "tests.unit.test_bulk.allow_odd_tickets"
    assert client.get(f"{API}revoke/").json() == {"action": "revoke", "matched": 2, "applicable": 2, "skipped": 0}
    assert post(client, f"{API}revoke/", {"expected": 4}).status_code == 409
    assert post(client, f"{API}revoke/", {"expected": 2}).json()["acted"] == 2
    assert [owned.objects.get(pk=t.pk).status for t in mine] == ["P", "E", "P", "E"]
    assert owned.objects.get(pk=theirs.pk).status == "P"
