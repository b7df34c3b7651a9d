"""What a worker process is running, kept where its supervisor reads it without being told.

A worker process starts and finishes tasks hundreds of times a second. Telling its supervisor
over a pipe woke the supervisor twice a task, which cost it more CPU than the task cost the
database. Each worker process writes instead to a slate: a few bytes of shared memory that the
supervisor reads when it needs to: every tick (a task past its hard time limit, one revoked
with ``terminate=True``, the heartbeat's current task) and once the process has exited (the
tasks it had started end LOST; those it had only claimed are put back).

There is no lock: a process killed while holding one would leave its supervisor waiting for
ever. A slate is a row of slots instead, each with the id of a task, the order it started in
and a state byte; a slot counts once its id and order are written and its state byte is set,
and is freed by clearing that byte, so every change that matters is one store. A process killed
in the middle of starting a task leaves that slot unset: the task had not begun, and goes back
to the queue. The deadline of the last task started (``time.monotonic()``, the same clock in
every process of the machine) and the count of finished tasks are single stores too. It imports
no models, so that a spawned worker process can load it before ``django.setup()``.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import time
import uuid
from dataclasses import dataclass
from typing import Any

#: Most tasks started and not finished at once: a batch's (cq.workers.worker.BATCH), and then some.
CAPACITY = 32

_spawn = multiprocessing.get_context("spawn")


class _Slot(ctypes.Structure):
    _fields_ = [("order", ctypes.c_uint64), ("id", ctypes.c_ubyte * 16), ("taken", ctypes.c_ubyte)]


class _Fields(ctypes.Structure):
    _fields_ = [
        ("processed", ctypes.c_uint64),
        ("started", ctypes.c_uint64),  # how many tasks it started: the order of the next
        ("deadline", ctypes.c_double),  # of the last task started; 0: none
        ("slots", _Slot * CAPACITY),
    ]


@dataclass(frozen=True)
class Reading:
    """A slate as it was read: ``running`` in the order they started, the deadline of the last."""

    running: tuple[str, ...] = ()
    deadline: float | None = None
    processed: int = 0

    @property
    def current(self) -> str | None:
        return self.running[-1] if self.running else None


class Slate:
    """One worker process's slate; made by the supervisor, handed to the process as it is spawned."""

    def __init__(self, shared: Any = None) -> None:
        self.shared = _spawn.RawValue(_Fields) if shared is None else shared

    # Written by the worker process (and only by it).

    def started(self, task_id: Any, time_limit: float | None) -> None:
        """``task_id`` is about to run, with ``time_limit`` seconds from now at most."""
        fields = self.shared
        slot = next((slot for slot in fields.slots if not slot.taken), None)
        if slot is None:
            raise OverflowError(f"a worker process started more than {CAPACITY} tasks without finishing them")
        slot.id[:] = uuid.UUID(str(task_id)).bytes
        fields.started += 1
        slot.order = fields.started
        fields.deadline = time.monotonic() + time_limit if time_limit else 0.0
        slot.taken = 1  # the store that makes it count

    def finished(self, task_id: Any) -> None:
        """``task_id``'s outcome is recorded."""
        wanted = uuid.UUID(str(task_id)).bytes
        fields = self.shared
        for slot in fields.slots:
            if slot.taken and bytes(slot.id) == wanted:
                if slot.order == fields.started:  # the last one started: its deadline goes with it
                    fields.deadline = 0.0
                slot.taken = 0
                fields.processed += 1
                return

    # Read by the supervisor.

    def read(self) -> Reading:
        fields = self.shared
        deadline, processed = fields.deadline, fields.processed
        taken = sorted((slot.order, bytes(slot.id)) for slot in fields.slots if slot.taken)
        running = tuple(str(uuid.UUID(bytes=raw)) for _order, raw in taken)
        return Reading(running, deadline or None, processed)
