"""Retention rules (cq.retention): parsing, matching, the system check, and the expiry every
finishing path gives a task by them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from cq import checks, registry, retention
from cq.engine.transitions import outcomes
from cq.models import Task, TaskStatus, Worker
from cq.scheduling import sweeper
from tests.testapp import tasks

WRITES = registry.name_of(tasks.writes_then_maybe_fails_atomic)
NOOP = registry.name_of(tasks.noop)
RULES = [
    {"function": "echo", "status": "SUCCESS", "keep": 60},
    {"function": [WRITES], "status": TaskStatus.SUCCESS, "keep": timedelta(minutes=2)},
    {"function": NOOP, "keep": None},
    {"status": ["failure", "L", "Revoked", "INCOMPLETE"], "keep": timedelta(days=2)},
]


# -- parsing and matching -------------------------------------------------------------------


def test_rules_parse_names_codes_labels_and_timedeltas():
    rules = retention.parse(RULES)
    assert rules[0] == retention.Rule(frozenset({"echo"}), frozenset({TaskStatus.SUCCESS}), 60)
    assert rules[1].keep == 120
    assert (rules[2].statuses, rules[2].keep) == (None, None)
    assert rules[3].functions is None
    assert rules[3].statuses == {TaskStatus.FAILURE, TaskStatus.LOST, TaskStatus.REVOKED, TaskStatus.INCOMPLETE}


def test_first_matching_rule_wins_then_result_ttl_setting(settings):
    settings.CQ_RETENTION = [*RULES, {"function": "echo", "keep": 1}]
    settings.CQ_RESULT_TTL = 999
    assert retention.keep("echo", TaskStatus.SUCCESS) == 60
    assert retention.keep("echo", TaskStatus.FAILURE) == 2 * 86400  # the failure rule comes first
    assert retention.keep(NOOP, TaskStatus.FAILURE) is None
    assert retention.keep("other", TaskStatus.SUCCESS) == 999
    assert retention.keep("echo", TaskStatus.SUCCESS, result_ttl=5) == 5  # a task's own wins


def test_a_change_of_settings_is_seen(settings):
    settings.CQ_RETENTION = [{"function": "echo", "keep": 10}]
    assert retention.keep("echo", TaskStatus.SUCCESS) == 10
    settings.CQ_RETENTION = [{"function": "echo", "keep": 20}]
    assert retention.keep("echo", TaskStatus.SUCCESS) == 20
    settings.CQ_RETENTION = None
    settings.CQ_RESULT_TTL = None
    assert retention.keep("echo", TaskStatus.SUCCESS) is None


@pytest.mark.parametrize(("value", "message"), [
    ({"keep": 1}, "CQ_RETENTION is a list of rules"),
    (["keep"], r"CQ_RETENTION\[0\] \('keep'\): a rule is a dict"),
    ([{"keep": 1}, {"status": "S"}], r'CQ_RETENTION\[1\] .*"keep" is missing'),
    ([{"statuses": "S", "keep": 1}], "unknown key\\(s\\) 'statuses'"),
    ([{"status": "RUNNING", "keep": 1}], "takes final statuses .*SUCCESS.*, not 'RUNNING'"),
    ([{"status": ["S", "X"], "keep": 1}], "not 'X'"),
    ([{"function": 3, "keep": 1}], '"function" is a task function'),
    ([{"function": "echo", "keep": -1}], '"keep" is seconds .* not -1'),
    ([{"function": "echo", "keep": "1h"}], "not '1h'"),
    ([{"function": "echo", "keep": True}], "not True"),
])
def test_a_bad_rule_is_named(value, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        retention.parse(value)


def test_the_system_check_reports_bad_rules_and_unknown_functions(settings):
    settings.CQ_RETENTION = [{"status": "QUEUED", "keep": 1}]
    [error] = checks.check_retention()
    assert (error.id, error.level) == ("cq.E004", 40)
    assert "CQ_RETENTION[0]" in error.msg
    settings.CQ_RETENTION = [{"function": ["echo", "no.such.task"], "keep": 1}]
    [warning] = checks.check_retention()
    assert warning.id == "cq.W003" and "'no.such.task'" in warning.msg
    settings.CQ_RETENTION = RULES
    assert checks.check_retention() == []


# -- the finishing paths --------------------------------------------------------------------


@pytest.fixture
def rules(settings):
    settings.CQ_RETENTION = RULES
    settings.CQ_RESULT_TTL = 3600


def kept(task: Task) -> timedelta | None:
    """How long ``task``, now finished, is kept: its result_expiry less its finish."""
    task.refresh_from_db()
    assert task.finished is not None, task.status
    return None if task.result_expiry is None else task.result_expiry - task.finished


def spy(monkeypatch, name: str) -> list:
    calls: list = []
    original = getattr(outcomes, name)

    def wrapper(*args, **kwargs):
        found = original(*args, **kwargs)
        calls.append(found)
        return found

    monkeypatch.setattr(outcomes, name, wrapper)
    return calls


@pytest.mark.django_db(transaction=True)
def test_lone_fast_path_and_normal_outcome_keep_by_rule(rules, drain, monkeypatch):
    alone = spy(monkeypatch, "succeed_alone")
    echoed = tasks.echo.delay()
    drain()
    assert alone == [True]  # a fresh worker's first task, which made no query: one statement
    assert kept(echoed) == timedelta(seconds=60)
    alone.clear()
    written = tasks.writes_then_maybe_fails_atomic.delay("k", False)
    drain()
    assert alone == []  # it wrote a row: the usual outcome, in its transaction
    assert kept(written) == timedelta(minutes=2)
    other, mine = tasks.add.delay(1, 2), tasks.echo.delay_args(result_ttl=7)
    drain()
    assert kept(other) == timedelta(seconds=3600)
    assert kept(mine) == timedelta(seconds=7)


@pytest.mark.django_db(transaction=True)
def test_failure_revoke_lost_and_incomplete_keep_by_rule(rules, drain):
    failed, forever = tasks.failing.delay(), tasks.noop.delay()
    drain()
    assert kept(failed) == timedelta(days=2)
    assert kept(forever) is None
    revoked = tasks.echo.delay()
    revoked.revoke()
    assert kept(revoked) == timedelta(days=2)
    running = tasks.echo.delay()
    Task.objects.filter(pk=running.pk).update(status=TaskStatus.RUNNING, worker="ghost:1",
                                               started=timezone.now() - timedelta(minutes=5))
    Worker.objects.create(name="ghost:1", host="ghost", pid=1, last_heartbeat=timezone.now() - timedelta(minutes=5))
    assert sweeper.find_lost() == 1
    assert Task.objects.get(pk=running.pk).status == TaskStatus.LOST
    assert kept(running) == timedelta(days=2)
    parent = tasks.returns_failing_subtask.delay()  # settled INCOMPLETE when its subtask fails
    drain()
    assert Task.objects.get(pk=parent.pk).status == TaskStatus.INCOMPLETE
    assert kept(parent) == timedelta(days=2)


@pytest.mark.postgres  # batches of outcomes are PostgreSQL's: `make test` runs this in its PostgreSQL pass
@pytest.mark.django_db(transaction=True)
def test_batch_outcomes_keep_by_rule(rules, worker, monkeypatch):
    monkeypatch.setattr("cq.workers.worker.QUICK", 1.0)
    tasks.noop.delay()
    worker.run_once(0)  # a quick task: the worker now claims several doorbells at a time
    worker.run_once(0)
    many = spy(monkeypatch, "succeed_many")
    with transaction.atomic():  # the doorbells ring together, at the commit
        echoed = [tasks.echo.delay(i) for i in range(3)]
        others = [tasks.add.delay(i, i) for i in range(2)]
        forever = tasks.noop.delay()
    assert worker.run_once(0) == 6
    assert many, "the batch's outcomes were not written together"
    assert [kept(t) for t in echoed] == [timedelta(seconds=60)] * 3
    assert [kept(t) for t in others] == [timedelta(seconds=3600)] * 2
    assert kept(forever) is None


@pytest.mark.django_db(transaction=True)
def test_revoking_a_chain_keeps_each_task_by_its_own_function(rules):
    first = tasks.echo.delay_args(submit=False)
    forever = first.chain(tasks.noop)
    last = forever.chain(tasks.add, (1, 2))
    first.revoke()
    assert [Task.objects.get(pk=t.pk).status for t in (first, forever, last)] == [TaskStatus.REVOKED] * 3
    assert (kept(first), kept(forever), kept(last)) == (timedelta(days=2), None, timedelta(days=2))
