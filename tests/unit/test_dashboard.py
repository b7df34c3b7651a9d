"""The dashboard's pages: staff only, filters, a task's tree, progress, logs and actions."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from cq.models import Task
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff(client):
    client.force_login(User.objects.create(username="staff", is_staff=True))
    return client


def test_the_dashboard_is_for_staff_only(client):
    assert client.get("/cq/").status_code == 302  # to the admin's login
    client.force_login(User.objects.create(username="ann"))
    assert client.get("/cq/").status_code == 302
    task = tasks.echo.delay_args(submit=False)
    assert client.get(f"/cq/tasks/{task.pk}/").status_code == 302


def test_the_task_list_filters_by_status_function_and_id(staff, drain):
    added, failed = tasks.add.delay(1, 2), tasks.failing.delay()
    drain()

    def listed(**query):
        page = staff.get("/cq/", query).content.decode()
        return {t.func_name for t in (added, failed) if f'data-task="{t.pk}"' in page}

    assert listed() == {tasks.add.name, tasks.failing.name}
    assert listed(status="F") == {tasks.failing.name}
    assert listed(func_name=tasks.add.name) == {tasks.add.name}
    assert listed(q=str(added.pk)) == {tasks.add.name}
    assert listed(q="not an id") == set()
    assert listed(window="1h") == {tasks.add.name, tasks.failing.name}
    assert listed(since="2999-01-01T00:00") == set()
    assert listed(until="2999-01-01T00:00", status="S") == {tasks.add.name}
    assert 'src="/static/cq/dashboard.js"' in staff.get("/cq/").content.decode()


def test_a_bad_filter_is_named_on_the_page(staff):
    response = staff.get("/cq/", {"since": "last tuesday"})
    assert response.status_code == 400
    assert "since takes an ISO date and time, not &#x27;last tuesday&#x27;." in response.content.decode()
    # Times no database can store, and NUL (which PostgreSQL refuses), are bad filters too, not errors.
    for query in ({"since": "9999-12-31T23:59:59-23:00"}, {"until": "2026-02-30T00:00"}, {"func_name": "x\x00"}):
        assert staff.get("/cq/", query).status_code == 400


def test_the_throughput_chart_counts_the_last_hours_finished_tasks_by_status(staff, drain):
    from datetime import timedelta

    from django.utils import timezone

    from cq.web.dashboard import throughput

    tasks.add.delay(1, 2), tasks.add.delay(2, 3), tasks.failing.delay()
    drain()
    old = tasks.add.delay(0, 0)
    drain()
    Task.objects.filter(pk=old.pk).update(finished=timezone.now() - timedelta(hours=2))  # out of the window
    chart = throughput()
    assert chart["minutes"] == 60 and len(chart["counts"]["S"]) == 60
    assert (sum(chart["counts"]["S"]), sum(chart["counts"]["F"])) == (2, 1)
    assert chart["counts"]["S"][-1] + chart["counts"]["S"][-2] == 2  # this minute, or the last if it just turned
    page = staff.get("/cq/").content.decode()
    assert '<script id="throughput-data" type="application/json">' in page and '<svg id="throughput"' in page


def test_a_task_page_shows_its_tree_logs_progress_and_actions(staff, drain):
    top = tasks.logs_with_subtask.delay()
    drain()
    done_page = staff.get(f"/cq/tasks/{top.pk}/").content.decode()
    assert f'id="progress" data-task="{top.pk}" max="100" value="100"' in done_page  # it succeeded: a full bar
    Task.objects.filter(pk=top.pk).update(status=Task.STATUS_RUNNING, progress={
        "current": 1, "total": 4, "percent": 25.0, "message": "a quarter"})
    page = staff.get(f"/cq/tasks/{top.pk}/").content.decode()
    child = top.subtasks.get()
    assert f'<td style="padding-left: 1em"><a href="/cq/tasks/{child.pk}/"' in page  # one level down
    assert "Log from task_b." in page and "a quarter" in page and 'value="25.0"' in page
    assert f'data-events="/ws/cq/tasks/{top.pk}/"' in page
    assert f'data-api="/cq/api/tasks/{top.pk}/"' in page and 'data-action="rerun/"' in page
    assert staff.get("/cq/tasks/00000000-0000-0000-0000-000000000000/").status_code == 404
    assert staff.get("/cq/tasks/nope/").status_code == 404


def test_a_failed_task_page_shows_its_error_and_traceback(staff, drain):
    failed = tasks.failing.delay()
    drain()
    page = staff.get(f"/cq/tasks/{failed.pk}/").content.decode()
    assert "ValueError" in page and "Traceback" in page
    # Only the actions its status allows: retry and re-run, not revoke.
    assert 'data-action="retry/"' in page and 'data-action="revoke/"' not in page


def test_a_queued_task_may_be_revoked_not_retried(staff):
    page = staff.get(f"/cq/tasks/{tasks.echo.delay().pk}/").content.decode()
    assert 'data-action="revoke/"' in page and 'data-action="retry/"' not in page


def test_the_admin_and_the_dashboard_link_to_each_other(staff):
    task = tasks.echo.delay_args(submit=False)
    User.objects.filter(username="staff").update(is_superuser=True)
    assert f'href="/admin/cq/task/{task.pk}/change/"' in staff.get(f"/cq/tasks/{task.pk}/").content.decode()
    assert f'href="/cq/tasks/{task.pk}/"' in staff.get(f"/admin/cq/task/{task.pk}/change/").content.decode()


def test_the_workers_page_tells_alive_from_silent_and_what_each_runs(staff, settings):
    from datetime import timedelta

    from django.utils import timezone

    from cq.models import Worker

    running = tasks.echo.delay_args(submit=False)
    Worker.objects.create(name="box:1", host="box", pid=1, queues=["default"], current_task=running, processed=7)
    Worker.objects.create(name="box:2", host="box", pid=2, last_heartbeat=timezone.now() - timedelta(hours=1))
    page = staff.get("/cq/workers/").content.decode()
    one, two = page.split('data-worker="box:1"')[1], page.split('data-worker="box:2"')[1]
    assert ">alive<" in one.split("</tr>")[0] and f"/cq/tasks/{running.pk}/" in one.split("</tr>")[0]
    assert ">silent<" in two.split("</tr>")[0]
    assert "<td>7</td>" in one.split("</tr>")[0]


def test_the_queues_page_counts_what_waits_in_each_queue(staff):
    tasks.echo.delay_many([(1,), (2,)])
    tasks.report.delay("x")
    tasks.echo.delay_args(countdown=3600)  # not due: not counted
    rows = {row["queue"]: row for row in staff.get("/cq/queues/").context["rows"]}
    assert (rows["default"]["queued"], rows["default"]["scheduled"], rows["reports"]["queued"]) == (2, 1, 1)
    assert rows["default"]["oldest_wait"] >= 0 and not rows["default"]["paused"]
