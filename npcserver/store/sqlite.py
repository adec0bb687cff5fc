"""The default ``Store`` backend: personas and conversations in one SQLite file (WAL), in the data directory.

One connection guarded by a lock: every operation is a few rows, so a single writer is plenty, and each public
method is one transaction. ``BEGIN IMMEDIATE`` takes the write lock up front, so an append checks its conversation's
length and epoch and stores its turn under one lock even when another process has the same file open. The semantics
are those of ``npcserver.store.base``.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

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

SCHEMA_VERSION = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS personas (
    id          TEXT PRIMARY KEY,
    body        TEXT NOT NULL,      -- the persona as JSON
    updated_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS turns (
    persona_id      TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    player_line     TEXT NOT NULL,
    npc_line        TEXT NOT NULL,
    player_name     TEXT NOT NULL DEFAULT '',
    create_time_ms  INTEGER NOT NULL,
    tokens          INTEGER NOT NULL DEFAULT 0,  -- version 3 (see _V3)
    tokens_before   INTEGER NOT NULL DEFAULT 0,
    request_id      TEXT NOT NULL DEFAULT '',    -- version 4 (see _V4)
    PRIMARY KEY (persona_id, conversation_id, seq)
);
-- Version 2: the epoch of each conversation ever reset or replaced (absent: epoch 0). The last epoch handed out is
-- meta's 'last_epoch', so a deleted conversation's epochs are never handed out again.
CREATE TABLE IF NOT EXISTS conversations (
    persona_id      TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    epoch           INTEGER NOT NULL,
    PRIMARY KEY (persona_id, conversation_id)
);
-- Version 5: lore books of the API, each conversation's rolling summary, and its memories with a full-text index.
CREATE TABLE IF NOT EXISTS lore_books (
    id          TEXT PRIMARY KEY,
    body        TEXT NOT NULL,
    updated_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS summaries (
    persona_id      TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    text            TEXT NOT NULL,
    through         INTEGER NOT NULL,
    update_time_ms  INTEGER NOT NULL,
    PRIMARY KEY (persona_id, conversation_id)
);
CREATE TABLE IF NOT EXISTS memories (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    persona_id      TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    text            TEXT NOT NULL,
    importance      INTEGER NOT NULL,
    create_time_ms  INTEGER NOT NULL,
    source          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS memories_conversation ON memories (persona_id, conversation_id, id);
CREATE INDEX IF NOT EXISTS memories_importance ON memories (persona_id, conversation_id, importance, id);
-- The conversation's key is a column of the index, so a search intersects its posting list with the words'
-- instead of filtering every conversation's matches.
CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(
    text, convkey, tokenize = 'unicode61 remove_diacritics 2'
);
-- How many memories hold each word: a word held by few is worth a full relevance search.
CREATE VIRTUAL TABLE IF NOT EXISTS memories_vocab USING fts5vocab(memories_fts, 'row');
"""

