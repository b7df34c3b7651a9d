"""The sweeper: what no single worker can see. It runs in the scheduler's
leader every ``CQ_SWEEP_INTERVAL`` seconds (and on demand from
``cq_check_lost`` and ``cq_maintenance``).

- A RUNNING task whose worker stopped beating for ``CQ_WORKER_TIMEOUT``
  seconds becomes LOST (or is retried, with ``@task(retry_on_lost=True)``),
  and its waiting parent ends INCOMPLETE. Both the heartbeats and the cutoff
  are the database's time, so a sweeper whose clock is ahead finds nothing
  it should not; and the LOST write is fenced on the run's attempt.
- Finished top-level tasks past their ``result_expiry`` (set when they finished, by their
  ``result_ttl`` or the retention rules, ``cq.retention``) are deleted with their trees, in
  batches of bounded size, each its own transaction, for at most ``PRUNE_BUDGET`` seconds a
  pass (``cq.scheduling.pruning``).
- Rows of workers stopped or silent for a day are deleted.
- Each queue is sampled once a minute for the queues page's charts (``cq.scheduling.sampling``),
  and samples older than a day are deleted.
- The metrics' tallies count the tasks finished since their last count (``cq.metrics.tally``),
  before expired rows go; a row they have not counted yet is not deleted.

QUEUED tasks whose doorbell was lost need no sweeping: every worker picks them
up from the database after ``CQ_QUEUED_GRACE`` seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.db.models import Q
from django.db.models.functions import Now

from ..conf import settings
from ..engine.transitions import outcomes
from ..exceptions import TaskLost
from ..metrics import tally
from ..models import TaskStatus, Worker, get_task_model
from . import pruning, sampling

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

logger = logging.getLogger("cq.sweeper")  # its name before cq's subpackages: LOGGING settings use it

BATCH = 1000
#: Seconds a pass may spend deleting expired tasks: the scheduler's leader runs the sweeper
#: between firings, so a backlog of millions is worked off over many passes, never in one.
PRUNE_BUDGET = 2.0


@dataclass
class Swept:
    lost: int = 0
    expired: int = 0
    workers: int = 0
    counted: int = 0
    sampled: int = 0


def sweep(now: datetime | None = None) -> Swept:
    lost = find_lost()
    counted = tally.advance()
    swept = Swept(lost=lost, expired=delete_expired(now), workers=prune_workers(now), counted=counted)
    swept.sampled = sampling.take()  # last: a chart's minute matters less than the steps above
    return swept


def find_lost() -> int:
    """Mark LOST the RUNNING tasks of workers that stopped beating; returns how many."""
    cutoff = Now() - timedelta(seconds=settings.WORKER_TIMEOUT)
    alive = Worker.objects.alive().values("name")
    # A task started less than a timeout ago may belong to a worker that has not beaten yet.
    stale = Task.objects.filter(status=TaskStatus.RUNNING, started__lt=cutoff).exclude(worker__in=alive)
    found = list(stale.values_list("pk", "worker", "attempt")[:BATCH])
    lost = 0
    for pk, worker, attempt in found:
        error = TaskLost(f"Worker {worker or '(unknown)'} stopped while running it "
                         f"(no heartbeat for {settings.WORKER_TIMEOUT:.0f} s).")
        if outcomes.lose(pk, worker, error, attempt=attempt):
            logger.warning("Task %s is lost: its worker %s stopped beating.", pk, worker or "(unknown)")
            lost += 1
    return lost


def delete_expired(now: datetime | Now | None = None) -> int:
    """Delete finished top-level tasks whose results expired, with their trees, batch after batch
    for at most ``PRUNE_BUDGET`` seconds; returns how many rows went."""
    return pruning.prune(now, budget=PRUNE_BUDGET).rows


def prune_workers(now: datetime | Now | None = None) -> int:
    now = now or Now()
    day_ago = now - timedelta(days=1)
    deleted, _ = Worker.objects.filter(Q(stopped__lt=day_ago) | Q(last_heartbeat__lt=day_ago)).delete()
    return deleted
