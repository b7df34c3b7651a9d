"""A leader lease in Redis: one holder at a time, renewed while it lives.

Only an optimisation for the scheduler: the database already makes each cron
slot fire once, the lease just keeps every other scheduler from trying.
"""

from __future__ import annotations

import logging
import uuid

import redis

logger = logging.getLogger("cq.lease")  # its name before cq's subpackages: LOGGING settings use it

# Extend the lease only if we still hold it (another holder may have taken it after expiry).
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class Lease:
    """Hold ``key`` for ``ttl`` seconds at a time. Without Redis (``client=None``) it is always held."""

    def __init__(self, client: redis.Redis | None, key: str, ttl: float = 10.0) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = int(ttl * 1000)
        self.token = uuid.uuid4().hex
        self.held = False
        self._unreachable = False

    def hold(self) -> bool:
        """Take or renew the lease; whether we hold it now.

        If Redis cannot be reached, every contender acts as holder: firing stays
        exactly-once through the database, and cron does not stop with Redis.
        """
        if self.client is None:
            return True
        try:
            if self.held and self.client.eval(_RENEW, 1, self.key, self.token, self.ttl_ms):
                pass
            else:
                self.held = bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))
        except redis.RedisError as error:
            if not self._unreachable:
                logger.warning("Scheduler lease %s: Redis unreachable (%s); running without a lease.", self.key, error)
            self._unreachable = True
            return True
        self._unreachable = False
        return self.held

    def release(self) -> None:
        if self.client is not None and self.held:
            try:
                self.client.eval(_RELEASE, 1, self.key, self.token)
            except redis.RedisError:
                pass  # it expires by itself
        self.held = False
