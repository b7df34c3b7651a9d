"""Fixtures of the database fault tests: a fault-injecting proxy in front of PostgreSQL."""

from __future__ import annotations

import pytest
from django.conf import settings

from tests.faults.proxy import PgProxy


@pytest.fixture
def pg_proxy():
    """A :class:`~tests.faults.proxy.PgProxy` to the test run's PostgreSQL, closed after the test.
    Start worker processes with ``pg_port=pg_proxy.port`` to send their connections through it;
    the test's own connection stays direct."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.fail("pg_proxy needs PostgreSQL: run with CQ_TEST_DATABASE=postgres")
    proxy = PgProxy(upstream=(db["HOST"], int(db["PORT"])))
    yield proxy
    proxy.close()
    assert not proxy.errors, f"the proxy's own threads failed: {proxy.errors}"
