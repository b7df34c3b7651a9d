"""Signatures, groups, chords and stages, through the real channel layer and worker loop."""

from __future__ import annotations

import dataclasses

import pytest

from cq.exceptions import InvalidTask, TaskNotRegistered
from cq.models import Task
from cq.signatures import signature
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = pytest.mark.django_db(transaction=True)


def plain(value: object) -> object:
    return value


# -- Signatures ---------------------------------------------------------------------------


def test_signature_keeps_the_function_its_arguments_and_queue():
    sig = tasks.power.s(2, exponent=10)
    assert (sig.name, sig.args, dict(sig.kwargs), sig.queue) == (tasks.power.name, (2,), {"exponent": 10}, "default")
    assert tasks.report.s("x").queue == "reports"
    assert sig.set(queue="reports").queue == "reports" and sig.queue == "default"


def test_signature_cannot_be_changed_after_it_is_made():
    numbers = [1, 2]
    sig = tasks.echo.s(numbers, key={"a": 1})
    numbers.append(3)
    assert sig.args == ([1, 2],)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sig.name = "other"
    with pytest.raises(TypeError):
        sig.kwargs["key"] = 2


def test_signature_with_arguments_that_are_not_json_is_refused():
    with pytest.raises(InvalidTask, match="args of task 'echo' are not JSON-serialisable"):
        tasks.echo.s(object())
    with pytest.raises(InvalidTask, match="kwargs of task 'echo' are not JSON-serialisable"):
        signature("echo", kwargs={"when": {1, 2}})


def test_signature_of_an_unregistered_function_is_refused():
    with pytest.raises(TaskNotRegistered, match="'no.such.task'"):
        signature("no.such.task")
    with pytest.raises(TaskNotRegistered, match="decorate it with @cq.task"):
        signature(plain)
    with pytest.raises(InvalidTask, match="Queue 'Bad Queue'"):
        tasks.echo.s().set(queue="Bad Queue")


def test_signature_delay_queues_one_task_with_its_errbacks(drain):
    task = tasks.failing.s("boom").on_error(tasks.record_errorback, key="sig").delay()
    assert drain() == 1
    assert task.wait().status == Task.STATUS_FAILURE
    assert Record.objects.filter(key=f"sig:{tasks.failing.name}:ValueError:boom").count() == 1
