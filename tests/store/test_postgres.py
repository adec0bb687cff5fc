"""What only the PostgreSQL backend does: versioned migrations under an advisory lock, and its test setup.

The behaviour every backend shares is in ``test_store_contract.py``, which runs against PostgreSQL directly and
through PgBouncer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import psycopg
import pytest

from npcserver.store.base import Turn, estimate_tokens
from npcserver.store.postgres import MIGRATIONS, PostgresStore, migrate
from tests.store.postgres_cluster import PostgresCluster

T = TypeVar("T")


@pytest.fixture
def database(postgres_cluster: PostgresCluster) -> Iterator[str]:
    name = postgres_cluster.create_database()
    try:
        yield name
    finally:
        postgres_cluster.drop_database(name)


def run_together(count: int, work: Callable[[int], T]) -> list[T]:
    """Runs ``work(i)`` in ``count`` threads released at once; returns results in thread order, raising any error."""
    results: dict[int, T] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run(i: int) -> None:
        try:
            start.wait()
            results[i] = work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    return [results[i] for i in range(count)]


def test_replicas_starting_together_migrate_exactly_once(postgres_cluster: PostgresCluster, database: str) -> None:
    # Direct and through the bouncer, as replicas behind either would connect.
    urls = [postgres_cluster.url(database, bouncer=i % 2 == 1) for i in range(6)]

    def open_and_migrate(i: int) -> list[int]:
        with psycopg.connect(urls[i], prepare_threshold=None) as conn:
            return migrate(conn)

    applied = run_together(len(urls), open_and_migrate)
    latest = [v for v, _, _ in MIGRATIONS]
    assert sorted(applied, key=len) == [[]] * (len(urls) - 1) + [latest]  # one did the work; the rest found it done

    stores = run_together(4, lambda i: PostgresStore(urls[i]))  # and stores open on the migrated database at once
    try:
        with psycopg.connect(postgres_cluster.url(database)) as conn:
            rows = conn.execute("SELECT version, description FROM npcserver_schema ORDER BY version").fetchall()
        assert rows == [(v, d) for v, d, _ in MIGRATIONS]
    finally:
        for store in stores:
            store.close()


def test_a_database_newer_than_the_code_is_refused(postgres_cluster: PostgresCluster, database: str) -> None:
    url = postgres_cluster.url(database)
    PostgresStore(url).close()
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO npcserver_schema (version, description) VALUES (999, 'from the future')")
    with pytest.raises(RuntimeError, match="schema is version 999, newer than this npcserver knows"):
        PostgresStore(url)


def test_a_missing_database_fails_to_open_with_the_drivers_reason(postgres_cluster: PostgresCluster) -> None:
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        PostgresStore(postgres_cluster.url("no_such_database"), timeout_s=5)


def test_the_bouncer_pools_by_transaction(postgres_cluster: PostgresCluster, database: str) -> None:
    # Two clients one after the other share one server connection only in transaction (or statement) pooling; in
    # session pooling each would hold its own. This is what makes the contract run behind the bouncer meaningful.
    url = postgres_cluster.url(database, bouncer=True)
    with (
        psycopg.connect(url, autocommit=True, prepare_threshold=None) as first,
        psycopg.connect(url, autocommit=True, prepare_threshold=None) as second,
    ):
        pids = set()
        for _ in range(5):
            for conn in (first, second):
                row = conn.execute("SELECT pg_backend_pid()").fetchone()
                assert row is not None
                pids.add(row[0])
        assert len(pids) == 1


def test_scratch_databases_sort_text_by_locale(postgres_cluster: PostgresCluster, database: str) -> None:
    # The contract's code-point paging test only proves the store's COLLATE "C" if the database would sort otherwise.
    with psycopg.connect(postgres_cluster.url(database)) as conn:
        row = conn.execute("SELECT 'B' < 'a', 'B' < 'a' COLLATE \"C\"").fetchone()
    assert row == (False, True)


def test_version_2_counts_the_tokens_of_turns_stored_before(postgres_cluster: PostgresCluster, database: str) -> None:
    url = postgres_cluster.url(database)
    with psycopg.connect(url) as conn, conn.transaction():  # a database at version 1, with turns
        conn.execute(
            "CREATE TABLE npcserver_schema (version integer PRIMARY KEY, description text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        version, description, statements = MIGRATIONS[0]
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO npcserver_schema (version, description) VALUES (%s, %s)", (version, description))
        conn.execute("""INSERT INTO personas VALUES ('greta', '{"id": "greta"}', 1)""")
        conn.execute(
            "INSERT INTO turns VALUES ('greta', 'p1', 0, 'Hello there, innkeeper!', 'Evening.', '', 1), "
            "('greta', 'p1', 1, 'A room?', 'Two silver.', 'Ada', 2), ('greta', 'p2', 0, 'Other', 'one', '', 3)"
        )
    store = PostgresStore(url)
    try:
        turns = store.load_turns("greta", "p1")
        want = [estimate_tokens(t.player_line, t.npc_line, t.player_name) for t in turns]
        assert [t.tokens for t in turns] == want
        recent = store.load_recent("greta", "p1", want[1])
        assert ([t.player_line for t in recent.turns], recent.first, recent.tokens_before) == (["A room?"], 1, want[0])
        assert store.append_turn("greta", "p1", Turn("more", "yes", tokens=3), after=2, epoch=0) == 2
        assert store.load_recent("greta", "p1", 3).tokens_before == sum(want)
        assert store.load_recent("greta", "p2", 100).first == 0
    finally:
        store.close()
