"""What `make demo` runs: migrate, make sure Redis answers, start a worker,
run the prime-counting job, and print its finished task tree and logs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")

import django  # noqa: E402
import redis  # noqa: E402


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def ensure_redis() -> subprocess.Popen[bytes] | None:
    """Use REDIS_URL (default 127.0.0.1:6379); else start a private redis-server on a free port."""
    url = os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    if redis_answers(url):
        return None
    if not shutil.which("redis-server"):
        sys.exit(f"Redis does not answer at {url} and redis-server is not installed.\n"
                 f"Install it (Debian/Ubuntu: sudo apt-get install redis-server) or set REDIS_URL.")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)
    os.environ["REDIS_URL"] = url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not redis_answers(url):
        if time.monotonic() > deadline:
            server.kill()
            sys.exit(f"Started redis-server on port {port}, but it does not answer.")
        time.sleep(0.05)
    print(f"Started a private redis-server on port {port} (none answered at 127.0.0.1:6379).")
    return server


def print_tree(task, names: dict, indent: str = "") -> None:
    took = (task.finished - task.submitted).total_seconds() if task.finished else 0
    after = f"  (chained after {names[str(task.previous_id)]})" if task.previous_id else ""
    print(f"{indent}{task.func_name.rsplit('.', 1)[-1]:<13} {task.get_status_display():<10} "
          f"{task.result!s:<32} {took:6.2f} s{after}")
    for child in task.subtasks.order_by("created"):
        print_tree(child, names, indent + "   ")


def main() -> int:
    server = ensure_redis()
    django.setup()
    from django.core.management import call_command
    from primes.tasks import prime_report

    from cq.models import RepeatingTask, Task

    call_command("migrate", verbosity=0)
    worker = subprocess.Popen([sys.executable, "manage.py", "cq_runworker"], cwd=HERE)
    try:
        task = prime_report.delay(300_000, 8)
        print(f"Delayed prime_report(300000, 8) as task {task.pk}; a cq_runworker process is running it...")
        task.wait(timeout=120_000)
        tree = Task.objects.tree(task).values_list("pk", "func_name")
        names = {str(pk): name.rsplit(".", 1)[-1] for pk, name in tree}
        print("\nTask tree:")
        print_tree(task, names)
        print("\nLogs rolled up to the top-level task:")
        for record in task.logs:
            origin = names[record.get("origin", str(task.pk))]
            print(f"  {record['timestamp'][11:23]} {origin:<13} {record['message']}")
        print(f"\nResult: {task.result}  ({task.get_status_display()})")
        for rt in RepeatingTask.objects.filter(enabled=True):
            print(f"Repeating: {rt}, next run {rt.next_run:%Y-%m-%d %H:%M %Z}")
        return 0 if task.status == Task.STATUS_SUCCESS else 1
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        if server is not None:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
