"""Rows about running cq rather than about tasks: its worker processes, the controls of its
queues, and the rate limits of its functions. ``cq.models`` exports them with the task models.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings as django_settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone

from .conf import settings
from .validation import validate_queue_name

TASK_MODEL = django_settings.CQ_TASK_MODEL  # type: ignore[misc]  # set by cq's app config


class WorkerQuerySet(models.QuerySet["Worker"]):
    def alive(self) -> WorkerQuerySet:
        """Workers whose supervisor beat within ``CQ_WORKER_TIMEOUT``, by the database's clock."""
        return self.filter(stopped__isnull=True, last_heartbeat__gte=Now() - timedelta(seconds=settings.WORKER_TIMEOUT))


class Worker(models.Model):
    """A worker process, as its supervisor last reported it (every ``CQ_HEARTBEAT_INTERVAL`` s), by
    the database's clock. Each start of a process is a new row: a restarted container that reuses
    a pid is still a new worker."""

    name = models.CharField(max_length=255, unique=True, help_text="host:pid:incarnation, unique to each start")
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    queues = models.JSONField(default=list)
    functions = models.JSONField(default=list, blank=True, help_text="The task functions it runs, aliases included.")
    started = models.DateTimeField(default=timezone.now)
    last_heartbeat = models.DateTimeField(default=timezone.now, db_index=True)
    stopped = models.DateTimeField(null=True, blank=True)
    current_task = models.ForeignKey(TASK_MODEL, models.SET_NULL, null=True, blank=True, related_name="+")
    processed = models.PositiveIntegerField(default=0, help_text="Tasks run since it started.")
    memory = models.PositiveBigIntegerField(null=True, blank=True,
                                            help_text="Resident memory in bytes, as its supervisor last read it.")
    terminate_task = models.UUIDField(null=True, blank=True, help_text="Kill the process if it runs this task.")

    objects = WorkerQuerySet.as_manager()

    def __str__(self) -> str:
        return self.name

    @property
    def alive(self) -> bool:
        cutoff = timezone.now() - timedelta(seconds=settings.WORKER_TIMEOUT)
        return self.stopped is None and self.last_heartbeat >= cutoff


class RateLimit(models.Model):
    """When tasks of one rate-limited function last started, and the latest start promised to a
    waiting one (``@task(rate_limit=...)``; see ``cq.engine.limits``). One small row per function."""

    key = models.CharField(max_length=255, primary_key=True, help_text="The task function's name.")
    last_start = models.DateTimeField()
    booked_until = models.DateTimeField(help_text="The latest start time given to a task that waits.")

    def __str__(self) -> str:
        return self.key


class QueueSample(models.Model):
    """One queue at one minute, as the scheduler's leader saw it (for the queues page's charts of
    the last hour): how many tasks waited, how long the oldest had, how many ran, how many finished
    in that minute. Kept a day."""

    queue = models.CharField(max_length=50)
    minute = models.DateTimeField()
    queued = models.PositiveIntegerField(default=0)
    oldest_wait = models.FloatField(null=True, blank=True)
    running = models.PositiveIntegerField(default=0)
    finished = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["minute", "queue"], name="cq_queuesample_minute_queue")]

    def __str__(self) -> str:
        return f"{self.queue} at {self.minute:%H:%M}"


class Queue(models.Model):
    """An operator's controls of one queue, read by every worker within a second
    (``cq.engine.queues``). A queue without a row runs freely: rows exist only for queues someone
    paused or capped, and stay to say who did it last."""

    name = models.CharField(max_length=50, primary_key=True, validators=[validate_queue_name])
    paused = models.BooleanField(default=False, help_text="Its tasks are accepted and wait, QUEUED; none starts.")
    concurrency = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="Most of its tasks running at once, across all workers (empty: no cap).")
    changed = models.DateTimeField(default=timezone.now)
    changed_by = models.CharField(max_length=255, blank=True, help_text="Who last changed it.")

    def __str__(self) -> str:
        return self.name


class Tally(models.Model):
    """What the metrics count of one task function's finishes in one final status, kept so that
    the counters never go down when finished rows are deleted (``cq.metrics.tally``). The
    buckets are histograms' counts by upper bound in seconds (``{"0.5": 3}``), not cumulative."""

    func_name = models.CharField(max_length=255)
    status = models.CharField(max_length=1)
    finished = models.PositiveBigIntegerField(default=0, help_text="Tasks that ended so.")
    run_count = models.PositiveBigIntegerField(default=0, help_text="Of those, tasks that were started.")
    run_sum = models.FloatField(default=0.0, help_text="Seconds from their last start to their end.")
    run_buckets = models.JSONField(default=dict)
    wait_count = models.PositiveBigIntegerField(default=0)
    wait_sum = models.FloatField(default=0.0, help_text="Seconds from when they were due to their last start.")
    wait_buckets = models.JSONField(default=dict)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["func_name", "status"], name="cq_tally_func_status")]

    def __str__(self) -> str:
        return f"{self.func_name} {self.status}"


class TallyMark(models.Model):
    """How far the tallies have counted: every task finished at or before ``counted_to`` is in
    them, and none after. One row, locked by whoever advances it."""

    counted_to = models.DateTimeField(null=True, help_text="Empty until the first count: counting starts then.")

    def __str__(self) -> str:
        return f"counted to {self.counted_to}"
