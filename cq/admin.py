"""Admin for tasks (read-only, with links through the tree; status is never hand-edited), repeating
tasks and queues' controls."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from . import registry
from .engine import queues
from .models import Queue, RepeatingTask, get_task_model
from .scheduling import firing
from .scheduling.cron import upcoming

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()


def _link(task_id: Any, text: Any = None) -> str:
    if task_id is None:
        return "-"
    url = reverse(f"admin:{Task._meta.app_label}_{Task._meta.model_name}_change", args=[task_id])
    return format_html('<a href="{}">{}</a>', url, text or task_id)


def _links(ids: list[Any]) -> str:
    return format_html_join(", ", "{}", ((_link(pk),) for pk in ids)) or "-"


class _FiltersWithoutNul:
    """A list filter holding NUL would reach PostgreSQL, which refuses it (a 500): answer 400."""

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if any("\x00" in value for _name, values in request.GET.lists() for value in values):
            return HttpResponseBadRequest("A filter holds a NUL character, which no task or repeating task has.")
        return super().changelist_view(request, extra_context)  # type: ignore[misc]


@admin.register(Task)
class TaskAdmin(_FiltersWithoutNul, admin.ModelAdmin):
    list_display = ("id", "func_name", "status", "submitted", "started", "finished", "retries")
    list_filter = ("status", "func_name", "submitted")
    search_fields = ("=id", "func_name")
    date_hierarchy = "submitted"
    ordering = ("-submitted",)
    list_per_page = 50
    show_full_result_count = False
    fields = ("id", "live", "func_name", "status", "arguments", "result_json", "error", "exception", "traceback",
              "progress_text", "fields_json", "formatted_logs", "parent_link", "top_link", "previous_link",
              "next_links", "subtask_links", "waiting_on_link", "queue", "priority", "submitted", "started",
              "finished", "run_after", "retries", "last_retry", "worker", "force_chain", "result_ttl",
              "result_expiry")
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

    @admin.display(description="Dashboard")
    def live(self, obj: Task) -> str:
        """A link to the task's live page, when the project mounts cq.urls."""
        try:
            return format_html('<a href="{}">live view</a>', reverse("cq:task", args=[obj.pk]))
        except NoReverseMatch:
            return "-"

    @admin.display(description="Progress")
    def progress_text(self, obj: Task) -> str:
        progress = obj.tree_progress
        if not progress:
            return "-"
        total = "" if progress["total"] is None else f" of {progress['total']}"
        percent = "" if progress["percent"] is None else f" ({progress['percent']}%)"
        return f"{progress['current']}{total}{percent} {progress['message'] or ''}".strip()

    @admin.display(description="Fields")
    def fields_json(self, obj: Task) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.fields, indent=2))

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


class DatalistInput(forms.TextInput):
    """A text input that suggests the registered task functions."""

    def render(self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None) -> SafeString:
        list_id = f"{name}-choices"
        field = super().render(name, value, {**(attrs or {}), "list": list_id}, renderer)
        options = format_html_join("", '<option value="{}">', ((n,) for n in registry.names()))
        return format_html('{}<datalist id="{}">{}</datalist>', field, list_id, options)


class RepeatingTaskForm(forms.ModelForm):
    class Meta:
        model = RepeatingTask
        fields = ("func_name", "crontab", "timezone", "args", "kwargs", "enabled", "coalesce", "result_ttl")
        widgets = {"func_name": DatalistInput(attrs={"size": 60})}


@admin.register(RepeatingTask)
class RepeatingTaskAdmin(_FiltersWithoutNul, admin.ModelAdmin):
    form = RepeatingTaskForm
    list_display = ("func_name", "crontab", "timezone", "next_runs", "last_run_link", "enabled", "coalesce")
    list_filter = ("enabled", "func_name")
    search_fields = ("func_name",)
    actions = ["run_now", "enable", "disable"]
    readonly_fields = ("next_runs", "last_run_link")

    @admin.display(description="Next runs")
    def next_runs(self, obj: RepeatingTask) -> str:
        if not obj.enabled or obj.next_run is None:
            return "disabled"
        zone = ZoneInfo(obj.timezone)
        fires = [obj.next_run, *upcoming(obj.crontab, obj.timezone, obj.next_run, 2, previous=obj.next_run)]
        return ", ".join(f"{fire.astimezone(zone):%a %d %b %Y %H:%M %Z}" for fire in fires)

    @admin.display(description="Last run", ordering="last_run")
    def last_run_link(self, obj: RepeatingTask) -> str:
        if obj.last_run is None:
            return "never"
        when = f"{obj.last_run.astimezone(ZoneInfo(obj.timezone)):%Y-%m-%d %H:%M:%S %Z}"
        return _link(obj.last_task_id, when) if obj.last_task_id else when

    @admin.action(description="Run the selected repeating tasks now")
    def run_now(self, request: HttpRequest, queryset: QuerySet[RepeatingTask]) -> None:
        launched = [firing.launch(rt, timezone.now()) for rt in queryset]
        self.message_user(request, f"Launched {len(launched)} task(s).", messages.SUCCESS)

    @admin.action(description="Enable the selected repeating tasks")
    def enable(self, request: HttpRequest, queryset: QuerySet[RepeatingTask]) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable the selected repeating tasks")
    def disable(self, request: HttpRequest, queryset: QuerySet[RepeatingTask]) -> None:
        self._set_enabled(request, queryset, False)

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[RepeatingTask], enabled: bool) -> None:
        for rt in queryset:
            rt.enabled = enabled
            rt.save()  # reschedules, or clears next_run
        self.message_user(request, f"{'Enabled' if enabled else 'Disabled'} {len(queryset)} repeating task(s).")


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):
    """A queue's controls. Saving goes through ``cq.engine.queues.change``, as every other way
    of changing them does: logged and sent on the websocket with the user's name."""

    list_display = ("name", "paused", "concurrency", "changed", "changed_by")
    list_editable = ("paused", "concurrency")
    fields = ("name", "paused", "concurrency", "changed", "changed_by")
    readonly_fields = ("changed", "changed_by")
    actions = ("pause", "resume")

    def get_readonly_fields(self, request: HttpRequest, obj: Queue | None = None) -> tuple[str, ...]:
        return self.readonly_fields + (("name",) if obj is not None else ())

    def save_model(self, request: HttpRequest, obj: Queue, form: Any, change: bool) -> None:
        saved = queues.change(obj.name, by=request.user.get_username(), paused=obj.paused,
                              concurrency=obj.concurrency)
        obj.changed, obj.changed_by = saved.changed, saved.changed_by

    @admin.action(description="Pause the selected queues")
    def pause(self, request: HttpRequest, queryset: QuerySet[Queue]) -> None:
        self._set(request, queryset, paused=True)

    @admin.action(description="Resume the selected queues")
    def resume(self, request: HttpRequest, queryset: QuerySet[Queue]) -> None:
        self._set(request, queryset, paused=False)

    def _set(self, request: HttpRequest, queryset: QuerySet[Queue], paused: bool) -> None:
        names = list(queryset.values_list("name", flat=True))
        for name in names:
            queues.change(name, by=request.user.get_username(), paused=paused)
        self.message_user(request, f"{'Paused' if paused else 'Resumed'}: {', '.join(names)}.", messages.SUCCESS)