# Version 3: each turn's token count and the running sum of the counts before it, so a load finds the newest turns
# that fit a budget by index. Older files get the columns, with counts estimated from the text as
# npcserver.store.base.estimate_tokens does.
_V3 = """
ALTER TABLE turns ADD COLUMN tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE turns ADD COLUMN tokens_before INTEGER NOT NULL DEFAULT 0;
UPDATE turns SET tokens = (length(player_line) + length(npc_line) + length(player_name)) / 3 + 6;
UPDATE turns SET tokens_before = s.before FROM (
    SELECT persona_id, conversation_id, seq,
           SUM(tokens) OVER (PARTITION BY persona_id, conversation_id ORDER BY seq) - tokens AS before
    FROM turns
) AS s
WHERE turns.persona_id = s.persona_id AND turns.conversation_id = s.conversation_id AND turns.seq = s.seq;
"""
# Version 4: the id of the Talk that made each turn, unique within a conversation (older turns have none).
_V4 = "ALTER TABLE turns ADD COLUMN request_id TEXT NOT NULL DEFAULT ''"
_INDEXES = """
CREATE INDEX IF NOT EXISTS turns_tokens_before ON turns (persona_id, conversation_id, tokens_before);
CREATE UNIQUE INDEX IF NOT EXISTS turns_request_id ON turns (persona_id, conversation_id, request_id)
    WHERE request_id <> '';
"""
_INSERT_TURN = (
    "INSERT INTO turns (persona_id, conversation_id, seq, player_line, npc_line, player_name, create_time_ms, "
    "tokens, tokens_before, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class SqliteStore:
    """Personas and conversation turns in the SQLite file at ``path`` (created, with its folder, if absent)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes, fast commits
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        with self._tx() as db:  # checked under the write lock: two processes opening an old file migrate once
            columns = {r[1] for r in db.execute("PRAGMA table_info(turns)")}
            if "tokens" not in columns:
                for statement in _V3.split(";"):
                    if statement.strip():
                        db.execute(statement)
            if "request_id" not in columns:
                db.execute(_V4)
        self._db.executescript(_INDEXES)
        # Every version's tables are created IF NOT EXISTS above, so upgrading is recording the new version.
        self._db.execute(
            "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- personas ------------------------------------------------------------------------------------------------

    def get_persona(self, persona_id: str) -> PersonaBody | None:
        with self._tx() as db:
            row = db.execute("SELECT body FROM personas WHERE id = ?", (persona_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def put_persona(self, persona_id: str, body: PersonaBody, *, mode: PutMode) -> bool:
        if mode not in PUT_MODES:
            raise ValueError(f"mode {mode!r} is unknown; use one of: {', '.join(PUT_MODES)}")
        # allow_nan=False: NaN is not JSON, and another backend's JSON column would refuse it.
        text = json.dumps(body, ensure_ascii=False, sort_keys=True, allow_nan=False)
        with self._tx() as db:
            exists = db.execute("SELECT 1 FROM personas WHERE id = ?", (persona_id,)).fetchone() is not None
            if (mode == "create" and exists) or (mode == "update" and not exists):
                return False
            db.execute(
                "INSERT INTO personas (id, body, updated_ms) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET body = excluded.body, updated_ms = excluded.updated_ms",
                (persona_id, text, now_ms()),
            )
        return True

    def list_personas(self, after: str, limit: int) -> list[PersonaBody]:
        if limit < 0:  # SQLite reads LIMIT -1 as "no limit"
            raise ValueError(f"limit must not be negative, got {limit}")
        with self._tx() as db:
            rows = db.execute("SELECT body FROM personas WHERE id > ? ORDER BY id LIMIT ?", (after, limit)).fetchall()
        return [dict(json.loads(r[0])) for r in rows]

    def delete_persona(self, persona_id: str) -> int | None:
        with self._tx() as db:
            if db.execute("DELETE FROM personas WHERE id = ?", (persona_id,)).rowcount == 0:
                return None
            (conversations,) = db.execute(
                "SELECT COUNT(DISTINCT conversation_id) FROM turns WHERE persona_id = ?", (persona_id,)
            ).fetchone()
            db.execute("DELETE FROM turns WHERE persona_id = ?", (persona_id,))
            db.execute("DELETE FROM conversations WHERE persona_id = ?", (persona_id,))
            db.execute("DELETE FROM summaries WHERE persona_id = ?", (persona_id,))
            db.execute(
                "DELETE FROM memories_fts WHERE rowid IN (SELECT id FROM memories WHERE persona_id = ?)", (persona_id,)
            )
            db.execute("DELETE FROM memories WHERE persona_id = ?", (persona_id,))
        return int(conversations)

    # --- conversations -------------------------------------------------------------------------------------------

    def load_turns(self, persona_id: str, conversation_id: str) -> list[Turn]:
        with self._tx() as db:
            return self._turns(db, persona_id, conversation_id)

    def load_history(self, persona_id: str, conversation_id: str) -> History:
        with self._tx() as db:
            return History(self._turns(db, persona_id, conversation_id), self._epoch(db, persona_id, conversation_id))

    def load_recent(self, persona_id: str, conversation_id: str, max_tokens: int) -> History:
        if max_tokens < 0:
            raise ValueError(f"max_tokens must not be negative, got {max_tokens}")
        with self._tx() as db:
            epoch = self._epoch(db, persona_id, conversation_id)
            last = db.execute(
                "SELECT seq, tokens_before + tokens FROM turns WHERE persona_id = ? AND conversation_id = ? "
                "ORDER BY seq DESC LIMIT 1",
                (persona_id, conversation_id),
            ).fetchone()
            if last is None:
                return History([], epoch)
            count, total = int(last[0]) + 1, int(last[1])
            # Counts are positive, so the running sum grows with the index: the first turn that fits is the one
            # with the smallest running sum at or above total - max_tokens (found by the index).
            start = db.execute(
                "SELECT seq, tokens_before FROM turns WHERE persona_id = ? AND conversation_id = ? "
                "AND tokens_before >= ? ORDER BY tokens_before LIMIT 1",
                (persona_id, conversation_id, total - max_tokens),
            ).fetchone()
            if start is None or int(start[0]) >= count:
                return History([], epoch, first=count, tokens_before=total)
            turns = self._turns(db, persona_id, conversation_id, int(start[0]))
            return History(turns, epoch, first=int(start[0]), tokens_before=int(start[1]))

    @staticmethod
    def _turns(db: sqlite3.Connection, persona_id: str, conversation_id: str, first: int = 0) -> list[Turn]:
        rows = db.execute(
            "SELECT player_line, npc_line, create_time_ms, player_name, tokens, request_id FROM turns "
            "WHERE persona_id = ? AND conversation_id = ? AND seq >= ? ORDER BY seq",
            (persona_id, conversation_id, first),
        ).fetchall()
        return [Turn(*r) for r in rows]  # the columns are in Turn's field order

    def find_turn(self, persona_id: str, conversation_id: str, request_id: str) -> tuple[int, Turn] | None:
        if not request_id:
            return None
        with self._tx() as db:
            row = db.execute(
                "SELECT seq, player_line, npc_line, create_time_ms, player_name, tokens, request_id FROM turns "
                "WHERE persona_id = ? AND conversation_id = ? AND request_id = ?",
                (persona_id, conversation_id, request_id),
            ).fetchone()
        return None if row is None else (int(row[0]), Turn(*row[1:]))

    @staticmethod
    def _epoch(db: sqlite3.Connection, persona_id: str, conversation_id: str) -> int:
        row = db.execute(
            "SELECT epoch FROM conversations WHERE persona_id = ? AND conversation_id = ?",
            (persona_id, conversation_id),
        ).fetchone()
        return 0 if row is None else int(row[0])

    @staticmethod
    def _new_epoch(db: sqlite3.Connection, persona_id: str, conversation_id: str) -> None:
        (epoch,) = db.execute(
            "INSERT INTO meta VALUES ('last_epoch', '1') "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1 RETURNING CAST(value AS INTEGER)"
        ).fetchone()
        db.execute(
            "INSERT INTO conversations VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET epoch = excluded.epoch",
            (persona_id, conversation_id, epoch),
        )

    def append_turn(self, persona_id: str, conversation_id: str, turn: Turn, *, after: int, epoch: int) -> int:
        if after < 0:
            raise ValueError(f"after is the number of turns seen and must not be negative, got {after}")
        with self._tx() as db:
            last = db.execute(
                "SELECT seq + 1, tokens_before + tokens FROM turns WHERE persona_id = ? AND conversation_id = ? "
                "ORDER BY seq DESC LIMIT 1",
                (persona_id, conversation_id),
            ).fetchone()
            seq, before = (0, 0) if last is None else (int(last[0]), int(last[1]))
            current = self._epoch(db, persona_id, conversation_id)
            duplicate = bool(turn.request_id) and (
                db.execute(
                    "SELECT 1 FROM turns WHERE persona_id = ? AND conversation_id = ? AND request_id = ?",
                    (persona_id, conversation_id, turn.request_id),
                ).fetchone()
                is not None
            )
            check_position(
                persona_id,
                conversation_id,
                count=seq,
                current_epoch=current,
                after=after,
                epoch=epoch,
                duplicate=duplicate,
            )
            db.execute(
                _INSERT_TURN,
                (
                    persona_id,
                    conversation_id,
                    seq,
                    turn.player_line,
                    turn.npc_line,
                    turn.player_name,
                    turn.create_time_ms or now_ms(),
                    turn_tokens(turn),
                    before,
                    turn.request_id,
                ),
            )
        return int(seq)

    def reset(self, persona_id: str, conversation_id: str) -> int:
        with self._tx() as db:
            cur = db.execute(
                "DELETE FROM turns WHERE persona_id = ? AND conversation_id = ?", (persona_id, conversation_id)
            )
            self._new_epoch(db, persona_id, conversation_id)
            self._clear_knowledge(db, persona_id, conversation_id)
        return int(cur.rowcount)

    @staticmethod
    def _clear_knowledge(db: sqlite3.Connection, persona_id: str, conversation_id: str) -> None:
        key = (persona_id, conversation_id)
        db.execute("DELETE FROM summaries WHERE persona_id = ? AND conversation_id = ?", key)
        db.execute("DELETE FROM memories_fts WHERE convkey MATCH ?", (_fts_phrase(_convkey(*key)),))
        db.execute("DELETE FROM memories WHERE persona_id = ? AND conversation_id = ?", key)

    def replace_turns(
        self,
        persona_id: str,
        conversation_id: str,
        turns: list[Turn],
        *,
        summary: Summary | None = None,
        memories: Sequence[Memory] = (),
    ) -> int:
        with self._tx() as db:
            db.execute("DELETE FROM turns WHERE persona_id = ? AND conversation_id = ?", (persona_id, conversation_id))
            self._new_epoch(db, persona_id, conversation_id)
            self._clear_knowledge(db, persona_id, conversation_id)
            if summary is not None and summary.text:
                self._put_summary(db, persona_id, conversation_id, summary)
            for m in memories:
                self._add_memory(db, persona_id, conversation_id, m)
            rows = [
                (
                    persona_id,
                    conversation_id,
                    i,
                    t.player_line,
                    t.npc_line,
                    t.player_name,
                    t.create_time_ms or now_ms(),
                    tokens,
                    before,
                    "",  # imported turns were not made by a Talk here
                )
                for i, t, tokens, before in imported_turns(turns)
            ]
            db.executemany(_INSERT_TURN, rows)
        return len(turns)

    # --- knowledge ---------------------------------------------------------------------------------------------------

    def get_lore_book(self, book_id: str) -> PersonaBody | None:
        with self._tx() as db:
            row = db.execute("SELECT body FROM lore_books WHERE id = ?", (book_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def put_lore_book(self, book_id: str, body: PersonaBody, *, mode: PutMode) -> bool:
        if mode not in PUT_MODES:
            raise ValueError(f"mode {mode!r} is unknown; use one of: {', '.join(PUT_MODES)}")
        text = json.dumps(body, ensure_ascii=False, sort_keys=True, allow_nan=False)
        with self._tx() as db:
            exists = db.execute("SELECT 1 FROM lore_books WHERE id = ?", (book_id,)).fetchone() is not None
            if (mode == "create" and exists) or (mode == "update" and not exists):
                return False
            db.execute(
                "INSERT INTO lore_books (id, body, updated_ms) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET body = excluded.body, updated_ms = excluded.updated_ms",
                (book_id, text, now_ms()),
            )
        return True

    def list_lore_books(self, after: str, limit: int) -> list[PersonaBody]:
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        with self._tx() as db:
            rows = db.execute("SELECT body FROM lore_books WHERE id > ? ORDER BY id LIMIT ?", (after, limit)).fetchall()
        return [dict(json.loads(r[0])) for r in rows]

    def delete_lore_book(self, book_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM lore_books WHERE id = ?", (book_id,)).rowcount > 0

    def get_summary(self, persona_id: str, conversation_id: str) -> Summary | None:
        with self._tx() as db:
            row = db.execute(
                "SELECT text, through, update_time_ms FROM summaries WHERE persona_id = ? AND conversation_id = ?",
                (persona_id, conversation_id),
            ).fetchone()
        return None if row is None else Summary(row[0], int(row[1]), int(row[2]))

    def put_summary(self, persona_id: str, conversation_id: str, summary: Summary, *, epoch: int | None) -> None:
        with self._tx() as db:
            if epoch is not None and self._epoch(db, persona_id, conversation_id) != epoch:
                raise Aborted(
                    f"conversation {conversation_id!r} of persona {persona_id!r} was reset or replaced while its "
                    "summary was written",
                    code="epoch",
                )
            if not summary.text:
                db.execute(
                    "DELETE FROM summaries WHERE persona_id = ? AND conversation_id = ?", (persona_id, conversation_id)
                )
                return
            self._put_summary(db, persona_id, conversation_id, summary)

    @staticmethod
    def _put_summary(db: sqlite3.Connection, persona_id: str, conversation_id: str, summary: Summary) -> None:
        db.execute(
            "INSERT INTO summaries VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET text = excluded.text, "
            "through = excluded.through, update_time_ms = excluded.update_time_ms",
            (persona_id, conversation_id, summary.text, summary.through, summary.update_time_ms or now_ms()),
        )

    def add_memory(self, persona_id: str, conversation_id: str, memory: Memory, *, limit: int) -> Memory:
        with self._tx() as db:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM memories WHERE persona_id = ? AND conversation_id = ?",
                (persona_id, conversation_id),
            ).fetchone()
            if count >= limit:
                raise ResourceExhausted(
                    f"conversation {conversation_id!r} of persona {persona_id!r} holds {count} memories, the "
                    f"server's limit (max_memories = {limit}): delete some first",
                    param="memory",
                )
            return self._add_memory(db, persona_id, conversation_id, memory)

    @staticmethod
    def _add_memory(db: sqlite3.Connection, persona_id: str, conversation_id: str, memory: Memory) -> Memory:
        stamp = memory.create_time_ms or now_ms()
        (memory_id,) = db.execute(
            "INSERT INTO memories (persona_id, conversation_id, text, importance, create_time_ms, source) "
            "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (persona_id, conversation_id, memory.text, memory.importance, stamp, memory.source),
        ).fetchone()
        db.execute(
            "INSERT INTO memories_fts (rowid, text, convkey) VALUES (?, ?, ?)",
            (memory_id, memory.text, _convkey(persona_id, conversation_id)),
        )
        return Memory(memory.text, memory.importance, stamp, memory.source, id=int(memory_id))

    def list_memories(self, persona_id: str, conversation_id: str, after_id: int, limit: int) -> list[Memory]:
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        with self._tx() as db:
            rows = db.execute(
                f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE persona_id = ? AND conversation_id = ? AND id > ? "
                "ORDER BY id LIMIT ?",
                (persona_id, conversation_id, after_id, limit),
            ).fetchall()
        return [_memory(r) for r in rows]

    def delete_memory(self, persona_id: str, conversation_id: str, memory_id: int) -> bool:
        with self._tx() as db:
            gone = db.execute(
                "DELETE FROM memories WHERE persona_id = ? AND conversation_id = ? AND id = ?",
                (persona_id, conversation_id, memory_id),
            ).rowcount
            if gone:
                db.execute("DELETE FROM memories_fts WHERE rowid = ?", (memory_id,))
        return gone > 0

    def search_memories(self, persona_id: str, conversation_id: str, words: list[str]) -> list[MemoryHit]:
        key = (persona_id, conversation_id)
        found: dict[int, MemoryHit] = {}
        with self._lock:  # reads only: WAL readers need no write lock
            if words:
                conv = _fts_phrase(_convkey(*key))
                # Scoring every match is what costs (a common word matches thousands): the newest matches are read
                # in index order and stop at the limit; words rare in the index get a full relevance search.
                queries = [(f"convkey : {conv} AND text : ({' OR '.join(map(_fts_phrase, words))})", "rowid DESC")]
                marks = ",".join("?" * len(words))
                rare = [
                    str(r[0])
                    for r in self._db.execute(
                        f"SELECT term FROM memories_vocab WHERE term IN ({marks}) AND doc <= ?", (*words, _RARE_DOCS)
                    )
                ]
                if rare:
                    queries.append(
                        (
                            f"convkey : {conv} AND text : ({' OR '.join(map(_fts_phrase, rare))})",
                            "bm25(memories_fts, 1.0, 0.0)",
                        )
                    )
                for query, order in queries:
                    # bm25 is computed only to order the rare words' matches: scoring costs per row.
                    rows = self._db.execute(
                        f"SELECT {_MEMORY_COLUMNS_M} FROM (SELECT rowid FROM memories_fts WHERE memories_fts MATCH ? "
                        f"ORDER BY {order} LIMIT ?) f JOIN memories m ON m.id = f.rowid",
                        (query, SEARCH_CANDIDATES),
                    ).fetchall()
                    for r in rows:
                        found[int(r[0])] = MemoryHit(_memory(r), _relevance(str(r[1]), words, rare))
            for order in ("id DESC", "importance DESC, id DESC"):
                rows = self._db.execute(
                    f"SELECT {_MEMORY_COLUMNS} FROM memories WHERE persona_id = ? AND conversation_id = ? "
                    f"ORDER BY {order} LIMIT ?",
                    (*key, SEARCH_CANDIDATES),
                ).fetchall()
                for r in rows:
                    found.setdefault(int(r[0]), MemoryHit(_memory(r), 0.0))
        return list(found.values())


_MEMORY_COLUMNS = "id, text, importance, create_time_ms, source"
#: Words in at most this many memories (of the whole store) are searched by relevance over all their matches.
_RARE_DOCS = 256
_MEMORY_COLUMNS_M = "m.id, m.text, m.importance, m.create_time_ms, m.source"


def _relevance(text: str, words: list[str], rare: list[str]) -> float:
    """How well a matched memory fits the query: the query's words it holds, a rare word counting three times."""
    held = set(re.findall(r"\w+", text.lower()))
    return float(sum(3 if w in rare else 1 for w in words if w in held))


def _memory(row: Sequence[object]) -> Memory:
    return Memory(str(row[1]), int(str(row[2])), int(str(row[3])), str(row[4]), id=int(str(row[0])))


def _convkey(persona_id: str, conversation_id: str) -> str:
    # One token the unicode61 tokenizer keeps whole: ids may hold any printable character.
    return "k" + hashlib.sha256(f"{persona_id}\0{conversation_id}".encode()).hexdigest()[:32]


def _fts_phrase(word: str) -> str:
    """A word as an FTS5 string: quoted, so no word is read as query syntax."""
    return '"' + word.replace('"', '""') + '"'
