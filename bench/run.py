"""`make bench`: cq's own numbers on this machine, in two configurations side by side.

- **tuned** (bench/settings.py): ``CONN_MAX_AGE = None``, cq's own Redis layer for doorbells, no
  events layer, no scheduler.
- **defaults** (bench/settings_defaults.py): what a project gets from Django's defaults and the
  tutorial's layers: ``CONN_MAX_AGE`` left at 0, channels-redis's own layer for doorbells, live
  events on (a ``"default"`` layer) and the scheduler on.

Each configuration runs in a process of its own, on a fresh PostgreSQL database cq_bench (Redis
db 8), with ``cq_runworker -c 2`` started by the benchmark: enqueue rates (one ``.delay()`` at a
time, ``.delay()`` inside a transaction, ``delay_many``, Django's ``Task.enqueue()``), idle
latency, the drain of a 20,000-task backlog, end-to-end throughput with one producer (with the
CPU time of every process it passes through, read from /proc: the producer, the worker
processes, their supervisor, PostgreSQL and Redis), latency under that load, a fan-out of 1,000
subtasks, a chord of 1,000, a chain of 200. Then the task list's pages on a table of 10,000,000 tasks in a
database of its own (bench/listing.py; ``BENCH_LIST_ROWS`` sets the size).

With ``BENCH_BASELINE=<commit>`` (the Makefile sets the commit issue 16 started from) the
one-producer run is repeated on that commit's ``cq`` package, in the same sitting, so that the
speed-up is a ratio this machine's drift does not decide. The targets of issue 16 are printed
last, each marked met or missed. Figures are written to bench/results/cq.json.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
#: Where the ``cq`` package under test comes from: this checkout, or a baseline commit's (see main).
CQ_FROM = Path(os.environ.get("BENCH_CQ_FROM", ROOT))
sys.path.insert(0, str(CQ_FROM))
from bench import listing  # noqa: E402
from bench.cpu import Meter  # noqa: E402

OUT = ROOT / "bench" / "results"
SIZE = int(os.environ.get("BENCH_TASKS", "5000"))
DRAIN = int(os.environ.get("BENCH_DRAIN", "20000"))
CONFIGS = {"tuned": "bench.settings", "defaults": "bench.settings_defaults"}


def say(message: str) -> None:
    print(message, flush=True)


# --- one configuration, in a process of its own ------------------------------------------------

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
        from django.conf import settings

        from cq.models import Worker

        # `python -m` puts its working directory first on the path: the cq under test's.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "django", "cq_runworker", "-c", "2"]
            + ([] if settings.CQ_SCHEDULER else ["--no-scheduler"]),
            cwd=CQ_FROM, env={**os.environ, "PYTHONPATH": os.pathsep.join([str(CQ_FROM), str(ROOT)])})
        deadline = time.monotonic() + 60
        while Worker.objects.filter(stopped__isnull=True).count() < 2:
            if time.monotonic() > deadline:
                raise SystemExit("bench: the worker processes did not start")
            time.sleep(0.05)
        self.pids = list(Worker.objects.filter(stopped__isnull=True).values_list("pid", flat=True))
        self.meter = Meter(self.pids, self.process.pid, settings.REDIS_URL)

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


def one_producer(results: dict[str, float], workers: Workers) -> None:
    from bench.benchapp.tasks import noop
    from cq.models import Task

    say(f"  one producer calling .delay() {SIZE} times while the workers run")
    before = workers.meter.read()
    start = time.perf_counter()
    for i in range(SIZE):
        noop.delay(i)
    end = wait_done({})
    for part, seconds in Meter.since(before, workers.meter.read()).items():
        results[f"cpu_ms_per_task_{part}"] = seconds / SIZE * 1000
    results["cpu_ms_per_task"] = sum(results[f"cpu_ms_per_task_{part}"] for part in Meter.PARTS)
    results["throughput_single_producer_per_s"] = SIZE / (end - start)
    under_load = latencies_ms(Task.objects.all())
    results["latency_under_load_p50_ms"] = percentile(under_load, 50)
    results["latency_under_load_p95_ms"] = percentile(under_load, 95)
    Task.objects.all().delete()


def measure(only_producer: bool) -> dict[str, float]:
    import django

    create_database()
    django.setup()
    from django.core.management import call_command
    from django.db import transaction
    from django.utils import timezone

    from bench.benchapp.tasks import django_noop, fan_out, noop, total
    from cq.models import Task

    call_command("migrate", verbosity=0)
    flush_redis()
    results: dict[str, float] = {}
    if only_producer:
        workers = Workers()
        try:
            one_producer(results, workers)
        finally:
            workers.stop()
        return results

    from cq.canvas import chord

    say(f"  enqueue: {SIZE // 2} single .delay() calls, each alone and each in a transaction, "
        f"{SIZE * 2} with delay_many, {SIZE // 2} Django enqueue() (no workers running)")
    start = time.perf_counter()
    for i in range(SIZE // 2):
        noop.delay(i)
    results["enqueue_single_per_s"] = SIZE // 2 / (time.perf_counter() - start)
    inside = 0.0
    for i in range(SIZE // 2):
        with transaction.atomic():
            Task.objects.exists()  # the transaction's own work (a view's), which began it
            began = time.perf_counter()
            noop.delay(i)
            inside += time.perf_counter() - began
    results["delay_in_transaction_ms"] = inside / (SIZE // 2) * 1000
    start = time.perf_counter()
    with transaction.atomic():
        noop.delay_many([(i,) for i in range(SIZE * 2)])
    results["enqueue_bulk_per_s"] = SIZE * 2 / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(SIZE // 2):
        django_noop.enqueue(i)
    results["enqueue_django_per_s"] = SIZE // 2 / (time.perf_counter() - start)
    from cq.scheduling import pruning

    rows = Task.objects.update(status="S", finished=timezone.now(), result_expiry=timezone.now())
    say(f"  prune: the sweeper's batches delete those {rows:,} tasks, finished and expired")
    start = time.perf_counter()
    assert pruning.prune().rows == rows
    results["prune_per_s"] = rows / (time.perf_counter() - start)
    flush_redis()

    say(f"  drain: {DRAIN} tasks queued (delay_many) before the workers start")
    for first in range(0, DRAIN, 5000):
        noop.delay_many([(i,) for i in range(first, min(first + 5000, DRAIN))])
    workers = Workers()
    try:
        wait_done({})
        finished = Task.objects.order_by("finished").values_list("finished", flat=True)
        results["drain_per_s"] = (DRAIN - 1) / (finished.last() - finished.first()).total_seconds()
        Task.objects.all().delete()

        say("  idle latency: 200 tasks, one at a time")
        for i in range(200):
            task = noop.delay(i)
            wait_done({"pk": task.pk})
        idle = latencies_ms(Task.objects.all())
        results["idle_latency_p50_ms"] = percentile(idle, 50)
        results["idle_latency_p95_ms"] = percentile(idle, 95)
        Task.objects.all().delete()

        say(f"  throughput: {SIZE} no-op tasks enqueued in bulk while the workers run")
        start = time.perf_counter()
        noop.delay_many([(i,) for i in range(SIZE)])
        results["throughput_bulk_per_s"] = SIZE / (wait_done({}) - start)
        Task.objects.all().delete()

        one_producer(results, workers)

        say(f"  one producer calling Django's enqueue() {SIZE // 2} times while the workers run")
        start = time.perf_counter()
        for i in range(SIZE // 2):
            django_noop.enqueue(i)
        results["throughput_django_producer_per_s"] = SIZE // 2 / (wait_done({}) - start)
        Task.objects.all().delete()

        say("  fan-out: one task with 1,000 subtasks")
        start = time.perf_counter()
        parent = fan_out.delay(1000)
        results["fan_out_1000_s"] = wait_done({"pk": parent.pk}) - start
        Task.objects.all().delete()

        say("  chord: 1,000 members, then a callback with their 1,000 results")
        start = time.perf_counter()
        done = chord([noop.s(i) for i in range(1000)])(total.s())
        results["chord_1000_s"] = wait_done({"pk": done.pk}) - start
        assert done.wait().result == 1000
        Task.objects.all().delete()

        say("  chain: 200 tasks one after another")
        start = time.perf_counter()
        with transaction.atomic():
            first = last = noop.delay(0)
            for i in range(1, 200):
                last = last.chain(noop, (i,))
        results["chain_200_s"] = wait_done({"pk": last.pk}) - start
        assert first.wait().status == Task.STATUS_SUCCESS
        results["worker_peak_rss_mb"] = workers.peak_rss_mb()
    finally:
        workers.stop()
    return results


# --- the whole run ------------------------------------------------------------------------------

ROWS = [
    ("enqueue, single .delay()", "enqueue_single_per_s", "tasks/s"),
    (".delay() in a transaction, before the commit", "delay_in_transaction_ms", "ms"),
    ("enqueue, delay_many", "enqueue_bulk_per_s", "tasks/s"),
    ("enqueue, Django's Task.enqueue()", "enqueue_django_per_s", "tasks/s"),
    (f"drain of a {DRAIN:,}-task backlog", "drain_per_s", "tasks/s"),
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
    ("prune of finished tasks (sweeper's batches)", "prune_per_s", "rows/s"),
    ("worker peak RSS", "worker_peak_rss_mb", "MB"),
]

#: Issue 16's targets: (what, figure, configuration, at most (True) or at least, limit, unit).
TARGETS = [
    ("CPU per task, all processes, one producer", "cpu_ms_per_task", "tuned", True, 2.5, "ms"),
    ("end to end, one producer, vs the baseline commit", "speedup", "tuned", False, 3.0, "x"),
    ("the same with Django's defaults", "speedup", "defaults", False, 3.0, "x"),
    ("Django's defaults vs tuned, one producer", "defaults_ratio", "defaults", False, 0.8, "x"),
    ("idle latency p50", "idle_latency_p50_ms", "tuned", True, 3.0, "ms"),
    ("latency under load p95", "latency_under_load_p95_ms", "tuned", True, 10.0, "ms"),
    ("fan-out of 1,000 subtasks", "fan_out_1000_s", "tuned", True, 1.5, "s"),
    ("chain of 200", "chain_200_s", "tuned", True, 1.0, "s"),
    (".delay() in a transaction, before the commit", "delay_in_transaction_ms", "tuned", True, 0.5, "ms"),
]


def run_config(settings_module: str, *extra: str, cq_from: Path = ROOT, **env_extra: str) -> dict[str, float]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings_module, "BENCH_CQ_FROM": str(cq_from), **env_extra}
    done = subprocess.run([sys.executable, __file__, "--one", *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          text=True)
    print(done.stdout.rsplit("RESULT ", 1)[0], end="", flush=True)
    if done.returncode:
        raise SystemExit(f"bench: the {settings_module} run failed")
    return json.loads(done.stdout.rsplit("RESULT ", 1)[1])


def baseline_tree(commit: str, into: Path) -> Path:
    """The ``cq`` package of ``commit``, unpacked under ``into``."""
    archive = subprocess.run(["git", "archive", commit, "cq"], cwd=ROOT, stdout=subprocess.PIPE, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def mark(value: float, at_most: bool, limit: float) -> str:
    return "met" if (value <= limit if at_most else value >= limit) else "MISSED"


def report(found: dict[str, dict[str, float]]) -> None:
    tuned, defaults = found["tuned"], found["defaults"]
    say(f"\n| {'measure':<46} | {'tuned':>10} | {'defaults':>10} | unit    |")
    say(f"|{'-' * 48}|{'-' * 12}|{'-' * 12}|---------|")
    for label, key, unit in ROWS:
        say(f"| {label:<46} | {tuned[key]:>10,.2f} | {defaults[key]:>10,.2f} | {unit:<7} |")
    columns = [name for name in ("tuned", "defaults", "baseline-tuned", "baseline-defaults") if name in found]
    say("\nOne producer, end to end: CPU per task by process (ms; the sum is the target's figure), and the rate:")
    say("| " + f"{'process':<12} | " + " | ".join(f"{name:>17}" for name in columns) + " |")
    say(f"|{'-' * 14}|" + "|".join("-" * 19 for _ in columns) + "|")
    for part in (*Meter.PARTS, ""):
        key = f"cpu_ms_per_task_{part}" if part else "cpu_ms_per_task"
        say(f"| {part or 'all':<12} | " + " | ".join(f"{found[name][key]:>17.2f}" for name in columns) + " |")
    say(f"| {'tasks/s':<12} | " + " | ".join(f"{found[name]['throughput_single_producer_per_s']:>17,.0f}"
                                           for name in columns) + " |")
    tuned["defaults_ratio"] = defaults["throughput_single_producer_per_s"] / tuned["throughput_single_producer_per_s"]
    defaults["defaults_ratio"] = tuned["defaults_ratio"]
    for name in ("tuned", "defaults"):
        if f"baseline-{name}" in found:
            before = found[f"baseline-{name}"]["throughput_single_producer_per_s"]
            found[name]["speedup"] = found[name]["throughput_single_producer_per_s"] / before
    say("\nIssue 16's targets:")
    for label, key, config, at_most, limit, unit in TARGETS:
        if key not in found[config]:
            say(f"  {label:<52} not measured (set BENCH_BASELINE)")
            continue
        value = found[config][key]
        say(f"  {label:<52} {value:>8.2f} {unit:<3} ({'at most' if at_most else 'at least'} {limit:g}): "
            f"{mark(value, at_most, limit)}")


def main() -> int:
    found = {}
    for name, settings_module in CONFIGS.items():
        say(f"{name} ({settings_module}):")
        found[name] = run_config(settings_module)
    commit = os.environ.get("BENCH_BASELINE")
    if commit:
        with tempfile.TemporaryDirectory() as scratch:
            try:
                tree = baseline_tree(commit, Path(scratch))
            except (OSError, subprocess.CalledProcessError) as error:  # not a git checkout, or no such commit
                say(f"baseline: skipped, commit {commit} could not be read ({error})")
                commit = ""
            for name, settings_module in CONFIGS.items() if commit else ():
                say(f"baseline, {name}: the one-producer run on commit {commit}'s cq")
                found[f"baseline-{name}"] = run_config(settings_module, "--only-producer", cq_from=tree,
                                                       BENCH_TASKS=os.environ.get("BENCH_BASELINE_TASKS", "1000"))
    listed = listing.run()  # the task list on a big table (bench/listing.py)
    report(found)
    listing.report(listed)
    OUT.mkdir(exist_ok=True)
    # bench-peers reads the tuned figures at the top level.
    (OUT / "cq.json").write_text(json.dumps({"size": SIZE, "drain": DRAIN, **found["tuned"], "configs": found,
                                             "task_list": listed}, indent=2))
    say(f"\nWritten to {(OUT / 'cq.json').relative_to(ROOT)}. One run: repeat it to see the spread "
        f"(ratios hold; absolute figures drift with this machine's load).")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print("RESULT " + json.dumps(measure("--only-producer" in sys.argv)))
        sys.exit(0)
    sys.exit(main())
