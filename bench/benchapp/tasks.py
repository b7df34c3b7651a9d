"""The benchmark's task functions: no work at all, so the numbers are cq's own cost."""

from cq import task


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
