"""Worker rows and their heartbeats, by the database's clock.

Each start of a worker process is an *incarnation* with a name of its own
(``host:pid:token``): a restarted container that reuses a pid is still a new
worker, so the heartbeat of a new process never revives a dead one's row.

Under ``cq_runworker`` the beats come from the supervisor, a process that never
runs task code: a task holding the GIL in a long C call cannot starve them. The
supervisor beats for each worker process that is alive; when one dies its row
stops beating, and the sweeper turns its RUNNING tasks into LOST ones. Times are
the database's (``Now()``), so no host's clock decides whether a worker is alive.

A beat is one UPDATE of the worker's row: its time, the task it runs, how many it has run, and
its resident memory, which the beating process reads from ``/proc/<pid>/statm`` (the worker
process is on its host: the supervisor's child, or itself under ``--burst``). Where there is no
``/proc`` (not Linux), the memory stays empty.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import connections
from django.db.models.functions import Now

from .. import registry
from ..conf import settings
from ..engine import database
from ..models import Worker

logger = logging.getLogger("cq.heartbeat")  # its name before cq's subpackages: LOGGING settings use it

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def incarnation_name(pid: int | None = None, token: str | None = None) -> str:
    """A name for one start of a worker process: ``host:pid:token``, the token random."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}:{token or secrets.token_hex(4)}"


@dataclass
class Incarnation:
    """What a heartbeat reports of one worker process."""

    name: str
    pid: int
    queues: list[str] = field(default_factory=list)
    current: Any = None  # the id of the task it runs now
    processed: int = 0


def register(worker: Incarnation) -> None:
    """Record a worker process that starts now (before it claims anything), with the names of the
    functions it runs: those of this process, which has its code and settings (a supervisor
    registers its children). Written once here, so that a heartbeat stays one small UPDATE."""
    Worker.objects.create(name=worker.name, host=socket.gethostname(), pid=worker.pid, queues=worker.queues,
                          functions=registry.known(), started=Now(), last_heartbeat=Now())


def resident_memory(pid: int) -> int | None:
    """Bytes of memory the process ``pid`` of this host holds in RAM now, or ``None`` where it
    cannot be read (no ``/proc``, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            pages = int(statm.read().split()[1])  # size, then resident, in pages
    except (OSError, ValueError, IndexError):
        return None
    return pages * _PAGE_SIZE


def beat(worker: Incarnation) -> None:
    """Record that ``worker`` is alive now, with what it runs and its memory; its row is made if
    registering it failed."""
    if not Worker.objects.filter(name=worker.name, stopped__isnull=True).update(
            last_heartbeat=Now(), current_task_id=worker.current, processed=worker.processed,
            memory=resident_memory(worker.pid)):
        if not Worker.objects.filter(name=worker.name).exists():
            register(worker)


def stopped(name: str, processed: int | None = None) -> None:
    """Record that the worker process ``name`` has stopped."""
    extra = {} if processed is None else {"processed": processed}
    Worker.objects.filter(name=name, stopped__isnull=True).update(stopped=Now(), current_task=None, **extra)


class Heartbeat:
    """Beats every ``CQ_HEARTBEAT_INTERVAL`` seconds, from a daemon thread, for the worker
    processes ``alive()`` lists, until :meth:`stop`."""

    def __init__(self, alive: Callable[[], Iterable[Incarnation]], name: str = "cq-heartbeat") -> None:
        self.alive = alive
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=settings.HEARTBEAT_INTERVAL + 5)

    def _run(self) -> None:
        try:
            while not self._stopping.wait(settings.HEARTBEAT_INTERVAL):
                self.beat()
        finally:
            connections.close_all()

    def beat(self) -> None:
        for worker in list(self.alive()):
            try:
                beat(worker)
            except Exception:
                logger.exception("Could not record the heartbeat of worker %s.", worker.name)
                database.tidy()
