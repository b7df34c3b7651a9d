"""Progress seen from another process while a cq_runworker process runs the task."""

from __future__ import annotations

import pytest
from django.db import connection

from cq.models import Task
from tests.helpers import eventually
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)


def test_progress_is_seen_while_the_task_runs_and_complete_at_the_end(start_worker):
    # An atomic task's progress is written aside its transaction on PostgreSQL; SQLite has one
    # writer at a time, so there only a task outside a transaction shows progress as it runs.
    kind = tasks.reports_progress if connection.vendor == "postgresql" else tasks.reports_progress_outside
    worker = start_worker("-c", "1")
    running = kind.delay(3, "go")
    seen = eventually(lambda: Task.objects.get(pk=running.pk).progress or None, 30, "the first progress")
    assert seen == {"current": 1, "total": 3, "percent": 33.3, "message": "step 1"}
    assert Task.objects.get(pk=running.pk).status == Task.STATUS_RUNNING
    Record.objects.create(key="go")
    done = running.wait(30_000)
    assert (done.status, done.progress["percent"], done.progress["message"]) == (Task.STATUS_SUCCESS, 100.0, "step 3")
    assert Task.objects.filter(progress__percent=100.0).count() == 1
    assert worker.stop() == 0, worker.output
