"""The dashboard's pages (staff only): the task list, a task's page, workers and queues. Both are plain
templates; a little JavaScript (static/cq/dashboard.js) keeps them current over the
websocket of cq.routing and acts through the JSON API (cq.api)."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import Count, Min, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from . import registry
from .api import as_json
from .conf import settings
from .models import TaskStatus, Worker, get_task_model

PAGE = 100


@staff_member_required
def task_list(request: HttpRequest) -> HttpResponse:
    Task = get_task_model()
    found = Task._default_manager.order_by("-created")
    status, func_name, query = request.GET.get("status"), request.GET.get("func_name"), request.GET.get("q", "")
    if status:
        found = found.filter(status=status)
    if func_name:
        found = found.filter(func_name=func_name)
    if query:
        found = found.filter(pk=_uuid_or_none(query.strip()))
    return render(request, "cq/task_list.html", {
        "tasks": found[:PAGE], "statuses": TaskStatus.choices, "functions": registry.names(),
        "status": status or "", "func_name": func_name or "", "q": query,
    })


@staff_member_required
def task_page(request: HttpRequest, task_id: str) -> HttpResponse:
    task = get_task_model()._default_manager.filter(pk=_uuid_or_none(task_id)).first()
    if task is None:
        raise Http404(f"No task has the id {task_id!r}.")
    tree = get_task_model()._default_manager.filter(top=task.pk).order_by("created")
    return render(request, "cq/task.html", {
        "task": task, "tree": tree, "logs": task.logs, "progress": task.tree_progress,
        "as_json": as_json(task),
        "admin_url": reverse(f"admin:{task._meta.app_label}_{task._meta.model_name}_change", args=[task.pk]),
    })


@staff_member_required
def workers(request: HttpRequest) -> HttpResponse:
    """Worker processes: alive (a heartbeat within CQ_WORKER_TIMEOUT) or not, what they run."""
    now = timezone.now()
    rows = []
    for worker in Worker.objects.order_by("stopped", "-last_heartbeat")[:PAGE]:
        age = (now - worker.last_heartbeat).total_seconds()
        rows.append({"worker": worker, "age": age,
                     "alive": worker.stopped is None and age <= settings.WORKER_TIMEOUT})
    return render(request, "cq/workers.html", {"rows": rows})


@staff_member_required
def queues(request: HttpRequest) -> HttpResponse:
    """Each queue's depth (QUEUED tasks that may run now) and how long its oldest has waited."""
    now = timezone.now()
    waiting = (get_task_model()._default_manager.filter(status__in=[TaskStatus.QUEUED, TaskStatus.RETRY])
               .filter(status=TaskStatus.QUEUED).filter(Q(run_after__isnull=True) | Q(run_after__lte=now))
               .values("queue").annotate(depth=Count("pk"), oldest=Min("submitted")).order_by("queue"))
    rows = [{**row, "waited": (now - row["oldest"]).total_seconds()} for row in waiting]
    return render(request, "cq/queues.html", {"rows": rows})


def _uuid_or_none(value: str) -> Any:
    import uuid

    try:
        return uuid.UUID(value)
    except ValueError:
        return None
