"""Task functions the tests run, named by what they do."""

from __future__ import annotations

import os
import time
from pathlib import Path

from django.db import connection

from cq import task
from cq.exceptions import SoftTimeLimitExceeded
from cq.models import Task

from .models import Note, Record


class RetryMe(Exception):
    pass


def errors_mentioning_hello(error: BaseException) -> bool:
    return "hello" in str(error)


def record_errorback(task: Task, error: BaseException, key: str = "errback") -> None:
    Record.objects.create(key=f"{key}:{task.func_name}:{type(error).__name__}:{error}")


def record_errorback_briefly(task: Task, error: BaseException, key: str = "errback") -> None:
    """Like record_errorback, for errors too long for a Record's key: the first words only."""
    Record.objects.create(key=f"{key}:{task.func_name}:{type(error).__name__}:{error}"[:100])


@task("echo")
def echo(cqt, *args):
    """Returns its arguments, or 'a' without any (django-cq's task_a)."""
    return list(args) if args else "a"


@task
def noop(cqt):
    return None


@task
def add(cqt, a, b):
    return a + b


@task
def failing(cqt, message="b"):
    raise ValueError(message)


@task
def failing_with_errorback(cqt, fail=True):
    cqt.errorback(record_errorback)
    if fail:
        raise RuntimeError("broken")
    return "fine"


@task
def returns_subtask_result(cqt):
    return cqt.subtask(echo)


@task
def spawns_subtask_returns_own(cqt):
    cqt.subtask(echo)
    return "d"


@task
def returns_subsubtask_result(cqt):
    return cqt.subtask(returns_subtask_result)


@task
def returns_failing_subtask(cqt):
    return cqt.subtask(failing)


@task
def returns_failing_subsubtask(cqt):
    return cqt.subtask(returns_failing_subtask)


@task
def three(cqt):
    return 3


@task("add_previous")
def add_previous(cqt, a):
    return cqt.previous.result + a


@task
def subtask_then_chain(cqt):
    return cqt.subtask(three).chain(add_previous, (2,))


@task(atomic=False)
def writes_then_maybe_fails_non_atomic(cqt, key, fail):
    Record.objects.create(key=key)
    if fail:
        raise RuntimeError("after writing")


@task
def writes_then_maybe_fails_atomic(cqt, key, fail):
    Record.objects.create(key=key)
    if fail:
        raise RuntimeError("after writing")


@task(retries=3, retry_exceptions=[RetryMe, errors_mentioning_hello], atomic=False)
def retried(cqt, error=None, key="retried"):
    Record.objects.create(key=key)
    if error == "exception":
        raise RetryMe("again")
    if error == "predicate":
        raise RuntimeError("hello there")
    if error == "other":
        raise RuntimeError("nope")
    return "done"


@task(retries=2, atomic=False)
def fails_then_succeeds(cqt, key, failures):
    """Fails ``failures`` times (counted in Record rows), then returns how many runs it took."""
    Record.objects.create(key=key)
    runs = Record.objects.filter(key=key).count()
    if runs <= failures:
        raise OSError(f"run {runs} fails")
    return runs


@task
def counts_run(cqt, key):
    Record.objects.create(key=key)
    return key


@task
def logs_with_subtask(cqt, publish=True):
    cqt.log("First log from task_a.", publish=publish)
    cqt.subtask(logs_alone, kwargs={"publish": publish})
    cqt.log("Second log from task_a.", publish=publish)
    return "a"


@task
def logs_alone(cqt, publish=True):
    cqt.log("Log from task_b.", publish=publish)
    return "b"


@task
def returns_object(cqt):
    return object()


@task
def fan_out(cqt, n, key):
    for i in range(n):
        cqt.subtask(counts_run, (f"{key}:{i}",))
    return n


@task
def tree_with_chain(cqt, key):
    """Subtasks a -> chained b, plus c; returns the chained task, so its result wins."""
    cqt.subtask(counts_run, (f"{key}:c",))
    return cqt.subtask(add, (1, 2)).chain(add_previous, (10,))


# A tree with forced chains (django-cq's test_force_chain): a's subtasks b, e, h run one
# after another; b's and h's chains fail, e's succeeds.
@task
def force_a(cqt, force_chain=True):
    cqt.subtask(force_b).chain(force_e, force_chain=force_chain).chain(force_h, force_chain=force_chain)
    return "a"


@task
def force_b(cqt):
    return cqt.subtask(named, ("c",)).chain(failing, ("d",))


