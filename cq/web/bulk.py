"""Bulk actions (a dead-letter view): retry or revoke every task that a list's filters match,
through the JSON API (``cq/api/bulk/<action>/``) and the dashboard (``cq/bulk/<action>/``).

The selection is the task list's (``cq.web.api.filter_tasks`` reading the same query, among the
tasks ``cq.web.api.visible_to`` lets the user list): what its filters match, or the rows checked
on a page of it (``ids``), under the same rules. Counting comes first: a GET answers how many
tasks match and how many of them the action applies to, and acting takes that ``expected``
count back; if the tasks matching now are not as many, nothing is done (409), so an operator
never acts on more than they saw. Then the matching tasks are read in primary-key order,
:data:`BATCH_SIZE` at a time, and each batch is acted on in its own short transaction (its
doorbells ring and its events are sent when it commits): a million matches never hold one long
lock, and a batch that fails leaves the earlier ones done. At most ``expected`` tasks are acted on.

The actions are the single-task ones, set-wise, by the same owners: retry is
``cq.engine.transitions.queueing.retry_all`` (top-level tasks that ended FAILURE or LOST),
revoke is ``cq.workflows.trees.revoke_all`` (unfinished tasks, with what is under and after
them). A matching task the action does not apply to, or that changed before its batch came, is
skipped: counted, not an error. Each action is logged (``cq.web.bulk``) with who did it and
how many.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse

from ..conf import settings
from ..engine import actions
from ..engine.transitions import queueing
from ..models import get_task_model
from ..workflows import trees
from .access import can_see
from .api import Refused, endpoint, filter_tasks, read_body, visible_to
from .dashboard import render_page

logger = logging.getLogger(__name__)

#: How many tasks one transaction acts on.
BATCH_SIZE = 500
#: The list's query parameters, which select the tasks (``cq.web.api.filter_tasks``).
FILTERS = ("status", "func_name", "window", "since", "until", "owner", "q", "all", "ids")


@dataclass(frozen=True)
class Action:
    """What a bulk action does to a batch of task ids, and to which tasks it applies."""

    name: str
    #: The tasks it applies to, as a filter and in words: "failed or lost" tasks, and more
    #: exactly "top-level tasks that ended Failure or Lost".
    applies: Q
    described: str
    applies_to: str
    #: ``act(ids, terminate)``: how many of ``ids`` it acted on.
    act: Callable[[list[Any], bool], int]


def _retry(ids: list[Any], terminate: bool) -> int:
    return len(queueing.retry_all(get_task_model()._default_manager.filter(pk__in=ids)
                                  .filter(actions.RETRY_APPLIES)))


def _revoke(ids: list[Any], terminate: bool) -> int:
    roots = list(get_task_model()._default_manager.filter(pk__in=ids).filter(actions.REVOKE_APPLIES)
                 .values_list("pk", flat=True))
    return len(trees.revoke_all(roots, terminate) & set(roots)) if roots else 0


# Which tasks each action applies to is cq.engine.actions's to say, as for a single task.
ACTIONS = {
    "retry": Action("retry", actions.RETRY_APPLIES, "failed or lost",
                    "top-level tasks that ended Failure or Lost", _retry),
    "revoke": Action("revoke", actions.REVOKE_APPLIES, "unfinished", "unfinished tasks", _revoke),
}


@dataclass(frozen=True)
class Done:
    """What a bulk action did: ``matched`` = ``acted`` + ``skipped``."""

    action: str
    matched: int
    acted: int
    skipped: int
    batches: int


class CountChanged(Exception):
    """The tasks matching now are not as many as the caller expected."""

    def __init__(self, expected: int, matched: int) -> None:
        super().__init__(f"{matched} tasks match now, not the {expected} expected: count them again.")
        self.expected, self.matched = expected, matched


def _checked(user: Any) -> bool:
    """Whether each task must be shown to ``CQ_TASK_ACCESS`` (which a query cannot ask)."""
    return not user.is_staff and bool(settings.TASK_ACCESS)


def _pages(found: QuerySet, user: Any) -> Iterator[list[Any]]:
    """The ids of ``found``'s tasks that ``user`` may act on, in primary-key order,
    :data:`BATCH_SIZE` at a time (a page is read when the previous one is done)."""
    checked, last = _checked(user), None
    while True:
        page = found.order_by("pk") if last is None else found.order_by("pk").filter(pk__gt=last)
        if checked:
            rows = list(page[:BATCH_SIZE])
            ids = [row.pk for row in rows if can_see(user, row)]
            last = rows[-1].pk if rows else None
        else:
            ids = list(page.values_list("pk", flat=True)[:BATCH_SIZE])
            last = ids[-1] if ids else None
        if last is None:
            return
        yield ids


def count(action: Action, found: QuerySet, user: Any) -> tuple[int, int]:
    """How many tasks of ``found`` ``user`` may act on (matched), and to how many of them
    ``action`` applies now."""
    if not _checked(user):
        return found.count(), found.filter(action.applies).count()
    matched = applies = 0
    for ids in _pages(found, user):
        matched += len(ids)
        applies += found.model._default_manager.filter(pk__in=ids).filter(action.applies).count()
    return matched, applies


def apply(action: Action, found: QuerySet, user: Any, expected: int, terminate: bool = False,
          filters: dict[str, str] | None = None) -> Done:
    """Do ``action`` to the tasks of ``found`` that ``user`` may act on, batch by batch; ``filters``
    (the list's query that chose them) go into the log line.

    Raises:
        CountChanged: as many tasks do not match now as ``expected``; nothing was done.
    """
    matched = found.count() if not _checked(user) else sum(len(ids) for ids in _pages(found, user))
    if matched != expected:
        raise CountChanged(expected, matched)
    seen = acted = batches = 0
    for ids in _pages(found, user):
        ids = ids[:matched - seen]
        if ids:
            with transaction.atomic():
                acted += action.act(ids, terminate)
            seen, batches = seen + len(ids), batches + 1
        if seen >= matched:
            break
    done = Done(action.name, matched, acted, matched - acted, batches)
    logger.info("%s (user %s) bulk-%s: %d of %d matching tasks, %d skipped, in %d batch(es); filters %s.",
                user.get_username(), user.pk, action.name, acted, matched, done.skipped, batches,
                filters or "none")
    return done


def _filters(request: HttpRequest) -> dict[str, str]:
    """The list's filters that ``request`` gives (the selected tasks' ids joined)."""
    found = {name: request.GET[name] for name in FILTERS if request.GET.get(name)}
    ids = [one for value in request.GET.getlist("ids") for one in value.split(",") if one.strip()]
    if ids:
        found["ids"] = ",".join(ids)
    return found


def _action(name: str) -> Action:
    if name not in ACTIONS:
        raise Http404(f"No bulk action is called {name!r}; there are {', '.join(ACTIONS)}.")
    return ACTIONS[name]


@transaction.non_atomic_requests  # each batch commits on its own, even under ATOMIC_REQUESTS
@endpoint("GET", "POST", created=False)
def api(request: HttpRequest, action: str) -> dict[str, Any]:
    """GET: count the tasks the query matches, and those the action applies to (a dry run).
    POST ``{"expected": matched}`` (and for revoke, ``"terminate": true`` maybe): act."""
    if action not in ACTIONS:
        raise Refused(404, "not_found", f"No bulk action is called {action!r}; there are {', '.join(ACTIONS)}.")
    found = filter_tasks(visible_to(request, get_task_model()._default_manager.all()), request.GET)
    if request.method == "GET":
        matched, applies = count(ACTIONS[action], found, request.user)
        return {"action": action, "matched": matched, "applicable": applies, "skipped": matched - applies}
    body = read_body(request)
    expected = body.get("expected")
    if not isinstance(expected, int) or isinstance(expected, bool) or expected < 0:
        raise Refused(400, "invalid", "Give expected: the number of tasks matched, as a GET of this URL counts "
                                      "them (a dry run).")
    if "terminate" in body and (action != "revoke" or not isinstance(body["terminate"], bool)):
        raise Refused(400, "invalid", "terminate is true or false, and only for revoke.")
    try:
        done = apply(ACTIONS[action], found, request.user, expected, body.get("terminate") is True,
                     filters=_filters(request))
    except CountChanged as changed:
        raise Refused(409, "count_changed", str(changed), expected=changed.expected,
                      matched=changed.matched) from None
    return asdict(done)


@transaction.non_atomic_requests
@staff_member_required
def confirm(request: HttpRequest, action: str) -> HttpResponse:
    """The dashboard's bulk action: GET shows the count and asks; POST (with the count shown,
    ``expected``) acts, or asks again if the count changed."""
    chosen = _action(action)
    context: dict[str, Any] = {"action": chosen, "filters": _filters(request),
                               "back": f"{reverse('cq:dashboard')}?{request.GET.urlencode()}"}
    try:
        found = filter_tasks(get_task_model()._default_manager.all(), request.GET)
    except Refused as refusal:
        return _render(request, {**context, "problem": refusal.message}, status=400)
    status = 200
    if request.method == "POST":
        expected = request.POST.get("expected", "")
        if not expected.isdigit():
            return _render(request, {**context, "problem": "The form did not say how many tasks it showed."},
                           status=400)
        try:
            done = apply(chosen, found, request.user, int(expected), filters=context["filters"])
            return _render(request, {**context, "done": done})
        except CountChanged as changed:
            context["changed"], status = changed, 409
    matched, applies = count(chosen, found, request.user)
    counts = {"matched": matched, "applies": applies, "skipped": matched - applies}
    texts = {f"{name}_text": f"{value:,}" for name, value in counts.items()}  # 1,234: thousands shown as such
    return _render(request, {**context, **counts, **texts}, status=status)


def _render(request: HttpRequest, context: dict[str, Any], status: int = 200) -> HttpResponse:
    return render_page(request, "cq/bulk.html", context, status=status)
