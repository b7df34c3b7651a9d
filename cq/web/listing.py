"""The task list, for the dashboard (``cq.web.dashboard.task_list``) and the JSON API
(``cq.web.api.tasks``): a page of tasks newest first, the cursor of the next page, and a count,
each as cheap on a table of ten million tasks as on an empty one.

Paging is by keyset, never by offset: tasks are ordered by ``(created, id)``, newest first, and
the cursor names the last row shown; the next page is the rows before it. Neither column changes
after the insert, so a page never repeats or skips a row while tasks are added or change status.

The list is read in two parts, each through an index, and merged (at most a page from each):

- finished tasks, through indexes that a row enters once, when it finishes (``ltop`` for
  top-level tasks, ``lall`` for all, ``lfn`` for one function's; cq.models), read backwards from
  the cursor, so a page costs the reading of a page (more when a filter passes few rows: a
  final status that few tasks have, on a large table, reads until it found a page's worth);
- unfinished tasks, through the partial index of the unfinished statuses (``func``): they are
  few unless a backlog has grown, and then they are all read and sorted.

No index covers every row whatever its status: each change of status would add an entry to it.

The count is exact up to :data:`COUNTED` tasks; past that, it is PostgreSQL's planner's estimate
(``EXPLAIN``; other databases say only "more than 1,000"), since an exact count reads every row.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings as django_settings
from django.db import connections
from django.db.models import Q, QuerySet
from django.utils import timezone

from ..models import DONE, UNFINISHED, TaskStatus

#: The count is exact up to this many tasks, and estimated past it.
COUNTED = 1000
#: On PostgreSQL, a planner's estimate past this many is taken without counting.
TRUSTED = 2 * COUNTED


class BadCursor(ValueError):
    """A ``cursor`` that no page of the list gave."""


@dataclass(frozen=True)
class Page:
    tasks: list[Any]
    #: The cursor of the next page, or None on the last one.
    next: str | None


@dataclass(frozen=True)
class Count:
    value: int
    #: False when ``value`` is an estimate (``estimated``) or a lower bound (neither).
    exact: bool
    estimated: bool = False

    @property
    def text(self) -> str:
        if self.exact:
            return f"{self.value:,}"
        return f"about {self.value:,}" if self.estimated else f"more than {self.value:,}"

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "exact": self.exact, "estimated": self.estimated, "text": self.text}


def cursor_of(task: Any) -> str:
    """The cursor after ``task``: its creation in microseconds since the epoch, and its id."""
    created = task.created if timezone.is_aware(task.created) else task.created.replace(tzinfo=UTC)
    micros = (created - EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{uuid.UUID(str(task.pk)).hex}"


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def read_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The ``(created, id)`` a cursor names.

    Raises:
        BadCursor: not a cursor that :func:`cursor_of` makes.
    """
    micros, _, pk = cursor.partition(".")
    try:
        if not micros.lstrip("-").isdigit() or len(pk) != 32:
            raise ValueError
        created = EPOCH + timedelta(microseconds=int(micros))
        # Without USE_TZ, the column holds naive times, read back as they were written.
        return (created if django_settings.USE_TZ else created.replace(tzinfo=None)), uuid.UUID(hex=pk)
    except (ValueError, OverflowError):
        raise BadCursor(f"cursor {cursor[:80]!r} is not one the list gave: start again from the first page "
                        f"(no cursor).") from None


def parts(found: QuerySet, statuses: set[str] | None) -> list[QuerySet]:
    """``found`` as its finished and its unfinished tasks, each filtered on exactly the
    condition of the partial indexes that serve it (databases use a partial index only for a
    query whose conditions imply the index's). ``statuses``: the status filter, if any."""
    return [found.filter(status__in=sorted(group)) for group in (DONE, UNFINISHED)
            if statuses is None or statuses & group]


def page(found: QuerySet, statuses: set[str] | None, size: int, cursor: str | None = None,
         columns: tuple[str, ...] = ()) -> Page:
    """The ``size`` newest tasks of ``found`` (filtered, unordered) after ``cursor``, with only
    ``columns`` read when given.

    Raises:
        BadCursor: ``cursor`` is not one a page gave.
    """
    rows: list[Any] = []
    for part in parts(found, statuses):
        if cursor:
            created, pk = read_cursor(cursor)
            # created <= the cursor's bounds the index scan; the rest breaks ties by id.
            part = part.filter(created__lte=created).filter(Q(created__lt=created) | Q(pk__lt=pk))
        rows += (part.only(*columns) if columns else part).order_by("-created", "-pk")[:size + 1]
    rows.sort(key=lambda task: (task.created, uuid.UUID(str(task.pk))), reverse=True)
    return Page(rows[:size], cursor_of(rows[size - 1]) if len(rows) > size else None)


