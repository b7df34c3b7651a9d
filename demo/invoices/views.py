"""The demo's pages: pick a month and generate its invoices, then watch the run live."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.db.models.functions import TruncMonth
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from .models import Invoice, InvoiceRun, Order
from .tasks import generate_invoices


@staff_member_required
def index(request: HttpRequest) -> HttpResponse:
    months = Order.objects.annotate(month=TruncMonth("placed")).values_list("month", flat=True).distinct()
    return render(request, "invoices/index.html", {
        "months": sorted(set(months), reverse=True), "runs": InvoiceRun.objects.select_related("task")[:10]})


@staff_member_required
@require_POST
def generate(request: HttpRequest) -> HttpResponse:
    try:
        month = date.fromisoformat(request.POST.get("month", "")).replace(day=1)
    except ValueError:
        return HttpResponse("Pick a month (YYYY-MM-DD).", status=400)
    run = InvoiceRun.objects.create(month=month, created_by=request.user)
    run.task = generate_invoices.delay(run.pk)
    run.save(update_fields=["task"])
    return redirect("run", run.pk)


@staff_member_required
def run_page(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(InvoiceRun.objects.select_related("task", "reminder"), pk=run_id)
    return render(request, "invoices/run.html", {"run": run, "state": state(run)})


@staff_member_required
def run_state(request: HttpRequest, run_id: int) -> JsonResponse:
    """What the run page shows, as JSON: its script reads it again whenever the task tree changes."""
    return JsonResponse(state(get_object_or_404(InvoiceRun.objects.select_related("task", "reminder"), pk=run_id)))


@staff_member_required
def archive(request: HttpRequest, run_id: int) -> FileResponse:
    run = get_object_or_404(InvoiceRun, pk=run_id)
    path = Path(settings.MEDIA_ROOT) / run.archive
    if not run.archive or not path.is_file():
        raise Http404("This run has no archive (yet).")
    return FileResponse(path.open("rb"), as_attachment=True, filename=path.name)


def state(run: InvoiceRun) -> dict:
    invoices = list(run.invoices.select_related("customer"))
    # Extracting is a step, each invoice one, the archive one and the email one.
    steps = [bool(invoices), *(invoice.status != Invoice.PENDING for invoice in invoices), bool(run.archive),
             run.notified is not None]
    task = run.task
    reminder = run.reminder
    return {
        # Waiting (for its subtasks) is, to a person, still running.
        "status": "Not started" if task is None else "Running" if task.status == task.STATUS_WAITING
        else task.get_status_display(),
        "done": task is not None and task.status in task.STATUS_DONE,
        "percent": round(100 * sum(steps) / (len(invoices) + 3)) if invoices else 0,
        "invoices": [{"number": i.number, "customer": i.customer.name, "status": i.status,
                      "total": f"{i.total:,.2f}", "error": i.error} for i in invoices],
        "failed": [i.customer.name for i in invoices if i.status == Invoice.FAILED],
        "archive_url": reverse("archive", args=[run.pk]) if run.archive else None,
        "reminder_at": reminder.run_after.isoformat() if reminder and reminder.run_after else None,
        "reminder_status": reminder.get_status_display() if reminder else None,
        "task_url": reverse("cq:task", args=[task.pk]) if task else None,
        # A run that stopped at a failed invoice is retried from there, through cq's JSON API.
        "retry_url": reverse("cq:api-retry-failed", args=[task.pk])
        if task is not None and task.status in (task.STATUS_INCOMPLETE, task.STATUS_FAILURE) else None,
        "logs": [f"{line['timestamp'][11:19]} {line['message']}" for line in task.logs] if task else [],
    }
