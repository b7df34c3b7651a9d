"""The task list (cq.web.listing) in the JSON API and the dashboard: keyset paging by cursor,
top-level tasks by default, wait and duration, a progress bar only where progress was reported,
the count, and the checked rows that a bulk action takes (cq.web.bulk)."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.utils import timezone

from cq.models import Task
from cq.web import api, dashboard, listing
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)

API = "/cq/api/tasks/"


@pytest.fixture
def staff(client):
    client.force_login(User.objects.create(username="staff", is_staff=True))
    return client


def finish(made, status="S", **more):
    now = timezone.now()
    Task.objects.filter(pk__in=[t.pk for t in made]).update(status=status, started=now, finished=now, **more)


def walk(client, path, **query):
    """Every id the API lists, page after page, and the pages' sizes."""
    seen, sizes, cursor = [], [], None
    while True:
        answer = client.get(path, {**query, **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200, answer.content
        page = answer.json()
        seen += [row["id"] for row in page["tasks"]]
        sizes.append(len(page["tasks"]))
        cursor = page["next"]
        if cursor is None:
            return seen, sizes


def test_pages_follow_the_cursor_and_never_repeat_or_skip_a_row_while_tasks_come_and_change(staff, monkeypatch):
    monkeypatch.setattr(api, "PAGE", 4)
    made = [tasks.noop.delay() for _ in range(11)]
    finish(made[::2])  # finished and unfinished rows: both parts of the list, merged
    tie = timezone.now() - timedelta(minutes=5)
    Task.objects.filter(pk__in=[t.pk for t in made[3:7]]).update(created=tie)  # ties broken by id
    expected = sorted(made, key=lambda t: (Task.objects.get(pk=t.pk).created, t.pk), reverse=True)
    seen, cursor, added = [], None, []
    while True:
        page = staff.get(API, {"cursor": cursor} if cursor else {}).json()
        seen += [row["id"] for row in page["tasks"]]
        # Between pages: new tasks arrive (newer than any cursor), and listed ones finish.
        added.append(tasks.noop.delay())
        finish([Task.objects.get(pk=seen[-1])], "F")
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [str(t.pk) for t in expected]
    assert len(seen) == len(set(seen)) == 11
    again, sizes = walk(staff, API)  # from the top again: the new ones first
    assert again[:len(added)] == [str(t.pk) for t in reversed(added)] and sizes == [4, 4, 4, 2]


def test_a_cursor_the_list_did_not_give_is_refused(staff):
    for bad in ("nonsense", "12.34", "1.zz" + "0" * 30, "9" * 40 + ".0" + "0" * 31):
        answer = staff.get(API, {"cursor": bad})
        assert answer.status_code == 400, bad
        assert answer.json()["error"]["code"] == "invalid_cursor"
    page = staff.get("/cq/", {"cursor": "nonsense"})
    assert page.status_code == 400 and b"is not one the list gave" in page.content


def test_top_level_tasks_by_default_and_subtasks_too_on_request(staff, drain):
    parent = tasks.spawns_subtask_returns_own.delay()
    drain()
    child = Task.objects.get(parent=parent.pk)
    assert walk(staff, API)[0] == [str(parent.pk)]
    assert set(walk(staff, API, all="1")[0]) == {str(parent.pk), str(child.pk)}
    assert walk(staff, API, q=str(child.pk))[0] == [str(child.pk)]  # a task asked for by id is found
    assert staff.get(API, {"all": "yes"}).status_code == 400
    html = staff.get("/cq/").content.decode()
    assert str(parent.pk) in html and str(child.pk) not in html
    assert str(child.pk) in staff.get("/cq/", {"all": "1"}).content.decode()


def test_wait_and_duration_columns(staff):
    done, running, queued = tasks.noop.delay(), tasks.noop.delay(), tasks.noop.delay()
    at = timezone.now() - timedelta(minutes=10)
    Task.objects.filter(pk=done.pk).update(status="S", submitted=at, started=at + timedelta(seconds=2),
                                           finished=at + timedelta(seconds=2, milliseconds=500))
    Task.objects.filter(pk=running.pk).update(status="R", submitted=at, started=at + timedelta(seconds=90))
    Task.objects.filter(pk=queued.pk).update(submitted=at)
    rows = {row["id"]: row for row in staff.get(API).json()["tasks"]}
    assert (rows[str(done.pk)]["wait"], rows[str(done.pk)]["duration"]) == (2.0, 0.5)
    assert rows[str(running.pk)]["wait"] == 90.0 and 500 < rows[str(running.pk)]["duration"] < 600  # so far
    assert rows[str(queued.pk)]["wait"] >= 600 and rows[str(queued.pk)]["duration"] is None
    html = staff.get("/cq/").content.decode()
    row = re.search(rf'<tr data-task="{done.pk}">.*?</tr>', html, re.S).group(0)
    assert '<td class="wait" data-seconds="2.0">2 s</td>' in row
    assert '<td class="duration" data-seconds="0.5">500 ms</td>' in row
    assert [listing.short(s) for s in (0.042, 3.5, 12.34, 245, 7380, 273600)] == [
        "42 ms", "3.5 s", "12.3 s", "4 min 05 s", "2 h 03 min", "3 d 4 h"]


def test_a_progress_bar_only_for_tasks_that_reported_progress(staff):
    silent, reporting = tasks.noop.delay(), tasks.noop.delay()
    Task.objects.filter(pk=reporting.pk).update(progress={"current": 1, "total": 4, "percent": 25})
    html = staff.get("/cq/").content.decode()
    row = {pk: re.search(rf'<tr data-task="{pk}">.*?</tr>', html, re.S).group(0) for pk in (silent.pk, reporting.pk)}
    assert '<progress max="100" value="25">' in row[reporting.pk]
    assert "<progress" not in row[silent.pk]


def test_the_count_is_exact_when_small_and_estimated_past_the_bound(staff, monkeypatch):
    made = [tasks.noop.delay() for _ in range(8)]
    finish(made[:5])
    assert staff.get(API).json()["count"] == {"value": 8, "exact": True, "estimated": False, "text": "8"}
    assert staff.get(API, {"status": "S"}).json()["count"]["value"] == 5
    assert 'id="task-count" data-value="8" data-exact="true">8 top-level tasks' in staff.get("/cq/").content.decode()
    monkeypatch.setattr(listing, "COUNTED", 5)
    count = staff.get(API).json()["count"]
    if connection.vendor == "postgresql":  # the planner's estimate, at least past the bound
        assert count["exact"] is False and count["estimated"] is True and count["value"] >= 6
        assert count["text"] == f"about {count['value']:,}"
    else:
        assert count == {"value": 5, "exact": False, "estimated": False, "text": "more than 5"}


@pytest.mark.postgres  # the planner's estimate is PostgreSQL's
def test_a_large_estimate_is_taken_without_counting(staff, monkeypatch):
    tasks.noop.delay()
    monkeypatch.setattr(listing, "_estimate", lambda found, statuses: 5_000_000)
    assert listing.count(Task.objects.filter(top__isnull=True), None) == listing.Count(5_000_000, False, True)


def test_ids_are_checked(staff):
    for ids, message in (("", "names no task"), ("nope", "not a task id"),
                         (",".join(str(t.pk) for t in [tasks.noop.delay()] * 1001), "at most 1000")):
        answer = staff.get(API, {"ids": ids})
        assert answer.status_code == 400 and message in answer.json()["error"]["message"], answer.content


def test_checked_rows_are_retried_in_bulk_with_a_count_first(staff, drain):
    made = [tasks.fails_first_time.delay(f"pick{i}") for i in range(4)]
    drain()
    picked = [str(t.pk) for t in made[:2]]
    dry = staff.get("/cq/api/bulk/retry/", {"ids": ",".join(picked)}).json()
    assert (dry["matched"], dry["applicable"]) == (2, 2)
    body = json.dumps({"expected": 3})
    wrong = staff.post("/cq/api/bulk/retry/?ids=" + ",".join(picked), body, content_type="application/json")
    assert wrong.status_code == 409 and wrong.json()["error"]["matched"] == 2
    # The dashboard's form: a checkbox per row (ids repeated), and an empty ids when none is checked.
    query = "ids=&" + "&".join(f"ids={pk}" for pk in picked)
    page = staff.get(f"/cq/bulk/retry/?{query}")
    assert b'data-matched="2" data-applies="2"' in page.content
    done = staff.post(f"/cq/bulk/retry/?{query}", {"expected": "2"})
    assert b'data-acted="2"' in done.content
    drain()
    assert {str(t.pk): Task.objects.get(pk=t.pk).status for t in made} == {
        picked[0]: "S", picked[1]: "S", str(made[2].pk): "F", str(made[3].pk): "F"}
    assert staff.get("/cq/bulk/retry/?ids=").status_code == 400  # nothing checked: nothing done


def test_the_dashboard_pages_by_cursor(staff, monkeypatch):
    monkeypatch.setattr(dashboard, "PAGE", 3)
    made = [tasks.noop.delay() for _ in range(5)]
    first = staff.get("/cq/", {"func_name": "tests.testapp.tasks.noop"}).content.decode()
    older = re.search(r'href="\?([^"]*cursor=[^"]*)" id="next-page"', first).group(1).replace("&amp;", "&")
    assert "func_name=" in older
    second = staff.get(f"/cq/?{older}").content.decode()
    assert [str(t.pk) in second for t in made] == [True, True, False, False, False]
    assert 'id="next-page"' not in second and 'id="first-page"' in second


def test_a_cursor_reads_back_the_row_it_names_with_or_without_time_zones(settings):
    task = tasks.noop.delay()
    created, pk = listing.read_cursor(listing.cursor_of(task))
    assert (created, pk) == (task.created, task.pk)
    settings.USE_TZ = False
    naive = Task(pk=task.pk, created=task.created.replace(tzinfo=None))
    assert listing.read_cursor(listing.cursor_of(naive)) == (naive.created, task.pk)
