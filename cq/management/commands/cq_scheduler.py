from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import BaseCommand

from cq.scheduling.scheduler import Scheduler


class Command(BaseCommand):
    help = "Run the cq scheduler alone: fire repeating tasks and release delayed ones, until SIGTERM or Ctrl-C."

    def handle(self, *args: Any, **options: Any) -> None:
        scheduler = Scheduler()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: scheduler.stop())
        scheduler.run()
