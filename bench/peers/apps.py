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

if os.environ.get("PEER") == "procrastinate":
    import procrastinate

    from bench.peers.settings import PG

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(
        conninfo=" ".join(f"{key}={value}" for key, value in PG.items())))

    @app.task
    def noop(i):
        counter.incr(DONE)

if os.environ.get("PEER") == "celery-db":
    # As a Django project sets it up: with DJANGO_SETTINGS_MODULE set, Celery installs its Django fixup.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers.settings")
    import django
    from celery import Celery

    django.setup()
    app = Celery("bench", broker=URL, backend="django-db")
    app.conf.task_track_started = True

    @app.task
    def noop(i):
        counter.incr(DONE)

if os.environ.get("PEER") == "rq":
    def noop(i):
        counter.incr(DONE)
