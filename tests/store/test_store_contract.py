"""The contract every ``Store`` backend must pass (semantics in ``npcserver.store.base``).

Every test runs once per backend in ``BACKENDS``. A backend is one factory: a context manager that takes pytest's
``request`` (for session fixtures such as the PostgreSQL cluster) and ``tmp_path`` and yields an *opener*, a function
that opens a store on one fresh, empty database. Calling the opener again opens the same database again, as a
restarted server would. When the block ends, the database is thrown away.

PostgreSQL runs twice: directly, and through PgBouncer in transaction pooling mode (where consecutive transactions
of one client may run on different server connections).

The ``store_factory`` fixture closes every store a test opened. SQLite-only behaviour (WAL, file paths, two
connections on one file) is tested in ``test_sqlite.py``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from npcserver.clock import now_ms
from npcserver.errors import Aborted, ResourceExhausted
from npcserver.store.base import History, Memory, PersonaBody, Store, Summary, Turn, estimate_tokens
from npcserver.store.postgres import PostgresStore
from npcserver.store.sqlite import SqliteStore
from tests.store.postgres_cluster import PostgresCluster

Opener = Callable[[], Store]


@contextmanager
def sqlite_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    path = tmp_path / "contract" / "npcserver.db"
    yield lambda: SqliteStore(path)


def postgres_backend(*, bouncer: bool) -> Callable[[pytest.FixtureRequest, Path], AbstractContextManager[Opener]]:
    @contextmanager
    def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
        cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
        database = cluster.create_database()
        try:
            yield lambda: PostgresStore(cluster.url(database, bouncer=bouncer))
        finally:
            cluster.drop_database(database)

    return backend


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], AbstractContextManager[Opener]]] = {
    "sqlite": sqlite_backend,
    "postgres": postgres_backend(bouncer=False),
    "postgres-pgbouncer": postgres_backend(bouncer=True),
}


@pytest.fixture(params=sorted(BACKENDS))
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens stores on one fresh database of the backend under test; a second call reopens the same data."""
    opened: list[Store] = []
    with BACKENDS[request.param](request, tmp_path) as open_backend:

        def open_store() -> Store:
            store = open_backend()
            opened.append(store)
            return store

        yield open_store
        for store in opened:
            store.close()


@pytest.fixture
def store(store_factory: Opener) -> Store:
    return store_factory()


def persona(persona_id: str, **extra: object) -> PersonaBody:
    return {"id": persona_id, "display_name": persona_id.title(), **extra}


def with_persona(store: Store, persona_id: str = "greta") -> str:
    assert store.put_persona(persona_id, persona(persona_id), mode="create")
    return persona_id


def lines(turns: list[Turn]) -> list[tuple[str, str]]:
    return [(t.player_line, t.npc_line) for t in turns]


def append(store: Store, persona_id: str, conversation_id: str, turn: Turn) -> int:
    """Appends after what a fresh load shows, as the core does (a single writer never races)."""
    history = store.load_history(persona_id, conversation_id)
    return store.append_turn(persona_id, conversation_id, turn, after=history.after, epoch=history.epoch)


# --- personas ------------------------------------------------------------------------------------------------------


def test_create_update_upsert_preconditions(store: Store) -> None:
    assert store.get_persona("greta") is None
    assert store.put_persona("greta", persona("greta", v=1), mode="create")
    assert not store.put_persona("greta", persona("greta", v=2), mode="create")
    assert store.get_persona("greta") == persona("greta", v=1)  # a failed create wrote nothing

    assert not store.put_persona("bob", persona("bob"), mode="update")
    assert store.get_persona("bob") is None  # a failed update created nothing
    assert store.put_persona("greta", {"id": "greta", "only": "this"}, mode="update")
    assert store.get_persona("greta") == {"id": "greta", "only": "this"}  # the whole body is replaced, not merged

    assert store.put_persona("bob", persona("bob"), mode="upsert")
    assert store.put_persona("bob", persona("bob", v=3), mode="upsert")
    assert store.get_persona("bob") == persona("bob", v=3)


def test_unknown_mode_is_refused_before_writing(store: Store) -> None:
    with pytest.raises(ValueError, match="create, update, upsert"):
        store.put_persona("greta", persona("greta"), mode="insert")  # type: ignore[arg-type]
    assert store.get_persona("greta") is None


