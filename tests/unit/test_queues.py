"""Queue controls (cq.engine.queues) and every way of setting them: cq_queue, the JSON API, the
admin and the dashboard."""

from __future__ import annotations

import json
import logging

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command

from cq.engine import queues
from cq.engine.transitions import claims
from cq.exceptions import InvalidQueue
from cq.models import Queue, Task
from cq.transport import doorbell, events
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def doorbells(queue: str = "reports") -> list[str]:
    """The task ids whose doorbells wait on ``queue`` (taking them)."""
    return doorbell.listen([queue], 100, 0)


def test_a_change_is_kept_logged_with_who_made_it_and_sent_to_watchers(events_layer, caplog):
    from channels.layers import get_channel_layer

    layer = get_channel_layer("default")
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(events.ALL, channel)
    with caplog.at_level(logging.INFO, logger="cq.queues"):
        queues.pause("reports", by="alice")
        queues.limit("reports", 3, by="bob")
    row = Queue.objects.get(name="reports")
    assert (row.paused, row.concurrency, row.changed_by) == (True, 3, "bob")
    assert "Queue reports paused by alice." in caplog.text
    assert "Queue reports capped at 3 running by bob." in caplog.text

    async def both():
        return [await layer.receive(channel), await layer.receive(channel)]

    heard = async_to_sync(both)()
    assert [(e["event"], e["queue"], e["paused"], e["concurrency"], e["by"]) for e in heard] == [
        ("queue", "reports", True, None, "alice"), ("queue", "reports", True, 3, "bob")]


@pytest.mark.parametrize("change", [{"name": "Reports!"}, {"concurrency": 0}, {"concurrency": -1},
                                    {"concurrency": True}, {"concurrency": "4"}, {"concurrency": 2.5},
                                    {"paused": "yes"}])
def test_bad_controls_are_refused_and_nothing_is_written(change):
    with pytest.raises(InvalidQueue):
        queues.change(change.pop("name", "reports"), by="alice", **change)
    assert not Queue.objects.exists()


def test_a_worker_leaves_a_paused_queue_alone_and_hears_its_doorbells_once_resumed(worker, drain):
    queues.pause("reports", by="alice")
    worker.queues = ["reports", "default"]
    held, free = tasks.report.delay("held"), tasks.echo.delay("free")
    assert drain() == 1
    assert Task.objects.get(pk=free.pk).status == Task.STATUS_SUCCESS
    assert Task.objects.get(pk=held.pk).status == Task.STATUS_QUEUED
    queues.resume("reports", by="alice")
    assert drain() == 1  # its doorbell waited in Redis
    assert Task.objects.get(pk=held.pk).status == Task.STATUS_SUCCESS


def test_a_doorbell_heard_just_before_a_pause_is_rung_again():
    created = tasks.report.delay("caught")
    heard = doorbells()
    queues.pause("reports", by="alice")
    assert claims.claim(heard, "w", queues.serving(["reports"])) == []
    assert doorbells() == [str(created.pk)]  # waiting for the resume
    assert Task.objects.get(pk=created.pk).status == Task.STATUS_QUEUED


def test_a_cap_puts_back_what_exceeds_it_and_a_finish_wakes_the_next():
    queues.limit("reports", 1, by="alice")
    first, second = tasks.report.delay("a"), tasks.report.delay("b")
    claimed = claims.claim(doorbells(), "w", ["reports"])
    assert [t.pk for t in claimed] == [first.pk]
    assert Task.objects.get(pk=second.pk).status == Task.STATUS_QUEUED
    assert doorbells() == []  # a task put back waits without a doorbell...
    from cq.engine import execution

    execution.run(claimed[0])
    assert doorbells() == [str(second.pk)]  # ...until a task of its queue stops running


def test_raising_a_cap_rings_as_many_waiting_tasks_as_it_frees():
    queues.limit("reports", 1, by="alice")
    created = [tasks.report.delay(str(i)) for i in range(5)]
    claims.claim(doorbells(), "w", ["reports"])
    assert doorbells() == []
    queues.limit("reports", 3, by="alice")
    assert doorbells() == [str(t.pk) for t in created[1:3]]  # two more may run, the oldest first
    queues.limit("reports", None, by="alice")
    assert sorted(doorbells()) == sorted(str(t.pk) for t in created[1:])  # no cap: every waiting one


