"""OpenTelemetry: a task keeps its caller's trace context, and each run is a span of that trace.

The spans are read with the SDK's in-memory exporter, from tasks run by cq's Worker in this
process against the real database and Redis.
"""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from cq.canvas import chord
from cq.models import Task
from tests.otel import in_memory, request_span
from tests.testapp import jobs, tasks

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def spans(monkeypatch):
    return in_memory(monkeypatch)


def finished(exporter: InMemorySpanExporter) -> dict[str, list]:
    """The spans ended so far, by name."""
    found: dict[str, list] = {}
    for span in exporter.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


def test_a_request_its_task_a_subtask_and_a_chained_task_form_one_trace(spans, drain):
    # Given a task delayed while a request's span is current
    with request_span() as request:
        task = tasks.subtask_then_chain.delay()
    # When the worker runs it, its subtask, and the task chained after that subtask
    drain()
    assert task.wait(10_000).result == 5
    by_name = finished(spans)
    [run] = by_name[tasks.subtask_then_chain.name]
    [subtask], [chained] = by_name[tasks.three.name], by_name[tasks.add_previous.name]
    # Then all are one trace: the task a child of the request, the others children of the task
    trace_id = request.get_span_context().trace_id
    assert {span.context.trace_id for span in (run, subtask, chained)} == {trace_id}
    assert run.parent.span_id == request.get_span_context().span_id
    assert run.parent.is_remote
    assert subtask.parent.span_id == chained.parent.span_id == run.context.span_id
    # and each is a consumer's span, with the run's task, queue, attempt and status
    assert {span.kind for span in (run, subtask, chained)} == {SpanKind.CONSUMER}
    assert dict(run.attributes) == {"cq.task.id": str(task.pk), "cq.task.queue": "default",
                                    "cq.task.attempt": 1, "cq.task.status": "WAITING"}
    assert subtask.attributes["cq.task.status"] == chained.attributes["cq.task.status"] == "SUCCESS"
    assert subtask.status.status_code == StatusCode.UNSET


def test_the_row_keeps_the_callers_context_as_w3c_traceparent(spans):
    with request_span() as request:
        task = tasks.add.delay(1, 2)
    context = request.get_span_context()
    stored = Task.objects.get(pk=task.pk).trace
    flags = int(context.trace_flags)
    assert stored == {"traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"}


def test_a_failing_task_ends_its_span_in_error_with_the_exception(spans, drain):
    with request_span():
        tasks.failing.delay("boom")
    drain()
    [span] = finished(spans)[tasks.failing.name]
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "boom"
    assert span.attributes["cq.task.status"] == "FAILURE"
    [event] = span.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "builtins.ValueError"
    assert "raise ValueError(message)" in event.attributes["exception.stacktrace"]


def test_a_run_to_be_retried_ends_in_error_and_the_next_attempt_is_a_sibling(spans, drain):
    with request_span() as request:
        task = tasks.fails_then_succeeds.delay("retried-trace", 1)
    drain()
    assert task.wait(10_000).status == Task.STATUS_SUCCESS
    first, second = sorted(finished(spans)[tasks.fails_then_succeeds.name], key=lambda span: span.start_time)
    assert (first.attributes["cq.task.attempt"], first.attributes["cq.task.status"]) == (1, "RETRY")
    assert first.status.status_code == StatusCode.ERROR
    assert (second.attributes["cq.task.attempt"], second.attributes["cq.task.status"]) == (2, "SUCCESS")
    assert first.parent.span_id == second.parent.span_id == request.get_span_context().span_id


def test_a_lone_task_has_its_span_when_its_success_takes_the_fast_path(spans, drain):
    # No parent, no chain, no subtask: its outcome is one UPDATE (outcomes.succeed_alone)
    with request_span() as request:
        task = tasks.add.delay(2, 3)
    drain()
    [span] = finished(spans)[tasks.add.name]
    assert span.attributes["cq.task.status"] == "SUCCESS"
    assert span.parent.span_id == request.get_span_context().span_id
    assert task.wait(10_000).result == 5


def test_quick_tasks_run_in_one_batch_each_have_a_span_ended_with_the_batch(spans, worker, monkeypatch):
    monkeypatch.setattr("cq.workers.worker.QUICK", 1.0)  # as in test_batch: claim several at a time
    tasks.noop.delay()
    worker.run_once(0)
    worker.run_once(0)
    spans.clear()
    with request_span() as request:
        created = tasks.add.delay_many([(i, i) for i in range(3)])
    assert worker.run_once(0) == 3
    runs = finished(spans)[tasks.add.name]
    assert sorted(span.attributes["cq.task.id"] for span in runs) == sorted(str(t.pk) for t in created)
    assert {span.attributes["cq.task.status"] for span in runs} == {"SUCCESS"}
    assert {span.parent.span_id for span in runs} == {request.get_span_context().span_id}
    if connection.vendor == "postgresql":  # one batch: every span ends once all its tasks have run
        assert min(span.end_time for span in runs) >= max(span.start_time for span in runs)


