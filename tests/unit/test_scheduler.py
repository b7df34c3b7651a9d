"""The scheduler loop: leader election over real Redis, and picking up rows quickly."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from cq.models import RepeatingTask, Task, schedule_task
from cq.scheduling.scheduler import Scheduler, default_lease
from tests.helpers import eventually
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


class FastClock:
    """A clock on which a minute passes in a second of real time."""

    def __init__(self, start: datetime, speed: float) -> None:
        self.start, self.speed, self.t0 = start, speed, time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self.t0) * self.speed)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(seconds / self.speed)


def run_in_threads(*schedulers: Scheduler) -> list[threading.Thread]:
    threads = [threading.Thread(target=s.run) for s in schedulers]
    for thread in threads:
        thread.start()
    return threads


def stop(schedulers, threads) -> None:
    for s in schedulers:
        s.stop()
    for thread in threads:
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_two_schedulers_fire_every_slot_exactly_once():
    # Given a minutely task and two schedulers sharing a clock that runs 60 times fast
    clock = FastClock(datetime(2026, 5, 4, 12, 0, 30, tzinfo=UTC), speed=60)
    rt = schedule_task(RepeatingTask, "* * * * *", tasks.noop, coalesce=False)
    first_slot = datetime(2026, 5, 4, 12, 1, tzinfo=UTC)
    RepeatingTask.objects.filter(pk=rt.pk).update(next_run=first_slot)
    schedulers = [Scheduler(clock=clock, interval=1.0, lease=default_lease()) for _ in range(2)]
    # When they run for about five cron slots
    threads = run_in_threads(*schedulers)
    try:
        eventually(lambda: Task.objects.filter(func_name="tests.testapp.tasks.noop").count() >= 5, 30,
                   "five slots to fire")
        holders = [s.lease.held for s in schedulers]
    finally:
        stop(schedulers, threads)
    # Then one of them held the lease, and every slot up to the next one fired once
    assert sorted(holders) == [False, True]
    rt.refresh_from_db()
    slots = int((rt.next_run - first_slot).total_seconds() // 60)
    assert Task.objects.filter(func_name="tests.testapp.tasks.noop").count() == slots >= 5


def test_scheduler_sees_a_row_that_came_due_within_a_second_or_two():
    scheduler = Scheduler(lease=default_lease())
    threads = run_in_threads(scheduler)
    try:
        rt = schedule_task(RepeatingTask, "0 0 * * *", tasks.echo, coalesce=False)
        RepeatingTask.objects.filter(pk=rt.pk).update(next_run=timezone.now())
        eventually(RepeatingTask.objects.filter(pk=rt.pk, last_task__isnull=False).exists, 2.5,
                   "the scheduler to fire the due row")
    finally:
        stop([scheduler], threads)


def test_a_stopped_leader_hands_over_to_another_scheduler():
    first, second = default_lease(), default_lease()
    assert first.hold() and not second.hold()
    first.release()
    assert second.hold()
    assert not first.hold()
    second.release()
