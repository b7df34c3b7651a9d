"""cq.testing.run_ready_tasks() inside a Django TestCase, as a project's own suite would use it."""

from __future__ import annotations

from django.test import TestCase

from cq.models import Task
from cq.testing import run_ready_tasks
from tests.testapp import tasks
from tests.testapp.models import Record


class RunReadyTasksTests(TestCase):
    def test_runs_a_tree_with_subtasks_and_a_chain_inside_the_test_transaction(self):
        task = tasks.tree_with_chain.delay("helper")
        self.assertEqual(run_ready_tasks(), 4)
        task.refresh_from_db()
        self.assertEqual((task.status, task.result), (Task.STATUS_SUCCESS, 13))
        self.assertTrue(Record.objects.filter(key="helper:c").exists())

    def test_chain_on_a_top_level_task_runs(self):
        first = tasks.three.delay()
        second = first.chain(tasks.add_previous, (1,))
        self.assertEqual(run_ready_tasks(), 2)
        second.refresh_from_db()
        self.assertEqual(second.result, 4)

    def test_retries_and_errorbacks_run(self):
        flaky = tasks.fails_then_succeeds.delay("helper-flaky", 1)
        broken = tasks.failing_with_errorback.delay()
        run_ready_tasks()
        flaky.refresh_from_db()
        broken.refresh_from_db()
        self.assertEqual((flaky.status, flaky.retries), (Task.STATUS_SUCCESS, 1))
        self.assertEqual(broken.status, Task.STATUS_FAILURE)
        self.assertTrue(Record.objects.filter(key__startswith="errback:").exists())

    def test_max_tasks_stops_early(self):
        tasks.echo.delay()
        tasks.echo.delay()
        self.assertEqual(run_ready_tasks(max_tasks=1), 1)
        self.assertEqual(Task.objects.filter(status=Task.STATUS_QUEUED).count(), 1)
