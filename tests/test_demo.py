"""`make demo` from the README: the demo job runs end to end on a fresh database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_the_job_and_prints_its_tree_and_logs(tmp_path):
    env = {**os.environ, "DEMO_SQLITE_PATH": str(tmp_path / "demo.sqlite3"), "REDIS_URL": settings.REDIS_URL}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run([sys.executable, "demo/run.py"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Result: {'primes': 25997, 'slices': 8}  (Success)" in done.stdout
    assert "count_range   Success    3968" in done.stdout
    assert "count_primes  Split [0, 300000) into 8 slices" in done.stdout
