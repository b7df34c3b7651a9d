"""Headless Chromium for the browser tests: Debian's /usr/bin/chromium (apt-get install chromium, which
`make test` does), driven by Playwright, which never downloads a browser of its own here. Screenshots
go to tests/artifacts/ (or CQ_TEST_ARTIFACTS), kept after the run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CQ_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("CQ_TEST_ARTIFACTS", ROOT / "tests" / "artifacts"))
# As root, in a sandboxed machine with no network: no sandbox, no GPU, no calls home.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium; fails, naming what to install, when there is none."""
    assert shutil.which(CHROMIUM), (f"Chromium is not installed at {CHROMIUM}: the browser tests need Debian's "
                                    f"chromium (apt-get install chromium chromium-driver; `make test` does it).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def log_in(page: Any, base: str, username: str, password: str, then: str = "/cq/") -> None:
    """Log in through the admin's login form, as a person would."""
    page.goto(f"{base}/admin/login/?next={then}")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base}{then}")


@contextmanager
def demo_site(tmp_path: Path, **environ: str) -> Iterator[str]:
    """The demo (`make demo`: demo/run.py, its site and workers) on a free port, with a database and
    media of its own under ``tmp_path``, the tests' Redis and ``environ`` (e.g. ``DEMO_RENDER_PACE``);
    yields its base URL, stops it after."""
    import signal
    import subprocess
    import sys

    from django.conf import settings

    from tests.helpers import eventually, free_port

    port = free_port()
    env = {**os.environ, "REDIS_URL": settings.REDIS_URL, "DEMO_PORT": str(port),
           "DEMO_SQLITE_PATH": str(tmp_path / "db.sqlite3"), "DEMO_MEDIA_ROOT": str(tmp_path / "media"),
           "DEMO_RENDER_PACE": "0.3", "DEMO_REMINDER_AFTER": "30", **environ}
    for name in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL"):
        env.pop(name, None)
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen([sys.executable, "demo/run.py"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        eventually(lambda: "cq demo: open" in log.read_text() or demo.poll() is not None, 60, "the demo to start")
        assert demo.poll() is None, log.read_text()
        yield f"http://127.0.0.1:{port}"
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
