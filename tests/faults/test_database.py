"""Database faults under real worker processes: partitions and lost replies (issue 14).

Each test starts its own ``cq_runworker`` whose PostgreSQL connections go through a
fault-injecting proxy (tests/faults/proxy.py); the test's own connection is direct, and sees
what the server really holds. Statements are matched loosely (the table, the status a statement
sets, the task's id), so that the tests keep working as the SQL of cq's core changes.
"""

from __future__ import annotations

import re
from pathlib import Path
from uuid import UUID

import pytest

from cq.models import Task, Worker
from tests.faults.proxy import Predicate
from tests.helpers import WorkerProcess, eventually
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

#: Short timings; CQ_WORKER_TIMEOUT stays long, so that no worker is ever judged dead here: each
#: fault is shorter than it, and a worker that is alive must deal with the fault itself.
FAST = {"CQ_QUEUED_GRACE": 1.0, "CQ_HEARTBEAT_INTERVAL": 0.5, "CQ_WORKER_TIMEOUT": 30.0, "CQ_SWEEP_INTERVAL": 1.0,
        "CQ_SHUTDOWN_GRACE": 5.0}
#: How long a task may take to reach its final status once the fault is over.
RECOVERY = 8.0
PARTITION = 3.0
#: What a worker's log shows when its database went away (psycopg's and libpq's words, not cq's).
DATABASE_ERRORS = ("OperationalError", "server closed the connection", "connection failed", "Connection refused")

_UPDATE_SET = re.compile(rf'\bUPDATE\s+"?{Task._meta.db_table}"?\s+SET\s+(?P<set>.*?)\s+WHERE\s', re.I | re.S)


def sets_status(letter: str) -> Predicate:
    """A statement that updates the task table and sets its status to ``letter`` (in its SET
    clause: an outcome's WHERE also names the RUNNING status)."""
    assigns = re.compile(rf"\"?status\"?\s*=\s*'{letter}'")

    def check(sql: str) -> bool:
        found = _UPDATE_SET.search(sql)
        return found is not None and assigns.search(found["set"]) is not None

    return check


def names(task_id: UUID) -> Predicate:
    """Text that holds the task's id, in either spelling (a statement's, or a reply's)."""
    return lambda text: task_id.hex in text or str(task_id) in text


def claims(sql: str) -> bool:
    return sets_status(Task.STATUS_RUNNING)(sql)


def outcome_of(task_id: UUID) -> Predicate:
    """The statement that records a task's SUCCESS."""
    success, named = sets_status(Task.STATUS_SUCCESS), names(task_id)
    return lambda sql: success(sql) and named(sql)


def final(task: Task, worker: WorkerProcess, timeout: float = RECOVERY) -> Task:
    """Wait until ``task`` has a final status and return its row; fail saying where it is stuck."""
    try:
        return eventually(lambda: Task.objects.filter(pk=task.pk, status__in=Task.STATUS_DONE).first(), timeout,
                          f"task {task.func_name} to reach a final status")
    except AssertionError as error:
        row = Task.objects.get(pk=task.pk)
        workers = list(Worker.objects.filter(stopped__isnull=True).values_list("name", "current_task"))
        raise AssertionError(f"{error}: it is still {row.get_status_display()} ({row.status}) on worker "
                             f"{row.worker!r}; live workers (name, current task): {workers}; "
                             f"runs recorded: {Record.objects.count()}\n-- worker log (end) --\n"
                             f"{tail(worker)}") from None


def tail(worker: WorkerProcess, lines: int = 25) -> str:
    return "\n".join(worker.output.splitlines()[-lines:])


def runs(key: str) -> int:
    return Record.objects.filter(key=key).count()


def alive(worker: WorkerProcess) -> None:
    """Wait until ``worker``'s process has recorded itself, so that it hears doorbells."""
    eventually(lambda: Worker.objects.filter(stopped__isnull=True).exists(), 30, "the worker process to start")
    assert worker.process.poll() is None, worker.output


# Issue 14, item 1: an outcome lost to a short database outage.

def test_task_finishing_during_a_short_partition_ends_success_once_the_database_is_back(pg_proxy, start_worker,
                                                                                       tmp_path):
    # Given a task that runs under a worker (with its scheduler and sweeper) behind the proxy
    worker = start_worker("-c", "1", settings=FAST, pg_port=pg_proxy.port)
    marker = tmp_path / "finish"
    task = tasks.finishes_on_marker.delay("outage", str(marker))
    eventually(lambda: runs("outage"), 30, "the task to start")
    assert Task.objects.get(pk=task.pk).status == Task.STATUS_RUNNING
    # When the network to the database goes for 3 s (less than CQ_WORKER_TIMEOUT), and the task
    # finishes inside that window
    assert pg_proxy.partition(PARTITION) >= 1, "the worker had no connection to cut"
    marker.touch()
    eventually(lambda: Path(f"{marker}.returned").exists(), PARTITION, "the task's function to return")
    assert pg_proxy.partitioned, "the function returned after the partition: nothing was tested"
    # Then once the database is back, the task ends SUCCESS with its result, having run once
    row = final(task, worker, timeout=PARTITION + RECOVERY)
    assert (row.status, row.result) == (Task.STATUS_SUCCESS, "outage done"), (row.status, row.error)
    assert runs("outage") == 1
    assert pg_proxy.refused, "nothing tried to reach the database during the partition"
    assert any(sign in worker.output for sign in DATABASE_ERRORS), "the worker never said it lost the database"
    assert worker.stop() == 0, worker.output


