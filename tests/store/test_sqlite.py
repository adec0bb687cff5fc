"""The SQLite store: turns are appended atomically, conversations replaced whole, and data outlives the process."""

from pathlib import Path

from npcserver.core.types import Turn
from npcserver.store.sqlite import SqliteStore


def test_turns_persist_across_reopen(tmp_path: Path) -> None:
    db = tmp_path / "npc.db"
    store = SqliteStore(db)
    assert store.append_turn("greta", "p1", Turn("hi", "Evening.")) == 0
    assert store.append_turn("greta", "p1", Turn("ale?", "Two copper.")) == 1
    store.append_turn("greta", "p2", Turn("other", "conversation"))
    store.close()
    reopened = SqliteStore(db)
    assert [t.player_line for t in reopened.load_turns("greta", "p1")] == ["hi", "ale?"]
    assert reopened.load_turns("greta", "p1")[0].create_time_ms > 0
    assert reopened._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_replace_and_reset(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "npc.db")
    store.append_turn("greta", "p1", Turn("a", "b"))
    assert store.replace_turns("greta", "p1", [Turn("x", "y", 5), Turn("z", "w", 6)]) == 2
    assert [(t.player_line, t.create_time_ms) for t in store.load_turns("greta", "p1")] == [("x", 5), ("z", 6)]
    assert store.reset("greta", "p1") == 2
    assert store.load_turns("greta", "p1") == []


def test_failed_replace_keeps_the_old_conversation(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "npc.db")
    store.append_turn("greta", "p1", Turn("keep", "me"))
    bad = [Turn("ok", "ok"), Turn(None, "boom")]  # type: ignore[arg-type]  # NOT NULL violation mid-transaction
    try:
        store.replace_turns("greta", "p1", bad)
    except Exception:
        pass
    else:
        raise AssertionError("expected the insert to fail")
    assert [t.player_line for t in store.load_turns("greta", "p1")] == ["keep"]


def test_personas_create_update_delete(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "npc.db")
    assert store.put_persona("greta", {"id": "greta"}, mode="create")
    assert not store.put_persona("greta", {"id": "greta"}, mode="create")
    assert not store.put_persona("bob", {"id": "bob"}, mode="update")
    assert store.put_persona("bob", {"id": "bob"}, mode="upsert")
    assert [p["id"] for p in store.list_personas("", 10)] == ["bob", "greta"]
    assert [p["id"] for p in store.list_personas("bob", 10)] == ["greta"]
    store.append_turn("greta", "c1", Turn("a", "b"))
    store.append_turn("greta", "c2", Turn("a", "b"))
    assert store.delete_persona("greta") == 2
    assert store.delete_persona("greta") is None
    assert store.load_turns("greta", "c1") == []
