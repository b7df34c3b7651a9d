"""What the workers and queues pages show, and ``GET api/workers/``: each worker process with its
pace, its running task and its memory; each queue now, with charts of its last hour.

- A worker's *tasks per minute* are the tasks it finished in the last 60 seconds, counted over the
  partial index on ``finished`` (one query for the page, whose cost grows with the tasks finished
  in that minute, not with the table). Its *memory* is what its supervisor read at the last beat
  (``cq.workers.heartbeat``); its running task's *elapsed* time is counted from the task's
  ``started`` (and ticks on the page: ``static/cq/fleet.js``).
- A queue's row is :func:`cq.engine.queues.overview` (its state now, oldest wait included) with
  the minute samples of its last hour (``cq.scheduling.sampling``): how many tasks waited, and how
  many finished, each minute. The charts are drawn here as small SVGs, so a page read again
  (``dashboard.js``) brings them up to date with no script of their own.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db.models import Count
from django.db.models.functions import Now
from django.http import HttpRequest
from django.utils import timezone

from ..conf import settings
from ..engine import queues
from ..models import Worker, get_task_model
from ..scheduling import sampling
from .api import Refused, endpoint

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

#: Most workers a page or an answer lists: the live ones first, then the latest to stop.
LIMIT = 100
#: A chart's size in the SVG's units: a minute's bar is WIDTH / 60 wide.
WIDTH, HEIGHT = 120, 24
ZERO = 0.6


def workers(limit: int = LIMIT) -> list[dict[str, Any]]:
    """The worker processes, the live first, each as ``{"worker": row, "alive", "age" (seconds
    since its last beat), "per_minute", "task"}``, where ``task`` is the one it runs (``id``,
    ``func_name``, ``started``, ``elapsed`` seconds) or ``None``. Three queries in all."""
    now = timezone.now()
    found = list(Worker.objects.order_by("stopped", "-last_heartbeat")[:limit])
    names = [worker.name for worker in found]
    paces = dict(Task._default_manager.filter(finished__gte=Now() - timedelta(minutes=1), worker__in=names)
                 .values_list("worker").annotate(n=Count("pk")).order_by())
    running = {row["pk"]: row for row in Task._default_manager.filter(
        pk__in=[worker.current_task_id for worker in found if worker.current_task_id]).values(
        "pk", "func_name", "started")}
    rows = []
    for worker in found:
        age = (now - worker.last_heartbeat).total_seconds()
        task = running.get(worker.current_task_id)
        rows.append({"worker": worker, "age": age, "alive": worker.stopped is None and age <= settings.WORKER_TIMEOUT,
                     "per_minute": paces.get(worker.name, 0), "task": task and _running(task, now)})
    return rows


def _running(task: dict[str, Any], now: datetime) -> dict[str, Any]:
    started = task["started"]
    elapsed = None if started is None else max((now - started).total_seconds(), 0.0)
    return {"id": str(task["pk"]), "func_name": task["func_name"], "started": started, "elapsed": elapsed,
            "elapsed_text": "" if elapsed is None else duration(elapsed)}


def duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 07 s"``, ``"2 h 05 min"``: as ``static/cq/fleet.js`` writes it when it ticks."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def worker_json(row: dict[str, Any]) -> dict[str, Any]:
    worker, task = row["worker"], row["task"]
    return {
        "name": worker.name, "host": worker.host, "pid": worker.pid, "queues": worker.queues,
        "alive": row["alive"], "started": worker.started.isoformat(),
        "stopped": worker.stopped and worker.stopped.isoformat(),
        "last_heartbeat": worker.last_heartbeat.isoformat(), "processed": worker.processed,
        "tasks_per_minute": row["per_minute"], "memory": worker.memory,
        "current_task": task and {"id": task["id"], "func_name": task["func_name"], "elapsed": task["elapsed"],
                                  "started": task["started"] and task["started"].isoformat()},
    }


@endpoint("GET")
def worker_list(request: HttpRequest) -> dict[str, Any]:
    if not request.user.is_staff:
        raise Refused(403, "forbidden", "Listing workers takes staff.")
    return {"workers": [worker_json(row) for row in workers()]}


def queue_rows() -> list[dict[str, Any]]:
    """Each queue as :func:`cq.engine.queues.overview` has it, with ``last_hour`` (its samples of the
    last hour, as the JSON API gives them) and the charts ``depth`` and ``throughput``."""
    history = sampling.history()
    rows = []
    for state in queues.overview().queues.values():
        samples = history.of(state.name)
        rows.append({**state.as_json(), "last_hour": samples,
                     "depth": chart(samples["queued"], history.start, "waiting"),
                     "throughput": chart(samples["finished"], history.start, "finished")})
    return rows


def chart(values: list[int | None], start: datetime, what: str) -> dict[str, Any]:
    """A sparkline of one number per minute: a bar per minute that was sampled (``x``, ``y``,
    ``height``, and ``title``, its minute and number for a tooltip), scaled to the largest.
    ``peak`` is that largest, ``last`` the latest sampled number (``None``: none)."""
    known = [value for value in values if value is not None]
    peak = max(known, default=0)
    step = WIDTH / max(len(values), 1)
    bars = []
    for index, value in enumerate(values):
        if value is None:
            continue
        # A sampled zero gets a sliver, so that it differs from a minute nobody sampled.
        height = max(HEIGHT * value / peak if peak else 0.0, ZERO)
        at = timezone.localtime(start + timedelta(minutes=index))
        bars.append({"x": round(index * step, 2), "width": round(step, 2), "y": round(HEIGHT - height, 2),
                     "height": round(height, 2), "value": value, "title": f"{at:%H:%M} {value} {what}"})
    return {"bars": bars, "peak": peak, "last": known[-1] if known else None, "what": what,
            "width": WIDTH, "height": HEIGHT}