@task
def force_e(cqt):
    return cqt.subtask(named, ("f",)).chain(named, ("g",))


@task
def force_h(cqt):
    return cqt.subtask(named, ("i",)).chain(failing, ("j",))


@task
def named(cqt, name):
    return name


@task(atomic=False)
def sleeps(cqt, seconds, key="sleeps"):
    """Sleeps (to be caught running), then leaves a Record."""
    time.sleep(seconds)
    Record.objects.create(key=key)
    return seconds


@task(atomic=False, retry_on_lost=True)
def sleeps_on_first_run(cqt, key, seconds=60):
    """The first run sleeps long enough to be killed; the retry returns at once."""
    Record.objects.create(key=key)
    if Record.objects.filter(key=key).count() == 1:
        time.sleep(seconds)
    return "second run"


@task(time_limit=1)
def overruns_hard_limit(cqt):
    time.sleep(60)


@task(soft_time_limit=0.5, atomic=False)
def overruns_soft_limit(cqt, key):
    try:
        time.sleep(60)
    except SoftTimeLimitExceeded:
        Record.objects.create(key=key)
        raise


@task(queue="reports")
def report(cqt, name):
    return f"report {name}"


@task(atomic=False)
def soak(cqt, key, spawn, fail):
    """One soak-test task: records its run, works a few milliseconds (so that a killed worker
    is often caught mid-task), maybe fails, maybe spawns a subtask and a chain of its kind."""
    Record.objects.create(key=key)
    time.sleep(0.005)
    if fail:
        raise RuntimeError(f"{key} fails on purpose")
    if spawn:
        kind = soak_atomic if cqt.func_name == soak_atomic.name else soak
        cqt.subtask(kind, (f"{key}.sub", False, False)).chain(kind, (f"{key}.chain", False, False))
    return key


#: The same in a transaction: its Record is kept exactly when it succeeds (quick atomic tasks
#: run in batches, so this checks that a killed batch keeps nothing of its tasks).
soak_atomic = task("soak_atomic")(soak.func)


@task
def leaves_dangling_reference(cqt):
    """Writes a row whose foreign key names no row: the database refuses it at the commit."""
    Note.objects.create(record_id=10**9)


@task
def revokes_next_noop(cqt):
    """Revokes the noop task created right after this one (claimed with it, not yet run)."""
    Task.objects.filter(func_name=noop.name, created__gte=cqt.created).order_by("created").first().revoke()


@task
def sleeps_atomic(cqt, path):
    """An atomic task that says it started by creating the file ``path``, then sleeps."""
    Path(path).touch()
    time.sleep(60)


@task
def drops_database_connection(cqt):
    """Ends its own PostgreSQL session, as a database restart would."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")


@task(fields={"kind": "report"})
def reports_progress(cqt, steps, gate):
    """Reports progress step by step; after the first step it waits for a Record ``gate``."""
    deadline = time.monotonic() + 30
    for step in range(1, steps + 1):
        cqt.progress(step, steps, f"step {step}")
        while step == 1 and not Record.objects.filter(key=gate).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no Record {gate!r} within 30 s")
            time.sleep(0.01)
    cqt.update(fields={"steps_done": steps})
    return steps


@task
def updates_fields(cqt, **fields):
    cqt.update(fields=fields)
    return sorted(cqt.fields)


#: The same outside a transaction: on SQLite, the only way its progress is seen while it runs.
reports_progress_outside = task("reports_progress_outside", atomic=False)(reports_progress.func)


@task
def renames_organisation(cqt, name):
    """Sets a column of the project's own task model (tests.customtask) while it runs."""
    cqt.update(fields={"organisation": name})
    return cqt.organisation


# Unique tasks, concurrency and rate limits (tests/unit/test_limits.py, tests/unit/test_unique_keys.py).

@task(atomic=False, concurrency_key=lambda customer, seconds=0: f"customer:{customer}", max_concurrency=1)
def one_per_customer(cqt, customer, seconds=0):
    """Runs alone among its customer's tasks; returns when its function began and ended."""
    began = time.time()
    time.sleep(seconds)
    return [began, time.time()]


@task(concurrency_key="mailer", max_concurrency=2)
def two_at_a_time(cqt):
    return None


@task(concurrency_key=lambda value: value, max_concurrency=1)
def keyed_by_argument(cqt, value):
    """Its key is its argument as given: a number is not a key, and no argument is an error."""
    return value


@task(rate_limit="5/s")
def five_per_second(cqt):
    return None


@task(rate_limit="1/h")
def once_an_hour(cqt):
    return None


