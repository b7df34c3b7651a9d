"""A worker process's slate: what it runs, read by its supervisor from shared memory."""

from __future__ import annotations

import multiprocessing
import time
import uuid

import pytest

from cq.workers.slate import CAPACITY, Reading, Slate


def test_a_batch_is_running_until_each_task_is_finished_and_the_last_started_is_current():
    slate = Slate()
    first, second, third = (uuid.uuid4() for _ in range(3))
    slate.started(first, None)
    slate.started(second, None)
    slate.started(third, 30)
    reading = slate.read()
    assert reading.running == (str(first), str(second), str(third))
    assert reading.current == str(third)
    assert time.monotonic() + 29 < reading.deadline <= time.monotonic() + 30
    slate.finished(first)
    assert slate.read().running == (str(second), str(third))
    slate.finished(third)  # the current one: its deadline goes with it
    assert slate.read() == Reading((str(second),), None, 2)
    slate.finished(second)
    slate.finished(second)  # told twice: counted once
    assert slate.read() == Reading((), None, 3)


def test_a_task_without_a_time_limit_clears_the_deadline_of_the_one_before():
    slate = Slate()
    slate.started(uuid.uuid4(), 5)
    slate.started(uuid.uuid4(), None)
    assert slate.read().deadline is None


def test_more_tasks_than_it_holds_is_an_error_not_a_silent_loss():
    slate = Slate()
    for _ in range(CAPACITY):
        slate.started(uuid.uuid4(), None)
    with pytest.raises(OverflowError):
        slate.started(uuid.uuid4(), None)
    assert len(slate.read().running) == CAPACITY


def _run_and_die(shared, task_id, done_id):
    slate = Slate(shared)
    slate.started(done_id, None)
    slate.started(task_id, 60)
    slate.finished(done_id)


def test_what_a_spawned_process_wrote_is_read_after_it_exited():
    slate, task_id, done_id = Slate(), uuid.uuid4(), uuid.uuid4()
    process = multiprocessing.get_context("spawn").Process(target=_run_and_die, args=(slate.shared, task_id, done_id))
    process.start()
    process.join(30)
    assert process.exitcode == 0
    reading = slate.read()
    assert (reading.running, reading.processed) == ((str(task_id),), 1)
    assert reading.deadline is not None


def test_a_task_whose_start_was_cut_short_by_a_kill_reads_as_not_started():
    # The process died after writing the id but before the store that makes the slot count:
    # the task had not begun, and its supervisor puts it back rather than ending it LOST.
    slate = Slate()
    slot = slate.shared.slots[0]
    slot.id[:] = uuid.uuid4().bytes
    slot.order = 1
    assert slate.read() == Reading()


def test_reading_takes_no_lock_a_killed_writer_could_hold():
    assert not hasattr(Slate().shared, "get_lock")
