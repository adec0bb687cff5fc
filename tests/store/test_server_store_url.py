"""``--store-url`` end to end: a real server (real model) keeps its conversations in PostgreSQL, through PgBouncer."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import psycopg
import pytest

from tests.conftest import ServerProcess
from tests.store.postgres_cluster import PostgresCluster

pytestmark = pytest.mark.model

NPC = "tavern_keeper"


def test_a_server_with_a_store_url_stores_in_postgresql(
    postgres_cluster: PostgresCluster, server_factory: Callable[..., ServerProcess]
) -> None:
    database = postgres_cluster.create_database()
    try:
        server = server_factory(NPCSERVER_STORE_URL=postgres_cluster.url(database, bouncer=True))
        path = f"/v1/npcs/{NPC}/conversations/pg-1"
        with httpx.Client(base_url=server.http_url, timeout=120) as http:
            reply = http.post(path + ":talk", json={"text": "Any rooms?", "stream": False, "max_tokens": 8})
            assert reply.status_code == 200, reply.text
            assert reply.json()["stored"] is True
            npc_line = reply.json()["message"]["content"]
        with psycopg.connect(postgres_cluster.url(database)) as conn:
            rows = conn.execute(
                "SELECT seq, player_line, npc_line FROM turns WHERE persona_id = %s AND conversation_id = 'pg-1'",
                (NPC,),
            ).fetchall()
            personas = conn.execute("SELECT count(*) FROM personas").fetchone()
        assert rows == [(0, "Any rooms?", npc_line)]
        assert personas is not None and personas[0] > 0  # the persona files were loaded into PostgreSQL
        assert not (server.data_dir / "npcserver.db").exists()  # and nothing went to SQLite
        assert "stored in PostgreSQL at 127.0.0.1" in server.output()
        assert "npc@" not in server.output()  # the URL's user (and any password) stays out of the log
    finally:
        postgres_cluster.drop_database(database)


def test_a_store_url_that_cannot_be_opened_stops_the_server_with_the_reason(
    postgres_cluster: PostgresCluster, server_factory: Callable[..., ServerProcess]
) -> None:
    with pytest.raises(RuntimeError, match=r"(?s)server exited .*database \"no_such_db\" does not exist"):
        server_factory(NPCSERVER_STORE_URL=postgres_cluster.url("no_such_db"))
