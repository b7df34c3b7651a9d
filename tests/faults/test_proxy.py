"""The fault-injecting proxy itself (tests/faults/proxy.py), against the real PostgreSQL.

Clients are plain psycopg connections through the proxy; the test's own Django connection
is direct, and checks what really happened on the server.
"""

from __future__ import annotations

import time

import psycopg
import pytest
from django.db import connection

from tests.helpers import eventually
from tests.testapp.models import Record

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TABLE = Record._meta.db_table


def connect(proxy, **options) -> psycopg.Connection:
    db = connection.settings_dict
    return psycopg.connect(host=proxy.host, port=proxy.port, user=db["USER"], dbname=db["NAME"],
                           connect_timeout=5, autocommit=True, **options)


def client_side(proxy) -> psycopg.Connection:
    """A connection that sends values inside the SQL text, as Django's does."""
    return connect(proxy, cursor_factory=psycopg.ClientCursor)


def key_of(pk: int) -> str | None:
    return Record.objects.filter(pk=pk).values_list("key", flat=True).first()


def test_queries_pass_through_both_protocols(pg_proxy):
    record = Record.objects.create(key="before")
    with client_side(pg_proxy) as simple, connect(pg_proxy) as extended:
        assert simple.execute(f"SELECT key FROM {TABLE} WHERE id = %s", [record.pk]).fetchone() == ("before",)
        assert extended.execute(f"SELECT key FROM {TABLE} WHERE id = %s", [record.pk]).fetchone() == ("before",)
        assert pg_proxy.connections == 2
    # Values inline (Django's way) and bound on the server read the same: the bound value is
    # written in place of its placeholder.
    assert list(pg_proxy.seen).count(f"SELECT key FROM {TABLE} WHERE id = {record.pk}") == 2
    eventually(lambda: pg_proxy.connections == 0, 5, "the proxy to close both links")
    assert pg_proxy.cuts == []


@pytest.mark.parametrize("make_client", [client_side, connect], ids=["simple-query", "extended-query"])
def test_cut_after_an_update_runs_it_and_loses_its_reply(pg_proxy, make_client):
    record, other = Record.objects.create(key="before"), Record.objects.create(key="other")
    pg_proxy.cut_after(lambda sql: sql.startswith(f"UPDATE {TABLE}"))
    with make_client(pg_proxy) as client:
        client.execute(f"SELECT 1 FROM {TABLE} WHERE id = %s", [other.pk])  # not a match: untouched
        with pytest.raises(psycopg.OperationalError):
            client.execute(f"UPDATE {TABLE} SET key = 'after' WHERE id = %s", [record.pk])
        assert client.closed or client.broken
    cut = pg_proxy.wait_for_cut(1)
    assert cut.sql.startswith(f"UPDATE {TABLE} SET key = 'after'")
    assert "UPDATE 1" in cut.reply  # the server's CommandComplete, which the client never saw
    assert key_of(record.pk) == "after"  # it ran, and (autocommit) it committed
    # The rule is used up: the next connection works as before.
    with make_client(pg_proxy) as client:
        client.execute(f"UPDATE {TABLE} SET key = 'after' WHERE id = %s", [other.pk])
    assert key_of(other.pk) == "after"
    assert len(pg_proxy.cuts) == 1


def test_cut_at_commit_waits_for_the_end_of_the_matched_statements_transaction(pg_proxy):
    record = Record.objects.create(key="before")
    pg_proxy.cut_after(lambda sql: sql.startswith("UPDATE"), at_commit=True)
    with client_side(pg_proxy) as client:
        client.autocommit = False
        client.execute(f"UPDATE {TABLE} SET key = 'during' WHERE id = %s", [record.pk])
        assert client.execute(f"SELECT key FROM {TABLE} WHERE id = %s", [record.pk]).fetchone() == ("during",)
        assert key_of(record.pk) == "before"  # not committed yet, and nothing cut yet
        with pytest.raises(psycopg.OperationalError):
            client.commit()
    cut = pg_proxy.wait_for_cut(1)
    assert (cut.sql, cut.matched) == ("COMMIT", f"UPDATE {TABLE} SET key = 'during' WHERE id = {record.pk}")
    assert key_of(record.pk) == "during"  # the COMMIT ran; only its reply was lost