def test_cq_queue_command(capsys):
    call_command("cq_queue", "pause", "reports")
    call_command("cq_queue", "limit", "reports", "4")
    call_command("cq_queue", "show")
    out = capsys.readouterr().out
    assert "Queue reports: paused." in out
    assert "Queue reports: paused, at most 4 at once." in out
    assert "reports: paused, at most 4 at once (changed " in out and "(cq_queue))" in out
    call_command("cq_queue", "resume", "reports")
    call_command("cq_queue", "limit", "reports", "none")
    assert "Queue reports: running." in capsys.readouterr().out
    for bad in (["limit", "reports", "0"], ["limit", "reports", "many"], ["pause", "Bad Name"]):
        with pytest.raises(CommandError):
            call_command("cq_queue", *bad)


@pytest.fixture
def operator(client):
    user = User.objects.create(username="olga", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="change_queue"))
    client.force_login(user)
    return client


def post(client, url, body):
    return client.post(url, json.dumps(body), content_type="application/json")


def test_the_api_lists_queues_and_changes_them_for_those_allowed(operator):
    tasks.report.delay("waiting")
    answer = post(operator, "/cq/api/queues/reports/", {"paused": True, "concurrency": 2})
    assert answer.status_code == 200, answer.content
    assert answer.json()["queue"] | {"changed": None} == {"queue": "reports", "paused": True, "concurrency": 2,
                                                          "changed": None, "changed_by": "olga"}
    listed = {row["queue"]: row for row in operator.get("/cq/api/queues/").json()["queues"]}
    assert listed["reports"]["paused"] and listed["reports"]["queued"] == 1
    assert post(operator, "/cq/api/queues/reports/", {"concurrency": None}).json()["queue"]["concurrency"] is None


@pytest.mark.parametrize("body", [{}, {"paused": "yes"}, {"concurrency": 0}, {"pause": True}])
def test_the_api_refuses_bad_changes(operator, body):
    answer = post(operator, "/cq/api/queues/reports/", body)
    assert answer.status_code == 400, answer.content
    assert not Queue.objects.exists()


def test_the_api_refuses_who_may_not_change_queues(client):
    assert post(client, "/cq/api/queues/reports/", {"paused": True}).status_code == 401
    client.force_login(User.objects.create(username="sam", is_staff=True))  # staff, without the permission
    assert post(client, "/cq/api/queues/reports/", {"paused": True}).status_code == 403
    assert client.get("/cq/api/queues/").status_code == 200
    client.force_login(User.objects.create(username="ann"))
    assert client.get("/cq/api/queues/").status_code == 403
    assert not Queue.objects.exists()


def test_the_dashboard_shows_controls_with_buttons_only_to_those_allowed(operator, client):
    queues.limit("reports", 2, by="alice")
    page = operator.get("/cq/queues/").content.decode()
    assert "Pause" in page and "2 at once" in page and "by alice" in page
    client.force_login(User.objects.create(username="sam", is_staff=True))
    page = client.get("/cq/queues/").content.decode()
    assert "2 at once" in page and "Pause" not in page


def test_the_admin_saves_through_the_controls(admin_client, caplog):
    with caplog.at_level(logging.INFO, logger="cq.queues"):
        answer = admin_client.post("/admin/cq/queue/add/", {"name": "reports", "paused": "on", "concurrency": "3"})
        assert answer.status_code == 302, answer.content
        admin_client.post("/admin/cq/queue/", {"action": "resume", "_selected_action": ["reports"]})
    row = Queue.objects.get(name="reports")
    assert (row.paused, row.concurrency, row.changed_by) == (False, 3, "admin")
    assert "Queue reports paused, capped at 3 running by admin." in caplog.text
    assert "Queue reports resumed by admin." in caplog.text
    assert admin_client.post("/admin/cq/queue/add/", {"name": "Bad Name"}).status_code == 200  # the form's error
    assert not Queue.objects.filter(name="Bad Name").exists()