# Groups, chords and stages (tests/unit/test_workflows.py).


@task
def power(cqt, base, exponent):
    return base**exponent


@task
def fails_for(cqt, value, failing=()):
    """Returns ``value``, or raises if it is one of ``failing``."""
    if value in failing:
        raise ValueError(f"no {value}")
    return value


@task
def records_results(cqt, results, key="callback"):
    """A chord's callback: leaves a Record (to prove it ran, or did not) and returns what it got."""
    Record.objects.create(key=key)
    return results


@task
def returns_group(cqt, n):
    from cq.canvas import group

    return group([power.s(i, 2) for i in range(n)]).delay()


@task
def pipeline_step(cqt, name, params, fail=False):
    """A step of a pipeline: says which step ran last before it, and that it ran."""
    cqt.log(f"{name} saw {params}")
    if fail:
        raise RuntimeError(f"{name} broke")
    return {"last": name, f"{name}_saw": params.get("last")}


@task
def returns_a_string(cqt, params):
    return "not a dict"


@task
def adds_one(cqt, params):
    return {"n": params.get("n", 0) + 1}


@task(concurrency_key=lambda customer, amount: f"customer:{customer}", max_concurrency=1, priority=4,
      fields={"kind": "billing"})
def bills_customer(cqt, customer, amount):
    """A group member with options of its own: a concurrency key, a priority and fields."""
    return amount


@task(atomic=False)
def fails_first_time(cqt, key):
    """Fails on its first run (no retries of its own), succeeds when run again."""
    Record.objects.create(key=key)
    if Record.objects.filter(key=key).count() == 1:
        raise RuntimeError("first run fails")
    return "second run"


try:
    from django.tasks import task as django_task
except ImportError:
    from django_tasks import task as django_task


@django_task
def django_task_beside_cq_tasks(a, b):
    """A Django task in the same module as cq's own task functions."""
    return add(a, b)


@task(atomic=False)
def steps_when_told(cqt, steps, gate):
    """Step ``n`` waits for a Record ``gate:n``, then reports progress and publishes a log line: the
    test says when each step happens (for the browser tests)."""
    deadline = time.monotonic() + 60
    for step in range(1, steps + 1):
        while not Record.objects.filter(key=f"{gate}:{step}").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no Record {gate}:{step} within 60 s")
            time.sleep(0.02)
        cqt.progress(step, steps, f"step {step} of {steps}")
        cqt.log(f"finished step {step}")
    return steps


# -- fault tests (database) --
# tests/faults/test_database.py: worker processes whose PostgreSQL connections go through a
# fault-injecting proxy. Each run leaves a Record, so that a test counts how often a function ran.


@task(atomic=False)
def finishes_on_marker(cqt, key, marker, timeout=30):
    """Leaves a Record (committed at once), then waits without touching the database until the
    file ``marker`` exists, and returns: the test decides when it finishes. Just before it returns
    it creates ``<marker>.returned``, so that the test knows when that was."""
    Record.objects.create(key=key)
    deadline = time.monotonic() + timeout
    while not Path(marker).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no file {marker} within {timeout} s")
        time.sleep(0.01)
    Path(f"{marker}.returned").touch()
    return f"{key} done"


@task(atomic=False, retries=3)
def counts_run_with_retries(cqt, key):
    """Non-atomic and retried on any error: its Record is written (and kept) as it runs."""
    Record.objects.create(key=key)
    return key


@task(retries=3)
def counts_run_atomic_with_retries(cqt, key, runs):
    """Atomic and retried on any error: its Record commits with its outcome; each run also adds a
    line to the file ``runs``, which no rollback takes back."""
    with open(runs, "a") as out:
        out.write(f"{key}\n")
    Record.objects.create(key=key)
    return key


# -- fault tests (processes) --
# tests/faults/: each one names the fault of issue 14 it serves.

#: Text with a NUL character: Python and JSON take it, PostgreSQL's text and jsonb refuse it.
NUL_TEXT = "before\x00after"


class Abort(BaseException):
    """Not an ``Exception``: what a task raising it does to its worker process is the fault."""


@task
def puts_nul(cqt, where):
    """Puts :data:`NUL_TEXT` in its error ("error"), only in its traceback ("traceback"), in a log
    line ("log") or in its progress message ("progress"); returns ``where`` if it did not raise."""
    if where == "error":
        raise ValueError(NUL_TEXT)
    if where == "traceback":
        try:
            raise ValueError(NUL_TEXT)
        except ValueError as error:
            raise RuntimeError("a clean message, caused by a NUL one") from error
    if where == "log":
        cqt.log(NUL_TEXT)
    if where == "progress":
        cqt.progress(1, 2, NUL_TEXT)
    return where


