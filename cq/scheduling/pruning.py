"""Pruning: deleting the finished top-level tasks whose ``result_expiry`` has passed, with their
trees, in batches of bounded size, each its own short transaction.

A batch takes the oldest due top-level tasks (through the partial index on ``result_expiry``,
locked with ``SKIP LOCKED`` so that a retry of one of them waits for, or skips, the batch), and
deletes their trees set-wise: the rows that point at a doomed task with ``SET_NULL`` (a chained
task's ``previous``, a parent's ``waiting_on``, ``Worker.current_task``,
``RepeatingTask.last_task``, a model of your own) are cleared by one UPDATE per reference, rows of
your own models that ``CASCADE`` go through Django's ``delete()``, and the tasks through one
DELETE of the tops and every row whose ``top`` is one of them. Django's ``delete()`` would load
every row of every tree into Python first.

When the task model has ``pre_delete``/``post_delete`` receivers, or a reference that cannot be
followed set-wise (``PROTECT``, ``RESTRICT``, ``SET(...)``, a foreign key to another column),
each batch goes through Django's ``delete()`` instead, as it always did.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import connections, models, router, transaction
from django.db.models import Case, Exists, ExpressionWrapper, F, OuterRef, Q, Value, When
from django.db.models.deletion import get_candidate_relations_to_delete
from django.db.models.functions import Now
from django.db.models.signals import post_delete, pre_delete

from .. import retention
from ..conf import settings
from ..metrics import tally
from ..models import DONE, UNFINISHED, get_task_model

if TYPE_CHECKING:  # the concrete class for the checker; at run time, the model in use (CQ_TASK_MODEL)
    from cq.models import Task
else:
    Task = get_task_model()

#: Top-level tasks deleted per batch (with their trees): each batch is one short transaction.
BATCH = 500
#: The task model's own references that a tree's DELETE covers: every row below a top has it as ``top``.
_TREE = ("parent", "top")


@dataclass
class Pruned:
    """What a prune did: top-level tasks and rows (tops and their trees) deleted, batches run."""

    tops: int = 0
    rows: int = 0
    batches: int = 0


def due(now: datetime | Now | None = None) -> models.QuerySet[Any]:
    """The finished top-level tasks whose ``result_expiry`` has passed, but for those with a task
    still unfinished below them (a subtask of a failed task that did not run in a transaction):
    the tree waits for it; and for those the metrics have not counted yet."""
    unfinished = Task._base_manager.filter(top=OuterRef("pk"), status__in=UNFINISHED)
    # A row the metrics' tallies have not counted yet waits for them (cq.metrics.tally).
    return (Task._base_manager.filter(tally.counted(), top__isnull=True, status__in=DONE,
                                      result_expiry__lt=now or Now())
            .exclude(Exists(unfinished)))


def prune(now: datetime | Now | None = None, *, budget: float | None = None, batch: int = BATCH,
          progress: Callable[[Pruned], None] | None = None, tops: models.QuerySet[Any] | None = None) -> Pruned:
    """Delete due tasks (or the top-level ``tops``, with their trees) batch after batch, oldest
    expiry first, until none is left or ``budget`` seconds are spent (``None``: no limit);
    ``progress`` is called after each batch."""
    pruned = Pruned()
    chosen = due(now).order_by("result_expiry") if tops is None else tops.filter(top__isnull=True).order_by("pk")
    deadline = None if budget is None else time.monotonic() + budget
    while deadline is None or time.monotonic() < deadline:
        count, rows = prune_batch(chosen, batch)
        if not count:
            break
        pruned.tops, pruned.rows, pruned.batches = pruned.tops + count, pruned.rows + rows, pruned.batches + 1
        if progress is not None:
            progress(pruned)
        if count < batch:
            break
    return pruned


def prune_batch(tops: models.QuerySet[Any], size: int = BATCH) -> tuple[int, int]:
    """Delete up to ``size`` of the top-level ``tops`` with their trees, in one transaction;
    returns how many tops and how many rows went."""
    alias = router.db_for_write(Task)
    limit = connections[alias].features.max_query_params
    if limit is not None:  # SQLite: each id is a parameter, and the statements name them four times
        size = min(size, limit // 4)
    with transaction.atomic(using=alias):
        ids = list(tops.using(alias).select_for_update(skip_locked=True).values_list("pk", flat=True)[:size])
        if not ids:
            return 0, 0
        return len(ids), delete_trees(ids, alias)


def delete_trees(tops: list[Any], alias: str) -> int:
    """Delete the tasks ``tops`` and every task below them; returns how many rows went. Runs in
    the caller's transaction."""
    plan = _plan()
    if plan is None:
        return Task._base_manager.using(alias).filter(Q(pk__in=tops) | Q(top__in=tops)).delete()[0]
    connection = connections[alias]
    quote = connection.ops.quote_name
    table, pk, top = Task._meta.db_table, Task._meta.pk, Task._meta.get_field("top")
    assert pk is not None
    ids = [pk.get_db_prep_value(value, connection) for value in tops]
    # A row of these trees: a top, or a row whose top is one. Statements with a few literals and
    # one array are parsed and planned in a fraction of the time of the ORM's IN lists (a tenth
    # of a batch's time on PostgreSQL, measured), hence the SQL.
    among, params = _among(connection, quote(str(pk.column)), quote(str(top.column)), ids)
    rows = f"SELECT {quote(str(pk.column))} FROM {quote(table)} WHERE {among}"
    with connection.cursor() as cursor:
        for model, name, cascade in plan:
            if cascade:
                trees = Task._base_manager.using(alias).filter(Q(pk__in=tops) | Q(top__in=tops))
                model._base_manager.using(alias).filter(**{f"{name}__in": trees.values("pk")}).delete()
                continue
            field: Any = model._meta.get_field(name)
            column = quote(str(field.column))
            sql = f"UPDATE {quote(model._meta.db_table)} SET {column} = NULL WHERE {column} IN ({rows})"
            if model is Task:  # a doomed row's own reference goes with it
                cursor.execute(f"{sql} AND NOT {among}", params + params)
            else:
                cursor.execute(sql, params)
        cursor.execute(f"DELETE FROM {quote(table)} WHERE {among}", params)
        return cursor.rowcount


