"""How a workflow settles: one rule per kind, by the name of its function (:data:`RULES`).

Whenever a subtask of a WAITING workflow finishes, the engine locks the
workflow's row, as it does for any waiting parent, and calls its rule:

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

A workflow that ends INCOMPLETE (or a pipeline FAILURE) names what failed in its
``error``, and lists it in its result:
``{"failed": [{"index", "task", "func_name", "status", "error"}]}``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from ..engine.transitions import queueing
from ..models import DONE, UNFINISHED, TaskStatus, get_task_model
from ..transport import doorbell
from . import groups
from .groups import CHORD, GROUP, STAGE, STAGES
from .signatures import Signature

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

#: Failures named in an error message; the result lists them all.
MAX_NAMED = 10

_UNFINISHED = sorted(UNFINISHED)


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
    again = chord.kwargs.get("callback_task")
    if again is not None:  # a retry ran failed members again: the callback row runs again, with all results
        _run_callback_again(chord, again, [result, *callback.args])
        return None
    row = groups.call_row(callback, chord, timezone.now(), [result, *callback.args], dict(callback.kwargs))
    row.save(force_insert=True)
    doorbell.ring_on_commit([(row.pk, row.queue, row.priority)])
    groups.wait_on(chord, row)
    return None


def _run_callback_again(chord: Task, callback_id: str, args: list[Any]) -> None:
    """The chord's callback, left PENDING by a retry from the failed step
    (``cq.workflows.retrying``), queued with the header's new results."""
    chord.kwargs = {name: value for name, value in chord.kwargs.items() if name != "callback_task"}
    Task.objects.filter(pk=chord.pk).update(kwargs=chord.kwargs, waiting_on=callback_id)
    chord.waiting_on_id = uuid.UUID(callback_id)
    Task.objects.filter(pk=callback_id).update(args=args)
    queueing.launch(Task.objects.filter(pk=callback_id))


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
    groups.wait_on(pipeline, groups.start_stage(pipeline, number + 1, result))
    return None


def _reason(status: str, error: str | None) -> str:
    return error or f"it ended {TaskStatus(status).label}"


def _failed_in(pk: Any, name: str, status: str, result: Any, error: str | None) -> list[dict[str, Any]]:
    """What failed in a group that did not succeed: its own list, or the group itself (revoked)."""
    return (result or {}).get("failed") or [_failure(None, pk, name, status, error)]


def _current(task: Task) -> tuple[Any, ...]:
    """The subtask a chord or pipeline waits on: pk, func_name, status, result, error, kwargs."""
    return (Task.objects.filter(pk=task.waiting_on_id)  # type: ignore[misc]
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
#: lets it go on waiting (``None``), maybe having started its next step. The engine calls it
#: with the workflow's row locked (``cq.engine.transitions.settling.settle``).
RULES: dict[str, Callable[[Task], Outcome | None]] = {
    GROUP: _settle_group,
    STAGE: _settle_group,  # a group whose members were given params=
    CHORD: _settle_chord,
    STAGES: _settle_pipeline,
}
