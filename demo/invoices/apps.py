from django.apps import AppConfig


class InvoicesConfig(AppConfig):
    name = "invoices"
    verbose_name = "Monthly invoices"
    default_auto_field = "django.db.models.BigAutoField"
