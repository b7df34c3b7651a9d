"""The counters of finished tasks: per task function and final status, how many, and histograms
of how long they ran and waited, kept in ``Tally`` rows (cq.operating).

Counting finished rows at scrape time would be wrong: rows are deleted when their results expire,
and a Prometheus counter must never go down. So the rows are counted once, into the tallies, by
:func:`advance`, which the sweeper calls on each pass and the metrics view on each scrape. It
counts the rows whose ``finished`` lies after the mark (``TallyMark.counted_to``) and at or
before the database's time less ``CQ_METRICS_LAG`` seconds, then moves the mark there, all in one
transaction holding the mark's row lock: two scrapers, or a scraper and the sweeper, never count a
row twice. The lag is there because ``finished`` is stamped before the transaction that writes it
commits: a row stamped just before the mark but committed after it would be missed. The sweeper
deletes only rows the tallies have counted (:func:`counted`).

Nothing is added to a task's way: the count reads the rows in bounded windows (``CHUNK`` rows),
through the partial index on ``finished``. Counting starts at the first scrape (:func:`advance`
with ``start=True``): until then no mark exists and the sweeper counts nothing.

A histogram's counts are kept per bucket, not cumulative, keyed by the bucket's upper bound in
seconds: :func:`cumulative` adds them up for any list of bounds, so changing ``BUCKETS`` later
never makes a bucket go down.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import router, transaction
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum, Value
from django.db.models.functions import Coalesce, Greatest, Now

from ..conf import settings
from ..models import DONE, get_task_model
from ..operating import Tally, TallyMark

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

#: Upper bounds of the run-time and wait-time histograms' buckets, in seconds: from a quick
#: task's milliseconds to a batch job's hours.
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
                              1800, 3600, 7200, 21600)
INF = "+Inf"
#: Most rows counted in one transaction, and most transactions in one call of :func:`advance`.
CHUNK = 10_000
ROUNDS = 20
#: The primary key of the one ``TallyMark`` row.
MARK = 1

_ZERO = Value(timedelta(0), output_field=DurationField())


def advance(*, start: bool = False, rounds: int = ROUNDS) -> int:
    """Count into the tallies the tasks finished since the last count, up to the database's time
    less ``CQ_METRICS_LAG``; returns how many. Without ``start``, nothing happens until counting
    has started (the first scrape starts it)."""
    if start:
        TallyMark.objects.get_or_create(pk=MARK)
    elif not TallyMark.objects.filter(pk=MARK).exists():
        return 0
    total = 0
    for _ in range(rounds):
        counted, caught_up = _advance_once()
        total += counted
        if caught_up:
            break
    return total


def counted() -> Q:
    """Which finished rows the tallies have counted (all, when counting has not started): the
    rows that may be deleted without the counters missing them."""
    mark = TallyMark.objects.filter(pk=MARK).values_list("counted_to", flat=True).first()
    if mark is None:
        return Q()
    return Q(finished__lte=mark) | Q(finished__isnull=True)


def counted_to() -> datetime | None:
    """Every task finished at or before this time is in the tallies, none after."""
    return TallyMark.objects.filter(pk=MARK).values_list("counted_to", flat=True).first()


def _advance_once() -> tuple[int, bool]:
    """Count one window of at most about ``CHUNK`` rows; returns how many, and whether it reached
    the lag (rather than the end of a chunk)."""
    with transaction.atomic(using=router.db_for_write(TallyMark)):
        mark = TallyMark.objects.select_for_update().annotate(now=Now()).get(pk=MARK)
        until = mark.now - timedelta(seconds=settings.METRICS_LAG)
        if mark.counted_to is None or until <= mark.counted_to:
            if mark.counted_to is None:
                mark.counted_to = until
                mark.save(update_fields=["counted_to"])
            return 0, True
        window = Task.objects.filter(finished__gt=mark.counted_to, finished__lte=until)
        # Rows stamped alike (a batch's) all fall on one side of the cut: the window ends at a
        # time, not at a row.
        cut = list(window.order_by("finished").values_list("finished", flat=True)[CHUNK - 1:CHUNK])
        caught_up = not cut
        if cut:
            until = cut[0]
            window = window.filter(finished__lte=until)
        total = _add(_aggregate(window))
        mark.counted_to = until
        mark.save(update_fields=["counted_to"])
    return total, caught_up


def _aggregate(window: Any) -> list[dict[str, Any]]:
    """Per function and final status: how many, and the run and wait times' counts, sums and
    cumulative bucket counts, computed by the database."""
    run = Greatest(ExpressionWrapper(F("finished") - F("started"), output_field=DurationField()), _ZERO)
    due = Greatest(F("submitted"), Coalesce(F("run_after"), F("submitted")))
    wait = Greatest(ExpressionWrapper(F("started") - due, output_field=DurationField()), _ZERO)
    started = Q(started__isnull=False)
    aggregates: dict[str, Any] = {
        "n": Count("pk"), "started_n": Count("pk", filter=started),
        "run_sum": Sum("run", filter=started), "wait_sum": Sum("wait", filter=started),
    }
    for i, bound in enumerate(BUCKETS):  # PostgreSQL's GREATEST skips a NULL: say ``started`` again
        aggregates[f"run_{i}"] = Count("pk", filter=started & Q(run__lte=timedelta(seconds=bound)))
        aggregates[f"wait_{i}"] = Count("pk", filter=started & Q(wait__lte=timedelta(seconds=bound)))
    rows = window.filter(status__in=DONE).annotate(run=run, wait=wait)
    return list(rows.values("func_name", "status").annotate(**aggregates).order_by())


def _add(rows: list[dict[str, Any]]) -> int:
    """Add the counts of ``rows`` to the tallies (the caller holds the mark's lock, so no one else
    writes them); returns how many tasks they counted."""
    if not rows:
        return 0
    names = {row["func_name"] for row in rows}
    existing = {(t.func_name, t.status): t for t in Tally.objects.filter(func_name__in=names)}
    changed, created = [], []
    for row in rows:
        tally = existing.get((row["func_name"], row["status"]))
        if tally is None:
            tally = Tally(func_name=row["func_name"], status=row["status"], run_buckets={}, wait_buckets={})
            created.append(tally)
        else:
            changed.append(tally)
        tally.finished += row["n"]
        for kind in ("run", "wait"):
            setattr(tally, f"{kind}_count", getattr(tally, f"{kind}_count") + row["started_n"])
            spent = row[f"{kind}_sum"]
            setattr(tally, f"{kind}_sum", getattr(tally, f"{kind}_sum") + (spent.total_seconds() if spent else 0.0))
            cumulative = [row[f"{kind}_{i}"] for i in range(len(BUCKETS))]
            _add_buckets(getattr(tally, f"{kind}_buckets"), cumulative, row["started_n"])
    Tally.objects.bulk_create(created)
    Tally.objects.bulk_update(changed, ["finished", "run_count", "run_sum", "run_buckets", "wait_count",
                                       "wait_sum", "wait_buckets"])
    return sum(row["n"] for row in rows)


def _add_buckets(buckets: dict[str, int], cumulative: Sequence[int], total: int) -> None:
    """Add to ``buckets`` (per bucket) the counts ``cumulative`` (at or below each of ``BUCKETS``)
    of ``total`` observations."""
    below = 0
    for bound, at_or_below in zip((*map(_key, BUCKETS), INF), (*cumulative, total), strict=True):
        if at_or_below - below:
            buckets[bound] = buckets.get(bound, 0) + at_or_below - below
        below = at_or_below


def cumulative(buckets: dict[str, int], bounds: Iterable[float] = BUCKETS) -> list[tuple[float, int]]:
    """The cumulative counts of ``buckets`` at each of ``bounds``, then at infinity, as Prometheus
    lists a histogram's buckets."""
    counts = sorted((float(key), n) for key, n in buckets.items())
    found = [(bound, sum(n for upper, n in counts if upper <= bound)) for bound in bounds]
    found.append((math.inf, sum(n for _, n in counts)))
    return found


def _key(bound: float) -> str:
    return format(bound, "g")
