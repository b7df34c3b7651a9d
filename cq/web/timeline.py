"""The timeline of a task's tree on its dashboard page: what static/cq/timeline.js draws.

The page gives the rows of the tree with their times (queued, started, finished), and the
*critical path*: the tasks that decided when the top-level task finished. It is found from the
top down: a task that waited on subtasks finished when the last of them did, so the path goes
on through that child; and that child could start only once what it waited for had finished,
so the path takes that too: the tasks chained before it (``previous``), or, under a chord or a
pipeline (which run their subtasks one after another), the siblings before it. While the tree
runs, an unfinished child counts as the last one: the path then shows what the top still waits
for.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from ..statuses import UNSTARTED
from ..workflows.groups import CHORD, STAGES

#: At most this many rows are drawn (the first ones in tree order); the critical path is still
#: found over the whole tree.
ROWS = 2000
#: Workflows whose subtasks run one after another, each once the one before it has finished.
SEQUENTIAL = frozenset({CHORD, STAGES})


def timeline(task: Any, tree: list[tuple[int, Any]]) -> dict[str, Any]:
    """The timeline of ``task`` and its ``tree`` (``cq.web.dashboard.tree_of``: ``(depth, task)``
    in tree order): ``{"now": server time, "rows": [...], "critical": [ids], "total": n,
    "unstarted": [statuses not running yet]}``, each
    row ``{"id", "parent", "depth", "func_name", "status", "queued", "started", "finished"}``
    (ISO times or null; ``depth`` 0 is ``task``'s own row)."""
    everything = [(0, task)] + [(depth + 1, row) for depth, row in tree]
    return {
        "now": timezone.now().isoformat(), "total": len(everything), "unstarted": sorted(UNSTARTED),
        "rows": [_row(depth, row) for depth, row in everything[:ROWS]],
        "critical": [str(pk) for pk in critical_path(task, [row for _depth, row in tree])],
    }


def _row(depth: int, task: Any) -> dict[str, Any]:
    return {"id": str(task.pk), "parent": None if task.parent_id is None else str(task.parent_id),
            "depth": depth, "func_name": task.func_name, "status": task.status,
            "queued": _time(task.submitted), "started": _time(task.started), "finished": _time(task.finished)}


def _time(moment: Any) -> str | None:
    return None if moment is None else moment.isoformat()


def critical_path(top: Any, rows: list[Any]) -> list[Any]:
    """The primary keys of the tasks of ``rows`` (the tree under ``top``) that decided when
    ``top`` finished, ``top``'s first, each before those it waited for (see the module's
    docstring)."""
    children: dict[Any, list[Any]] = {}
    for row in rows:
        children.setdefault(row.parent_id, []).append(row)
    path: list[Any] = []
    frontier = [top]
    while frontier:
        node = frontier.pop()
        path.append(node.pk)
        kids = children.get(node.pk, [])
        if kids:
            frontier.extend(reversed(_gating(node, kids)))
    return path


def _gating(parent: Any, kids: list[Any]) -> list[Any]:
    """Of ``parent``'s subtasks, the last to finish and those it had to wait for, earliest first."""
    last = max(kids, key=_end)
    if parent.func_name in SEQUENTIAL:
        ordered = sorted(kids, key=lambda kid: kid.created)
        return ordered[:ordered.index(last) + 1]
    by_pk = {kid.pk: kid for kid in kids}
    chain = [last]
    while chain[-1].previous_id in by_pk and by_pk[chain[-1].previous_id] not in chain:
        chain.append(by_pk[chain[-1].previous_id])
    return chain[::-1]


def _end(task: Any) -> tuple[bool, Any, Any]:
    """Sorts tasks by when they finished, those still unfinished last (they are what is waited for)."""
    return task.finished is None, task.finished or task.created, task.created
