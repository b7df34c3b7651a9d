"""`make bench`: cq's own numbers on this machine, printed as a table and written as JSON.

It creates the PostgreSQL database cq_bench, starts `cq_runworker -c 2` itself, and runs:
enqueue rates (one `.delay()` at a time, `delay_many`, and Django's `Task.enqueue()` through
cq.backends), end-to-end throughput of no-op tasks (bulk, and one producer of each API),
idle latency, latency under load, a fan-out of 1,000 subtasks, a chord of 1,000, a chain of
200, CPU seconds per 1,000 tasks and the peak RSS of a worker process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.cpu import Meter  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
OUT = ROOT / "bench" / "results"
SIZE = int(os.environ.get("BENCH_TASKS", "5000"))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def say(message: str) -> None:
    print(message, flush=True)


def create_database() -> None:
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db["NAME"]}"')
        conn.execute(f'CREATE DATABASE "{db["NAME"]}"')


def flush_redis() -> None:
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(client.scan_iter("cqbench*"))
    if keys:
        client.delete(*keys)


def wait_done(ids_or_filter, timeout: float = 600) -> float:
    """Poll until no task of the filter is unfinished; returns when that was seen."""
    from cq.models import Task

    deadline = time.monotonic() + timeout
    while Task.objects.filter(**ids_or_filter).exclude(status__in=Task.STATUS_DONE).exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: tasks did not finish within {timeout} s")
        time.sleep(0.005)
    return time.perf_counter()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def latencies_ms(queryset) -> list[float]:
    return [(f - s).total_seconds() * 1000 for s, f in queryset.values_list("submitted", "finished")]


class Workers:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django", "cq_runworker", "-c", "2", "--no-scheduler"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        from cq.models import Worker

        deadline = time.monotonic() + 60
        while Worker.objects.filter(stopped__isnull=True).count() < 2:
            if time.monotonic() > deadline:
                raise SystemExit("bench: the worker processes did not start")
            time.sleep(0.05)
        self.pids = list(Worker.objects.filter(stopped__isnull=True).values_list("pid", flat=True))
        from django.conf import settings

        self.meter = Meter(self.pids, self.process.pid, settings.REDIS_URL)

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / CLOCK_TICKS

    def peak_rss_mb(self) -> float:
        peaks = []
        for pid in self.pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        return max(peaks)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


def main() -> int:
    import django

    create_database()
    django.setup()
    from django.core.management import call_command
    from django.db import transaction

    from bench.benchapp.tasks import django_noop, fan_out, noop, total
    from cq.canvas import chord
    from cq.models import Task

    call_command("migrate", verbosity=0)
    flush_redis()
    results: dict[str, float] = {}

    say(f"Enqueue: {SIZE // 2} single .delay() calls, then {SIZE * 2} with delay_many (no workers running)")
    start = time.perf_counter()
    for i in range(SIZE // 2):
        noop.delay(i)
    results["enqueue_single_per_s"] = SIZE // 2 / (time.perf_counter() - start)
    start = time.perf_counter()
    with transaction.atomic():
        noop.delay_many([(i,) for i in range(SIZE * 2)])
    results["enqueue_bulk_per_s"] = SIZE * 2 / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(SIZE // 2):
        django_noop.enqueue(i)
    results["enqueue_django_per_s"] = SIZE // 2 / (time.perf_counter() - start)
    Task.objects.all().delete()
    flush_redis()

    workers = Workers()
    try:
        # Idle latency first, on a table not yet churned by the throughput runs.
        say("Idle latency: 200 tasks, one at a time")
        for i in range(200):
            task = noop.delay(i)
            wait_done({"pk": task.pk})
        idle = latencies_ms(Task.objects.all())
        results["idle_latency_p50_ms"] = percentile(idle, 50)
        results["idle_latency_p95_ms"] = percentile(idle, 95)
        Task.objects.all().delete()

        say(f"Throughput: {SIZE} no-op tasks enqueued in bulk, run by 2 worker processes")
        cpu = workers.cpu_seconds()
        start = time.perf_counter()
        noop.delay_many([(i,) for i in range(SIZE)])
        end = wait_done({})
        results["throughput_bulk_per_s"] = SIZE / (end - start)
        results["cpu_s_per_1000"] = (workers.cpu_seconds() - cpu) / SIZE * 1000
        Task.objects.all().delete()

        say(f"Throughput: one producer calling .delay() {SIZE} times while the workers run")
        cpu_before = workers.meter.read()
        start = time.perf_counter()
        for i in range(SIZE):
            noop.delay(i)
        end = wait_done({})
        for part, seconds in Meter.since(cpu_before, workers.meter.read()).items():
            results[f"cpu_ms_per_task_{part}"] = seconds / SIZE * 1000
        results["cpu_ms_per_task"] = sum(results[f"cpu_ms_per_task_{part}"] for part in Meter.PARTS)
        results["throughput_single_producer_per_s"] = SIZE / (end - start)
        under_load = latencies_ms(Task.objects.all())
        results["latency_under_load_p50_ms"] = percentile(under_load, 50)
        results["latency_under_load_p95_ms"] = percentile(under_load, 95)
        Task.objects.all().delete()

        say(f"Throughput: one producer calling Django's enqueue() {SIZE // 2} times while the workers run")
        start = time.perf_counter()
        for i in range(SIZE // 2):
            django_noop.enqueue(i)
        end = wait_done({})
        results["throughput_django_producer_per_s"] = SIZE // 2 / (end - start)
        Task.objects.all().delete()

        say("Fan-out: one task with 1,000 subtasks")
        start = time.perf_counter()
        parent = fan_out.delay(1000)
        results["fan_out_1000_s"] = wait_done({"pk": parent.pk}) - start
        Task.objects.all().delete()

        say("Chord: 1,000 members, then a callback with their 1,000 results")
        start = time.perf_counter()
        done = chord([noop.s(i) for i in range(1000)])(total.s())
        results["chord_1000_s"] = wait_done({"pk": done.pk}) - start
        assert done.wait().result == 1000
        Task.objects.all().delete()

        say("Chain: 200 tasks one after another")
        start = time.perf_counter()
        with transaction.atomic():
            first = last = noop.delay(0)
            for i in range(1, 200):
                last = last.chain(noop, (i,))
        end = wait_done({"pk": last.pk})
        results["chain_200_s"] = end - start
        assert first.wait().status == Task.STATUS_SUCCESS
        results["worker_peak_rss_mb"] = workers.peak_rss_mb()
    finally:
        workers.stop()

    rows = [
        ("enqueue, single .delay()", "enqueue_single_per_s", "tasks/s"),
        ("enqueue, delay_many", "enqueue_bulk_per_s", "tasks/s"),
        ("enqueue, Django's Task.enqueue()", "enqueue_django_per_s", "tasks/s"),
        ("end to end, bulk enqueue", "throughput_bulk_per_s", "tasks/s"),
        ("end to end, one producer .delay()", "throughput_single_producer_per_s", "tasks/s"),
        ("end to end, one producer enqueue()", "throughput_django_producer_per_s", "tasks/s"),
        ("idle latency p50", "idle_latency_p50_ms", "ms"),
        ("idle latency p95", "idle_latency_p95_ms", "ms"),
        ("latency under load p50", "latency_under_load_p50_ms", "ms"),
        ("latency under load p95", "latency_under_load_p95_ms", "ms"),
        ("fan-out of 1,000 subtasks", "fan_out_1000_s", "s"),
        ("chord of 1,000 and its callback", "chord_1000_s", "s"),
        ("chain of 200", "chain_200_s", "s"),
        ("worker CPU per 1,000 tasks", "cpu_s_per_1000", "s"),
        ("worker peak RSS", "worker_peak_rss_mb", "MB"),
    ]
    say("")
    say(f"| {'measure':<36} | {'cq':>10} | unit    |")
    say(f"|{'-' * 38}|{'-' * 12}|---------|")
    for label, key, unit in rows:
        say(f"| {label:<36} | {results[key]:>10,.1f} | {unit:<7} |")
    OUT.mkdir(exist_ok=True)
    (OUT / "cq.json").write_text(json.dumps({"size": SIZE, **results}, indent=2))
    say(f"\nWritten to {(OUT / 'cq.json').relative_to(ROOT)}. One run: repeat it to see the spread "
        f"(differences under about 20% are noise here).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
