"""Groups, chords and stages: workflows made of a parent task waiting on its subtasks.

A workflow is a task row written WAITING, together with its first subtasks, in
the caller's transaction; no worker ever runs it. Whenever one of its subtasks
finishes, ``transitions.settle`` locks the workflow's row, as it does for any
waiting parent, and asks the rule of its kind (:data:`RULES`) what to do:

- a *group* (``cq.group``) waits for all its members, then ends SUCCESS with
  their results in the order given (``kwargs["members"]`` keeps the order), or
  INCOMPLETE naming every member that failed. With ``allow_failures`` a failed
  member's slot is ``None`` instead.
- a *stage* (``cq.stage``) is a group whose members were given ``params=``; it
  ends with those params updated by the members' results, in the order listed.
- a *chord* (``cq.chord``) waits on its header, a group; then on its callback,
  which it creates with the header's results as the first argument. It ends as
  the callback does.
- a *pipeline* (``cq.stages``) waits on one stage at a time and starts the next
  with the params the last one ended with; it ends with the final params, or
  FAILURE at the first stage that failed.

A chord and a pipeline wait on one subtask at a time, their ``waiting_on``. A
workflow that ends INCOMPLETE (or a pipeline FAILURE) names what failed in its
``error``, and lists it in its result:
``{"failed": [{"index", "task", "func_name", "status", "error"}]}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from django.db import transaction
from django.utils import timezone

from . import dispatch, registry, validation
from .conf import settings
from .exceptions import InvalidTask
from .models import DONE, UNFINISHED, TaskStatus, get_task_model
from .registry import task
from .signatures import Signature, as_signature
from .transport import doorbell

Task = get_task_model()


#: The names of the workflows' task functions: their rows are settled by :data:`RULES`.
GROUP, STAGE, CHORD, STAGES = "cq.group", "cq.stage", "cq.chord", "cq.stages"
#: Failures named in an error message; the result lists them all.
MAX_NAMED = 10

_UNFINISHED = sorted(UNFINISHED)


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
            _wait_on(chord, header)
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
            _wait_on(pipeline, _start_stage(pipeline, 1, dict(self.params)))
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
    return {"parent": parent, "top_id": None if parent is None else parent.top_id or parent.pk,
            "created": now, "submitted": now}


def _call_row(sig: Signature, parent: Task, now: datetime, args: list[Any], kwargs: dict[str, Any],
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
    rows = [_call_row(sig, group, now, list(sig.args), {**sig.kwargs, **given}, errbacks=list(sig.errbacks))
            for sig in members]
    group.kwargs = {"members": [str(row.pk) for row in rows], **given, **options}
    dispatch.insert([group, *rows])
    doorbell.ring_on_commit([(row.pk, row.queue, row.priority) for row in rows])
    return group


def _start_stage(pipeline: Task, number: int, params: dict[str, Any]) -> Task:
    plan = pipeline.kwargs["stages"]
    stage = plan[number - 1]
    steps = [Signature.from_json(step) for step in stage["steps"]]
    pipeline.log(f"Stage {number} of {len(plan)} (priority {stage['priority']}): "
                 f"{', '.join(step.name for step in steps)}")
    return _start_group(pipeline, steps, timezone.now(), STAGE, params, stage=number)


def _wait_on(task: Task, child: Task) -> None:
    Task.objects.filter(pk=task.pk).update(waiting_on=child.pk)
    task.waiting_on_id = child.pk


# -- Settling ----------------------------------------------------------------------------

Outcome = tuple[TaskStatus, dict[str, Any]]


def _settle_group(group: Task) -> Outcome | None:
    members = Task.objects.filter(parent=group.pk)
    if members.filter(status__in=_UNFINISHED).exists():
        return None
    rows = {str(pk): row for pk, *row in members.values_list("pk", "func_name", "status", "result", "error")}
    results, failed = [], []
    for index, pk in enumerate(group.kwargs["members"]):
        name, status, result, error = rows[pk]
        if status != TaskStatus.SUCCESS:
            failed.append(_failure(index, pk, name, status, error))
            result = None
        results.append(result)
    noun = "steps" if group.func_name == STAGE else "members"
    if failed and not group.kwargs.get("allow_failures"):
        return _incomplete(f"{len(failed)} of {len(results)} {noun} failed", failed)
    if group.func_name == STAGE:
        return _merge(group, results, rows)
    return TaskStatus.SUCCESS, {"result": results}


def _merge(stage: Task, updates: list[Any], rows: dict[str, Any]) -> Outcome:
    params = dict(stage.kwargs["params"])
    for index, (pk, update) in enumerate(zip(stage.kwargs["members"], updates, strict=True)):
        if isinstance(update, dict):
            params.update(update)
        elif update is not None:
            error = f"returned {update!r}, not a dict of params to update"
            failure = _failure(index, pk, rows[pk][0], TaskStatus.SUCCESS, error)
            return _incomplete("A step's result is not usable", [failure])
    return TaskStatus.SUCCESS, {"result": params}


def _settle_chord(chord: Task) -> Outcome | None:
    pk, name, status, result, error, _kwargs = _current(chord)
    if status not in DONE:
        return None
    if name != GROUP:  # the callback
        if status == TaskStatus.SUCCESS:
            return TaskStatus.SUCCESS, {"result": result}
        return _incomplete("The callback failed", [_failure(None, pk, name, status, error)])
    if status != TaskStatus.SUCCESS:
        return TaskStatus.INCOMPLETE, {
            "error": f"The header failed, so the callback did not run: {_reason(status, error)}",
            "result": {"failed": _failed_in(pk, name, status, result, error)}}
    callback = Signature.from_json(chord.kwargs["callback"])
    row = _call_row(callback, chord, timezone.now(), [result, *callback.args], dict(callback.kwargs))
    row.save(force_insert=True)
    doorbell.ring_on_commit([(row.pk, row.queue, row.priority)])
    _wait_on(chord, row)
    return None


def _settle_pipeline(pipeline: Task) -> Outcome | None:
    pk, name, status, result, error, stage_kwargs = _current(pipeline)
    if status not in DONE:
        return None
    number, plan = stage_kwargs["stage"], pipeline.kwargs["stages"]
    if status != TaskStatus.SUCCESS:
        where = f"Stage {number} of {len(plan)} (priority {plan[number - 1]['priority']})"
        # FAILURE, not INCOMPLETE: the pipeline's own work (its params) stopped, not just a subtask.
        return TaskStatus.FAILURE, {"error": f"{where} failed: {_reason(status, error)}",
                           "result": {"stage": number, "params": stage_kwargs["params"],
                                      "failed": _failed_in(pk, name, status, result, error)}}
    if number == len(plan):
        return TaskStatus.SUCCESS, {"result": result}
    _wait_on(pipeline, _start_stage(pipeline, number + 1, result))
    return None


def _reason(status: str, error: str | None) -> str:
    return error or f"it ended {TaskStatus(status).label}"


def _failed_in(pk: Any, name: str, status: str, result: Any, error: str | None) -> list[dict[str, Any]]:
    """What failed in a group that did not succeed: its own list, or the group itself (revoked)."""
    return (result or {}).get("failed") or [_failure(None, pk, name, status, error)]


def _current(task: Task) -> tuple[Any, ...]:
    """The subtask a chord or pipeline waits on: pk, func_name, status, result, error, kwargs."""
    return (Task.objects.filter(pk=task.waiting_on_id)
            .values_list("pk", "func_name", "status", "result", "error", "kwargs").get())


def _failure(index: int | None, pk: Any, func_name: str, status: str, error: str | None) -> dict[str, Any]:
    return {"index": index, "task": str(pk), "func_name": func_name, "status": status, "error": error}


def _incomplete(summary: str, failed: list[dict[str, Any]]) -> Outcome:
    named = [_describe(failure) for failure in failed[:MAX_NAMED]]
    if len(failed) > MAX_NAMED:
        named.append(f"and {len(failed) - MAX_NAMED} more")
    return TaskStatus.INCOMPLETE, {"error": f"{summary}: {'; '.join(named)}", "result": {"failed": failed}}


def _describe(failure: dict[str, Any]) -> str:
    index = "" if failure["index"] is None else f"#{failure['index']} "
    what = f"{index}{failure['func_name']} ({failure['task']})"
    if failure["status"] == TaskStatus.SUCCESS:  # it ran, but its result is not usable
        return f"{what} {failure['error']}"
    ended = f"{what} ended {TaskStatus(failure['status']).label}"
    return ended + (f": {failure['error']}" if failure["error"] else "")


#: How each kind of workflow settles, by the name of its function: what the WAITING workflow does
#: now that a subtask of it finished. A rule ends it, with a status and the fields to write, or
#: lets it go on waiting (``None``), maybe having started its next step. ``transitions.settle``
#: calls it with the workflow's row locked.
RULES: dict[str, Callable[[Task], Outcome | None]] = {
    GROUP: _settle_group,
    STAGE: _settle_group,  # a group whose members were given params=
    CHORD: _settle_chord,
    STAGES: _settle_pipeline,
}


# The rows of workflows are never queued, so these functions never run. They are registered so
# that no task function of a project can take these names (transitions.settle would take its rows
# for workflows), and so that a row queued by hand fails with a clear error.
def _settled_not_run(cqt: Any, *args: Any, **kwargs: Any) -> None:
    raise InvalidTask(f"A {cqt.func_name} task is not run: it is finished by cq.transitions.settle as its "
                      f"subtasks finish.")


for _name in sorted(RULES):
    task(_name)(_settled_not_run)
