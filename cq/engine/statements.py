"""The statements on every task's way, written once per shape and prepared by PostgreSQL.

Django compiles a query's SQL again on every call, and its psycopg cursors bind parameters on
the client, so PostgreSQL parses and plans every statement anew: planning cq's claim (an UPDATE
of a table with a dozen partial indexes) cost PostgreSQL more CPU than running it. The
statements each task passes through (the insert of ``.delay()``, the claim, the outcome) are
built once per shape by their owners, and run through :func:`run`: on PostgreSQL with
psycopg 3, a cursor that binds on the server and prepares each statement once per connection
(Django leaves psycopg's automatic preparation off). Behind a pooler that cannot keep prepared
statements (PgBouncer before 1.21 in transaction mode), set ``CQ_PREPARED_STATEMENTS = False``.
It is still Django's cursor wrapper: ``execute_wrapper`` hooks, the query log and the debug
toolbar see every statement; while Django logs queries (``DEBUG``, a test capturing them) the
usual cursor is used, so that the log shows each statement with its values.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from django.db.backends.utils import CursorWrapper
from django.db.models import NOT_PROVIDED, Field, Model, signals

from ..conf import settings

M = TypeVar("M", bound=Model)


def run(connection: Any, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """Run one of cq's statements on ``connection`` and return its rows (none for a statement
    that returns none), through a cursor that prepares it where it can (see above). That cursor
    is made once per database connection and kept: making one cost a fifth of a statement."""
    if (connection.vendor != "postgresql" or connection.Database.__name__ != "psycopg"
            or connection.queries_logged or not settings.PREPARED_STATEMENTS):
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []
    connection.ensure_connection()
    kept = _kept.get(connection.connection)
    if kept is None or kept[1] != connection.timezone_name or kept[0].closed:
        kept = _kept[connection.connection] = (_preparing_cursor(connection), connection.timezone_name)
    connection.validate_thread_sharing()
    cursor = CursorWrapper(kept[0], connection)  # Django's: execute_wrapper hooks and error wrapping
    cursor.execute(sql, params)
    # Whether it returns rows, from libpq: the cursor's description would build a column object
    # for each of a claim's 34 columns, which cost as much as the rest of this function.
    result = kept[0].pgresult
    return cursor.fetchall() if result is not None and result.nfields else []


#: The preparing cursor of each psycopg connection, and the time zone it was made for.
_kept: weakref.WeakKeyDictionary[Any, tuple[Any, str]] = weakref.WeakKeyDictionary()


def _preparing_cursor(connection: Any) -> Any:
    """A new cursor of ``connection``'s psycopg connection, made by Django (its time zone) as a
    :func:`_preparing` one."""
    raw = connection.connection
    factory = raw.cursor_factory
    raw.cursor_factory = _preparing()
    try:
        return connection.create_cursor()
    finally:
        raw.cursor_factory = factory


@functools.cache
def _preparing() -> type:
    # app loading: Django's PostgreSQL backend, only once a PostgreSQL connection exists.
    from django.db.backends.postgresql.base import ServerBindingCursor

    base: Any = ServerBindingCursor  # untyped in django-stubs

    class PreparingCursor(base):
        """Binds on the server, and prepares every statement it runs (once per connection: psycopg
        keeps them by their text), whatever the connection's ``prepare_threshold``."""

        def execute(self, query: Any, params: Any = None, **options: Any) -> Any:
            threshold = self.connection.prepare_threshold
            self.connection.prepare_threshold = 0
            try:
                return super().execute(query, params, **options)
            finally:
                self.connection.prepare_threshold = threshold

    return PreparingCursor


_written: dict[tuple[Any, ...], str] = {}


def sql(connection: Any, key: Any, build: Callable[[Callable[[str], str]], str]) -> str:
    """The SQL of the statement ``key`` for ``connection``'s database, built once by
    ``build(quote_name)``."""
    found = _written.get((connection.alias, key))
    if found is None:
        found = _written[(connection.alias, key)] = build(connection.ops.quote_name)
    return found


_inserts: dict[tuple[Any, ...], str] = {}


def insert(row: Model, connection: Any) -> None:
    """``INSERT`` a new row with the columns that hold a value: a column left NULL is left out,
    so that one statement per shape serves every call. The model's ``pre_save`` of each field
    runs, as in ``save()``; nothing else of ``save()`` does (the caller knows the model has no
    ``save()`` or signal receivers of its own: see :func:`plain`)."""
    meta = row._meta
    values = row.__dict__
    present = []
    params = []
    for index, field, attname, hooked in _fields(type(row)):
        value = field.pre_save(row, True) if hooked else values[attname]
        if value is None and field.null:
            continue
        present.append(index)
        params.append(field.get_db_prep_save(value, connection))
    key = (connection.alias, type(row), tuple(present))
    sql = _inserts.get(key)
    if sql is None:
        quote, fields = connection.ops.quote_name, meta.concrete_fields
        sql = _inserts[key] = (f"INSERT INTO {quote(meta.db_table)} "
                               f"({', '.join(quote(str(fields[i].column)) for i in present)}) "
                               f"VALUES ({', '.join(['%s'] * len(present))})")
    run(connection, sql, params)
    row._state.adding, row._state.db = False, connection.alias


@functools.cache
def _fields(model: type[Model]) -> list[tuple[int, Any, str, bool]]:
    """Each concrete field of ``model``: its index, itself, its attribute, and whether its class
    has a ``pre_save`` of its own (a date's ``auto_now``); the others' is the attribute's value."""
    return [(index, field, field.attname, type(field).pre_save is not Field.pre_save)
            for index, field in enumerate(model._meta.concrete_fields)]


def plain(model: type[Model]) -> bool:
    """Whether :func:`insert` writes a row of ``model`` as ``save()`` would: the model has no
    ``save()`` of its own, nobody receives its ``pre_save`` or ``post_save`` signals, and no
    field has a database default (a NULL left out would take it)."""
    fields = model._meta.concrete_fields
    return (model.save is Model.save and not signals.pre_save.has_listeners(model)
            and not signals.post_save.has_listeners(model)
            and all(getattr(field, "db_default", NOT_PROVIDED) is NOT_PROVIDED for field in fields))


def fetch(model: type[M], connection: Any, sql: str, params: list[Any]) -> list[M]:
    """Run ``sql``, whose rows hold every concrete field of ``model`` in order (a ``RETURNING``
    of them all), and return them as instances, their values converted as the ORM would."""
    rows = run(connection, sql, params)
    if not rows:
        return []
    names, converters = _loading(model, connection)
    instances = []
    for row in rows:
        values = list(row)
        for index, expression, functions in converters:
            value = values[index]
            for function in functions:
                value = function(value, expression, connection)
            values[index] = value
        instances.append(model.from_db(connection.alias, names, values))
    return instances


_loaders: dict[tuple[Any, ...], tuple[list[str], list[tuple[int, Any, list[Any]]]]] = {}


def _loading(model: type[Model], connection: Any) -> tuple[list[str], list[tuple[int, Any, list[Any]]]]:
    """The attribute names of ``model``'s concrete fields, and the converters of those that have
    any (the backend's, then the field's ``from_db_value``), with the column they read."""
    key = (connection.alias, model)
    found = _loaders.get(key)
    if found is None:
        fields = model._meta.concrete_fields
        converters = []
        for index, field in enumerate(fields):
            column = field.get_col(model._meta.db_table)
            functions = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
            if functions:
                converters.append((index, column, functions))
        found = _loaders[key] = ([field.attname for field in fields], converters)
    return found
