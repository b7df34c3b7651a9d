"""The demo's job: count the primes below a bound, split across subtasks.

``count_primes`` fans out one ``count_range`` subtask per slice; once they all
succeed, the chained ``report`` adds their counts up.
"""

from __future__ import annotations

from datetime import timedelta
from math import isqrt

from django.utils import timezone

from cq import task
from cq.models import Task


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, isqrt(n) + 1))


@task
def count_range(cqt, low: int, high: int) -> int:
    found = sum(1 for n in range(low, high) if is_prime(n))
    cqt.log(f"{found} primes in [{low}, {high})")
    return found


@task
def count_primes(cqt, below: int, slices: int) -> int:
    step = -(-below // slices)
    for low in range(0, below, step):
        cqt.subtask(count_range, (low, min(low + step, below)))
    cqt.log(f"Split [0, {below}) into {slices} slices")
    return slices


@task
def report(cqt) -> dict:
    counts = list(cqt.previous.subtasks.values_list("result", flat=True))
    total = sum(counts)
    cqt.log(f"{total} primes below {cqt.previous.args[0]}")
    return {"primes": total, "slices": len(counts)}


@task
def prime_report(cqt, below: int, slices: int) -> dict:
    """The whole job as one tree: count in slices, then report; takes the report's result."""
    cqt.log(f"Counting primes below {below}")
    return cqt.subtask(count_primes, (below, slices)).chain(report)


@task
def purge_old_reports(cqt, days: int = 7) -> int:
    """Nightly (see the data migration primes/0001): delete report trees older than ``days``."""
    old = Task.objects.done(func_name=prime_report.name, top__isnull=True,
                            finished__lt=timezone.now() - timedelta(days=days))
    deleted, _ = old.delete()  # subtasks go with their top-level task
    cqt.log(f"Deleted {deleted} task rows older than {days} days")
    return deleted
