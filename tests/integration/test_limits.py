"""Concurrency and rate limits (cq.engine.limits) held across cq_runworker processes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cq.models import Task
from tests.helpers import eventually
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def wait_until_done(ids: list, seconds: float) -> None:
    eventually(lambda: not Task.objects.filter(pk__in=ids).exclude(status__in=Task.STATUS_DONE).exists(),
               seconds, "the tasks to finish")


def test_max_concurrency_holds_across_worker_processes(start_worker):
    # Given two worker processes whose database poll never picks up a waiting task, so that
    # only the doorbell rung as a task of the same key finishes can start the next one
    worker = start_worker("-c", "2", settings={"CQ_QUEUED_GRACE": 3600})
    try:
        # When four tasks of customer a, then four of customer b, are queued at once (without the
        # limit, the two processes would start with two of a's)
        created = tasks.one_per_customer.delay_many([(customer, 0.3) for customer in "ab" for _ in range(4)])
        wait_until_done([t.pk for t in created], 120)
    finally:
        assert worker.stop() == 0, worker.output
    # Then every one succeeded, a customer's tasks never overlapped, and the two customers' did
    done = list(Task.objects.filter(pk__in=[t.pk for t in created]))
    assert {t.status for t in done} == {Task.STATUS_SUCCESS}, [t.error for t in done]
    spans = {customer: sorted(t.result for t in done if t.args[0] == customer) for customer in "ab"}
    for customer, intervals in spans.items():
        for (_, end), (start, _) in zip(intervals, intervals[1:], strict=False):
            assert start >= end, f"two tasks of customer {customer} ran at once: {intervals}"
    assert any(a_start < b_end and b_start < a_end for a_start, a_end in spans["a"] for b_start, b_end in spans["b"])
    assert "Traceback" not in worker.output, worker.output


def test_rate_limit_spaces_starts_across_worker_processes(start_worker):
    worker = start_worker("-c", "2")
    try:
        created = tasks.five_per_second.delay_many([()] * 8)
        wait_until_done([t.pk for t in created], 120)
    finally:
        assert worker.stop() == 0, worker.output
    done = list(Task.objects.filter(pk__in=[t.pk for t in created]))
    assert {t.status for t in done} == {Task.STATUS_SUCCESS}, [t.error for t in done]
    starts = sorted(t.started for t in done)
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= timedelta(seconds=0.2), gaps
    # Eight queued at once are claimed within milliseconds: some had to wait QUEUED for their turn.
    assert any(t.run_after is not None for t in done)
