"""Rolling deploys: aliases in the registry, a claim that takes only the functions this process
knows (the others wait, QUEUED), what a worker records of them, and the dashboard's listing of
the tasks no live worker knows. (Real processes: tests/integration/test_deploys.py.)"""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cq import registry, task
from cq.engine.transitions import claims
from cq.models import Task, Worker
from cq.transport import doorbell
from cq.workers import heartbeat
from tests.testapp import deployed, tasks
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def restored_registry():
    """Registrations made by the test are undone after it."""
    kept = dict(registry._registry), dict(registry._aliases), set(registry.unfound)
    yield
    registry._registry.clear()
    registry._registry.update(kept[0])
    registry._aliases.clear()
    registry._aliases.update(kept[1])
    registry.unfound.clear()
    registry.unfound.update(kept[2])
    registry._claimable = None


def _double(cqt, n):
    return 2 * n


def _other(cqt, n):
    return n


def test_an_alias_finds_the_function_and_rows_queued_by_it_carry_the_new_name(restored_registry):
    fn = task("tests.deploys.double", aliases=["tests.deploys.twice", "tests.old.twice"])(_double)
    assert registry.find("tests.old.twice") is fn and registry.require("tests.deploys.twice") is fn
    assert registry.name_of("tests.old.twice") == "tests.deploys.double"
    assert registry.find("tests.old.twice")(21) == 42  # a plain call, inline
    row = registry.require("tests.old.twice").delay(1)
    assert Task.objects.get(pk=row.pk).func_name == "tests.deploys.double"
    assert {"tests.deploys.double", "tests.deploys.twice", "tests.old.twice"} <= set(registry.known())
    assert "tests.old.twice" not in registry.names()  # the admin offers the names only
    # Imported again (the same function), it keeps its aliases; one dropped no longer finds it.
    task("tests.deploys.double", aliases=["tests.deploys.twice"])(_double)
    assert registry.find("tests.deploys.twice").name == "tests.deploys.double"
    assert registry.find("tests.old.twice") is None and "tests.old.twice" not in registry.known()


@pytest.mark.parametrize(("name", "aliases", "message"), [
    ("tests.deploys.other", ["tests.deploys.double"], "'tests.deploys.double' is already the name of task "
                                                       "function 'tests.deploys.double'"),
    ("tests.deploys.other", ["tests.old.twice"], "'tests.old.twice' is already an alias of task function "
                                                 "'tests.deploys.double'"),
    ("tests.old.twice", [], "'tests.old.twice' is already an alias of task function 'tests.deploys.double'"),
    ("tests.deploys.other", "tests.old.name", "aliases= takes a list of names"),
    ("tests.deploys.other", [""], "aliases= takes a list of names"),
])
def test_an_alias_that_is_another_functions_name_or_alias_is_refused_at_registration(
        restored_registry, name, aliases, message):
    task("tests.deploys.double", aliases=["tests.old.twice"])(_double)
    with pytest.raises(ImproperlyConfigured, match=message.replace("(", r"\(")):
        task(name, aliases=aliases)(_other)
    assert registry.find("tests.old.twice").name == "tests.deploys.double"
    assert registry.find(name) is None or name == "tests.old.twice"


def test_a_task_whose_function_this_worker_does_not_know_stays_queued(drain, worker):
    gone = Task.objects.create(func_name="tests.gone", status=Task.STATUS_QUEUED, submitted=timezone.now())
    doorbell.ring([gone.pk])
    drain()  # its doorbell is dropped by the claim, which does not take the row
    assert claims.claim_due(worker.name, ["default"], grace=0, limit=10) == []  # nor does the poll
    gone.refresh_from_db()
    assert (gone.status, gone.attempt, gone.worker, gone.started) == (Task.STATUS_QUEUED, 0, "", None)


def test_the_poll_steps_over_unknown_functions_to_the_known_ones_behind_them(worker):
    gone = Task.objects.create(func_name="tests.gone", status=Task.STATUS_QUEUED, submitted=timezone.now(),
                               priority=50)
    known = tasks.echo.delay(1)
    claimed = claims.claim_due(worker.name, ["default"], grace=0, limit=1)
    assert [row.pk for row in claimed] == [known.pk]
    assert Task.objects.get(pk=gone.pk).status == Task.STATUS_QUEUED


