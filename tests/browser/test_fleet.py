"""The queues and workers pages in a real browser: each queue's charts of its last hour, and each
worker's running task with an elapsed time that ticks without reloading the page."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from cq.models import QueueSample
from cq.scheduling import sampling
from tests.browser.common import screenshot
from tests.browser.test_dashboard import WAIT, page, site, stays_loaded  # noqa: F401  (fixtures)
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_queues_page_charts_each_queues_last_hour(site, page):  # noqa: F811
    # Minutes the scheduler of the test's worker never samples (it samples the one that just ended).
    last = sampling.last_minute()
    for back, queued, finished in ((4, 6, 2), (3, 2, 8), (2, 0, 5)):
        QueueSample.objects.create(queue="default", minute=last - timedelta(minutes=back), queued=queued,
                                   finished=finished)
    page.goto(f"{site.url}/cq/queues/")
    stays_loaded(page)
    row = page.locator('tr[data-queue="default"]')
    depth, throughput = row.locator(".depth-chart svg.spark"), row.locator(".throughput-chart svg.spark")
    expect(depth).to_have_attribute("data-peak", "6", timeout=WAIT)
    expect(throughput).to_have_attribute("data-peak", "8")
    assert depth.locator("rect").count() >= 3 and throughput.locator("rect").count() >= 3
    box = throughput.bounding_box()
    assert box and box["width"] > 50 and box["height"] > 10  # drawn, not collapsed
    expect(throughput.locator("rect title").first).to_have_text(re.compile(r"^\d\d:\d\d \d+ finished$"))
    # A new task comes as an event: the page is read again, and the charts stay.
    tasks.report.delay("waits in a queue nobody serves here")
    expect(page.locator('tr[data-queue="reports"] .depth-chart svg.spark')).to_have_count(1, timeout=WAIT)
    expect(depth).to_have_attribute("data-peak", "6")
    assert page.evaluate("window.cqNoReload") is True
    screenshot(page, "queues-charts")


def test_the_workers_page_ticks_the_running_tasks_elapsed_time(site, page):  # noqa: F811
    page.goto(f"{site.url}/cq/workers/")
    stays_loaded(page)
    running = tasks.sleeps.delay(60, "timed on the workers page")
    link = page.locator(f'a[href="/cq/tasks/{running.pk}/"]')
    expect(link).to_have_text(tasks.sleeps.name, timeout=WAIT)
    elapsed = link.locator("xpath=..").locator(".elapsed")
    expect(elapsed).to_have_text(re.compile(r"^\d+ s$"))
    # It counts up every second between the page's reads of the server, never back.
    seen = []
    for _ in range(3):
        before = elapsed.text_content()
        expect(elapsed).not_to_have_text(before, timeout=WAIT)
        seen.append(int(elapsed.text_content().split()[0]))
    assert seen == sorted(seen) and seen[-1] >= 2, seen
    # Memory comes with the worker's heartbeats (every 5 s here).
    expect(page.locator("#workers .memory").first).to_have_text(re.compile(r"^\d+(\.\d+)?\s(KB|MB|GB)$"), timeout=WAIT)
    assert page.evaluate("window.cqNoReload") is True
    screenshot(page, "workers-elapsed")
    running.revoke(terminate=True)
