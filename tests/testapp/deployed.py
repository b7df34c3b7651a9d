"""Task functions of a newer deploy than the workers' (tests/integration/test_deploys.py): a
worker process has them only when CQ_TEST_DEPLOYED is set, for tests/testapp/tasks.py imports
this module then. A test process imports it itself, to queue them."""

from __future__ import annotations

from cq import task

from .models import Record


@task
def added(cqt, key):
    """A function the workers deployed before it do not have."""
    Record.objects.create(key=key)
    return key


@task(aliases=["tests.testapp.retired.old_name"])
def renamed(cqt, key):
    """Was ``tests.testapp.retired.old_name``: rows queued under that name run it."""
    Record.objects.create(key=f"renamed:{key}")
    return key
