"""The ``Store`` backend for more than one server: personas and conversations in PostgreSQL.

Selected with ``--store-url postgresql://…`` (the ``postgres`` extra installs psycopg). Plain SQL over a psycopg 3
connection pool; each public method is one transaction on one pooled connection. The semantics are those of
``npcserver.store.base``.

- **Turns in order across replicas.** Every write to one conversation first takes a transaction-scoped advisory lock
  on it, so an append checks the conversation's length and epoch and stores its turn with no other writer between.
  Transaction-scoped locks (never session ones) and no prepared statements make the store work through PgBouncer in
  transaction pooling mode, where consecutive transactions may run on different server connections.
- **Migrations.** ``MIGRATIONS`` is the versioned schema. Opening a store applies the missing versions, under a
  transaction-scoped advisory lock so that replicas starting together migrate once, and records each one in
  ``npcserver_schema``. A database whose schema is newer than this code is refused rather than guessed at.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, LiteralString

import psycopg
from psycopg import Connection
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from npcserver.clock import now_ms
from npcserver.errors import Aborted, ResourceExhausted
from npcserver.store.base import (
    PUT_MODES,
    SEARCH_CANDIDATES,
    History,
    Memory,
    MemoryHit,
    PersonaBody,
    PutMode,
    Summary,
    Turn,
    check_position,
    imported_turns,
    turn_tokens,
)

log = logging.getLogger(__name__)

#: (version, what it does, statements). Append new versions; never edit an applied one.
MIGRATIONS: list[tuple[int, str, list[LiteralString]]] = [
    (
        1,
        "personas, turns, conversation epochs",
        [
            # COLLATE "C": personas list by id in code-point order whatever the database's locale.
            """CREATE TABLE personas (
                id          text COLLATE "C" PRIMARY KEY,
                body        jsonb NOT NULL,
                updated_ms  bigint NOT NULL
            )""",
            # The foreign key makes deleting a persona take its turns in the same transaction, even a turn appended
            # concurrently (the append holds a key-share lock on the persona row until it commits).
            """CREATE TABLE turns (
                persona_id      text COLLATE "C" NOT NULL REFERENCES personas (id) ON DELETE CASCADE,
                conversation_id text COLLATE "C" NOT NULL,
                seq             integer NOT NULL,
                player_line     text NOT NULL,
                npc_line        text NOT NULL,
                player_name     text NOT NULL DEFAULT '',
                create_time_ms  bigint NOT NULL,
                PRIMARY KEY (persona_id, conversation_id, seq)
            )""",
            # The epoch of each conversation ever reset or replaced (absent: epoch 0), from a sequence, so epochs are
            # never handed out twice.
            "CREATE SEQUENCE conversation_epochs",
            """CREATE TABLE conversations (
                persona_id      text COLLATE "C" NOT NULL REFERENCES personas (id) ON DELETE CASCADE,
                conversation_id text COLLATE "C" NOT NULL,
                epoch           bigint NOT NULL,
                PRIMARY KEY (persona_id, conversation_id)
            )""",
        ],
    ),
    (
        2,
        "token counts per turn, for loading only the newest turns that fit",
        [
            "ALTER TABLE turns ADD COLUMN tokens integer NOT NULL DEFAULT 0",
            "ALTER TABLE turns ADD COLUMN tokens_before bigint NOT NULL DEFAULT 0",
            # Turns stored before counts existed get npcserver.store.base.estimate_tokens's estimate.
            "UPDATE turns SET tokens = (length(player_line) + length(npc_line) + length(player_name)) / 3 + 6",
            """UPDATE turns SET tokens_before = s.before FROM (
                SELECT persona_id, conversation_id, seq,
                       SUM(tokens) OVER (PARTITION BY persona_id, conversation_id ORDER BY seq) - tokens AS before
                FROM turns
            ) AS s
            WHERE turns.persona_id = s.persona_id AND turns.conversation_id = s.conversation_id
              AND turns.seq = s.seq""",
            "CREATE INDEX turns_tokens_before ON turns (persona_id, conversation_id, tokens_before)",
        ],
    ),
    (
        3,
        "the request id of the Talk that made each turn, unique within a conversation",
        [
            "ALTER TABLE turns ADD COLUMN request_id text NOT NULL DEFAULT ''",
            "CREATE UNIQUE INDEX turns_request_id ON turns (persona_id, conversation_id, request_id) "
            "WHERE request_id <> ''",
        ],
    ),
    (
        4,
        "lore books, rolling summaries, memories with a full-text index",
        [
            """CREATE TABLE lore_books (
                id          text COLLATE "C" PRIMARY KEY,
                body        jsonb NOT NULL,
                updated_ms  bigint NOT NULL
            )""",
            """CREATE TABLE summaries (
                persona_id      text COLLATE "C" NOT NULL REFERENCES personas (id) ON DELETE CASCADE,
                conversation_id text COLLATE "C" NOT NULL,
                text            text NOT NULL,
                through         integer NOT NULL,
                update_time_ms  bigint NOT NULL,
                PRIMARY KEY (persona_id, conversation_id)
            )""",
            # 'simple': no stemming or stop words of one language; players write in any.
            """CREATE TABLE memories (
                id              bigserial PRIMARY KEY,
                persona_id      text COLLATE "C" NOT NULL REFERENCES personas (id) ON DELETE CASCADE,
                conversation_id text COLLATE "C" NOT NULL,
                text            text NOT NULL,
                importance      integer NOT NULL,
                create_time_ms  bigint NOT NULL,
                source          text NOT NULL,
                tsv             tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED
            )""",
            "CREATE INDEX memories_conversation ON memories (persona_id, conversation_id, id)",
            "CREATE INDEX memories_importance ON memories (persona_id, conversation_id, importance, id)",
            "CREATE INDEX memories_tsv ON memories USING gin (tsv)",
        ],
    ),
]
_MEMORY_COLUMNS = "id, text, importance, create_time_ms, source"

#: The migration's pg_advisory_xact_lock key (conversations lock with the two-key form, a separate space).
_MIGRATION_LOCK = 0x6E7063736572  # "npcser"
_TURN_COLUMNS = "player_line, npc_line, create_time_ms, player_name, tokens, request_id"


def migrate(conn: Connection[TupleRow]) -> list[int]:
    """Applies the versions of ``MIGRATIONS`` the database lacks, in one transaction. Returns those it applied."""
    latest = MIGRATIONS[-1][0]
    with conn.transaction():
        # Replicas starting together queue here; each later one finds the versions recorded and applies nothing.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS npcserver_schema ("
            "version integer PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {int(r[0]) for r in conn.execute("SELECT version FROM npcserver_schema")}
        if applied and max(applied) > latest:
            raise RuntimeError(
                f"the database's schema is version {max(applied)}, newer than this npcserver knows ({latest}): "
                "upgrade npcserver before pointing it at this database"
            )
        done: list[int] = []
        for version, description, statements in MIGRATIONS:
            if version in applied:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO npcserver_schema (version, description) VALUES (%s, %s)", (version, description))
            done.append(version)
    return done


class PostgresStore:
    """Personas and conversation turns in the PostgreSQL database at ``url`` (a libpq URL or conninfo string).

    The database must exist; its tables are created or upgraded on opening. ``pool_size`` bounds the connections this
    process holds (the core calls the store from a thread pool).
    """

    def __init__(self, url: str, *, pool_size: int = 8, timeout_s: float = 30.0) -> None:
        # prepare_threshold=None: no server-side prepared statements, which PgBouncer's transaction mode cannot keep.
        # autocommit=False: each pooled connection block is one transaction, committed when the block ends.
        kwargs: dict[str, Any] = {"prepare_threshold": None, "autocommit": False}
        # One plain connection first: a wrong URL fails here with the server's own reason (no such database, wrong
        # password), where a pool would only time out retrying.
        with psycopg.connect(url, connect_timeout=max(1, int(timeout_s)), **kwargs) as conn:
            applied = migrate(conn)
        if applied:
            log.info("PostgreSQL schema migrated to version %d", applied[-1])
        self._pool: ConnectionPool[Connection[TupleRow]] = ConnectionPool(
            url, min_size=1, max_size=pool_size, kwargs=kwargs, timeout=timeout_s, open=False, name="npcserver"
        )
        self._pool.open(wait=True, timeout=timeout_s)

    def close(self) -> None:
        self._pool.close()  # harmless when already closed

    # --- personas ------------------------------------------------------------------------------------------------

    def get_persona(self, persona_id: str) -> PersonaBody | None:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT body FROM personas WHERE id = %s", (persona_id,)).fetchone()
        return None if row is None else dict(row[0])

    def put_persona(self, persona_id: str, body: PersonaBody, *, mode: PutMode) -> bool:
        if mode not in PUT_MODES:
            raise ValueError(f"mode {mode!r} is unknown; use one of: {', '.join(PUT_MODES)}")
        # Serialized here, not by the driver: NaN is not JSON, and jsonb would refuse it less clearly.
        text = json.dumps(body, ensure_ascii=False, sort_keys=True, allow_nan=False)
        with self._pool.connection() as conn:
            if mode == "create":
                cur = conn.execute(
                    "INSERT INTO personas (id, body, updated_ms) VALUES (%s, %s::jsonb, %s) "
                    "ON CONFLICT (id) DO NOTHING",
                    (persona_id, text, now_ms()),
                )
            elif mode == "update":
                cur = conn.execute(
                    "UPDATE personas SET body = %s::jsonb, updated_ms = %s WHERE id = %s", (text, now_ms(), persona_id)
                )
            else:
                cur = conn.execute(
                    "INSERT INTO personas (id, body, updated_ms) VALUES (%s, %s::jsonb, %s) "
                    "ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated_ms = excluded.updated_ms",
                    (persona_id, text, now_ms()),
                )
            return cur.rowcount == 1

    def list_personas(self, after: str, limit: int) -> list[PersonaBody]:
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT body FROM personas WHERE id > %s ORDER BY id LIMIT %s", (after, limit)
            ).fetchall()
        return [dict(r[0]) for r in rows]

    def delete_persona(self, persona_id: str) -> int | None:
        with self._pool.connection() as conn:
            # Locks the persona first, so no append commits a turn between the count and the delete.
            if conn.execute("SELECT 1 FROM personas WHERE id = %s FOR UPDATE", (persona_id,)).fetchone() is None:
                return None
            row = conn.execute(
                "SELECT COUNT(DISTINCT conversation_id) FROM turns WHERE persona_id = %s", (persona_id,)
            ).fetchone()
            conn.execute("DELETE FROM personas WHERE id = %s", (persona_id,))  # turns and epochs cascade
        return 0 if row is None else int(row[0])

    # --- conversations -------------------------------------------------------------------------------------------

    def load_turns(self, persona_id: str, conversation_id: str) -> list[Turn]:
        return self.load_history(persona_id, conversation_id).turns

    def load_history(self, persona_id: str, conversation_id: str) -> History:
        with self._pool.connection() as conn:
            # One statement, so one snapshot: the epoch and the turns are from the same moment.
            rows = conn.execute(
                f"SELECT e.epoch, {_TURN_COLUMNS} FROM "
                "(SELECT COALESCE((SELECT epoch FROM conversations WHERE persona_id = %s AND conversation_id = %s), 0)"
                " AS epoch) e "
                "LEFT JOIN turns t ON t.persona_id = %s AND t.conversation_id = %s ORDER BY t.seq",
                (persona_id, conversation_id, persona_id, conversation_id),
            ).fetchall()
        # A conversation with no turns is one row of NULL turn columns (the LEFT JOIN).
        turns = [Turn(*r[1:]) for r in rows if r[1] is not None]  # _TURN_COLUMNS are in Turn's field order
        return History(turns, int(rows[0][0]))

    def load_recent(self, persona_id: str, conversation_id: str, max_tokens: int) -> History:
        if max_tokens < 0:
            raise ValueError(f"max_tokens must not be negative, got {max_tokens}")
        with self._pool.connection() as conn:
            # One statement, so one snapshot. Counts are positive, so the running sum grows with the index: the
            # first turn that fits has the smallest running sum at or above total - max_tokens (found by the index).
            rows = conn.execute(
                "WITH last AS (SELECT seq, tokens_before + tokens AS total FROM turns "
                "  WHERE persona_id = %(p)s AND conversation_id = %(c)s ORDER BY seq DESC LIMIT 1), "
                "start AS (SELECT seq FROM turns WHERE persona_id = %(p)s AND conversation_id = %(c)s "
                "  AND tokens_before >= (SELECT total FROM last) - %(m)s ORDER BY tokens_before LIMIT 1) "
                "SELECT COALESCE((SELECT epoch FROM conversations WHERE persona_id = %(p)s "
                "  AND conversation_id = %(c)s), 0), (SELECT seq FROM last), (SELECT total FROM last), "
                f"  t.seq, t.tokens_before, {', '.join('t.' + c for c in _TURN_COLUMNS.split(', '))} "
                "FROM (SELECT 1) one LEFT JOIN turns t ON t.persona_id = %(p)s AND t.conversation_id = %(c)s "
                "  AND t.seq >= (SELECT seq FROM start) ORDER BY t.seq",
                {"p": persona_id, "c": conversation_id, "m": max_tokens},
            ).fetchall()
        epoch, last, total = int(rows[0][0]), rows[0][1], rows[0][2]
        turns = [Turn(*r[5:]) for r in rows if r[3] is not None]
        if last is None:
            return History([], epoch)
        if not turns:
            return History([], epoch, first=int(last) + 1, tokens_before=int(total))
        return History(turns, epoch, first=int(rows[0][3]), tokens_before=int(rows[0][4]))

    @staticmethod
    def _lock_conversation(conn: Connection[TupleRow], persona_id: str, conversation_id: str) -> None:
        # Held until the transaction ends. The two-key form is a lock space apart from the migration lock's one key;
        # a hash collision only makes two conversations wait for each other.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))", (persona_id, conversation_id))

    def append_turn(self, persona_id: str, conversation_id: str, turn: Turn, *, after: int, epoch: int) -> int:
        if after < 0:
            raise ValueError(f"after is the number of turns seen and must not be negative, got {after}")
        with self._pool.connection() as conn:
            self._lock_conversation(conn, persona_id, conversation_id)
            # The last turn gives the count (indexes are dense) and the running token sum.
            row = conn.execute(
                "SELECT COALESCE((SELECT seq + 1 FROM turns WHERE persona_id = %s AND conversation_id = %s "
                "ORDER BY seq DESC LIMIT 1), 0), "
                "COALESCE((SELECT tokens_before + tokens FROM turns WHERE persona_id = %s AND conversation_id = %s "
                "ORDER BY seq DESC LIMIT 1), 0), "
                "COALESCE((SELECT epoch FROM conversations WHERE persona_id = %s AND conversation_id = %s), 0), "
                "%s <> '' AND EXISTS (SELECT 1 FROM turns WHERE persona_id = %s AND conversation_id = %s "
                "AND request_id = %s)",
                (persona_id, conversation_id) * 3 + (turn.request_id, persona_id, conversation_id, turn.request_id),
            ).fetchone()
            assert row is not None  # a SELECT without FROM returns one row
            check_position(
                persona_id,
                conversation_id,
                count=int(row[0]),
                current_epoch=int(row[2]),
                after=after,
                epoch=epoch,
                duplicate=bool(row[3]),
            )
            conn.execute(
                f"INSERT INTO turns (persona_id, conversation_id, seq, {_TURN_COLUMNS}, tokens_before) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    persona_id,
                    conversation_id,
                    after,
                    turn.player_line,
                    turn.npc_line,
                    turn.create_time_ms or now_ms(),
                    turn.player_name,
                    turn_tokens(turn),
                    turn.request_id,
                    int(row[1]),
                ),
            )
        return after

    def find_turn(self, persona_id: str, conversation_id: str, request_id: str) -> tuple[int, Turn] | None:
        if not request_id:
            return None
        with self._pool.connection() as conn:
            row = conn.execute(
                f"SELECT seq, {_TURN_COLUMNS} FROM turns "
                "WHERE persona_id = %s AND conversation_id = %s AND request_id = %s",
                (persona_id, conversation_id, request_id),
            ).fetchone()
        return None if row is None else (int(row[0]), Turn(*row[1:]))

    def _new_epoch(self, conn: Connection[TupleRow], persona_id: str, conversation_id: str) -> None:
        # Nothing to record for a persona that is not stored (it has no turns either).
        conn.execute(
            "INSERT INTO conversations (persona_id, conversation_id, epoch) "
            "SELECT %s, %s, nextval('conversation_epochs') WHERE EXISTS (SELECT 1 FROM personas WHERE id = %s) "
            "ON CONFLICT (persona_id, conversation_id) DO UPDATE SET epoch = excluded.epoch",
            (persona_id, conversation_id, persona_id),
        )

    def reset(self, persona_id: str, conversation_id: str) -> int:
        with self._pool.connection() as conn:
            self._lock_conversation(conn, persona_id, conversation_id)
            cur = conn.execute(
                "DELETE FROM turns WHERE persona_id = %s AND conversation_id = %s", (persona_id, conversation_id)
            )
            deleted = cur.rowcount
            self._new_epoch(conn, persona_id, conversation_id)
            self._clear_knowledge(conn, persona_id, conversation_id)
        return deleted

    @staticmethod
    def _clear_knowledge(conn: Connection[TupleRow], persona_id: str, conversation_id: str) -> None:
        key = (persona_id, conversation_id)
        conn.execute("DELETE FROM summaries WHERE persona_id = %s AND conversation_id = %s", key)
        conn.execute("DELETE FROM memories WHERE persona_id = %s AND conversation_id = %s", key)

    def replace_turns(
        self,
        persona_id: str,
        conversation_id: str,
        turns: list[Turn],
        *,
        summary: Summary | None = None,
        memories: Sequence[Memory] = (),
    ) -> int:
        with self._pool.connection() as conn:
            self._lock_conversation(conn, persona_id, conversation_id)
            conn.execute(
                "DELETE FROM turns WHERE persona_id = %s AND conversation_id = %s", (persona_id, conversation_id)
            )
            self._new_epoch(conn, persona_id, conversation_id)
            self._clear_knowledge(conn, persona_id, conversation_id)
            if summary is not None and summary.text:
                self._put_summary(conn, persona_id, conversation_id, summary)
            for m in memories:
                self._add_memory(conn, persona_id, conversation_id, m)
            rows = [
                (
                    persona_id,
                    conversation_id,
                    i,
                    t.player_line,
                    t.npc_line,
                    t.create_time_ms or now_ms(),
                    t.player_name,
                    tokens,
                    "",  # imported turns were not made by a Talk here
                    before,
                )
                for i, t, tokens, before in imported_turns(turns)
            ]
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO turns (persona_id, conversation_id, seq, {_TURN_COLUMNS}, tokens_before) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    rows,
                )
        return len(turns)

    # --- knowledge ---------------------------------------------------------------------------------------------------

    def get_lore_book(self, book_id: str) -> PersonaBody | None:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT body FROM lore_books WHERE id = %s", (book_id,)).fetchone()
        return None if row is None else dict(row[0])

    def put_lore_book(self, book_id: str, body: PersonaBody, *, mode: PutMode) -> bool:
        if mode not in PUT_MODES:
            raise ValueError(f"mode {mode!r} is unknown; use one of: {', '.join(PUT_MODES)}")
        text = json.dumps(body, ensure_ascii=False, sort_keys=True, allow_nan=False)
        with self._pool.connection() as conn:
            if mode == "create":
                cur = conn.execute(
                    "INSERT INTO lore_books (id, body, updated_ms) VALUES (%s, %s::jsonb, %s) ON CONFLICT DO NOTHING",
                    (book_id, text, now_ms()),
                )
            elif mode == "update":
                cur = conn.execute(
                    "UPDATE lore_books SET body = %s::jsonb, updated_ms = %s WHERE id = %s", (text, now_ms(), book_id)
                )
            else:
                cur = conn.execute(
                    "INSERT INTO lore_books (id, body, updated_ms) VALUES (%s, %s::jsonb, %s) "
                    "ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated_ms = excluded.updated_ms",
                    (book_id, text, now_ms()),
                )
        return cur.rowcount > 0

    def list_lore_books(self, after: str, limit: int) -> list[PersonaBody]:
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT body FROM lore_books WHERE id > %s ORDER BY id LIMIT %s", (after, limit)
            ).fetchall()
        return [dict(r[0]) for r in rows]

    def delete_lore_book(self, book_id: str) -> bool:
        with self._pool.connection() as conn:
            return conn.execute("DELETE FROM lore_books WHERE id = %s", (book_id,)).rowcount > 0

    def get_summary(self, persona_id: str, conversation_id: str) -> Summary | None:
        with self._pool.connection() as conn:
            row = conn.execute(
                "SELECT text, through, update_time_ms FROM summaries WHERE persona_id = %s AND conversation_id = %s",
                (persona_id, conversation_id),
            ).fetchone()
        return None if row is None else Summary(row[0], int(row[1]), int(row[2]))

    def put_summary(self, persona_id: str, conversation_id: str, summary: Summary, *, epoch: int | None) -> None:
        with self._pool.connection() as conn:
            self._lock_conversation(conn, persona_id, conversation_id)
            if epoch is not None:
                row = conn.execute(
                    "SELECT epoch FROM conversations WHERE persona_id = %s AND conversation_id = %s",
                    (persona_id, conversation_id),
                ).fetchone()
                if (0 if row is None else int(row[0])) != epoch:
                    raise Aborted(
                        f"conversation {conversation_id!r} of persona {persona_id!r} was reset or replaced while its "
                        "summary was written",
                        code="epoch",
                    )
            if not summary.text:
                conn.execute(
                    "DELETE FROM summaries WHERE persona_id = %s AND conversation_id = %s",
                    (persona_id, conversation_id),
                )
                return
            self._put_summary(conn, persona_id, conversation_id, summary)

    @staticmethod
    def _put_summary(conn: Connection[TupleRow], persona_id: str, conversation_id: str, summary: Summary) -> None:
        conn.execute(
            "INSERT INTO summaries (persona_id, conversation_id, text, through, update_time_ms) "
            "SELECT %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM personas WHERE id = %s) "
            "ON CONFLICT (persona_id, conversation_id) DO UPDATE SET text = excluded.text, through = excluded.through, "
            "update_time_ms = excluded.update_time_ms",
            (
                persona_id,
                conversation_id,
                summary.text,
                summary.through,
                summary.update_time_ms or now_ms(),
                persona_id,
            ),
        )

    def add_memory(self, persona_id: str, conversation_id: str, memory: Memory, *, limit: int) -> Memory:
        with self._pool.connection() as conn:
            # Under the conversation's lock: two adds racing at the limit cannot both pass the count.
            self._lock_conversation(conn, persona_id, conversation_id)
            row = conn.execute(
                "SELECT COUNT(*) FROM memories WHERE persona_id = %s AND conversation_id = %s",
                (persona_id, conversation_id),
            ).fetchone()
            count = 0 if row is None else int(row[0])
            if count >= limit:
                raise ResourceExhausted(
                    f"conversation {conversation_id!r} of persona {persona_id!r} holds {count} memories, the "
                    f"server's limit (max_memories = {limit}): delete some first",
                    param="memory",
                )
            return self._add_memory(conn, persona_id, conversation_id, memory)

    @staticmethod
    def _add_memory(conn: Connection[TupleRow], persona_id: str, conversation_id: str, memory: Memory) -> Memory:
        stamp = memory.create_time_ms or now_ms()
        row = conn.execute(
            "INSERT INTO memories (persona_id, conversation_id, text, importance, create_time_ms, source) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (persona_id, conversation_id, memory.text, memory.importance, stamp, memory.source),
        ).fetchone()
        assert row is not None
        return Memory(memory.text, memory.importance, stamp, memory.source, id=int(row[0]))

    def list_memories(self, persona_id: str, conversation_id: str, after_id: int, limit: int) -> list[Memory]:
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        with self._pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE persona_id = %s AND conversation_id = %s AND id > %s "
                "ORDER BY id LIMIT %s",
                (persona_id, conversation_id, after_id, limit),
            ).fetchall()
        return [_memory(r) for r in rows]

    def delete_memory(self, persona_id: str, conversation_id: str, memory_id: int) -> bool:
        with self._pool.connection() as conn:
            cur = conn.execute(
                "DELETE FROM memories WHERE persona_id = %s AND conversation_id = %s AND id = %s",
                (persona_id, conversation_id, memory_id),
            )
        return cur.rowcount > 0

    def search_memories(self, persona_id: str, conversation_id: str, words: list[str]) -> list[MemoryHit]:
        key = {"p": persona_id, "c": conversation_id, "n": SEARCH_CANDIDATES}
        found: dict[int, MemoryHit] = {}
        with self._pool.connection() as conn:
            if words:
                # websearch_to_tsquery reads any text without syntax errors; "or" joins the words.
                rows = conn.execute(
                    f"SELECT {_MEMORY_COLUMNS}, ts_rank(tsv, q) FROM memories, "
                    "websearch_to_tsquery('simple', %(q)s) q WHERE persona_id = %(p)s AND conversation_id = %(c)s "
                    "AND tsv @@ q ORDER BY ts_rank(tsv, q) DESC LIMIT %(n)s",
                    {**key, "q": " or ".join(words)},
                ).fetchall()
                for r in rows:
                    found[int(r[0])] = MemoryHit(_memory(r[:-1]), float(r[-1]))
            rows = conn.execute(
                f"(SELECT {_MEMORY_COLUMNS} FROM memories WHERE persona_id = %(p)s AND conversation_id = %(c)s "
                "ORDER BY id DESC LIMIT %(n)s) UNION ALL "
                f"(SELECT {_MEMORY_COLUMNS} FROM memories WHERE persona_id = %(p)s AND conversation_id = %(c)s "
                "ORDER BY importance DESC, id DESC LIMIT %(n)s)",
                key,
            ).fetchall()
            for r in rows:
                found.setdefault(int(r[0]), MemoryHit(_memory(r), 0.0))
        return list(found.values())


def _memory(row: Sequence[Any]) -> Memory:
    return Memory(str(row[1]), int(row[2]), int(row[3]), str(row[4]), id=int(row[0]))
