"""Bulk retry through the JSON API, with a real cq_runworker process running what it queues."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User

from cq.models import Task
from cq.web import bulk
from tests.helpers import eventually
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)


def test_failed_tasks_retried_in_bulk_all_end_in_success(start_worker, client, monkeypatch):
    # Given 30 tasks that a worker ran once and that failed (each succeeds when run again)
    monkeypatch.setattr(bulk, "BATCH_SIZE", 7)
    worker = start_worker("-c", "2")
    made = [tasks.fails_first_time.delay(f"bulk{i}") for i in range(30)]
    ids = [t.pk for t in made]
    eventually(lambda: Task.objects.filter(pk__in=ids, status="F").count() == 30, 60, "the 30 tasks to fail")
    tasks.add.delay(1, 2)  # and one that is not among those the filter selects
    # When an operator counts the failures of that function, then retries them all
    client.force_login(User.objects.create(username="ops", is_staff=True))
    url = f"/cq/api/bulk/retry/?status=F&func_name={tasks.fails_first_time.name}"
    counted = client.get(url).json()
    assert (counted["matched"], counted["applicable"]) == (30, 30)
    response = client.post(url, json.dumps({"expected": counted["matched"]}), content_type="application/json")
    assert response.json() == {"action": "retry", "matched": 30, "acted": 30, "skipped": 0, "batches": 5}
    # Then the worker runs each of them again, and each succeeds, once
    eventually(lambda: Task.objects.filter(pk__in=ids, status="S").count() == 30, 60, "the 30 retries to succeed")
    assert set(Task.objects.filter(pk__in=ids).values_list("retries", "result")) == {(1, "second run")}
    assert Record.objects.filter(key__startswith="bulk").count() == 60
    assert worker.stop() == 0, worker.output
