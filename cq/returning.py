"""``UPDATE ... RETURNING``: change rows and read them back in one statement.

Django's ``QuerySet.update()`` returns only a count, so claiming a task and
then loading it took two queries, and so did finishing one and learning its
parent. PostgreSQL and SQLite (3.35+) return the updated rows; other
databases fall back to an update and a select.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from django.db import connections
from django.db.models import Model, QuerySet
from django.db.models.sql import UpdateQuery

M = TypeVar("M", bound=Model)

_VENDORS = frozenset({"postgresql", "sqlite"})


def update_returning(queryset: QuerySet[M], values: dict[str, Any], fields: Iterable[str] | None = None) -> list[M]:
    """Apply ``values`` to the rows of ``queryset``; return those rows as instances, with
    ``fields`` loaded (all fields when ``None``; the primary key always)."""
    model = queryset.model
    names = [f.name for f in model._meta.concrete_fields] if fields is None else ["pk", *fields]
    columns = [model._meta.pk.column if name == "pk" else model._meta.get_field(name).column for name in names]
    connection = connections[queryset.db]
    if connection.vendor not in _VENDORS:
        ids = list(queryset.values_list("pk", flat=True))
        model._default_manager.filter(pk__in=ids).update(**values)
        return list(model._default_manager.filter(pk__in=ids).only(*names))
    query = queryset.query.chain(UpdateQuery)
    query.add_update_values(values)
    sql, params = query.get_compiler(queryset.db).as_sql()
    quoted = ", ".join(connection.ops.quote_name(column) for column in dict.fromkeys(columns))
    return list(model._default_manager.db_manager(queryset.db).raw(f"{sql} RETURNING {quoted}", params))
