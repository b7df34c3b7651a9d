"""The metrics view (cq.web.metrics, mounted at /metrics by tests/urls.py): who may read it, and
the gauges it reads live from the database, parsed as Prometheus parses them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from cq.metrics import tally
from cq.models import Queue, Task, TaskStatus, Worker
from cq.operating import TallyMark

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/metrics"
TOKEN = "s3cret-token-of-the-scraper"


def samples(response) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The exposition's samples, by name and sorted labels."""
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == CONTENT_TYPE_LATEST
    text = response.content.decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_anonymous_is_refused_and_told_how_to_authenticate(client):
    response = client.get(URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="cq metrics"'
    assert b"CQ_METRICS_TOKEN" in response.content


def test_a_user_who_is_not_staff_is_forbidden(client):
    client.force_login(User.objects.create(username="ann"))
    assert client.get(URL).status_code == 403


def test_staff_may_read_and_only_with_get(client):
    client.force_login(User.objects.create(username="staff", is_staff=True))
    found = samples(client.get(URL))
    assert found[("cq_workers_alive", ())] == 0
    assert client.head(URL).status_code == 200
    assert client.post(URL).status_code == 405


def test_the_token_is_accepted_and_a_wrong_one_or_none_set_is_refused(client, settings):
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 401  # no token set
    settings.CQ_METRICS_TOKEN = TOKEN
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}x").status_code == 401
    assert client.get(URL, HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    assert ("cq_workers_alive", ()) in samples(client.get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}"))


def test_the_first_scrape_starts_counting(client, settings):
    settings.CQ_METRICS_TOKEN = TOKEN
    assert not TallyMark.objects.exists()
    found = samples(client.get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}"))
    assert found[("cq_tasks_counted_to_timestamp_seconds", ())] == pytest.approx(tally.counted_to().timestamp())


def test_gauges_say_depth_oldest_wait_running_workers_and_controls(client, settings):
    # Given: in "reports", two QUEUED tasks (the older waiting 90 s), one delayed for an hour
    # (QUEUED but not due: "scheduled", and not in the wait), one RETRY and one RUNNING;
    # the queue is paused with a cap of 3; two workers alive on it, one dead and one stopped.
    settings.CQ_METRICS_TOKEN = TOKEN
    now = timezone.now()

    def task(status: str, **fields) -> Task:
        return Task.objects.create(func_name="tests.testapp.tasks.add", queue="reports", status=status, **fields)

    task(TaskStatus.QUEUED, submitted=now - timedelta(seconds=90))
    task(TaskStatus.QUEUED, submitted=now - timedelta(seconds=10))
    task(TaskStatus.QUEUED, submitted=now - timedelta(hours=2), run_after=now + timedelta(hours=1))
    task(TaskStatus.RETRY, submitted=now - timedelta(hours=3), run_after=now + timedelta(minutes=1))
    task(TaskStatus.RUNNING, started=now)
    Queue.objects.create(name="reports", paused=True, concurrency=3)
    for i, (beat, stopped) in enumerate([(now, None), (now, None), (now - timedelta(hours=1), None),
                                         (now, now)]):
        Worker.objects.create(name=f"h:{i}:x", host="h", pid=i, queues=["reports", "default"],
                              last_heartbeat=beat, stopped=stopped)
    # When Prometheus scrapes
    found = samples(client.get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}"))
    # Then
    reports = (("queue", "reports"),)
    assert found[("cq_queue_depth", (("queue", "reports"), ("status", "queued")))] == 2
    assert found[("cq_queue_depth", (("queue", "reports"), ("status", "scheduled")))] == 1
    assert found[("cq_queue_depth", (("queue", "reports"), ("status", "retry")))] == 1
    assert 90 <= found[("cq_queue_oldest_wait_seconds", reports)] < 90 + 60
    assert found[("cq_queue_running", reports)] == 1
    assert found[("cq_queue_paused", reports)] == 1
    assert found[("cq_queue_concurrency_limit", reports)] == 3
    assert found[("cq_queue_workers", reports)] == 2
    assert found[("cq_workers_alive", ())] == 2
    # An idle queue is there, at zero, rather than missing.
    assert found[("cq_queue_depth", (("queue", "default"), ("status", "queued")))] == 0
    assert found[("cq_queue_paused", (("queue", "default"),))] == 0
    assert ("cq_queue_concurrency_limit", (("queue", "default"),)) not in found


def test_counters_and_histograms_come_from_the_tallies(client, settings):
    settings.CQ_METRICS_TOKEN = TOKEN
    TallyMark.objects.create(pk=tally.MARK, counted_to=timezone.now() - timedelta(hours=1))
    finished = timezone.now() - timedelta(minutes=5)
    for status, ran in [(TaskStatus.SUCCESS, 0.2), (TaskStatus.SUCCESS, 40), (TaskStatus.FAILURE, 1)]:
        Task.objects.create(func_name="tests.testapp.tasks.add", status=status, finished=finished,
                            started=finished - timedelta(seconds=ran), submitted=finished - timedelta(seconds=ran + 1))
    found = samples(client.get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}"))
    fn = ("function", "tests.testapp.tasks.add")
    assert found[("cq_tasks_finished_total", (fn, ("status", "success")))] == 2
    assert found[("cq_tasks_finished_total", (fn, ("status", "failure")))] == 1
    success = (fn, ("status", "success"))
    assert found[("cq_task_run_seconds_count", success)] == 2
    assert found[("cq_task_run_seconds_sum", success)] == pytest.approx(40.2)
    assert found[("cq_task_run_seconds_bucket", ((fn[0], fn[1]), ("le", "0.25"), ("status", "success")))] == 1
    assert found[("cq_task_run_seconds_bucket", ((fn[0], fn[1]), ("le", "60.0"), ("status", "success")))] == 2
    assert found[("cq_task_wait_seconds_count", (fn,))] == 3
    assert found[("cq_task_wait_seconds_sum", (fn,))] == pytest.approx(3.0)
