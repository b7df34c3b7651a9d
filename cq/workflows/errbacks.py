"""Errorbacks: plain functions called as ``fn(task, error, *args, **kwargs)`` when a task finally fails.

An errorback is stored by its import path, signed with ``SECRET_KEY``: a path
edited in the database is refused rather than imported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from django.core import signing
from django.utils.module_loading import import_string

from .. import validation
from ..exceptions import InvalidTask
from ..models import TaskStatus, get_task_model

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

logger = logging.getLogger("cq.errbacks")  # its name before cq's subpackages: LOGGING settings use it

_errback_signer = signing.Signer(salt="cq.errback")


def errorback(task: Task, func: Callable[..., Any] | str, args: Iterable[Any] = (),
              kwargs: dict[str, Any] | None = None) -> None:
    """Have ``func(task, error, *args, **kwargs)`` called if ``task`` finally fails.

    The function is stored by its import path, signed with ``SECRET_KEY``: a path
    edited in the database is refused rather than imported.
    """
    entry = errback_entry(func, args, kwargs)
    task.errbacks = [*task.errbacks, entry]
    if task.status != TaskStatus.RUNNING:  # a running task stores them with its outcome
        Task.objects.filter(pk=task.pk).update(errbacks=task.errbacks)


def errback_entry(func: Callable[..., Any] | str, args: Iterable[Any] = (),
                  kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """How an errback is stored in a row's ``errbacks``: its signed import path and arguments.

    Raises:
        InvalidTask: ``func`` cannot be imported by its path, or the arguments are not JSON.
    """
    path = func if isinstance(func, str) else f"{func.__module__}.{func.__qualname__}"
    try:
        import_string(path)  # fail now, in the caller, rather than at failure time
    except ImportError:
        raise InvalidTask(f"Errorback {path!r} cannot be imported by that path; use a module-level "
                          f"function.") from None
    entry = {"path": _errback_signer.sign(path), "args": list(args), "kwargs": dict(kwargs or {})}
    validation.check_storable(entry, f"the arguments of errorback {path!r}")
    return entry


def run_errbacks(task: Task, error: BaseException) -> None:
    for entry in task.errbacks:
        try:
            func = import_string(_errback_signer.unsign(entry["path"]))
            func(task, error, *entry["args"], **entry["kwargs"])
        except Exception:
            logger.exception("Errorback %r of task %s raised.", entry.get("path"), task.pk)
