"""The channel layer that carries doorbells, and a Redis layer tuned for them.

A doorbell is an ordinary channel-layer message, ``{"type": "cq.task", "id":
"<uuid>"}``, so any channel layer works. :class:`RedisChannelLayer` adds two
things channels-redis lacks for a work queue: popping a batch of waiting
doorbells in one round trip (``receive_many``) and sending many in one
pipeline (``send_many``). Neither keeps an "in flight" copy: a doorbell is
disposable because the task row is the truth (workers also poll the table).
Its ``send`` on a normal channel goes through ``send_many`` too, so that both
score and purge doorbells alike.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

import redis
import redis.sentinel
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, channel_layers
from channels_redis.core import RedisChannelLayer as _ChannelsRedisLayer
from django.conf import settings as django_settings

from .conf import settings
from .validation import MAX_PRIORITY, MIN_PRIORITY, excerpt

logger = logging.getLogger(__name__)

#: Defaults for a layer that only carries doorbells: keep unread doorbells for
#: a day and let a backlog grow large before a send is refused.
DOORBELL_LAYER_CONFIG: dict[str, Any] = {"prefix": "cq", "expiry": 86400, "capacity": 1_000_000}
#: Seconds a doorbell's score moves earlier per point of priority: priority 100 is 5 hours
#: ahead. So a task of higher priority goes first unless one of lower priority has waited
#: 3 minutes per point of difference (none starves).
PRIORITY_STEP = 180
#: How far before its send time the score of the highest priority's doorbell lies. A send
#: purges the doorbells scored more than ``expiry`` plus this before now, so that a
#: high-priority doorbell is kept as long as any other (without it, one of priority 100 was
#: purged by the next send whenever ``expiry`` was under 5 hours, and its task ran last).
PRIORITY_SHIFT = MAX_PRIORITY * PRIORITY_STEP


# Drop expired messages, add as many as fit under capacity, refresh the key's expiry:
# what channels-redis's send does for one message, for many and in one round trip.
SEND_MANY = """
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
    """channels-redis with batch receive and pipelined batch send for normal channels.

    A member of a channel that is not a message (written by something else than a channel layer,
    or by one with other keys) is skipped and logged by ``receive_many``, never raised: a receiver
    would take it for Redis being down, and lose the doorbells popped with it.
    """

    def __init__(self, **config: Any) -> None:
        super().__init__(**{**DOORBELL_LAYER_CONFIG, **config})

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """channels-redis's send, except on a normal channel, where it goes through ``send_many``:
        channels-redis's own purges with ``expiry`` alone, and so drops the doorbells of high
        priority waiting on the same channel."""
        if "!" in channel:
            await super().send(channel, message)
            return
        assert isinstance(message, dict), "message is not a dict"
        assert self.require_valid_channel_name(channel), "Channel name not valid"
        if not await self.send_many(channel, [message]):
            raise ChannelFull()

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
                messages.extend(decode(self, key, (member for member, _score in popped)))
                if len(messages) >= count:
                    return messages
        if messages or timeout <= 0:
            return messages
        connection = self.connection(next(self._receive_index_generator))
        popped = await connection.bzpopmin(keys, timeout=timeout)
        if popped is not None:
            messages.extend(decode(self, popped[0], [popped[1]]))
        return messages

    async def send_many(self, channel: str, messages: list[dict[str, Any]], priorities: list[int] | None = None) -> int:
        """Send ``messages`` to ``channel`` in one round trip; returns how many fitted under capacity
        (see ``send_args`` for their order)."""
        assert "!" not in channel, "send_many serves normal channels only"
        connection = self.connection(next(self._send_index_generator))
        sent = await connection.eval(SEND_MANY, 1, self.prefix + channel,
                                     *send_args(self, channel, messages, priorities, Limits.of(self)))
        return sent_count(channel, len(messages), sent)


class Limits(NamedTuple):
    """How long a channel keeps an unread message, and how many it holds."""

    expiry: float
    capacity: int

    @classmethod
    def of(cls, layer: _ChannelsRedisLayer, channel: str | None = None) -> Limits:
        """The layer's own limits (of ``channel``, when it has its own capacity)."""
        return cls(layer.expiry, layer.get_capacity(channel) if channel else layer.capacity)


def send_args(layer: _ChannelsRedisLayer, channel: str, messages: list[dict[str, Any]],
              priorities: list[int] | None, limits: Limits) -> list[Any]:
    """The arguments of :data:`SEND_MANY` after its key.

    A message's score (channels-redis's send time) is moved PRIORITY_STEP seconds earlier per
    point of its priority, so that ZPOPMIN hands out higher priorities first, and among equals
    the oldest first. Each send purges the messages scored more than ``expiry`` plus
    PRIORITY_SHIFT seconds ago: every message is kept ``expiry`` seconds at least, one of low
    priority up to 10 hours more.
    """
    now = time.time()
    priorities = priorities or [0] * len(messages)
    # Scores also rise by a microsecond per message so that ZPOPMIN hands them out in order.
    # A priority outside the range (a row edited by hand) counts as the nearest end of it.
    pairs = [value for i, (message, priority) in enumerate(zip(messages, priorities, strict=True))
             for value in (now + i * 1e-6 - min(max(priority, MIN_PRIORITY), MAX_PRIORITY) * PRIORITY_STEP,
                           layer.serialize(message))]
    horizon = int(now) - int(limits.expiry) - PRIORITY_SHIFT
    return [horizon, limits.capacity, int(limits.expiry), *pairs]


def sent_count(channel: str, wanted: int, sent: Any) -> int:
    """What :data:`SEND_MANY` returned, as a count; a full channel is logged."""
    if int(sent) < wanted:
        logger.warning("Channel %s is full: %d doorbell(s) not sent; workers will find those tasks "
                       "in the database instead.", channel, wanted - int(sent))
    return int(sent)


def decode(layer: _ChannelsRedisLayer, key: Any, members: Iterable[bytes]) -> list[dict[str, Any]]:
    """The members of a channel's sorted set that are messages, deserialised; the others logged
    (briefly) and dropped."""
    messages = []
    for member in members:
        try:
            message = layer.deserialize(member)
        except Exception as error:  # msgpack's, or a decryption's: the bytes are not a message
            problem = f"{type(error).__name__}: {excerpt(str(error), 100)}"
        else:
            if isinstance(message, dict):
                messages.append(message)
                continue
            problem = f"a {type(message).__name__}, not a dict"
        logger.error("Dropped a member of %s that is not a message (%s): %s", excerpt(key, 100), problem,
                     excerpt(member, 100))
    return messages


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
        # redis-py's Sentinel carries no annotations.
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            host.pop("sentinels"), sentinel_kwargs=host.pop("sentinel_kwargs", None))
        return sentinel.master_for(host.pop("master_name"), **host), layer.prefix  # type: ignore[no-untyped-call]
    return redis.Redis(**host), layer.prefix


@functools.cache
def _default_layer(url: str) -> RedisChannelLayer:
    # socket_timeout=None: redis-py 8 defaults to 5 s, which breaks blocking pops.
    return RedisChannelLayer(hosts=[{"address": url, "socket_timeout": None}])
