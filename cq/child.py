"""Entry point of a worker process started by the supervisor.

The process is spawned, not forked, so nothing here touches Django's models
before ``django.setup()``.
"""

from __future__ import annotations

import signal
from multiprocessing.connection import Connection


def main(conn: Connection, queues: list[str], poll_interval: float | None, max_tasks: int | None) -> None:
    import django

    django.setup()
    from .supervisor import PipeHooks
    from .worker import Worker

    # Ctrl-C reaches the whole process group: the supervisor decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker = Worker(queues=queues, poll_interval=poll_interval, max_tasks=max_tasks, hooks=PipeHooks(conn))
    worker.run(signals=(signal.SIGTERM,))
