"""Per-key concurrency limits and rate limits (cq.engine.limits), in the test's own process; their
worker-process tests are in tests/integration/test_limits.py, unique keys in test_unique_keys.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cq import registry
from cq.engine import execution
from cq.engine.transitions import claims, outcomes
from cq.exceptions import InvalidTask, TaskLost
from cq.models import RateLimit, Task
from cq.registry import task
from cq.transport import doorbell
from tests.helpers import eventually
from tests.testapp import tasks
from tests.unit.test_queries import full_scans

pytestmark = pytest.mark.django_db(transaction=True)


def doorbells() -> list[str]:
    """The task ids whose doorbells are waiting (taking them)."""
    return doorbell.listen(["default"], 100, 0)


def wait_until_done(ids: list, seconds: float) -> None:
    eventually(lambda: not Task.objects.filter(pk__in=ids).exclude(status__in=Task.STATUS_DONE).exists(),
               seconds, "the tasks to finish")


# -- concurrency limits -------------------------------------------------------------------------

def test_concurrency_key_is_computed_from_the_arguments_at_enqueue():
    one = tasks.one_per_customer.delay("acme")
    many = tasks.one_per_customer.delay_many([("a",), {"customer": "b", "seconds": 0}])
    plain = tasks.two_at_a_time.delay()
    rows = dict(Task.objects.values_list("pk", "concurrency_key"))
    assert [rows[t.pk] for t in [one, *many, plain]] == ["customer:acme", "customer:a", "customer:b", "mailer"]
    assert Task.objects.get(pk=tasks.echo.delay().pk).concurrency_key is None
    # Arguments put first by submit() can change the key.
    pending = tasks.one_per_customer.delay_args(("early",), submit=False)
    assert Task.objects.get(pk=pending.pk).concurrency_key == "customer:early"
    pending.submit("late")
    assert Task.objects.get(pk=pending.pk).concurrency_key == "customer:late"


def test_a_concurrency_key_function_that_fails_is_refused_at_enqueue():
    with pytest.raises(InvalidTask, match="must give a string"):
        tasks.keyed_by_argument.delay(5)
    with pytest.raises(InvalidTask, match="raised TypeError"):
        tasks.keyed_by_argument.delay()
    with pytest.raises(InvalidTask, match="must give a string"):
        tasks.keyed_by_argument.delay_many([("ok",), (5,)])
    assert not Task.objects.exists()


def test_a_task_over_its_concurrency_limit_stays_queued_and_is_woken_when_a_slot_frees():
    first, second = tasks.one_per_customer.delay("acme"), tasks.one_per_customer.delay("acme")
    other = tasks.one_per_customer.delay("globex")
    assert len(doorbells()) == 3
    # One claim takes all three: the second of acme's waits, globex's runs beside the first.
    claimed = claims.claim([str(first.pk), str(second.pk), str(other.pk)], "w", ["default"])
    assert [t.pk for t in claimed] == [first.pk, other.pk]
    second.refresh_from_db()
    assert (second.status, second.started) == (Task.STATUS_QUEUED, None)
    assert claims.claim([str(second.pk)], "w", ["default"]) == []  # still full
    # When the first has run, the waiting one's doorbell rings, and it may start.
    execution.run(claimed[0])
    assert doorbells() == [str(second.pk)]
    assert [t.pk for t in claims.claim([str(second.pk)], "w", ["default"])] == [second.pk]


def test_a_limit_of_two_lets_two_run():
    created = [tasks.two_at_a_time.delay() for _ in range(3)]
    claimed = claims.claim([str(t.pk) for t in created], "w", ["default"])
    assert [t.pk for t in claimed] == [created[0].pk, created[1].pk]
    assert Task.objects.get(pk=created[2].pk).status == Task.STATUS_QUEUED


def test_a_lost_task_frees_its_slot_and_wakes_a_waiting_one():
    first, second = tasks.one_per_customer.delay("acme"), tasks.one_per_customer.delay("acme")
    doorbells()
    assert len(claims.claim([str(first.pk), str(second.pk)], "w", ["default"])) == 1
    outcomes.lose(first.pk, "w", TaskLost("gone"))
    assert Task.objects.get(pk=first.pk).status == Task.STATUS_LOST
    assert doorbells() == [str(second.pk)]


def test_the_database_poll_admits_waiting_tasks_too():
    first, second = tasks.one_per_customer.delay("acme"), tasks.one_per_customer.delay("acme")
    doorbells()
    due = claims.claim_due("w", ["default"], grace=0, limit=10)
    assert [t.pk for t in due] == [first.pk]
    assert Task.objects.get(pk=second.pk).status == Task.STATUS_QUEUED


def test_a_claim_whose_admission_fails_puts_every_task_back(monkeypatch):
    limited, plain = tasks.one_per_customer.delay("acme"), tasks.echo.delay()
    doorbells()

    def broken(*args):
        raise RuntimeError("database gone")

    monkeypatch.setattr("cq.engine.limits._put_back_if_full", broken)
    with pytest.raises(RuntimeError, match="database gone"):
        claims.claim([str(plain.pk), str(limited.pk)], "w", ["default"])
    assert set(Task.objects.values_list("status", flat=True)) == {Task.STATUS_QUEUED}
    assert sorted(doorbells()) == sorted([str(plain.pk), str(limited.pk)])  # rung again


def test_a_failing_wake_is_logged_and_the_task_still_succeeds(monkeypatch, caplog):
    created = tasks.one_per_customer.delay("acme")
    claimed = claims.claim([str(created.pk)], "w", ["default"])

    def broken(key):
        raise RuntimeError("redis and database gone")

    monkeypatch.setattr("cq.engine.limits.wake", broken)
    execution.run(claimed[0])
    assert Task.objects.get(pk=created.pk).status == Task.STATUS_SUCCESS
    assert "redis and database gone" in caplog.text


# -- rate limits --------------------------------------------------------------------------------

def test_a_task_over_its_rate_waits_queued_until_the_time_booked_for_it():
    created = [tasks.once_an_hour.delay() for _ in range(3)]
    claimed = claims.claim([str(t.pk) for t in created], "w", ["default"])
    assert [t.pk for t in claimed] == [created[0].pk]
    limit = RateLimit.objects.get(key=tasks.once_an_hour.name)
    assert limit.last_start == claimed[0].started == Task.objects.get(pk=created[0].pk).started
    second, third = (Task.objects.get(pk=t.pk) for t in created[1:])
    assert second.status == third.status == Task.STATUS_QUEUED
    hour = timedelta(hours=1)
    assert second.run_after >= limit.last_start + hour and third.run_after >= second.run_after + hour
    assert limit.booked_until == third.run_after
    # Its time has not come: the poll and a doorbell leave it alone.
    assert claims.claim_due("w", ["default"], grace=0, limit=10) == []
    assert claims.claim([str(second.pk)], "w", ["default"]) == []


# -- options checked when the decorator runs ----------------------------------------------------

@pytest.mark.parametrize(("options", "message"), [
    ({"rate_limit": "10/x"}, "rate_limit is a number of starts"),
    ({"rate_limit": "0/s"}, "rate_limit is a number of starts"),
    ({"rate_limit": 10}, "rate_limit is a number of starts"),
    ({"rate_limit": "ten/m"}, "rate_limit is a number of starts"),
    ({"max_concurrency": 2}, "give concurrency_key and max_concurrency together"),
    ({"concurrency_key": "k"}, "give concurrency_key and max_concurrency together"),
    ({"concurrency_key": "k", "max_concurrency": 0}, "max_concurrency is a whole number"),
    ({"concurrency_key": "k", "max_concurrency": True}, "max_concurrency is a whole number"),
    ({"concurrency_key": "k", "max_concurrency": 1.5}, "max_concurrency is a whole number"),
    ({"concurrency_key": 5, "max_concurrency": 1}, "concurrency_key is a string"),
    ({"concurrency_key": "", "max_concurrency": 1}, "concurrency_key is a string"),
])
def test_bad_limit_options_are_refused_when_the_decorator_runs(options, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        @task("refused", **options)
        def refused(cqt):
            return None
    assert registry.find("refused") is None


def test_good_limit_options_are_kept():
    fn = registry.require(tasks.five_per_second.name)
    assert (fn.rate_limit, fn.rate_interval, fn.limited) == ("5/s", timedelta(seconds=0.2), True)
    assert registry.require(tasks.echo.name).limited is False


# -- cost ---------------------------------------------------------------------------------------

def test_admitting_and_waking_read_no_whole_table():
    first, second = tasks.one_per_customer.delay("acme"), tasks.one_per_customer.delay("acme")
    limited = tasks.once_an_hour.delay_many([(), ()])
    doorbells()
    with CaptureQueriesContext(connection) as captured:
        claimed = claims.claim([str(t.pk) for t in [first, second, *limited]], "w", ["default"])
        execution.run(claimed[0])
    assert len(claimed) == 2
    scans = full_scans(captured)
    assert scans == [], "\n\n".join(scans)
