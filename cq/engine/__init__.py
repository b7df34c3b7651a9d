"""The engine: creating, claiming, running and recording tasks.

- ``dispatch``: creating and submitting rows (``.delay()``): the row first, the doorbell once
  it commits.
- ``transitions``: every change of a task's status, and what follows it; nothing else writes
  ``status``.
- ``limits``: admitting claimed tasks under concurrency and rate limits.
- ``execution``: running a claimed task, alone or in a batch, and making sure its outcome is
  recorded.
- ``metadata``: a task's fields of the project's own, and its progress.
- ``logs``: ``cqt.log()``, and a tree's lines rolled up to its top-level task.
- ``inline``: plain calls of a task function, and ``.delay()`` under ``CQ_SERIAL``.
- ``current``: the task being run here.
- ``tracing``: OpenTelemetry (optional): the caller's trace context kept with each task, each
  run a span of that trace.
- ``clock``: the database's clock, as this process reads it.
- ``returning``: ``UPDATE ... RETURNING``, to change rows and read them in one statement.

Workers (``cq.workers``) drive it; workflows (``cq.workflows``) build on it.
"""
