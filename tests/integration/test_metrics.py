"""The metrics through a real cq_runworker (whose sweeper counts too), Redis and the database:
scraped with Django's test client and parsed as Prometheus parses them."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from cq.models import Task, Worker
from tests.helpers import eventually
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "a-scraper-token-for-the-tests"
ADD, FAILING = "tests.testapp.tasks.add", "tests.testapp.tasks.failing"


def scrape(client: Client, **headers: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.content.decode()) for s in family.samples}


def sample(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def test_a_worker_runs_tasks_and_the_scrapes_count_each_once(start_worker, settings):
    settings.CQ_METRICS_TOKEN = TOKEN
    settings.CQ_METRICS_LAG = 1
    token = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    staff = Client()
    staff.force_login(User.objects.create(username="ops", is_staff=True))
    # Given counting has started (the first scrape), refused without credentials
    assert Client().get("/metrics").status_code == 401
    scrape(staff)
    # When a worker of two processes, whose sweeper also counts every half second, runs 12
    # tasks, 4 of them failing; and 2 tasks wait in a queue no worker takes
    worker = start_worker("-c", "2", settings={"CQ_SWEEP_INTERVAL": 0.5, "CQ_METRICS_LAG": 1})
    ran = [tasks.add.delay(i, i) for i in range(8)] + [tasks.failing.delay(f"no {i}") for i in range(4)]
    waiting = [tasks.add.using(queue="idle").delay(1, 1) for _ in range(2)]
    eventually(lambda: Task.objects.filter(pk__in=[t.pk for t in ran], finished__isnull=False).count() == 12,
               60, "the tasks to finish")

    # Then the counters reach 8 successes and 4 failures, once the lag has passed...
    def counted() -> dict | None:
        found = scrape(staff, **token)
        done = (sample(found, "cq_tasks_finished_total", function=ADD, status="success"),
                sample(found, "cq_tasks_finished_total", function=FAILING, status="failure"))
        return found if done == (8, 4) else None

    found = eventually(counted, 30, "the counters to count the 12 tasks", every=0.3)
    # ... and the histogram's count and sum are those of the rows
    rows = Task.objects.filter(func_name=ADD, status=Task.STATUS_SUCCESS)
    assert sample(found, "cq_task_run_seconds_count", function=ADD, status="success") == 8
    run_sum = sum((t.finished - t.started).total_seconds() for t in rows)
    assert sample(found, "cq_task_run_seconds_sum", function=ADD, status="success") == pytest.approx(run_sum, abs=1e-3)
    assert sample(found, "cq_task_run_seconds_bucket", function=ADD, status="success", le="+Inf") == 8
    assert sample(found, "cq_task_wait_seconds_count", function=FAILING) == 4
    # ... the depth of the queue nobody serves, and the workers alive, as the database has them
    assert sample(found, "cq_queue_depth", queue="idle", status="queued") == 2
    assert sample(found, "cq_queue_workers", queue="idle") == 0
    alive = Worker.objects.filter(stopped__isnull=True).count()
    assert alive == 2  # one row per worker process
    assert sample(found, "cq_workers_alive") == alive == sample(found, "cq_queue_workers", queue="default")

    # When the finished rows are deleted (as expiry does) and Prometheus scrapes again
    Task.objects.exclude(pk__in=[t.pk for t in waiting]).delete()
    found = scrape(staff, **token)
    # Then the counters have not gone down
    assert sample(found, "cq_tasks_finished_total", function=ADD, status="success") == 8
    assert sample(found, "cq_tasks_finished_total", function=FAILING, status="failure") == 4
    assert worker.stop() == 0, worker.output
    assert "Traceback" not in worker.output, worker.output
