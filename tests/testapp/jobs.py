"""Task functions written against Django's Tasks framework (django.tasks, or the django-tasks
package on Django 5.2), run by cq through cq.backends.CQBackend. They live outside tasks.py,
so a worker finds them through the signed path their rows keep."""

from __future__ import annotations

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task

from .models import Record


@task
def noop(*args, **kwargs):
    return None


@task
def meaning_of_life():
    return 42


@task
async def meaning_of_life_async():
    return 42


@task
async def records_async(key):
    await Record.objects.acreate(key=key)
    return key


@task
def fails(message="This task failed"):
    raise ValueError(message)


@task
def returns_a_set():
    return {1, 2}


@task(takes_context=True)
def knows_itself(context, key=None):
    if key is not None:
        Record.objects.create(key=f"{key}:{context.attempt}")
    return {"id": context.task_result.id, "attempt": context.attempt}


@task(takes_context=True)
def fails_on_first_attempt(context, key):
    Record.objects.create(key=f"{key}:{context.attempt}")
    if context.attempt == 1:
        raise ValueError("first attempt")
    return context.attempt


@task(priority=5, queue_name="reports")
def report(name):
    return name


@task
def records(key):
    Record.objects.create(key=key)
    return key


@task
def exits():
    raise SystemExit("This task exited")


@task
def reports_as_cq_task(steps):
    from cq.backends import running_task

    for step in range(1, steps + 1):
        running_task().progress(step, steps, f"step {step}")
    running_task().log("all steps done")
    return steps


@task
async def reports_from_a_coroutine():
    from asgiref.sync import sync_to_async

    from cq.backends import running_task

    row = running_task()
    await sync_to_async(row.log)("from a coroutine")
    return str(row.pk)


@task
def sleeps(seconds):
    import time

    time.sleep(seconds)
    return seconds
