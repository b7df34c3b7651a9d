"""cq's settings, read from Django's settings on every access.

Nothing is frozen at import time, so ``override_settings`` works in tests and
a project can import cq before its settings are configured.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings


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

    def __getattribute__(self, name: str) -> Any:
        if name.isupper():
            return getattr(django_settings, f"CQ_{name}", getattr(type(self), name))
        return super().__getattribute__(name)


settings = Settings()
