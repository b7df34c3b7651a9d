"""Each queue sampled once a minute by the scheduler's leader (depth, oldest wait, running,
finished in the minute), at most once however many leaders, kept a day; and the last hour read back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from cq.models import QueueSample, Task
from cq.scheduling import sampling, sweeper
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def finish(task: Task, at, worker: str = "", status: str = Task.STATUS_SUCCESS) -> None:
    Task.objects.filter(pk=task.pk).update(status=status, started=at - timedelta(seconds=1), finished=at,
                                           worker=worker)


def samples(minute) -> dict[str, tuple]:
    return {s.queue: (s.queued, s.running, s.finished, s.oldest_wait is not None)
            for s in QueueSample.objects.filter(minute=minute)}


def test_a_sample_holds_each_queue_now_and_what_finished_in_the_minute_that_ended():
    now = timezone.now()
    minute = sampling.last_minute(now)
    assert minute == now.replace(second=0, microsecond=0) - timedelta(minutes=1)
    tasks.echo.delay_many([(1,), (2,)])
    tasks.report.delay("waits")
    running = tasks.echo.delay(3)
    Task.objects.filter(pk=running.pk).update(status=Task.STATUS_RUNNING, started=timezone.now())
    for at in (minute + timedelta(seconds=5), minute + timedelta(seconds=59)):
        finish(tasks.echo.delay("done"), at)
    finish(tasks.report.delay("done"), minute + timedelta(seconds=30), status=Task.STATUS_FAILURE)
    finish(tasks.echo.delay("before"), minute - timedelta(seconds=1))  # the minute before: not counted
    finish(tasks.echo.delay("after"), minute + timedelta(minutes=1))  # the minute now: not yet

    assert sampling.take(now) == 2
    assert samples(minute) == {"default": (2, 1, 2, True), "reports": (1, 0, 1, True)}


def test_a_minute_is_sampled_once_however_often_and_by_however_many_leaders():
    now = timezone.now()
    minute = sampling.last_minute(now)
    tasks.echo.delay(1)
    assert sampling.take(now) == 1
    tasks.echo.delay(2)
    assert sampling.take(now) == 0  # this minute has its samples: a second pass takes none
    assert sampling.take(now + timedelta(seconds=1)) == 0
    # Two leaders that both found the minute unsampled: the second's rows are dropped, not doubled.
    assert sampling.record(minute) == 1
    assert QueueSample.objects.filter(minute=minute).count() == 1
    assert samples(minute) == {"default": (1, 0, 0, True)}
    # The next minute is sampled afresh, with what waits then.
    assert sampling.take(now + timedelta(minutes=1)) == 1
    assert samples(minute + timedelta(minutes=1)) == {"default": (2, 0, 0, True)}


def test_a_queue_whose_last_task_finished_is_sampled_with_its_finishes():
    now = timezone.now()
    minute = sampling.last_minute(now)
    finish(tasks.report.delay("done"), minute + timedelta(seconds=10))
    sampling.take(now)
    assert samples(minute) == {"default": (0, 0, 0, False), "reports": (0, 0, 1, False)}


def test_samples_older_than_a_day_are_deleted_when_a_minute_is_sampled():
    now = timezone.now()
    minute = sampling.last_minute(now)
    old = QueueSample.objects.create(queue="default", minute=minute - timedelta(days=1, minutes=1))
    kept = QueueSample.objects.create(queue="default", minute=minute - timedelta(hours=23))
    sampling.take(now)
    assert set(QueueSample.objects.values_list("pk", flat=True)) >= {kept.pk}
    assert not QueueSample.objects.filter(pk=old.pk).exists()


def test_the_sweeper_samples_the_queues():
    tasks.echo.delay(1)
    assert sweeper.sweep().sampled == 1
    assert sweeper.sweep().sampled == 0
    assert QueueSample.objects.get().queued == 1


def test_the_history_gives_a_number_a_minute_a_blank_where_nobody_sampled():
    now = timezone.now()
    last = sampling.last_minute(now)
    QueueSample.objects.create(queue="default", minute=last, queued=4, finished=7, running=1, oldest_wait=2.5)
    QueueSample.objects.create(queue="reports", minute=last - timedelta(minutes=2), queued=9, finished=3)
    QueueSample.objects.create(queue="default", minute=last - timedelta(minutes=60), queued=100)  # too old
    history = sampling.history(now=now)
    assert history.start == last - timedelta(minutes=59)
    default, reports = history.of("default"), history.of("reports")
    assert default["queued"][-3:] == [0, None, 4]  # minute -2 was sampled (for reports): default had nothing
    assert default["finished"][-1] == 7 and default["oldest_wait"][-3:] == [None, None, 2.5]
    assert reports["queued"][-3:] == [9, None, 0] and reports["finished"][-3:] == [3, None, 0]
    assert default["queued"][:57] == [None] * 57 and len(default["running"]) == 60
    assert history.of("never")["queued"] == [None] * 60
    assert 100 not in default["queued"]

