"""The dashboard's pages (staff only): the task list with a throughput chart, a task's page,
workers and queues. They are plain templates; a little JavaScript (static/cq/dashboard.js)
keeps them current over the websocket of cq.routing and acts through the JSON API (cq.web.api)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import Count, Min
from django.db.models.functions import TruncMinute
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from .. import registry
from ..engine import actions
from ..models import DONE, TaskStatus, Worker, find_task, get_task_model
from . import fleet, listing
from .access import may_control_queues
from .api import WINDOWS, Refused, filter_tasks
from .timeline import timeline

PAGE = 100


@staff_member_required
def task_list(request: HttpRequest) -> HttpResponse:
    """A page of tasks, newest first, filtered as the JSON API's list is (``cq.web.api.filter_tasks``)
    and paged as it is (``cq.web.listing``), with the throughput chart of the last hour."""
    Task = get_task_model()
    query = request.GET
    found, count, next_page, problem = [], None, None, None
    try:
        matching, statuses = filter_tasks(Task._default_manager.all(), query), listing.statuses_of(query)
        shown = listing.page(matching, statuses, PAGE, query.get("cursor"), columns=listing.SHOWN)
        found = listing.rows(shown.tasks, reverse("cq:task", args=[listing.ZERO]))
        next_page, count = shown.next, listing.count(matching, statuses)
    except Refused as refusal:
        problem = refusal.message
    except listing.BadCursor as error:
        problem = str(error)
    kept = query.copy()
    kept.pop("cursor", None)
    return render_page(request, "cq/task_list.html", {
        "rows": found, "count": count, "next_page": next_page, "list_query": kept.urlencode(),
        "paged": bool(query.get("cursor")),
        "statuses": TaskStatus.choices, "functions": registry.names(),
        "finished_statuses": [(code, label) for code, label in TaskStatus.choices if code in DONE],
        "windows": WINDOWS, "has_owner": any(field.name == "owner" for field in Task._meta.fields),
        "query": {name: query.get(name, "") for name in ("status", "func_name", "window", "since", "until",
                                                           "owner", "q", "all")},
        "filtered": any(value for name, value in query.items() if name != "all"), "problem": problem,
        "throughput": throughput(),
        "bulk_query": kept.urlencode(),  # the bulk actions (cq.web.bulk) act on what this list selects
    }, status=400 if problem else 200)


@staff_member_required
def task_page(request: HttpRequest, task_id: str) -> HttpResponse:
    task = find_task(task_id)
    if task is None:
        raise Http404(f"No task has the id {task_id!r}.")
    tree = tree_of(task)
    if "timeline" in request.GET:  # the timeline's script reads it again as the tree changes
        return JsonResponse(timeline(task, tree))
    progress = task.tree_progress
    if task.status == TaskStatus.SUCCESS:
        progress = {**progress, "percent": 100}
    return render_page(request, "cq/task.html", {
        "task": task, "tree": tree, "tree_rows": tree_table(tree), "logs": task.logs, "progress": progress,
        "timeline": timeline(task, tree),
        "result": json.dumps(task.result, indent=2, sort_keys=True),
        # Only the buttons whose action can run (cq.web.api answers 409 to the others).
        "can": actions.available(task, [row for _depth, row in tree] if task.top_id is None else None),
        "admin_url": reverse(f"admin:{task._meta.app_label}_{task._meta.model_name}_change", args=[task.pk]),
    })


#: Columns of a tree's rows that its page never shows.
UNSHOWN = ("args", "result", "error", "traceback", "log_records", "errbacks", "fields", "history", "trace")


def tree_table(tree: list[tuple[int, Any]]) -> SafeString:
    """The rows of a task page's tree table, made in Python: the template language would spend
    about a tenth of a second on a thousand rows."""
    task_url = reverse("cq:task", args=["00000000-0000-0000-0000-000000000000"])
    labels = dict(TaskStatus.choices)
    rows = []
    for depth, sub in tree:
        short = str(sub.pk)[:8]
        after = format_html(' <span class="after">after {}</span>', str(sub.previous_id)[:8]) if sub.previous_id else ""
        percent = 100 if sub.status == TaskStatus.SUCCESS else (sub.progress.get("percent") or 0)
        finished = timezone.localtime(sub.finished).strftime("%H:%M:%S") if sub.finished else ""
        rows.append(format_html(
            '<tr data-task="{}"><td style="padding-left: {}em"><a href="{}">{}</a>{}</td><td>{}</td>'
            '<td class="status status-{}">{}</td><td><progress max="100" value="{}"></progress></td><td>{}</td></tr>',
            sub.pk, depth + 1, task_url.replace("00000000-0000-0000-0000-000000000000", str(sub.pk)), short, after,
            sub.func_name, sub.status, labels.get(sub.status, sub.status), percent, finished))
    return mark_safe("\n".join(rows))  # each row is made by format_html, which escapes


def tree_of(task: Any) -> list[tuple[int, Any]]:
    """The tasks under a top-level ``task`` as ``(depth, task)``, each after its parent, subtasks in
    the order they were created (a chained task follows the one it waited for, at the same depth)."""
    if task.top_id is not None:
        return []
    # The page shows none of the big columns: a tree of a thousand tasks would read them all.
    rows = list(get_task_model()._default_manager.filter(top=task.pk).order_by("created").defer(*UNSHOWN))
    children: dict[Any, list[Any]] = {}
    for row in rows:
        children.setdefault(row.parent_id, []).append(row)
    ordered: list[tuple[int, Any]] = []

    def walk(parent_id: Any, depth: int) -> None:
        for child in children.get(parent_id, []):
            ordered.append((depth, child))
            walk(child.pk, depth + 1)

    walk(task.pk, 0)
    return ordered


def throughput(minutes: int = 60) -> dict[str, Any]:
    """How many tasks finished in each of the last ``minutes`` minutes (this one included), by
    final status: ``{"start": first minute (ISO), "minutes": n, "counts": {status: [n numbers]}}``."""
    start = (timezone.now() - timedelta(minutes=minutes - 1)).replace(second=0, microsecond=0)
    rows = (get_task_model()._default_manager.filter(finished__gte=start)
            .annotate(minute=TruncMinute("finished")).values("minute", "status").annotate(n=Count("pk"))
            .order_by())
    counts: dict[str, list[int]] = {}
    for row in rows:
        index = int((row["minute"] - start).total_seconds() // 60)
        if 0 <= index < minutes:
            counts.setdefault(row["status"], [0] * minutes)[index] += row["n"]
    return {"start": start.isoformat(), "minutes": minutes, "counts": counts}


@staff_member_required
def workers(request: HttpRequest) -> HttpResponse:
    """Worker processes: alive (a heartbeat within CQ_WORKER_TIMEOUT) or not, their pace, what they
    run and their memory (``cq.web.fleet``)."""
    return render_page(request, "cq/workers.html", {"rows": fleet.workers(PAGE)})


@staff_member_required
def queues(request: HttpRequest) -> HttpResponse:
    """Each queue: paused or capped (with buttons for those who may change it), how many tasks
    wait and for how long, charts of its depth and throughput over the last hour, and how many
    live workers serve it; and the tasks no live worker of their queue knows the function of."""
    now = timezone.now()
    orphans = [{**row, "waited": (now - row["since"]).total_seconds()} for row in unknown_functions(now)]
    rows = fleet.queue_rows()  # with charts of the last hour
    return render_page(request, "cq/queues.html", {"rows": rows, "orphans": orphans,
                                             "may_control": may_control_queues(request.user)})


def unknown_functions(now: Any) -> list[dict[str, Any]]:
    """QUEUED tasks whose function no live worker of their queue knows (``Worker.functions``), by
    queue and function: ``queue``, ``func_name``, ``count`` and ``since`` (the oldest's
    submission). Only queues that live workers serve, and that all of them listed their functions
    for, are judged; a Django task outside tasks.py is not (a worker imports it when it meets it)."""
    known: dict[str, set[str] | None] = {}
    for queues, functions in Worker.objects.alive().values_list("queues", "functions"):
        for queue in queues:
            names = known.setdefault(queue, set())
            known[queue] = None if names is None or not functions else names | set(functions)
    judged = [queue for queue, names in known.items() if names is not None]
    if not judged:
        return []
    waiting = (get_task_model()._default_manager.filter(status__in=[TaskStatus.QUEUED, TaskStatus.RETRY])
               .filter(status=TaskStatus.QUEUED, queue__in=judged))
    marks = registry.claimable()[1]
    if marks:
        waiting = waiting.exclude(fields__has_any_keys=marks)
    rows = (waiting.values("queue", "func_name").annotate(count=Count("pk"), since=Min("submitted"))
            .order_by("queue", "func_name"))
    return [row for row in rows if row["func_name"] not in (known[row["queue"]] or ())]


def render_page(request: HttpRequest, template: str, context: dict[str, Any], status: int = 200) -> HttpResponse:
    """Render a dashboard page, with the statuses its script needs (their labels, which are final)
    given by the server rather than copied into the script."""
    statuses = {"labels": dict(TaskStatus.choices), "final": sorted(DONE)}
    return render(request, template, {**context, "cq_statuses": statuses}, status=status)
