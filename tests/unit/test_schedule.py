"""Repeating tasks: scheduling, firing exactly once, coalescing, missed runs; delayed tasks."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.utils import timezone

from cq.exceptions import InvalidTask, TaskNotRegistered
from cq.models import RepeatingTask, Task, schedule_task
from cq.scheduling import firing
from cq.scheduling.scheduler import Scheduler
from tests.helpers import eventually
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def due_now(rt: RepeatingTask, ago: timedelta = timedelta(0)) -> RepeatingTask:
    RepeatingTask.objects.filter(pk=rt.pk).update(next_run=timezone.now() - ago)
    rt.refresh_from_db()
    return rt


def test_schedule_task_sets_the_next_run_from_the_crontab():
    before = timezone.now()
    rt = schedule_task(RepeatingTask, "*/5 * * * *", tasks.add, args=(1, 2), timezone="UTC")
    assert rt.func_name == "tests.testapp.tasks.add"
    assert rt.next_run > before and rt.next_run.minute % 5 == 0 and rt.next_run.second == 0
    assert rt.next_run - before <= timedelta(minutes=5)


def test_repeating_task_schedule_classmethod_and_default_time_zone(settings):
    settings.TIME_ZONE = "Asia/Tokyo"
    rt = RepeatingTask.schedule("0 9 * * *", "echo")
    assert rt.timezone == "Asia/Tokyo"
    assert rt.next_run.astimezone(timezone.get_fixed_timezone(9 * 60)).hour == 9


def test_schedule_task_refuses_bad_input_and_writes_nothing():
    count = RepeatingTask.objects.count()
    with pytest.raises(ValidationError, match="crontab"):
        schedule_task(RepeatingTask, "every day", tasks.echo)
    with pytest.raises(TaskNotRegistered):
        schedule_task(RepeatingTask, "* * * * *", "no.such.task")
    with pytest.raises(ValidationError, match="not a known time zone"):
        schedule_task(RepeatingTask, "* * * * *", tasks.echo, timezone="Nowhere/City")
    with pytest.raises(ValidationError, match="not JSON-serialisable"):
        schedule_task(RepeatingTask, "* * * * *", tasks.echo, args=[object()])
    with pytest.raises(ValidationError, match="JSON object"):
        schedule_task(RepeatingTask, "* * * * *", tasks.echo, kwargs=["not", "a", "dict"])
    # What the database or a worker could not take: refused here, not when the task fires.
    with pytest.raises(ValidationError, match="hold NaN at \\[0\\]"):
        schedule_task(RepeatingTask, "* * * * *", tasks.echo, args=[float("nan")])
    with pytest.raises(ValidationError, match="NUL character"):
        schedule_task(RepeatingTask, "* * * * *", tasks.echo, kwargs={"x": "a\x00b"})
    for ttl in (-1, 2 ** 31, 2.5):
        with pytest.raises(ValidationError, match="result_ttl= takes a whole number"):
            schedule_task(RepeatingTask, "* * * * *", tasks.echo, result_ttl=ttl)
    with pytest.raises(ValidationError, match="not a known time zone"):
        schedule_task(RepeatingTask, "* * * * *", tasks.echo, timezone="Europe/Paris\x00")
    assert RepeatingTask.objects.count() == count


def test_schedule_task_in_a_real_data_migration():
    # The test database was built by running tests/testapp's migrations, 0002 among them;
    # run that migration back and forth to see it work on the historical model.
    call_command("migrate", "testapp", "0001", verbosity=0)
    assert not RepeatingTask.objects.filter(func_name="tests.testapp.tasks.named").exists()
    call_command("migrate", "testapp", verbosity=0)
    rt = RepeatingTask.objects.get(func_name="tests.testapp.tasks.named")
    assert (rt.args, rt.timezone, rt.coalesce, rt.enabled) == (["new year"], "Europe/Paris", False, True)
    paris = rt.next_run.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris"))
    assert (paris.month, paris.day, paris.hour, paris.minute) == (1, 1, 0, 0)


def test_editing_the_crontab_reschedules_and_disabling_clears_the_next_run():
    rt = schedule_task(RepeatingTask, "0 3 * * *", tasks.echo, timezone="UTC")
    rt = RepeatingTask.objects.get(pk=rt.pk)
    rt.args = ["unchanged schedule"]
    rt.save()
    assert rt.next_run.hour == 3
    rt.crontab = "0 4 * * *"
    rt.save()
    assert rt.next_run.hour == 4
    rt.enabled = False
    rt.save()
    assert rt.next_run is None
    rt.enabled = True
    rt.save()
    assert rt.next_run.hour == 4


def test_a_due_slot_fires_once_even_when_two_schedulers_try_it(drain):
    rt = due_now(schedule_task(RepeatingTask, "* * * * *", tasks.add, args=(2, 2), coalesce=False))
    stale_copy = RepeatingTask.objects.get(pk=rt.pk)
    now = timezone.now()
    task = firing.fire(rt, now)
    assert task is not None
    assert firing.fire(stale_copy, now) is None
    drain()
    rt.refresh_from_db()
    assert (rt.last_task_id, rt.last_run) == (task.pk, now)
    assert rt.next_run > now
    assert task.wait().result == 4


def test_missed_runs_fire_once_on_restart():
    rt = due_now(schedule_task(RepeatingTask, "* * * * *", tasks.noop, coalesce=False), ago=timedelta(hours=3))
    now = timezone.now()
    Scheduler(lease=_no_lease()).tick()
    assert Task.objects.filter(func_name="tests.testapp.tasks.noop").count() == 1
    rt.refresh_from_db()
    assert now < rt.next_run <= now + timedelta(minutes=1)


def test_coalescing_task_does_not_launch_while_an_earlier_run_is_active(drain):
    rt = due_now(schedule_task(RepeatingTask, "* * * * *", tasks.noop, coalesce=True))
    first = firing.fire(rt, timezone.now())
    assert first is not None
    assert firing.fire(due_now(rt), timezone.now()) is None  # the first run is still queued
    drain()
    assert firing.fire(due_now(rt), timezone.now()) is not None
    assert Task.objects.filter(func_name="tests.testapp.tasks.noop").count() == 2


def test_submit_runs_a_repeating_task_now_and_moves_its_next_run_as_django_cq_did(drain):
    rt = schedule_task(RepeatingTask, "0 3 * * *", tasks.add, args=(2, 3), timezone="UTC", result_ttl=60)
    RepeatingTask.objects.filter(pk=rt.pk).update(next_run=timezone.now() - timedelta(days=2))  # stale
    rt.refresh_from_db()
    before = timezone.now()
    task = rt.submit()
    assert task is not None and (task.func_name, task.args, task.result_ttl) == (rt.func_name, [2, 3], 60)
    saved = RepeatingTask.objects.get(pk=rt.pk)
    assert saved.last_run >= before and saved.last_task_id == task.pk
    assert saved.next_run == rt.next_run > before  # the next 03:00 UTC after now, saved
    assert (saved.next_run.hour, saved.next_run.minute) == (3, 0) and saved.next_run - before <= timedelta(days=1)
    assert rt.submit() is None  # coalesced: the first run is still queued
    assert Task.objects.filter(func_name=rt.func_name).count() == 1
    drain()
    assert task.wait().result == 5
    rt.coalesce = False
    assert rt.submit() is not None and rt.submit() is not None  # without coalescing, every call runs
    assert Task.objects.filter(func_name=rt.func_name).count() == 3


def test_update_next_run_sets_the_next_slot_without_saving_it():
    rt = schedule_task(RepeatingTask, "30 * * * *", tasks.noop, timezone="UTC")
    RepeatingTask.objects.filter(pk=rt.pk).update(next_run=None)
    rt.refresh_from_db()
    rt.update_next_run()
    assert rt.next_run.minute == 30 and rt.next_run > timezone.now()
    assert RepeatingTask.objects.get(pk=rt.pk).next_run is None  # set, not saved (django-cq's way)


def test_delayed_task_does_not_run_before_its_time(drain):
    task = tasks.add.delay_args((1, 1), countdown=3600)
    assert drain() == 0
    task.refresh_from_db()
    assert task.status == Task.STATUS_QUEUED
    assert task.run_after - task.submitted >= timedelta(seconds=3599)
    assert firing.release_delayed(timezone.now()) == 0
    # When its time comes the scheduler rings its doorbell.
    Task.objects.filter(pk=task.pk).update(run_after=timezone.now())
    assert firing.release_delayed(timezone.now()) == 1
    assert drain() == 1
    assert task.wait().result == 2


def test_delayed_task_with_an_eta_runs_once_due_through_the_scheduler_thread(drain):
    eta = timezone.now() + timedelta(seconds=1)
    task = tasks.add.delay_args((2, 3), eta=eta)
    scheduler = Scheduler(lease=_no_lease(), interval=0.05)
    thread = threading.Thread(target=scheduler.run)
    thread.start()
    try:
        eventually(drain, 10, "the delayed task to run")
    finally:
        scheduler.stop()
        thread.join()
    task.wait()
    assert task.result == 5
    assert task.started >= eta


def test_revoking_a_delayed_task_before_it_is_due_prevents_it(drain):
    task = tasks.add.delay_args((1, 1), countdown=3600)
    task.revoke()
    Task.objects.filter(pk=task.pk).update(run_after=timezone.now())
    firing.release_delayed(timezone.now())
    assert drain() == 0
    assert task.wait().status == Task.STATUS_REVOKED


@pytest.mark.parametrize(("options", "message"), [
    ({"countdown": -1}, "0 or more"),
    ({"countdown": "soon"}, "number of seconds"),
    ({"eta": "tomorrow"}, "takes a datetime"),
    ({"countdown": 1, "eta": datetime(2030, 1, 1, tzinfo=UTC)}, "not both"),
])
def test_bad_countdown_or_eta_is_refused(options, message):
    with pytest.raises(InvalidTask, match=message):
        tasks.echo.delay_args(**options)
    assert not Task.objects.exists()


def test_naive_eta_is_read_in_the_current_time_zone(settings):
    settings.TIME_ZONE = "Europe/Paris"
    timezone.activate("Europe/Paris")
    try:
        task = tasks.echo.delay_args(eta=datetime(2030, 7, 1, 12, 0))
    finally:
        timezone.deactivate()
    assert task.run_after == datetime(2030, 7, 1, 10, 0, tzinfo=UTC)


def _no_lease():
    from cq.scheduling.lease import Lease

    return Lease(None, "")


def test_a_row_naming_an_unregistered_function_skips_its_slot_and_others_still_fire(caplog):
    broken = due_now(schedule_task(RepeatingTask, "* * * * *", tasks.noop, coalesce=False))
    RepeatingTask.objects.filter(pk=broken.pk).update(func_name="tests.gone")
    fine = due_now(schedule_task(RepeatingTask, "* * * * *", tasks.echo, coalesce=False))
    Scheduler(lease=_no_lease()).tick()
    broken.refresh_from_db()
    fine.refresh_from_db()
    assert broken.next_run > timezone.now() and broken.last_task is None
    assert fine.last_task is not None
    assert "no task function is registered as 'tests.gone'" in caplog.text


def test_a_row_with_values_cq_would_not_store_skips_its_slot_once(caplog):
    from cq.validation import MAX_DEPTH

    deep: object = 1
    for _ in range(MAX_DEPTH):
        deep = [deep]
    broken = due_now(schedule_task(RepeatingTask, "* * * * *", tasks.echo, coalesce=False))
    RepeatingTask.objects.filter(pk=broken.pk).update(args=[deep])  # around its validation
    Scheduler(lease=_no_lease()).tick()
    broken.refresh_from_db()
    assert broken.next_run > timezone.now() and broken.last_task is None
    assert not Task.objects.exists()
    assert f"The args of task 'echo' nest lists and objects deeper than {MAX_DEPTH} levels" in caplog.text
