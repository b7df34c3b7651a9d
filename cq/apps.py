from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings
from django.utils.module_loading import autodiscover_modules

# Like AUTH_USER_MODEL, CQ_TASK_MODEL is always defined, so that migrations and foreign keys
# can name it (``settings.CQ_TASK_MODEL``); this module is imported before any model.
if not hasattr(settings, "CQ_TASK_MODEL"):
    settings.CQ_TASK_MODEL = "cq.Task"


class CqConfig(AppConfig):
    name = "cq"
    verbose_name = "cq task queue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)

        # Register every installed app's task functions, cq's own (cq.tasks) included.
        autodiscover_modules("tasks")
        # A project on Django's Tasks framework: the backend finds Django tasks outside tasks.py
        # and sends Django's signals, in every process.
        if any(str(backend.get("BACKEND", "")).startswith("cq.backends.")
               for backend in getattr(settings, "TASKS", {}).values()):
            from . import backends  # noqa: F401
