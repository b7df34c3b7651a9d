"""A task's metadata of the project's own, and its progress.

``fields={...}`` sets columns the project added on its own task model
(``CQ_TASK_MODEL``) when a key names one, and goes into the JSON column
``fields`` otherwise; either way a plain ORM filter finds the tasks
(``filter(owner=user)``, ``filter(fields__customer=42)``).

While a task runs, ``cqt.update(fields=...)`` and ``cqt.progress(...)`` write
at once on a connection of their own, in autocommit, so that the change is
seen while an atomic task's transaction is still open (in worker processes on
PostgreSQL; SQLite allows one writer, so there they join the task's
transaction, as they do wherever tasks run in the caller's process). Progress
writes are throttled to one per ``CQ_PROGRESS_INTERVAL`` seconds, and the last
one (``current == total``) is always written.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import DatabaseError, connections, router
from django.db.models import Count

from .. import validation
from ..conf import settings
from ..exceptions import InvalidTask
from ..models import DONE, AbstractTask, TaskStatus, get_task_model
from ..transport import events
from .returning import update_row

logger = logging.getLogger("cq.metadata")  # its name before cq's subpackages: LOGGING settings use it

_aside = threading.local()
_WRITTEN_AT = "_cq_progress_written"


@functools.cache
def own_columns() -> dict[str, str]:
    """Columns of the task model that cq does not define, by field name and by attname
    (``owner`` and ``owner_id``), each mapped to the field's name."""
    ours = {field.name for field in AbstractTask._meta.get_fields()}
    columns = {}
    for field in get_task_model()._meta.concrete_fields:
        if field.name not in ours:
            columns[field.name] = columns[field.attname] = field.name
    return columns


def apply_fields(task: Any, values: Any) -> list[str]:
    """Set ``values`` on ``task``; returns the names of the columns changed.

    Raises:
        InvalidTask: ``values`` is not a dict, names one of cq's own columns, or its JSON part
        is not JSON that cq can store (``cq.validation.check_storable``), or a string for one of
        the model's own columns holds what no database column can (NUL). Nothing is set then.
    """
    if not isinstance(values, dict):
        raise InvalidTask(f"fields= takes a dict, not {values!r}.")
    columns = own_columns()
    ours = [key for key in values if key not in columns and key in _cq_names()]
    if ours:
        raise InvalidTask(f"fields= cannot set {', '.join(sorted(ours))}: cq's own column(s) of the task.")
    extra = {key: value for key, value in values.items() if key not in columns}
    validation.check_storable(extra, f"the fields of task {task.func_name!r}")
    for key, value in values.items():
        if key in columns and isinstance(value, str) and validation.storable_text(value) != value:
            raise InvalidTask(f"fields= gives column {key!r} of task {task.func_name!r} "
                              f"{validation.excerpt(value, 60)}, which holds NUL or a lone surrogate; "
                              f"no database column can store it.")
    changed = []
    for key, value in values.items():
        if key in columns:
            setattr(task, key, value)
            changed.append(key)
    if extra:
        task.fields = {**(task.fields or {}), **extra}
        changed.append("fields")
    return changed


@functools.cache
def _cq_names() -> frozenset[str]:
    names = set()
    for field in AbstractTask._meta.get_fields():
        names.update({field.name, getattr(field, "attname", field.name)})
    return frozenset(names)


def update(task: Any, *, fields: dict[str, Any]) -> None:
    """``cqt.update(fields=...)``: set metadata on the task and store it now."""
    changed = apply_fields(task, fields)
    if changed and not task._state.adding:
        write(task, {name: getattr(task, name) for name in changed})


def progress(task: Any, current: float, total: float | None = None, message: str | None = None) -> None:
    """``cqt.progress(current, total, message)``: record how far the task has come."""
    for name, value in (("current", current), ("total", total)):
        if value is not None and not validation.is_amount(value):
            raise InvalidTask(f"progress() takes finite numbers of 0 or more, not {name}={value!r}.")
    if message is not None and not isinstance(message, str):
        raise InvalidTask(f"progress() takes a message string, not {message!r}.")
    if message is not None:
        message = validation.storable_text(message)
    percent = None if not total else round(min(current / total, 1.0) * 100, 1)
    task.progress = {"current": current, "total": total, "percent": percent, "message": message}
    if task._state.adding:
        return
    now = time.monotonic()
    last = task.__dict__.get(_WRITTEN_AT)
    if last is not None and now - last < settings.PROGRESS_INTERVAL and percent != 100.0:
        return
    task.__dict__[_WRITTEN_AT] = now
    write(task, {"progress": task.progress})
    events.progress(task)


def write(task: Any, values: dict[str, Any]) -> None:
    """Store ``values`` on ``task``'s row now; while it runs, only if it still runs."""
    model = type(task)
    alias = router.db_for_write(model)
    # While it runs, only this run may write: fenced on its attempt (see cq.engine.transitions).
    guard = {"status": TaskStatus.RUNNING, "attempt": task.attempt} if task.status == TaskStatus.RUNNING else {}
    if getattr(_aside, "enabled", False) and connections[alias].vendor == "postgresql" and guard:
        try:
            update_row(model, task.pk, guard, values, ["status"], using=_aside_connection(alias))
            return
        except DatabaseError as error:
            # The task's own transaction holds its row (it changed it itself): write there.
            logger.debug("Writing %s of task %s aside failed (%s); writing in its transaction.",
                         ", ".join(values), task.pk, error)
            _drop_aside()
    model._default_manager.filter(pk=task.pk, **guard).update(**values)


@contextmanager
def writing_aside() -> Iterator[None]:
    """Within the block (a worker's run), this thread writes progress and fields of running tasks
    on a connection of its own, closed as the block ends. Elsewhere (tests running tasks in
    their own transaction, inline runs) they go through the usual connection."""
    _aside.enabled = True
    try:
        yield
    finally:
        _aside.enabled = False
        _drop_aside()


def _aside_connection(alias: str) -> Any:
    connection = getattr(_aside, "connection", None)
    if connection is None:
        connection = connections.create_connection(alias)
        connection.ensure_connection()
        with connection.cursor() as cursor:
            # Never wait behind the task's own transaction: fall back to it instead.
            cursor.execute("SET lock_timeout = '100ms'")
        _aside.connection = connection
    return connection


def _drop_aside() -> None:
    connection = getattr(_aside, "connection", None)
    _aside.connection = None
    if connection is not None:
        try:
            connection.close()
        except DatabaseError:
            pass


def tree_progress(task: Any) -> dict[str, Any]:
    """``task.tree_progress``: its own progress while it runs; once it waits on subtasks, how
    many of them have finished (``current``) out of how many (``total``)."""
    if task.status != TaskStatus.WAITING:
        return dict(task.progress)
    counts = dict(type(task)._default_manager.filter(parent=task.pk).values_list("status")
                  .annotate(n=Count("pk")).values_list("status", "n"))
    total, done = sum(counts.values()), sum(n for status, n in counts.items() if status in DONE)
    percent = round(done / total * 100, 1) if total else None
    return {"current": done, "total": total, "percent": percent, "message": None}
