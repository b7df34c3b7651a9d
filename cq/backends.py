"""cq as a backend of Django's Tasks framework::

    TASKS = {"default": {"BACKEND": "cq.backends.CQBackend"}}

Code written against Django's API (``django.tasks`` on Django 6, the ``django-tasks``
package on Django 5.2) then runs on cq's workers: ``enqueue()`` writes a cq task row and
rings its doorbell when the caller's transaction commits, ``get_result()`` reads the row
back from any process, and the row is the one cq's admin and dashboard show.

A Django task is registered with cq under its module path when it is decorated, so a
worker finds it as it finds a cq ``@task`` (in an app's ``tasks.py``). A Django task
defined in another module is found through its row: the path is stored there signed with
``SECRET_KEY`` when it is queued, and the worker imports it only if the signature holds.

A coroutine task function runs in the worker's process, on an event loop of its own
(``async_to_sync``), one task at a time like any other.

This module imports no models when it is imported: Django builds and checks the backend
while the task modules are being imported.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from typing import Any

from django.apps import apps
from django.core import checks, signing
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from . import registry, signals, validation
from .engine import current
from .exceptions import TaskNotRegistered
from .statuses import TaskStatus

try:  # Django 6.0 and later
    from django.tasks import Task as DjangoTask
    from django.tasks import TaskContext, TaskResult, TaskResultStatus
    from django.tasks import signals as django_signals
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import TaskError
    from django.tasks.exceptions import InvalidTask as InvalidDjangoTask
    from django.tasks.exceptions import TaskResultDoesNotExist
    from django.utils.json import normalize_json
except ImportError:  # Django 5.2 with the django-tasks package
    try:
        # The stubs describe django.tasks; the backport's classes are the same API by other names.
        from django_tasks import TaskContext, TaskResult, TaskResultStatus  # type: ignore[assignment]
        from django_tasks import signals as django_signals  # type: ignore[no-redef]
        from django_tasks.backends.base import BaseTaskBackend  # type: ignore[assignment]
        from django_tasks.base import Task as DjangoTask  # type: ignore[assignment]
        from django_tasks.base import TaskError  # type: ignore[assignment]
        from django_tasks.exceptions import InvalidTaskError as InvalidDjangoTask  # type: ignore[assignment]
        from django_tasks.exceptions import TaskResultDoesNotExist  # type: ignore[assignment]
        from django_tasks.utils import normalize_json
    except ImportError:
        raise ImproperlyConfigured(
            "cq.backends.CQBackend needs Django's Tasks framework: Django 6.0 or later, or on Django 5.2 "
            "the django-tasks package (pip install django-tasks).") from None

#: cq's statuses as Django's four (see the README's table).
STATUSES = {
    TaskStatus.PENDING: TaskResultStatus.READY, TaskStatus.QUEUED: TaskResultStatus.READY,
    TaskStatus.RETRY: TaskResultStatus.READY,
    TaskStatus.RUNNING: TaskResultStatus.RUNNING, TaskStatus.WAITING: TaskResultStatus.RUNNING,
    TaskStatus.SUCCESS: TaskResultStatus.SUCCESSFUL,
    TaskStatus.FAILURE: TaskResultStatus.FAILED, TaskStatus.INCOMPLETE: TaskResultStatus.FAILED,
    TaskStatus.LOST: TaskResultStatus.FAILED, TaskStatus.REVOKED: TaskResultStatus.FAILED,
}
FINISHED = frozenset({TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED})
#: What an unfinished run that ended without an exception of its own reports as its error.
ENDED_WITHOUT_ERROR = {TaskStatus.REVOKED: "cq.exceptions.TaskRevoked",
                       TaskStatus.INCOMPLETE: "cq.exceptions.SubtaskFailed", TaskStatus.LOST: "cq.exceptions.TaskLost"}
#: ``OPTIONS`` of a backend, with their defaults: cq's own options of every task it runs.
DEFAULT_OPTIONS = {"retries": 0, "retry_on_lost": False, "time_limit": None, "soft_time_limit": None,
                   "atomic": False, "result_ttl": None}
#: The key of a Django task's row ``fields`` that holds what cq keeps for Django's API.
FIELD = "django_task"



def _signer() -> signing.Signer:
    return signing.Signer(salt="cq.backends.path")  # built when used: SECRET_KEY may not be set at import


class CQBackend(BaseTaskBackend):
    """Django's Tasks framework on cq: durable rows, doorbells, cq's workers."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options = {name.lower(): value for name, value in self.options.items()}
        unknown = set(options) - set(DEFAULT_OPTIONS)
        if unknown:
            raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS'] takes {', '.join(sorted(DEFAULT_OPTIONS))} "
                                       f"(any case), not {', '.join(sorted(unknown))}.")
        self.cq_options = {**DEFAULT_OPTIONS, **options}
        ttl = self.cq_options["result_ttl"]
        if ttl is not None and not validation.is_result_ttl(ttl):
            raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS']['result_ttl'] is a whole number of seconds "
                                       f"from 0 to {validation.MAX_RESULT_TTL}, or None, not {ttl!r}.")
        for queue in self.queues:
            if not validation.is_queue_name(queue):
                raise ImproperlyConfigured(f"TASKS[{alias!r}]['QUEUES']: {queue!r} is not a cq queue name "
                                           f"({validation.QUEUE_RULE}).")

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        """Django's checks of this backend: cq must be an installed app (its models, its worker)."""
        found = list(super().check(**kwargs))
        if not apps.is_installed("cq"):
            found.append(checks.Error(
                f"TASKS[{self.alias!r}] uses cq.backends.CQBackend, but cq is not an installed app.",
                hint="Add 'cq' to INSTALLED_APPS (and run migrate): cq keeps each task in its table.",
                obj=self, id="cq.E002"))
        return found

    def validate_task(self, task: DjangoTask[Any, Any]) -> None:
        super().validate_task(task)
        if not validation.is_queue_name(task.queue_name):
            raise InvalidDjangoTask(f"Queue {task.queue_name!r} is not a cq queue name ({validation.QUEUE_RULE}).")
        self._function(task)

    def _function(self, task: DjangoTask[Any, Any]) -> registry.TaskFunction[Any, Any]:
        """The cq task function that runs ``task``, registered under its module path."""
        fn = registry.find(task.module_path)
        options = self.cq_options
        runner = None if fn is None else fn.func
        if not isinstance(runner, _Runner) or runner.task.func is not task.func or runner.options != options:
            fn = registry.register(
                _Runner(task, options), task.module_path, atomic=options["atomic"],
                retries=options["retries"], retry_on_lost=options["retry_on_lost"],
                time_limit=options["time_limit"], soft_time_limit=options["soft_time_limit"],
                queue=task.queue_name, priority=task.priority)
        assert fn is not None  # found above, or registered now
        return fn

    def enqueue(self, task: DjangoTask[Any, Any], args: Any, kwargs: Any) -> TaskResult[Any, Any]:
        self.validate_task(task)  # and registers it, as its decorator did
        # Django's own normalisation first, as its backends do: bytes become text, tuples lists,
        # and a value JSON cannot hold (a datetime) raises TypeError; cq's checks (NaN, NUL,
        # what PostgreSQL refuses) come after, in delay_args.
        args, kwargs = normalize_json(list(args)), normalize_json(dict(kwargs))
        fn = registry.require(task.module_path)
        options: dict[str, Any] = {"queue": task.queue_name, "priority": task.priority,
                                   "fields": {FIELD: {"path": _signer().sign(task.module_path)}}}
        if task.run_after is not None:
            options["eta"] = task.run_after
        if self.cq_options["result_ttl"] is not None:
            options["result_ttl"] = self.cq_options["result_ttl"]
        row = fn.delay_args(list(args), dict(kwargs), **options)
        result = as_result(row, task, self.alias)
        django_signals.task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult[Any, Any]:
        # app loading: Django builds this backend while task modules are being imported, maybe
        # before the models are; a result is read long after.
        from .models import find_task

        row = find_task(result_id)
        task = None if row is None else django_task_of(row)
        if task is None:
            raise TaskResultDoesNotExist(f"No task of Django's Tasks framework has the id {result_id!r}.")
        return as_result(row, task, self.alias)


