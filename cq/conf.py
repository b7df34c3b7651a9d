"""cq's settings, read from Django's settings when first used, and again after any change.

Nothing is read at import time, so a project can import cq before its settings are
configured. A value is kept once read: cq reads several on every task, and each one a project
leaves at its default cost Django an exception per read. Django's ``setting_changed`` signal
(sent by ``override_settings`` and pytest-django's ``settings`` fixture) makes cq read them
all again.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed


class Settings:
    """Typed defaults for every ``CQ_*`` setting; each is read lazily."""

    #: Alias in ``CHANNEL_LAYERS`` of the layer that carries doorbells. When the
    #: alias is not configured, cq builds its own Redis layer from ``REDIS_URL``.
    CHANNEL_LAYER: str = "cq"
    #: Redis used when ``CHANNEL_LAYERS`` has no entry for ``CHANNEL_LAYER``.
    REDIS_URL: str = "redis://127.0.0.1:6379/0"
    #: Name of the channel every worker listens on (one per queue later on).
    CHANNEL: str = "cq.tasks"
    #: Run ``.delay()`` inline in the caller's process (django-cq's serial mode).
    SERIAL: bool = False
    #: Run the scheduler (repeating and delayed tasks) in a thread of ``cq_runworker``.
    SCHEDULER: bool = True
    #: Longest sleep of the scheduler, in seconds: how soon it sees rows edited in the admin.
    SCHEDULER_INTERVAL: float = 1.0
    #: Seconds the scheduler's leader lease lasts without renewal (another takes over after).
    SCHEDULER_LEASE: float = 10.0
    #: Seconds between a supervisor's heartbeats for its worker processes.
    HEARTBEAT_INTERVAL: float = 5.0
    #: A worker silent for this many seconds is dead; its running tasks become LOST.
    WORKER_TIMEOUT: float = 30.0
    #: Seconds running tasks get to finish after SIGTERM before their processes are killed.
    SHUTDOWN_GRACE: float = 30.0
    #: Default hard and soft time limits of a task, in seconds (``None``: no limit).
    TIME_LIMIT: float | None = None
    SOFT_TIME_LIMIT: float | None = None
    #: Seconds between the sweeper's passes (lost tasks, expired results).
    SWEEP_INTERVAL: float = 10.0
    #: Seconds a worker waits on the doorbell before it looks in the database.
    POLL_INTERVAL: float = 1.0
    #: A QUEUED task nobody claimed for this many seconds is picked up from the
    #: database even though its doorbell never arrived.
    QUEUED_GRACE: float = 10.0
    #: First retry delay in seconds; each later retry doubles it.
    RETRY_BACKOFF: float = 1.0
    #: Upper bound on a single retry delay, in seconds.
    RETRY_BACKOFF_MAX: float = 600.0
    #: Seconds a finished task is kept; ``None`` keeps it for ever.
    RESULT_TTL: int | None = 60 * 60 * 24 * 30
    #: Rules keeping finished tasks per function and final status, first match wins (cq.retention).
    RETENTION: list[dict[str, Any]] | None = None
    #: Least seconds between two writes of a running task's progress (the last is always written).
    PROGRESS_INTERVAL: float = 0.5
    #: Alias in ``CHANNEL_LAYERS`` of the layer live events go to (off if it is not configured).
    EVENTS_LAYER: str = "default"
    #: Dotted path of a callable ``(user, task) -> bool``: may a user who is not staff watch a task?
    TASK_ACCESS: str | None = None
    #: Dotted paths of callables ``notify(task_id, event)`` called on every event (cq.transport.events).
    NOTIFIERS: tuple[str, ...] = ()
    #: Prepare cq's statements on every task's way in PostgreSQL (once per connection). Off behind
    #: a pooler that cannot keep prepared statements (PgBouncer before 1.21 in transaction mode).
    PREPARED_STATEMENTS: bool = True
    #: How many published log lines a task keeps (django-cq's ``limit``).
    LOG_LIMIT: int = 40
    #: Bearer token that may read the metrics (``cq.web.metrics``) besides staff; ``None``: staff only.
    METRICS_TOKEN: str | None = None
    #: Seconds the metrics' counters stay behind the database's time, so that a task stamped
    #: finished just before a count but committed after it is still counted (``cq.metrics.tally``).
    METRICS_LAG: float = 10.0

    def __getattribute__(self, name: str) -> Any:
        if name.isupper():
            found = _read.get(name, _UNREAD)
            if found is _UNREAD:
                found = _read[name] = getattr(django_settings, f"CQ_{name}", getattr(type(self), name))
            return found
        return super().__getattribute__(name)


settings = Settings()
_read: dict[str, Any] = {}
_UNREAD = object()


def _forget(**kwargs: Any) -> None:
    _read.clear()


setting_changed.connect(_forget, dispatch_uid="cq.conf")
