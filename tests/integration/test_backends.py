"""Django's Tasks framework on cq (cq.backends) with worker processes: a Django task a worker
imports by its signed path, a backend's time limit, and the backend built before any model loads."""

from __future__ import annotations

import pytest
from django.db import transaction

from cq.models import Task
from tests.helpers import eventually
from tests.testapp import jobs
from tests.testapp.models import Record

try:
    from django.tasks import TaskResultStatus, default_task_backend
except ImportError:
    from django_tasks import TaskResultStatus, default_task_backend

FAILED, SUCCESSFUL = TaskResultStatus.FAILED, TaskResultStatus.SUCCESSFUL

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_worker_process_imports_a_django_task_by_its_signed_path(start_worker):
    from cq.backends import FIELD

    worker = start_worker("-c", "1")
    # A row whose path was not signed by this SECRET_KEY is refused, and its module not imported.
    with transaction.atomic():  # the doorbell rings after the signature is forged
        forged = jobs.records.enqueue("forged")
        Task.objects.filter(pk=forged.id).update(fields={FIELD: {"path": "tests.testapp.jobs.records:forged"}})
    eventually(lambda: Task.objects.get(pk=forged.id).status == Task.STATUS_FAILURE, 30, "the forged row to fail")
    assert "No task function is registered as 'tests.testapp.jobs.records'" in Task.objects.get(pk=forged.id).error
    assert not Record.objects.filter(key="forged").exists()
    # jobs.py is no app's tasks.py: the worker imports it from the signed path.
    result = jobs.records.enqueue("from a worker process")
    eventually(lambda: default_task_backend.get_result(result.id).is_finished, 30, "the worker to run it")
    assert default_task_backend.get_result(result.id).status == SUCCESSFUL, worker.output
    assert Record.objects.filter(key="from a worker process").exists()


def test_the_backend_is_built_and_checks_tasks_before_any_model_is_loaded():
    """Django builds the backend while task modules are imported, maybe before the apps are ready."""
    import subprocess
    import sys

    script = """
import sys
from django.conf import settings
settings.configure(TASKS={"default": {"BACKEND": "cq.backends.CQBackend"}})
try:
    from django.tasks import task
except ImportError:
    from django_tasks import task

def ping():
    return "pong"

ping = task(priority=3)(ping)
from cq import registry
assert registry.find(ping.module_path).priority == 3
print("models loaded:", "cq.models" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "models loaded: False"


def test_a_worker_enforces_the_backends_time_limit_on_a_task_it_imported(start_worker):
    """The hard limit is looked up as the task starts, before its function first ran in that process."""
    tasks_setting = {"default": {"BACKEND": "cq.backends.CQBackend", "QUEUES": ["default", "reports"],
                                 "OPTIONS": {"TIME_LIMIT": 1}}}
    start_worker("-c", "1", settings={"TASKS": tasks_setting})
    result = jobs.sleeps.enqueue(30)
    eventually(lambda: default_task_backend.get_result(result.id).is_finished, 30, "the time limit to kill it")
    result.refresh()
    assert result.status == FAILED and result.errors[0].exception_class_path == "cq.exceptions.TimeLimitExceeded"
