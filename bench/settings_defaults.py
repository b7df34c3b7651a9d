"""`make bench`'s second configuration: what a project gets from Django's defaults and the
tutorial's layers. ``CONN_MAX_AGE`` is left at Django's 0 (a connection per request, or per task),
the doorbells go through channels-redis's own layer, live events are on (a ``"default"`` layer) and
so is the scheduler."""

from bench.settings import *  # noqa: F403
from bench.settings import DATABASES, REDIS_URL

DATABASES["default"].pop("CONN_MAX_AGE")
CHANNEL_LAYERS = {
    "cq": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL], "prefix": "cqbench"}},
    "default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [REDIS_URL], "prefix": "cqbench-events"}},
}
CQ_SCHEDULER = True
