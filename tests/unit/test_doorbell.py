"""Doorbells on cq's Redis layer (real Redis): priorities against the purge of expired
doorbells, and members of a channel that are not doorbells."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import msgpack
import pytest
import redis
from django.conf import settings as django_settings

from cq.layers import PRIORITY_SHIFT, PRIORITY_STEP, get_layer
from cq.transport import doorbell
from cq.validation import MAX_PRIORITY

PREFIX = "cqtest-doorbell-"  # under the test suite's prefix, so that each test starts clean


@pytest.fixture
def layer(settings):
    """cq's layer with the expiry channels-redis defaults to (60 s), far under the 5 hours by
    which priority 100 moves a doorbell's score."""
    settings.CHANNEL_LAYERS = {"cq": {"BACKEND": "cq.layers.RedisChannelLayer", "CONFIG": {
        "hosts": [{"address": django_settings.REDIS_URL, "socket_timeout": None}], "prefix": PREFIX,
        "expiry": 60}}}
    return get_layer()


@pytest.fixture
def client():
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    yield client
    client.close()


def ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def test_the_purge_horizon_covers_the_largest_priority_shift():
    assert PRIORITY_SHIFT == MAX_PRIORITY * PRIORITY_STEP


def test_a_high_priority_doorbell_survives_later_sends_and_is_received_first(layer, client):
    urgent, lowest, usual, plain, hand_edited = ids(5)
    doorbell.ring([urgent], priorities=[100])
    doorbell.ring([lowest], priorities=[-100])
    doorbell.ring([usual], priorities=[0])
    # channels-redis's own send on the same channel purges too; cq's layer sends it like the rest.
    doorbell.run(layer.send(doorbell.channel("default"), {"type": doorbell.MESSAGE_TYPE, "id": plain}))
    doorbell.ring([hand_edited], priorities=[30_000])  # a row's SmallIntegerField holds more than the range
    assert client.zcard(f"{PREFIX}{doorbell.channel('default')}") == 5
    assert doorbell.listen(["default"], 10, 0) == [urgent, hand_edited, usual, plain, lowest]


def test_an_expired_doorbell_is_still_purged(layer, client):
    key = f"{PREFIX}{doorbell.channel('default')}"
    stale = layer.serialize({"type": doorbell.MESSAGE_TYPE, "id": ids(1)[0]})
    # Sent (at priority 100) longer ago than the expiry: gone with the next send.
    client.zadd(key, {stale: time.time() - 61 - PRIORITY_SHIFT - 1})
    fresh = ids(1)
    doorbell.ring(fresh)
    assert doorbell.listen(["default"], 10, 0) == fresh


def test_members_that_are_not_doorbells_are_skipped_and_logged_briefly(layer, client, caplog):
    key = f"{PREFIX}{doorbell.channel('default')}"
    first, second, third = ids(3)
    doorbell.ring([first])
    blob = b"\xc1" * 3_000_000  # 3 MB that msgpack cannot read (0xc1 is never used)
    junk = {
        b"not msgpack at all": 1, layer.serialize({"type": "cq.task"}): 2, b"0123456789ab" + msgpack.packb([1, 2]): 3,
        layer.serialize({"type": "cq.task", "id": "not-an-id"}): 4, b"0123456789ab" + blob: 5,
        b"0123456789ab" + msgpack.packb({1: "int keys"}): 6,
        layer.serialize({"type": "cq.task", "id": "x" * 3_000_000}): 7,
    }
    now = client.zrange(key, 0, 0, withscores=True)[0][1]
    client.zadd(key, {member: now + order for member, order in junk.items()})
    doorbell.ring([second])
    client.zadd(key, {b"\x00": now + 100})
    doorbell.ring([third])  # scored after the junk
    with caplog.at_level(logging.ERROR):
        assert doorbell.listen(["default"], 50, 0) == [first, second, third]
    assert client.zcard(key) == 0
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == len(junk) + 1
    assert all(len(line) < 600 for line in lines), max(map(len, lines))
    assert any("not a message" in line and "not msgpack at all" in line for line in lines)
    assert any("names no task" in line and "(3000029 characters)" in line for line in lines)
    assert any("FormatError" in line and "(3000012 bytes)" in line for line in lines)


def test_junk_alone_is_no_outage_on_the_blocking_pop_either(layer, client, caplog):
    key = f"{PREFIX}{doorbell.channel('default')}"
    with caplog.at_level(logging.ERROR):
        # The blocking pop takes one member when the channel was empty at first.
        doorbell.start(_add_later(client, key, b"junk"))
        assert doorbell.listen(["default"], 10, 2) == []
        client.zadd(key, {b"more junk": 1})
        assert doorbell.listen(["default"], 10, 0) == []
    assert len(caplog.records) == 2
    valid = ids(1)
    doorbell.ring(valid)
    assert doorbell.listen(["default"], 10, 0) == valid


async def _add_later(client: redis.Redis, key: str, member: bytes) -> None:
    await asyncio.sleep(0.2)
    client.zadd(key, {member: 1})


@pytest.mark.django_db(transaction=True)
def test_a_redis_that_never_answers_delays_delay_no_longer_than_the_send_timeout(settings, monkeypatch, caplog):
    import socket

    from cq.models import Task
    from cq.transport import direct
    from tests.testapp import tasks

    silent = socket.socket()  # accepts connections (the kernel does) and never answers: a partition
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setattr(direct, "SEND_TIMEOUT", 1.0)
    settings.CHANNEL_LAYERS = {"cq": {"BACKEND": "cq.layers.RedisChannelLayer", "CONFIG": {
        "hosts": [{"address": f"redis://127.0.0.1:{silent.getsockname()[1]}", "socket_timeout": None}]}}}
    try:
        began = time.monotonic()
        task = tasks.noop.delay()
        took = time.monotonic() - began
    finally:
        silent.close()
    # One timeout, not two: a send is retried only when its connection broke, never after a timeout.
    assert took < 1.8, f".delay() waited {took:.1f} s for a Redis that never answers"
    assert Task.objects.get(pk=task.pk).status == Task.STATUS_QUEUED  # the database poll will find it
    assert "Could not ring the doorbell of 1 task(s) (TimeoutError" in caplog.text
