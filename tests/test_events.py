"""Live events (cq.events) and their websocket (cq.consumers), through a real Redis channel layer."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser, User

from cq.models import Task
from cq.routing import websocket_urlpatterns
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)

heard: list[tuple[str, dict]] = []


def remember(task_id, event):
    heard.append((task_id, event))


def allow_all(user, task):
    return True


@pytest.fixture
def notifier(settings):
    heard.clear()
    settings.CQ_NOTIFIERS = ["tests.test_events.remember"]
    return heard


def test_notifiers_hear_every_change_of_status_in_order(notifier, drain):
    task = tasks.add.delay(1, 2)
    drain()
    assert [event["status"] for task_id, event in notifier if task_id == str(task.pk)] == ["Q", "R", "S"]
    assert {event["func_name"] for _, event in notifier} == {tasks.add.name}


def test_notifiers_hear_logs_progress_and_revokes(notifier, drain):
    from tests.testapp.models import Record

    Record.objects.create(key="open")
    reporting = tasks.reports_progress.delay(1, "open")
    drain()
    kinds = [(event["event"], event.get("progress", {}).get("percent")) for _, event in notifier
             if event["task"] == str(reporting.pk)]
    assert ("progress", 100.0) in kinds
    logging_task = tasks.logs_with_subtask.delay()
    drain()
    assert any(event["event"] == "log" and event["top"] == str(logging_task.pk) for _, event in notifier)
    pending = tasks.echo.delay_args(submit=False)
    pending.revoke()
    assert (str(pending.pk), "E") in [(task_id, event["status"]) for task_id, event in notifier]


def test_a_failing_notifier_is_logged_and_the_task_still_runs(settings, drain, caplog):
    from django.core import checks

    settings.CQ_NOTIFIERS = ["tests.test_events.no_such_function_here", "tests.test_events.heard"]
    settings.CQ_TASK_ACCESS = "tests.nowhere.allow"
    found = [(m.id, m.msg.split(",")[0]) for m in checks.run_checks() if m.id == "cq.E001"]
    assert found == [("cq.E001", "CQ_NOTIFIERS names 'tests.test_events.no_such_function_here'"),
                     ("cq.E001", "CQ_NOTIFIERS names 'tests.test_events.heard'"),
                     ("cq.E001", "CQ_TASK_ACCESS names 'tests.nowhere.allow'")]
    with pytest.raises(ImportError):
        tasks.add.delay(1, 1)  # past the checks, a wrong path still fails where the change is made
    settings.CQ_TASK_ACCESS = None
    settings.CQ_NOTIFIERS = ["tests.test_events.explode"]
    task = tasks.add.delay(1, 1)
    drain()
    assert task.wait().status == Task.STATUS_SUCCESS
    assert "Notifier" in caplog.text and "failed" in caplog.text


def explode(task_id, event):
    raise RuntimeError("notifier down")


async def connect(path, user):
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), path)
    communicator.scope["user"] = user
    connected, code = await communicator.connect()
    return communicator, connected, code


async def test_a_task_trees_events_arrive_in_order_over_the_websocket(events_layer, drain, database_thread):
    staff = await sync_to_async(User.objects.create)(username="staff", is_staff=True)
    top = await sync_to_async(tasks.logs_with_subtask.delay_args)(submit=False)
    communicator, connected, _ = await connect(f"/ws/cq/tasks/{top.pk}/", staff)
    assert connected
    await sync_to_async(top.submit)()
    await sync_to_async(drain)()
    seen = []
    while not (seen and seen[-1]["task"] == str(top.pk) and seen[-1]["status"] == "S"):
        seen.append(await communicator.receive_json_from(timeout=10))
    mine = [e["status"] for e in seen if e["task"] == str(top.pk) and e["event"] == "status"]
    # Its PENDING event was sent as it was written, before the socket subscribed: maybe heard.
    assert mine in (["Q", "R", "W", "S"], ["P", "Q", "R", "W", "S"])
    child = [e for e in seen if e["task"] != str(top.pk)]
    # The subtask is written PENDING while its parent runs, queued once the parent returned.
    assert [e["status"] for e in child if e["event"] == "status"] == ["P", "Q", "R", "S"]
    assert any(e["event"] == "log" for e in seen)
    await communicator.disconnect()


async def test_the_websocket_refuses_who_may_not_watch(events_layer, settings, database_thread):
    ann = await sync_to_async(User.objects.create)(username="ann")
    task = await sync_to_async(tasks.echo.delay_args)(submit=False)
    for path, user, code in [
        (f"/ws/cq/tasks/{task.pk}/", AnonymousUser(), 4401),
        ("/ws/cq/tasks/", ann, 4403),  # all tasks: staff only
        (f"/ws/cq/tasks/{task.pk}/", ann, 4403),  # not hers
        ("/ws/cq/tasks/00000000-0000-0000-0000-000000000000/", ann, 4404),
        ("/ws/cq/tasks/not-a-task/", ann, 4404),
    ]:
        communicator, connected, closed_with = await connect(path, user)
        assert (path, connected, closed_with) == (path, False, code)
    settings.CQ_TASK_ACCESS = "tests.test_events.allow_all"
    communicator, connected, _ = await connect(f"/ws/cq/tasks/{task.pk}/", ann)
    assert connected
    await communicator.disconnect()


def test_task_finished_is_sent_once_per_final_status_after_the_commit(drain):
    from django.db import transaction

    from cq.signals import task_finished

    heard = []

    def receiver(sender, task, **kwargs):
        heard.append((task.pk, task.status, transaction.get_connection().in_atomic_block))

    task_finished.connect(receiver)
    try:
        done, failed, revoked = tasks.add.delay(1, 2), tasks.failing.delay(), tasks.echo.delay_args(submit=False)
        revoked.revoke()
        drain()
    finally:
        task_finished.disconnect(receiver)
    assert sorted(heard) == sorted([(done.pk, "S", False), (failed.pk, "F", False), (revoked.pk, "E", False)])
