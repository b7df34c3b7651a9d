"""A cq_runworker process killed in the middle of a batch of quick atomic tasks."""

from __future__ import annotations

import os
import signal

import pytest

from cq.models import Task
from tests.faults.common import FAST, finished, pid_of
from tests.helpers import eventually
from tests.testapp import tasks
from tests.unit.test_batch import BATCHES, statuses

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_process_killed_mid_batch_leaves_what_ran_lost_and_puts_back_the_rest(start_worker, tmp_path):
    from django.db import transaction

    worker = start_worker("-c", "1", settings=FAST)
    for _ in range(3):  # quick tasks: the worker now claims several at a time
        tasks.noop.delay().wait(30_000)
    marker = tmp_path / "sleeping"
    with transaction.atomic():
        tasks.noop.delay()  # an idle worker takes the first doorbell alone, then the others at once
        ran = tasks.add.delay(1, 1)
        sleeper = tasks.sleeps_atomic.delay(str(marker))
        after = tasks.add.delay(2, 2)
    eventually(marker.exists, 30, "the sleeping task to start")  # its process told its supervisor first
    os.kill(pid_of(Task.objects.get(pk=sleeper.pk).worker), signal.SIGKILL)
    finished([ran, sleeper, after], timeout=30)
    # What ran before the kill in the same batch was never committed: LOST, like the task the
    # kill interrupted (on SQLite, each task commits alone, so it succeeded). The task claimed
    # after them never started: it is put back and runs.
    assert statuses([ran, sleeper, after]) == ["L" if BATCHES else "S", "L", "S"]
    assert after.wait().result == 4
    assert worker.stop() == 0, worker.output
