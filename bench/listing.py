"""`make bench`'s task-list phase: the dashboard's and the JSON API's pages on a big task table.

It builds a table of ``BENCH_LIST_ROWS`` tasks (10,000,000 by default) in a PostgreSQL database
of its own (cq_bench_list, dropped afterwards), in SQL (``INSERT ... SELECT generate_series``,
the secondary indexes built after the rows), shaped as a month of work: trees of a top-level
task and 9 subtasks, created one after another over 30 days; 97.5 % of the top-level tasks
succeeded and 2.5 % failed; 1 % of them are of a rarer function; the newest 2,000 rows are
unfinished (waiting, queued, running); one tree of 1,000 subtasks. Then it times each page,
rendered by its view (the median of 5, after one to warm the caches): the first page of the
dashboard's list and of the API's (by default, filtered by a status, by a function, and with
subtasks too), the next page by the cursor, the count, the task page of the big tree, and the
queues page.

The rows are made a million at a time; from the time the first million took, the phase
estimates the whole and skips itself, saying so, when it would take longer than
``BENCH_LIST_BUDGET`` seconds (1,800 by default) or need more disk than is free. With
``BENCH_LIST_EXPLAIN=1`` it prints the plans (``EXPLAIN ANALYZE``) of the default list's queries.
Run it alone with ``python bench/listing.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROWS = int(os.environ.get("BENCH_LIST_ROWS", "10000000"))
BUDGET = float(os.environ.get("BENCH_LIST_BUDGET", "1800"))
CHUNK = 1_000_000
#: What a row takes on disk, its indexes' entries included (measured: about 700 bytes).
ROW_BYTES = 900
BIG_TREE = 1000
UNFINISHED = 2000


def say(message: str) -> None:
    print(message, flush=True)


#: One row of the month: tree k = r / 10, the top-level task first (r % 10 = 0), then 9 subtasks.
INSERT = """
INSERT INTO cq_task (id, func_name, args, kwargs, status, queue, error, exception, traceback, log_records,
                     errbacks, parent_id, top_id, force_chain, has_next, created, submitted, started, finished,
                     retries, worker, attempt, fields, progress, priority)
SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(r), 12, '0'))::uuid,
       CASE WHEN r %% 10 > 0 THEN 'bench.step' WHEN (r / 10) %% 100 = 0 THEN 'bench.nightly' ELSE 'bench.sync' END,
       '[]', '{}',
       CASE WHEN r >= %(total)s - %(unfinished)s
            THEN (CASE WHEN r %% 10 = 0 THEN 'W' WHEN r %% 3 = 0 THEN 'R' ELSE 'Q' END)
            WHEN (r / 10) %% 40 = 0 AND r %% 10 IN (0, 9) THEN 'F' ELSE 'S' END,
       'default',
       CASE WHEN (r / 10) %% 40 = 0 AND r %% 10 IN (0, 9) THEN 'it failed' END,
       '', '', '[]', '[]',
       CASE WHEN r %% 10 > 0 THEN ('00000000-0000-4000-8000-' || lpad(to_hex(r - r %% 10), 12, '0'))::uuid END,
       CASE WHEN r %% 10 > 0 THEN ('00000000-0000-4000-8000-' || lpad(to_hex(r - r %% 10), 12, '0'))::uuid END,
       false, false,
       t.created, t.created,
       CASE WHEN r < %(total)s - %(unfinished)s OR r %% 10 = 0 OR r %% 3 = 0 THEN t.created + interval '20 ms' END,
       CASE WHEN r < %(total)s - %(unfinished)s THEN t.created + interval '120 ms' END,
       0, 'bench', 1, '{}',
       CASE WHEN r %% 10 = 0 AND r %% 7 = 0 THEN '{"current": 3, "total": 4, "percent": 75}'::jsonb END,
       0
FROM generate_series(%(first)s, %(last)s) AS r,
     LATERAL (SELECT now() - interval '30 days' + r * (interval '30 days' / %(total)s)) AS t(created)
"""

#: One tree of BIG_TREE subtasks, among the newest finished tasks.
BIG = """
INSERT INTO cq_task (id, func_name, args, kwargs, status, queue, exception, traceback, log_records, errbacks,
                     parent_id, top_id, force_chain, has_next, created, submitted, started, finished, retries,
                     worker, attempt, fields, priority)
SELECT ('00000000-0000-4000-9000-' || lpad(to_hex(r), 12, '0'))::uuid,
       CASE WHEN r = 0 THEN 'bench.nightly' ELSE 'bench.step' END, '[]', '{}', 'S', 'default', '', '', '[]', '[]',
       CASE WHEN r > 0 THEN '00000000-0000-4000-9000-000000000000'::uuid END,
       CASE WHEN r > 0 THEN '00000000-0000-4000-9000-000000000000'::uuid END,
       false, false, now() - interval '2 hours' + r * interval '1 ms', now() - interval '2 hours' + r * interval '1 ms',
       now() - interval '2 hours' + r * interval '2 ms', now() - interval '1 hour' + r * interval '2 ms',
       0, 'bench', 1, '{}', 0
