"""The workers and queues pages: each queue's last hour drawn as small charts (from the samples of
cq.scheduling.sampling); each worker's memory written by its beat, its tasks a minute, and its
running task with the time it has run; ``GET api/workers/`` and the queues' last hour in the API."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cq.models import QueueSample, Task, Worker
from cq.scheduling import sampling
from cq.web import fleet
from cq.workers import heartbeat
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff(client):
    client.force_login(User.objects.create(username="staff", is_staff=True))
    return client


def finish(task: Task, at, worker: str = "", status: str = Task.STATUS_SUCCESS) -> None:
    Task.objects.filter(pk=task.pk).update(status=status, started=at - timedelta(seconds=1), finished=at,
                                           worker=worker)


def test_a_chart_draws_a_bar_for_each_sampled_minute_scaled_to_the_peak():
    start = timezone.now().replace(second=0, microsecond=0)
    chart = fleet.chart([None, 0, 5, 10], start, "finished")
    assert (chart["peak"], chart["last"]) == (10, 10)
    assert [bar["value"] for bar in chart["bars"]] == [0, 5, 10]  # none for the unsampled minute
    zero, half, full = chart["bars"]
    assert (full["height"], full["y"], half["height"]) == (fleet.HEIGHT, 0, fleet.HEIGHT / 2)
    assert 0 < zero["height"] < 1  # a sampled zero shows as a sliver
    assert full["x"] == 3 * fleet.WIDTH / 4
    assert full["title"] == f"{timezone.localtime(start + timedelta(minutes=3)):%H:%M} 10 finished"
    assert fleet.chart([None, None], start, "waiting")["bars"] == []


def test_a_beat_writes_the_workers_memory_in_its_one_update():
    me = heartbeat.Incarnation("box:1:ab", os.getpid(), ["default"])
    heartbeat.register(me)
    assert Worker.objects.get(name=me.name).memory is None
    with CaptureQueriesContext(connection) as queries:
        heartbeat.beat(me)
    assert len(queries) == 1 and queries[0]["sql"].startswith("UPDATE") and "memory" in queries[0]["sql"]
    memory = Worker.objects.get(name=me.name).memory
    assert 10 * 2**20 < memory < 8 * 2**30  # this test process: more than 10 MB, less than 8 GB
    with open(f"/proc/{os.getpid()}/status") as status:
        rss = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
    assert abs(memory - rss) < 64 * 2**20


def test_the_memory_of_a_process_that_is_gone_is_unknown():
    assert heartbeat.resident_memory(2**22 + 12345) is None  # above Linux's largest pid


def test_a_workers_tasks_a_minute_are_those_it_finished_in_the_last_60_seconds():
    now = timezone.now()
    Worker.objects.create(name="box:1:aa", host="box", pid=1)
    Worker.objects.create(name="box:2:bb", host="box", pid=2)
    for _ in range(3):
        finish(tasks.echo.delay(), now - timedelta(seconds=20), worker="box:1:aa")
    finish(tasks.echo.delay(), now - timedelta(seconds=5), worker="box:2:bb", status=Task.STATUS_FAILURE)
    for _ in range(5):
        finish(tasks.echo.delay(), now - timedelta(minutes=2), worker="box:1:aa")  # too long ago
    tasks.echo.delay()  # not finished
    paces = {row["worker"].name: row["per_minute"] for row in fleet.workers()}
    assert paces == {"box:1:aa": 3, "box:2:bb": 1}


def test_the_workers_page_shows_the_running_task_its_elapsed_time_pace_and_memory(staff):
    running = tasks.echo.delay("slow")
    Task.objects.filter(pk=running.pk).update(status=Task.STATUS_RUNNING, worker="box:1:aa",
                                              started=timezone.now() - timedelta(seconds=95))
    Worker.objects.create(name="box:1:aa", host="box", pid=1, current_task=running, processed=3,
                          memory=150 * 2**20)
    finish(tasks.echo.delay(), timezone.now() - timedelta(seconds=3), worker="box:1:aa")
    Worker.objects.create(name="box:2:bb", host="box", pid=2)  # idle, memory not read yet
    response = staff.get("/cq/workers/")
    rows = {row["worker"].name: row for row in response.context["rows"]}
    busy, idle = rows["box:1:aa"], rows["box:2:bb"]
    assert busy["task"]["func_name"] == tasks.echo.name and 95 <= busy["task"]["elapsed"] < 120
    assert (busy["per_minute"], idle["per_minute"], idle["task"]) == (1, 0, None)
    page = response.content.decode()
    row = page.split('data-worker="box:1:aa"')[1].split("</tr>")[0]
    assert f'href="/cq/tasks/{running.pk}/"' in row and f">{tasks.echo.name}</a>" in row
    assert 'class="elapsed" data-elapsed="9' in row and ">1 min 3" in row
    assert '<td class="pace">1</td>' in row and "150.0\xa0MB" in row and 'data-bytes="157286400"' in row
    assert '<td class="memory">-</td>' in page.split('data-worker="box:2:bb"')[1]
    assert 'src="/static/cq/fleet.js"' in page


def test_durations_read_as_the_page_script_writes_them():
    assert [fleet.duration(s) for s in (0, 42.9, 60, 187, 3600, 7505)] == [
        "0 s", "42 s", "1 min 00 s", "3 min 07 s", "1 h 00 min", "2 h 05 min"]


def test_the_queues_page_draws_each_queues_last_hour(staff):
    now = timezone.now()
    last = sampling.last_minute(now)
    for back, queued, finished in ((2, 5, 1), (1, 3, 4), (0, 0, 6)):
        QueueSample.objects.create(queue="default", minute=last - timedelta(minutes=back), queued=queued,
                                   finished=finished)
    tasks.echo.delay(1)
    response = staff.get("/cq/queues/")
    row = {row["queue"]: row for row in response.context["rows"]}["default"]
    assert (row["queued"], row["last_hour"]["queued"][-3:], row["last_hour"]["finished"][-3:]) == (
        1, [5, 3, 0], [1, 4, 6])
    assert (row["depth"]["peak"], row["throughput"]["peak"], len(row["throughput"]["bars"])) == (5, 6, 3)
    page = response.content.decode()
    assert page.count('<svg class="spark"') == 2
    assert f"<title>{timezone.localtime(last):%H:%M} 6 finished</title>" in page
    assert 'aria-label="waiting at each minute: peak 5, latest 0"' in page


def test_the_workers_api_lists_each_worker_for_staff(staff, client):
    running = tasks.echo.delay("slow")
    Task.objects.filter(pk=running.pk).update(status=Task.STATUS_RUNNING, started=timezone.now())
    Worker.objects.create(name="box:1:aa", host="box", pid=1, queues=["default"], current_task=running,
                          memory=2**20, processed=2)
    answer = staff.get("/cq/api/workers/").json()
    (worker,) = answer["workers"]
    assert {key: worker[key] for key in ("name", "host", "pid", "queues", "alive", "processed", "memory",
                                         "tasks_per_minute", "stopped")} == {
        "name": "box:1:aa", "host": "box", "pid": 1, "queues": ["default"], "alive": True, "processed": 2,
        "memory": 2**20, "tasks_per_minute": 0, "stopped": None}
    assert worker["current_task"]["id"] == str(running.pk) and worker["current_task"]["elapsed"] >= 0
    assert worker["current_task"]["func_name"] == tasks.echo.name and worker["current_task"]["started"]
    client.logout()
    client.force_login(User.objects.create(username="ann"))
    assert client.get("/cq/api/workers/").status_code == 403


def test_the_queues_api_gives_each_queue_its_last_hour(staff):
    last = sampling.last_minute()
    QueueSample.objects.create(queue="default", minute=last, queued=2, finished=9, running=1, oldest_wait=1.5)
    (queue,) = staff.get("/cq/api/queues/").json()["queues"]
    hour = queue["last_hour"]
    assert (hour["minutes"], hour["start"]) == (60, (last - timedelta(minutes=59)).isoformat())
    assert [hour[field][-1] for field in ("queued", "running", "finished", "oldest_wait")] == [2, 1, 9, 1.5]
    assert hour["queued"][0] is None



@pytest.mark.custom_model
def test_the_pages_read_the_projects_own_task_model(owned, staff):
    running = tasks.echo.delay("slow")
    owned.objects.filter(pk=running.pk).update(status=owned.STATUS_RUNNING, started=timezone.now())
    last = sampling.last_minute()
    for at in (timezone.now() - timedelta(seconds=1), last + timedelta(seconds=1)):
        done = tasks.echo.delay("done")
        owned.objects.filter(pk=done.pk).update(status=owned.STATUS_SUCCESS, finished=at, worker="box:1:aa")
    Worker.objects.create(name="box:1:aa", host="box", pid=1, current_task_id=running.pk)
    (row,) = staff.get("/cq/workers/").context["rows"]
    assert row["task"]["id"] == str(running.pk) and row["per_minute"] in (1, 2)
    sampling.record(last)
    (queue,) = staff.get("/cq/queues/").context["rows"]
    assert (queue["queue"], queue["last_hour"]["running"][-1]) == ("default", 1)
    assert queue["last_hour"]["finished"][-1] >= 1