class _Runner:
    """What cq's worker calls for a Django task: ``runner(row, *args, **kwargs)``. It records
    the worker in the row's fields (written with the attempt's outcome), sends ``task_started``
    and calls the function, with a ``TaskContext`` if it takes one."""

    def __init__(self, task: DjangoTask[Any, Any], options: dict[str, Any]) -> None:
        self.task, self.options = task, options
        functools.update_wrapper(self, task.func)

    def __call__(self, row: Any, *args: Any, **kwargs: Any) -> Any:
        task = _as_queued(self.task, row)
        backend = task.get_backend()
        result = as_result(row, task, backend.alias)
        django_signals.task_started.send(type(backend), task_result=result)
        try:
            if task.takes_context:
                value = task.call(TaskContext(task_result=result), *args, **kwargs)
            else:
                value = task.call(*args, **kwargs)
            return normalize_json(value)
        except BaseException:
            # A failed attempt's worker is kept in the row's fields, written with the failure (the
            # worker of the last attempt is the row's own ``worker``): a success changes nothing,
            # so quick atomic tasks still share a commit.
            kept = row.fields.get(FIELD, {})
            row.fields = {**row.fields, FIELD: {**kept, "workers": [*kept.get("workers", []), row.worker]}}
            raise


def running_task() -> Any:
    """The cq task row the running Django task runs as: what a cq task function gets as ``cqt``,
    for progress, logs and fields (``running_task().progress(3, 10)``; from a coroutine, through
    ``sync_to_async``, as any database work).

    Raises:
        RuntimeError: no Django task is running here.
    """
    row = current.task()
    if row is None or django_task_of(row) is None:
        raise RuntimeError("No Django task is running here: running_task() is for the body of a Django task.")
    return row


