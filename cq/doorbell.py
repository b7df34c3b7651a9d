"""Ringing and hearing doorbells: "task <id> is ready".

Every channel-layer call of a process runs on one long-lived event loop in a
daemon thread. channels-redis keeps its connection pool per event loop, so
``async_to_sync(layer.send)`` would open a new Redis connection per call
(about 3 ms); a shared loop keeps one pool for the life of the process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import uuid
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

from django.db import transaction

from .conf import settings
from .layers import get_layer

logger = logging.getLogger(__name__)

T = TypeVar("T")
MESSAGE_TYPE = "cq.task"
#: How long a caller waits for Redis before giving up on a doorbell.
SEND_TIMEOUT = 5.0


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


def run(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run a channel-layer coroutine on the process's doorbell loop and return its result."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.pid != os.getpid():  # a forked child needs a loop of its own
            _loop = _LoopThread()
        loop = _loop
    return loop.run(coro, timeout)


def ring(task_ids: Iterable[Any]) -> None:
    """Tell workers these tasks are ready. Never raises: a lost doorbell only delays a task,
    because workers also find QUEUED rows in the database (after ``CQ_QUEUED_GRACE`` seconds).
    """
    messages = [{"type": MESSAGE_TYPE, "id": str(task_id)} for task_id in task_ids]
    if not messages:
        return
    try:
        run(_send(messages), SEND_TIMEOUT)
    except Exception as error:
        logger.warning("Could not ring the doorbell of %d task(s) (%s: %s); they stay QUEUED and a "
                       "worker will pick them up from the database.", len(messages), type(error).__name__, error)


def ring_on_commit(task_ids: Iterable[Any]) -> None:
    """Ring once the current transaction commits (at once in autocommit mode)."""
    ids = list(task_ids)
    if ids:
        transaction.on_commit(lambda: ring(ids))


async def _send(messages: list[dict[str, str]]) -> None:
    layer = get_layer()
    if hasattr(layer, "send_many"):
        await layer.send_many(settings.CHANNEL, messages)
    else:
        for message in messages:
            await layer.send(settings.CHANNEL, message)


def listen(count: int, timeout: float) -> list[str]:
    """Wait up to ``timeout`` seconds for doorbells and return up to ``count`` task ids.

    Raises whatever the channel layer raises (Redis down, for one): the worker backs off.
    """
    messages = run(_receive(count, timeout), timeout + SEND_TIMEOUT)
    ids = []
    for message in messages:
        try:
            ids.append(str(uuid.UUID(str(message.get("id")))))
        except (AttributeError, ValueError):
            logger.error("Ignoring a doorbell that names no task: %r", message)
    return ids


async def _receive(count: int, timeout: float) -> list[dict[str, Any]]:
    layer = get_layer()
    if hasattr(layer, "receive_many"):
        return await layer.receive_many(settings.CHANNEL, count, timeout)
    try:
        return [await asyncio.wait_for(layer.receive(settings.CHANNEL), max(timeout, 0.01))]
    except TimeoutError:
        return []