def test_a_workflow_made_by_the_caller_and_its_callback_made_later_keep_the_callers_trace(spans, drain):
    with request_span() as request:
        workflow = chord([tasks.add.s(1, 2), tasks.add.s(3, 4)])(tasks.echo.s())
    drain()
    assert workflow.wait(10_000).status == Task.STATUS_SUCCESS
    by_name = finished(spans)
    # The callback's row was written by the engine, as the header's last member finished.
    members, [callback] = by_name[tasks.add.name], by_name[tasks.echo.name]
    assert callback.attributes["cq.task.status"] == "SUCCESS"
    assert {span.parent.span_id for span in [*members, callback]} == {request.get_span_context().span_id}


def test_a_task_chained_by_the_caller_is_a_child_of_the_callers_span(spans, drain):
    with request_span() as request:
        first = tasks.three.delay()
        first.chain(tasks.add_previous, (1,))
    drain()
    [chained] = finished(spans)[tasks.add_previous.name]
    assert chained.parent.span_id == request.get_span_context().span_id


def test_submit_under_a_span_takes_that_spans_context(spans, drain):
    task = tasks.add.delay_args((1, 1), submit=False)
    assert Task.objects.get(pk=task.pk).trace is None
    with request_span() as request:
        task.submit()
    drain()
    [span] = finished(spans)[tasks.add.name]
    assert span.parent.span_id == request.get_span_context().span_id


def test_a_django_task_enqueued_in_a_request_runs_in_a_child_span(spans, drain):
    with request_span() as request:
        result = jobs.meaning_of_life.enqueue()
    drain()
    [span] = finished(spans)[jobs.meaning_of_life.module_path]
    assert span.attributes["cq.task.id"] == result.id
    assert span.attributes["cq.task.status"] == "SUCCESS"
    assert span.parent.span_id == request.get_span_context().span_id


def test_an_untraced_delay_stores_null_and_writes_no_trace_column(spans):
    with CaptureQueriesContext(connection) as captured:
        task = tasks.add.delay(1, 2)
    assert Task.objects.get(pk=task.pk).trace is None
    [insert] = [query["sql"] for query in captured.captured_queries if query["sql"].startswith("INSERT")]
    assert '"trace"' not in insert


def test_with_no_sdk_nothing_is_stored_and_a_runs_context_is_passed_on(spans, drain, monkeypatch):
    # Given a row traced by a caller with the SDK
    with request_span() as request:
        task = tasks.spawns_subtask_returns_own.delay()
    stored = Task.objects.get(pk=task.pk).trace
    # When no SDK is configured (the API's own no-op provider)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    with trace.get_tracer("tests").start_as_current_span("untraced"):
        assert tasks.add.delay(1, 2).trace is None
    drain()
    # Then its run records no span, yet the subtask it made keeps the caller's context
    assert task.wait(10_000).status == Task.STATUS_SUCCESS
    assert tasks.spawns_subtask_returns_own.name not in finished(spans)
    subtask = Task.objects.get(parent=task.pk)
    assert subtask.trace == stored
    assert f"{request.get_span_context().span_id:016x}" in stored["traceparent"]


def test_with_no_provider_a_row_without_context_makes_no_span_at_all(monkeypatch):
    # A worker of an untraced project pays nothing for the API being installed
    from contextlib import nullcontext

    from cq.engine import tracing

    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    untraced = tasks.add.delay(1, 2)
    assert untraced.trace is None
    assert isinstance(tracing.running(untraced), nullcontext)
    untraced.trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    assert not isinstance(tracing.running(untraced), nullcontext)  # a context to pass on


def test_an_inline_run_is_a_span_under_the_current_one(spans, settings):
    settings.CQ_SERIAL = True
    with request_span() as request:
        assert tasks.subtask_then_chain.delay().result == 5
        with pytest.raises(ValueError):
            tasks.failing("inline")
    by_name = finished(spans)
    [run], [subtask] = by_name[tasks.subtask_then_chain.name], by_name[tasks.three.name]
    [failed] = by_name[tasks.failing.name]
    assert run.parent.span_id == failed.parent.span_id == request.get_span_context().span_id
    assert subtask.parent.span_id == run.context.span_id
    assert run.kind == SpanKind.INTERNAL and run.attributes["cq.task.inline"] is True
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.attributes["cq.task.status"] == "FAILURE"


def test_a_task_delayed_in_a_transaction_keeps_the_context_current_at_delay(spans, drain):
    with transaction.atomic():
        with request_span() as request:
            task = tasks.add.delay(1, 1)
    drain()
    [span] = finished(spans)[tasks.add.name]
    assert span.parent.span_id == request.get_span_context().span_id
    assert task.wait(10_000).result == 2