# Issue 14, item 3: an ambiguous claim, committed on the server, its reply lost.

def test_claim_through_a_doorbell_whose_reply_is_lost_still_runs_the_task_once(pg_proxy, start_worker):
    # Given a worker that takes tasks through doorbells only (its look in the database would
    # take a queued task after a minute)
    worker = start_worker("-c", "1", "--no-scheduler", settings={**FAST, "CQ_QUEUED_GRACE": 60.0},
                          pg_port=pg_proxy.port)
    alive(worker)
    task = tasks.counts_run.delay_args(("claim-lost",), submit=False)
    # When its claim of a task commits but the reply never reaches it
    pg_proxy.cut_after(claims, at_commit=True, replied=names(task.pk))
    task.submit()
    cut = pg_proxy.wait_for_cut(15)
    assert Task.objects.get(pk=task.pk).status != Task.STATUS_QUEUED, f"the cut claim did not commit: {cut}"
    # Then the task still runs, once, and succeeds
    row = final(task, worker)
    assert (row.status, row.result) == (Task.STATUS_SUCCESS, "claim-lost"), (row.status, row.error)
    assert runs("claim-lost") == 1
    assert worker.stop() == 0, worker.output


def test_claim_by_the_database_poll_whose_commit_reply_is_lost_still_runs_the_task_once(pg_proxy, start_worker,
                                                                                       private_redis):
    # Given a task whose doorbell was lost, so that only a worker's look in the database finds it
    task = tasks.counts_run.delay("poll-claim-lost")
    private_redis.client().flushall()
    # When the worker's claim of it commits but the reply to its COMMIT never reaches it
    pg_proxy.cut_after(claims, at_commit=True, replied=names(task.pk))
    worker = start_worker("-c", "1", "--no-scheduler", settings={**FAST, "CQ_QUEUED_GRACE": 0.5},
                          redis_url=private_redis.url, pg_port=pg_proxy.port)
    cut = pg_proxy.wait_for_cut(15)
    assert Task.objects.get(pk=task.pk).status != Task.STATUS_QUEUED, f"the cut claim did not commit: {cut}"
    # Then the task still runs, once, and succeeds
    row = final(task, worker)
    assert (row.status, row.result) == (Task.STATUS_SUCCESS, "poll-claim-lost"), (row.status, row.error)
    assert runs("poll-claim-lost") == 1
    assert worker.stop() == 0, worker.output


# Issue 14, item 11: a finished non-atomic task re-run because recording its outcome failed.

@pytest.mark.parametrize("at_commit", [False, True], ids=["outcome-not-committed", "commit-reply-lost"])
def test_finished_non_atomic_task_whose_outcome_write_fails_is_not_run_again(pg_proxy, start_worker, at_commit):
    # Given a non-atomic task that may be retried on any error
    worker = start_worker("-c", "1", "--no-scheduler", settings=FAST, pg_port=pg_proxy.port)
    task = tasks.counts_run_with_retries.delay_args(("non-atomic",), submit=False)
    # When its function has run, and the connection breaks as its SUCCESS is written: after the
    # UPDATE (its transaction, if any, never commits), or after that write's COMMIT
    pg_proxy.cut_after(outcome_of(task.pk), at_commit=at_commit)
    task.submit()
    pg_proxy.wait_for_cut(15)
    # Then cq's own database error is not the task's: the function is not run again, and the
    # task ends SUCCESS
    row = final(task, worker)
    assert runs("non-atomic") == 1, f"the function ran {runs('non-atomic')} times; the task ended {row.status}"
    assert (row.status, row.result) == (Task.STATUS_SUCCESS, "non-atomic"), (row.status, row.error)
    assert worker.stop() == 0, worker.output


@pytest.mark.parametrize("at_commit", [True, False], ids=["commit-reply-lost", "outcome-not-committed"])
def test_atomic_task_whose_outcome_is_cut_keeps_its_writes_if_and_only_if_it_succeeded(pg_proxy, start_worker,
                                                                                      tmp_path, at_commit):
    # Given an atomic task that may be retried on any error, and counts its runs in a file
    worker = start_worker("-c", "1", "--no-scheduler", settings=FAST, pg_port=pg_proxy.port)
    ran = tmp_path / "runs"
    task = tasks.counts_run_atomic_with_retries.delay_args(("atomic", str(ran)), submit=False)
    # When the connection breaks after its transaction's COMMIT was sent and ran (the reply lost),
    # or after the outcome's UPDATE, before the COMMIT (the transaction rolls back)
    pg_proxy.cut_after(outcome_of(task.pk), at_commit=at_commit)
    task.submit()
    cut = pg_proxy.wait_for_cut(15)
    # Then the task reaches a final status, never stays RUNNING, its function ran once, and its
    # write is kept exactly when its row says SUCCESS
    row = final(task, worker)
    assert len(ran.read_text().splitlines()) == 1, f"the function ran {ran.read_text().count('atomic')} times"
    kept = runs("atomic") == 1
    assert kept == (row.status == Task.STATUS_SUCCESS), (row.status, kept, row.error)
    if at_commit:  # the COMMIT ran on the server: the write and SUCCESS are in, together
        assert (cut.sql.upper(), row.status, row.result) == ("COMMIT", Task.STATUS_SUCCESS, "atomic")
    assert worker.stop() == 0, worker.output
