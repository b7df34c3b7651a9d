"""A task's timeline and the task list's throughput chart in headless Chromium: on the test site
with a worker (tests/browser/test_dashboard.py's fixtures), and during the demo's job."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from cq.canvas import chord
from cq.models import Task
from tests.browser import test_dashboard
from tests.browser.common import chromium, demo_site, screenshot
from tests.browser.test_dashboard import WAIT, stays_loaded
from tests.helpers import eventually
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)

# The test site, its worker and a logged-in page, as the dashboard's browser tests have them.
site, page = test_dashboard.site, test_dashboard.page


def width(bar) -> float:
    return float(bar.locator("rect.run").get_attribute("width"))


def test_a_trees_timeline_follows_it_live_marks_its_critical_path_and_opens_a_task(site, page):
    top = chord([tasks.steps_when_told.s(1, "quick"), tasks.steps_when_told.s(1, "slow")])(tasks.echo.s("done"))
    header = top.subtasks.get(func_name="cq.group")
    quick, slow = header.subtasks.order_by("created")
    page.goto(f"{site.url}/cq/tasks/{top.pk}/")
    stays_loaded(page)
    timeline = page.locator("#timeline")
    bar = timeline.locator(f'a.bar[data-id="{slow.pk}"]')
    # Both members run (the worker has two processes): their bars are solid, and grow with the clock.
    expect(bar).to_have_class(re.compile(r"\bstatus-R\b"), timeout=WAIT)
    expect(timeline.locator(f'a.bar[data-id="{quick.pk}"]')).to_have_class(re.compile(r"\bstatus-R\b"), timeout=WAIT)
    before = width(bar)
    eventually(lambda: width(bar) > before + 5, 10, "the running bar to grow")
    assert bar.locator("rect.wait").count() == 1  # its time in the queue, drawn apart
    Record.objects.create(key="quick:1")
    expect(timeline.locator(f'a.bar[data-id="{quick.pk}"]')).to_have_class(re.compile(r"\bstatus-S\b"), timeout=WAIT)
    Record.objects.create(key="slow:1")
    # The callback appears once the header is done; then the whole chord ends.
    callback = eventually(lambda: top.subtasks.filter(func_name="echo").first(), 20, "the chord's callback")
    expect(timeline.locator(f'a.bar[data-id="{callback.pk}"]')).to_have_class(re.compile(r"\bstatus-S\b"),
                                                                              timeout=WAIT)
    expect(timeline.locator(f'a.bar[data-id="{top.pk}"]')).to_have_class(re.compile(r"\bstatus-S\b"), timeout=WAIT)
    # The critical path: the chord, its header, the member that finished last, then the callback.
    expect(timeline.locator("a.bar.critical")).to_have_count(4, timeout=WAIT)
    critical = {timeline.locator("a.bar.critical").nth(i).get_attribute("data-id") for i in range(4)}
    assert critical == {str(top.pk), str(header.pk), str(slow.pk), str(callback.pk)}
    assert "critical" not in timeline.locator(f'a.bar[data-id="{quick.pk}"]').get_attribute("class")
    assert page.evaluate("window.cqNoReload") is True
    assert page.locator(f'table.tree tr[data-task="{slow.pk}"]').count() == 1  # the table stays beside it
    screenshot(page, "task-page-timeline")
    bar.locator("rect.run").click()
    page.wait_for_url(f"{site.url}/cq/tasks/{slow.pk}/")
    expect(page.locator("h1")).to_have_text("tests.testapp.tasks.steps_when_told")


def test_a_fan_out_of_a_thousand_draws_only_the_rows_in_view(site, page):
    # Rows in a queue no worker serves: the tree stays as it is written.
    top = Task.objects.create(func_name="tests.testapp.tasks.fan_out", status=Task.STATUS_WAITING, queue="nobody")
    Task.objects.bulk_create([Task(func_name="tests.testapp.tasks.counts_run", parent=top, top=top,
                                   status=Task.STATUS_QUEUED, queue="nobody") for _ in range(1000)])
    page.goto(f"{site.url}/cq/tasks/{top.pk}/")
    timeline = page.locator("#timeline")
    expect(timeline).to_have_attribute("data-rows", "1001", timeout=WAIT)
    drawn = timeline.locator("a.bar").count()
    assert 10 < drawn < 100  # a view's worth, not a thousand
    box = timeline.locator(".rows").bounding_box()
    assert box["height"] < 500  # the rows scroll within the figure
    timeline.locator(".rows").evaluate("rows => rows.scrollTop = rows.scrollHeight")
    last = Task.objects.filter(top=top).order_by("created").last()
    expect(timeline.locator(f'a.bar[data-id="{last.pk}"]')).to_have_count(1, timeout=WAIT)


def test_the_chart_has_time_and_count_axes_and_a_tooltip_per_minute(site, page):
    page.goto(f"{site.url}/cq/")
    chart = page.locator("#throughput")
    expect(chart).to_have_attribute("data-total", "0", timeout=WAIT)
    x_labels = chart.locator("text.x")
    expect(x_labels).to_have_count(6)  # the hour, labelled every 10 minutes
    assert all(re.fullmatch(r"\d\d:\d0", label) for label in x_labels.all_text_contents())
    tasks.add.delay(2, 3), tasks.failing.delay()
    expect(chart).to_have_attribute("data-total", "2", timeout=WAIT)
    assert chart.locator("text.y").all_text_contents()[0] == "0"
    assert chart.locator("text.y").all_text_contents()[-1] in {"1", "2"}  # round ticks up to the busiest minute
    box = chart.locator("rect.status-S").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    tip = page.locator(".throughput .tip")
    expect(tip).to_be_visible()
    expect(tip).to_have_text(re.compile(r"^\d\d:\d\d — (1 Failure, )?1 Success$"))  # the minute's finishes
    screenshot(page, "task-list-chart")
    page.mouse.move(0, 0)
    expect(tip).to_be_hidden()


def test_the_demos_timeline_appears_and_grows_during_its_job(tmp_path, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    # Renderings of a second each: the job lasts long enough (about 8 s) to be watched.
    with demo_site(tmp_path, DEMO_RENDER_PACE="1") as base, chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{base}/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", "cq-demo")
        page.click("input[type=submit]")
        page.get_by_role("button", name="Generate").click()
        page.wait_for_url(f"{base}/runs/*/")
        page.goto(base + page.locator("#task").get_attribute("href"))  # the run's task, on the dashboard
        page.evaluate("window.cqNoReload = true")
        timeline = page.locator("#timeline")
        top = timeline.locator("a.bar").first
        expect(top).to_be_visible()
        seen = int(timeline.get_attribute("data-rows"))
        # The top-level task's bar grows with the clock while it waits on the pipeline.
        expect(top).to_have_class(re.compile(r"\bstatus-W\b"), timeout=WAIT)
        before = width(top)
        eventually(lambda: width(top) > before + 20, 20, "the top-level task's bar to grow")
        # Bars change as their tasks do, without a reload: a rendering finishes (and, if the page
        # came before the render stage, its bars appear: how many it had is not up to the test).
        expect(timeline.locator('a.bar.status-S text:text-is("tasks.render_invoice")').first).to_be_visible(
            timeout=60_000)
        assert int(timeline.get_attribute("data-rows")) >= seen
        screenshot(page, "demo-timeline-mid-job")
        # The run stops at Initech's invoice, which has no address (the demo's story: it is then
        # retried from that step, tests/browser/test_demo.py).
        expect(top).to_have_class(re.compile(r"\bstatus-I\b"), timeout=90_000)
        api = base + page.evaluate("location.pathname").replace("/cq/tasks/", "/cq/api/tasks/")
        tree = page.request.get(api).json()["tree"]
        expect(timeline).to_have_attribute("data-rows", str(1 + len(tree)), timeout=WAIT)  # the whole tree
        failed = timeline.locator("a.bar.status-F text").all_text_contents()
        assert failed.count("tasks.render_invoice") == 1, failed  # Initech's invoice (and the chord it failed)
        # The critical path runs from the top down to the stage that stopped the run.
        expect(top).to_have_class(re.compile(r"\bcritical\b"))
        assert timeline.locator("a.bar.critical").count() >= 3
        assert page.evaluate("window.cqNoReload") is True
        screenshot(page, "demo-timeline-done")
