from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from cq.worker import Worker


class Command(BaseCommand):
    help = "Run a cq worker: claim and run tasks until SIGTERM or Ctrl-C."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--poll-interval", type=float, default=None,
                            help="Seconds between looks in the database for work (default CQ_POLL_INTERVAL).")
        parser.add_argument("--burst", action="store_true",
                            help="Run the tasks that are ready, and those they make ready, then exit.")

    def handle(self, *args: Any, poll_interval: float | None, burst: bool, **options: Any) -> None:
        worker = Worker(poll_interval=poll_interval, queued_grace=0 if burst else None)
        if burst:
            self.stdout.write(f"Ran {worker.drain()} task(s).")
        else:
            worker.run()
