"""Pruning expired tasks in batches (cq.scheduling.pruning) and ``cq_maintenance --prune``."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db.models.signals import pre_delete
from django.utils import timezone

from cq.models import RepeatingTask, Task, TaskStatus, Worker
from cq.scheduling import pruning, sweeper

pytestmark = pytest.mark.django_db(transaction=True)

PAST = timezone.now() - timedelta(days=1)
LATER = timezone.now() + timedelta(days=1)


def finished(status: str = TaskStatus.SUCCESS, expiry=PAST, **fields) -> Task:
    return Task.objects.create(func_name="echo", status=status, finished=PAST, result_expiry=expiry, **fields)


def tree(expiry=PAST) -> tuple[Task, list[Task]]:
    """A top-level task with a subtask, the subtask's own subtask and a task chained after it."""
    top = finished(expiry=expiry)
    child = finished(parent=top, top=top, expiry=None)
    grandchild = finished(parent=child, top=top, expiry=None)
    chained = finished(parent=top, top=top, previous=child, expiry=None)
    Task.objects.filter(pk=top.pk).update(waiting_on=chained)
    return top, [child, grandchild, chained]


def left() -> set:
    return set(Task.objects.values_list("pk", flat=True))


@pytest.fixture(params=["set-wise", "django"])
def way(request):
    """Each test runs both ways: set-wise, and through Django's delete() (a receiver of the task
    model's delete signals makes pruning fall back to it)."""
    if request.param == "django":
        def receiver(**kwargs):
            pass
        pre_delete.connect(receiver, sender=Task)
        assert pruning._plan() is None
        yield request.param
        pre_delete.disconnect(receiver, sender=Task)
    else:
        assert pruning._plan() is not None
        yield request.param


def test_prune_deletes_trees_in_batches_and_nothing_else(way):
    # Given five expired trees, and tasks that must stay
    trees = [tree() for _ in range(5)]
    kept_top, kept_below = tree(expiry=LATER)  # not yet due
    active = Task.objects.create(func_name="echo", status=TaskStatus.RUNNING, result_expiry=PAST)
    forever = finished(expiry=None)
    lone_sub = finished(parent=kept_top, top=kept_top)  # due, but a subtask: it goes with its top
    after = finished(previous=trees[0][0], expiry=LATER)  # chained after a doomed top, in no tree
    waiting = Task.objects.create(func_name="echo", status=TaskStatus.WAITING, waiting_on=trees[1][1][0])
    failed = finished(TaskStatus.FAILURE)  # due, but a subtask of it still runs: the tree waits
    running = Task.objects.create(func_name="echo", status=TaskStatus.RUNNING, parent=failed, top=failed)
    Worker.objects.create(name="w:1", host="w", pid=1, current_task=trees[2][0])
    repeating = RepeatingTask.objects.create(func_name="echo", crontab="* * * * *", last_task=trees[3][0])
    survivors = {kept_top.pk, *(t.pk for t in kept_below), active.pk, forever.pk, lone_sub.pk, after.pk, waiting.pk,
                 failed.pk, running.pk}
    seen = []
    # When they are pruned two tops a batch
    pruned = pruning.prune(batch=2, progress=lambda p: seen.append((p.tops, p.rows)))
    # Then every tree went, each whole, in three batches, and nothing else did
    assert (pruned.tops, pruned.rows, pruned.batches) == (5, 20, 3)
    assert seen == [(2, 8), (4, 16), (5, 20)]
    assert left() == survivors
    after.refresh_from_db()
    waiting.refresh_from_db()
    repeating.refresh_from_db()
    assert (after.previous_id, waiting.waiting_on_id, repeating.last_task_id) == (None, None, None)
    assert Worker.objects.get(name="w:1").current_task_id is None
    assert Task.objects.get(pk=kept_below[2].pk).previous_id == kept_below[0].pk  # untouched
    assert pruning.prune() == pruning.Pruned()


def test_the_sweeper_prunes_within_its_budget(monkeypatch):
    for _ in range(3):
        tree()
    monkeypatch.setattr(sweeper, "PRUNE_BUDGET", 0.0)
    assert sweeper.delete_expired() == 0  # no time to spend: nothing done
    monkeypatch.setattr(sweeper, "PRUNE_BUDGET", 30.0)
    assert sweeper.sweep().expired == 12
    assert left() == set()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_maintenance_prune_draws_a_bar_on_a_terminal():
    for _ in range(3):
        tree()
    out = Terminal()
    call_command("cq_maintenance", "--prune", "--batch", "1", stdout=out)
    text = out.getvalue()
    assert text.startswith("Pruning: 3 task(s) due.\n")
    assert "\rPruning [##########....................] 1/3 task(s)" in text
    assert "\rPruning [##############################] 3/3 task(s)" in text
    assert text.rstrip().splitlines()[-1].startswith("Pruning: done, 3 task(s), 12 row(s) with their subtasks, "
                                                     "in 3 batch(es) in ")
    assert left() == set()


def test_maintenance_prune_writes_plain_lines_elsewhere(monkeypatch):
    for _ in range(3):
        tree()
    monkeypatch.setattr("cq.management.commands.cq_maintenance.Progress.EVERY", 0.0)
    out = io.StringIO()
    call_command("cq_maintenance", "--prune", "--batch", "2", stdout=out)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "#" not in out.getvalue()
    assert lines[0] == "Pruning: 3 task(s) due."
    assert lines[1].startswith("Pruning: 2/3 task(s), ") and lines[1].endswith(", 8 row(s)")
    assert lines[2].startswith("Pruning: 3/3 task(s), ")
    assert lines[3].startswith("Pruning: done, 3 task(s), 12 row(s) with their subtasks, in 2 batch(es)")
    assert left() == set()


def test_maintenance_reapply_rules_then_prune(settings):
    # Given tasks finished a day ago under a 30-day default
    old = [finished(expiry=PAST + timedelta(days=30)) for _ in range(3)]
    failed = finished(TaskStatus.FAILURE, expiry=PAST + timedelta(days=30))
    own = finished(expiry=PAST + timedelta(days=30), result_ttl=10 ** 7)  # its own result_ttl stays
    # When a rule now keeps successes an hour
    settings.CQ_RETENTION = [{"status": "SUCCESS", "keep": 3600}, {"status": "FAILURE", "keep": None}]
    out = io.StringIO()
    call_command("cq_maintenance", "--reapply-rules", "--prune", stdout=out)
    # Then the successes went, the failure is kept for ever, the task with its own TTL stays
    assert "Resolving expiry: done, 4 task(s)" in out.getvalue()  # not the one with its own
    assert "Pruning: done, 3 task(s)" in out.getvalue()
    assert left() == {failed.pk, own.pk}
    assert Task.objects.get(pk=failed.pk).result_expiry is None
    assert Task.objects.get(pk=own.pk).result_expiry == PAST + timedelta(days=30)
    assert all(t.pk not in left() for t in old)


def test_maintenance_refuses_a_batch_of_nothing():
    with pytest.raises(CommandError, match="--batch takes a number of tasks from 1, not 0"):
        call_command("cq_maintenance", "--prune", "--batch", "0")