def test_persona_body_round_trips_as_json(store: Store) -> None:
    body = persona(
        "ship_ai",
        system_prompt='HALCYON says "hello"\n\tand\\or ✨ 你好 مرحبا e\u0301',
        example_dialogue=[{"player": "status?", "npc": '{"line": "nominal"}'}],
        response_schema={"type": "object", "properties": {"emotion": {"enum": ["calm", "alarm"]}}},
        max_tokens=None,
        stop=["\nPlayer:"],
        temperature=0.7,
        big=2**53,
        flag=True,
    )
    assert store.put_persona("ship_ai", body, mode="create")
    got = store.get_persona("ship_ai")
    assert got == body
    assert got is not None
    got["display_name"] = "changed by the caller"
    assert store.get_persona("ship_ai") == body  # callers get a copy, never the store's own object


def test_a_body_that_is_not_json_writes_nothing(store: Store) -> None:
    assert store.put_persona("greta", persona("greta", v=1), mode="create")
    with pytest.raises((TypeError, ValueError)):
        store.put_persona("greta", persona("greta", v={1, 2}), mode="upsert")
    with pytest.raises((TypeError, ValueError)):
        store.put_persona("greta", persona("greta", v=math.nan), mode="update")
    with pytest.raises((TypeError, ValueError)):
        store.put_persona("bob", persona("bob", v=object()), mode="create")
    assert store.get_persona("greta") == persona("greta", v=1)
    assert store.get_persona("bob") is None


def test_list_pages_by_id_in_code_point_order(store: Store) -> None:
    # Mixed case, '_' and '-', digits and non-ASCII: a locale collation would order these differently.
    ids = ["b", "B", "a_b", "ab", "a-b", "a", "Z9", "z10", "z9", "é", "ß", "tavern_keeper", "ship_ai"]
    for pid in ids:
        assert store.put_persona(pid, persona(pid), mode="create")
    expected = sorted(ids)  # Python sorts str by code point
    assert [p["id"] for p in store.list_personas("", 100)] == expected

    pages: list[list[str]] = []
    after = ""
    while page := [p["id"] for p in store.list_personas(after, 4)]:
        pages.append(page)
        after = page[-1]
    assert [len(p) for p in pages] == [4, 4, 4, 1]
    assert [pid for page in pages for pid in page] == expected

    assert [p["id"] for p in store.list_personas("a_b", 2)] == expected[expected.index("a_b") + 1 :][:2]
    assert store.list_personas("\U0010ffff", 10) == []
    assert store.list_personas("", 0) == []
    with pytest.raises(ValueError, match="limit"):
        store.list_personas("", -1)


def test_list_returns_whole_bodies(store: Store) -> None:
    store.put_persona("greta", persona("greta", stop=["\n"]), mode="create")
    assert store.list_personas("", 10) == [persona("greta", stop=["\n"])]


def test_delete_cascades_to_conversations_and_counts_them(store: Store) -> None:
    with_persona(store, "greta")
    with_persona(store, "bob")
    append(store, "greta", "p1", Turn("hi", "Evening."))
    append(store, "greta", "p1", Turn("ale?", "Two copper."))
    append(store, "greta", "p2", Turn("hi", "Again?"))
    append(store, "bob", "p1", Turn("hi", "Hm."))

    assert store.delete_persona("greta") == 2  # conversations, not turns
    assert store.get_persona("greta") is None
    assert store.load_turns("greta", "p1") == []
    assert store.load_turns("greta", "p2") == []
    assert lines(store.load_turns("bob", "p1")) == [("hi", "Hm.")]  # another persona's same conversation id stays
    assert [p["id"] for p in store.list_personas("", 10)] == ["bob"]

    assert store.delete_persona("greta") is None
    assert store.delete_persona("nobody") is None
    with_persona(store, "quiet")
    assert store.delete_persona("quiet") == 0

    # A persona created again under the same id starts with no memory of the deleted one.
    with_persona(store, "greta")
    assert store.load_turns("greta", "p1") == []
    assert append(store, "greta", "p1", Turn("new", "start")) == 0


# --- conversations -------------------------------------------------------------------------------------------------


def test_append_returns_the_index_and_load_keeps_order(store: Store) -> None:
    with_persona(store, "greta")
    with_persona(store, "bob")
    assert store.load_turns("greta", "p1") == []
    turns = [Turn(f"line {i}", f"reply {i}", 1_000 + i, "Hero" if i % 2 else "") for i in range(6)]
    assert [append(store, "greta", "p1", t) for t in turns] == list(range(6))
    assert store.load_turns("greta", "p1") == turns  # every field, oldest first

    # Indexes count per conversation, and a conversation id is scoped by its persona.
    assert append(store, "greta", "p2", Turn("other", "conversation")) == 0
    assert append(store, "bob", "p1", Turn("same id", "other persona")) == 0
    assert store.load_turns("greta", "p1") == turns


