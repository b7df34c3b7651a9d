"""Groups, chords and stages: workflows made of a parent task waiting on its subtasks.

A workflow is a task row written WAITING, together with its first subtasks, in
the caller's transaction; no worker ever runs it. Whenever one of its subtasks
finishes, the engine locks the workflow's row, as it does for any waiting parent,
and asks the rule of its kind what to do. What a group, a stage, a chord and a
pipeline (``cq.stages``) each wait for, and how they end, is said once, in
``cq.workflows.rules``.

A chord and a pipeline wait on one subtask at a time, their ``waiting_on``.
This module builds workflows and writes their rows; ``cq.workflows.rules``
settles them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from .. import registry, validation
from ..conf import settings
from ..engine import dispatch, tracing
from ..exceptions import InvalidTask
from ..models import TaskStatus, get_task_model
from ..registry import task
from ..transport import doorbell
from .signatures import Signature, as_signature

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()


#: The names of the workflows' task functions: their rows are settled by ``cq.workflows.rules``.
GROUP, STAGE, CHORD, STAGES = "cq.group", "cq.stage", "cq.chord", "cq.stages"


@dataclass(frozen=True)
class Group:
    """Members run in parallel; ``delay()`` returns the group's task, whose result is theirs, in order."""

    members: tuple[Signature, ...]

    def delay(self) -> Task:
        _refuse_serial()
        with transaction.atomic():
            return _start_group(None, self.members, timezone.now())


@dataclass(frozen=True)
class Chord:
    """A header group, then a callback called with the list of its results as first argument."""

    header: tuple[Signature, ...]
    callback: Signature | None = None
    allow_failures: bool = False

    def __call__(self, callback: Any) -> Task:
        """Queue the chord with this callback; returns the chord's task."""
        return replace(self, callback=as_signature(callback)).delay()

    def delay(self) -> Task:
        if self.callback is None:
            raise InvalidTask("This chord has no callback: use chord(header)(callback) or "
                              "chord(header, callback).delay().")
        _refuse_serial()
        now = timezone.now()
        with transaction.atomic():
            # The callback's errbacks are the chord's: the callback's own row may never exist.
            chord = _row(CHORD, None, now, status=TaskStatus.WAITING, started=now,
                         kwargs={"callback": self.callback.to_json()}, errbacks=list(self.callback.errbacks))
            chord.save(force_insert=True)
            header = _start_group(chord, self.header, now, allow_failures=self.allow_failures)
            wait_on(chord, header)
        return chord


@dataclass(frozen=True)
class Stages:
    """Steps by priority, highest first; each stage starts when the one before it succeeded."""

    stages: tuple[tuple[int, tuple[Signature, ...]], ...]
    params: Mapping[str, Any]

    def delay(self) -> Task:
        _refuse_serial()
        now = timezone.now()
        plan = [{"priority": priority, "steps": [step.to_json() for step in steps]} for priority, steps in self.stages]
        with transaction.atomic():
            pipeline = _row(STAGES, None, now, status=TaskStatus.WAITING, started=now,
                            kwargs={"stages": plan, "params": dict(self.params)})
            pipeline.save(force_insert=True)
            wait_on(pipeline, start_stage(pipeline, 1, dict(self.params)))
        return pipeline


def group(members: Iterable[Any]) -> Group:
    """Run ``members`` (signatures: ``fn.s(...)``) in parallel; ``.delay()`` queues them.

    The group's task ends SUCCESS with the list of their results, in the order given, once
    all have succeeded, or INCOMPLETE, naming those that failed, once all have finished.

    Raises:
        InvalidTask: no members, or a member that is not a signature.
        TaskNotRegistered: a member's function is not registered.
    """
    return Group(_signatures(members, "group()"))


def chord(header: Iterable[Any], callback: Any = None, *, allow_failures: bool = False) -> Chord:
    """Run ``header`` in parallel, then ``callback`` with the list of their results, in order, put
    before its own arguments. ``chord(header)(callback)`` queues it at once and returns its task;
    ``chord(header, callback)`` is queued by ``.delay()``.

    If a header member fails, the callback does not run, the chord ends INCOMPLETE naming every
    failed member, and the callback's errbacks (``callback.on_error(fn)``) are called with the
    chord. With ``allow_failures`` the callback runs anyway, with ``None`` for failed members.

    Raises:
        InvalidTask: no header, or something that is not a signature.
        TaskNotRegistered: a function that is not registered.
    """
    return Chord(_signatures(header, "chord()"), None if callback is None else as_signature(callback),
                 bool(allow_failures))


