"""Live events (cq.transport.events): notifiers, and task_finished. The websocket is in
tests/integration/test_websocket.py."""

from __future__ import annotations

import pytest

from cq.models import Task
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)

heard: list[tuple[str, dict]] = []


def remember(task_id, event):
    heard.append((task_id, event))


@pytest.fixture
def notifier(settings):
    heard.clear()
    settings.CQ_NOTIFIERS = ["tests.unit.test_events.remember"]
    return heard


def test_notifiers_hear_every_change_of_status_in_order(notifier, drain):
    task = tasks.add.delay(1, 2)
    drain()
    assert [event["status"] for task_id, event in notifier if task_id == str(task.pk)] == ["Q", "R", "S"]
    assert {event["func_name"] for _, event in notifier} == {tasks.add.name}


def test_notifiers_hear_logs_progress_and_revokes(notifier, drain):
    from tests.testapp.models import Record

    Record.objects.create(key="open")
    reporting = tasks.reports_progress.delay(1, "open")
    drain()
    kinds = [(event["event"], event.get("progress", {}).get("percent")) for _, event in notifier
             if event["task"] == str(reporting.pk)]
    assert ("progress", 100.0) in kinds
    logging_task = tasks.logs_with_subtask.delay()
    drain()
    assert any(event["event"] == "log" and event["top"] == str(logging_task.pk) for _, event in notifier)
    pending = tasks.echo.delay_args(submit=False)
    pending.revoke()
    assert (str(pending.pk), "E") in [(task_id, event["status"]) for task_id, event in notifier]


def test_a_failing_notifier_is_logged_and_the_task_still_runs(settings, drain, caplog):
    from django.core import checks

    settings.CQ_NOTIFIERS = ["tests.unit.test_events.no_such_function_here", "tests.unit.test_events.heard"]
    settings.CQ_TASK_ACCESS = "tests.nowhere.allow"
    found = [(m.id, m.msg.split(",")[0]) for m in checks.run_checks() if m.id == "cq.E001"]
    assert found == [("cq.E001", "CQ_NOTIFIERS names 'tests.unit.test_events.no_such_function_here'"),
                     ("cq.E001", "CQ_NOTIFIERS names 'tests.unit.test_events.heard'"),
                     ("cq.E001", "CQ_TASK_ACCESS names 'tests.nowhere.allow'")]
    with pytest.raises(ImportError):
        tasks.add.delay(1, 1)  # past the checks, a wrong path still fails where the change is made
    settings.CQ_TASK_ACCESS = None
    settings.CQ_NOTIFIERS = ["tests.unit.test_events.explode"]
    task = tasks.add.delay(1, 1)
    drain()
    assert task.wait().status == Task.STATUS_SUCCESS
    assert "Notifier" in caplog.text and "failed" in caplog.text


def explode(task_id, event):
    raise RuntimeError("notifier down")


def test_task_finished_is_sent_once_per_final_status_after_the_commit(drain):
    from django.db import transaction

    from cq.signals import task_finished

    heard = []

    def receiver(sender, task, **kwargs):
        heard.append((task.pk, task.status, transaction.get_connection().in_atomic_block))

    task_finished.connect(receiver)
    try:
        done, failed, revoked = tasks.add.delay(1, 2), tasks.failing.delay(), tasks.echo.delay_args(submit=False)
        revoked.revoke()
        drain()
    finally:
        task_finished.disconnect(receiver)
    assert sorted(heard) == sorted([(done.pk, "S", False), (failed.pk, "F", False), (revoked.pk, "E", False)])


def test_events_go_only_to_the_groups_that_have_a_member(events_layer, drain, monkeypatch):
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    from cq.transport import doorbell, events

    layer = get_channel_layer("default")
    sent = []
    real = layer.group_send

    async def counting(group, message):
        sent.append((group, message["status"]))
        await real(group, message)

    monkeypatch.setattr(layer, "group_send", counting)
    tasks.add.delay(1, 2)
    drain()
    doorbell.run(_after_the_sends_so_far(), 5)
    assert sent == []  # nobody watches: not one group send
    async_to_sync(layer.group_add)(events.ALL, "cq-test-watcher")
    try:
        tasks.add.delay(2, 3)
        drain()
        doorbell.run(_after_the_sends_so_far(), 5)
        assert sent == [(events.ALL, "Q"), (events.ALL, "R"), (events.ALL, "S")]  # only the group watched
    finally:
        async_to_sync(layer.group_discard)(events.ALL, "cq-test-watcher")


async def _after_the_sends_so_far():
    """Returns on the doorbell loop once the event sends started before it are done (they take
    the loop's lock in turn)."""
    from cq.transport.events import _in_order

    async with _in_order():
        return None


def test_an_events_redis_that_never_answers_holds_up_no_worker(settings, drain, monkeypatch, caplog):
    import socket
    import time

    from cq.transport import direct, events

    silent = socket.socket()  # accepts connections (the kernel does) and never answers: a partition
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setattr(direct, "LOOK_TIMEOUT", 0.6)
    monkeypatch.setattr(events, "_quiet_until", 0.0)  # and put back as it was after the test
    settings.CHANNEL_LAYERS = {**settings.CHANNEL_LAYERS, "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [f"redis://127.0.0.1:{silent.getsockname()[1]}"]}}}
    try:
        task = tasks.add.delay(1, 2)
        began = time.monotonic()
        assert drain() == 1
        took = time.monotonic() - began
        assert task.wait().status == Task.STATUS_SUCCESS
    finally:
        silent.close()
    # The first event (QUEUED, at .delay()) waited one LOOK_TIMEOUT and found Redis silent: the
    # worker's two then waited for nothing, and the warning was given once.
    assert took < 0.5, f"the worker waited {took:.1f} s on the events layer"
    assert caplog.text.count("dropping task events for 5 s") == 1
