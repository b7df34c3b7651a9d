"""The metrics' tallies (cq.metrics.tally): every finished task counted once, even when its row
is deleted before a scrape, and even when its finish commits after a count began."""

from __future__ import annotations

import math
import threading
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from cq.metrics import tally
from cq.models import Task, TaskStatus
from cq.operating import Tally, TallyMark
from cq.scheduling import sweeper
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def finished_task(ago: timedelta, status: str = TaskStatus.SUCCESS, ran: float = 2.0, waited: float = 0.3,
                  func_name: str = "tests.testapp.tasks.add", **fields) -> Task:
    """A task that ended ``ago`` (by this host's clock, which is the test database's), after
    ``waited`` seconds in its queue and ``ran`` seconds running."""
    finished = timezone.now() - ago
    started = finished - timedelta(seconds=ran)
    return Task.objects.create(func_name=func_name, status=status, finished=finished, started=started,
                               submitted=started - timedelta(seconds=waited), **fields)


def counting_since(ago: timedelta) -> None:
    TallyMark.objects.create(pk=tally.MARK, counted_to=timezone.now() - ago)


def the_tally(status: str = TaskStatus.SUCCESS, func_name: str = "tests.testapp.tasks.add") -> Tally:
    return Tally.objects.get(func_name=func_name, status=status)


def test_a_task_is_counted_once_when_the_tally_advances_twice():
    counting_since(timedelta(hours=1))
    finished_task(timedelta(minutes=30), ran=2.0, waited=0.3)
    assert tally.advance() == 1
    assert tally.advance() == 0
    counted = the_tally()
    assert (counted.finished, counted.run_count, counted.wait_count) == (1, 1, 1)
    assert counted.run_sum == pytest.approx(2.0)
    assert counted.wait_sum == pytest.approx(0.3)
    assert counted.run_buckets == {"2.5": 1}
    assert counted.wait_buckets == {"0.5": 1}


def test_a_task_finished_then_deleted_is_still_counted():
    counting_since(timedelta(hours=1))
    task = finished_task(timedelta(minutes=30))
    tally.advance()
    task.delete()
    assert tally.advance() == 0
    assert the_tally().finished == 1


def test_the_sweeper_counts_an_expired_task_before_it_deletes_it():
    counting_since(timedelta(hours=1))
    expired = finished_task(timedelta(minutes=30), result_expiry=timezone.now() - timedelta(minutes=1))
    swept = sweeper.sweep()
    assert (swept.counted, swept.expired) == (1, 1)
    assert not Task.objects.filter(pk=expired.pk).exists()
    assert the_tally().finished == 1


def test_the_sweeper_keeps_an_expired_task_the_tally_has_not_counted_yet(settings):
    settings.CQ_METRICS_LAG = 60
    counting_since(timedelta(hours=1))
    recent = finished_task(timedelta(seconds=5), result_expiry=timezone.now() - timedelta(seconds=1))
    assert sweeper.sweep().expired == 0
    settings.CQ_METRICS_LAG = 0
    assert sweeper.sweep().expired == 1
    assert not Task.objects.filter(pk=recent.pk).exists()
    assert the_tally().finished == 1


def test_a_finish_committed_after_a_count_within_the_lag_is_counted_by_the_next(settings):
    # Given a count that ran now, with a lag of 10 s
    settings.CQ_METRICS_LAG = 10
    counting_since(timedelta(hours=1))
    assert tally.advance() == 0
    mark = tally.counted_to()
    # When a task stamped finished 5 s before that count commits only after it
    late = finished_task(timedelta(0))
    Task.objects.filter(pk=late.pk).update(finished=mark + timedelta(seconds=5))
    # Then a later count (here: once the lag has passed) counts it
    settings.CQ_METRICS_LAG = 0
    assert tally.advance() == 1
    assert the_tally().finished == 1


