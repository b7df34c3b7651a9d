"""The database connections of cq's long-running processes: the worker processes, and the
supervisor with its heartbeat and scheduler threads; and the locks cq takes in them.

Such a process keeps its connections for its whole life. One that an error may have broken is
checked as Django checks it at the end of a request, and closed if it no longer works, to be
opened again by the next query; none is closed for its age. ``CONN_MAX_AGE`` is about web
requests: at Django's default of 0 it would close a worker's connection after every task and
open a new one for the next, which costs PostgreSQL more CPU (a backend process started each
time) than a quick task costs everything else together.
"""

from __future__ import annotations

from django.db import connection, connections


def tidy() -> None:
    """Close the connections of this thread that an error left broken (or that were left outside
    their ``AUTOCOMMIT`` setting); keep the others, whatever ``CONN_MAX_AGE`` says. A connection
    inside an atomic block is left alone: a test case's transaction must survive (cq.testing)."""
    for conn in connections.all(initialized_only=True):
        if conn.in_atomic_block:
            continue
        conn.close_at = None
        conn.close_if_unusable_or_obsolete()


def lock(kind: str, name: str) -> None:
    """Hold, until the current transaction ends, the lock of ``name`` of ``kind`` (a concurrency
    key, a queue): an advisory lock on PostgreSQL; on SQLite, which lets one transaction write at
    a time, the transaction's next write does it."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"cq.{kind}:{name}"])
