"""cq without prometheus-client: it imports, sweeps and counts; only the metrics view refuses to
load, saying which extra to install; and the system check says so when a token is set."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.helpers import ROOT, process_env

SCRIPT = textwrap.dedent("""
    import sys
    sys.modules["prometheus_client"] = None  # as if it were not installed
    import django
    django.setup()
    from django.core.exceptions import ImproperlyConfigured
    from django.test.utils import override_settings
    import cq.models, cq.metrics.tally, cq.engine.queues, cq.scheduling.sweeper, cq.urls, cq.checks
    from cq.scheduling.sweeper import sweep
    from cq.metrics.tally import advance
    print("swept", sweep().counted, "counted", advance(start=True))
    print("gauges", cq.engine.queues.overview().workers_alive)
    print("check", cq.checks.check_metrics())
    with override_settings(CQ_METRICS_TOKEN="t"):
        print("check", [error.id for error in cq.checks.check_metrics()])
    try:
        import cq.web.metrics
    except ImproperlyConfigured as error:
        print("view", error)
""")


@pytest.mark.django_db(transaction=True)  # the process writes the tally's mark: flushed after
def test_cq_works_without_prometheus_client_and_the_view_names_the_extra():
    env = process_env()
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:4] == ["swept 0 counted 0", "gauges 0", "check []", "check ['cq.E003']"], done.stdout
    assert lines[4] == "view cq's metrics need the prometheus-client package: pip install 'cq[prometheus]'."
