"""A task model of the project's own (CQ_TASK_MODEL) in a cq_runworker process."""

from __future__ import annotations

import pytest

from tests.testapp import tasks

pytestmark = [pytest.mark.custom_model, pytest.mark.django_db(transaction=True)]


def test_a_running_task_sets_its_own_columns(owned, start_worker):
    worker = start_worker("-c", "1")
    task = tasks.renames_organisation.using(fields={"organisation": "old"}).delay("new")
    task = task.wait(30_000)
    assert (task.status, task.result, task.organisation) == (owned.STATUS_SUCCESS, "new", "new")
    assert worker.stop() == 0, worker.output
