"""Shared fixtures. Redis and (with CQ_TEST_DATABASE=postgres) PostgreSQL must be
running: the run stops at once, naming the missing service, if either is not."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings

from cq.engine import queues
from cq.workers.worker import Worker
from tests.helpers import RedisServer, WorkerProcess, events_layers


def pytest_sessionstart(session: pytest.Session) -> None:
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        pytest.exit(f"Redis is not reachable at {settings.REDIS_URL} ({error}). Start it with "
                    f"`redis-server --daemonize yes --port 6379`, or point CQ_TEST_REDIS_URL at one.", returncode=3)
    if settings.DATABASE == "postgres":
        import psycopg

        db = settings.DATABASES["default"]
        try:
            psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname="postgres",
                            connect_timeout=3).close()
        except psycopg.Error as error:
            pytest.exit(f"PostgreSQL is not reachable at {db['HOST']}:{db['PORT']} as {db['USER']} ({error}). "
                        f"Start it, or run `make test-sqlite` alone.", returncode=3)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """Keep each phase's report on the test, so a fixture can tell that its test failed (rep_call)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def clean_redis() -> None:
    queues.forget()  # a queue's controls read in an earlier test were rolled back with it
    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(client.scan_iter("cqtest*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def worker() -> Worker:
    """A worker that finds tasks only through doorbells on the real Redis channel layer
    (its database poll never sees a queued task as overdue)."""
    return Worker(queued_grace=3600, name="test-worker")


@pytest.fixture
def drain(worker: Worker):
    """Run tasks in this process until no doorbell is waiting; returns how many ran."""
    return worker.drain


@pytest.fixture
def start_worker(tmp_path):
    started: list[WorkerProcess] = []

    """Start ``cq_runworker`` processes; each is killed at the end if the test left it running."""

    def start(*args: str, **kwargs) -> WorkerProcess:
        worker = WorkerProcess(*args, log=tmp_path / f"worker{len(started)}.log", **kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


@pytest.fixture
def private_redis(tmp_path, settings):
    """A redis-server of this test's own, which the test process and its workers use as the cq layer."""
    server = RedisServer(tmp_path)
    settings.CHANNEL_LAYERS = server.channel_layers()
    yield server
    server.stop()


@pytest.fixture
async def database_thread():
    """Async tests reach the database from asgiref's thread: close its connection afterwards, or
    PostgreSQL cannot drop the test database."""
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    await sync_to_async(connections.close_all)()


@pytest.fixture
def owned():
    """The task model of the custom_model tests (tests.settings_custom): customtask.OwnedTask."""
    from tests.customtask.models import OwnedTask  # its app is installed by tests.settings_custom only

    return OwnedTask


@pytest.fixture
def events_layer(settings):
    """Live events on: the "default" layer on the test Redis, which the websocket consumer reads."""
    settings.CHANNEL_LAYERS = events_layers(settings.CHANNEL_LAYERS, settings.REDIS_URL)
    return settings.CHANNEL_LAYERS
