"""Task trees: subtasks, chains, errorbacks, revoking, and settling a waiting parent.

A parent whose function has returned is WAITING until its subtasks are done.
Every change below a parent ends in :func:`settle`, which locks the parent's
row and decides: all subtasks succeeded (SUCCESS), one of them failed or was
revoked (INCOMPLETE), or not yet. Because each finishing subtask writes its own
status *before* it locks the parent, whichever of two siblings locks second
sees the other's status, so a tree never hangs on a race.

Groups, chords and stages are trees of the same kind, settled by the same code:
``group``, ``chord``, ``stages`` and ``signature`` are importable from here
(they live in ``cq.workflows`` and ``cq.signatures``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.core import signing
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.module_loading import import_string

from . import dispatch, events, registry, signals, validation, workflows
from .exceptions import CQError, InvalidTask
from .models import ERROR, REVOCABLE, TaskStatus, Worker, get_task_model, result_expiry
from .signatures import Signature, signature  # noqa: F401  (public here, with the workflows)
from .workflows import Chord, Group, Stages, chord, group, stages  # noqa: F401

Task = get_task_model()

logger = logging.getLogger(__name__)

_errback_signer = signing.Signer(salt="cq.errback")


def subtask(parent: Task, func: Any, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None,
            **options: Any) -> Task:
    return registry.get(registry.name_of(func)).delay_args(args, kwargs, parent=parent, **options)


def chain(previous: Task, func: Any, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None,
          **options: Any) -> Task:
    return registry.get(registry.name_of(func)).delay_args(args, kwargs, previous=previous, **options)


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


def launch_next(task: Task, failed: bool = False) -> None:
    """Queue the tasks chained after ``task``: all on success, the ``force_chain`` ones on failure."""
    chained = Task.objects.filter(previous=task.pk)
    dispatch.launch(chained.filter(force_chain=True) if failed else chained)


def launch_subtasks(task: Task) -> None:
    dispatch.launch(Task.objects.filter(parent=task.pk, previous__isnull=True))


def settle(task_id: Any, cause: BaseException | None = None) -> None:
    """Finish a WAITING task whose subtasks are all done; then its parent, and so on up.

    Must run inside a transaction; ``cause`` is the error that made a subtask fail,
    handed to errbacks. Groups, chords and stages decide for themselves (``cq.workflows``).
    """
    task = Task.objects.select_for_update().filter(pk=task_id).first()
    if task is None or task.status != TaskStatus.WAITING:
        return
    if task.func_name in workflows.NAMES:
        # A workflow names its own failures (every failed member of a group), so the error
        # that woke it is not necessarily the one it reports.
        outcome, cause = workflows.settle(task), None
    else:
        outcome = _settle_tree(task)
    if outcome is None:
        return
    status, fields = outcome
    _finish(task, status, timezone.now(), **fields)
    if status == TaskStatus.SUCCESS:
        cause = None
    else:
        cause = cause or CQError(task.error)
        transaction.on_commit(lambda: run_errbacks(task, cause))
    if task.has_next:
        launch_next(task, failed=status != TaskStatus.SUCCESS)
    if task.parent_id is not None:
        settle(task.parent_id, cause)


def _settle_tree(task: Task) -> workflows.Outcome | None:
    """SUCCESS once every subtask succeeded; INCOMPLETE as soon as one failed; else ``None``."""
    # One row at most: the first subtask not yet successful, failures first (their codes,
    # E F I L, sort before those of unfinished tasks, P Q R W Y). None left: all succeeded.
    unsettled = (Task.objects.filter(parent=task.pk).exclude(status=TaskStatus.SUCCESS)
                 .order_by("status").values_list("pk", "status", "error").first())
    if unsettled is None:
        result = task.result
        if task.waiting_on_id is not None:
            result = Task.objects.filter(pk=task.waiting_on_id).values_list("result", flat=True).get()
        return TaskStatus.SUCCESS, {"result": result}
    pk, status, error = unsettled
    if status in ERROR:
        return TaskStatus.INCOMPLETE, {"error": f"Subtask {pk} ended {TaskStatus(status).label}: {error or ''}"
                                       .rstrip(": ")}
    return None


def _finish(task: Task, status: TaskStatus, now: Any, **fields: Any) -> None:
    fields.update(status=status, finished=now, result_expiry=result_expiry(task, now))
    Task.objects.filter(pk=task.pk).update(**fields)
    for name, value in fields.items():
        setattr(task, name, value)
    events.status([task])


def revoke(task: Task, terminate: bool = False) -> None:
    """Revoke ``task`` and every task under it or chained after it that has not finished.

    A revoked task is never run; one already running finishes, but its outcome is
    not recorded and an atomic task's writes are rolled back; with ``terminate``
    its worker process is killed instead. A waiting parent of ``task`` ends
    INCOMPLETE.
    """
    ids, frontier = {task.pk}, [task.pk]
    while frontier:
        frontier = [pk for pk in Task.objects.filter(Q(parent__in=frontier) | Q(previous__in=frontier))
                    .values_list("pk", flat=True) if pk not in ids]
        ids.update(frontier)
    now = timezone.now()
    with transaction.atomic():
        running = list(Task.objects.filter(pk__in=ids, status=TaskStatus.RUNNING).values_list("pk", "worker"))
        revocable = Task.objects.filter(pk__in=ids, status__in=REVOCABLE)
        if events.enabled() or signals.task_finished.has_listeners():
            revoked = list(revocable)
            for row in revoked:
                row.status, row.finished = TaskStatus.REVOKED, now
            events.status(revoked)
        # Revoked tasks expire like finished ones; a tree's tasks usually share one result_ttl.
        for ttl in set(revocable.values_list("result_ttl", flat=True)):
            expiry = result_expiry(Task(result_ttl=ttl), now)
            revocable.filter(result_ttl=ttl).update(status=TaskStatus.REVOKED, finished=now, result_expiry=expiry)
        for pk, worker in running if terminate else ():
            Worker.objects.filter(name=worker).update(terminate_task=pk)
        parent_id = Task.objects.filter(pk=task.pk).values_list("parent_id", flat=True).get()
        if parent_id is not None and parent_id not in ids:
            settle(parent_id)
    task.refresh_from_db(fields=["status", "finished"])