def count(found: QuerySet, statuses: set[str] | None) -> Count:
    """How many tasks ``found`` holds: exact up to :data:`COUNTED`, estimated past it."""
    estimate = _estimate(found, statuses) if connections[found.db].vendor == "postgresql" else 0
    if estimate > TRUSTED:
        # Counting even a bounded COUNTED would read many rows when a filter passes few of those
        # the index gives (a status among the final ones): past TRUSTED, the plan's guess will do.
        return Count(estimate, exact=False, estimated=True)
    counted = sum(part.order_by().values("pk")[:COUNTED + 1].count() for part in parts(found, statuses))
    if counted <= COUNTED:
        return Count(counted, exact=True)
    if connections[found.db].vendor != "postgresql":
        return Count(COUNTED, exact=False)
    return Count(max(estimate, COUNTED + 1), exact=False, estimated=True)


def _estimate(found: QuerySet, statuses: set[str] | None) -> int:
    """How many rows PostgreSQL's planner expects ``found`` to hold (``EXPLAIN``, which reads none)."""
    estimate = 0
    for part in parts(found, statuses):
        sql, params = part.order_by().values("pk").query.sql_with_params()
        with connections[found.db].cursor() as cursor:
            cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0]
        plan = json.loads(plan) if isinstance(plan, str) else plan
        estimate += int(plan[0]["Plan"]["Plan Rows"])
    return estimate


def timings(task: Any, now: datetime) -> tuple[float | None, float | None]:
    """``(wait, duration)`` in seconds: from submitted to started (or now, while it is queued),
    and from started to finished (or now, while it runs or waits on subtasks); None where it has
    no such time."""
    status = TaskStatus(task.status)
    waited = ran = None
    if task.started is not None and task.started >= task.submitted:
        waited = (task.started - task.submitted).total_seconds()
    elif status in (TaskStatus.QUEUED, TaskStatus.RETRY):
        waited = max(0.0, (now - task.submitted).total_seconds())
    if task.started is not None:
        end = task.finished if task.finished is not None else (now if status in UNFINISHED else None)
        if end is not None and end >= task.started:
            ran = (end - task.started).total_seconds()
    return waited, ran


def short(seconds: float | None) -> str:
    """``seconds`` for a person: 42 ms, 3.5 s, 12.3 s, 4 min 05 s, 2 h 03 min, 3 d 4 h."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 10:
        return f"{seconds:.3g} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


#: The columns the dashboard's list shows (its rows read no others: arguments, results and logs
#: can be large).
SHOWN = ("id", "func_name", "status", "progress", "created", "submitted", "started", "finished", "top")


def rows(tasks: list[Any], task_url: str = "") -> list[dict[str, Any]]:
    """The list's rows: each task with its wait and duration, as seconds and as text; and for the
    dashboard, its page's URL (``task_url`` with the id of :data:`ZERO` replaced) and its times as
    text, made here once rather than by a template tag per cell (a page renders twice as fast)."""
    now = timezone.now()
    found = []
    for task in tasks:
        waited, ran = timings(task, now)
        found.append({"task": task, "wait": waited, "duration": ran, "wait_text": short(waited),
                      "duration_text": short(ran), "progress": _reported(task),
                      "url": task_url.replace(ZERO, str(task.pk)), "label": TaskStatus(task.status).label,
                      "submitted": _when(task.submitted), "finished": _when(task.finished)})
    return found


ZERO = "00000000-0000-0000-0000-000000000000"


def _when(moment: datetime | None) -> str:
    return "" if moment is None else timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S")


def _reported(task: Any) -> Any:
    """The task's progress, when it reported some (a bar is shown for it only then), as a plain
    dict: a template would call a :class:`cq.fields.Progress`, which records progress."""
    return dict(task.progress) or None


def statuses_of(query: Any) -> set[str] | None:
    value = query.get("status")
    return set(value.split(",")) if value else None
