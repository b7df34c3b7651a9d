"""The JSON API (``path("cq/", include("cq.urls"))``): list and read tasks, create one by
registered name, revoke, retry (the same row, or from the failed step) and re-run.

Every answer is JSON. Errors have one shape, ``{"error": {"code": ..., "message": ...}}``,
with the HTTP status: 400 bad input, 401 not logged in, 403 not allowed, 404 no such task,
405 wrong method, 409 the action cannot run on that task (``cq.engine.actions`` says why).
Bad input is any value cq would not store (``cq.validation``): a body that is not strict JSON
(``NaN``, nesting too deep for Python's parser, over Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE``),
a NUL in a filter, an eta without an instant in UTC; it never reaches the database. Staff see
every task and may act on any; another user sees and acts on the tasks
``cq.web.access.can_see`` allows; creating a task takes staff or the task model's ``add``
permission, and only a registered function runs: the name is looked up in the ``@task``
registry, never imported.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import RequestDataTooBig, ValidationError
from django.db.models import Q, QuerySet
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .. import registry, validation
from ..engine import actions
from ..engine.metadata import own_columns
from ..engine.transitions import queueing
from ..exceptions import CQError, InvalidTask, TaskNotRegistered
from ..models import TaskStatus, find_task, get_task_model, parse_task_id
from ..workflows import retrying
from . import listing
from .access import can_see

PAGE = 50
#: Options a caller of the API may give a new task.
OPTIONS = frozenset({"queue", "priority", "fields", "countdown", "eta", "unique_key", "result_ttl"})


class Refused(Exception):
    """An error answer; ``details`` join ``code`` and ``message`` in its ``error`` object."""

    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def endpoint(*methods: str, created: bool = True) -> Any:
    """Answer JSON, refuse anonymous users and other methods, and turn refusals into errors. A POST
    answers 201 unless it creates nothing (``created=False``)."""

    def decorate(view: Any) -> Any:
        def answer(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            try:
                if request.method not in methods:
                    raise Refused(405, "method_not_allowed", f"Use {' or '.join(methods)}.")
                if not request.user.is_authenticated:
                    raise Refused(401, "not_logged_in", "Log in first.")
                status = 201 if request.method == "POST" and created else 200
                return JsonResponse(view(request, *args, **kwargs), status=status)
            except Refused as refusal:
                return _error(refusal.status, refusal.code, refusal.message, **refusal.details)
            except TaskNotRegistered as error:
                return _error(400, "unknown_task", str(error))
            except CQError as error:
                return _error(400, "invalid", str(error))

        return answer

    return decorate


def _error(status: int, code: str, message: str, **details: Any) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, **details}}, status=status)


def as_json(task: Any) -> dict[str, Any]:
    return {
        "id": str(task.pk), "func_name": task.func_name, "status": task.status,
        "status_label": TaskStatus(task.status).label, "args": task.args, "kwargs": task.kwargs,
        "result": task.result, "error": task.error, "exception": task.exception, "traceback": task.traceback,
        "progress": dict(task.progress) or None, "fields": task.fields, "queue": task.queue,
        "priority": task.priority, "parent": _id(task.parent_id), "top": _id(task.top_id),
        "previous": _id(task.previous_id), "created": _time(task.created), "submitted": _time(task.submitted),
        "started": _time(task.started), "finished": _time(task.finished), "retries": task.retries,
        "worker": task.worker,
    }


def _id(pk: Any) -> str | None:
    return None if pk is None else str(pk)


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


@endpoint("GET", "POST")
def tasks(request: HttpRequest) -> dict[str, Any]:
    """GET: a page of tasks, newest first, filtered as :func:`filter_tasks` reads the query, after
    ``cursor`` (the ``next`` of the page before), with the ``next`` cursor and the ``count`` of
    all that match (``cq.web.listing``). POST: create one."""
    if request.method == "POST":
        return {"task": as_json(_create(request))}
    found = filter_tasks(visible_to(request, get_task_model()._default_manager.all()), request.GET)
    statuses = listing.statuses_of(request.GET)
    try:
        page = listing.page(found, statuses, PAGE, request.GET.get("cursor"))
    except listing.BadCursor as error:
        raise Refused(400, "invalid_cursor", str(error)) from None
    return {"tasks": [{**as_json(row["task"]), "wait": row["wait"], "duration": row["duration"]}
                      for row in listing.rows(page.tasks)],
            "next": page.next, "count": listing.count(found, statuses).as_json()}


#: The dashboard's time windows: ``window=1h`` lists the tasks created in the last hour.
WINDOWS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "24h": timedelta(days=1),
           "7d": timedelta(days=7)}


def filter_tasks(found: QuerySet, query: Mapping[str, str]) -> QuerySet:
    """The tasks of ``found`` that a list's query asks for: ``status`` (codes, comma-separated),
    ``func_name``, ``window`` (one of :data:`WINDOWS`), ``since`` and ``until`` (ISO date and time,
    of creation; without an offset, in the current time zone), ``owner`` (a user's id or user
    name, on a task model with an owner), ``q`` (a task id), ``ids`` (task ids, comma-separated or
    repeated, at most :data:`MAX_IDS`) and ``all`` (``1``: subtasks too; top-level tasks only
    otherwise, unless ``q`` or ``ids`` name the tasks). Bad values are refused."""
    for name, value in query.items():
        if "\x00" in value:
            raise Refused(400, "invalid", f"{name} holds a NUL character, which no task has.")
    if query.get("all", "") not in ("", "0", "1"):
        raise Refused(400, "invalid", f"all is 1 (subtasks too) or 0, not {validation.excerpt(query['all'], 20)}.")
    if "ids" in query:
        found = found.filter(pk__in=_ids(query))
    elif query.get("all") != "1" and not query.get("q"):
        found = found.filter(top__isnull=True)
    if query.get("status"):
        found = found.filter(status__in=query["status"].split(","))
    if query.get("func_name"):
        found = found.filter(func_name=query["func_name"])
    if query.get("window"):
        if query["window"] not in WINDOWS:
            raise Refused(400, "invalid", f"window is one of {', '.join(WINDOWS)}, not {query['window']!r}.")
        found = found.filter(created__gte=timezone.now() - WINDOWS[query["window"]])
    for name, lookup in (("since", "created__gte"), ("until", "created__lt")):
        if query.get(name):
            found = found.filter(**{lookup: _moment(name, query[name])})
    if query.get("owner"):
        found = found.filter(_owned_by(found.model, query["owner"].strip()))
    if query.get("q"):
        found = found.filter(pk=parse_task_id(query["q"]))
    return found


#: How many tasks ``ids`` may name: more than a page of the list selects.
MAX_IDS = 1000


def _ids(query: Mapping[str, str]) -> list[Any]:
    values = query.getlist("ids") if hasattr(query, "getlist") else [query["ids"]]
    given = [value.strip() for chunk in values for value in chunk.split(",") if value.strip()]
    if not given:
        raise Refused(400, "invalid", "ids names no task: select some first.")
    if len(given) > MAX_IDS:
        raise Refused(400, "invalid", f"ids names {len(given)} tasks; at most {MAX_IDS} at a time.")
    ids = [parse_task_id(value) for value in given]
    if None in ids:
        raise Refused(400, "invalid", f"ids holds {validation.excerpt(given[ids.index(None)], 60)}, not a task id.")
    return ids


def _moment(name: str, value: Any) -> datetime:
    """``value``, an ISO date and time, as an aware datetime (without an offset, in the current
    time zone) that the database can store."""
    try:
        moment = parse_datetime(value.strip()) if isinstance(value, str) else None
    except ValueError:  # well formed, but no such time (February 30th, an offset of 99 hours)
        moment = None
    if moment is None:
        raise Refused(400, "invalid", f"{name} takes an ISO date and time, not {validation.excerpt(value, 60)}.")
    try:
        return validation.moment(moment, name)
    except InvalidTask as error:
        raise Refused(400, "invalid", str(error)) from None


def _owned_by(model: Any, owner: str) -> Q:
    field = next((field for field in model._meta.fields if field.name == "owner"), None)
    if field is None or not field.is_relation:
        raise Refused(400, "invalid", "The task model has no owner.")
    found = Q()
    try:
        found |= Q(owner=field.target_field.to_python(owner))
    except ValidationError:
        pass
    username = getattr(field.related_model, "USERNAME_FIELD", None)
    if username:
        found |= Q(**{f"owner__{username}": owner})
    if not found:
        raise Refused(400, "invalid", f"No owner can be {owner!r}.")
    return found


@endpoint("GET")
def task(request: HttpRequest, task_id: str) -> dict[str, Any]:
    """One task with its tree (for a top-level task, every task under it)."""
    found = _find(request, task_id)
    tree = get_task_model()._default_manager.filter(top=found.pk).order_by("created")
    return {"task": as_json(found), "tree": [as_json(t) for t in tree], "logs": found.logs}


@endpoint("POST")
def revoke(request: HttpRequest, task_id: str) -> dict[str, Any]:
    found = _find(request, task_id)
    terminate = read_body(request).get("terminate") is True
    _allowed("terminate" if terminate else "revoke", found)
    found.revoke(terminate=terminate)
    return {"task": as_json(found)}


@endpoint("POST")
def retry(request: HttpRequest, task_id: str) -> dict[str, Any]:
    found = _find(request, task_id)
    _allowed("retry", found)
    if not queueing.retry_now(found):
        raise Refused(409, "wrong_status", f"Task {found.pk} changed meanwhile: it is {found.get_status_display()}.")
    return {"task": as_json(found)}


@endpoint("POST")
def retry_failed(request: HttpRequest, task_id: str) -> dict[str, Any]:
    """Retry a top-level task from its failed step (``cq.workflows.retrying``): the task as it now
    is, and the rows of its tree that run again."""
    found = _find(request, task_id)
    _allowed("retry_failed", found)
    if not retrying.retry_failed(found):
        raise Refused(409, "wrong_status", f"Task {found.pk} changed meanwhile (another retry got there first).")
    again = get_task_model()._default_manager.filter(top=found.pk, status__in=[TaskStatus.QUEUED, TaskStatus.PENDING])
    return {"task": as_json(found), "again": [str(pk) for pk in again.values_list("pk", flat=True)]}


@endpoint("POST")
def rerun(request: HttpRequest, task_id: str) -> dict[str, Any]:
    found = _find(request, task_id)
    _allowed("rerun", found)
    _may_create(request)  # a re-run is a new task
    return {"task": as_json(found.rerun())}


def _allowed(action: str, task: Any) -> None:
    """Refuse (409, with the reason) an action that cannot run on ``task`` (``cq.engine.actions``)."""
    reason = actions.refusal(action, task)
    if reason is not None:
        raise Refused(409, "wrong_status", reason, action=action)


def _may_create(request: HttpRequest) -> None:
    Task = get_task_model()
    if not (request.user.is_staff or request.user.has_perm(f"{Task._meta.app_label}.add_{Task._meta.model_name}")):
        raise Refused(403, "forbidden", "Creating tasks takes staff or the permission to add tasks.")


def _create(request: HttpRequest) -> Any:
    _may_create(request)
    body = read_body(request)
    name = body.get("func_name")
    if not isinstance(name, str):
        raise Refused(400, "invalid", "Give func_name, the registered name of a task function.")
    args, kwargs, options = body.get("args", []), body.get("kwargs", {}), body.get("options", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict) or not isinstance(options, dict):
        raise Refused(400, "invalid", "args is a JSON list, kwargs and options JSON objects.")
    unknown = set(options) - OPTIONS
    if unknown:
        raise Refused(400, "invalid", f"Unknown option(s) {', '.join(sorted(unknown))}; "
                                      f"the API takes {', '.join(sorted(OPTIONS))}.")
    if options.get("eta") is not None:
        options["eta"] = _moment("eta", options["eta"])
    options["fields"] = _own_columns(request, options.get("fields"))
    try:
        return registry.require(name).delay_args(args, kwargs, **options)
    except InvalidTask as error:
        raise Refused(400, "invalid", str(error)) from None


def _own_columns(request: HttpRequest, fields: Any) -> Any:
    """``options.fields`` as the API lets a user give them: the task model's own columns (an
    ``owner``, an ``organisation``) only from staff, each cleaned as a form would (a 400 when
    bad); and on a model with an ``owner``, the requesting user unless staff named another."""
    if fields is not None and not isinstance(fields, dict):
        raise Refused(400, "invalid", "options.fields is a JSON object.")
    fields = dict(fields or {})
    columns = own_columns()
    given = sorted(columns[key] for key in fields if key in columns)
    if given and not request.user.is_staff:
        raise Refused(403, "forbidden", f"Only staff may set the task model's own column(s) {', '.join(given)} "
                                        f"through the API.")
    model = get_task_model()
    for key in [key for key in fields if key in columns]:
        field: Any = model._meta.get_field(columns[key])
        try:
            value = field.clean(fields.pop(key), model())
        except ValidationError as error:
            raise Refused(400, "invalid", f"options.fields[{key!r}]: {' '.join(error.messages)}") from None
        fields[field.attname] = value  # a foreign key's is the id, as clean() gives it
    if "owner" in columns and not any(columns.get(key) == "owner" for key in fields):
        fields["owner_id"] = request.user.pk
    return fields or None


def read_body(request: HttpRequest) -> dict[str, Any]:
    """A request's JSON object, or a refusal saying why it is not one (every endpoint of cq's
    JSON API reads its body here)."""
    try:
        raw = request.body
    except RequestDataTooBig as error:
        raise Refused(400, "too_large", str(error)) from None
    if not raw:
        return {}
    try:
        body = json.loads(raw, parse_constant=_not_json)
    except ValueError as error:  # UnicodeDecodeError too
        raise Refused(400, "invalid_json", f"The body is not JSON: {error}") from None
    except RecursionError:
        raise Refused(400, "invalid_json", "The body nests lists and objects too deep to read.") from None
    if not isinstance(body, dict):
        raise Refused(400, "invalid_json", "The body is a JSON object.")
    return body


def _not_json(constant: str) -> Any:
    # Python's json reads NaN, Infinity and -Infinity; JSON has no such numbers.
    raise ValueError(f"{constant} is not a JSON number")


def _find(request: HttpRequest, task_id: str) -> Any:
    found = find_task(task_id)
    if found is None:
        raise Refused(404, "not_found", f"No task has the id {task_id!r}.")
    if not can_see(request.user, found):
        raise Refused(403, "forbidden", f"You may not see task {task_id}.")
    return found


def visible_to(request: HttpRequest, queryset: Any) -> Any:
    """The tasks of ``queryset`` the request's user may list (the API's list and its bulk actions)."""
    if request.user.is_staff:
        return queryset
    if "owner" in {field.name for field in queryset.model._meta.fields}:
        return queryset.filter(owner=request.user.pk)
    raise Refused(403, "forbidden", "Listing tasks takes staff.")
