"""OpenTelemetry across processes: a ``cq_runworker`` process continues the caller's trace; and cq
without the package installed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from cq.models import Task
from tests.helpers import ROOT, eventually, process_env
from tests.otel import in_memory, request_span
from tests.testapp import tasks

pytestmark = pytest.mark.django_db(transaction=True)


def read_spans(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_worker_process_runs_the_task_in_a_child_of_the_callers_span(start_worker, tmp_path, monkeypatch):
    # Given a worker process whose tracer provider writes its spans to a file (tests.testapp's ready())
    in_memory(monkeypatch)
    path = tmp_path / "spans.jsonl"
    worker = start_worker("-c", "1", settings={"TEST_TRACE_FILE": str(path)})
    # When a task that makes a subtask and a chain is delayed in a request's span
    with request_span() as request:
        task = tasks.subtask_then_chain.delay()
    # Then the worker's spans are of the caller's trace: the task's a child of the request's
    written = eventually(lambda: [span for span in read_spans(path) if span["name"] == tasks.add_previous.name],
                         60, "the worker to export the chained task's span")
    assert worker.stop() == 0, worker.output
    assert Task.objects.get(pk=task.pk).result == 5
    by_name = {span["name"]: span for span in read_spans(path)}
    run, subtask, chained = (by_name[fn.name] for fn in (tasks.subtask_then_chain, tasks.three, tasks.add_previous))
    context = request.get_span_context()
    assert run["context"]["trace_id"] == f"0x{context.trace_id:032x}"
    assert run["parent_id"] == f"0x{context.span_id:016x}"
    assert run["kind"] == "SpanKind.CONSUMER"
    assert run["attributes"] == {"cq.task.id": str(task.pk), "cq.task.queue": "default", "cq.task.attempt": 1,
                                 "cq.task.status": "WAITING"}
    assert subtask["parent_id"] == written[0]["parent_id"] == run["context"]["span_id"]
    assert {span["context"]["trace_id"] for span in (subtask, chained)} == {run["context"]["trace_id"]}


#: Run in a process where ``import opentelemetry`` fails: a task is queued, run by a worker and run inline.
WITHOUT = textwrap.dedent("""
    import sys
    sys.modules["opentelemetry"] = None  # as if the package were not installed
    import django
    django.setup()
    from cq.engine import tracing
    from cq.workers.worker import Worker
    from tests.testapp import tasks
    task = tasks.subtask_then_chain.delay()
    Worker(queued_grace=3600, name="no-otel").drain()
    task.wait(10_000)
    print(json.dumps({"enabled": tracing.ENABLED, "status": task.status, "result": task.result,
                      "trace": task.trace, "inline": tasks.add(2, 3),
                      "loaded": sorted(name for name, module in sys.modules.items()
                                       if name.startswith("opentelemetry") and module is not None)}))
""")


def test_cq_queues_and_runs_tasks_without_opentelemetry_installed():
    env = process_env()
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    done = subprocess.run([sys.executable, "-c", "import json\n" + WITHOUT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {"enabled": False, "status": "S", "result": 5, "trace": None, "inline": 5, "loaded": []}
