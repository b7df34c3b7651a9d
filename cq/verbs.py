"""How the task model and task functions reach the engine.

django-cq's verbs are methods: ``task.submit()``, ``task.revoke()``, ``cqt.log()``,
``fn.delay()``, ``fn(...)``... The code that does them (``cq.engine``,
``cq.workflows``) imports the task model, so neither ``cq.models`` nor
``cq.registry`` may import it: Django imports every app's models before anything
that uses them, and ``from cq import task`` must work before that. So the
methods call through :func:`engine`, which ``CqConfig.ready()`` fills in once the
models are loaded (:func:`install`), naming the function that does each verb.
Nothing else is looked up this way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import AppRegistryNotReady


@dataclass(frozen=True)
class Verbs:
    """The function that does each verb (``CqConfig.ready()`` says which)."""

    # Of a task row (cq.models.AbstractTask): task.submit(), wait(), revoke()...
    submit: Callable[..., None]
    wait: Callable[..., Any]
    revoke: Callable[..., None]
    subtask: Callable[..., Any]
    chain: Callable[..., Any]
    errorback: Callable[..., None]
    update: Callable[..., None]
    progress: Callable[..., None]
    tree_progress: Callable[..., dict[str, Any]]
    rerun: Callable[..., Any]
    retry: Callable[..., None]
    retry_failed: Callable[..., None]
    log: Callable[..., None]
    tree_logs: Callable[..., list[dict[str, Any]]]
    # Of a task function (cq.registry.TaskFunction), and cq.models.delay
    delay: Callable[..., Any]
    delay_many: Callable[..., list[Any]]
    run_inline: Callable[..., Any]
    signature: Callable[..., Any]
    # Of a repeating task (cq.models.RepeatingTask): rt.submit(), rt.update_next_run()
    submit_repeating: Callable[..., Any]
    update_next_run: Callable[..., None]


_installed: Verbs | None = None


def install(verbs: Verbs) -> None:
    """Make ``verbs`` what the model's and task functions' methods call (``CqConfig.ready()``)."""
    global _installed
    _installed = verbs


def engine() -> Verbs:
    """The functions that do django-cq's verbs.

    Raises:
        AppRegistryNotReady: cq's app is not ready yet (``django.setup()`` has not run).
    """
    if _installed is None:
        raise AppRegistryNotReady("cq's tasks cannot run, be queued or change before its app is ready: call "
                                  "django.setup() first (manage.py and the WSGI/ASGI handlers do).")
    return _installed
