"""The websocket of live events (cq.web.consumers, cq.routing), through a real Redis channel layer."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser, User

from cq.routing import websocket_urlpatterns
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def allow_all(user, task):
    return True


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
    settings.CQ_TASK_ACCESS = "tests.integration.test_websocket.allow_all"
    communicator, connected, _ = await connect(f"/ws/cq/tasks/{task.pk}/", ann)
    assert connected
    await communicator.disconnect()
