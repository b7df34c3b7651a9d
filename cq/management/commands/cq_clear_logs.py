from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from cq.models import get_task_model

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()


class Command(BaseCommand):
    help = "Delete the stored log lines of finished tasks (all of them, or those finished before --prior days)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--prior", type=int, default=0, help="Only tasks finished at least this many days ago.")

    def handle(self, *args: Any, prior: int, **options: Any) -> None:
        finished = Task.objects.done(finished__lte=timezone.now() - timedelta(days=prior)).exclude(log_records=[])
        self.stdout.write(f"Cleared the logs of {finished.update(log_records=[])} task(s).")
