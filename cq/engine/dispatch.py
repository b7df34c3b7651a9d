"""Creating and submitting tasks: the row first, the doorbell once it commits."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, connections, models, router, transaction
from django.utils import timezone

from .. import registry, validation
from ..conf import settings
from ..exceptions import DuplicateSubmitError, InvalidTask
from ..models import DONE, UNFINISHED, TaskStatus, get_task_model
from ..transport import doorbell, events
from . import current, statements, tracing
from .inline import InlineTask, run_inline
from .metadata import apply_fields, own_columns
from .transitions import queueing

try:  # psycopg 3, for PostgreSQL: insert() writes rows with COPY
    from psycopg.types.json import Jsonb
except ImportError:  # SQLite, or psycopg 2: insert() uses bulk_create
    Jsonb = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

#: Row fields a caller may set through ``delay_args(**options)``.
OPTIONS = frozenset({"parent", "previous", "result_ttl", "force_chain", "countdown", "eta", "queue", "fields",
                     "priority", "unique_key"})
#: Statuses in which a task holds its ``unique_key``: the partial unique constraint's, in its order.
HOLDS_KEY = sorted(UNFINISHED)


def delay(func: Any, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, *,
          submit: bool = True, **options: Any) -> Task | InlineTask:
    """Create a task row for ``func`` and, with ``submit``, queue it once the transaction commits.

    Raises:
        TaskNotRegistered: ``func`` is not a registered task function.
        InvalidTask: the arguments are not JSON, or an option is unknown.
    """
    fn = registry.require(registry.name_of(func))
    if settings.SERIAL:
        # An inline run has finished before the next can start: no two are ever active at once.
        options.pop("unique_key", None)
        if options or not submit:
            raise InvalidTask(f"CQ_SERIAL runs tasks inline, so delay_args() takes no options ({_names(options)}).")
        return run_inline(fn, args, kwargs)
    return create(fn.name, args, kwargs, submit=submit, **options)


def create(func_name: str, args: Iterable[Any], kwargs: dict[str, Any] | None, *,
           submit: bool, **options: Any) -> Task:
    unknown = set(options) - OPTIONS
    if unknown:
        raise InvalidTask(f"Unknown option(s) {_names(unknown)}; delay_args() takes {_names(OPTIONS)}, "
                          f"and the task's own keyword arguments go in kwargs=.")
    args, kwargs = list(args), dict(kwargs or {})
    check_json(func_name, args=args, kwargs=kwargs)
    fn = registry.require(func_name)
    run_after = validation.run_after(options.pop("countdown", None), options.pop("eta", None))
    queue = _queue(fn, options.pop("queue", None))
    _check_unique_key(options)
    priority = validation.priority(options.pop("priority", fn.priority))
    validation.result_ttl(options.get("result_ttl"))
    task = new_row(fn, args, kwargs, options.pop("fields", None), run_after=run_after, queue=queue,
                   priority=priority, **options)
    parent, previous = task.parent, task.previous
    if previous is not None and parent is None:
        task.parent = parent = previous.parent
    if parent is not None:
        task.top_id = parent.top_id or parent.pk
        if parent.status in DONE:
            raise InvalidTask(f"Task {parent.pk} has finished ({parent.get_status_display()}); "
                              f"it cannot take another subtask.")
        if parent.status == TaskStatus.RUNNING and previous is None:
            current.note_subtask(parent.pk)
    # A subtask waits for its parent's function to return, a chained task for its previous one.
    launch_now = submit and previous is None and (parent is None or parent.status == TaskStatus.WAITING)
    if launch_now:
        task.status = TaskStatus.QUEUED
    saved = _insert_one(task)
    if saved is not task:
        return saved
    events.status([task])
    if previous is not None:
        # Tells the previous task, as it finishes, that it has a chain to launch.
        Task.objects.filter(pk=previous.pk, has_next=False).update(has_next=True)
    if launch_now and (run_after is None or run_after <= task.submitted):
        doorbell.ring_on_commit([(task.pk, task.queue, task.priority)])
    elif submit and previous is not None:
        # The previous task may have finished while this row was being written.
        transaction.on_commit(lambda: launch_if_previous_done(task))
    return task


def rerun(task: Task) -> Task:
    """Queue a new top-level task like ``task``: its function, arguments, queue, priority,
    result_ttl and fields (the JSON ones and the task model's own columns)."""
    own = {name: getattr(task, name) for name in set(own_columns().values())}
    return create(task.func_name, task.args, task.kwargs, submit=True, queue=task.queue, priority=task.priority,
                  result_ttl=task.result_ttl, fields={**task.fields, **own})


def _fields(fn: Any, given: Any) -> dict[str, Any]:
    """The decorator's fields, updated with those given for this run."""
    if given is not None and not isinstance(given, dict):
        raise InvalidTask(f"fields= takes a dict, not {given!r}.")
    return {**fn.fields, **(given or {})}


def _queue(fn: Any, queue: Any) -> str:
    """The queue given, checked, or ``fn``'s own when none is."""
    return fn.queue if queue is None else validation.queue_name(queue)


def new_row(fn: Any, args: list[Any], kwargs: dict[str, Any], fields: dict[str, Any] | None = None,
            **columns: Any) -> Task:
    """An unsaved row calling ``fn`` with its own defaults (priority, fields, concurrency key), as
    ``delay()`` gives them: ``fields`` add to the function's, ``columns`` set the rest (its
    ``trace``, unless given, is the current span's: ``cq.engine.tracing``)."""
    columns.setdefault("priority", fn.priority)
    if "trace" not in columns:
        columns["trace"] = tracing.carrier()
    row = Task(func_name=fn.name, args=args, kwargs=kwargs, concurrency_key=fn.concurrency_key_for(args, kwargs),
               **columns)
    apply_fields(row, _fields(fn, fields))
    return row


def _check_unique_key(options: dict[str, Any]) -> None:
    key = options.get("unique_key")
    if key is None:
        return
    if not validation.is_key(key):
        raise InvalidTask(f"unique_key= takes {validation.KEY_RULE}, not {validation.excerpt(key, 60)}.")
    if options.get("parent") is not None or options.get("previous") is not None:
        raise InvalidTask("unique_key= is for top-level tasks: a subtask or chained task given the key of a "
                          "task outside its tree could not be waited for.")


def _insert_one(task: Task) -> Task:
    """Insert ``task``; if its ``unique_key`` is held by an active task, return that task instead.

    The partial unique constraint decides, not a look before the insert: the insert runs in a
    savepoint (so that the caller's transaction survives the refusal), and on PostgreSQL it waits
    for an uncommitted twin's transaction to end. If the holder finished in between, try again.
    """
    if task.unique_key is None:
        _save(task)
        return task
    for _attempt in range(3):
        try:
            with transaction.atomic():
                _save(task)
            return task
        except IntegrityError as error:
            refused = error
        holder = Task.objects.filter(unique_key=task.unique_key, status__in=HOLDS_KEY).first()
        if holder is not None:
            return holder
    raise refused


def _save(task: Task) -> None:
    """Insert a new row: as ``save()`` would, in one statement written once per shape."""
    if statements.plain(type(task)):
        statements.insert(task, connections[router.db_for_write(type(task))])
    else:
        task.save(force_insert=True)


def delay_many(fn: Any, calls: Iterable[Any], **options: Any) -> list[Any]:
    """Create and queue one task per call in one INSERT, with one pipelined send on commit.

    Each call is a list or tuple of positional arguments, or a dict of keyword arguments.
    ``options`` are those of ``delay_args`` that make sense for top-level tasks
    (``result_ttl``, ``queue``, ``countdown``, ``eta``).

    Raises:
        InvalidTask: a call is not JSON, or an option is not allowed; nothing is written.
    """
    if "unique_key" in options:
        raise InvalidTask("delay_many() takes no unique_key: one key for many tasks would queue only the first. "
                          "Call delay_args(args, kwargs, unique_key=...) once per task instead.")
    allowed = {"result_ttl", "queue", "countdown", "eta", "fields", "priority"}
    unknown = set(options) - allowed
    if unknown:
        raise InvalidTask(f"delay_many() takes {_names(allowed)}, not {_names(unknown)}.")
    if settings.SERIAL:
        return [delay(fn, *_split(call)) for call in calls]
    queue = _queue(fn, options.pop("queue", None))
    run_after = validation.run_after(options.pop("countdown", None), options.pop("eta", None))
    fields = _fields(fn, options.pop("fields", None))
    priority = validation.priority(options.pop("priority", fn.priority))
    validation.result_ttl(options.get("result_ttl"))
    now = timezone.now()
    trace = tracing.carrier()
    rows = []
    for call in calls:
        args, kwargs = _split(call)
        check_json(fn.name, args=args, kwargs=kwargs)
        rows.append(new_row(fn, args, kwargs, fields, status=TaskStatus.QUEUED, queue=queue, run_after=run_after,
                            submitted=now, created=now, priority=priority, trace=trace, **options))
    with transaction.atomic():
        insert(rows)
        if run_after is None or run_after <= now:
            doorbell.ring_on_commit((task.pk, queue, priority) for task in rows)
    return rows


def insert(rows: list[Task]) -> None:
    """Write new task rows in one statement (per 1,000), in the order given: ``bulk_create``, or on
    PostgreSQL with psycopg 3 a ``COPY``, three times as fast: no SQL to build and quote for 28
    columns a row."""
    connection = connections[router.db_for_write(Task)]
    if connection.vendor != "postgresql" or connection.Database.__name__ != "psycopg":  # type: ignore[attr-defined]
        Task.objects.bulk_create(rows, batch_size=1000)
        return
    fields = Task._meta.concrete_fields
    json_fields = [i for i, field in enumerate(fields) if isinstance(field, models.JSONField)]
    quote = connection.ops.quote_name
    sql = f"COPY {quote(Task._meta.db_table)} ({', '.join(quote(str(f.column)) for f in fields)}) FROM STDIN"
    began = time.monotonic()
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for row in rows:
            values = [getattr(row, field.attname) for field in fields]
            for i in json_fields:
                value = fields[i].get_prep_value(values[i])
                values[i] = None if value is None else Jsonb(value)
            copy.write_row(values)
    if connection.queries_logged:  # as Django logs its own statements (DEBUG, the debug toolbar, tests)
        connection.queries_log.append({"sql": f"{sql} -- {len(rows)} rows", "time": f"{time.monotonic() - began:.3f}"})
    for row in rows:
        row._state.adding, row._state.db = False, connection.alias


def _split(call: Any) -> tuple[list[Any], dict[str, Any]]:
    if isinstance(call, dict):
        return [], dict(call)
    if isinstance(call, list | tuple):
        return list(call), {}
    raise InvalidTask(f"Each call of delay_many() is a list or tuple of arguments or a dict of keyword "
                      f"arguments, not {call!r}.")


def submit(task: Task, prepend_args: Iterable[Any] = ()) -> None:
    """Queue a PENDING task, putting ``prepend_args`` before its own arguments. Under a current
    span, the task keeps that span's context rather than its creator's.

    A revoked task is left alone, as in django-cq.

    Raises:
        DuplicateSubmitError: the task is not PENDING (already submitted, or finished).
        InvalidTask: ``prepend_args`` are not JSON.
    """
    task.refresh_from_db(fields=["status", "args", "kwargs", "queue", "priority", "concurrency_key"])
    if task.status == TaskStatus.REVOKED:
        return
    args = [*prepend_args, *task.args]
    check_json(task.func_name, args=args)
    fn = registry.find(task.func_name)
    if prepend_args and fn is not None:  # the key is a function of the arguments
        task.concurrency_key = fn.concurrency_key_for(args, task.kwargs)
    if not queueing.submit(task, args, task.concurrency_key, tracing.carrier()):
        task.refresh_from_db(fields=["status"])
        raise DuplicateSubmitError(f"Task {task.pk} is {task.get_status_display()}, not Pending: "
                                   f"it cannot be submitted again.")


def launch_if_previous_done(task: Task) -> None:
    status = Task.objects.filter(pk=task.previous_id).values_list("status", flat=True).first()  # type: ignore[misc]
    if status == TaskStatus.SUCCESS or (status in DONE and task.force_chain):
        queueing.launch(Task.objects.filter(pk=task.pk))


def wait(task: Task, timeout: float | None = None) -> Task:
    """Poll until ``task`` is done or ``timeout`` milliseconds have passed; return it refreshed.

    Raises:
        InvalidTask: the task was never saved.
    """
    if task._state.adding:
        raise InvalidTask("wait() needs a saved task: this one has no row yet (use delay() or save it).")
    deadline = None if timeout is None else time.monotonic() + timeout / 1000
    pause = 0.005
    while True:
        status = Task.objects.filter(pk=task.pk).values_list("status", flat=True).get()
        if status in DONE or (deadline is not None and time.monotonic() >= deadline):
            task.refresh_from_db()
            return task
        remaining = pause if deadline is None else min(pause, max(deadline - time.monotonic(), 0))
        time.sleep(remaining)
        pause = min(pause * 2, 0.2)


def check_json(func_name: str, **values: Any) -> None:
    """Raise ``InvalidTask`` unless each value is JSON cq can store (``cq.validation.check_storable``);
    the keyword names the value in the message: ``check_json("x", kwargs={...})``."""
    for what, value in values.items():
        validation.check_storable(value, f"the {what} of task {func_name!r}")


def _names(values: Iterable[str]) -> str:
    return ", ".join(sorted(values))
