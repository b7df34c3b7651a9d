"""`make bench-peers`: the no-op workload of `make bench` on Huey, Dramatiq, RQ and Celery, with
each peer's defaults, 2 worker processes each, on the same Redis; then on Procrastinate and on Celery
storing results with django-celery-results (celery-db), both in the PostgreSQL database cq_peers.
Printed beside cq's own figures (from `make bench`, which runs first) with the ratio cq/peer. The
peers live in .venv-peers, apart from the project's dependencies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
# RQ forks a process per task (its default): 2,000 keeps its share of the run near a minute.
SIZE = int(os.environ.get("PEERS_TASKS", "2000"))
#: The backlog each peer drains: as large as cq's (make bench) for the peers that drain thousands a
#: second, SIZE for those that fork a process or write a database row per task.
DRAIN = int(os.environ.get("PEERS_DRAIN", "20000"))
SLOW = {"rq", "procrastinate", "celery-db"}
PY = sys.executable


def workers(peer: str) -> list[list[str]]:
    url = os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379/9")
    return {
        "huey": [[PY, "-m", "huey.bin.huey_consumer", "bench.peers.apps.huey", "-w", "2", "-k", "process"]],
        "dramatiq": [[PY, "-m", "dramatiq", "bench.peers.apps", "--processes", "2"]],
        "rq": [[PY, "-m", "rq.cli", "worker", "--url", url, "bench"]] * 2,
        "celery": [[PY, "-m", "celery", "-A", "bench.peers.apps", "worker", "-c", "2", "--loglevel", "WARNING"]],
        "procrastinate": [[PY, "-m", "procrastinate", "--app", "bench.peers.apps.app", "worker"]] * 2,
        "celery-db": [[PY, "-m", "celery", "-A", "bench.peers.apps", "worker", "-c", "2", "--loglevel", "WARNING"]],
    }[peer]


def enqueuer(peer: str):
    from bench.peers import apps

    if peer == "huey":
        return apps.noop
    if peer == "dramatiq":
        return apps.noop.send
    if peer in ("celery", "celery-db"):
        return apps.noop.delay
    if peer == "procrastinate":
        return lambda i: apps.noop.defer(i=i)
    from rq import Queue

    queue = Queue("bench", connection=apps.counter)
    return lambda i: queue.enqueue(apps.noop, i)


def create_database(peer: str) -> None:
    """A fresh cq_peers with the peer's schema, for the peers that keep their jobs or results there."""
    import psycopg

    from bench.peers import apps
    from bench.peers.settings import PG

    with psycopg.connect(**{**PG, "dbname": "postgres"}, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{PG["dbname"]}"')
        conn.execute(f'CREATE DATABASE "{PG["dbname"]}"')
    if peer == "procrastinate":
        apps.app.open()  # and left open for the producer
        apps.app.schema_manager.apply_schema()
    else:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)


def wait_for(count: int, timeout: float = 600) -> float:
    from bench.peers import apps

    deadline = time.monotonic() + timeout
    while int(apps.counter.get(apps.DONE) or 0) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench-peers: only {apps.counter.get(apps.DONE)} of {count} tasks ran")
        time.sleep(0.0005)
    return time.perf_counter()


def measure(peer: str) -> dict[str, float]:
    os.environ["PEER"] = peer
    from bench.peers import apps

    apps.counter.flushdb()
    if peer in ("procrastinate", "celery-db"):
        create_database(peer)
    enqueue = enqueuer(peer)
    backlog = SIZE if peer in SLOW else max(DRAIN, SIZE)
    print(f"{peer}: enqueue {backlog} with no worker running", flush=True)
    start = time.perf_counter()
    for i in range(SIZE):
        enqueue(i)
    results = {"enqueue_single_per_s": SIZE / (time.perf_counter() - start), "drain_size": backlog}
    for i in range(SIZE, backlog):
        enqueue(i)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
             for cmd in workers(peer)]
    try:
        print(f"{peer}: drain the backlog with 2 worker processes", flush=True)
        first = wait_for(1, 120)
        results["drain_per_s"] = (backlog - 1) / (wait_for(backlog) - first)
        print(f"{peer}: one producer enqueueing {SIZE} while the workers run", flush=True)
        apps.counter.set(apps.DONE, 0)
        start = time.perf_counter()
        for i in range(SIZE):
            enqueue(i)
        results["throughput_single_producer_per_s"] = SIZE / (wait_for(SIZE) - start)
        print(f"{peer}: idle latency, 100 tasks one at a time", flush=True)
        latencies = []
        for i in range(100):
            apps.counter.set(apps.DONE, 0)
            start = time.perf_counter()
            enqueue(i)
            latencies.append((wait_for(1) - start) * 1000)
        latencies.sort()
        results["idle_latency_p50_ms"] = latencies[50]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return results


def main() -> int:
    peers = os.environ.get("PEERS", "huey,dramatiq,rq,celery,procrastinate,celery-db").split(",")
    mine_path = ROOT / "bench" / "results" / "cq.json"
    mine = json.loads(mine_path.read_text())
    found = {}
    for peer in peers:
        found[peer] = subprocess.run([PY, __file__, "--one", peer], capture_output=True, text=True, cwd=ROOT)
        if found[peer].returncode:
            raise SystemExit(found[peer].stdout + found[peer].stderr)
        print(found[peer].stdout.rsplit("RESULT ", 1)[0], end="", flush=True)
        found[peer] = json.loads(found[peer].stdout.rsplit("RESULT ", 1)[1])
    rows = [("enqueue, one call at a time (tasks/s)", "enqueue_single_per_s", True),
            ("drain of a backlog (tasks/s)*", "drain_per_s", True),
            ("end to end, one producer (tasks/s)", "throughput_single_producer_per_s", True),
            ("idle latency p50 (ms)", "idle_latency_p50_ms", False)]
    head = " | ".join(f"{p:>17}" for p in peers)
    print(f"\n| {'measure':<40} | {'cq':>8} | {head} |")
    print(f"|{'-' * 42}|{'-' * 10}|" + "|".join("-" * 19 for _ in peers) + "|")
    for label, key, higher_is_better in rows:
        cells = []
        for peer in peers:
            ratio = mine[key] / found[peer][key] if higher_is_better else found[peer][key] / mine[key]
            cells.append(f"{found[peer][key]:>8,.1f} ({ratio:4.2f}x)")
        print(f"| {label:<40} | {mine[key]:>8,.1f} | " + " | ".join(f"{c:>17}" for c in cells) + " |")
    print(f"\n(n.nnx): how many times better cq is (tuned settings of make bench). *The backlog: cq "
          f"{mine['drain']:,}, " + ", ".join(f"{peer} {found[peer]['drain_size']:,}" for peer in peers) + ".")
    (ROOT / "bench" / "results" / "peers.json").write_text(json.dumps(found, indent=2))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print("RESULT " + json.dumps(measure(sys.argv[2])))
        sys.exit(0)
    sys.exit(main())
