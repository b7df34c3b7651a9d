"""Retention rules applied by a real ``cq_runworker``: its scheduler's sweeper prunes by them."""

from __future__ import annotations

import pytest

from cq import registry
from cq.models import Task
from tests.helpers import eventually
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_worker_prunes_what_the_rules_keep_briefly_and_nothing_else(start_worker):
    # Given a worker whose rules keep echo's successes and fan_out's trees no time at all
    fan_out = registry.name_of(tasks.fan_out)
    worker = start_worker("-c", "2", settings={
        "CQ_RETENTION": [{"function": ["echo", fan_out], "status": "SUCCESS", "keep": 0}],
        "CQ_SWEEP_INTERVAL": 0.2})
    try:
        # When echoes, a fan-out tree, a failing echo and a plain task run
        brief = [tasks.echo.delay(i) for i in range(5)] + [tasks.fan_out.delay(3, "retention")]
        kept = [tasks.add.delay(1, 2), tasks.failing.delay()]
        eventually(lambda: Task.objects.filter(pk__in=[t.pk for t in kept], finished__isnull=False).count() == 2,
                   60, "the kept tasks to finish")
        # Then its sweeper deletes the echoes and the whole tree, and keeps the others
        eventually(lambda: not Task.objects.filter(pk__in=[t.pk for t in brief]).exists(), 60,
                   "the sweeper to prune the echoes and the tree")
        assert not Task.objects.filter(func_name=registry.name_of(tasks.counts_run)).exists()
        assert set(Task.objects.values_list("pk", flat=True)) == {t.pk for t in kept}
        assert all(t.result_expiry is not None for t in Task.objects.all())  # CQ_RESULT_TTL: 30 days
    finally:
        code = worker.stop()
    assert code == 0, worker.output
    assert "Traceback" not in worker.output, worker.output


def test_a_worker_with_a_bad_rule_does_not_start(start_worker):
    worker = start_worker("-c", "1", settings={"CQ_RETENTION": [{"status": "RUNNING", "keep": 60}]})
    assert worker.process.wait(60) != 0
    assert "cq.E004" in worker.output and "CQ_RETENTION[0]" in worker.output, worker.output
    assert "not 'RUNNING'" in worker.output, worker.output
