"""The channel layer that carries doorbells, and a Redis layer tuned for them.

A doorbell is an ordinary channel-layer message, ``{"type": "cq.task", "id":
"<uuid>"}``, so any channel layer works. :class:`RedisChannelLayer` adds two
things channels-redis lacks for a work queue: popping a batch of waiting
doorbells in one round trip (``receive_many``) and sending many in one
pipeline (``send_many``). Neither keeps an "in flight" copy: a doorbell is
disposable because the task row is the truth (workers also poll the table).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import redis
import redis.sentinel
from channels.layers import BaseChannelLayer, channel_layers
from channels_redis.core import RedisChannelLayer as _ChannelsRedisLayer
from django.conf import settings as django_settings

from .conf import settings

logger = logging.getLogger(__name__)

#: Defaults for a layer that only carries doorbells: keep unread doorbells for
#: a day and let a backlog grow large before a send is refused.
DOORBELL_LAYER_CONFIG: dict[str, Any] = {"prefix": "cq", "expiry": 86400, "capacity": 1_000_000}
#: Seconds a doorbell's score moves earlier per point of priority: priority 100 is 5 hours
#: ahead, inside the day a doorbell is kept. So a task of higher priority goes first unless
#: one of lower priority has waited 3 minutes per point of difference (none starves).
PRIORITY_STEP = 180


# Drop expired messages, add as many as fit under capacity, refresh the key's expiry:
# what channels-redis's send does for one message, for many and in one round trip.
_SEND_MANY = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
local room = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
local sent = 0
for i = 4, #ARGV, 2 do
    if sent >= room then break end
    redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
    sent = sent + 1
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return sent
"""


class RedisChannelLayer(_ChannelsRedisLayer):
    """channels-redis with batch receive and pipelined batch send for normal channels."""

    def __init__(self, **config: Any) -> None:
        super().__init__(**{**DOORBELL_LAYER_CONFIG, **config})

    async def receive_many(self, channels: list[str], count: int, timeout: float) -> list[dict[str, Any]]:
        """Up to ``count`` messages from ``channels`` (earlier ones first), waiting at most ``timeout``
        seconds for the first."""
        assert not any("!" in name for name in channels), "receive_many serves normal channels only"
        keys = [self.prefix + name for name in channels]
        messages: list[dict[str, Any]] = []
        for _ in range(self.ring_size):
            connection = self.connection(next(self._receive_index_generator))
            for key in keys:
                popped = await connection.zpopmin(key, count - len(messages))
                messages.extend(self.deserialize(member) for member, _score in popped)
                if len(messages) >= count:
                    return messages
        if messages or timeout <= 0:
            return messages
        connection = self.connection(next(self._receive_index_generator))
        popped = await connection.bzpopmin(keys, timeout=timeout)
        if popped is not None:
            messages.append(self.deserialize(popped[1]))
        return messages

    async def send_many(self, channel: str, messages: list[dict[str, Any]], priorities: list[int] | None = None) -> int:
        """Send ``messages`` to ``channel`` in one round trip; returns how many fitted under capacity.

        A message's score (channels-redis's send time) is moved PRIORITY_STEP seconds earlier
        per point of its priority, so that ZPOPMIN hands out higher priorities first, and
        among equals the oldest first.
        """
        assert "!" not in channel, "send_many serves normal channels only"
        connection = self.connection(next(self._send_index_generator))
        now = time.time()
        priorities = priorities or [0] * len(messages)
        # Scores also rise by a microsecond per doorbell so that ZPOPMIN hands them out in order.
        pairs = [value for i, (message, priority) in enumerate(zip(messages, priorities, strict=True))
                 for value in (now + i * 1e-6 - priority * PRIORITY_STEP, self.serialize(message))]
        sent = await connection.eval(_SEND_MANY, 1, self.prefix + channel, int(now) - int(self.expiry),
                                     self.get_capacity(channel), int(self.expiry), *pairs)
        if sent < len(messages):
            logger.warning("Channel %s is full: %d doorbell(s) not sent; workers will find those tasks "
                           "in the database instead.", channel, len(messages) - sent)
        return sent


def get_layer() -> BaseChannelLayer:
    """The layer named by ``CQ_CHANNEL_LAYER``, or cq's own Redis layer on ``CQ_REDIS_URL``."""
    alias = settings.CHANNEL_LAYER
    if alias in getattr(django_settings, "CHANNEL_LAYERS", {}):
        return channel_layers[alias]
    return _default_layer(settings.REDIS_URL)


def redis_client(layer: BaseChannelLayer) -> tuple[redis.Redis, str] | None:
    """A plain Redis client on the layer's first host and the layer's key prefix;
    ``None`` for a layer that does not keep its messages in Redis."""
    if not isinstance(layer, _ChannelsRedisLayer):
        return None
    host = dict(layer.hosts[0])
    if "address" in host:
        return redis.Redis.from_url(host.pop("address"), **host), layer.prefix
    if "master_name" in host:
        sentinel = redis.sentinel.Sentinel(host.pop("sentinels"), sentinel_kwargs=host.pop("sentinel_kwargs", None))
        return sentinel.master_for(host.pop("master_name"), **host), layer.prefix
    return redis.Redis(**host), layer.prefix


@functools.cache
def _default_layer(url: str) -> RedisChannelLayer:
    # socket_timeout=None: redis-py 8 defaults to 5 s, which breaks blocking pops.
    return RedisChannelLayer(hosts=[{"address": url, "socket_timeout": None}])
