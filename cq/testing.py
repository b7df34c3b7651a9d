"""Helpers for testing a project's own task functions without running a worker.

``run_ready_tasks()`` runs, in the test's own process and database
connection, every task that is ready, and the subtasks, chains and retries
they make ready, through the same claim and execution code a worker uses. It
reads the task table rather than waiting for doorbells, so it works inside a
``TestCase`` transaction, and commit hooks (doorbells, errorbacks, chains) run
as if each task's transaction had committed.

    def test_invoice_is_sent(self):
        task = send_invoice.delay(invoice.pk)
        run_ready_tasks()
        task.refresh_from_db()
        assert task.status == Task.STATUS_SUCCESS

Set ``CQ_RETRY_BACKOFF = 0`` in test settings to have retries run at once.
"""

from __future__ import annotations

from django.test import TestCase

from .engine import queues
from .workers.worker import Worker


def run_ready_tasks(max_tasks: int | None = None) -> int:
    """Run ready tasks until none is left (or ``max_tasks`` ran); returns how many ran. Paused
    queues are left alone, as workers leave them."""
    queues.forget()  # a test's rows are rolled back after it: read the controls this one sees
    worker = Worker(queued_grace=0, name="cq.testing")
    total = 0
    while max_tasks is None or total < max_tasks:
        with TestCase.captureOnCommitCallbacks(execute=True):
            heard, ran = worker.step(0)
        if not heard and not ran:
            break
        total += ran
    return total
