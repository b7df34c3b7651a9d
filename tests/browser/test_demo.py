"""The demo from the README as a person uses it, in headless Chromium (``make demo``)."""

from __future__ import annotations

import os
import subprocess
import sys

from django.conf import settings

from tests.helpers import ROOT


def test_a_person_generates_invoices_and_watches_them_in_the_browser(tmp_path, monkeypatch):
    """`make demo` as a person uses it: log in, generate a month's invoices, watch the progress bar
    reach 100% without reloading, see the failed customer named, download the archive."""
    import signal
    import zipfile

    from playwright.sync_api import expect

    from tests.browser.common import chromium, screenshot
    from tests.helpers import eventually, free_port

    port = free_port()
    env = {**os.environ, "REDIS_URL": settings.REDIS_URL, "DEMO_PORT": str(port),
           "DEMO_SQLITE_PATH": str(tmp_path / "db.sqlite3"), "DEMO_MEDIA_ROOT": str(tmp_path / "media"),
           "DEMO_RENDER_PACE": "0.3", "DEMO_REMINDER_AFTER": "30"}
    for name in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL"):
        env.pop(name, None)
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen([sys.executable, "demo/run.py"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        eventually(lambda: "cq demo: open" in log.read_text() or demo.poll() is not None, 60, "the demo to start")
        assert demo.poll() is None, log.read_text()
        base = f"http://127.0.0.1:{port}"
        assert f"open {base}/ and log in (admin / cq-demo)" in log.read_text()
        monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            page.goto(f"{base}/")
            page.fill("#id_username", "admin")
            page.fill("#id_password", "cq-demo")
            page.click("input[type=submit]")
            page.get_by_role("button", name="Generate").click()
            page.wait_for_url(f"{base}/runs/*/")
            page.evaluate("window.cqNoReload = true")
            progress = page.locator("#progress")
            expect(page.locator("#invoices tr.rendered").first).to_be_visible(timeout=30_000)
            screenshot(page, "demo-run-mid-job")
            expect(progress).to_have_attribute("value", "100", timeout=60_000)
            expect(page.locator("#status")).to_have_text("Success", timeout=30_000)
            expect(page.locator("#failed")).to_have_text("Not invoiced: Initech", timeout=10_000)
            expect(page.locator("#logs")).to_contain_text("Initech has no billing address")
            expect(page.locator("#reminder")).to_contain_text("Payment reminders go out in")
            assert page.evaluate("window.cqNoReload") is True
            screenshot(page, "demo-run-done")
            with page.expect_download() as download:
                page.click("#download")
            archive = zipfile.ZipFile(download.value.path())
            rendered = page.locator("#invoices tr.rendered").count()
            assert len(archive.namelist()) == rendered == 11
            assert "Invoice INV-" in archive.read(archive.namelist()[0]).decode()
            # README's pictures are these two (docs/demo.png, docs/dashboard.png): copy them from tests/artifacts.
            page.goto(base + page.locator("#task").get_attribute("href"))  # the run's task, on the dashboard
            expect(page.locator("h1")).to_have_text("invoices.tasks.generate_invoices")
            screenshot(page, "demo-task-page")
            page.goto(f"{base}/cq/")
            screenshot(page, "demo-dashboard")
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    assert "Stopping the demo" in log.read_text()
