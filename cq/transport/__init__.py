"""The channel layer's part: doorbells for workers, live events for browsers and notifiers.

- ``doorbell``: ringing (on commit) and hearing "task <id> is ready", on one long-lived event
  loop per process.
- ``events``: a small JSON event for every change of a task, to the events layer's groups
  and to ``CQ_NOTIFIERS``.

Both are hints, never the truth: the task row is. cq's Redis channel layer itself is
``cq.layers`` (its path is named in settings, so it stays at cq's top level).
"""
