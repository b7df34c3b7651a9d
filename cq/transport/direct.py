"""A channels-redis layer's normal channels and groups, reached from the caller's thread with
redis-py's synchronous client.

It sends and receives the very messages the layer's own ``send_many``/``receive_many`` do
(``cq.layers``: the same serialisation, scores and Lua script), without the hop to the doorbell
loop's thread and back, which cost more CPU than the round trip to Redis itself. It serves any
channels-redis ``RedisChannelLayer``: cq's own, or channels-redis's, whose doorbell channel then
keeps cq's limits (a day, a million doorbells) unless the layer's ``CONFIG`` sets ``expiry`` or
``capacity``: channels-redis's defaults (60 s, 100 messages) suit a chat, and would drop the
doorbells of any backlog.
"""

from __future__ import annotations

import itertools
import os
import time
import weakref
from collections.abc import Iterable
from typing import Any

import redis
import redis.sentinel
from channels.layers import BaseChannelLayer
from channels_redis.core import RedisChannelLayer as ChannelsRedisLayer
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..layers import DOORBELL_LAYER_CONFIG, SEND_MANY, Limits, RedisChannelLayer, decode, send_args, sent_count

#: How long a caller waits for Redis before giving up on a send.
SEND_TIMEOUT = 5.0
#: How long a look for the members of event groups waits for Redis (cq.transport.events).
LOOK_TIMEOUT = 0.5
#: Longest a receive blocks in Redis; a longer wait returns empty-handed after it.
LONGEST_WAIT = 5.0
#: A blocking pop that returned within this many seconds found a doorbell waiting: others may be.
QUICK_POP = 0.001

_cache: weakref.WeakKeyDictionary[BaseChannelLayer, Direct] = weakref.WeakKeyDictionary()


def of(layer: BaseChannelLayer, config: dict[str, Any] | None = None) -> Direct | None:
    """The direct way to ``layer`` (made once per process), or ``None`` for a layer that does not
    keep its messages in Redis's sorted sets (the in-memory layer, channels-redis's pub/sub one).
    ``config`` is the layer's ``CONFIG`` from the settings, for the limits it states."""
    if not isinstance(layer, ChannelsRedisLayer):
        return None
    found = _cache.get(layer)
    if found is None or found.pid != os.getpid():  # a forked child makes connections of its own
        found = _cache[layer] = Direct(layer, config or {})
    return found


class Direct:
    def __init__(self, layer: ChannelsRedisLayer, config: dict[str, Any]) -> None:
        self.layer = layer
        self.pid = os.getpid()
        if isinstance(layer, RedisChannelLayer):
            self.limits: Limits | None = None  # its own, per channel
        else:
            self.limits = Limits(config.get("expiry", DOORBELL_LAYER_CONFIG["expiry"]),
                                 config.get("capacity", DOORBELL_LAYER_CONFIG["capacity"]))
        # One retry on a fresh connection when a pooled one was stale (Redis restarted); none
        # after a timeout, so that a send never blocks its caller longer than SEND_TIMEOUT.
        self.senders = [_client(host, SEND_TIMEOUT, retries=1) for host in layer.hosts]
        self.receivers: list[redis.Redis] | None = None
        self.lookers: list[redis.Redis] | None = None
        self.script = self.senders[0].register_script(SEND_MANY)
        self._send_index = itertools.cycle(range(len(self.senders)))
        self._receive_index = itertools.cycle(range(len(self.senders)))

    def send_many(self, channel: str, messages: list[dict[str, Any]], priorities: list[int] | None = None) -> int:
        """Send ``messages`` to the normal channel ``channel`` in one round trip; returns how many
        fitted under its capacity."""
        limits = self.limits or Limits.of(self.layer, channel)
        sent = self.script(keys=[self.layer.prefix + channel],
                           args=send_args(self.layer, channel, messages, priorities, limits),
                           client=self.senders[next(self._send_index)])
        return sent_count(channel, len(messages), sent)

    def receive_many(self, channels: list[str], count: int, timeout: float) -> list[dict[str, Any]]:
        """Up to ``count`` messages from the normal ``channels`` (earlier ones first), waiting at most
        ``timeout`` seconds (and no more than LONGEST_WAIT) for the first."""
        if self.receivers is None:
            # No retry: a receive that failed is the worker's to retry, with its own backoff.
            self.receivers = [_client(host, LONGEST_WAIT + SEND_TIMEOUT, retries=0) for host in self.layer.hosts]
        keys = [self.layer.prefix + name for name in channels]
        messages: list[dict[str, Any]] = []
        if timeout > 0 and len(self.receivers) == 1:
            # Waiting on one host: block at once (an idle worker then costs one command a
            # doorbell, not an empty pop first), and take more only if the first was waiting.
            began = time.monotonic()
            woken: Any = self.receivers[0].bzpopmin(keys, timeout=min(timeout, LONGEST_WAIT))
            if woken is None:
                return messages
            messages.extend(decode(self.layer, woken[0], [woken[1]]))
            if count == 1 or time.monotonic() - began > QUICK_POP:
                return messages
            timeout = 0
        for _ in range(len(self.receivers)):
            client: Any = self.receivers[next(self._receive_index)]  # redis-py's return types are unions
            for key in keys:
                popped = client.zpopmin(key, count - len(messages))
                messages.extend(decode(self.layer, key, (member for member, _score in popped)))
                if len(messages) >= count:
                    return messages
        if messages or timeout <= 0:
            return messages
        client = self.receivers[next(self._receive_index)]
        woken = client.bzpopmin(keys, timeout=min(timeout, LONGEST_WAIT))
        if woken is not None:
            messages.extend(decode(self.layer, woken[0], [woken[1]]))
        return messages

    def groups_with_members(self, groups: Iterable[str]) -> set[str]:
        """Those of ``groups`` that have a member, in one round trip per host: a group send to the
        others would reach nobody, and costs the layer two round trips each."""
        if self.lookers is None:
            self.lookers = [_client(host, LOOK_TIMEOUT, retries=1) for host in self.layer.hosts]
        by_host: dict[int, list[str]] = {}
        for group in dict.fromkeys(groups):
            by_host.setdefault(self.layer.consistent_hash(group), []).append(group)
        found: set[str] = set()
        for index, names in by_host.items():
            pipe = self.lookers[index].pipeline(transaction=False)
            for name in names:
                pipe.exists(self.layer._group_key(name))
            found.update(name for name, count in zip(names, pipe.execute(), strict=True) if count)
        return found


def _client(host: dict[str, Any], timeout: float, retries: int) -> redis.Redis:
    """A synchronous client for one of a channels-redis layer's hosts, with ``timeout`` on every
    socket operation (the host's own ``socket_timeout``, often ``None`` for blocking pops, is not
    used: a caller must never hang on a Redis that went away)."""
    options = {**host, "socket_timeout": timeout, "socket_connect_timeout": timeout,
               "retry": Retry(NoBackoff(), retries, supported_errors=(redis.ConnectionError,))}
    if "address" in options:
        return redis.Redis.from_url(options.pop("address"), **options)
    if "master_name" in options:
        sentinel = redis.sentinel.Sentinel(
            options.pop("sentinels"), sentinel_kwargs=options.pop("sentinel_kwargs", None))
        return sentinel.master_for(options.pop("master_name"), **options)
    return redis.Redis(**options)
