"""cq's data: one :class:`Task` row per task run, repeating tasks, workers and rate limits.

The models hold data and queries only. What a task *does* lives in ``cq.engine``
(creating, submitting, running) and ``cq.workflows`` (subtasks, chains, revoking).
The django-cq methods on ``Task`` stay, so that old code keeps working, as
one-line calls through ``cq.verbs``: those modules import the models, so the
models cannot import them (``cq.verbs`` says how they meet).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from django.apps import apps
from django.conf import settings as django_settings
from django.db import models
from django.utils import timezone

from . import verbs
from .exceptions import CQError as CQError  # django-cq code imports these two from here
from .exceptions import DuplicateSubmitError as DuplicateSubmitError
from .fields import Progress as Progress
from .fields import ProgressField as ProgressField  # migrations name cq.models.ProgressField
from .operating import Queue as Queue
from .operating import QueueSample as QueueSample
from .operating import RateLimit as RateLimit
from .operating import Worker as Worker
from .scheduling.cron import validate_crontab, validate_timezone
from .scheduling.repeating import build_repeating_task, reschedule, validate_repeating_task

# Public here, as django-cq had them (``as`` marks them exported).
from .statuses import ACTIVE as ACTIVE
from .statuses import DONE as DONE
from .statuses import ERROR as ERROR
from .statuses import RETRYABLE as RETRYABLE
from .statuses import REVOCABLE as REVOCABLE
from .statuses import UNFINISHED as UNFINISHED
from .statuses import TaskStatus as TaskStatus

#: The task model's label, for foreign keys: ``settings.CQ_TASK_MODEL`` (set by cq's app config).
TASK_MODEL = django_settings.CQ_TASK_MODEL  # type: ignore[misc]  # set by cq's app config


class TaskQuerySet(models.QuerySet[Any]):
    def active(self, **filters: Any) -> TaskQuerySet:
        """Tasks that have not finished: pending, queued, running or waiting."""
        return self.filter(status__in=ACTIVE, **filters)

    def done(self, **filters: Any) -> TaskQuerySet:
        return self.filter(status__in=DONE, **filters)

    def tree(self, top: Task) -> TaskQuerySet:
        """``top`` and every task below it (subtasks, and their chains)."""
        return self.filter(models.Q(pk=top.pk) | models.Q(top=top.pk))


#: Names of the task table's indexes: short, since a model of your own (CQ_TASK_MODEL) has a
#: longer app label and class name, and index names have at most 30 characters.
N = "%(app_label)s_%(class)s_"


class AbstractTask(models.Model):
    """One run of a task function, from creation to its final status.

    Subclass it to give tasks typed columns of your own (an owner, an organisation) and point
    ``CQ_TASK_MODEL`` at the subclass, as ``AUTH_USER_MODEL`` works; see the README.
    """

    # django-cq's names for the statuses and their groups.
    STATUS_PENDING = TaskStatus.PENDING
    STATUS_RETRY = TaskStatus.RETRY
    STATUS_QUEUED = TaskStatus.QUEUED
    STATUS_RUNNING = TaskStatus.RUNNING
    STATUS_FAILURE = TaskStatus.FAILURE
    STATUS_SUCCESS = TaskStatus.SUCCESS
    STATUS_WAITING = TaskStatus.WAITING
    STATUS_INCOMPLETE = TaskStatus.INCOMPLETE
    STATUS_LOST = TaskStatus.LOST
    STATUS_REVOKED = TaskStatus.REVOKED
    STATUS_CHOICES = TaskStatus.choices
    STATUS_DONE = DONE
    STATUS_ERROR = ERROR
    STATUS_ACTIVE = ACTIVE

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    func_name = models.CharField(max_length=255)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=1, choices=TaskStatus.choices, default=TaskStatus.PENDING)
    queue = models.CharField(max_length=50, default="default")

    result = models.JSONField(null=True, blank=True)
    error = models.TextField(null=True, blank=True)
    exception = models.CharField(max_length=255, blank=True, help_text="Class of the exception raised.")
    traceback = models.TextField(blank=True)
    log_records = models.JSONField(default=list, blank=True, help_text="This task's own log lines.")
    errbacks = models.JSONField(default=list, blank=True)

    parent = models.ForeignKey("self", models.CASCADE, null=True, blank=True, related_name="subtasks",
                               db_index=False)
    top = models.ForeignKey(
        "self", models.CASCADE, null=True, blank=True, related_name="descendants", db_index=False,
        help_text="The top-level task of this task's tree; empty for a top-level task.",
    )
    previous = models.ForeignKey("self", models.SET_NULL, null=True, blank=True, related_name="next",
                                 db_index=False)
    if TYPE_CHECKING:  # the foreign keys' id columns, which Django adds to each concrete model
        parent_id: Any
        top_id: Any
        previous_id: Any
        waiting_on_id: Any
    waiting_on = models.ForeignKey("self", models.SET_NULL, null=True, blank=True, related_name="+",
                                   db_index=False)
    force_chain = models.BooleanField(default=False)
    has_next = models.BooleanField(default=False, editable=False, help_text="A task is chained after it.")

    created = models.DateTimeField(default=timezone.now, editable=False)
    submitted = models.DateTimeField(default=timezone.now, help_text="When it was last queued.")
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    run_after = models.DateTimeField(null=True, blank=True, help_text="Not run before this time.")
    retries = models.PositiveIntegerField(default=0)
    last_retry = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True, help_text="The worker that ran it last.")
    attempt = models.PositiveIntegerField(default=0, editable=False,
                                          help_text="How many times it was claimed; a run's writes are fenced on it.")
    result_ttl = models.PositiveIntegerField(null=True, blank=True, help_text="Seconds to keep it once finished.")
    result_expiry = models.DateTimeField(null=True, blank=True)

    fields = models.JSONField(default=dict, blank=True, help_text="Metadata of your own, as JSON.")
    progress = ProgressField(null=True, blank=True, help_text="current, total, percent, message.")
    priority = models.SmallIntegerField(default=0, help_text="Higher runs first within a queue.")
    unique_key = models.CharField(max_length=255, null=True, blank=True,
                                  help_text="No two active tasks share it.")
    history = models.JSONField(null=True, blank=True, editable=False,
                               help_text="Earlier attempts that failed: when, with what status and error.")
    trace = models.JSONField(null=True, blank=True, editable=False,
                             help_text="The caller's trace context (W3C traceparent), when it was traced.")
    concurrency_key = models.CharField(max_length=255, null=True, blank=True,
                                       help_text="Tasks with the same key count against one concurrency limit.")

    objects = TaskQuerySet.as_manager()

    class Meta:
        abstract = True
        # Every index is partial, over the few rows a query looks for. A task's row is updated
        # at each change of status, and PostgreSQL then adds an entry to every index whose
        # condition the new row meets: with full indexes, 13 entries per update cost a third
        # of the worker's time (make bench, 870 -> 1,200 tasks/s with the indexes gone).
        indexes = [
            # The worker's look for QUEUED tasks whose doorbell was lost, and due retries.
            models.Index(fields=["-priority", "submitted"], name=N + "wait",
                         condition=models.Q(status__in=[TaskStatus.QUEUED, TaskStatus.RETRY])),
            # The scheduler's look for delayed tasks (countdown, eta) coming due.
            models.Index(fields=["run_after"], name=N + "delay",
                         condition=models.Q(status=TaskStatus.QUEUED, run_after__isnull=False)),
            # The sweeper's look for tasks of dead workers.
            models.Index(fields=["started"], name=N + "run", condition=models.Q(status=TaskStatus.RUNNING)),
            # Coalescing repeating tasks: is one of this function still active?
            models.Index(fields=["func_name"], name=N + "func",
                         condition=models.Q(status__in=sorted(UNFINISHED))),
            # Settling a parent looks for its first unsuccessful subtask; trees and chains are
            # walked by parent, top and previous; deletes follow every reference.
            models.Index(fields=["parent", "status"], name=N + "parent",
                         condition=models.Q(parent__isnull=False)),
            models.Index(fields=["top"], name=N + "top", condition=models.Q(top__isnull=False)),
            models.Index(fields=["previous"], name=N + "prev",
                         condition=models.Q(previous__isnull=False)),
            models.Index(fields=["waiting_on"], name=N + "won",
                         condition=models.Q(waiting_on__isnull=False)),
            # Clean-up of expired results.
            models.Index(fields=["result_expiry"], name=N + "exp",
                         condition=models.Q(result_expiry__isnull=False, top__isnull=True)),
            # Per-key concurrency limits count the running tasks of a key.
            models.Index(fields=["concurrency_key"], name=N + "conc",
                         condition=models.Q(status=TaskStatus.RUNNING, concurrency_key__isnull=False)),
            # The dashboard's throughput chart counts the tasks finished in the last hour. A row
            # enters this index once, when it finishes.
            models.Index(fields=["finished"], name=N + "fin", condition=models.Q(finished__isnull=False)),
            # The task list (cq.web.listing) pages finished tasks newest first, by (created, id):
            # top-level ones, all of them, and those of one function. A row enters these once,
            # when it finishes; the unfinished ones are few and found through "func".
            models.Index(fields=["created", "id"], name=N + "ltop",
                         condition=models.Q(status__in=sorted(DONE), top__isnull=True)),
            models.Index(fields=["created", "id"], name=N + "lall", condition=models.Q(status__in=sorted(DONE))),
            models.Index(fields=["func_name", "created", "id"], name=N + "lfn",
                         condition=models.Q(status__in=sorted(DONE))),
        ]
        constraints = [
            # unique_key: the database refuses a second active task with the same key. Rows without
            # a key stay out of the index: each change of status would add an entry otherwise.
            models.UniqueConstraint(fields=["unique_key"], name=N + "uniq",
                                    condition=models.Q(status__in=sorted(UNFINISHED),
                                                       unique_key__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.id} - {self.func_name}"

    # -- django-cq's read-only views ------------------------------------------------

    @property
    def signature(self) -> dict[str, Any]:
        return {"func_name": self.func_name, "args": self.args, "kwargs": self.kwargs}

    @property
    def logs(self) -> list[dict[str, Any]]:
        """Log lines of this task; for a top-level task, of its whole tree, in order."""
        return verbs.engine().tree_logs(self)

    def format_logs(self) -> str:
        return "\n".join(record["message"] for record in self.logs)

    # -- django-cq's verbs, delegated -----------------------------------------------

    def submit(self, *prepend_args: Any) -> None:
        """Queue a PENDING task, with ``prepend_args`` put before its arguments."""
        verbs.engine().submit(self, prepend_args)

    def wait(self, timeout: float | None = None) -> Task:
        """Block until the task is done or ``timeout`` milliseconds passed; refresh it."""
        return verbs.engine().wait(self, timeout)

    def revoke(self, terminate: bool = False) -> None:
        """Stop this task and everything under it and after it from running;
        ``terminate`` also kills the worker process running it."""
        verbs.engine().revoke(self, terminate)

    def subtask(self, func: Callable[..., Any] | str, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None,
                **options: Any) -> Task:
        """Create a subtask; it starts once this task's function has returned."""
        return verbs.engine().subtask(self, func, args, kwargs, **options)

    def chain(self, func: Callable[..., Any] | str, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None,
              **options: Any) -> Task:
        """Create a task that runs after this one succeeds (or fails, with ``force_chain``)."""
        return verbs.engine().chain(self, func, args, kwargs, **options)

    def errorback(self, func: Callable[..., Any] | str, args: Iterable[Any] = (),
                  kwargs: dict[str, Any] | None = None) -> None:
        """Call ``func(task, error, *args, **kwargs)`` if this task finally fails."""
        verbs.engine().errorback(self, func, args, kwargs)

    def update(self, *, fields: dict[str, Any]) -> None:
        """Set metadata of your own (``fields=``) and store it at once."""
        verbs.engine().update(self, fields=fields)

    def retry(self) -> None:
        """Queue again, as the same row, a top-level task that ended FAILURE or LOST."""
        verbs.engine().retry(self)

    def retry_failed(self) -> None:
        """Run again only what failed in this top-level task's tree (INCOMPLETE or FAILURE), reusing
        what succeeded; the tree then carries on as if nothing had failed."""
        verbs.engine().retry_failed(self)

    def rerun(self) -> AbstractTask:
        """Queue a new top-level task with this one's function, arguments, fields and options."""
        return verbs.engine().rerun(self)

    @property
    def tree_progress(self) -> dict[str, Any]:
        """This task's own progress while it runs; once it waits on subtasks, how many of them
        have finished (``current``) out of how many (``total``)."""
        return verbs.engine().tree_progress(self)

    def log(self, message: str, level: int = logging.INFO, publish: bool = True, limit: int | None = None) -> None:
        """Record a log line on this task; it rolls up to the top-level task."""
        verbs.engine().log(self, message, level=level, publish=publish, limit=limit)


