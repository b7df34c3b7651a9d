"""Unique tasks, per-key concurrency limits and rate limits (issue 6)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from cq import doorbell, execution, registry, transitions
from cq.exceptions import InvalidTask, TaskLost
from cq.models import RateLimit, Task
from cq.registry import task
from tests.helpers import eventually
from tests.test_queries import full_scans
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)


def doorbells() -> list[str]:
    """The task ids whose doorbells are waiting (taking them)."""
    return doorbell.listen(["default"], 100, 0)


def wait_until_done(ids: list, seconds: float) -> None:
    eventually(lambda: not Task.objects.filter(pk__in=ids).exclude(status__in=Task.STATUS_DONE).exists(),
               seconds, "the tasks to finish")


# -- unique tasks -------------------------------------------------------------------------------

def test_unique_key_returns_the_active_task_instead_of_queueing_a_second():
    first = tasks.echo.delay_args((1,), unique_key="invoice:42")
    second = tasks.echo.delay_args((2,), unique_key="invoice:42")
    assert second.pk == first.pk and second.args == [1]
    assert Task.objects.count() == 1
    assert doorbells() == [str(first.pk)]
    other = tasks.echo.delay_args((3,), unique_key="invoice:43")
    assert other.pk != first.pk


def test_unique_key_is_free_again_once_its_task_finished(drain):
    pending = tasks.echo.delay_args((1,), unique_key="k", submit=False)
    assert tasks.echo.delay_args((2,), unique_key="k").pk == pending.pk  # a pending task holds it too
    pending.submit()
    assert drain() == 1 and pending.wait().status == Task.STATUS_SUCCESS
    failing = tasks.failing.delay_args(unique_key="k")
    assert failing.pk != pending.pk
    assert drain() == 1 and failing.wait().status == Task.STATUS_FAILURE
    again = tasks.echo.delay_args((3,), unique_key="k")
    assert again.pk not in {pending.pk, failing.pk}
    assert again.status == Task.STATUS_QUEUED


def test_unique_key_inside_the_callers_transaction_keeps_the_transaction_usable():
    with transaction.atomic():
        first = tasks.echo.delay_args((1,), unique_key="k")
        assert tasks.echo.delay_args((2,), unique_key="k").pk == first.pk
        Record.objects.create(key="after the refused insert")
    assert Task.objects.count() == 1 and Record.objects.count() == 1
    with pytest.raises(RuntimeError), transaction.atomic():
        tasks.echo.delay_args((3,), unique_key="rolled back")
        raise RuntimeError
    assert not Task.objects.filter(unique_key="rolled back").exists()


def test_concurrent_enqueues_of_one_unique_key_make_one_task():
    threads_count, keys = 6, [f"race:{i}" for i in range(5)]
    barrier = threading.Barrier(threads_count)
    got: list[list] = [[] for _ in range(threads_count)]
    errors: list[BaseException] = []

    def enqueue(i: int) -> None:
        try:
            for key in keys:
                barrier.wait(30)  # every thread inserts this key at the same moment
                got[i].append(tasks.echo.delay_args((i,), unique_key=key).pk)
        except BaseException as error:
            errors.append(error)
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=enqueue, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    for k, key in enumerate(keys):
        rows = list(Task.objects.filter(unique_key=key).values_list("pk", flat=True))
        assert len(rows) == 1
        assert {got[i][k] for i in range(threads_count)} == {rows[0]}


def another_session_waits_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # else a transaction sees one snapshot of the stats
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
        return cursor.fetchone()[0] > 0


def test_unique_key_insert_waits_for_an_uncommitted_twin_and_returns_it():
    outcome: dict = {}

    def enqueue() -> None:
        try:
            outcome["task"] = tasks.echo.delay_args((2,), unique_key="twin")
        except BaseException as error:
            outcome["error"] = error
        finally:
            connection.close()

    thread = threading.Thread(target=enqueue)
    with transaction.atomic():
        first = tasks.echo.delay_args((1,), unique_key="twin")
        thread.start()
        # The other insert cannot be decided before this transaction ends: on PostgreSQL it waits
        # for it on the unique index; SQLite lets one transaction write at a time.
        if connection.vendor == "postgresql":
            eventually(another_session_waits_on_a_lock, 30, "the second insert to wait for the first")
    thread.join(60)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["task"].pk == first.pk
    assert Task.objects.count() == 1


def test_bad_unique_keys_are_refused_and_nothing_is_written():
    for key in (42, "", "x" * 256):
        with pytest.raises(InvalidTask, match="unique_key= takes a string"):
            tasks.echo.delay_args(unique_key=key)
    parent = tasks.echo.delay_args(submit=False)
    with pytest.raises(InvalidTask, match="for top-level tasks"):
        parent.subtask(tasks.echo, unique_key="child")
    with pytest.raises(InvalidTask, match="delay_many\\(\\) takes no unique_key"):
        tasks.echo.delay_many([(1,), (2,)], unique_key="many")
    assert list(Task.objects.values_list("pk", flat=True)) == [parent.pk]


def test_unique_key_under_cq_serial_runs_inline(settings):
    settings.CQ_SERIAL = True
    assert tasks.echo.delay_args((1,), unique_key="k").result == [1]
    assert tasks.echo.delay_args((2,), unique_key="k").result == [2]
    assert not Task.objects.exists()


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
    claimed = transitions.claim([str(first.pk), str(second.pk), str(other.pk)], "w", ["default"])
    assert [t.pk for t in claimed] == [first.pk, other.pk]
    second.refresh_from_db()
    assert (second.status, second.started) == (Task.STATUS_QUEUED, None)
    assert transitions.claim([str(second.pk)], "w", ["default"]) == []  # still full
    # When the first has run, the waiting one's doorbell rings, and it may start.
    execution.run(claimed[0])
    assert doorbells() == [str(second.pk)]
    assert [t.pk for t in transitions.claim([str(second.pk)], "w", ["default"])] == [second.pk]


def test_a_limit_of_two_lets_two_run():
    created = [tasks.two_at_a_time.delay() for _ in range(3)]
    claimed = transitions.claim([str(t.pk) for t in created], "w", ["default"])
    assert [t.pk for t in claimed] == [created[0].pk, created[1].pk]
    assert Task.objects.get(pk=created[2].pk).status == Task.STATUS_QUEUED


def test_a_lost_task_frees_its_slot_and_wakes_a_waiting_one():
    first, second = tasks.one_per_customer.delay("acme"), tasks.one_per_customer.delay("acme")
    doorbells()
    assert len(transitions.claim([str(first.pk), str(second.pk)], "w", ["default"])) == 1
    transitions.lose(first.pk, "w", TaskLost("gone"))
    assert Task.objects.get(pk=first.pk).status == Task.STATUS_LOST
    assert doorbells() == [str(second.pk)]


def test_the_database_poll_admits_waiting_tasks_too():
    first, second = tasks.one_per_customer.delay("acme"), tasks.one_per_customer.delay("acme")
    doorbells()
    due = transitions.claim_due("w", ["default"], grace=0, limit=10)
    assert [t.pk for t in due] == [first.pk]
    assert Task.objects.get(pk=second.pk).status == Task.STATUS_QUEUED


def test_a_claim_whose_admission_fails_puts_every_task_back(monkeypatch):
    limited, plain = tasks.one_per_customer.delay("acme"), tasks.echo.delay()
    doorbells()

    def broken(*args):
        raise RuntimeError("database gone")

    monkeypatch.setattr("cq.limits._put_back_if_full", broken)
    with pytest.raises(RuntimeError, match="database gone"):
        transitions.claim([str(plain.pk), str(limited.pk)], "w", ["default"])
    assert set(Task.objects.values_list("status", flat=True)) == {Task.STATUS_QUEUED}
    assert sorted(doorbells()) == sorted([str(plain.pk), str(limited.pk)])  # rung again


def test_a_failing_wake_is_logged_and_the_task_still_succeeds(monkeypatch, caplog):
    created = tasks.one_per_customer.delay("acme")
    claimed = transitions.claim([str(created.pk)], "w", ["default"])

    def broken(key):
        raise RuntimeError("redis and database gone")

    monkeypatch.setattr("cq.limits.wake", broken)
    execution.run(claimed[0])
    assert Task.objects.get(pk=created.pk).status == Task.STATUS_SUCCESS
    assert "redis and database gone" in caplog.text


def test_max_concurrency_holds_across_worker_processes(start_worker):
    # Given two worker processes whose database poll never picks up a waiting task, so that
    # only the doorbell rung as a task of the same key finishes can start the next one
    worker = start_worker("-c", "2", settings={"CQ_QUEUED_GRACE": 3600})
    try:
        # When four tasks of customer a, then four of customer b, are queued at once (without the
        # limit, the two processes would start with two of a's)
        created = tasks.one_per_customer.delay_many([(customer, 0.3) for customer in "ab" for _ in range(4)])
        wait_until_done([t.pk for t in created], 120)
    finally:
        assert worker.stop() == 0, worker.output
    # Then every one succeeded, a customer's tasks never overlapped, and the two customers' did
    done = list(Task.objects.filter(pk__in=[t.pk for t in created]))
    assert {t.status for t in done} == {Task.STATUS_SUCCESS}, [t.error for t in done]
    spans = {customer: sorted(t.result for t in done if t.args[0] == customer) for customer in "ab"}
    for customer, intervals in spans.items():
        for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False):
            assert start >= end, f"two tasks of customer {customer} ran at once: {intervals}"
    assert any(a_start < b_end and b_start < a_end for a_start, a_end in spans["a"] for b_start, b_end in spans["b"])
    assert "Traceback" not in worker.output, worker.output


# -- rate limits --------------------------------------------------------------------------------

def test_a_task_over_its_rate_waits_queued_until_the_time_booked_for_it():
    created = [tasks.once_an_hour.delay() for _ in range(3)]
    claimed = transitions.claim([str(t.pk) for t in created], "w", ["default"])
    assert [t.pk for t in claimed] == [created[0].pk]
    limit = RateLimit.objects.get(key=tasks.once_an_hour.name)
    assert limit.last_start == claimed[0].started == Task.objects.get(pk=created[0].pk).started
    second, third = (Task.objects.get(pk=t.pk) for t in created[1:])
    assert second.status == third.status == Task.STATUS_QUEUED
    hour = timedelta(hours=1)
    assert second.run_after >= limit.last_start + hour and third.run_after >= second.run_after + hour
    assert limit.booked_until == third.run_after
    # Its time has not come: the poll and a doorbell leave it alone.
    assert transitions.claim_due("w", ["default"], grace=0, limit=10) == []
    assert transitions.claim([str(second.pk)], "w", ["default"]) == []


def test_rate_limit_spaces_starts_across_worker_processes(start_worker):
    worker = start_worker("-c", "2")
    try:
        created = tasks.five_per_second.delay_many([()] * 8)
        wait_until_done([t.pk for t in created], 120)
    finally:
        assert worker.stop() == 0, worker.output
    done = list(Task.objects.filter(pk__in=[t.pk for t in created]))
    assert {t.status for t in done} == {Task.STATUS_SUCCESS}, [t.error for t in done]
    starts = sorted(t.started for t in done)
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= timedelta(seconds=0.2), gaps
    # Eight queued at once are claimed within milliseconds: some had to wait QUEUED for their turn.
    assert any(t.run_after is not None for t in done)


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
    assert registry.lookup("refused") is None


def test_good_limit_options_are_kept():
    fn = registry.get(tasks.five_per_second.name)
    assert (fn.rate_limit, fn.rate_interval, fn.limited) == ("5/s", timedelta(seconds=0.2), True)
    assert registry.get(tasks.echo.name).limited is False


# -- cost ---------------------------------------------------------------------------------------

def test_admitting_and_waking_read_no_whole_table():
    first, second = tasks.one_per_customer.delay("acme"), tasks.one_per_customer.delay("acme")
    limited = tasks.once_an_hour.delay_many([(), ()])
    doorbells()
    with CaptureQueriesContext(connection) as captured:
        claimed = transitions.claim([str(t.pk) for t in [first, second, *limited]], "w", ["default"])
        execution.run(claimed[0])
    assert len(claimed) == 2
    scans = full_scans(captured)
    assert scans == [], "\n\n".join(scans)
