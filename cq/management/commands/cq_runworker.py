from __future__ import annotations

import os
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cq.conf import settings
from cq.scheduling.scheduler import Scheduler
from cq.validation import QUEUE_RULE, is_queue_name
from cq.workers.supervisor import Supervisor
from cq.workers.worker import Worker


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = "Run cq worker processes (and the scheduler) until SIGTERM or Ctrl-C."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--concurrency", "-c", type=_positive, default=os.cpu_count() or 1,
                            help="Worker processes to run (default: the number of cores).")
        parser.add_argument("--queues", "-Q", default="default",
                            help="Comma-separated queues to take tasks from (default: default).")
        parser.add_argument("--max-tasks-per-child", type=_positive, default=None,
                            help="Replace a worker process after it has run this many tasks.")
        parser.add_argument("--poll-interval", type=float, default=None,
                            help="Seconds between looks in the database for work (default CQ_POLL_INTERVAL).")
        parser.add_argument("--burst", action="store_true",
                            help="Run the tasks that are ready, and those they make ready, in this process; then exit.")
        parser.add_argument("--no-scheduler", dest="scheduler", action="store_false", default=None,
                            help="Do not run the scheduler in this process (default: CQ_SCHEDULER).")

    def handle(self, *args: Any, concurrency: int, queues: str, max_tasks_per_child: int | None,
               poll_interval: float | None, burst: bool, scheduler: bool | None, **options: Any) -> None:
        names = [name.strip() for name in queues.split(",") if name.strip()]
        bad = [name for name in names if not is_queue_name(name)]
        if not names or bad:
            raise CommandError(f"--queues takes names of {QUEUE_RULE}, not {queues!r}.")
        if burst:
            worker = Worker(queues=names, poll_interval=poll_interval, queued_grace=0)
            with worker.beating():
                ran = worker.drain()
            self.stdout.write(f"Ran {ran} task(s).")
            return
        cron = Scheduler() if (settings.SCHEDULER if scheduler is None else scheduler) else None
        thread = threading.Thread(target=cron.run, name="cq-scheduler", daemon=True) if cron else None
        if thread:
            thread.start()
        try:
            Supervisor(concurrency=concurrency, queues=names, max_tasks_per_child=max_tasks_per_child,
                       poll_interval=poll_interval).run()
        finally:
            if cron and thread:
                cron.stop()
                thread.join(timeout=10)
