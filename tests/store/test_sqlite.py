"""What only the SQLite backend does: its file, WAL, and several connections on one file.

The behaviour every backend shares is in ``test_store_contract.py``, which runs against SQLite too.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from npcserver.errors import Aborted
from npcserver.store.base import Turn, estimate_tokens
from npcserver.store.sqlite import SCHEMA_VERSION, SqliteStore


def test_creates_its_folder_and_opens_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "npcserver.db"
    store = SqliteStore(path)
    try:
        assert path.is_file()
        assert store.path == path
        raw = sqlite3.connect(path)
        try:
            assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # WAL is a property of the file
            assert raw.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
                str(SCHEMA_VERSION),
            )
        finally:
            raw.close()
    finally:
        store.close()


def test_a_turn_survives_the_process_dying_without_close(tmp_path: Path) -> None:
    path = tmp_path / "npcserver.db"
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from npcserver.store.base import Turn
        from npcserver.store.sqlite import SqliteStore
        store = SqliteStore(Path({str(path)!r}))
        store.put_persona("greta", {{"id": "greta"}}, mode="create")
        store.append_turn("greta", "p1", Turn("hi", "Evening."), after=0, epoch=0)
        os._exit(0)  # no close, no cleanup: as if the server were killed
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60, cwd=Path(__file__).parents[2])
    store = SqliteStore(path)
    try:
        assert store.get_persona("greta") == {"id": "greta"}
        assert [(t.player_line, t.npc_line) for t in store.load_turns("greta", "p1")] == [("hi", "Evening.")]
    finally:
        store.close()


def test_connections_sharing_one_file_never_reuse_an_index(tmp_path: Path) -> None:
    # Stores on one file stand for processes sharing it: the position is checked under SQLite's own write lock,
    # since the Python lock of one store does not cover the other.
    path = tmp_path / "npcserver.db"
    stores = [SqliteStore(path) for _ in range(4)]
    returned: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def write(store: SqliteStore, name: str) -> None:
        try:
            start.wait()
            for i in range(50):
                while True:  # a writer that lost the race loads again and retries, as a replica would
                    history = store.load_history("greta", "p1")
                    turn = Turn(f"{name} {i}", "ok")
                    try:
                        returned.append(store.append_turn("greta", "p1", turn, after=history.after, epoch=0))
                        break
                    except Aborted:
                        continue
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s, f"s{n}")) for n, s in enumerate(stores)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert sorted(returned) == list(range(200))
        assert len(stores[1].load_turns("greta", "p1")) == 200
    finally:
        for s in stores:
            s.close()


def test_a_version_1_file_is_upgraded_and_keeps_its_turns(tmp_path: Path) -> None:
    path = tmp_path / "npcserver.db"
    store = SqliteStore(path)
    store.put_persona("greta", {"id": "greta"}, mode="create")
    store.append_turn("greta", "p1", Turn("hi", "Evening."), after=0, epoch=0)
    store.close()
    raw = sqlite3.connect(path)  # make it what version 1 wrote: no epochs table
    raw.execute("DROP TABLE conversations")
    raw.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    raw.commit()
    raw.close()

    store = SqliteStore(path)
    try:
        history = store.load_history("greta", "p1")
        assert ([t.player_line for t in history.turns], history.epoch) == (["hi"], 0)
        assert store.append_turn("greta", "p1", Turn("ale?", "Two copper."), after=1, epoch=0) == 1
        assert store.reset("greta", "p1") == 2
        assert store.load_history("greta", "p1").epoch > 0
        raw = sqlite3.connect(path)
        assert raw.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
        raw.close()
    finally:
        store.close()


def test_a_version_2_file_gets_token_counts(tmp_path: Path) -> None:
    path = tmp_path / "npcserver.db"
    raw = sqlite3.connect(path)  # what version 2 wrote: turns without token counts
    raw.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '2');
        CREATE TABLE personas (id TEXT PRIMARY KEY, body TEXT NOT NULL, updated_ms INTEGER NOT NULL);
        INSERT INTO personas VALUES ('greta', '{"id": "greta"}', 1);
        CREATE TABLE turns (persona_id TEXT NOT NULL, conversation_id TEXT NOT NULL, seq INTEGER NOT NULL,
            player_line TEXT NOT NULL, npc_line TEXT NOT NULL, player_name TEXT NOT NULL DEFAULT '',
            create_time_ms INTEGER NOT NULL, PRIMARY KEY (persona_id, conversation_id, seq));
        INSERT INTO turns VALUES ('greta', 'p1', 0, 'Hello there, innkeeper!', 'Evening.', '', 1);
        INSERT INTO turns VALUES ('greta', 'p1', 1, 'A room?', 'Two silver.', 'Ada', 2);
        INSERT INTO turns VALUES ('greta', 'p2', 0, 'Other', 'conversation', '', 3);
        """
    )
    raw.close()
    store = SqliteStore(path)
    try:
        want = [estimate_tokens(t.player_line, t.npc_line, t.player_name) for t in store.load_turns("greta", "p1")]
        assert [t.tokens for t in store.load_turns("greta", "p1")] == want
        recent = store.load_recent("greta", "p1", want[1])
        assert (lines(recent.turns), recent.first, recent.tokens_before) == ([("A room?", "Two silver.")], 1, want[0])
        assert store.append_turn("greta", "p1", Turn("more", "yes", tokens=3), after=2, epoch=0) == 2
        assert store.load_recent("greta", "p1", 3).tokens_before == sum(want)
        assert store.load_recent("greta", "p2", 100).first == 0
    finally:
        store.close()
    again = SqliteStore(path)  # opening a migrated file again changes nothing
    try:
        assert len(again.load_turns("greta", "p1")) == 3
    finally:
        again.close()


def lines(turns: list[Turn]) -> list[tuple[str, str]]:
    return [(t.player_line, t.npc_line) for t in turns]


def test_a_version_3_file_gets_request_ids(tmp_path: Path) -> None:
    path = tmp_path / "npcserver.db"
    store = SqliteStore(path)
    store.put_persona("greta", {"id": "greta"}, mode="create")
    store.append_turn("greta", "p1", Turn("old", "turn"), after=0, epoch=0)
    store.close()
    raw = sqlite3.connect(path)  # what version 3 wrote: turns without request ids
    raw.executescript(
        """
        DROP INDEX turns_request_id;
        ALTER TABLE turns DROP COLUMN request_id;
        UPDATE meta SET value = '3' WHERE key = 'schema_version';
        """
    )
    raw.close()
    store = SqliteStore(path)
    try:
        assert [t.request_id for t in store.load_turns("greta", "p1")] == [""]
        store.append_turn("greta", "p1", Turn("new", "turn", request_id="r1"), after=1, epoch=0)
        found = store.find_turn("greta", "p1", "r1")
        assert found is not None and found[0] == 1
        with pytest.raises(Aborted, match="request id"):
            store.append_turn("greta", "p1", Turn("again", "turn", request_id="r1"), after=2, epoch=0)
    finally:
        store.close()