def test_create_time_is_stamped_when_zero_and_kept_otherwise(store: Store) -> None:
    with_persona(store)
    before = now_ms()
    append(store, "greta", "p1", Turn("stamped", "by the store"))
    store.replace_turns("greta", "p2", [Turn("stamped", "on import")])
    after = now_ms()
    append(store, "greta", "p1", Turn("kept", "as given", 42))
    stamped, kept = store.load_turns("greta", "p1")
    (imported,) = store.load_turns("greta", "p2")
    assert before <= stamped.create_time_ms <= after
    assert before <= imported.create_time_ms <= after
    assert kept.create_time_ms == 42


def test_everything_survives_reopening(store_factory: Opener) -> None:
    first = store_factory()
    with_persona(first, "greta")
    turns = [Turn("hi", "Evening.", 5, "Ada"), Turn("ale?", "Two copper.", 6)]
    for t in turns:
        append(first, "greta", "p1", t)
    first.replace_turns("greta", "p2", [Turn("imported", "turn", 7)])
    first.close()
    first.close()  # closing twice is harmless

    reopened = store_factory()
    assert reopened.get_persona("greta") == persona("greta")
    assert reopened.load_turns("greta", "p1") == turns
    assert lines(reopened.load_turns("greta", "p2")) == [("imported", "turn")]
    assert append(reopened, "greta", "p1", Turn("and", "on")) == 2


def test_reset_counts_and_restarts_indexes(store: Store) -> None:
    with_persona(store)
    for i in range(3):
        append(store, "greta", "p1", Turn(f"{i}", f"{i}"))
    append(store, "greta", "p2", Turn("keep", "me"))
    assert store.reset("greta", "p1") == 3
    assert store.load_turns("greta", "p1") == []
    assert store.reset("greta", "p1") == 0
    assert store.reset("greta", "never-spoken") == 0
    assert lines(store.load_turns("greta", "p2")) == [("keep", "me")]
    assert append(store, "greta", "p1", Turn("fresh", "start")) == 0


def test_replace_swaps_the_whole_conversation(store: Store) -> None:
    with_persona(store)
    for i in range(4):
        append(store, "greta", "p1", Turn(f"old {i}", "old"))
    append(store, "greta", "p2", Turn("keep", "me"))
    new = [Turn("x", "y", 5, "Ada"), Turn("z", "w", 6)]
    assert store.replace_turns("greta", "p1", new) == 2
    assert store.load_turns("greta", "p1") == new
    assert append(store, "greta", "p1", Turn("next", "one")) == 2  # indexes continue from the import
    assert store.replace_turns("greta", "p1", []) == 0
    assert store.load_turns("greta", "p1") == []
    assert store.replace_turns("greta", "p3", new) == 2  # importing into a new conversation
    assert store.load_turns("greta", "p3") == new
    assert lines(store.load_turns("greta", "p2")) == [("keep", "me")]


def test_unicode_round_trips(store: Store) -> None:
    weird = [
        "emoji 🧙‍♀️🍺 and flags 🇳🇴",
        "CJK 酒場の主人 and Hangul 주점",
        "RTL مرحبا بك and Hebrew שלום",
        "combining e\u0301 vs \u00e9, zero width \u200b joiner",
        "quotes ' \" ` and backslash \\ and SQL '); DROP TABLE turns; --",
        "lines\nwith\r\nbreaks\tand tabs",
        "  leading and trailing spaces  ",
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 outside the BMP",
    ]
    with_persona(store, "é_npc")
    conversation = "slot-ü-🗝"
    turns = [Turn(text, text[::-1], 1, player_name="Ærwyn 李") for text in weird]
    for t in turns:
        append(store, "é_npc", conversation, t)
    assert store.load_turns("é_npc", conversation) == turns
    assert store.replace_turns("é_npc", conversation, turns[::-1]) == len(turns)
    assert store.load_turns("é_npc", conversation) == turns[::-1]
    assert store.delete_persona("é_npc") == 1


# --- failures and concurrency ----------------------------------------------------------------------------------------


