"""The websocket of live events (cq.transport.events): ``cq.routing.websocket_urlpatterns``.

``ws/cq/tasks/`` streams the events of every task, to staff only;
``ws/cq/tasks/<id>/`` those of one task: of its whole tree for a top-level
task, of the task alone for a subtask. Staff see every task; other users the
tasks ``CQ_TASK_ACCESS(user, task)`` allows, by default those whose ``owner``
column (on a task model of the project's own) is them (``cq.web.access``).
Anonymous users are refused. Refusals close the socket with 4401 (not logged in), 4403 (not
allowed) or 4404 (no such task).
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from ..models import find_task
from ..transport import events
from .access import can_see


class TaskEventsConsumer(AsyncJsonWebsocketConsumer):
    groups: list[str] = []

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        task_id = self.scope["url_route"]["kwargs"].get("task_id")
        if task_id is None:
            if not user.is_staff:
                await self.close(code=4403)
                return
            self.watching = [events.ALL]
        else:
            task = await database_sync_to_async(find_task)(task_id)
            if task is None:
                await self.close(code=4404)
                return
            if not await database_sync_to_async(can_see)(user, task):
                await self.close(code=4403)
                return
            top_level = task.top_id is None
            self.watching = [events.group_of_tree(task.pk) if top_level else events.group_of_task(task.pk)]
        for group in self.watching:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "watching", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def cq_event(self, message: dict[str, Any]) -> None:
        await self.send_json({key: value for key, value in message.items() if key != "type"})

