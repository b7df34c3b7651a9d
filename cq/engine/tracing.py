"""Tracing with OpenTelemetry: the caller's trace context kept with each task, each run a span.

With ``opentelemetry-api`` installed (``pip install 'cq[opentelemetry]'``), a task created
while a span is current (a traced web request, another task's run) keeps that span's context
in its row's ``trace`` column, as the global propagator writes it (W3C ``traceparent``, plus
``tracestate`` and baggage when there are any). With no current span it keeps nothing, so
an untraced project writes no ``trace`` column at all.

A worker runs each task inside a span of kind CONSUMER named after its function, a child of
the context its row keeps, current while the function runs: the tasks it creates (subtasks,
chains, workflows) keep this span's context in turn, so a whole tree of tasks is one trace.
The span ends once the outcome is recorded, with the task's id, queue, attempt and status as
attributes (``cq.task.*``); a failed run (FAILURE, RETRY, LOST) has an error status and an
``exception`` event from the row's error. Rows the engine writes later for a workflow (a
stage, a chord's callback) take their workflow's context, the one its caller had.

Without the package nothing here does more than check one module-level name; with the API
but no tracer provider set, a run whose row keeps no context makes no span at all, and one
whose row keeps one makes OpenTelemetry's no-op span, nothing but a carrier of the caller's
context, which still reaches the tasks it creates. Configuring a tracer provider
is the project's business (docs/howto/operating.md).
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..statuses import ERROR, TaskStatus

try:
    from opentelemetry import context, propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError:  # the optional extra is not installed: nothing is traced
    trace = None  # type: ignore[assignment]

#: Whether ``opentelemetry-api`` is installed; read once, when cq is imported.
ENABLED = trace is not None
#: Statuses whose span ends in error: the run failed, even if a retry is to come.
FAILED = ERROR | {TaskStatus.RETRY}
_NOTHING = contextlib.nullcontext()
_tracer: tuple[Any, Any] = (None, None)  # (provider, its tracer for cq)


def carrier() -> dict[str, str] | None:
    """The current span's context, as a new row keeps it; ``None`` with no valid current span."""
    if trace is None:
        return None
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    found: dict[str, str] = {}
    propagate.inject(found)
    return found or None


def _get_tracer() -> Any:
    """cq's tracer from the tracer provider in force (looked up again when it changes: a
    project may set its provider after cq made its first span)."""
    global _tracer
    provider = trace.get_tracer_provider()
    if _tracer[0] is not provider:
        _tracer = (provider, provider.get_tracer("cq"))
    return _tracer[1]


def _provided() -> bool:
    """Whether the project set a tracer provider: OpenTelemetry's stand-ins (before one is set,
    or the no-op one) record nothing."""
    return not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def running(task: Any, pending: list[Any] | None = None) -> Any:
    """Around a worker's run of ``task``: its span, current meanwhile. With ``pending`` (a batch's
    list) the span is left open there, for :func:`finish` once the batch's outcome is written."""
    if trace is None or (task.trace is None and not _provided()):
        return _NOTHING  # no context to pass on, and nothing would record a span
    return _Run(task, task.func_name, SpanKind.CONSUMER, propagate.extract(task.trace or {}), pending,
                {"cq.task.id": str(task.pk), "cq.task.queue": task.queue, "cq.task.attempt": task.attempt})


def inline(task: Any) -> Any:
    """Around an inline run of ``task`` (a plain call, ``CQ_SERIAL``): its span, a child of the
    current one."""
    if trace is None:
        return _NOTHING
    return _Run(task, task.func_name, SpanKind.INTERNAL, context.get_current(), None,
                {"cq.task.id": str(task.id), "cq.task.inline": True})


def finish(runs: list[Any]) -> None:
    """End the spans a batch left open, with the outcomes its tasks now have."""
    ending, runs[:] = list(runs), []
    for run in ending:
        run.end()


class _Run:
    """A run's span: started and made current on entry; ended on exit, or later (see ``pending``)."""

    def __init__(self, task: Any, name: str, kind: Any, parent: Any, pending: list[Any] | None,
                 attributes: dict[str, Any]) -> None:
        self.task, self.pending = task, pending
        self.error: BaseException | None = None
        self.span = _get_tracer().start_span(name, context=parent, kind=kind, attributes=attributes)
        # With no SDK the span is the caller's context alone: it is passed on all the same.
        self.context = trace.set_span_in_context(self.span, parent)

    def __enter__(self) -> _Run:
        self.token = context.attach(self.context)
        return self

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> None:
        context.detach(self.token)
        self.error = error  # cq's own error (the task's are in its row), or a failed inline run's
        if self.pending is None:
            self.end()
        else:
            self.pending.append(self)

    def end(self) -> None:
        span, task = self.span, self.task
        if span.is_recording():
            status = TaskStatus(task.status)
            if status != TaskStatus.RUNNING:  # not a stale run, whose outcome was not recorded
                span.set_attribute("cq.task.status", status.name)
            if self.error is not None:
                span.record_exception(self.error)
                span.set_status(Status(StatusCode.ERROR, f"{type(self.error).__name__}: {self.error}"))
            elif status in FAILED:
                span.add_event("exception", {"exception.type": getattr(task, "exception", "") or "",
                                             "exception.message": task.error or "",
                                             "exception.stacktrace": getattr(task, "traceback", "") or ""})
                span.set_status(Status(StatusCode.ERROR, task.error or status.label))
        span.end()