def test_a_failed_replace_keeps_the_old_conversation(store: Store) -> None:
    with_persona(store)
    old = [Turn("keep", "me", 1), Turn("and", "me", 2)]
    store.replace_turns("greta", "p1", old)
    # The bad turn comes after a good one: the backend has already deleted and inserted when it fails.
    bad = [Turn("ok", "ok"), Turn("ok", None)]  # type: ignore[arg-type]
    with pytest.raises(Exception):  # noqa: B017 - which error is the backend's; that it raises and rolls back is not
        store.replace_turns("greta", "p1", bad)
    assert store.load_turns("greta", "p1") == old
    with pytest.raises(Exception):  # noqa: B017
        store.replace_turns("greta", "fresh", bad)
    assert store.load_turns("greta", "fresh") == []
    assert append(store, "greta", "p1", Turn("still", "works")) == 2


def test_a_failed_append_stores_nothing_and_leaves_no_gap(store: Store) -> None:
    with_persona(store)
    append(store, "greta", "p1", Turn("a", "b"))
    with pytest.raises(Exception):  # noqa: B017
        append(store, "greta", "p1", Turn(None, "orphan reply"))  # type: ignore[arg-type]
    assert lines(store.load_turns("greta", "p1")) == [("a", "b")]
    assert append(store, "greta", "p1", Turn("c", "d")) == 1


def append_retrying(store: Store, persona_id: str, conversation_id: str, turn: Turn) -> tuple[int, int]:
    """Appends as a replica retrying its request would: load, append, and on Aborted start over.

    Returns the index and how many attempts were aborted.
    """
    for aborted in range(1000):
        try:
            return append(store, persona_id, conversation_id, turn), aborted
        except Aborted:
            continue
    raise AssertionError("1000 attempts in a row were aborted")


def test_concurrent_appends_never_interleave_or_get_lost(store: Store) -> None:
    with_persona(store)
    writers, per_writer = 8, 25
    returned: dict[tuple[int, int], int] = {}
    aborted: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(writers + 1)

    def write(w: int) -> None:
        try:
            start.wait()
            for i in range(per_writer):
                # Each writer also fills a conversation of its own, which must stay apart from the busy one.
                returned[w, i], retries = append_retrying(
                    store, "greta", "busy", Turn(f"w{w} line {i}", f"w{w} reply {i}")
                )
                aborted.append(retries)
                assert append(store, "greta", f"own-{w}", Turn(f"{i}", f"{i}")) == i  # nobody races a writer here
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:  # reads during the writes see whole turns in order, never a half-written one
        try:
            start.wait()
            for _ in range(per_writer):
                for t in store.load_turns("greta", "busy"):
                    assert t.npc_line == t.player_line.replace("line", "reply")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    total = writers * per_writer
    assert sorted(returned.values()) == list(range(total))  # each append got its own index, none lost

    turns = store.load_turns("greta", "busy")
    assert len(turns) == total
    for (w, i), index in returned.items():  # the turn stored at an index is the one whose append returned it
        assert (turns[index].player_line, turns[index].npc_line) == (f"w{w} line {i}", f"w{w} reply {i}")
    for w in range(writers):  # and each writer's turns keep the order it wrote them in
        assert [returned[w, i] for i in range(per_writer)] == sorted(returned[w, i] for i in range(per_writer))
        assert lines(store.load_turns("greta", f"own-{w}")) == [(f"{i}", f"{i}") for i in range(per_writer)]