def test_counting_starts_at_the_first_scrape_and_the_sweeper_does_not_start_it():
    finished_task(timedelta(minutes=30))
    assert tally.advance() == 0
    assert not TallyMark.objects.exists()
    assert tally.advance(start=True) == 0  # what finished before counting started is not counted
    assert tally.counted_to() is not None
    assert not Tally.objects.exists()


def test_each_final_status_is_counted_apart_and_a_task_never_started_has_no_times():
    counting_since(timedelta(hours=1))
    finished_task(timedelta(minutes=3), ran=0.001)
    finished_task(timedelta(minutes=2), status=TaskStatus.FAILURE, ran=4000)
    revoked = finished_task(timedelta(minutes=1), status=TaskStatus.REVOKED)
    Task.objects.filter(pk=revoked.pk).update(started=None)
    assert tally.advance() == 3
    assert the_tally().run_buckets == {"0.005": 1}
    assert the_tally(TaskStatus.FAILURE).run_buckets == {"7200": 1}
    never_ran = the_tally(TaskStatus.REVOKED)
    assert (never_ran.finished, never_ran.run_count, never_ran.run_sum, never_ran.run_buckets) == (1, 0, 0.0, {})


def test_the_wait_of_a_delayed_task_counts_from_when_it_was_due():
    counting_since(timedelta(hours=1))
    task = finished_task(timedelta(minutes=30), waited=3600)
    Task.objects.filter(pk=task.pk).update(run_after=task.started - timedelta(seconds=0.02))
    tally.advance()
    assert the_tally().wait_sum == pytest.approx(0.02)
    assert the_tally().wait_buckets == {"0.025": 1}


def test_a_long_backlog_is_counted_in_chunks_each_once(monkeypatch):
    monkeypatch.setattr(tally, "CHUNK", 3)
    counting_since(timedelta(hours=1))
    stamp = timezone.now() - timedelta(minutes=30)
    Task.objects.bulk_create([Task(func_name="tests.testapp.tasks.add", status=TaskStatus.SUCCESS, finished=stamp,
                                   started=stamp, submitted=stamp) for _ in range(4)])  # one batch's stamp
    for minutes in range(7):
        finished_task(timedelta(minutes=20 - minutes))
    assert tally.advance(rounds=1) == 4  # the chunk's cut is a time: the four stamped alike go together
    assert tally.advance() == 7
    assert the_tally().finished == 11


def test_the_cumulative_buckets_never_go_down_when_the_bounds_change():
    buckets = {"0.5": 2, "3": 1, "+Inf": 4}  # "3" was a bound once
    assert tally.cumulative(buckets, bounds=(0.1, 1, 5)) == [(0.1, 0), (1, 2), (5, 3), (math.inf, 7)]


def test_two_scrapers_counting_at_once_count_each_task_once():
    counting_since(timedelta(hours=1))
    for minutes in range(50):
        finished_task(timedelta(minutes=55 - minutes))
    results: list[int] = []
    gate = threading.Barrier(4)

    def count() -> None:
        try:
            gate.wait()
            results.append(tally.advance())
        finally:
            connections.close_all()

    threads = [threading.Thread(target=count) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [0, 0, 0, 50]
    assert the_tally().finished == 50


@pytest.mark.custom_model
def test_the_tally_counts_the_projects_own_task_model(owned, drain):
    # Given counting has started, when tasks of the project's model run
    tally.advance(start=True)
    TallyMark.objects.filter(pk=tally.MARK).update(counted_to=timezone.now() - timedelta(hours=1))
    tasks.add.delay(1, 2)
    tasks.failing.delay()
    drain()
    # Then, the lag passed, each is counted by function and status
    owned.objects.update(finished=timezone.now() - timedelta(minutes=1))
    assert tally.advance() == 2
    assert the_tally().finished == 1
    assert the_tally(TaskStatus.FAILURE, func_name="tests.testapp.tasks.failing").finished == 1
