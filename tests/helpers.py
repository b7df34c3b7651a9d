"""Test helpers: polling with a deadline (never sleep and hope), worker processes, a private Redis."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis

ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float, what: str, every: float = 0.05) -> T:
    """Call ``check`` until it returns something truthy and return that; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(every)
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def events_layers(layers: dict[str, Any], redis_url: str) -> dict[str, Any]:
    """``layers`` plus the "default" layer that carries live events (cq.transport.events), on ``redis_url``."""
    return {**layers, "default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                  "CONFIG": {"hosts": [redis_url], "prefix": "cqtest-events"}}}


def process_env(settings: dict[str, Any] | None = None, redis_url: str | None = None,
                pg_port: int | None = None) -> dict[str, str]:
    """The environment of a process that works on this test's database, with extra settings;
    ``pg_port`` sends its PostgreSQL connections to that port of 127.0.0.1 (a fault-injecting
    proxy: tests/faults/proxy.py)."""
    from django.db import connection

    env = {**os.environ, "CQ_TEST_DB_NAME": connection.settings_dict["NAME"], "PYTHONPATH": str(ROOT),
           "CQ_TEST_SETTINGS_JSON": json.dumps(settings or {}), "CQ_TEST_LOG_LEVEL": "INFO"}
    if redis_url:
        env["CQ_TEST_REDIS_URL"] = redis_url
    if pg_port is not None:
        assert connection.vendor == "postgresql", "pg_port is for PostgreSQL test runs only"
        env["CQ_TEST_PG_HOST"], env["CQ_TEST_PG_PORT"] = "127.0.0.1", str(pg_port)
    return env


class WorkerProcess:
    """``manage.py cq_runworker`` in a subprocess, on the test database; its output goes to a file.
    With ``pg_port``, its database connections go through that port (see :func:`process_env`);
    ``prefix`` runs it through another command (``unshare ...``, ``faketime ...``)."""

    def __init__(self, *args: str, settings: dict[str, Any] | None = None, redis_url: str | None = None,
                 pg_port: int | None = None, log: Path, prefix: tuple[str, ...] = ()) -> None:
        self.log = log
        self._out = log.open("wb")
        self.process = subprocess.Popen(
            [*prefix, sys.executable, *self.command(), *args], cwd=ROOT,
            env=process_env(settings, redis_url, pg_port),
            stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)

    def command(self) -> list[str]:
        return ["-m", "django", "cq_runworker", f"--settings={os.environ['DJANGO_SETTINGS_MODULE']}",
                "--poll-interval=0.2"]

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Signal it and wait for it to exit; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        finally:
            self._out.close()

    def kill(self) -> None:
        """Kill it and every process it started (a child left behind would go on taking tasks)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)
        self._out.close()


class SiteProcess(WorkerProcess):
    """The test project's ASGI application (tests/asgi.py: pages, static files and cq's websocket)
    served by daphne on a free port, on the test database."""

    def __init__(self, *, settings: dict[str, Any] | None = None, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(settings=settings, log=log)
        eventually(self.answers, 30, f"daphne to serve on port {self.port}")

    def command(self) -> list[str]:
        return ["-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(self.port), "tests.asgi:application"]

    def answers(self) -> bool:
        assert self.process.poll() is None, f"daphne exited:\n{self.output}"
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0


class RedisServer:
    """A private redis-server on a free port, for tests that stop, restart or flush it."""

    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed: fault tests start their own (apt-get install redis-server)"
        self.binary, self.tmp, self.port = binary, tmp, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        eventually(self.answers, 10, f"redis-server on port {self.port} to answer")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=1)

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def channel_layers(self) -> dict[str, Any]:
        return {"cq": {"BACKEND": "cq.layers.RedisChannelLayer",
                       "CONFIG": {"hosts": [{"address": self.url, "socket_timeout": None}], "prefix": "cqtest"}}}
