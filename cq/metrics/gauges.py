"""What is true now, read at scrape time, each with one query that an index serves: the tasks
waiting in each queue and how long the oldest has waited (the partial ``wait`` index over QUEUED
and RETRY), the tasks running (the partial ``run`` index), the workers alive (``last_heartbeat``),
and the queues' controls (the few ``Queue`` rows). Ages are the database's time, not this host's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Q
from django.db.models.functions import Coalesce, Greatest, Now

from ..conf import settings
from ..models import TaskStatus, get_task_model
from ..operating import Queue, Worker

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()


@dataclass
class QueueGauges:
    """One queue, now."""

    queued: int = 0
    retry: int = 0
    running: int = 0
    #: Seconds the oldest QUEUED task that is due has waited (0 when none waits).
    oldest_wait: float = 0.0
    workers: int = 0
    paused: bool = False
    #: Its cap of running tasks across all workers (``None``: none).
    concurrency: int | None = None


@dataclass
class Gauges:
    queues: dict[str, QueueGauges] = field(default_factory=dict)
    workers_alive: int = 0

    def queue(self, name: str) -> QueueGauges:
        return self.queues.setdefault(name, QueueGauges())


def read() -> Gauges:
    """The gauges now, for every queue that has tasks waiting or running, a worker or a control row."""
    gauges = Gauges()
    gauges.queue("default")
    due = Greatest(F("submitted"), Coalesce(F("run_after"), F("submitted")))
    age = ExpressionWrapper(Now() - due, output_field=DurationField())
    waiting_now = Q(status=TaskStatus.QUEUED) & (Q(run_after__isnull=True) | Q(run_after__lte=Now()))
    waiting = (Task.objects.filter(status__in=[TaskStatus.QUEUED, TaskStatus.RETRY]).values("queue")
               .annotate(queued=Count("pk", filter=Q(status=TaskStatus.QUEUED)),
                         retry=Count("pk", filter=Q(status=TaskStatus.RETRY)),
                         oldest=Max(age, filter=waiting_now)).order_by())
    for row in waiting:
        queue = gauges.queue(row["queue"])
        queue.queued, queue.retry = row["queued"], row["retry"]
        queue.oldest_wait = max(row["oldest"].total_seconds(), 0.0) if row["oldest"] is not None else 0.0
    running = Task.objects.filter(status=TaskStatus.RUNNING).values("queue").annotate(n=Count("pk")).order_by()
    for row in running:
        gauges.queue(row["queue"]).running = row["n"]
    cutoff = Now() - timedelta(seconds=settings.WORKER_TIMEOUT)
    alive = Worker.objects.filter(stopped__isnull=True, last_heartbeat__gte=cutoff)
    for queues in alive.values_list("queues", flat=True):
        gauges.workers_alive += 1
        for name in queues or ():
            gauges.queue(name).workers += 1
    for control in Queue.objects.all():
        queue = gauges.queue(control.name)
        queue.paused, queue.concurrency = control.paused, control.concurrency
    return gauges
