"""The metrics in Prometheus's text format, built with the official ``prometheus-client`` (the
``prometheus`` extra): a collector of the tallies and gauges read from the database, on a
registry of its own for each scrape (never the process's global one, whose metrics would be this
process's only). Importing this module without the package raises ``ImproperlyConfigured``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from django.core.exceptions import ImproperlyConfigured

from ..engine.queues import Overview
from ..models import TaskStatus
from ..operating import Tally
from . import tally

try:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
    from prometheus_client.utils import floatToGoString
except ImportError as error:  # pragma: no cover - tests/unit/test_metrics_optional.py runs it in a subprocess
    raise ImproperlyConfigured(
        "cq's metrics need the prometheus-client package: pip install 'cq[prometheus]'.") from error

__all__ = ["CONTENT_TYPE_LATEST", "render"]


class Collector:
    """The metrics of one scrape, from what was read for it."""

    def __init__(self, tallies: list[Tally], gauges: Overview, counted_to: datetime | None) -> None:
        self.tallies, self.gauges, self.counted_to = tallies, gauges, counted_to

    def collect(self) -> Iterator[Metric]:
        yield from self._counters()
        yield from self._gauges()

    def _counters(self) -> Iterator[Metric]:
        finished = CounterMetricFamily("cq_tasks_finished", "Tasks that reached a final status, by task function "
                                       "and status.", labels=["function", "status"])
        run = HistogramMetricFamily("cq_task_run_seconds", "Seconds from a task's last start to its final "
                                    "status, by task function and status.", labels=["function", "status"])
        wait = HistogramMetricFamily("cq_task_wait_seconds", "Seconds a task waited from when it was due to "
                                     "its last start, by task function.", labels=["function"])
        waits: dict[str, tuple[dict[str, int], float]] = {}
        for row in self.tallies:
            labels = [row.func_name, _status(row.status)]
            finished.add_metric(labels, row.finished)
            if row.run_count:
                run.add_metric(labels, _buckets(row.run_buckets), row.run_sum)
            buckets, spent = waits.get(row.func_name, ({}, 0.0))
            for bound, n in row.wait_buckets.items():
                buckets[bound] = buckets.get(bound, 0) + n
            waits[row.func_name] = buckets, spent + row.wait_sum
        for name, (buckets, spent) in sorted(waits.items()):
            if buckets:
                wait.add_metric([name], _buckets(buckets), spent)
        counted = GaugeMetricFamily("cq_tasks_counted_to_timestamp_seconds", "The counters include every task "
                                    "finished up to this time (the database's time less CQ_METRICS_LAG).")
        if self.counted_to is not None:
            counted.add_metric([], self.counted_to.timestamp())
        return iter([finished, run, wait, counted])

    def _gauges(self) -> Iterator[Metric]:
        def family(name: str, text: str, *labels: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, text, labels=list(labels))

        depth = family("cq_queue_depth", "Tasks waiting in a queue: queued and due (queued), queued for "
                       "later (scheduled), or waiting to be retried (retry).", "queue", "status")
        oldest = family("cq_queue_oldest_wait_seconds", "Seconds the oldest due QUEUED task of a queue has "
                        "waited (0 when none waits).", "queue")
        running = family("cq_queue_running", "Tasks of a queue running now.", "queue")
        workers = family("cq_queue_workers", "Worker processes alive that take tasks from a queue.", "queue")
        paused = family("cq_queue_paused", "1 when a queue is paused, else 0.", "queue")
        cap = family("cq_queue_concurrency_limit", "Most tasks of a queue running at once across all "
                     "workers (only capped queues).", "queue")
        for name, queue in sorted(self.gauges.queues.items()):
            depth.add_metric([name, "queued"], queue.queued)
            depth.add_metric([name, "scheduled"], queue.scheduled)
            depth.add_metric([name, "retry"], queue.retry)
            oldest.add_metric([name], queue.oldest_wait or 0.0)
            running.add_metric([name], queue.running)
            workers.add_metric([name], queue.workers)
            paused.add_metric([name], 1 if queue.paused else 0)
            if queue.concurrency is not None:
                cap.add_metric([name], queue.concurrency)
        alive = family("cq_workers_alive", "Worker processes whose supervisor beat within CQ_WORKER_TIMEOUT.")
        alive.add_metric([], self.gauges.workers_alive)
        return iter([depth, oldest, running, workers, paused, cap, alive])


def render(tallies: list[Tally], gauges: Overview, counted_to: datetime | None) -> bytes:
    """The exposition of one scrape, in the format ``CONTENT_TYPE_LATEST`` names."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(tallies, gauges, counted_to))
    return generate_latest(registry)


def _buckets(counts: dict[str, int]) -> list[tuple[str, float]]:
    """A histogram's cumulative buckets, their bounds written as every Prometheus client writes them."""
    return [(floatToGoString(bound), n) for bound, n in tally.cumulative(counts)]


def _status(code: str) -> str:
    """A status's label value: its readable name, lower case (``success``, ``failure``...)."""
    try:
        return str(TaskStatus(code).label).lower()
    except ValueError:
        return code