def test_cut_at_commit_of_a_statement_in_autocommit_cuts_after_the_statement(pg_proxy):
    record = Record.objects.create(key="before")
    pg_proxy.cut_after(lambda sql: sql.startswith("UPDATE"), at_commit=True)
    with client_side(pg_proxy) as client, pytest.raises(psycopg.OperationalError):
        client.execute(f"UPDATE {TABLE} SET key = 'after' WHERE id = %s", [record.pk])
    assert pg_proxy.wait_for_cut(1).sql.startswith("UPDATE")
    assert key_of(record.pk) == "after"


def test_replied_picks_the_statement_by_its_reply(pg_proxy):
    first, second = Record.objects.create(key="a"), Record.objects.create(key="b")
    # Matches every UPDATE, but cuts only the one whose RETURNING brought back the second key.
    pg_proxy.cut_after(lambda sql: sql.startswith("UPDATE"), replied=lambda reply: "b-done" in reply)
    with client_side(pg_proxy) as client:
        update = f"UPDATE {TABLE} SET key = key || '-done' WHERE id = %s RETURNING key"
        assert client.execute(update, [first.pk]).fetchone() == ("a-done",)
        with pytest.raises(psycopg.OperationalError):
            client.execute(update, [second.pk])
    assert pg_proxy.wait_for_cut(1).sql == update.replace("%s", str(second.pk))
    assert (key_of(first.pk), key_of(second.pk)) == ("a-done", "b-done")


def test_a_prepared_statement_run_again_is_matched_by_its_text(pg_proxy):
    record = Record.objects.create(key="0")
    update = f"UPDATE {TABLE} SET key = (key::int + 1)::text WHERE id = %s"
    with connect(pg_proxy) as client:
        client.execute(update, [record.pk], prepare=True)  # Parse once, with a name
        pg_proxy.cut_after(lambda sql: sql.startswith("UPDATE"))
        with pytest.raises(psycopg.OperationalError):
            client.execute(update, [record.pk], prepare=True)  # Bind and Execute only
    assert pg_proxy.wait_for_cut(1).sql == update.replace("%s", str(record.pk))
    assert key_of(record.pk) == "2"


def test_partition_cuts_connections_refuses_new_ones_and_heals(pg_proxy):
    with client_side(pg_proxy) as client:
        assert client.execute("SELECT 1").fetchone() == (1,)
        assert pg_proxy.partition(1.0) == 1
        with pytest.raises(psycopg.OperationalError):
            client.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        client_side(pg_proxy)
    assert pg_proxy.refused >= 1

    def works() -> bool:
        try:
            with client_side(pg_proxy) as again:
                return again.execute("SELECT 2").fetchone() == (2,)
        except psycopg.OperationalError:
            return False

    eventually(works, 10, "a connection through the proxy after the partition")
    assert not pg_proxy.partitioned


def test_partition_until_healed(pg_proxy):
    pg_proxy.partition()
    with pytest.raises(psycopg.OperationalError):
        client_side(pg_proxy)
    pg_proxy.heal()
    with client_side(pg_proxy) as client:
        assert client.execute("SELECT 1").fetchone() == (1,)


def test_blackhole_holds_traffic_without_cutting(pg_proxy):
    with client_side(pg_proxy) as client:
        began = time.monotonic()
        pg_proxy.partition(0.5, blackhole=True)
        assert client.execute("SELECT 3").fetchone() == (3,)  # answered once the hole closes
        assert time.monotonic() - began >= 0.5
    assert pg_proxy.cuts == [] and pg_proxy.refused == 0


def test_bound_values_of_each_type_are_written_in_place_of_their_placeholders(pg_proxy):
    import uuid

    task_id = uuid.uuid4()
    with connect(pg_proxy) as client:
        client.execute("SELECT %s::uuid, %s::text, %s::int, %s::text, %s::bytea",
                       [task_id, "it's", 7, None, b"\x01\xff\x00"])
    assert f"SELECT '{task_id}'::uuid, 'it''s'::text, 7::int, NULL::text, '\\x01ff00'::bytea" in pg_proxy.seen
