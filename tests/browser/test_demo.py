"""The demo from the README as a person uses it, in headless Chromium (``make demo``)."""

from __future__ import annotations

import pytest


def test_a_person_generates_invoices_then_mends_the_failed_one_with_retry_failed(tmp_path, monkeypatch):
    """`make demo` as a person uses it: log in, generate a month's invoices, watch the run stop at
    Initech's invoice (no billing address) without reloading, give Initech an address in the admin,
    click Retry failed: only Initech's invoice is rendered again (the 11 others' render tasks keep
    their start), the run ends Success and the archive holds all 12 invoices."""
    import zipfile

    from playwright.sync_api import expect

    from tests.browser.common import chromium, demo_site, screenshot

    log = tmp_path / "demo.log"
    with demo_site(tmp_path) as base:
        assert f"open {base}/ and log in (admin / cq-demo)" in log.read_text()
        monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            page.on("dialog", lambda dialog: pytest.fail(f"the page said: {dialog.message}"))
            page.goto(f"{base}/")
            page.fill("#id_username", "admin")
            page.fill("#id_password", "cq-demo")
            page.click("input[type=submit]")
            page.get_by_role("button", name="Generate").click()
            page.wait_for_url(f"{base}/runs/*/")
            run_url = page.url
            page.evaluate("window.cqNoReload = true")
            expect(page.locator("#invoices tr.rendered").first).to_be_visible(timeout=30_000)
            screenshot(page, "demo-run-mid-job")
            # The run stops at Initech's invoice: no archive, and a way to mend it.
            expect(page.locator("#status")).to_have_text("Incomplete", timeout=60_000)
            expect(page.locator("#failed")).to_have_text("Not invoiced: Initech", timeout=10_000)
            expect(page.locator("#logs")).to_contain_text("Initech has no billing address")
            expect(page.locator("#invoices tr.rendered")).to_have_count(11)
            expect(page.locator("#download")).to_have_count(0)
            retry = page.get_by_role("button", name="Retry failed")
            expect(retry).to_be_visible()
            assert page.evaluate("window.cqNoReload") is True
            screenshot(page, "demo-run-stopped")
            task_url = page.locator("#task").get_attribute("href")  # /cq/tasks/<id>/
            before = render_starts(page, base, task_url)
            assert len(before) == 12 and all(before.values())

            page.goto(f"{base}/admin/invoices/customer/")
            page.get_by_role("link", name="Initech", exact=True).click()
            page.fill("#id_billing_address", "4120 Freidrich Lane\nAustin, TX")
            page.click("input[name=_save]")
            expect(page.locator(".messagelist")).to_contain_text("was changed successfully")

            page.goto(run_url)
            page.evaluate("window.cqNoReload = true")
            page.get_by_role("button", name="Retry failed").click()
            expect(page.locator("#status")).to_have_text("Success", timeout=60_000)
            expect(page.locator("#progress")).to_have_attribute("value", "100", timeout=10_000)
            expect(page.locator("#invoices tr.rendered")).to_have_count(12)
            expect(page.locator("#failed")).to_have_text("")
            expect(page.get_by_role("button", name="Retry failed")).to_be_hidden()
            expect(page.locator("#reminder")).to_contain_text("Payment reminders go out in")
            assert page.evaluate("window.cqNoReload") is True
            screenshot(page, "demo-run-done")
            after = render_starts(page, base, task_url)
            again = [pk for pk in after if after[pk] != before[pk]]
            assert set(after) == set(before) and len(again) == 1  # the same 12 rows; only Initech's ran again
            with page.expect_download() as download:
                page.click("#download")
            archive = zipfile.ZipFile(download.value.path())
            assert len(archive.namelist()) == 12
            assert "Invoice INV-" in archive.read(archive.namelist()[0]).decode()
            initech = next(name for name in archive.namelist() if "Initech" in archive.read(name).decode())
            assert "Freidrich Lane" in archive.read(initech).decode()
            # The run on the dashboard: `make screenshots` makes docs/dashboard.png of it.
            page.goto(base + page.locator("#task").get_attribute("href"))  # the run's task, on the dashboard
            expect(page.locator("h1")).to_have_text("invoices.tasks.generate_invoices")
            screenshot(page, "demo-task-page")
            page.goto(f"{base}/cq/")
            screenshot(page, "demo-dashboard")
    assert "Stopping the demo" in log.read_text()


def render_starts(page, base: str, task_url: str) -> dict[str, str]:
    """When each render_invoice task of the run last started, by task id, from cq's JSON API."""
    tree = page.request.get(base + task_url.replace("/cq/tasks/", "/cq/api/tasks/")).json()["tree"]
    return {task["id"]: task["started"] for task in tree if task["func_name"].endswith(".render_invoice")}
