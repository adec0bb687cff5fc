"""The PostgreSQL cluster (with PgBouncer) that the store tests share: started once per session, stopped at its end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.store.postgres_cluster import PostgresCluster


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
