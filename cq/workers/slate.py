"""What a worker process is running, kept where its supervisor reads it without being told.

A worker process starts and finishes tasks hundreds of times a second. Telling its supervisor
over a pipe woke the supervisor twice a task, which cost it more CPU than the task cost the
database. Each worker process writes instead to a slate: a few bytes of shared memory, under a
lock that an uncontended process takes without a system call. The supervisor reads the slate
when it needs to: every tick (a task past its hard time limit, one revoked with
``terminate=True``, the heartbeat's current task) and once the process has exited (the tasks it
had started end LOST; those it had only claimed are put back).

A slate holds the tasks started and not yet finished, in the order they started (a batch's
tasks whose outcome is not committed yet, or one task), the deadline of the last one started
(``time.monotonic()``, the same clock in every process of the machine), and how many tasks
the process has finished. It imports no models, so that a spawned worker process can load it
before ``django.setup()``.
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


class _Fields(ctypes.Structure):
    _fields_ = [
        ("processed", ctypes.c_uint64),
        ("deadline", ctypes.c_double),  # 0: none
        ("count", ctypes.c_uint32),
        ("ids", ctypes.c_ubyte * (16 * CAPACITY)),
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
        self.shared = _spawn.Value(_Fields) if shared is None else shared

    # Written by the worker process.

    def started(self, task_id: Any, time_limit: float | None) -> None:
        """``task_id`` is about to run, with ``time_limit`` seconds from now at most."""
        with self.shared.get_lock():
            fields: Any = self.shared.get_obj()
            if fields.count >= CAPACITY:
                raise OverflowError(f"a worker process started more than {CAPACITY} tasks without finishing them")
            offset = 16 * fields.count
            fields.ids[offset:offset + 16] = uuid.UUID(str(task_id)).bytes
            fields.count += 1
            fields.deadline = time.monotonic() + time_limit if time_limit else 0.0

    def finished(self, task_id: Any) -> None:
        """``task_id``'s outcome is recorded."""
        wanted = uuid.UUID(str(task_id)).bytes
        with self.shared.get_lock():
            fields: Any = self.shared.get_obj()
            ids = [bytes(fields.ids[16 * i:16 * i + 16]) for i in range(fields.count)]
            if wanted not in ids:
                return
            last = ids[-1] == wanted
            ids.remove(wanted)
            fields.ids[:16 * len(ids)] = b"".join(ids)
            fields.count = len(ids)
            fields.processed += 1
            if last:
                fields.deadline = 0.0

    # Read by the supervisor.

    def read(self) -> Reading:
        with self.shared.get_lock():
            fields: Any = self.shared.get_obj()
            raw = bytes(fields.ids[:16 * fields.count])
            deadline, processed = fields.deadline, fields.processed
        running = tuple(str(uuid.UUID(bytes=raw[i:i + 16])) for i in range(0, len(raw), 16))
        return Reading(running, deadline or None, processed)