@task
def returns_value(cqt, kind, n=0):
    """Returns ``f"ok {n}"``, or (``kind`` "nan", "inf" or "nul") a value that ``json.dumps``
    accepts and PostgreSQL's jsonb refuses. Quick and atomic: it runs in batches."""
    return {"ok": f"ok {n}", "nan": float("nan"), "inf": float("inf"), "nul": NUL_TEXT}[kind]


@task(atomic=False)
def holds_the_gil(cqt, seconds):
    """Sleeps in C without releasing the GIL (a call through ``ctypes.PyDLL`` keeps it), so no
    other thread of its process runs meanwhile; returns "woke"."""
    import ctypes

    ctypes.PyDLL(None).sleep(seconds)
    return "woke"


@task(atomic=False, retry_on_lost=True)
def runs_again_when_lost(cqt, key, first, later):
    """Leaves a Record, sleeps ``first`` seconds on its first run and ``later`` on the others;
    returns which run it was ("run 1", "run 2", ...)."""
    Record.objects.create(key=key)
    run = Record.objects.filter(key=key).count()
    time.sleep(first if run == 1 else later)
    return f"run {run}"


@task
def raises_base_exception(cqt, kind):
    """Raises ``KeyboardInterrupt`` or :class:`Abort`, neither of them an ``Exception``."""
    if kind == "KeyboardInterrupt":
        raise KeyboardInterrupt("raised by the task")
    raise Abort("raised by the task")


@task(atomic=False)
def chains_after_itself(cqt, key):
    """Chains a task after its own row while it runs: its claimed row said it had none."""
    cqt.chain(counts_run, (key,))
    return "first"


@task
def adopted_while_running(cqt, path):
    """Waits (making no query) until the file at ``path`` exists: meanwhile a test makes it a subtask."""
    import os
    import time

    deadline = time.monotonic() + 10
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "adopted"


@task
def returns_task(cqt, task_id):
    """Returns a task it did not create (adopting it): its result becomes this one's."""
    return Task.objects.get(pk=task_id)


@task(atomic=False)
def plain_noop(cqt):
    return None


@task(atomic=False, queue="reports")
def timed_report(cqt, seconds=0):
    """A task of the "reports" queue that returns when its function began and ended."""
    began = time.time()
    time.sleep(seconds)
    return [began, time.time()]



# -- Retry from the failed step (tests/unit/test_retrying.py) --------------------------------
# mendable fails while a Record "broken:<key>" exists (the bug the operator then fixes), and
# leaves a Record "ran:<key>" at every run, so a test counts what ran again.


@task(atomic=False)
def mendable(cqt, key, value=None, params=None):
    Record.objects.create(key=f"ran:{key}")
    if Record.objects.filter(key=f"broken:{key}").exists():
        raise RuntimeError(f"{key} is broken")
    if params is not None:  # a step of a pipeline
        return {key: value if value is not None else True}
    return key if value is None else value


@task
def step_returns(cqt, value, params):
    """A pipeline's step returning ``value``, a dict of params or not."""
    return value


@task
def total(cqt, results, as_params=False):
    """A chord's callback: fails on a None slot (a member that failed, with allow_failures)."""
    return {"total": sum(results)} if as_params else sum(results)


@task
def mendable_tree(cqt, key):
    """Subtasks a -> chained c, and b."""
    cqt.subtask(mendable, (f"{key}:a",)).chain(mendable, (f"{key}:c",))
    cqt.subtask(mendable, (f"{key}:b",))
    return key


@task
def mendable_chord_step(cqt, key, params):
    """A pipeline's step returning a chord, as the demo's render does."""
    from cq.canvas import chord

    return chord([mendable.s(f"{key}:{n}", n) for n in (1, 2, 3)])(total.s(as_params=True))


@task
def mendable_job(cqt, key):
    """The demo's shape: a top-level task returning a pipeline whose second stage returns a chord."""
    from cq.canvas import stages

    return stages([(mendable.s(f"{key}:first"), 3), (mendable_chord_step.s(key), 2),
                   (mendable.s(f"{key}:last"), 1)], params={"job": key}).delay()

if os.environ.get("CQ_TEST_DEPLOYED"):  # a worker of the newer deploy: tests/integration/test_deploys.py
    from . import deployed  # noqa: F401