class Task(AbstractTask):
    __doc__ = AbstractTask.__doc__

    class Meta(AbstractTask.Meta):
        swappable = "CQ_TASK_MODEL"


def get_task_model() -> type[AbstractTask]:
    """The task model in use: ``CQ_TASK_MODEL``, ``cq.Task`` by default."""
    return apps.get_model(django_settings.CQ_TASK_MODEL, require_ready=False)  # type: ignore[misc]


def parse_task_id(value: Any) -> uuid.UUID | None:
    """``value`` (from a URL or a form, say) as a task id, or None when it is not one."""
    try:
        return uuid.UUID(str(value).strip())
    except ValueError:
        return None


def find_task(value: Any) -> AbstractTask | None:
    """The task whose id is ``value``, or None when there is none or ``value`` is no id."""
    pk = parse_task_id(value)
    return None if pk is None else get_task_model()._default_manager.filter(pk=pk).first()


def _default_timezone() -> str:
    return django_settings.TIME_ZONE or "UTC"


class RepeatingTask(models.Model):
    """A task function run on a cron schedule by the scheduler."""

    #: Crontab, time zone and enabled as loaded, to tell whether a save changed the schedule.
    _loaded_schedule: tuple[Any, ...]

    crontab = models.CharField(max_length=100, default="* * * * *", validators=[validate_crontab],
                               help_text="Minute Hour Day-of-month Month Day-of-week, e.g. 30 3 * * *")
    func_name = models.CharField("function", max_length=255, help_text="A registered task function.")
    args = models.JSONField(default=list, blank=True, help_text="A JSON list of positional arguments.")
    kwargs = models.JSONField(default=dict, blank=True, help_text="A JSON object of keyword arguments.")
    enabled = models.BooleanField(default=True)
    coalesce = models.BooleanField(default=True, help_text="Skip a run while an earlier one is still active.")
    result_ttl = models.PositiveIntegerField(null=True, blank=True, help_text="Seconds to keep each run's task.")
    timezone = models.CharField(max_length=63, default=_default_timezone, validators=[validate_timezone],
                                help_text="The crontab is read in this time zone.")
    last_run = models.DateTimeField(null=True, blank=True)
    next_run = models.DateTimeField(null=True, blank=True, db_index=True)
    last_task = models.ForeignKey(TASK_MODEL, models.SET_NULL, null=True, blank=True, related_name="+")

    def __str__(self) -> str:
        arguments = [*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())]
        return f"{self.func_name}({', '.join(arguments)}) [{self.crontab}]"

    def clean(self) -> None:
        validate_repeating_task(self)

    @classmethod
    def from_db(cls, db: str | None, field_names: Any, values: Any, **kwargs: Any) -> RepeatingTask:
        instance = super().from_db(db, field_names, values, **kwargs)
        loaded = instance.__dict__
        instance._loaded_schedule = (loaded.get("crontab"), loaded.get("timezone"), loaded.get("enabled"))
        return instance

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Rows written by the admin or code get their next run here; data migrations,
        # whose historical models lack this method, go through schedule_task().
        if "update_fields" not in kwargs:
            reschedule(self)
        super().save(*args, **kwargs)

    def submit(self) -> AbstractTask | None:
        """Run it now, outside its schedule (``None`` while it coalesces with an active run), and
        move ``next_run`` to the crontab's first slot after now, as django-cq did."""
        return verbs.engine().submit_repeating(self, timezone.now())

    def update_next_run(self) -> None:
        """Set ``next_run`` (without saving it) to the crontab's first slot after now."""
        verbs.engine().update_next_run(self, timezone.now())

    @classmethod
    def schedule(cls, crontab: str, func: Callable[..., Any] | str, args: Iterable[Any] = (),
                 kwargs: dict[str, Any] | None = None, **fields: Any) -> RepeatingTask:
        return schedule_task(cls, crontab, func, args, kwargs, **fields)


def schedule_task(cls: type[models.Model], crontab: str, func: Callable[..., Any] | str, args: Iterable[Any] = (),
                  kwargs: dict[str, Any] | None = None, **fields: Any) -> Any:
    """Create a repeating task; usable in a data migration with ``apps.get_model("cq", "RepeatingTask")``.

    Raises:
        ValidationError: a bad crontab, time zone or arguments.
        TaskNotRegistered: ``func`` is not a registered task function.
    """
    return build_repeating_task(cls, crontab, func, args, kwargs, **fields)


def delay(func: Callable[..., Any] | str, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None,
          **options: Any) -> Task:
    """django-cq's ``cq.models.delay``: the same as ``func.delay_args(args, kwargs, **options)``."""
    return verbs.engine().delay(func, args, kwargs, **options)


def chain(func: Callable[..., Any] | str, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None,
          **options: Any) -> Task:
    """django-cq's ``cq.models.chain``: a task run once ``previous=`` has succeeded (it reads
    ``cqt.previous.result``), under the previous task's parent unless ``parent=`` is given."""
    return verbs.engine().delay(func, args, kwargs, **options)
