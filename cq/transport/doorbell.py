"""Ringing and hearing doorbells: "task <id> is ready".

On a channels-redis layer (cq's own or channels-redis's), doorbells go to Redis and back from
the caller's thread (``cq.transport.direct``). Any other layer is reached through its async
API, on one long-lived event loop in a daemon thread of the process: channels-redis keeps its
connection pool per event loop, so ``async_to_sync(layer.send)`` would open a new Redis
connection per call (about 3 ms), and a shared loop keeps one for the life of the process.
Events (``cq.transport.events``) use that loop too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import threading
import uuid
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

from django.conf import settings as django_settings
from django.db import transaction

from ..conf import settings
from ..layers import get_layer
from ..validation import excerpt
from . import direct
from .direct import SEND_TIMEOUT

logger = logging.getLogger("cq.doorbell")  # its name before cq's subpackages: LOGGING settings use it

T = TypeVar("T")
MESSAGE_TYPE = "cq.task"
DEFAULT_QUEUE = "default"


class _LoopThread:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="cq-doorbell", daemon=True).start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise


_loop: _LoopThread | None = None
_loop_lock = threading.Lock()


def _process_loop() -> _LoopThread:
    global _loop
    with _loop_lock:
        if _loop is None or _loop.pid != os.getpid():  # a forked child needs a loop of its own
            _loop = _LoopThread()
        return _loop


def run(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run a channel-layer coroutine on the process's doorbell loop and return its result."""
    return _process_loop().run(coro, timeout)


def start(coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
    """Start a coroutine on the process's doorbell loop without waiting for it."""
    return asyncio.run_coroutine_threadsafe(coro, _process_loop().loop)


def channel(queue: str) -> str:
    """The channel of a queue's doorbells: ``CQ_CHANNEL`` for "default", ``CQ_CHANNEL.<queue>`` otherwise."""
    return settings.CHANNEL if queue == DEFAULT_QUEUE else f"{settings.CHANNEL}.{queue}"


def ring(task_ids: Iterable[Any], queue: str = DEFAULT_QUEUE, priorities: Iterable[int] | None = None) -> None:
    """Tell workers of ``queue`` these tasks are ready (those of higher ``priorities`` first, on
    cq's Redis layer). Never raises: a lost doorbell only delays a task, because workers also
    find QUEUED rows in the database (after ``CQ_QUEUED_GRACE`` s).
    """
    messages = [{"type": MESSAGE_TYPE, "id": str(task_id)} for task_id in task_ids]
    if not messages:
        return
    priorities = list(priorities or [0] * len(messages))
    try:
        way = _direct()
        if way is not None:
            way.send_many(channel(queue), messages, priorities)
        else:
            run(_send(channel(queue), messages, priorities), SEND_TIMEOUT)
    except Exception as error:
        logger.warning("Could not ring the doorbell of %d task(s) (%s: %s); they stay QUEUED and a "
                       "worker will pick them up from the database.", len(messages), type(error).__name__, error)


def ring_on_commit(tasks: Iterable[tuple[Any, str, int]]) -> None:
    """Ring for ``(task_id, queue, priority)`` once the current transaction commits (at once in
    autocommit)."""
    by_queue: dict[str, tuple[list[Any], list[int]]] = {}
    for task_id, queue, priority in tasks:
        ids, priorities = by_queue.setdefault(queue, ([], []))
        ids.append(task_id)
        priorities.append(priority)
    for queue, (ids, priorities) in by_queue.items():
        transaction.on_commit(functools.partial(ring, ids, queue, priorities))


def _direct() -> direct.Direct | None:
    """The direct way to the doorbell layer, if it keeps its messages in Redis."""
    alias = getattr(django_settings, "CHANNEL_LAYERS", {}).get(settings.CHANNEL_LAYER, {})
    return direct.of(get_layer(), alias.get("CONFIG"))


async def _send(name: str, messages: list[dict[str, str]], priorities: list[int]) -> None:
    layer = get_layer()
    if hasattr(layer, "send_many"):
        await layer.send_many(name, messages, priorities)
    else:
        for message in messages:
            await layer.send(name, message)


def listen(queues: Iterable[str], count: int, timeout: float) -> list[str]:
    """Wait up to ``timeout`` seconds for doorbells of ``queues``; return up to ``count`` task ids.

    A message that names no task is logged (an excerpt) and skipped. Raises whatever the channel
    layer raises (Redis down, for one): the worker backs off. On Redis, a wait longer than
    ``direct.LONGEST_WAIT`` ends empty-handed after it.
    """
    channels = [channel(q) for q in queues]
    way = _direct()
    if way is not None:
        messages = way.receive_many(channels, count, timeout)
    else:
        messages = run(_receive(channels, count, timeout), timeout + SEND_TIMEOUT)
    ids = []
    for message in messages:
        try:
            ids.append(str(uuid.UUID(message.get("id"))))
        except (AttributeError, TypeError, ValueError):
            logger.error("Ignoring a doorbell that names no task: %s", excerpt(message, 200))
    return ids


async def _receive(channels: list[str], count: int, timeout: float) -> list[dict[str, Any]]:
    layer = get_layer()
    if hasattr(layer, "receive_many"):
        return await layer.receive_many(channels, count, timeout)
    # Any other layer: one message, from the first channel that has one.
    waits = [asyncio.ensure_future(layer.receive(name)) for name in channels]
    done, pending = await asyncio.wait(waits, timeout=max(timeout, 0.01), return_when=asyncio.FIRST_COMPLETED)
    for future in pending:
        future.cancel()
    return [future.result() for future in done]
