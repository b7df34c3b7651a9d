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
