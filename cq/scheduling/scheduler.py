"""The scheduler: fires repeating tasks and releases delayed tasks when they come due,
and runs the sweeper (lost tasks, expired results).

It only creates and rings tasks, it never runs them. It runs in a thread of
``cq_runworker`` (``CQ_SCHEDULER = True``, the default) or alone as
``manage.py cq_scheduler``; any number may run, and a Redis lease lets one of
them work at a time. The holder sleeps until the next due time, but never
longer than ``CQ_SCHEDULER_INTERVAL`` so that rows edited in the admin are seen
quickly.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Protocol

from django.db import connection, connections
from django.utils import timezone

from ..conf import settings
from ..engine import database
from ..layers import get_layer, redis_client
from . import firing, sweeper
from .lease import Lease

logger = logging.getLogger("cq.scheduler")  # its name before cq's subpackages: LOGGING settings use it


class Clock(Protocol):
    def now(self) -> datetime: ...
    def wait(self, event: threading.Event, seconds: float) -> bool: ...


class RealClock:
    def now(self) -> datetime:
        return timezone.now()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(seconds)


class Scheduler:
    def __init__(self, *, clock: Clock | None = None, interval: float | None = None,
                 lease: Lease | None = None) -> None:
        self.clock = clock or RealClock()
        self.interval = settings.SCHEDULER_INTERVAL if interval is None else interval
        self.lease = lease or default_lease()
        self._stopping = threading.Event()
        self._next_sweep = 0.0

    def run(self) -> None:
        """Tick until :meth:`stop`; errors are logged and the loop goes on."""
        try:
            while not self._stopping.is_set():
                wait = self.interval
                try:
                    if self.lease.hold():
                        wait = self.tick()
                except Exception:
                    logger.exception("Scheduler tick failed; trying again shortly.")
                    database.tidy()
                self.clock.wait(self._stopping, wait)
        finally:
            self.lease.release()
            if not connection.in_atomic_block:
                connections.close_all()

    def stop(self) -> None:
        self._stopping.set()

    def tick(self) -> float:
        """Fire what is due now; returns the seconds until the next look."""
        now = self.clock.now()
        for rt in firing.due_repeating_tasks(now):
            try:
                task = firing.fire(rt, now)
            except Exception:  # one broken row must not keep the others from firing
                logger.exception("Could not fire %s.", rt)
                continue
            if task is not None:
                logger.info("Fired %s as task %s; next run %s.", rt, task.pk, rt.next_run)
        firing.release_delayed(now)
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + settings.SWEEP_INTERVAL
            sweeper.sweep()
        upcoming = firing.next_due(now)
        if upcoming is None:
            return self.interval
        return min(max((upcoming - self.clock.now()).total_seconds(), 0.0), self.interval)


def default_lease() -> Lease:
    found = redis_client(get_layer())
    if found is None:
        return Lease(None, "")
    client, prefix = found
    return Lease(client, f"{prefix}:scheduler-leader", ttl=settings.SCHEDULER_LEASE)
