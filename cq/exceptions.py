"""Every error cq raises derives from :class:`CQError`."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class CQError(Exception):
    """Base class of cq's errors. Do not raise directly."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class InvalidTask(CQError, ValueError):
    """The task cannot be created with these arguments."""


class InvalidQueue(CQError, ValueError):
    """A queue's controls cannot be set to these values."""


class TaskNotRegistered(CQError, LookupError):
    """No function is registered with ``@task`` under this name."""


class DuplicateSubmitError(CQError):
    """Only a PENDING task can be submitted."""


class ConfigurationError(CQError, ImproperlyConfigured):
    """cq's settings are not usable."""


class SoftTimeLimitExceeded(CQError):
    """The task ran past its soft time limit; catch it to clean up before the hard limit."""


class TimeLimitExceeded(CQError):
    """The task ran past its hard time limit and its worker process was killed."""


class TaskLost(CQError):
    """The worker running the task stopped before the task finished."""


class TaskRevoked(CQError):
    """The task was revoked before it finished (what Django's Tasks API reports for a revoked task)."""


class SubtaskFailed(CQError):
    """A subtask of the task failed, so the task ended Incomplete (as Django's Tasks API reports it)."""
