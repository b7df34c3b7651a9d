"""Worker rows: each worker records itself and beats every ``CQ_HEARTBEAT_INTERVAL`` seconds.

The beat comes from a thread of the worker process, so it stops when the
process dies or hangs; the sweeper then turns that worker's RUNNING tasks
into LOST ones.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

from django.db import close_old_connections, connections
from django.utils import timezone

from .conf import settings
from .models import Worker

logger = logging.getLogger(__name__)


class Heartbeat:
    """Keeps a worker's row up to date from a daemon thread until :meth:`stop`."""

    def __init__(self, name: str, queues: Iterable[str], status: Callable[[], tuple[Any, int]]) -> None:
        self.name = name
        self.queues = list(queues)
        self.status = status  # () -> (current task id or None, tasks processed)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"cq-heartbeat-{name}", daemon=True)

    def start(self) -> None:
        now = timezone.now()
        Worker.objects.update_or_create(name=self.name, defaults={
            "host": socket.gethostname(), "pid": os.getpid(), "queues": self.queues, "started": now,
            "last_heartbeat": now, "stopped": None, "current_task": None, "processed": 0, "terminate_task": None})
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=settings.HEARTBEAT_INTERVAL + 5)
        current, processed = self.status()
        Worker.objects.filter(name=self.name).update(stopped=timezone.now(), current_task=None, processed=processed)

    def _run(self) -> None:
        try:
            while not self._stopping.wait(settings.HEARTBEAT_INTERVAL):
                self.beat()
        finally:
            connections.close_all()

    def beat(self) -> None:
        current, processed = self.status()
        try:
            Worker.objects.filter(name=self.name).update(
                last_heartbeat=timezone.now(), current_task_id=current, processed=processed)
        except Exception:
            logger.exception("Worker %s could not record its heartbeat.", self.name)
            close_old_connections()
