"""The demo's job: a month's invoices, one cq task tree per click on "Generate".

    generate_invoices                 the top-level task: starts the pipeline, takes its result
    └─ pipeline (cq.stages)
       ├─ 1. extract                  one Invoice row per customer with orders that month
       ├─ 2. render                   a chord: render_invoice per invoice, in parallel,
       │     ├─ render_invoice × N      then collect_rendered with their results
       │     └─ collect_rendered
       ├─ 3. merge                    one zip of the rendered invoices, with progress
       └─ 4. notify                   an email to the office, and a reminder to pay in a minute

One customer (Initech) has no billing address: its render_invoice fails, so the
chord's callback does not run, the pipeline stops at stage 2 and the run ends
Incomplete, naming it. Give Initech an address in the admin and click "Retry
failed" on the run's page (``task.retry_failed()``): only Initech's invoice is
rendered again, the 11 others are reused, and the run goes on to the archive and
the email.
"""

from __future__ import annotations

import logging
import time
import zipfile
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.core.mail import send_mail
from django.db.models import DecimalField, F, Sum
from django.template.loader import render_to_string
from django.utils import timezone

from cq import task
from cq.canvas import chord, stages

from .models import Customer, Invoice, InvoiceRun, Order

#: Seconds a rendering takes at least, so that a person can watch the job happen.
RENDER_PACE = float(getattr(settings, "DEMO_RENDER_PACE", 0.4))
#: When the payment reminder goes out after the invoices.
REMINDER_AFTER = timedelta(seconds=int(getattr(settings, "DEMO_REMINDER_AFTER", 60)))


NET = Sum(F("quantity") * F("unit_price"), output_field=DecimalField(max_digits=12, decimal_places=2))


class InvoiceError(Exception):
    pass


@task
def generate_invoices(cqt, run_id: int):
    run = InvoiceRun.objects.get(pk=run_id)
    cqt.log(f"Generating the invoices of {run.month:%B %Y}")
    return stages([(extract.s(), 4), (render.s(), 3), (merge.s(), 2), (notify.s(), 1)],
                  params={"run": run_id}).delay()


@task
def extract(cqt, params):
    """One Invoice row per customer who ordered that month, numbered in name order."""
    run = InvoiceRun.objects.get(pk=params["run"])
    month = Order.objects.filter(placed__year=run.month.year, placed__month=run.month.month)
    customers = Customer.objects.filter(pk__in=month.values("customer")).order_by("name")
    invoices = [
        Invoice.objects.create(run=run, customer=customer, number=f"INV-{run.month:%Y-%m}-{n:03d}",
                               net=month.filter(customer=customer).aggregate(net=NET)["net"])
        for n, customer in enumerate(customers, 1)
    ]
    cqt.log(f"{len(invoices)} customers ordered in {run.month:%B %Y}")
    return {"invoices": [invoice.pk for invoice in invoices]}


@task
def render(cqt, params):
    """Render every invoice in parallel; the chord's callback collects them once all are rendered."""
    return chord([render_invoice.s(pk) for pk in params["invoices"]])(collect_rendered.s())


@task(atomic=False, retries=2, retry_exceptions=[OSError])
def render_invoice(cqt, invoice_id: int) -> int:
    """Write one invoice as an HTML file under MEDIA_ROOT."""
    started = time.monotonic()
    invoice = Invoice.objects.select_related("run", "customer").get(pk=invoice_id)
    customer, run = invoice.customer, invoice.run
    try:
        if not customer.billing_address.strip():
            raise InvoiceError(f"{customer.name} has no billing address")
        lines = list(Order.objects.filter(customer=customer, placed__year=run.month.year,
                                          placed__month=run.month.month).order_by("placed"))
        html = render_to_string("invoices/invoice.html", {"invoice": invoice, "lines": lines, "run": run})
        path = Path("invoices") / f"{run.month:%Y-%m}" / f"run-{run.pk}" / f"{invoice.number}.html"
        target = Path(settings.MEDIA_ROOT) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(html, encoding="utf-8")
    except InvoiceError as error:
        Invoice.objects.filter(pk=invoice.pk).update(status=Invoice.FAILED, error=str(error))
        cqt.log(f"{invoice.number}: {error}", level=logging.ERROR)
        raise
    time.sleep(max(0.0, RENDER_PACE - (time.monotonic() - started)))
    Invoice.objects.filter(pk=invoice.pk).update(status=Invoice.RENDERED, file=str(path), error="")
    cqt.log(f"{invoice.number} for {customer.name}: {invoice.total:,.2f} EUR")
    return invoice.pk


