"""OpenTelemetry's SDK in the tests: a tracer provider of a test's own (in this process), and one
writing JSON lines to a file (in a worker process, installed by tests.testapp's AppConfig)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind


def in_memory(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """A tracer provider of the test's own, until it ends, exporting to memory. OpenTelemetry lets
    a process set its global provider only once; its own test helpers replace it this way."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    return exporter


def request_span() -> Any:
    """A web request's span, current within the block."""
    return trace.get_tracer("tests").start_as_current_span("request", kind=SpanKind.SERVER)


def export_to_file(path: str) -> None:
    """Make this process's tracer provider write each span, as it ends, as one JSON line to ``path``."""
    out = open(path, "a", encoding="utf-8")  # noqa: SIM115 -- open for the life of the process
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(
        ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")))
    trace.set_tracer_provider(provider)
