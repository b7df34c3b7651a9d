from __future__ import annotations

import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from cq.conf import settings
from cq.scheduler import Scheduler
from cq.worker import Worker


class Command(BaseCommand):
    help = "Run a cq worker: claim and run tasks until SIGTERM or Ctrl-C."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--poll-interval", type=float, default=None,
                            help="Seconds between looks in the database for work (default CQ_POLL_INTERVAL).")
        parser.add_argument("--burst", action="store_true",
                            help="Run the tasks that are ready, and those they make ready, then exit.")
        parser.add_argument("--no-scheduler", dest="scheduler", action="store_false", default=None,
                            help="Do not run the scheduler in this process (default: CQ_SCHEDULER).")

    def handle(self, *args: Any, poll_interval: float | None, burst: bool, scheduler: bool | None,
               **options: Any) -> None:
        worker = Worker(poll_interval=poll_interval, queued_grace=0 if burst else None)
        if burst:
            self.stdout.write(f"Ran {worker.drain()} task(s).")
            return
        cron = Scheduler() if (settings.SCHEDULER if scheduler is None else scheduler) else None
        thread = threading.Thread(target=cron.run, name="cq-scheduler", daemon=True) if cron else None
        if thread:
            thread.start()
        try:
            worker.run()
        finally:
            if cron and thread:
                cron.stop()
                thread.join(timeout=10)