@task
def collect_rendered(cqt, results):
    """The chord's callback, once every invoice is rendered (a retry from the failed step included)."""
    rendered = [pk for pk in results if pk is not None]
    cqt.log(f"Rendered {len(rendered)} of {len(results)} invoices")
    return {"rendered": rendered, "failed": len(results) - len(rendered)}


@task
def merge(cqt, params):
    """Zip the rendered invoices into one archive, reporting progress file by file."""
    run = InvoiceRun.objects.get(pk=params["run"])
    invoices = list(Invoice.objects.filter(pk__in=params["rendered"]))
    path = Path("archives") / f"invoices-{run.month:%Y-%m}-run-{run.pk}.zip"
    target = Path(settings.MEDIA_ROOT) / path
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for n, invoice in enumerate(invoices, 1):
            archive.write(Path(settings.MEDIA_ROOT) / invoice.file, arcname=f"{invoice.number}.html")
            cqt.progress(n, len(invoices), f"added {invoice.number}")
    InvoiceRun.objects.filter(pk=run.pk).update(archive=str(path))
    cqt.log(f"Archived {len(invoices)} invoices in {path.name} ({target.stat().st_size:,} bytes)")
    return {"archive": str(path)}


@task
def notify(cqt, params):
    """Tell the office, and queue a reminder to the customers for later (a delayed task)."""
    run = InvoiceRun.objects.get(pk=params["run"])
    failed = list(Invoice.objects.filter(run=run, status=Invoice.FAILED).select_related("customer"))
    body = [f"{len(params['rendered'])} invoices of {run.month:%B %Y} are in {params['archive']}."]
    body += [f"Not invoiced: {invoice.customer.name} ({invoice.error})." for invoice in failed]
    send_mail(f"Invoices of {run.month:%B %Y}", "\n".join(body), "billing@example.com", ["office@example.com"])
    reminder = send_reminders.delay_args((run.pk,), countdown=REMINDER_AFTER.total_seconds())
    InvoiceRun.objects.filter(pk=run.pk).update(notified=timezone.now(), reminder=reminder)
    cqt.log(f"Emailed the office; payment reminders go out at {reminder.run_after:%H:%M:%S} UTC")
    return {"notified": True}


@task
def send_reminders(cqt, run_id: int) -> int:
    """The delayed task: one reminder per rendered invoice."""
    invoices = Invoice.objects.filter(run_id=run_id, status=Invoice.RENDERED).select_related("customer")
    for invoice in invoices:
        send_mail(f"Reminder: invoice {invoice.number}", f"{invoice.total:,.2f} EUR is due in 30 days.",
                  "billing@example.com", [invoice.customer.email])
    cqt.log(f"Sent {len(invoices)} payment reminders")
    return len(invoices)


@task
def purge_old_archives(cqt, days: int = 30) -> int:
    """Nightly (see the data migration invoices/0002): delete runs, files and archives older than ``days``."""
    old = InvoiceRun.objects.filter(created__lt=timezone.now() - timedelta(days=days))
    media = Path(settings.MEDIA_ROOT)
    for run in old:
        for name in [run.archive, *run.invoices.values_list("file", flat=True)]:
            if name:
                (media / name).unlink(missing_ok=True)
    deleted = old.count()
    old.delete()
    cqt.log(f"Purged {deleted} invoice runs older than {days} days")
    return deleted