def stages(steps: Iterable[Any], params: Mapping[str, Any] | None = None) -> Stages:
    """A pipeline of ``(signature, priority)`` steps; ``.delay()`` queues it and returns its task.

    Steps of the same priority run in parallel; a lower priority starts once every step of the
    one above has succeeded. Each step is called with ``params=``, the params so far, and may
    return a dict of updates (or ``None``), merged in the order the steps are listed. The
    pipeline ends SUCCESS with the final params, or FAILURE at the first stage that failed.
    A step may be given as a signature, a task function or a registered name.

    Raises:
        InvalidTask: no steps, a step that is not a pair, a priority that is not an integer,
            a step given ``params`` itself, or params that are not a JSON object.
        TaskNotRegistered: a function that is not registered.
    """
    by_priority: dict[int, list[Signature]] = {}
    for entry in steps:
        if not isinstance(entry, tuple | list) or len(entry) != 2:
            raise InvalidTask(f"stages() takes (step, priority) pairs, not {entry!r}.")
        step, priority = as_signature(entry[0]), entry[1]
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise InvalidTask(f"The priority of {step!r} must be an integer, not {priority!r}.")
        if "params" in step.kwargs:
            raise InvalidTask(f"{step!r} is given params= by the pipeline; do not pass it yourself.")
        by_priority.setdefault(priority, []).append(step)
    if not by_priority:
        raise InvalidTask("stages() needs at least one step.")
    if not isinstance(params, Mapping | None):
        raise InvalidTask(f"stages() takes params as a dict, not {params!r}.")
    params = dict(params or {})
    validation.check_storable(params, f"the params of task {STAGES!r}")
    ordered = tuple((priority, tuple(by_priority[priority])) for priority in sorted(by_priority, reverse=True))
    return Stages(ordered, MappingProxyType(params))


def _signatures(members: Iterable[Any], what: str) -> tuple[Signature, ...]:
    if isinstance(members, str | Signature) or not isinstance(members, Iterable):
        raise InvalidTask(f"{what} takes a list of signatures (fn.s(...)), not {members!r}.")
    found = tuple(as_signature(member) for member in members)
    if not found:
        raise InvalidTask(f"{what} needs at least one member.")
    return found


def _refuse_serial() -> None:
    if settings.SERIAL:
        raise InvalidTask("Groups, chords and stages need task rows; CQ_SERIAL runs every task inline. "
                          "In tests, use cq.testing.run_ready_tasks() instead.")


# -- Writing rows ------------------------------------------------------------------------


def _row(func_name: str, parent: Task | None, now: datetime, **fields: Any) -> Task:
    return Task(func_name=func_name, **_placed(parent, now), **fields)


def _placed(parent: Task | None, now: datetime) -> dict[str, Any]:
    """Where a workflow's row goes: under ``parent``, whose trace context it keeps (so a stage or
    a callback the engine writes later is in the trace of the workflow's caller); a workflow of
    its own keeps the current span's (``cq.engine.tracing``)."""
    return {"parent": parent, "top_id": None if parent is None else parent.top_id or parent.pk,
            "created": now, "submitted": now, "trace": tracing.carrier() if parent is None else parent.trace}


def call_row(sig: Signature, parent: Task, now: datetime, args: list[Any], kwargs: dict[str, Any],
              **fields: Any) -> Task:
    """A QUEUED row running ``sig``'s function, with the function's own priority, fields and
    concurrency key, as ``delay()`` would give it."""
    return dispatch.new_row(registry.require(sig.name), args, kwargs, status=TaskStatus.QUEUED, queue=sig.queue,
                            **_placed(parent, now), **fields)


def _start_group(parent: Task | None, members: Iterable[Signature], now: datetime, name: str = GROUP,
                 params: dict[str, Any] | None = None, **options: Any) -> Task:
    """Write a WAITING group under ``parent`` with its members, queued when the transaction commits."""
    group = _row(name, parent, now, status=TaskStatus.WAITING, started=now)
    given = {} if params is None else {"params": params}
    rows = [call_row(sig, group, now, list(sig.args), {**sig.kwargs, **given}, errbacks=list(sig.errbacks))
            for sig in members]
    group.kwargs = {"members": [str(row.pk) for row in rows], **given, **options}
    dispatch.insert([group, *rows])
    doorbell.ring_on_commit([(row.pk, row.queue, row.priority) for row in rows])
    return group


def start_stage(pipeline: Task, number: int, params: dict[str, Any]) -> Task:
    plan = pipeline.kwargs["stages"]
    stage = plan[number - 1]
    steps = [Signature.from_json(step) for step in stage["steps"]]
    pipeline.log(f"Stage {number} of {len(plan)} (priority {stage['priority']}): "
                 f"{', '.join(step.name for step in steps)}")
    return _start_group(pipeline, steps, timezone.now(), STAGE, params, stage=number)


def wait_on(task: Task, child: Task) -> None:
    Task.objects.filter(pk=task.pk).update(waiting_on=child.pk)
    task.waiting_on_id = child.pk


# The rows of workflows are never queued, so these functions never run. They are registered so
# that no task function of a project can take these names (the engine would take its rows for
# workflows), and so that a row queued by hand fails with a clear error.
def _settled_not_run(cqt: Any, *args: Any, **kwargs: Any) -> None:
    raise InvalidTask(f"A {cqt.func_name} task is not run: it is finished by cq.engine.transitions.settling as its "
                      f"subtasks finish.")


for _name in (GROUP, STAGE, CHORD, STAGES):
    task(_name)(_settled_not_run)
