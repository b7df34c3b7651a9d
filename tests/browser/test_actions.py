"""The task page's buttons in a real browser: only those whose action would work are shown
(``cq.engine.actions``), and Retry failed mends a workflow from its page, live."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from cq.canvas import chord
from cq.models import Task, TaskStatus
from tests.browser.common import screenshot
from tests.browser.test_dashboard import WAIT, page, site, stays_loaded  # noqa: F401  (fixtures)
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)

BUTTONS = ["Revoke", "Revoke and terminate", "Retry", "Retry failed", "Re-run"]


def buttons(shown) -> list[str]:
    """The action buttons ``shown`` (a page) offers."""
    return [text.strip() for text in shown.locator(".actions button").all_inner_texts()]


def test_the_buttons_are_absent_where_they_would_fail_and_retry_failed_mends_a_chord(site, page):  # noqa: F811
    Record.objects.create(key="broken:b:1")
    workflow = chord([tasks.mendable.s(f"b:{n}", n) for n in (1, 2, 3)])(tasks.total.s())
    done = tasks.add.delay(1, 2)
    assert workflow.wait(30_000).status == TaskStatus.INCOMPLETE
    assert done.wait(30_000).status == TaskStatus.SUCCESS
    member = Task.objects.get(args=["b:1", 1])
    header = Task.objects.get(pk=member.parent_id)

    page.goto(f"{site.url}/cq/tasks/{done.pk}/")
    assert buttons(page) == ["Re-run"]  # finished: nothing to stop or retry
    for internal in (member, header):  # a workflow's own rows: retried by their top, never re-run
        page.goto(f"{site.url}/cq/tasks/{internal.pk}/")
        expect(page.locator("h1")).to_have_text(internal.func_name)
        assert buttons(page) == []
    page.goto(f"{site.url}/cq/tasks/{workflow.pk}/")
    assert buttons(page) == ["Retry failed"]  # no worker runs a chord row: no Retry, no Re-run
    screenshot(page, "task-page-retry-failed")

    stays_loaded(page)
    Record.objects.filter(key="broken:b:1").delete()
    page.get_by_role("button", name="Retry failed").click()
    expect(page.locator(f'[data-status="{workflow.pk}"]')).to_have_text("Success", timeout=WAIT)
    expect(page.locator(".actions button")).to_have_count(0, timeout=WAIT)  # a chord that succeeded: none
    assert page.evaluate("window.cqNoReload") is True
    assert workflow.wait().result == 6
    assert [Record.objects.filter(key=f"ran:b:{n}").count() for n in (1, 2, 3)] == [2, 1, 1]
