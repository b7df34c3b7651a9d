"""The worker loop: what it does with odd doorbells, and without Redis."""

from __future__ import annotations

import logging
import socket

import pytest

from cq.models import Task
from cq.transport import doorbell
from cq.workers.worker import Worker
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unknown_task_id_is_logged_and_skipped(drain, caplog):
    missing = "00000000-0000-0000-0000-000000000001"
    doorbell.ring([missing])
    task = tasks.echo.delay()
    with caplog.at_level(logging.WARNING, logger="cq.execution"):
        assert drain() == 1
    assert f"task {missing}, which is not in the database" in caplog.text
    assert task.wait().status == Task.STATUS_SUCCESS


def test_doorbell_without_a_task_id_is_logged_and_skipped(drain, caplog):
    from cq.conf import settings
    from cq.layers import get_layer

    doorbell.run(get_layer().send(settings.CHANNEL, {"type": "cq.task", "id": "not-a-uuid"}))
    with caplog.at_level(logging.ERROR, logger="cq.doorbell"):
        assert drain() == 0
    assert "names no task" in caplog.text


def test_duplicate_doorbells_run_the_task_once(drain):
    task = tasks.counts_run.delay("once")
    doorbell.ring([task.pk, task.pk, task.pk])
    assert drain() == 1
    assert Record.objects.filter(key="once").count() == 1


def test_task_with_a_lost_doorbell_is_found_in_the_database(settings):
    task = tasks.echo.delay()
    assert doorbell.listen(["default"], 10, 0) == [str(task.pk)]  # the doorbell is gone
    assert Worker(queued_grace=3600).drain() == 0
    assert Worker(queued_grace=0).drain() == 1
    assert task.wait().status == Task.STATUS_SUCCESS


def test_delay_with_redis_down_keeps_the_task_queued_and_a_worker_still_runs_it(settings, caplog):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings.CHANNEL_LAYERS = {"cq": {"BACKEND": "cq.layers.RedisChannelLayer",
                                      "CONFIG": {"hosts": [dead], "prefix": "cqtest"}}}
    with caplog.at_level(logging.WARNING):
        task = tasks.echo.delay()
        task.refresh_from_db()
        assert task.status == Task.STATUS_QUEUED
        worker = Worker(queued_grace=0, poll_interval=0)
        assert worker.run_once(0) == 1
    assert "Could not ring the doorbell" in caplog.text
    assert "cannot hear doorbells" in caplog.text
    assert task.wait().status == Task.STATUS_SUCCESS


def test_stop_ends_run(worker):
    import threading

    thread = threading.Thread(target=worker.run)
    worker.poll_interval = 0.05
    thread.start()
    task = tasks.echo.delay()
    assert task.wait(timeout=10_000).status == Task.STATUS_SUCCESS
    worker.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert worker.processed == 1


def test_a_full_channel_drops_doorbells_but_no_task(settings, caplog):
    settings.CHANNEL_LAYERS = {"cq": {"BACKEND": "cq.layers.RedisChannelLayer", "CONFIG": {
        "hosts": [{"address": settings.REDIS_URL, "socket_timeout": None}], "prefix": "cqtest", "capacity": 2}}}
    with caplog.at_level(logging.WARNING, logger="cq.layers"):
        created = tasks.echo.delay_many([(i,) for i in range(5)])
    assert "Channel cq.tasks is full: 3 doorbell(s) not sent" in caplog.text
    assert len(doorbell.listen(["default"], 10, 0)) == 2
    assert Worker(queued_grace=0).drain() == 5
    assert [t.wait().result for t in created] == [[i] for i in range(5)]


def test_a_doorbell_on_another_queues_channel_runs_nothing(drain):
    """A doorbell of a "reports" task rung on the default queue's channel (by mistake, or by a
    hand): a worker of the default queue does not claim it; the task waits for its own workers."""
    task = tasks.report.delay("elsewhere")
    doorbell.ring([task.pk])  # the default channel
    assert drain() == 0
    assert Task.objects.get(pk=task.pk).status == Task.STATUS_QUEUED
    assert Worker(queues=["reports"], queued_grace=3600).drain() == 1
    assert task.wait().result == "report elsewhere"
