from __future__ import annotations

import getpass
import socket
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cq.engine import queues
from cq.exceptions import InvalidQueue
from cq.models import Queue


def _cap(value: str) -> int | None:
    """A cap as typed: a whole number, or "none" to lift it."""
    if value.lower() == "none":
        return None
    try:
        return int(value)
    except ValueError:
        raise CommandError(f"A cap is a whole number of at least 1, or none; not {value!r}.") from None


class Command(BaseCommand):
    help = ("Pause, resume or cap a queue on every worker within a second (kept in the database), "
            "or show the queues' controls.")

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="pause|resume|limit|show")
        actions.add_parser("pause", help="Its tasks wait, QUEUED; none starts.").add_argument("queue")
        actions.add_parser("resume", help="Its tasks run again.").add_argument("queue")
        limit = actions.add_parser("limit", help="At most N of its tasks run at once, across all workers.")
        limit.add_argument("queue")
        limit.add_argument("concurrency", type=_cap, help="a whole number, or none to lift the cap")
        actions.add_parser("show", help="Every queue with controls.")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if action == "show":
            self._show()
            return
        by = f"{getpass.getuser()}@{socket.gethostname()} (cq_queue)"
        try:
            if action == "limit":
                row = queues.limit(options["queue"], options["concurrency"], by)
            else:
                row = queues.change(options["queue"], by=by, paused=action == "pause")
        except InvalidQueue as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"Queue {row.name}: {_state(row)}.")

    def _show(self) -> None:
        rows = list(Queue.objects.order_by("name"))
        if not rows:
            self.stdout.write("No queue is paused or capped.")
        for row in rows:
            self.stdout.write(f"{row.name}: {_state(row)} (changed {row.changed:%Y-%m-%d %H:%M:%S %Z} by "
                              f"{row.changed_by or 'unknown'})")


def _state(row: Queue) -> str:
    state = "paused" if row.paused else "running"
    return state if row.concurrency is None else f"{state}, at most {row.concurrency} at once"
