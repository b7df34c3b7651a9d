"""Live events: a small JSON message for every change of a task, for browsers and notifiers.

A change of status, a progress report and published log lines each make one
event. A change of status is sent once the transaction that made it commits (at
once in autocommit); progress and log lines at once, so that they are seen
while the task runs. Events go to:

- the channel layer ``CQ_EVENTS_LAYER`` (``"default"``; events are off when
  ``CHANNEL_LAYERS`` has no such alias), in three groups: the task's own
  (``cq.task.<id>``), its tree's (``cq.tree.<top-level id>``) and ``cq.all``;
  the message's ``type`` is ``cq.event``, so a consumer handles it in
  ``cq_event()``. Sends go through the process's doorbell loop and nobody
  waits for them: a worker never slows down for a browser. On a channels-redis
  layer, only the groups that have a member are sent to: one round trip finds
  them, where a group send costs two even to an empty group. It waits at most
  ``direct.LOOK_TIMEOUT`` for Redis; if Redis does not answer, events are
  dropped for ``QUIET`` seconds (nobody could receive them anyway).
- every callable named in ``CQ_NOTIFIERS``, called ``notify(task_id, event)``
  in the process that made the change; an error is logged, never raised.

An operator's change of a queue's controls is an event of ``cq.all`` too: ``{"event": "queue",
"queue": name, "paused": ..., "concurrency": ..., "by": who, "at": ISO time}``.

A task's event is a dict: ``{"event": "status" | "progress" | "log", "task": id,
"top": id of its top-level task, "func_name": ..., "status": ..., "at": ISO
time}``, plus ``progress`` for a progress event and ``records`` for log lines.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings as django_settings
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from .. import signals
from ..conf import settings
from ..statuses import DONE
from . import direct, doorbell

logger = logging.getLogger("cq.events")  # its name before cq's subpackages: LOGGING settings use it

ALL = "cq.all"


def group_of_task(task_id: Any) -> str:
    return f"cq.task.{task_id}"


def group_of_tree(top_id: Any) -> str:
    return f"cq.tree.{top_id}"


def status(tasks: list[Any]) -> None:
    """Tasks changed status (as they now are in memory); for those that finished, ``task_finished``
    is sent too, once committed."""
    if enabled():
        events = [_event("status", task) for task in tasks]
        if events:
            transaction.on_commit(functools.partial(publish, events))
    if signals.task_finished.has_listeners():
        finished = [task for task in tasks if task.status in DONE]
        if finished:
            transaction.on_commit(functools.partial(_finished, finished))


def _finished(tasks: list[Any]) -> None:
    for task in tasks:
        signals.task_finished.send(type(task), task=task)


def progress(task: Any) -> None:
    """A task reported progress: sent at once, not at its commit, to be seen while it runs."""
    if enabled():
        publish([_event("progress", task, progress=dict(task.progress))])


def log(task: Any, records: list[dict[str, Any]]) -> None:
    """A task published log lines: sent at once, like progress."""
    if enabled():
        publish([_event("log", task, records=records)])


def enabled() -> bool:
    """Whether anybody listens: an events layer is configured, or a notifier."""
    return bool(_notifiers()) or settings.EVENTS_LAYER in getattr(django_settings, "CHANNEL_LAYERS", {})


def _event(kind: str, task: Any, **extra: Any) -> dict[str, Any]:
    return {"event": kind, "task": str(task.pk), "top": str(task.top_id or task.pk), "func_name": task.func_name,
            "status": task.status, "at": timezone.now().isoformat(), **extra}


def publish(events: list[dict[str, Any]]) -> None:
    """Hand ``events`` to the notifiers, and to the events layer without waiting for it."""
    for notify in _notifiers():
        for event in events:
            try:
                notify(event["task"], event)
            except Exception:
                logger.exception("Notifier %r failed on an event of task %s.", notify, event["task"])
    _send_to_groups([(group, {"type": "cq.event", **event}) for event in events
                     for group in (group_of_task(event["task"]), group_of_tree(event["top"]), ALL)])


def queue(event: dict[str, Any]) -> None:
    """An operator changed a queue's controls (``{"event": "queue", "queue": name, ...}``, see
    ``cq.engine.queues``): sent to ``cq.all`` once the change commits. Notifiers hear of tasks only."""
    transaction.on_commit(functools.partial(_send_to_groups, [(ALL, {"type": "cq.event", **event})]))


def _send_to_groups(sends: list[tuple[str, dict[str, Any]]]) -> None:
    if settings.EVENTS_LAYER not in getattr(django_settings, "CHANNEL_LAYERS", {}):
        return
    layer = get_channel_layer(settings.EVENTS_LAYER)
    way = direct.of(layer)
    if way is not None:  # on Redis: only to the groups somebody is in
        sends = _listened(way, sends)
    if sends:
        doorbell.start(_send(layer, sends)).add_done_callback(_log_failure)


#: When the events layer's Redis did not answer a look for listeners within LOOK_TIMEOUT, events
#: are dropped for this many seconds: a worker then waits on it once in that time, at most.
QUIET = 5.0
_quiet_until = 0.0


def _listened(way: direct.Direct, sends: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """Those of ``sends`` whose group has a member, found in one round trip (a group send costs
    two, even to an empty group)."""
    global _quiet_until
    if time.monotonic() < _quiet_until:
        return []
    try:
        listened = way.groups_with_members(group for group, _message in sends)
    except Exception as error:
        _quiet_until = time.monotonic() + QUIET
        logger.warning("Could not reach the events layer (%s: %s); dropping task events for %.0f s.",
                       type(error).__name__, error, QUIET)
        return []
    return [(group, message) for group, message in sends if group in listened]


async def _send(layer: Any, sends: list[tuple[str, dict[str, Any]]]) -> None:
    async with _in_order():  # sends started one after another finish in that order
        for group, message in sends:
            await layer.group_send(group, message)


_locks: dict[Any, asyncio.Lock] = {}


def _in_order() -> asyncio.Lock:
    """The doorbell loop's lock of event sends (asyncio.Lock wakes its waiters first come, first served)."""
    loop = asyncio.get_running_loop()
    if loop not in _locks:
        _locks[loop] = asyncio.Lock()
    return _locks[loop]


def _log_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("Could not send task events: %s", future.exception())


def _notifiers() -> list[Callable[[str, dict[str, Any]], None]]:
    return _imported(tuple(settings.NOTIFIERS))


@functools.cache
def _imported(paths: tuple[str, ...]) -> list[Callable[[str, dict[str, Any]], None]]:
    return [import_string(path) for path in paths]
