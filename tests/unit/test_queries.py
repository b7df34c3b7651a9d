"""How many queries the worker spends per task: counted, since the count is deterministic."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from cq.models import Task
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def statements(captured: CaptureQueriesContext) -> dict[str, int]:
    kinds = {"writes": 0, "reads": 0}
    for query in captured.captured_queries:
        verb = query["sql"].lstrip().split(None, 1)[0].upper()
        if verb in {"UPDATE", "INSERT", "DELETE"}:
            kinds["writes"] += 1
        elif verb == "SELECT":
            kinds["reads"] += 1
    return kinds


@pytest.fixture
def worker(worker, monkeypatch):
    monkeypatch.setattr("cq.workers.worker.QUICK", 1.0)  # quick, however loaded the machine running the tests
    worker.run_once(0)  # its periodic look in the database, once per CQ_POLL_INTERVAL, is done
    return worker


def test_a_no_op_task_costs_one_claim_and_one_finish(worker):
    task = tasks.noop.delay()
    with CaptureQueriesContext(connection) as captured:
        assert worker.run_once(0) == 1
    assert task.wait().status == Task.STATUS_SUCCESS
    assert statements(captured) == {"writes": 2, "reads": 0}, captured.captured_queries


def test_a_task_with_a_parent_adds_only_the_parent_settling(worker):
    parent = tasks.spawns_subtask_returns_own.delay()
    worker.run_once(0)
    with CaptureQueriesContext(connection) as captured:
        assert worker.run_once(0) == 1  # the subtask: claim, finish, lock parent, its children, parent's finish
    assert parent.wait().status == Task.STATUS_SUCCESS
    assert statements(captured) == {"writes": 3, "reads": 2}, captured.captured_queries


def test_quick_tasks_are_claimed_several_at_once(worker):
    tasks.noop.delay()
    worker.run_once(0)  # a quick task: the worker now takes several doorbells at a time
    created = tasks.noop.delay_many([()] * 5)
    with CaptureQueriesContext(connection) as captured:
        assert worker.run_once(0) == 5
    if connection.vendor == "postgresql":  # one claim for the five; one batch: one write, one commit
        assert statements(captured) == {"writes": 2, "reads": 0}, captured.captured_queries
        assert [q["sql"] for q in captured.captured_queries].count("COMMIT") == 1
    else:  # one claim for the five, five finishes
        assert statements(captured) == {"writes": 6, "reads": 0}, captured.captured_queries
    assert {t.wait().status for t in created} == {Task.STATUS_SUCCESS}


def test_a_stopping_worker_puts_back_what_it_claimed_but_did_not_start(worker):
    from cq.workers.worker import Hooks

    class StopAfterFirst(Hooks):
        def task_started(self, task):
            worker.stop()

    tasks.noop.delay()
    worker.run_once(0)
    created = tasks.noop.delay_many([()] * 4)
    worker.hooks = StopAfterFirst()
    assert worker.run_once(0) == 1
    statuses = sorted(Task.objects.filter(pk__in=[t.pk for t in created]).values_list("status", flat=True))
    assert statuses == ["Q", "Q", "Q", "S"]


def full_scans(captured: CaptureQueriesContext) -> list[str]:
    """The captured statements on the task table that would read all of it: each is explained
    with sequential scans made as dear as the database allows, so a table this small does not
    hide a missing index."""
    found = []
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET enable_seqscan = off")
        for query in captured.captured_queries:
            sql = query["sql"]
            if "cq_task" not in sql or sql.lstrip().split(None, 1)[0].upper() not in {"SELECT", "UPDATE", "DELETE"}:
                continue
            if connection.vendor == "postgresql":
                cursor.execute("EXPLAIN " + sql)
                plan = "\n".join(row[0] for row in cursor.fetchall())
                scanned = "Seq Scan on cq_task" in plan
            else:
                cursor.execute("EXPLAIN QUERY PLAN " + sql)
                plan = "\n".join(row[-1] for row in cursor.fetchall())
                scanned = any(line.strip() in {"SCAN cq_task", "SCAN U0"} for line in plan.splitlines())
            if scanned:
                found.append(f"{sql}\n{plan}")
        if connection.vendor == "postgresql":
            cursor.execute("RESET enable_seqscan")
    return found


def test_no_look_for_work_reads_the_whole_task_table(worker):
    """The task table keeps every finished task until its results expire; the worker's poll,
    the scheduler, the sweeper and the settling of trees and chains must find their few rows
    through an index, whatever the table's size."""
    from datetime import timedelta

    from django.utils import timezone

    from cq import canvas
    from cq.engine import logs
    from cq.engine.transitions import claims
    from cq.scheduling import firing, sweeper

    parent = tasks.spawns_subtask_returns_own.delay()
    tasks.noop.delay().chain(tasks.noop)
    delayed = tasks.noop.delay_args(countdown=60)
    delayed.chain(tasks.noop)
    later = timezone.now() + timedelta(days=2)
    with CaptureQueriesContext(connection) as captured:
        worker.drain()
        claims.claim_due("test-worker", ["default"], 0)
        firing.release_delayed(later)
        firing.next_due(timezone.now())
        sweeper.find_lost()
        logs.tree_logs(parent)
        canvas.revoke(delayed)
        sweeper.delete_expired(later + timedelta(days=365))
    assert list(Task.objects.values_list("func_name", "status", "result_expiry")) == []
    scans = full_scans(captured)
    assert scans == [], "\n\n".join(scans)


