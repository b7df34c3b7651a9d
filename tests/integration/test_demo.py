"""The demo from the README: `make demo-check` drives its scenario over HTTP against daphne and two
worker processes, on a fresh database, and exits 0 only when every result is right."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings

from tests.helpers import ROOT

pytestmark = pytest.mark.demo


def test_the_demo_generates_a_months_invoices_end_to_end():
    env = {**os.environ, "REDIS_URL": settings.REDIS_URL}
    for name in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "demo/run.py", "--check"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    for result in ("the run stopped at Initech's invoice", "Retry failed rendered only that invoice again",
                   "the run succeeded", "progress reached 100%", "every invoice is in the archive",
                   "the office's email counts them all", "the delayed reminders went out"):
        assert f"ok  {result}" in done.stdout, done.stdout
