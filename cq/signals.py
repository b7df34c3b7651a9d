"""Signals cq sends.

``task_log(sender=Task, task, records)``: log lines of a task were published
(see ``cq.logs``); ``records`` is a list of ``{"message", "timestamp", "level"}``.
"""

from __future__ import annotations

from django.dispatch import Signal

task_log = Signal()