def test_racing_writers_exactly_one_wins_each_index(store: Store) -> None:
    # Two replicas that loaded the same conversation append at once: one stores its turn, the other is aborted and
    # stores nothing, round after round.
    with_persona(store)
    rounds = 30
    winners: list[str] = []
    outcomes: list[tuple[str, int, str]] = []  # (writer, round, "won" or the Aborted code)
    lock = threading.Lock()
    errors: list[BaseException] = []
    loaded = threading.Barrier(2)
    finished = threading.Barrier(2)

    def write(name: str) -> None:
        try:
            for r in range(rounds):
                history = store.load_history("greta", "p1")
                loaded.wait()  # both have seen the same conversation before either appends
                turn = Turn(f"{name} {r}", f"reply {r}")
                try:
                    index = store.append_turn("greta", "p1", turn, after=history.after, epoch=history.epoch)
                except Aborted as exc:
                    with lock:
                        outcomes.append((name, r, str(exc.code)))
                else:
                    assert index == r == history.after
                    with lock:
                        outcomes.append((name, r, "won"))
                        winners.append(turn.player_line)
                finished.wait()  # the next round starts from the conversation this one left
        except BaseException as exc:
            errors.append(exc)
            loaded.abort()
            finished.abort()

    threads = [threading.Thread(target=write, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for r in range(rounds):
        results = sorted(outcome for _, rr, outcome in outcomes if rr == r)
        assert results == ["turn_order", "won"], (r, results)
    assert [t.player_line for t in store.load_turns("greta", "p1")] == winners  # in order, no loser's turn


def test_an_append_must_follow_exactly_what_is_stored(store: Store) -> None:
    with_persona(store)
    fresh = store.load_history("greta", "p1")
    assert (fresh.turns, fresh.after, fresh.epoch) == ([], 0, 0)  # never reset or replaced: epoch 0
    with pytest.raises(Aborted, match=r"conversation 'p1' of persona 'greta' has 0 turns, not the 1"):
        store.append_turn("greta", "p1", Turn("too", "far"), after=1, epoch=0)
    with pytest.raises(Aborted, match="reset or replaced") as caught:
        store.append_turn("greta", "p1", Turn("wrong", "epoch"), after=0, epoch=fresh.epoch + 1)
    assert (caught.value.grpc_status, caught.value.http_status, caught.value.code) == ("ABORTED", 409, "epoch")
    with pytest.raises(ValueError, match="after"):
        store.append_turn("greta", "p1", Turn("negative", "after"), after=-1, epoch=0)
    assert store.load_turns("greta", "p1") == []  # none of those wrote anything

    assert store.append_turn("greta", "p1", Turn("first", "one"), after=0, epoch=0) == 0
    with pytest.raises(Aborted) as caught:  # the same position again: someone else's turn is already there
        store.append_turn("greta", "p1", Turn("duplicate", "one"), after=0, epoch=0)
    assert caught.value.code == "turn_order"
    assert store.append_turn("greta", "p1", Turn("second", "one"), after=1, epoch=0) == 1
    assert lines(store.load_turns("greta", "p1")) == [("first", "one"), ("second", "one")]


def test_a_reset_or_replace_aborts_appends_made_before_it(store_factory: Opener) -> None:
    store = store_factory()
    with_persona(store)
    for i in range(2):
        append(store, "greta", "p1", Turn(f"{i}", f"{i}"))
    seen = store.load_history("greta", "p1")

    # Reset: the old position is gone, and so is every other position in the old epoch.
    store.reset("greta", "p1")
    after_reset = store.load_history("greta", "p1")
    assert after_reset.turns == [] and after_reset.epoch != seen.epoch
    for after in (seen.after, 0):
        with pytest.raises(Aborted, match="reset or replaced"):
            store.append_turn("greta", "p1", Turn("stale", "reply"), after=after, epoch=seen.epoch)

    # Grown back to the old length in the new epoch: an append made before the reset still fails.
    for i in range(2):
        append(store, "greta", "p1", Turn(f"new {i}", "new"))
    with pytest.raises(Aborted, match="reset or replaced"):
        store.append_turn("greta", "p1", Turn("stale", "reply"), after=seen.after, epoch=seen.epoch)

    # Replace (an import) of the same length starts another epoch.
    before_import = store.load_history("greta", "p1")
    store.replace_turns("greta", "p1", [Turn("x", "y"), Turn("z", "w")])
    imported = store.load_history("greta", "p1")
    assert imported.epoch not in (seen.epoch, before_import.epoch)
    with pytest.raises(Aborted, match="reset or replaced"):
        store.append_turn("greta", "p1", Turn("stale", "reply"), after=2, epoch=before_import.epoch)
    assert lines(store.load_turns("greta", "p1")) == [("x", "y"), ("z", "w")]

    # Resetting a conversation that has no turns also starts an epoch: a writer may be mid-way through its first.
    empty = store.load_history("greta", "p2")
    store.reset("greta", "p2")
    with pytest.raises(Aborted):
        store.append_turn("greta", "p2", Turn("stale", "reply"), after=0, epoch=empty.epoch)

    # Epochs are stored: a reopened store (a restarted or another replica) keeps them.
    reopened = store_factory()
    assert reopened.load_history("greta", "p1") == imported
    with pytest.raises(Aborted):
        reopened.append_turn("greta", "p1", Turn("stale", "reply"), after=2, epoch=before_import.epoch)
    assert reopened.append_turn("greta", "p1", Turn("fresh", "reply"), after=2, epoch=imported.epoch) == 2


def watch_while(store: Store, write: Callable[[], None], rounds: int) -> set[tuple[tuple[str, str], ...]]:
    """Runs ``write`` ``rounds`` times while reader threads load greta/p1 in a loop; returns every state they saw."""
    seen: set[tuple[tuple[str, str], ...]] = set()
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                seen.add(tuple(lines(store.load_turns("greta", "p1"))))
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for _ in range(rounds):
            write()
    finally:
        done.set()
        for t in readers:
            t.join(60)
    assert not errors, errors
    return seen


def test_readers_never_see_a_replace_half_done(store: Store) -> None:
    with_persona(store)
    long = [Turn(f"long {i}", "L") for i in range(7)]
    short = [Turn(f"short {i}", "S") for i in range(3)]
    store.replace_turns("greta", "p1", long)

    def write() -> None:
        assert store.replace_turns("greta", "p1", short) == 3
        assert store.replace_turns("greta", "p1", long) == 7

    assert watch_while(store, write, 60) <= {tuple(lines(long)), tuple(lines(short))}


def test_readers_never_see_a_reset_half_done(store: Store) -> None:
    with_persona(store)
    turns = [Turn(f"line {i}", "reply") for i in range(7)]

    def write() -> None:
        assert store.replace_turns("greta", "p1", turns) == 7
        assert store.reset("greta", "p1") == 7

    assert watch_while(store, write, 60) <= {tuple(lines(turns)), ()}


# --- the newest turns that fit -------------------------------------------------------------------------------------


def test_load_recent_returns_the_newest_turns_that_fit(store: Store) -> None:
    with_persona(store)
    assert store.load_recent("greta", "p1", 100) == History([], 0)
    sizes = [5, 7, 3, 9, 4]
    turns = [Turn(f"line {i}", f"reply {i}", 1_000 + i, tokens=n) for i, n in enumerate(sizes)]
    for t in turns:
        append(store, "greta", "p1", t)
    # Suffix sums: 28 from turn 0, 23 from 1, 16 from 2, 13 from 3, 4 from 4.
    cases = [(100, 0), (28, 0), (27, 1), (23, 1), (22, 2), (16, 2), (15, 3), (13, 3), (12, 4), (4, 4), (3, 5), (0, 5)]
    for budget, first in cases:
        recent = store.load_recent("greta", "p1", budget)
        assert recent.turns == turns[first:], budget
        assert [t.tokens for t in recent.turns] == sizes[first:]
        assert (recent.first, recent.tokens_before, recent.after, recent.epoch) == (first, sum(sizes[:first]), 5, 0)
    # What load_recent saw is what an append states, as with load_history.
    recent = store.load_recent("greta", "p1", 10)
    assert store.append_turn("greta", "p1", Turn("six", "6", tokens=2), after=recent.after, epoch=recent.epoch) == 5
    with pytest.raises(Aborted):
        store.append_turn("greta", "p1", Turn("stale", "x"), after=recent.after, epoch=recent.epoch)
    assert lines(store.load_recent("greta", "p1", 6).turns) == [("line 4", "reply 4"), ("six", "6")]
    with pytest.raises(ValueError, match="max_tokens"):
        store.load_recent("greta", "p1", -1)


def test_a_turn_without_a_count_gets_an_estimate(store: Store) -> None:
    with_persona(store)
    turn = Turn("How much for the room?", "Two silver a night.", player_name="Ada")
    append(store, "greta", "p1", turn)
    store.replace_turns("greta", "p2", [turn])
    want = estimate_tokens(turn.player_line, turn.npc_line, turn.player_name)
    assert want > 0
    assert [t.tokens for t in store.load_turns("greta", "p1")] == [want]
    assert [t.tokens for t in store.load_recent("greta", "p2", want).turns] == [want]
    assert store.load_recent("greta", "p2", want - 1).turns == []


def test_load_recent_follows_replace_and_reset(store: Store) -> None:
    with_persona(store)
    for i in range(4):
        append(store, "greta", "p1", Turn(f"old {i}", "x", tokens=50))
    store.replace_turns("greta", "p1", [Turn(f"new {i}", "y", tokens=10) for i in range(3000)])
    recent = store.load_recent("greta", "p1", 95)
    assert [t.player_line for t in recent.turns] == [f"new {i}" for i in range(2991, 3000)]
    assert (recent.first, recent.tokens_before, recent.after) == (2991, 29910, 3000)
    assert recent.epoch == store.load_history("greta", "p1").epoch > 0
    append(store, "greta", "p1", Turn("after import", "z", tokens=5))
    assert store.load_recent("greta", "p1", 15).turns[-1].player_line == "after import"
    assert store.load_recent("greta", "p1", 15).first == 2999
    store.reset("greta", "p1")
    empty = store.load_recent("greta", "p1", 1000)
    assert (empty.turns, empty.after) == ([], 0) and empty.epoch > recent.epoch
    assert append(store, "greta", "p1", Turn("again", "from zero", tokens=4)) == 0
    assert store.load_recent("greta", "p1", 4).tokens_before == 0


# --- request ids (idempotent Talk) ---------------------------------------------------------------------------------


def test_a_turn_is_found_by_its_request_id(store: Store) -> None:
    with_persona(store)
    assert store.find_turn("greta", "p1", "r1") is None
    append(store, "greta", "p1", Turn("no id", "0"))
    append(store, "greta", "p1", Turn("with id", "1", player_name="Ada", request_id="r1"))
    found = store.find_turn("greta", "p1", "r1")
    assert found is not None
    index, turn = found
    assert index == 1
    assert (turn.player_line, turn.npc_line, turn.player_name, turn.request_id) == ("with id", "1", "Ada", "r1")
    assert store.find_turn("greta", "p1", "") is None  # "" is no id, even though turn 0 has none
    assert store.find_turn("greta", "p2", "r1") is None  # ids belong to one conversation
    assert [t.request_id for t in store.load_turns("greta", "p1")] == ["", "r1"]
    assert store.load_recent("greta", "p1", 1000).turns[-1].request_id == "r1"
    assert append(store, "greta", "p2", Turn("same id", "other conversation", request_id="r1")) == 0


def test_a_request_id_is_stored_once(store: Store) -> None:
    with_persona(store)
    append(store, "greta", "p1", Turn("first", "one", request_id="r1"))
    history = store.load_history("greta", "p1")
    with pytest.raises(Aborted, match="already has the turn of this request id") as caught:
        store.append_turn("greta", "p1", Turn("again", "two", request_id="r1"), after=history.after, epoch=0)
    assert (caught.value.grpc_status, caught.value.code) == ("ABORTED", "duplicate_request")
    assert lines(store.load_turns("greta", "p1")) == [("first", "one")]
    append(store, "greta", "p1", Turn("no id", "a"))
    append(store, "greta", "p1", Turn("no id", "b"))  # turns without an id never clash
    assert len(store.load_turns("greta", "p1")) == 3


def test_replicas_racing_on_one_request_id_store_one_turn(store_factory: Opener) -> None:
    # Two replicas (two stores on one database) made the same Talk from the same history: one stores it, the other is
    # aborted and then finds the winner's turn to replay, round after round.
    a, b = store_factory(), store_factory()
    with_persona(a)
    errors: list[BaseException] = []
    found: list[tuple[int, str]] = []
    lock = threading.Lock()
    loaded = threading.Barrier(2)

    def write(store: Store, name: str) -> None:
        try:
            for r in range(20):
                history = store.load_history("greta", "p1")
                loaded.wait()
                try:
                    store.append_turn(
                        "greta", "p1", Turn(f"line {r}", name, request_id=f"req {r}"), after=history.after, epoch=0
                    )
                except Aborted:
                    hit = store.find_turn("greta", "p1", f"req {r}")
                    assert hit is not None
                    with lock:
                        found.append((hit[0], hit[1].npc_line))
                loaded.wait()
        except BaseException as exc:
            errors.append(exc)
            loaded.abort()

    threads = [threading.Thread(target=write, args=(s, n)) for s, n in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    turns = a.load_turns("greta", "p1")
    assert [t.player_line for t in turns] == [f"line {r}" for r in range(20)]
    assert [t.request_id for t in turns] == [f"req {r}" for r in range(20)]
    assert sorted(found) == [(r, turns[r].npc_line) for r in range(20)]  # each loser found the winner's turn


def test_replace_and_reset_drop_request_ids(store: Store) -> None:
    with_persona(store)
    append(store, "greta", "p1", Turn("first", "one", request_id="r1"))
    store.replace_turns("greta", "p1", [Turn("imported", "x", request_id="r1"), Turn("imported", "y", request_id="r1")])
    assert store.find_turn("greta", "p1", "r1") is None  # imported turns were not made by a Talk here
    assert [t.request_id for t in store.load_turns("greta", "p1")] == ["", ""]
    append(store, "greta", "p1", Turn("again", "z", request_id="r1"))
    store.reset("greta", "p1")
    assert store.find_turn("greta", "p1", "r1") is None


# --- knowledge: lore books, summaries, memories --------------------------------------------------------------------


def test_lore_books_put_list_delete(store: Store) -> None:
    body = {"id": "millbrook", "personas": ["greta"], "entries": [{"keys": ["wolves"], "content": "Wolves."}]}
    assert store.put_lore_book("millbrook", body, mode="create")
    assert not store.put_lore_book("millbrook", body, mode="create")
    assert not store.put_lore_book("other", body, mode="update")
    assert store.get_lore_book("millbrook") == body
    assert store.put_lore_book("b-2", {**body, "id": "b-2"}, mode="upsert")
    assert [b["id"] for b in store.list_lore_books("", 10)] == ["b-2", "millbrook"]
    assert [b["id"] for b in store.list_lore_books("b-2", 10)] == ["millbrook"]
    assert store.delete_lore_book("millbrook")
    assert not store.delete_lore_book("millbrook")
    assert store.get_lore_book("millbrook") is None


def test_summary_is_written_only_in_its_epoch_and_goes_with_a_reset(store: Store) -> None:
    p = with_persona(store)
    append(store, p, "c", Turn("hi", "hello"))
    epoch = store.load_history(p, "c").epoch
    store.put_summary(p, "c", Summary("They met.", through=1), epoch=epoch)
    got = store.get_summary(p, "c")
    assert got is not None and (got.text, got.through) == ("They met.", 1) and got.update_time_ms > 0
    store.reset(p, "c")
    assert store.get_summary(p, "c") is None
    with pytest.raises(Aborted):  # the reset won: a summary of the old turns must not come back
        store.put_summary(p, "c", Summary("stale", through=1), epoch=epoch)
    assert store.get_summary(p, "c") is None
    store.put_summary(p, "c", Summary("game's own"), epoch=None)
    store.put_summary(p, "c", Summary(""), epoch=None)  # empty removes it
    assert store.get_summary(p, "c") is None


def test_memories_add_list_delete_limit_and_search(store: Store) -> None:
    p = with_persona(store)
    added = [
        store.add_memory(p, "c", Memory(text, importance=i + 1), limit=4)
        for i, text in enumerate(["The player returned the ring.", "Wolves took two sheep.", "It rained."])
    ]
    assert [m.id for m in added] == sorted(m.id for m in added) and added[0].create_time_ms > 0
    store.add_memory(p, "other", Memory("Wolves elsewhere."), limit=4)
    store.add_memory(p, "c", Memory("The mayor is ill.", importance=9, source="model"), limit=4)
    with pytest.raises(ResourceExhausted):
        store.add_memory(p, "c", Memory("one too many"), limit=4)
    assert len(store.list_memories(p, "c", 0, 100)) == 4  # nothing half-written
    hits = store.search_memories(p, "c", ["wolves"])
    by_text = {h.memory.text: h.relevance for h in hits}
    assert by_text["Wolves took two sheep."] > 0
    assert "Wolves elsewhere." not in by_text  # another conversation's memory
    assert by_text["It rained."] == 0  # a candidate for recency and importance only
    assert store.list_memories(p, "c", added[0].id, 2) == [added[1], added[2]]
    assert store.delete_memory(p, "c", added[1].id)
    assert not store.delete_memory(p, "c", added[1].id)
    assert not store.delete_memory(p, "other", added[0].id)
    assert all(h.memory.text != "Wolves took two sheep." for h in store.search_memories(p, "c", ["wolves"]))


def test_replace_restores_summary_and_memories_and_reset_clears_them(store: Store) -> None:
    p = with_persona(store)
    store.add_memory(p, "c", Memory("old"), limit=10)
    store.replace_turns(
        p, "c", [Turn("a", "b")], summary=Summary("Saved.", through=3), memories=[Memory("ring", importance=7)]
    )
    summary = store.get_summary(p, "c")
    assert summary is not None and (summary.text, summary.through) == ("Saved.", 3)
    assert [(m.text, m.importance) for m in store.list_memories(p, "c", 0, 10)] == [("ring", 7)]
    assert [h.memory.text for h in store.search_memories(p, "c", ["ring"]) if h.relevance > 0] == ["ring"]
    store.reset(p, "c")
    assert store.list_memories(p, "c", 0, 10) == [] and store.search_memories(p, "c", ["ring"]) == []


def test_deleting_a_persona_deletes_its_summaries_and_memories(store: Store) -> None:
    p = with_persona(store)
    store.add_memory(p, "c", Memory("ring"), limit=10)
    store.put_summary(p, "c", Summary("s"), epoch=None)
    store.delete_persona(p)
    with_persona(store)
    assert store.get_summary(p, "c") is None and store.list_memories(p, "c", 0, 10) == []
