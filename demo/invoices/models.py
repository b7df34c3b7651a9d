"""The demo's data: customers, their orders, and the monthly runs that invoice them."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models

VAT = Decimal("0.20")


class Customer(models.Model):
    name = models.CharField(max_length=100, unique=True)
    email = models.EmailField()
    # A customer without one cannot be invoiced: the demo's deliberate failure.
    billing_address = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.name


class Order(models.Model):
    customer = models.ForeignKey(Customer, models.CASCADE, related_name="orders")
    placed = models.DateField()
    description = models.CharField(max_length=200)
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=10, decimal_places=2)

    @property
    def amount(self) -> Decimal:
        return self.quantity * self.unit_price


class InvoiceRun(models.Model):
    """One click on "Generate": a month's invoices, rendered by a tree of cq tasks."""

    month = models.DateField(help_text="The first day of the month invoiced.")
    created = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True)
    task = models.ForeignKey(settings.CQ_TASK_MODEL, models.SET_NULL, null=True, blank=True, related_name="+",
                             help_text="The top-level task generating the invoices.")
    reminder = models.ForeignKey(settings.CQ_TASK_MODEL, models.SET_NULL, null=True, blank=True, related_name="+",
                                 help_text="The delayed task reminding customers to pay.")
    archive = models.CharField(max_length=200, blank=True, help_text="The zip of the invoices, under MEDIA_ROOT.")
    notified = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"Invoices of {self.month:%B %Y}"


class Invoice(models.Model):
    PENDING, RENDERED, FAILED = "pending", "rendered", "failed"

    run = models.ForeignKey(InvoiceRun, models.CASCADE, related_name="invoices")
    customer = models.ForeignKey(Customer, models.CASCADE)
    number = models.CharField(max_length=30)
    status = models.CharField(max_length=10, default=PENDING,
                              choices=[(PENDING, "pending"), (RENDERED, "rendered"), (FAILED, "failed")])
    net = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    file = models.CharField(max_length=200, blank=True, help_text="The rendered invoice, under MEDIA_ROOT.")
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["number"]

    @property
    def vat(self) -> Decimal:
        return (self.net * VAT).quantize(Decimal("0.01"))

    @property
    def total(self) -> Decimal:
        return self.net + self.vat