def test_settling_groups_chords_and_stages_reads_no_whole_table(worker):
    from cq.canvas import chord, stages

    with CaptureQueriesContext(connection) as captured:
        done = chord([tasks.add.s(i, i) for i in range(5)])(tasks.echo.s())
        failed = chord([tasks.failing.s(), tasks.noop.s()])(tasks.echo.s())
        pipeline = stages([(tasks.adds_one.s(), 2), (tasks.adds_one.s(), 1)]).delay()
        worker.drain()
    assert [t.wait().status for t in (done, failed, pipeline)] == ["S", "I", "S"]
    scans = full_scans(captured)
    assert scans == [], "\n\n".join(scans)


def test_a_group_member_costs_its_parent_one_lock_and_one_look(worker):
    from cq.canvas import group

    task = group([tasks.noop.s(), tasks.noop.s()]).delay()
    with CaptureQueriesContext(connection) as captured:
        assert worker.run_once(0) == 1  # claim, finish, lock the group, is any member unfinished?
    assert statements(captured) == {"writes": 2, "reads": 2}, captured.captured_queries
    worker.drain()
    assert task.wait().result == [None, None]


def test_the_dashboards_chart_and_queues_read_no_whole_table(worker):
    """The throughput chart counts the last hour's finished tasks, and the queues page the waiting
    ones: both through an index, however many finished tasks the table keeps."""

    from cq.engine.queues import overview
    from cq.web.dashboard import throughput

    tasks.noop.delay()
    worker.drain()
    tasks.noop.delay()
    with CaptureQueriesContext(connection) as captured:
        assert sum(sum(row) for row in throughput()["counts"].values()) == 1
        assert overview().queues["default"].queued == 1
    scans = full_scans(captured)
    assert scans == [], "\n\n".join(scans)


def test_a_lone_task_that_makes_no_query_needs_no_transaction(worker):
    # Its claim and its outcome are one statement each, in autocommit: none runs between a BEGIN
    # and a COMMIT (an atomic task's empty block costs no round trip), for an atomic task and a
    # plain one alike.
    for func in (tasks.noop, tasks.plain_noop):
        task = func.delay()
        with CaptureQueriesContext(connection) as captured:
            assert worker.run_once(0) == 1
        assert task.wait().status == Task.STATUS_SUCCESS
        assert statements(captured) == {"writes": 2, "reads": 0}, captured.captured_queries
        opened, inside = False, []
        for query in captured.captured_queries:
            if query["sql"] in ("BEGIN", "COMMIT", "ROLLBACK"):
                opened = query["sql"] == "BEGIN"
            elif opened:
                inside.append(query["sql"])
        assert inside == [], captured.captured_queries


@pytest.mark.postgres  # prepared statements are PostgreSQL's
@pytest.mark.parametrize("prepared", [True, False])
def test_the_statements_of_every_task_are_prepared_once_per_connection(worker, settings, prepared):
    settings.CQ_PREPARED_STATEMENTS = prepared
    connection.close()  # a new session: none prepared yet
    created = tasks.noop.delay_many([()] * 3) + [tasks.noop.delay() for _ in range(3)]
    while worker.run_once(0):
        pass
    assert {t.wait().status for t in created} == {Task.STATUS_SUCCESS}
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        kept = [row[0] for row in cursor.fetchall()]
    claim = [sql for sql in kept if "STATEMENT_TIMESTAMP()" in sql]
    insert = [sql for sql in kept if sql.startswith('INSERT INTO "cq_task"')]
    assert (len(claim) >= 1 and len(insert) == 1) if prepared else kept == [], kept
    assert connection.connection.prepare_threshold is None  # Django's own cursors still prepare nothing


@pytest.mark.postgres  # the kept, preparing cursor is PostgreSQL's
def test_the_kept_cursor_follows_its_connection_across_a_reconnect(worker):
    from cq.engine import statements

    first = tasks.noop.delay()
    worker.run_once(0)
    kept = statements._kept.get(connection.connection)
    assert kept is not None
    connection.close()  # as after an error, or a database restart
    second = tasks.noop.delay()
    worker.run_once(0)
    assert [first.wait().status, second.wait().status] == [Task.STATUS_SUCCESS] * 2
    assert statements._kept[connection.connection][0] is not kept[0]


@pytest.mark.parametrize("query", [{}, {"all": "1"}, {"func_name": "tests.testapp.tasks.noop"}, {"status": "F"},
                                   {"status": "Q"}, {"status": "F,Q"}, {"window": "1h"},
                                   {"func_name": "tests.testapp.tasks.noop", "all": "1", "status": "S"}, "cursor"])
def test_the_task_lists_pages_and_counts_read_through_an_index(drain, client, query):
    """The dashboard's list and the API's (cq.web.listing): each filter they offer reads its page
    and its count through an index, never the whole table (finished tasks through the indexes a
    row enters when it finishes, unfinished ones through the unfinished statuses' index)."""
    from django.contrib.auth.models import User

    client.force_login(User.objects.create(username="staff", is_staff=True))
    tasks.spawns_subtask_returns_own.delay()
    tasks.failing.delay()
    drain()
    tasks.noop.delay()
    if query == "cursor":
        from cq.web.listing import cursor_of

        query = {"cursor": cursor_of(Task.objects.latest("created"))}
    with CaptureQueriesContext(connection) as captured:
        assert client.get("/cq/api/tasks/", query).status_code == 200
        assert client.get("/cq/", query).status_code == 200
    assert sum("cq_task" in q["sql"] for q in captured.captured_queries) >= 4
    scans = full_scans(captured)
    assert scans == [], "\n\n".join(scans)
