"""A chord through a cq_runworker of two processes."""

from __future__ import annotations

import pytest

from cq.canvas import chord
from cq.models import Task
from tests.helpers import eventually
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)


def test_chord_through_two_worker_processes(start_worker):
    # Given a worker of two processes
    worker = start_worker("-c", "2")
    try:
        # When a chord of 50 members, one of which fails, and a chord allowing failures run on it
        header = [tasks.fails_for.s(i, failing=[13]) for i in range(50)]
        strict = chord(header)(tasks.records_results.s(key="strict"))
        lenient = chord(header, tasks.records_results.s(key="lenient"), allow_failures=True).delay()
        eventually(lambda: all(t.wait(timeout=0).status in Task.STATUS_DONE for t in (strict, lenient)), 120,
                   "both chords to finish")
    finally:
        code = worker.stop()
    # Then the strict one never called back and the lenient one did, with None in slot 13
    assert code == 0, worker.output
    assert strict.status == Task.STATUS_INCOMPLETE and "#13 " in strict.error
    assert lenient.status == Task.STATUS_SUCCESS, lenient.error
    assert lenient.result == [None if i == 13 else i for i in range(50)]
    assert list(Record.objects.values_list("key", flat=True)) == ["lenient"]
    assert "Traceback" not in worker.output.replace("ValueError: no 13", ""), worker.output
