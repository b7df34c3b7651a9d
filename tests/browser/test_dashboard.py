"""The dashboard in a real browser: headless Chromium on the test site served by daphne, with a
worker process, over real Redis. Pages must change as tasks do, without reloading."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from cq.models import Queue, Task
from tests.browser.common import chromium, log_in, screenshot
from tests.helpers import SiteProcess, events_layers
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 20_000  # ms: how long the page may take to show a change


@pytest.fixture
def site(events_layer, settings, start_worker, tmp_path):
    """The site and a worker, sharing the test's database and Redis, with live events on."""
    shared = {"CHANNEL_LAYERS": events_layers(settings.CHANNEL_LAYERS, settings.REDIS_URL),
              "CQ_PROGRESS_INTERVAL": 0}
    settings.CQ_PROGRESS_INTERVAL = 0
    start_worker("-c", "2", settings=shared)
    server = SiteProcess(settings=shared, log=tmp_path / "daphne.log")
    User.objects.create_user("staff", password="staff-password", is_staff=True, is_superuser=True)
    yield server
    server.kill()


@pytest.fixture
def page(site, request, monkeypatch):
    # Playwright's synchronous API keeps an event loop running in this thread; the test's own
    # database calls are still plain synchronous calls, which Django must be told to allow.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("dialog", lambda dialog: pytest.fail(f"the page said: {dialog.message}"))
        log_in(page, site.url, "staff", "staff-password")
        yield page
        if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:
            screenshot(page, f"{request.node.name}-failed")


def stays_loaded(page) -> None:
    """Mark the page: if it reloads, the mark is gone."""
    page.evaluate("window.cqNoReload = true")


def test_a_running_tasks_progress_and_logs_stream_into_its_page(site, page):
    task = tasks.steps_when_told.delay(4, "gate")
    page.goto(f"{site.url}/cq/tasks/{task.pk}/")
    stays_loaded(page)
    expect(page.locator(f'[data-status="{task.pk}"]')).to_have_text("Running", timeout=WAIT)
    for step in range(1, 5):
        Record.objects.create(key=f"gate:{step}")
        expect(page.locator("#progress")).to_have_attribute("value", str(step * 25), timeout=WAIT)
        expect(page.locator("#logs")).to_contain_text(f"finished step {step}", timeout=WAIT)
        expect(page.locator("#progress-message")).to_have_text(f"step {step} of 4", timeout=WAIT)
        if step == 2:
            screenshot(page, "task-page-mid-job")
    expect(page.locator(f'[data-status="{task.pk}"]')).to_have_text("Success", timeout=WAIT)
    assert page.evaluate("window.cqNoReload") is True
    screenshot(page, "task-page-done")


def test_revoking_a_running_task_from_its_page(site, page):
    task = tasks.sleeps.delay(60, "revoked-sleep")
    page.goto(f"{site.url}/cq/tasks/{task.pk}/")
    stays_loaded(page)
    status = page.locator(f'[data-status="{task.pk}"]')
    expect(status).to_have_text("Running", timeout=WAIT)
    page.get_by_role("button", name="Revoke and terminate").click()
    expect(status).to_have_text("Revoked", timeout=WAIT)
    assert page.evaluate("window.cqNoReload") is True
    screenshot(page, "task-page-revoked")
    task.refresh_from_db()
    assert task.status == Task.STATUS_REVOKED
    assert not Record.objects.filter(key="revoked-sleep").exists()  # its process was killed mid-sleep


def test_the_task_list_shows_new_tasks_and_the_chart_counts_them(site, page):
    page.goto(f"{site.url}/cq/")
    stays_loaded(page)
    chart = page.locator("#throughput")
    expect(chart).to_have_attribute("data-total", "0", timeout=WAIT)
    done, failed = tasks.add.delay(2, 3), tasks.failing.delay()
    expect(page.locator(f'tr[data-task="{done.pk}"] .status')).to_have_text("Success", timeout=WAIT)
    expect(page.locator(f'tr[data-task="{failed.pk}"] .status')).to_have_text("Failure", timeout=WAIT)
    expect(chart).to_have_attribute("data-total", "2", timeout=WAIT)
    assert chart.locator("rect.status-S").count() == 1 and chart.locator("rect.status-F").count() == 1
    assert page.evaluate("window.cqNoReload") is True
    screenshot(page, "task-list-live")


