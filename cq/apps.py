"""cq's app config. Its ``ready()`` connects the task model and task functions to the engine."""

from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings
from django.utils.module_loading import autodiscover_modules

from . import checks, verbs  # noqa: F401  (importing checks registers the system checks)

# Like AUTH_USER_MODEL, CQ_TASK_MODEL is always defined, so that migrations and foreign keys
# can name it (``settings.CQ_TASK_MODEL``); this module is imported before any model.
if not hasattr(settings, "CQ_TASK_MODEL"):
    settings.CQ_TASK_MODEL = "cq.Task"


class CqConfig(AppConfig):
    name = "cq"
    verbose_name = "cq task queue"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # app loading: the engine and the workflows import the task model, loaded only now. The
        # model's and task functions' django-cq verbs reach them through cq.verbs, filled here.
        from .engine import actions, dispatch, inline, logs, metadata
        from .scheduling import firing
        from .workflows import errbacks, signatures, trees

        verbs.install(verbs.Verbs(
            submit=dispatch.submit, wait=dispatch.wait, revoke=trees.revoke, subtask=trees.subtask,
            chain=trees.chain, errorback=errbacks.errorback, update=metadata.update, progress=metadata.progress,
            tree_progress=metadata.tree_progress,
            rerun=dispatch.rerun, retry=actions.retry, retry_failed=actions.retry_failed,
            log=logs.log, tree_logs=logs.tree_logs, delay=dispatch.delay,
            delay_many=dispatch.delay_many, run_inline=inline.run_inline, signature=signatures.signature,
            submit_repeating=firing.submit, update_next_run=firing.update_next_run))
        # Register every installed app's task functions, cq's own (cq.tasks) included.
        autodiscover_modules("tasks")
        # A project on Django's Tasks framework: the backend finds Django tasks outside tasks.py
        # and sends Django's signals, in every process.
        if any(str(backend.get("BACKEND", "")).startswith("cq.backends.")
               for backend in getattr(settings, "TASKS", {}).values()):
            # app loading: only a project whose TASKS names cq's backend has Django's Tasks
            # framework to import (Django 6, or the django-tasks package).
            from . import backends  # noqa: F401
