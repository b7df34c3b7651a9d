from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from cq.scheduling.sweeper import find_lost


class Command(BaseCommand):
    help = "Mark LOST (or retry, with retry_on_lost) the running tasks of workers that stopped beating."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"{find_lost()} lost task(s) found.")
