"""Faults of issue 14 in how cq tells a live worker from a dead one, injected from outside into
real ``cq_runworker`` processes: a dead worker's pid reused in a fresh PID namespace, a task
holding the GIL past the worker timeout, a sweeper whose clock is ahead, a frozen worker whose
run was declared LOST and retried elsewhere (a zombie).

Each test reproduces its fault on the worker as it was when the issue was opened, and asserts
what the README promises instead: a dead worker's task ends LOST, a live one's never does, and a
run declared LOST never overwrites the attempt that replaced it. The numbers are the items of
the issue.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cq.models import Task, Worker
from tests.faults.common import SWEEPING, final, outcome, pid_running, running
from tests.helpers import ROOT, eventually, process_env
from tests.testapp import tasks
from tests.testapp.models import Record

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


# -- 4. Reused worker names ----------------------------------------------------------------------

#: A fresh PID namespace: its pids count from 1 again, as in a restarted container.
UNSHARE = ("unshare", "--pid", "--fork", "--mount-proc")


def unshare() -> tuple[str, ...]:
    """The prefix that runs a command in a fresh PID namespace (as root, or with CAP_SYS_ADMIN)."""
    done = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True)
    assert done.returncode == 0, f"cannot make a PID namespace here ({done.stderr.strip()}): run the tests as root"
    return UNSHARE


def start_with_pid(start_worker, pid: int, after: Any, attempts: int = 3) -> Any:
    """``cq_runworker -c 1`` in a fresh PID namespace whose worker process has pid ``pid``, as the
    dead one's had. Pids in a fresh namespace depend only on what was started before (threads
    too), so the first attempt nearly always gets it; a namespace that got another is killed."""
    for _ in range(attempts):
        worker = start_worker("-c", "1", settings=SWEEPING, prefix=unshare())
        row = eventually(lambda: Worker.objects.filter(stopped__isnull=True, started__gt=after).first(), 20,
                         "a worker process of the new namespace")
        if row.pid == pid:
            return worker
        worker.kill()
        Worker.objects.filter(pk=row.pk).update(stopped=after)
    raise AssertionError(f"the fault was not injected: no new namespace gave its worker process pid {pid}")


def stop_in_namespace(worker: Any) -> int:
    """SIGTERM to the supervisor in ``worker``'s namespace (``unshare`` itself ignores it); returns
    the exit code, which ``unshare`` passes on."""
    supervisor = Path(f"/proc/{worker.process.pid}/task/{worker.process.pid}/children").read_text().split()
    os.kill(int(supervisor[0]), signal.SIGTERM)
    return worker.stop(timeout=30)


def test_a_new_worker_with_a_dead_workers_pid_does_not_keep_its_task_running(start_worker):
    first = start_worker("-c", "1", settings=SWEEPING, prefix=unshare())
    task = running(tasks.sleeps.delay(60, key="reused"))
    pid = pid_running(task)
    first.kill()  # SIGKILL of the whole namespace: nothing of it records anything
    second = start_with_pid(start_worker, pid, after=Task.objects.get(pk=task.pk).started)
    task = final(task, 8, "the dead worker's task to be found lost")
    assert task.status == Task.STATUS_LOST, outcome(task)
    assert not Record.objects.filter(key="reused").exists()
    after = tasks.add.delay(1, 1)
    assert final(after, 10).result == 2
    assert stop_in_namespace(second) == 0, second.output


# -- 6. A task holding the GIL -------------------------------------------------------------------


def test_a_task_holding_the_gil_past_the_worker_timeout_is_not_lost(start_worker):
    """Its process's threads cannot run for 4 s, twice CQ_WORKER_TIMEOUT; the process is alive and
    its supervisor (which runs no task code) can vouch for it."""
    worker = start_worker("-c", "1", settings=SWEEPING)
    # Not running(): the heartbeat thread of today's worker may name the task only once the call is over.
    task = final(tasks.holds_the_gil.delay(4), 12)
    assert (task.status, task.result) == (Task.STATUS_SUCCESS, "woke"), outcome(task)
    assert worker.stop() == 0, worker.output


# -- 7. Clock skew and zombies -------------------------------------------------------------------


def faketime(offset: str) -> tuple[str, ...]:
    """The prefix that runs a command with its clock ``offset`` away (libfaketime)."""
    binary = shutil.which("faketime")
    assert binary, "faketime is not installed: `make test` installs it (apt-get install faketime)"
    return (binary, "-f", offset)


def manage(*args: str, prefix: tuple[str, ...] = (), settings: dict[str, Any] | None = None) -> str:
    """Run ``manage.py <args>`` on the test database to its end; returns what it printed (not its log)."""
    command = [*prefix, sys.executable, "-m", "django", *args, f"--settings={os.environ['DJANGO_SETTINGS_MODULE']}"]
    done = subprocess.run(command, cwd=ROOT, env=process_env(settings), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


def test_a_sweeper_whose_clock_is_an_hour_ahead_loses_no_running_task(start_worker):
    worker = start_worker("-c", "1", settings=SWEEPING)
    task = running(tasks.sleeps.delay(5, key="skewed"))
    # The fault is in place: that process's clock really is an hour ahead.
    shown = float(manage("shell", "-c", "import time; print(time.time())", prefix=faketime("+1h")).split()[-1])
    assert shown > time.time() + 3000, shown
    manage("cq_check_lost", prefix=faketime("+1h"), settings=SWEEPING)
    assert Task.objects.get(pk=task.pk).status == Task.STATUS_RUNNING, outcome(task)
    task = final(task, 8)
    assert (task.status, task.result) == (Task.STATUS_SUCCESS, 5), outcome(task)
    assert Record.objects.filter(key="skewed").count() == 1
    assert worker.stop() == 0, worker.output


def test_a_run_declared_lost_cannot_overwrite_the_retry_that_replaced_it(start_worker):
    """A zombie: the first run's whole worker (supervisor too) is frozen past the worker timeout,
    declared LOST and retried elsewhere; thawed while the retry runs, it finishes first."""
    stale = start_worker("-c", "1", "--no-scheduler", settings=SWEEPING)
    task = running(tasks.runs_again_when_lost.delay("zombie", 2, 4))
    os.killpg(stale.process.pid, signal.SIGSTOP)
    try:
        start_worker("-c", "1", settings=SWEEPING)  # its scheduler's sweeper finds the frozen run
        eventually(lambda: Record.objects.filter(key="zombie").count() == 2, 12, "the retry to start on another worker")
        task.refresh_from_db()
        assert (task.status, task.retries) == (Task.STATUS_RUNNING, 1), outcome(task)
    finally:
        os.killpg(stale.process.pid, signal.SIGCONT)  # the first run wakes past its 2 s and returns
    task = final(task, 10)
    assert (task.status, task.result) == (Task.STATUS_SUCCESS, "run 2"), outcome(task)
    assert Record.objects.filter(key="zombie").count() == 2
