"""The benchmark's task functions: no work at all, so the numbers are cq's own cost."""

from cq import task

try:
    from django.tasks import task as django_task
except ImportError:  # Django 5.2: the django-tasks package
    from django_tasks import task as django_task


@task("bench.noop")
def noop(cqt, i=0):
    return None


@task("bench.fan_out")
def fan_out(cqt, n):
    for i in range(n):
        cqt.subtask(noop, (i,))
    return n


@task("bench.total")
def total(cqt, results):
    return len(results)


@django_task
def django_noop(i=0):
    """The same no-op, written against Django's Tasks framework (cq.backends.CQBackend)."""
    return None
