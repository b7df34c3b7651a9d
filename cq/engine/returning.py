"""``UPDATE ... RETURNING``: change rows and read them back in one statement.

Django's ``QuerySet.update()`` returns only a count, so claiming a task and
then loading it took two queries, and so did finishing one and learning its
parent. PostgreSQL and SQLite (3.35+) return the updated rows; other
databases fall back to an update and a select.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from django.db import connections
from django.db.models import Field, Model, QuerySet
from django.db.models.sql import UpdateQuery

from . import statements

M = TypeVar("M", bound=Model)

_VENDORS = frozenset({"postgresql", "sqlite"})


def update_returning(queryset: QuerySet[M], values: dict[str, Any], fields: Iterable[str] | None = None) -> list[M]:
    """Apply ``values`` to the rows of ``queryset``; return those rows as instances, with
    ``fields`` loaded (all fields when ``None``; the primary key always)."""
    model = queryset.model
    names = [f.name for f in model._meta.concrete_fields] if fields is None else ["pk", *fields]
    columns = [str(model._meta.pk.column) if name == "pk" else _column(model, name) for name in names]
    connection = connections[queryset.db]
    if connection.vendor not in _VENDORS:
        ids = list(queryset.values_list("pk", flat=True))
        model._default_manager.filter(pk__in=ids).update(**values)
        return list(model._default_manager.filter(pk__in=ids).only(*names))
    query = cast(UpdateQuery, queryset.query.chain(UpdateQuery))
    query.add_update_values(values)
    sql, params = query.get_compiler(queryset.db).as_sql()
    quoted = ", ".join(connection.ops.quote_name(column) for column in dict.fromkeys(columns))
    return list(model._default_manager.db_manager(queryset.db).raw(f"{sql} RETURNING {quoted}", params))


def update_row(model: type[M], pk: Any, guard: dict[str, Any], values: dict[str, Any],
               fields: list[str], using: Any = "default") -> tuple[Any, ...] | None:
    """``UPDATE`` one row, by primary key and only while ``guard`` holds (a ``None`` in it is
    ``IS NULL``); return ``fields`` of the row as it now is (as database values: foreign keys
    as ids), or ``None`` if no row matched. The statement is built once per shape: it is on
    every task's path. ``using`` is a database alias, or a connection of one's own (PostgreSQL
    and SQLite only)."""
    connection = connections[using] if isinstance(using, str) else using
    using = connection.alias
    if connection.vendor not in _VENDORS:
        queryset = model._default_manager.using(using).filter(pk=pk, **guard)
        if not queryset.update(**values):
            return None
        return model._default_manager.using(using).filter(pk=pk).values_list(*fields).get()
    meta = model._meta
    columns = tuple(values), tuple((name, value is None) for name, value in guard.items()), tuple(fields)

    def build(quote: Callable[[str], str]) -> str:
        assignments = ", ".join(f"{quote(_column(model, name))} = %s" for name in values)
        conditions = " AND ".join([f"{quote(str(meta.pk.column))} = %s", *(
            f"{quote(_column(model, name))} {'IS NULL' if value is None else '= %s'}"
            for name, value in guard.items())])
        returning = ", ".join(quote(_column(model, name)) for name in fields)
        return f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {conditions} RETURNING {returning}"

    sql = statements.sql(connection, ("update_row", model, columns), build)
    params = [_field(model, name).get_db_prep_save(value, connection) for name, value in values.items()]
    params.append(meta.pk.get_db_prep_value(pk, connection))
    params.extend(_field(model, name).get_db_prep_save(value, connection) for name, value in guard.items()
                  if value is not None)
    rows = statements.run(connection, sql, params)
    return tuple(rows[0]) if rows else None


def _field(model: type[Model], name: str) -> Field[Any, Any]:
    """The concrete field ``name`` of ``model`` (the names given here are never reverse relations)."""
    return cast("Field[Any, Any]", model._meta.get_field(name))


def _column(model: type[Model], name: str) -> str:
    return str(_field(model, name).column)