def _among(connection: Any, pk: str, top: str, ids: list[Any]) -> tuple[str, list[Any]]:
    """SQL true for the rows of the trees of ``ids`` (and never NULL), with its parameters: one
    array on PostgreSQL, a list of values elsewhere."""
    if connection.vendor == "postgresql":
        return f"({pk} = ANY(%s) OR ({top} IS NOT NULL AND {top} = ANY(%s)))", [ids, ids]
    marks = ", ".join(["%s"] * len(ids))
    return f"({pk} IN ({marks}) OR ({top} IS NOT NULL AND {top} IN ({marks})))", ids + ids


def _plan() -> list[tuple[type[models.Model], str, bool]] | None:
    """The references to clear (``False``) or cascade (``True``) before a tree's DELETE, as
    ``(model, field name, cascade)``; ``None`` when only Django's ``delete()`` can do it right."""
    if pre_delete.has_listeners(Task) or post_delete.has_listeners(Task):
        return None
    plan: list[tuple[Any, str, bool]] = []
    relation: Any
    for relation in get_candidate_relations_to_delete(Task._meta):  # type: ignore[arg-type]  # any model's
        field, model = relation.field, relation.related_model
        on_delete = field.remote_field.on_delete
        if on_delete is models.DO_NOTHING or (model is Task and field.name in _TREE):
            continue
        if not field.target_field.primary_key or on_delete not in (models.SET_NULL, models.CASCADE):
            return None
        if on_delete is models.CASCADE and model is Task:
            return None  # a reference of your own between tasks: no tree's DELETE covers it
        plan.append((model, field.name, on_delete is models.CASCADE))
    return plan


def reappliable() -> models.QuerySet[Any]:
    """The tasks whose expiry :func:`reapply` resolves again: finished, top-level, no ``result_ttl``."""
    return Task._base_manager.filter(top__isnull=True, status__in=DONE, result_ttl__isnull=True)


def reapply(*, batch: int = 5000, progress: Callable[[int], None] | None = None) -> int:
    """Resolve again the ``result_expiry`` of finished top-level tasks that have no ``result_ttl``
    of their own, from when they finished and the retention rules in force now (rows finished
    under older rules keep theirs until then). Works batch after batch of ``batch`` rows, in
    primary-key order, each one UPDATE in its own transaction; ``progress`` gets the running
    total after each. Returns how many rows it went over."""
    expiry = _expiry()
    rows = reappliable()
    done, last = 0, None
    while True:
        page = rows.order_by("pk") if last is None else rows.filter(pk__gt=last).order_by("pk")
        ids = list(page.values_list("pk", flat=True)[:batch])
        if not ids:
            return done
        Task._base_manager.filter(pk__in=ids).update(result_expiry=expiry)
        done, last = done + len(ids), ids[-1]
        if progress is not None:
            progress(done)


def _expiry() -> models.Expression:
    """``result_expiry`` by the retention rules, as an SQL expression over a row's ``func_name``,
    ``status`` and ``finished``: the rules become the branches of one CASE, in their order."""
    def after(keep: float | None) -> models.Expression:
        if keep is None:
            return Value(None, output_field=models.DateTimeField())
        return ExpressionWrapper(F("finished") + Value(timedelta(seconds=keep)), output_field=models.DateTimeField())

    whens, default = [], after(settings.RESULT_TTL)
    for rule in retention.rules():
        condition = Q()
        if rule.functions is not None:
            condition &= Q(func_name__in=sorted(rule.functions))
        if rule.statuses is not None:
            condition &= Q(status__in=sorted(rule.statuses))
        if not condition:  # matches every task: the rules after it never apply
            default = after(rule.keep)
            break
        whens.append(When(condition, then=after(rule.keep)))
    return Case(*whens, default=default) if whens else default
