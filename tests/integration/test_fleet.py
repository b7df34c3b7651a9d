"""The workers and queues pages fed by a real cq_runworker: its supervisor's beats write each
worker process's memory, its running task shows with the time it has run, its finished tasks count
in its tasks a minute, and its scheduler samples the queues."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from cq.models import QueueSample, Task, Worker
from tests.helpers import eventually
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def resident(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


def test_a_worker_reports_its_memory_pace_and_running_task_on_the_workers_page(start_worker, client):
    client.force_login(User.objects.create(username="staff", is_staff=True))
    process = start_worker("-c", "1", settings={"CQ_HEARTBEAT_INTERVAL": 0.3, "CQ_SWEEP_INTERVAL": 0.5})
    done = tasks.echo.delay("first")
    eventually(lambda: Task.objects.get(pk=done.pk).status == Task.STATUS_SUCCESS, 60, "the worker to run echo")
    slow = tasks.sleeps.delay(30, "fleet")
    try:
        worker = eventually(lambda: Worker.objects.filter(current_task=slow.pk, memory__isnull=False).first(), 30,
                            f"a beat that reports the running task and the memory\n{process.output}")
        # The memory is the worker process's own, as the kernel counts it (it moves a little).
        assert 10 * 2**20 < worker.memory < 2 * 2**30
        assert abs(worker.memory - resident(worker.pid)) < 32 * 2**20

        def page_row():
            rows = {row["worker"].name: row for row in client.get("/cq/workers/").context["rows"]}
            return rows[worker.name]

        first = page_row()
        assert first["alive"] and first["per_minute"] == 1, first
        assert first["task"]["id"] == str(slow.pk) and first["task"]["func_name"] == tasks.sleeps.name
        later = eventually(lambda: (row := page_row())["task"]["elapsed"] >= first["task"]["elapsed"] + 1 and row,
                           30, "the running task's elapsed time to grow")
        assert later["task"]["elapsed"] < 30
        html = client.get("/cq/workers/").content.decode().split(f'data-worker="{worker.name}"')[1].split("</tr>")[0]
        assert 'class="elapsed" data-elapsed="' in html and f">{tasks.sleeps.name}</a>" in html
        assert 'class="memory" data-bytes="' in html

        # The scheduler of cq_runworker sampled the queues for the minute that ended before it started.
        eventually(lambda: QueueSample.objects.filter(queue="default").exists(), 30, "a sample of the queues")
    finally:
        process.kill()