FROM generate_series(0, %(n)s) AS r
"""


def build(connection) -> float | None:
    """Fill cq_task; None (and nothing left but an empty table) when it would take too long."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW data_directory")
        try:
            free = shutil.disk_usage(cursor.fetchone()[0]).free
        except OSError:
            free = shutil.disk_usage("/").free
        if ROWS * ROW_BYTES > free:
            say(f"  task list: skipped, {ROWS:,} rows need about {ROWS * ROW_BYTES / 1e9:.1f} GB; "
                f"{free / 1e9:.1f} GB are free (set BENCH_LIST_ROWS lower)")
            return None
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'cq_task' AND indexname NOT IN "
                       "(SELECT conname FROM pg_constraint WHERE conrelid = 'cq_task'::regclass)")
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        cursor.execute("SET session_replication_role = replica")  # no foreign-key triggers: ids are consistent
        started = time.perf_counter()
        for first in range(0, ROWS, CHUNK):
            last = min(first + CHUNK, ROWS) - 1
            cursor.execute(INSERT, {"first": first, "last": last, "total": ROWS, "unfinished": UNFINISHED})
            if first == 0 and ROWS > CHUNK:
                # Rows, then indexes (about as long again) and the vacuum's analysis: about 2.5 times.
                guess = (time.perf_counter() - started) * ROWS / CHUNK * 2.5
                if guess > BUDGET:
                    cursor.execute("TRUNCATE cq_task")
                    say(f"  task list: skipped, {ROWS:,} rows would take about {guess:,.0f} s here, more than "
                        f"BENCH_LIST_BUDGET={BUDGET:g} s (set BENCH_LIST_ROWS lower, or the budget higher)")
                    return None
                say(f"  task list: building {ROWS:,} rows, about {guess:,.0f} s")
        cursor.execute(BIG, {"n": BIG_TREE})
        cursor.execute("SET session_replication_role = DEFAULT")
        for _, definition in indexes:
            cursor.execute(definition)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE cq_task")
    return time.perf_counter() - started


def timed(call, runs: int = 5) -> float:
    call()  # warm: the first reading of pages and plans
    spent = []
    for _ in range(runs):
        began = time.perf_counter()
        call()
        spent.append((time.perf_counter() - began) * 1000)
    return statistics.median(spent)


def measure() -> dict[str, float]:
    import django

    from bench.run import create_database
    create_database()
    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import RequestFactory

    from cq.models import Task
    from cq.web import api, dashboard, listing

    call_command("migrate", verbosity=0)
    took = build(connection)
    if took is None:
        return {}
    say(f"  task list: {ROWS + BIG_TREE + 1:,} rows built in {took:,.0f} s")
    staff = User.objects.create_user("bench", is_staff=True, is_superuser=True)
    factory = RequestFactory()

    def get(view, path: str, **query: str):
        def call():
            request = factory.get(path, query)
            request.user = staff
            answer = view(request, *([BIG_TOP] if view is dashboard.task_page else []))
            assert answer.status_code == 200, (path, query, answer.status_code, answer.content[:300])
            return answer
        return call

    filters = {"default": {}, "status Failure": {"status": "F"}, "status Queued": {"status": "Q"},
               "function (1 %)": {"func_name": "bench.nightly"}, "subtasks too": {"all": "1"}}
    results: dict[str, float] = {}
    for name, query in filters.items():
        results[f"dashboard list, {name}"] = timed(get(dashboard.task_list, "/cq/", **query))
        results[f"API list, {name}"] = timed(get(api.tasks, "/cq/api/tasks/", **query))
    cursor = json.loads(get(api.tasks, "/cq/api/tasks/")().content)["next"]
    results["dashboard list, next page (cursor)"] = timed(get(dashboard.task_list, "/cq/", cursor=cursor))
    results["API list, next page (cursor)"] = timed(get(api.tasks, "/cq/api/tasks/", cursor=cursor))
    found = Task.objects.filter(top__isnull=True)
    results["count, default (estimated)"] = timed(lambda: listing.count(found, None))
    results["count, status Failure"] = timed(lambda: listing.count(found.filter(status="F"), {"F"}))
    results[f"task page, a tree of {BIG_TREE:,}"] = timed(get(dashboard.task_page, f"/cq/tasks/{BIG_TOP}/"))
    results["queues page"] = timed(get(dashboard.queues, "/cq/queues/"))
    if os.environ.get("BENCH_LIST_EXPLAIN"):
        explain(found)
    results["rows"] = ROWS
    return results


BIG_TOP = "00000000-0000-4000-9000-000000000000"


def explain(found) -> None:
    from django.db import connection

    from cq.web import listing

    for part in listing.parts(found, None):
        sql, params = part.order_by("-created", "-pk")[:101].query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN ANALYZE " + sql, params)
            say("\n".join(row[0] for row in cursor.fetchall()))


def drop_database() -> None:
    import psycopg
    from django.conf import settings

    db = settings.DATABASES["default"]
    from django.db import connections
    connections.close_all()
    with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], dbname="postgres",
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db["NAME"]}"')


def run() -> dict[str, float]:
    """The phase, in a process of its own; its figures (empty when it was skipped)."""
    say(f"task list ({ROWS:,} rows, database cq_bench_list):")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings_list"}
    done = subprocess.run([sys.executable, __file__, "--one"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    print(done.stdout.rsplit("RESULT ", 1)[0], end="", flush=True)
    if done.returncode:
        raise SystemExit("bench: the task-list phase failed")
    return json.loads(done.stdout.rsplit("RESULT ", 1)[1])


def report(found: dict[str, float]) -> None:
    if not found:
        return
    say(f"\nThe task list on {int(found['rows']):,} tasks (PostgreSQL; median of 5, ms; the target is 100 ms):")
    say(f"| {'page':<44} | {'ms':>8} |")
    say(f"|{'-' * 46}|{'-' * 10}|")
    for name, value in found.items():
        if name != "rows":
            say(f"| {name:<44} | {value:>8.1f} |")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    if sys.argv[1:2] == ["--one"]:
        try:
            figures = measure()
        finally:
            if not os.environ.get("BENCH_LIST_KEEP"):  # kept to look at, with BENCH_LIST_KEEP=1
                drop_database()
        print("RESULT " + json.dumps(figures))
        sys.exit(0)
    report(run())
