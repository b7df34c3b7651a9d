from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from cq.models import TaskStatus, get_task_model
from cq.scheduling.sweeper import sweep

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

CLEARABLE = {"failed": TaskStatus.FAILURE, "pending": TaskStatus.PENDING, "lost": TaskStatus.LOST,
             "succeeded": TaskStatus.SUCCESS, "incomplete": TaskStatus.INCOMPLETE, "revoked": TaskStatus.REVOKED}


class Command(BaseCommand):
    help = ("Run the sweeper now (lost tasks, expired results, old worker rows); with --clear, delete "
            "top-level tasks of the statuses named by the flags instead.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--clear", action="store_true", help="Delete tasks of the flagged statuses.")
        for flag in CLEARABLE:
            parser.add_argument(f"--{flag}", action="store_true", help=f"With --clear: delete {flag} tasks.")
        parser.add_argument("--prior", type=int, default=0, help="With --clear: only tasks submitted N days ago.")
        parser.add_argument("--dry-run", action="store_true", help="With --clear: count, delete nothing.")

    def handle(self, *args: Any, clear: bool, prior: int, dry_run: bool, **options: Any) -> None:
        if not clear:
            swept = sweep()
            self.stdout.write(f"{swept.lost} lost task(s) found, {swept.expired} expired task row(s) deleted, "
                              f"{swept.workers} old worker row(s) deleted.")
            return
        statuses = [status for flag, status in CLEARABLE.items() if options[flag]]
        doomed = Task.objects.filter(top__isnull=True, status__in=statuses,
                                     submitted__lte=timezone.now() - timedelta(days=prior))
        self.stdout.write(f"Removing {doomed.count()} task(s){' (dry run)' if dry_run else ''}.")
        if not dry_run:
            doomed.delete()
