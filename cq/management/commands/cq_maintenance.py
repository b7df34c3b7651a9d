from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.utils import timezone

from cq.models import TaskStatus, get_task_model
from cq.scheduling import pruning
from cq.scheduling.sweeper import sweep

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

CLEARABLE = {"failed": TaskStatus.FAILURE, "pending": TaskStatus.PENDING, "lost": TaskStatus.LOST,
             "succeeded": TaskStatus.SUCCESS, "incomplete": TaskStatus.INCOMPLETE, "revoked": TaskStatus.REVOKED}


class Command(BaseCommand):
    help = ("Run the sweeper now (lost tasks, expired results, old worker rows); with --prune, delete every "
            "expired task now, in batches, with a progress bar on a terminal (--reapply-rules first resolves "
            "the expiry of finished tasks again by the current retention rules); with --clear, delete "
            "top-level tasks of the statuses named by the flags instead.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--clear", action="store_true", help="Delete tasks of the flagged statuses.")
        for flag in CLEARABLE:
            parser.add_argument(f"--{flag}", action="store_true", help=f"With --clear: delete {flag} tasks.")
        parser.add_argument("--prior", type=int, default=0, help="With --clear: only tasks submitted N days ago.")
        parser.add_argument("--dry-run", action="store_true", help="With --clear: count, delete nothing.")
        parser.add_argument("--prune", action="store_true",
                            help="Delete every task whose result_expiry has passed, batch after batch.")
        parser.add_argument("--reapply-rules", action="store_true",
                            help="Resolve the result_expiry of finished tasks again by CQ_RETENTION now.")
        parser.add_argument("--batch", type=int, default=pruning.BATCH,
                            help="With --prune or --clear: top-level tasks deleted per transaction.")

    def handle(self, *args: Any, clear: bool, prior: int, dry_run: bool, prune: bool, reapply_rules: bool,
               batch: int, **options: Any) -> None:
        if batch < 1:
            raise CommandError(f"--batch takes a number of tasks from 1, not {batch}.")
        if reapply_rules or prune:
            if reapply_rules:
                self._reapply()
            if prune:
                self._prune(batch)
            return
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
            pruning.prune(tops=doomed, batch=batch)

    def _reapply(self) -> None:
        total = pruning.reappliable().count()
        shown = Progress(self.stdout, "Resolving expiry", total, "task(s)", f"{total:,} finished task(s) to go over")
        shown.done(pruning.reapply(progress=shown.update))

    def _prune(self, batch: int) -> None:
        now = timezone.now()  # one cutoff: a prune ends, even while tasks keep expiring
        total = pruning.due(now).count()
        shown = Progress(self.stdout, "Pruning", total, "task(s)", f"{total:,} task(s) due")
        pruned = pruning.prune(now, batch=batch, progress=lambda p: shown.update(p.tops, f"{p.rows:,} row(s)"))
        shown.done(pruned.tops, f"{pruned.rows:,} row(s) with their subtasks, in {pruned.batches} batch(es)")


class Progress:
    """A progress bar redrawn in place on a terminal; elsewhere (a log, a pipe), a plain line at
    most every few seconds, and one at the end."""

    WIDTH = 30
    EVERY = 5.0

    def __init__(self, out: OutputWrapper, what: str, total: int, unit: str, header: str) -> None:
        self.out, self.what, self.total, self.unit = out, what, total, unit
        self.tty = out.isatty()
        self.started = self.shown = time.monotonic()
        self.out.write(f"{what}: {header}.")

    def update(self, count: int, detail: str = "") -> None:
        now = time.monotonic()
        rate = count / max(now - self.started, 1e-6)
        line = f"{count:,}/{self.total:,} {self.unit}, {rate:,.0f}/s" + (f", {detail}" if detail else "")
        if self.tty:
            filled = self.WIDTH * min(count, self.total) // max(self.total, 1)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            self.out.write(f"\r{self.what} [{bar}] {line}\x1b[K", ending="")
            self.out.flush()
        elif now - self.shown >= self.EVERY:
            self.shown = now
            self.out.write(f"{self.what}: {line}")

    def done(self, count: int, detail: str = "") -> None:
        if self.tty:
            self.out.write("")
        seconds = time.monotonic() - self.started
        self.out.write(f"{self.what}: done, {count:,} {self.unit}" + (f", {detail}" if detail else "")
                       + f" in {seconds:.1f} s.")
