"""Running a task function inline: a plain call, or ``.delay()`` under ``CQ_SERIAL``.

No row is written. :class:`InlineTask` stands in for the ``Task`` row as the
function's ``cqt``: subtasks and chains run at once, in this process, and logs
go to Python logging and roll up to the outermost inline task.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from .. import registry
from ..statuses import TaskStatus
from . import tracing

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..registry import TaskFunction

logger = logging.getLogger("cq.task")


class InlineTask:
    """The ``cqt`` of a task function run inline; also what ``CQ_SERIAL``'s ``delay()`` returns."""

    def __init__(self, fn: TaskFunction[Any, Any], args: Iterable[Any], kwargs: dict[str, Any] | None,
                 parent: InlineTask | None = None, previous: InlineTask | None = None) -> None:
        self.id = uuid.uuid4()
        self.func_name = fn.name
        self.args = list(args)
        self.kwargs = dict(kwargs or {})
        self.parent = parent
        self.previous = previous
        self.status = TaskStatus.PENDING
        self.result: Any = None
        self.error: str | None = None
        self.log_records: list[dict[str, Any]] = []
        self.fields: dict[str, Any] = dict(fn.fields)
        self.progress = _InlineProgress()
        self._fn = fn
        self._errbacks: list[tuple[Callable[..., Any], list[Any], dict[str, Any]]] = []

    def __repr__(self) -> str:
        return f"<InlineTask {self.func_name} {self.status.label}>"

    @property
    def signature(self) -> dict[str, Any]:
        return {"func_name": self.func_name, "args": self.args, "kwargs": self.kwargs}

    @property
    def top(self) -> InlineTask:
        return self.parent.top if self.parent else self

    def run(self) -> InlineTask:
        self.status = TaskStatus.RUNNING
        with tracing.inline(self):
            try:
                value = self._fn.func(self, *self.args, **self.kwargs)
            except Exception as error:
                self.status, self.error = TaskStatus.FAILURE, str(error)
                for func, args, kwargs in self._errbacks:
                    func(self, error, *args, **kwargs)
                raise
            self.result = value.unwrap() if isinstance(value, InlineTask) else value
            self.status = TaskStatus.SUCCESS
        return self

    def unwrap(self) -> Any:
        return self.result

    def wait(self, timeout: float | None = None) -> InlineTask:
        return self

    def subtask(self, func: Any, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None,
                **options: Any) -> InlineTask:
        return run_inline(func, args, kwargs, parent=self)

    def chain(self, func: Any, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None,
              **options: Any) -> InlineTask:
        return run_inline(func, args, kwargs, parent=self.parent, previous=self)

    def errorback(self, func: Callable[..., Any], args: Iterable[Any] = (),
                  kwargs: dict[str, Any] | None = None) -> None:
        self._errbacks.append((func, list(args), dict(kwargs or {})))

    def log(self, message: str, level: int = logging.INFO, publish: bool = True, limit: int | None = None) -> None:
        logger.log(level, "%s: %s", self.id, message)
        record = {"message": message, "timestamp": timezone.now().isoformat(), "level": logging.getLevelName(level)}
        if self.top is not self:
            record["origin"] = str(self.id)
        self.top.log_records.append(record)

    def update(self, *, fields: dict[str, Any]) -> None:
        self.fields = {**self.fields, **fields}

    @property
    def logs(self) -> list[dict[str, Any]]:
        return self.log_records

    def format_logs(self) -> str:
        return "\n".join(record["message"] for record in self.log_records)


class _InlineProgress(dict):
    """``cqt.progress`` of an inline run: kept in memory, as the row's would be."""

    def __call__(self, current: float, total: float | None = None, message: str | None = None) -> None:
        percent = None if not total else round(min(current / total, 1.0) * 100, 1)
        self.update(current=current, total=total, percent=percent, message=message)


def run_inline(func: Any, args: Iterable[Any], kwargs: dict[str, Any] | None, *,
               parent: InlineTask | None = None, previous: InlineTask | None = None) -> InlineTask:
    """Run a task function now, in this process, and return its finished stand-in."""
    fn = func if isinstance(func, registry.TaskFunction) else registry.require(registry.name_of(func))
    return InlineTask(fn, args, kwargs, parent=parent, previous=previous).run()
