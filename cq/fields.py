"""The model field cq defines: the progress column, a JSON object read as :class:`Progress`.

Migrations (cq's, and those of a project's own task model) name it ``cq.models.ProgressField``,
which stays importable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import models

from . import verbs

if TYPE_CHECKING:
    from .models import AbstractTask


class Progress(dict[str, Any]):
    """What ``task.progress`` gives: the last progress recorded (``current``, ``total``,
    ``percent``, ``message``; empty before any), and, called, the way to record it:
    ``cqt.progress(3, 10, "third of ten")``."""

    def __init__(self, task: AbstractTask, value: dict[str, Any] | None) -> None:
        super().__init__(value or {})
        self._task = task

    def __call__(self, current: float, total: float | None = None, message: str | None = None) -> None:
        verbs.engine().progress(self._task, current, total, message)


class _ProgressAttribute(models.query_utils.DeferredAttribute):
    # A data descriptor (it has __set__), so that it is used even once the value is loaded.
    def __get__(self, instance: Any, cls: Any = None) -> Any:
        if instance is None:
            return self
        return Progress(instance, super().__get__(instance, cls))

    def __set__(self, instance: Any, value: Any) -> None:
        instance.__dict__[self.field.attname] = dict(value) if isinstance(value, Progress) else value


class ProgressField(models.JSONField):
    """A JSON column read as :class:`Progress`."""

    descriptor_class = _ProgressAttribute

    def get_prep_value(self, value: Any) -> Any:
        if isinstance(value, Progress):
            value = dict(value) or None
        return super().get_prep_value(value)
