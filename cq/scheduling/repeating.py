"""A repeating task's rules: what a valid row is, when it runs next, and how one is created.

They need no task model, only the row given (``RepeatingTask``, or its historical model in a
data migration), so ``cq.models`` calls them from ``clean()``, ``save()`` and
``schedule_task()``. Firing a due row is ``cq.scheduling.firing``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone

from .. import registry, validation
from ..exceptions import InvalidTask, TaskNotRegistered
from .cron import next_fire, validate_crontab, validate_timezone


def validate_repeating_task(rt: Any) -> None:
    """Raises ``ValidationError`` (by field) for a function that is not registered, arguments
    that are not a JSON list and object that cq can store (``cq.validation.check_storable``),
    or a ``result_ttl`` that is not one (``cq.validation.result_ttl``)."""
    errors: dict[str, str] = {}
    try:
        registry.require(rt.func_name)
    except TaskNotRegistered:
        errors["func_name"] = f"No task function is registered as {rt.func_name!r}."
    if not isinstance(rt.args, list):
        errors["args"] = "Arguments must be a JSON list, e.g. [1, \"two\"]."
    if not isinstance(rt.kwargs, dict):
        errors["kwargs"] = "Keyword arguments must be a JSON object, e.g. {\"limit\": 10}."
    for field in ("args", "kwargs"):
        try:
            validation.check_storable(getattr(rt, field), f"the {field}")
        except InvalidTask as error:
            errors.setdefault(field, str(error))
    try:
        validation.result_ttl(getattr(rt, "result_ttl", None))
    except InvalidTask as error:
        errors["result_ttl"] = str(error)
    if errors:
        raise ValidationError(errors)


def reschedule(rt: Any, now: datetime | None = None) -> None:
    """Set ``next_run`` from the crontab when it is unset or the schedule changed."""
    schedule = (rt.crontab, rt.timezone, rt.enabled)
    if getattr(rt, "_loaded_schedule", None) == schedule and (rt.next_run is not None or not rt.enabled):
        return
    rt.next_run = next_fire(rt.crontab, rt.timezone, now or timezone.now(), rt.last_run) if rt.enabled else None
    rt._loaded_schedule = schedule


def build_repeating_task(cls: type[Any], crontab: str, func: Callable[..., Any] | str, args: Iterable[Any] = (),
                         kwargs: dict[str, Any] | None = None, **fields: Any) -> Any:
    rt = cls(crontab=crontab, func_name=registry.name_of(func), args=list(args),
             kwargs={} if kwargs is None else kwargs, **fields)
    validate_crontab(rt.crontab)
    validate_timezone(rt.timezone)
    validate_repeating_task(rt)
    # A historical model (in a migration) has neither our save() nor signals: set next_run here.
    rt.next_run = next_fire(rt.crontab, rt.timezone, timezone.now()) if rt.enabled else None
    rt.save()
    return rt