def test_a_row_queued_under_an_old_name_runs_through_the_alias(drain):
    old = Task.objects.create(func_name="tests.testapp.retired.old_name", status=Task.STATUS_QUEUED,
                              args=["x"], submitted=timezone.now())
    doorbell.ring([old.pk])
    drain()
    old.refresh_from_db()
    assert (old.status, old.result, old.attempt) == (Task.STATUS_SUCCESS, "x", 1)
    assert old.func_name == "tests.testapp.retired.old_name"  # the row keeps the name it was queued under
    assert Record.objects.filter(key="renamed:x").count() == 1
    assert registry.find(old.func_name) is deployed.renamed


def test_a_django_task_this_code_cannot_import_goes_back_to_the_queue(restored_registry, drain, worker, caplog):
    from cq.backends import FIELD, _signer

    path = "tests.testapp.not_deployed_yet.job"
    row = Task.objects.create(func_name=path, status=Task.STATUS_QUEUED, submitted=timezone.now(),
                              fields={FIELD: {"path": _signer().sign(path)}})
    doorbell.ring([row.pk])
    drain()
    row.refresh_from_db()
    # Claimed (its module might have been here), then put back: the attempt stays counted.
    assert (row.status, row.attempt, row.started) == (Task.STATUS_QUEUED, 1, None)
    assert f"has no task function {path!r}" in caplog.text
    assert path in registry.unfound
    assert claims.claim_due(worker.name, ["default"], grace=0, limit=10) == []  # this process takes it no more
    assert Task.objects.get(pk=row.pk).attempt == 1


def test_a_worker_records_the_functions_it_knows_when_it_registers_not_at_each_beat():
    me = heartbeat.Incarnation("box:1:ab", 1, ["default"])
    heartbeat.register(me)
    functions = Worker.objects.get(name="box:1:ab").functions
    assert functions == registry.known()
    assert {tasks.echo.name, "tests.testapp.retired.old_name"} <= set(functions)
    with CaptureQueriesContext(connection) as queries:
        heartbeat.beat(me)
    assert len(queries) == 1 and "functions" not in queries[0]["sql"]


@pytest.fixture
def staff(client):
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_superuser("admin", "a@b.c", "pw"))
    return client


def test_the_queues_page_lists_tasks_no_live_worker_knows(staff):
    from datetime import timedelta

    Worker.objects.create(name="new:1", host="new", pid=1, queues=["default"], functions=[tasks.echo.name])
    Worker.objects.create(name="old:2", host="old", pid=2, queues=["default"], functions=["tests.gone"],
                          last_heartbeat=timezone.now() - timedelta(hours=1))  # silent: not counted
    Worker.objects.create(name="r:3", host="r", pid=3, queues=["reports"])  # listed no functions: not judged
    tasks.echo.delay(1)
    for _ in range(3):
        Task.objects.create(func_name="tests.gone", status=Task.STATUS_QUEUED, submitted=timezone.now())
    Task.objects.create(func_name="tests.gone", status=Task.STATUS_QUEUED, queue="reports", submitted=timezone.now())
    page = staff.get("/cq/queues/").content.decode()
    assert "No worker knows these functions" in page
    listed = page.split('id="unknown-functions"')[1]
    assert '<tr data-queue="default" data-function="tests.gone">' in listed
    assert "<td>3</td>" in listed.split("</tr>")[1]
    assert 'data-function="tests.testapp.tasks.echo"' not in listed and 'data-queue="reports"' not in listed
    assert "?status=Q&amp;func_name=tests.gone" in listed
    Worker.objects.filter(name="new:1").update(functions=[tasks.echo.name, "tests.gone"])
    assert "No worker knows these functions" not in staff.get("/cq/queues/").content.decode()


def test_the_workers_page_shows_how_many_functions_each_knows_and_lists_them_on_demand(staff):
    Worker.objects.create(name="box:1", host="box", pid=1, queues=["default"], functions=["a.one", "b.two"])
    row = staff.get("/cq/workers/").content.decode().split('data-worker="box:1"')[1].split("</tr>")[0]
    assert "<details><summary>2</summary>a.one, b.two</details>" in row
