"""A task's statuses: django-cq's one-letter codes, and the groups they form.

This is the one place that says which statuses are final, failed, active,
revocable, retryable or unstarted. Every map keyed by status elsewhere (Django's statuses
in ``cq.backends``, ``cq_maintenance``'s flags, the dashboard's colours) is
checked against the members here by ``tests/unit/test_statuses.py``. It imports no
models, so that ``cq.backends`` may use it at import time.
"""

from __future__ import annotations

from django.db.models import TextChoices


class TaskStatus(TextChoices):
    """django-cq's one-letter status codes, with readable labels; and the only place that says
    which statuses are final, failed, active, revocable or retryable (each a property of the
    member; the module's ``DONE``, ``ERROR``, ``ACTIVE``... are these groups as sets)."""

    PENDING = "P", "Pending"
    RETRY = "Y", "Retry"
    QUEUED = "Q", "Queued"
    RUNNING = "R", "Running"
    FAILURE = "F", "Failure"
    SUCCESS = "S", "Success"
    WAITING = "W", "Waiting"
    INCOMPLETE = "I", "Incomplete"
    LOST = "L", "Lost"
    REVOKED = "E", "Revoked"

    @property
    def final(self) -> bool:
        """A task never leaves this status on its own."""
        return self in (TaskStatus.SUCCESS, TaskStatus.FAILURE, TaskStatus.INCOMPLETE, TaskStatus.LOST,
                        TaskStatus.REVOKED)

    @property
    def failed(self) -> bool:
        """Finished, but not well."""
        return self.final and self != TaskStatus.SUCCESS

    @property
    def active(self) -> bool:
        """What ``Task.objects.active()`` lists: django-cq leaves RETRY out, and so do we."""
        return not self.final and self != TaskStatus.RETRY

    @property
    def revocable(self) -> bool:
        """What ``revoke()`` may still stop: anything unfinished. A task holds its ``unique_key``
        in these statuses too."""
        return not self.final

    @property
    def retryable(self) -> bool:
        """What ``retry_now()`` (the API's and dashboard's Retry) may queue again, as the same row."""
        return self in (TaskStatus.FAILURE, TaskStatus.LOST)

    @property
    def unstarted(self) -> bool:
        """Not running yet: pending a submit, queued, or waiting to be retried."""
        return self in (TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.RETRY)

    @classmethod
    def where(cls, group: str) -> frozenset[TaskStatus]:
        """The members for which the property ``group`` holds, e.g. ``where("final")``."""
        return frozenset(member for member in cls if getattr(member, group))


#: Statuses a task never leaves on its own.
DONE = TaskStatus.where("final")
#: Finished, but not well.
ERROR = TaskStatus.where("failed")
#: What ``Task.objects.active()`` lists (django-cq leaves RETRY out; so do we).
ACTIVE = TaskStatus.where("active")
#: What ``revoke()`` may still stop; a task holds its ``unique_key`` while in one of these.
REVOCABLE = UNFINISHED = TaskStatus.where("revocable")
#: What ``retry_now()`` may queue again.
RETRYABLE = TaskStatus.where("retryable")
#: Not running yet (the timeline draws them as waiting).
UNSTARTED = TaskStatus.where("unstarted")
