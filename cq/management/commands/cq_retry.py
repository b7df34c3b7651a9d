from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from cq.tasks import retry_tasks


class Command(BaseCommand):
    help = "Queue now every task waiting to be retried whose time has come (workers also do this by themselves)."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"Queued {retry_tasks()} task(s) for retry.")
