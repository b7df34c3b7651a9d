"""The same no-op task for each peer queue. Each run increments one Redis counter, the only way
the harness sees a peer's tasks finish (it costs each peer about 0.1 ms that cq's no-op does not pay)."""

import os

import redis

URL = os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379/9")
DONE = "bench:peers:done"
counter = redis.Redis.from_url(URL)

if os.environ.get("PEER") == "huey":
    from huey import RedisHuey

    huey = RedisHuey("bench", url=URL, results=False)

    @huey.task()
    def noop(i):
        counter.incr(DONE)

if os.environ.get("PEER") == "dramatiq":
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    dramatiq.set_broker(RedisBroker(url=URL))

    @dramatiq.actor
    def noop(i):
        counter.incr(DONE)

if os.environ.get("PEER") == "celery":
    from celery import Celery

    app = Celery("bench", broker=URL)

    @app.task
    def noop(i):
        counter.incr(DONE)

if os.environ.get("PEER") == "rq":
    def noop(i):
        counter.incr(DONE)
