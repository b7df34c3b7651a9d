"""Signals cq sends.

``task_log(sender=Task, task, records)``: log lines of a task were published
(see ``cq.engine.logs``); ``records`` is a list of ``{"message", "timestamp", "level"}``.

``task_finished(sender=task model, task)``: a task reached a final status (Success,
Failure, Incomplete, Lost or Revoked), sent in the process that recorded it once its
transaction committed; ``cq.backends`` sends Django's ``task_finished`` from it.
"""

from __future__ import annotations

from django.dispatch import Signal

task_log = Signal()
task_finished = Signal()
