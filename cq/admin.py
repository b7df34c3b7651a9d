"""Admin for tasks: read-only, with links through the tree. Status is never hand-edited."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from .models import Task


def _link(task_id: Any) -> str:
    if task_id is None:
        return "-"
    return format_html('<a href="{}">{}</a>', reverse("admin:cq_task_change", args=[task_id]), task_id)


def _links(ids: list[Any]) -> str:
    return format_html_join(", ", "{}", ((_link(pk),) for pk in ids)) or "-"


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("id", "func_name", "status", "submitted", "started", "finished", "retries")
    list_filter = ("status", "func_name", "submitted")
    search_fields = ("=id", "func_name")
    date_hierarchy = "submitted"
    ordering = ("-submitted",)
    list_per_page = 50
    show_full_result_count = False
    fields = ("id", "func_name", "status", "arguments", "result_json", "error", "exception", "traceback",
              "formatted_logs", "parent_link", "top_link", "previous_link", "next_links", "subtask_links",
              "waiting_on_link", "submitted", "started", "finished", "run_after", "retries", "last_retry",
              "worker", "force_chain", "result_ttl", "result_expiry")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Arguments")
    def arguments(self, obj: Task) -> str:
        return format_html("<pre>{}</pre>", json.dumps({"args": obj.args, "kwargs": obj.kwargs}, indent=2))

    @admin.display(description="Result")
    def result_json(self, obj: Task) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.result, indent=2))

    @admin.display(description="Logs")
    def formatted_logs(self, obj: Task) -> str:
        lines = ((r["timestamp"], r.get("level", ""), r.get("origin", ""), r["message"]) for r in obj.logs)
        return format_html("<pre>{}</pre>", format_html_join("\n", "{} {} {} {}", lines))

    @admin.display(description="Parent")
    def parent_link(self, obj: Task) -> str:
        return _link(obj.parent_id)

    @admin.display(description="Top-level task")
    def top_link(self, obj: Task) -> str:
        return _link(obj.top_id)

    @admin.display(description="Previous")
    def previous_link(self, obj: Task) -> str:
        return _link(obj.previous_id)

    @admin.display(description="Waiting on")
    def waiting_on_link(self, obj: Task) -> str:
        return _link(obj.waiting_on_id)

    @admin.display(description="Next (chained)")
    def next_links(self, obj: Task) -> str:
        return _links(list(obj.next.values_list("pk", flat=True)))

    @admin.display(description="Subtasks")
    def subtask_links(self, obj: Task) -> str:
        return _links(list(obj.subtasks.order_by("submitted").values_list("pk", flat=True)))
