from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class CqConfig(AppConfig):
    name = "cq"
    verbose_name = "cq task queue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)

        # Register every installed app's task functions, cq's own (cq.tasks) included.
        autodiscover_modules("tasks")