def test_the_queues_and_workers_pages_follow_the_tasks(site, page):
    page.goto(f"{site.url}/cq/queues/")
    stays_loaded(page)
    expect(page.locator('tr[data-queue="default"] .workers')).to_have_text("2", timeout=WAIT)  # its two processes
    expect(page.locator('tr[data-queue="reports"]')).to_have_count(0)
    tasks.report.delay("nobody takes the reports queue here")  # the test's worker serves "default" only
    expect(page.locator('tr[data-queue="reports"] .depth')).to_have_text("1", timeout=WAIT)
    screenshot(page, "queues-live")
    page.goto(f"{site.url}/cq/workers/")
    stays_loaded(page)
    running = tasks.sleeps.delay(60, "watched on the workers page")
    expect(page.locator(f'a[href="/cq/tasks/{running.pk}/"]')).to_be_visible(timeout=WAIT)
    expect(page.locator("#workers")).to_contain_text("alive")
    assert page.evaluate("window.cqNoReload") is True
    screenshot(page, "workers-live")
    running.revoke(terminate=True)


def test_pausing_and_capping_a_queue_from_the_queues_page(site, page):
    held = tasks.report.delay_args(args=("held",), countdown=0)
    queues_page = f"{site.url}/cq/queues/"
    # The worker serves "default" only: the report waits, and its queue is listed.
    page.goto(queues_page)
    row = page.locator('tr[data-queue="reports"]')
    expect(row).to_contain_text("running", timeout=WAIT)
    row.get_by_role("button", name="Pause").click()
    expect(row.locator(".state")).to_have_text("paused", timeout=WAIT)
    assert Queue.objects.get(name="reports").changed_by == "staff"
    row.locator("input[name=concurrency]").fill("3")
    row.get_by_role("button", name="Set cap").click()
    expect(row.locator(".cap")).to_have_text("3 at once", timeout=WAIT)
    screenshot(page, "queues-page-paused")
    row.get_by_role("button", name="Resume").click()
    expect(row.locator(".state")).to_have_text("running", timeout=WAIT)
    assert (Queue.objects.get(name="reports").paused, Queue.objects.get(name="reports").concurrency) == (False, 3)
    assert Task.objects.get(pk=held.pk).status == Task.STATUS_QUEUED


def test_checked_failed_rows_of_a_filtered_list_are_retried_in_bulk_until_they_succeed(site, page):
    failed = [tasks.fails_first_time.delay(f"checked{i}") for i in range(3)]
    fine = tasks.add.delay(1, 1)
    page.goto(f"{site.url}/cq/?status=F")
    for task in failed:  # the list is filtered: it does not follow new tasks, so read it again until all failed
        row = page.locator(f'tr[data-task="{task.pk}"]')
        for _ in range(WAIT // 250):
            if row.count():
                break
            page.wait_for_timeout(250)
            page.reload()
        expect(row.locator(".status")).to_have_text("Failure", timeout=WAIT)
    expect(page.locator(f'tr[data-task="{fine.pk}"]')).to_have_count(0)
    retry = page.locator("#retry-selected")
    expect(retry).to_be_disabled()  # nothing checked yet
    for task in failed[:2]:
        page.locator(f'tr[data-task="{task.pk}"] input[name=ids]').check()
    expect(retry).to_be_enabled()
    screenshot(page, "task-list-selected")
    retry.click()
    expect(page.locator("#bulk-count")).to_have_attribute("data-applies", "2", timeout=WAIT)
    page.get_by_role("button", name="Retry 2 tasks").click()
    expect(page.locator("#bulk-done")).to_have_attribute("data-acted", "2", timeout=WAIT)
    page.get_by_role("link", name="Back to the list").click()
    for task in failed[:2]:  # the list of the selected rows, read again until the worker has run them
        status = page.locator(f'tr[data-task="{task.pk}"] .status')
        for _ in range(WAIT // 250):
            if status.text_content() == "Success":
                break
            page.wait_for_timeout(250)
            page.reload()
        expect(status).to_have_text("Success", timeout=WAIT)
    assert [Task.objects.get(pk=t.pk).status for t in failed] == ["S", "S", "F"]
    screenshot(page, "task-list-retried")
