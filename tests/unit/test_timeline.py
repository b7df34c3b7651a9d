"""What a task's page gives its timeline (cq.web.timeline): the tree's rows with their times, and
the critical path, the tasks that decided when the top-level task finished."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from cq.canvas import chord, stages
from cq.models import Task
from cq.web import timeline as timeline_module
from cq.web.dashboard import tree_of
from cq.web.timeline import critical_path, timeline
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff(client):
    client.force_login(User.objects.create(username="staff", is_staff=True))
    return client


def finish(task, seconds):
    """Say ``task`` finished ``seconds`` after a fixed instant: the order of finishes is the test's."""
    at = timezone.now().replace(microsecond=0) + timedelta(seconds=seconds)
    Task.objects.filter(pk=task.pk).update(finished=at)
    return at


def path(top):
    top = Task.objects.get(pk=top.pk)
    return critical_path(top, [row for _depth, row in tree_of(top)])


def test_the_timeline_has_a_row_per_task_in_tree_order_with_its_times(drain):
    top = tasks.tree_with_chain.delay("times")
    drain()
    top.refresh_from_db()
    data = timeline(top, tree_of(top))
    rows = Task.objects.in_bulk()
    assert [row["depth"] for row in data["rows"]] == [0, 1, 1, 1] and data["total"] == 4
    assert data["unstarted"] == ["P", "Q", "Y"]  # drawn as waiting in the queue
    assert data["rows"][0]["id"] == str(top.pk) and data["rows"][0]["parent"] is None
    for row in data["rows"]:
        task = rows[Task._meta.pk.to_python(row["id"])]
        assert row["func_name"] == task.func_name and row["status"] == Task.STATUS_SUCCESS
        assert (row["queued"], row["started"], row["finished"]) == (
            task.submitted.isoformat(), task.started.isoformat(), task.finished.isoformat())
        assert row["queued"] <= row["started"] <= row["finished"]
    assert json.loads(json.dumps(data)) == data  # what the page's json_script carries


def test_the_critical_path_goes_through_the_subtask_that_finished_last(drain):
    top = tasks.fan_out.delay(3, "fan")
    drain()
    first, second, third = top.subtasks.order_by("created")
    for seconds, child in enumerate([first, third, second]):
        finish(child, seconds)
    assert path(top) == [top.pk, second.pk]
    finish(first, 10)
    assert path(top) == [top.pk, first.pk]


def test_the_critical_path_takes_the_tasks_chained_before_the_last_one(drain):
    top = tasks.tree_with_chain.delay("chain")  # subtasks: c, a, and b chained after a
    drain()
    c, a = top.subtasks.filter(previous=None).order_by("created")
    b = top.subtasks.get(previous=a)
    finish(a, 1), finish(c, 2), finish(b, 3)
    assert path(top) == [top.pk, a.pk, b.pk]
    finish(c, 4)  # c alone decided it: a and b finished earlier
    assert path(top) == [top.pk, c.pk]


def test_the_critical_path_of_a_chord_takes_its_header_then_its_callback(drain):
    top = chord([tasks.add.s(1, 2), tasks.add.s(3, 4)])(tasks.echo.s())
    drain()
    header = top.subtasks.get(func_name="cq.group")
    callback = top.subtasks.get(func_name="echo")
    slow, quick = header.subtasks.order_by("created")
    finish(quick, 1), finish(slow, 2), finish(header, 2), finish(callback, 3)
    assert path(top) == [top.pk, header.pk, slow.pk, callback.pk]


def test_the_critical_path_of_a_pipeline_takes_every_stage_up_to_the_last(drain):
    top = stages([(tasks.pipeline_step.s("extract"), 2), (tasks.pipeline_step.s("load"), 1)],
                 params={"last": "start"}).delay()
    drain()
    first, second = top.subtasks.order_by("created")
    finish(first, 1), finish(second, 2)
    (step_one,), (step_two,) = first.subtasks.all(), second.subtasks.all()
    assert path(top) == [top.pk, first.pk, step_one.pk, second.pk, step_two.pk]


def test_while_the_tree_runs_the_critical_path_leads_to_what_it_still_waits_for(drain):
    top = tasks.fan_out.delay(3, "running")
    drain()
    children = list(top.subtasks.order_by("created"))
    for seconds, child in enumerate(children):
        finish(child, 10 + seconds)
    Task.objects.filter(pk=children[0].pk).update(status=Task.STATUS_RUNNING, finished=None)
    Task.objects.filter(pk=top.pk).update(status=Task.STATUS_WAITING, finished=None)
    assert path(top) == [top.pk, children[0].pk]


def test_a_task_page_carries_its_timeline_and_gives_it_again_as_json(staff, drain):
    top = tasks.fan_out.delay(2, "page")
    drain()
    page = staff.get(f"/cq/tasks/{top.pk}/").content.decode()
    assert '<script id="timeline-data" type="application/json">' in page and 'id="timeline"' in page
    assert "cq/timeline.js" in page
    again = staff.get(f"/cq/tasks/{top.pk}/?timeline")
    assert again["Content-Type"] == "application/json"
    data = again.json()
    assert len(data["rows"]) == 3 and data["critical"][0] == str(top.pk) and len(data["critical"]) == 2
    child = top.subtasks.first()
    alone = staff.get(f"/cq/tasks/{child.pk}/?timeline").json()  # a subtask's page: its own bar
    assert [row["id"] for row in alone["rows"]] == [str(child.pk)] and alone["critical"] == [str(child.pk)]


def test_a_huge_tree_draws_its_first_rows_and_still_finds_its_critical_path(drain, monkeypatch):
    monkeypatch.setattr(timeline_module, "ROWS", 3)
    top = tasks.fan_out.delay(5, "huge")
    drain()
    last = top.subtasks.order_by("created").last()
    finish(last, 5)
    top.refresh_from_db()
    data = timeline(top, tree_of(top))
    assert len(data["rows"]) == 3 and data["total"] == 6
    assert data["critical"] == [str(top.pk), str(last.pk)]  # found beyond the rows drawn
