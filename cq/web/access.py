"""Who may see a task: staff, and the users ``CQ_TASK_ACCESS`` allows (by default, its owner);
and who may control queues.

The websocket (``cq.web.consumers``) asks before streaming a task's events, and the JSON API
(``cq.web.api``) before showing a task or acting on it.
"""

from __future__ import annotations

from typing import Any

from django.utils.module_loading import import_string

from ..conf import settings


def can_see(user: Any, task: Any) -> bool:
    """Whether ``user`` may watch ``task`` (and act on it, in the dashboard)."""
    if user is None or not user.is_authenticated:
        return False
    if user.is_staff:
        return True
    if settings.TASK_ACCESS:
        return bool(import_string(settings.TASK_ACCESS)(user, task))
    return getattr(task, "owner_id", None) == user.pk


def may_control_queues(user: Any) -> bool:
    """Whether ``user`` may pause, resume or cap queues: staff with the permission to change a
    queue (``cq.change_queue``; superusers have it)."""
    return bool(user is not None and user.is_authenticated and user.is_staff and user.has_perm("cq.change_queue"))
