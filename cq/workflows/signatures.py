"""Signatures: a task function with its arguments, not yet a task.

``fn.s(*args, **kwargs)`` makes one. It is checked where it is made (the
function is registered, the arguments are JSON), so a group, chord or stages
built from signatures fails in the caller, before any row is written. A
signature can be stored in a row as JSON and read back, which is how a chord
keeps its callback and a pipeline its later stages.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from django.db import transaction

from .. import registry, validation
from ..conf import settings
from ..exceptions import InvalidTask
from ..models import get_task_model
from . import errbacks


@dataclass(frozen=True)
class Signature:
    """A registered task function's name, its JSON arguments, its queue and its errbacks.

    Immutable: ``set()`` and ``on_error()`` return a new signature.
    """

    name: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    queue: str = "default"
    errbacks: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        validation.check_storable(list(self.args), f"the args of task {self.name!r}")
        validation.check_storable(dict(self.kwargs), f"the kwargs of task {self.name!r}")
        validation.queue_name(self.queue)
        # A copy through JSON: the signature holds what a row will hold, and nothing the
        # caller can change afterwards.
        object.__setattr__(self, "args", tuple(json.loads(json.dumps(list(self.args)))))
        object.__setattr__(self, "kwargs", MappingProxyType(json.loads(json.dumps(dict(self.kwargs)))))

    def __repr__(self) -> str:
        arguments = [*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())]
        return f"<Signature {self.name}({', '.join(arguments)})>"

    def set(self, *, queue: str) -> Signature:
        """The same call on another queue."""
        return replace(self, queue=queue)

    def on_error(self, func: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> Signature:
        """The same call, with ``func(task, error, *args, **kwargs)`` called if it finally fails.

        For a chord's callback, ``task`` is the chord, and ``func`` is also called when the
        callback never runs because the header failed.
        """
        return replace(self, errbacks=(*self.errbacks, errbacks.errback_entry(func, args, kwargs)))

    def delay(self) -> Any:
        """Queue a run of it alone; returns its ``Task``, as ``fn.delay()`` does."""
        fn = registry.require(self.name)
        options: dict[str, Any] = {} if self.queue == fn.queue else {"queue": self.queue}
        with transaction.atomic():  # the errbacks are written before the doorbell rings
            task = fn.delay_args(self.args, dict(self.kwargs), **options)
            if self.errbacks and not settings.SERIAL:  # CQ_SERIAL has run it already
                task.errbacks = list(self.errbacks)
                get_task_model().objects.filter(pk=task.pk).update(errbacks=task.errbacks)
        return task

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "args": list(self.args), "kwargs": dict(self.kwargs), "queue": self.queue,
                "errbacks": list(self.errbacks)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Signature:
        return cls(data["name"], tuple(data["args"]), data["kwargs"], data["queue"], tuple(data["errbacks"]))


def signature(func: Any, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None) -> Signature:
    """A signature of the task function ``func`` (itself, or its registered name).

    Raises:
        TaskNotRegistered: ``func`` is not a registered task function.
        InvalidTask: the arguments are not JSON.
    """
    fn = registry.require(registry.name_of(func))
    return Signature(fn.name, tuple(args), dict(kwargs or {}), fn.queue)


def as_signature(step: Any) -> Signature:
    """``step`` if it is a signature; a task function or a registered name called with no arguments.

    Raises:
        TaskNotRegistered: a function or name that is not registered.
        InvalidTask: anything else.
    """
    if isinstance(step, Signature):
        registry.require(step.name)  # a signature built by hand may name anything
        return step
    if isinstance(step, registry.TaskFunction | str):
        return signature(step)
    raise InvalidTask(f"Expected a signature (fn.s(...)), a task function or its registered name, not {step!r}.")