def django_task_of(row: Any) -> DjangoTask[Any, Any] | None:
    """The Django task a row runs, or ``None`` for a row of a cq task function. A task not yet
    imported in this process is imported from the path its row keeps, if its signature holds."""
    fn = registry.find(row.func_name)
    if fn is None:
        if _signed_path(row) is None:
            return None
        try:
            found = import_string(row.func_name)  # the path its signature holds
        except ImportError:
            return None
        if not isinstance(found, DjangoTask):
            return None
        found.get_backend().validate_task(found)  # registers it with cq, if the backend is one of cq's
        fn = registry.find(row.func_name)
    return fn.func.task if fn is not None and isinstance(fn.func, _Runner) else None


def _signed_path(row: Any) -> str | None:
    """The path of the Django task a row runs, if its row keeps it signed with this SECRET_KEY."""
    signed = (row.fields or {}).get(FIELD, {}).get("path")
    try:
        path = _signer().unsign(signed) if isinstance(signed, str) else None
    except signing.BadSignature:
        path = None
    return path if path == row.func_name else None


def _find_function(row: Any) -> registry.TaskFunction[Any, Any] | None:
    """The finder of cq.registry: ``None`` for a row of no Django task, or of one this code cannot
    import (a worker that has it will run it).

    Raises:
        TaskNotRegistered: the path its row keeps is not signed with this SECRET_KEY (forged).
    """
    if FIELD in (row.fields or {}) and _signed_path(row) is None:
        raise TaskNotRegistered(f"No task function is registered as {row.func_name!r}, and the path its row "
                                f"keeps is not signed with this SECRET_KEY: it is not imported.")
    return registry.find(row.func_name) if django_task_of(row) is not None else None


def as_result(row: Any, task: DjangoTask[Any, Any], alias: str) -> TaskResult[Any, Any]:
    """A cq task row as Django's ``TaskResult``."""
    status = STATUSES[row.status]
    errors = []
    if status == TaskResultStatus.FAILED or row.exception:
        exception = row.exception or ENDED_WITHOUT_ERROR.get(row.status)
        if exception:
            errors.append(TaskError(exception_class_path=exception, traceback=row.traceback or row.error or ""))
    # Attempts: the retries, and the run now going on or that ended the task. Failed attempts'
    # workers are in the row's fields; the last one's is the row's own (or an attempt whose
    # process died: it kept no record).
    running_or_ran = row.status in {"R", "W"} or (status in FINISHED and row.started is not None)
    attempts = row.retries + (1 if running_or_ran else 0)
    workers = list((row.fields or {}).get(FIELD, {}).get("workers", []))[:attempts]
    if row.worker and len(workers) < attempts:
        workers.append(row.worker)
    result: TaskResult[Any, Any] = TaskResult(
        task=_as_queued(task, row),
        id=str(row.pk), status=status, enqueued_at=row.created, started_at=row.started,
        finished_at=row.finished, last_attempted_at=row.started, args=row.args, kwargs=row.kwargs,
        backend=alias, errors=errors, worker_ids=workers)
    if status == TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", row.result)
    return result


def _as_queued(task: DjangoTask[Any, Any], row: Any) -> DjangoTask[Any, Any]:
    """``task`` with the priority, queue and delay its row was queued with (``using()`` may have
    changed them); copied only when they differ, since a copy validates the task again."""
    if (task.priority, task.queue_name, task.run_after) == (row.priority, row.queue, row.run_after):
        return task
    return replace(task, priority=row.priority, queue_name=row.queue, run_after=row.run_after)


def _send_finished(sender: Any, task: Any, **extra: Any) -> None:
    django_task = django_task_of(task)
    if django_task is not None:
        backend = django_task.get_backend()
        django_signals.task_finished.send(type(backend), task_result=as_result(task, django_task, backend.alias))


registry.add_finder(_find_function, FIELD)
signals.task_finished.connect(_send_finished, dispatch_uid="cq.backends")
