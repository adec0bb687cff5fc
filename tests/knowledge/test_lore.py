"""Lore selection (SillyTavern world-info semantics), lore files, card books and memory ranking, without a model:
tokens are counted as words here (the live tests use the real tokenizer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from npcserver.core import lore
from npcserver.core.memory import query_words, rank
from npcserver.errors import InvalidArgument
from npcserver.store.base import Memory, MemoryHit


def words(text: str) -> int:
    return len(text.split())


def book(*entries: dict[str, Any], **fields: Any) -> lore.LoreBook:
    return lore.parse_book({"id": "world", "personas": ["greta"], "entries": list(entries), **fields})


WOLVES = {"name": "wolves", "keys": ["wolves", "wolf"], "content": "Wolves roam the Darkwood."}


def chosen(b: lore.LoreBook, line: str, recent: tuple[str, ...] = ()) -> list[str]:
    picked = lore.select([b], recent, line, words)
    return [e.content for e in (*picked.world, *picked.matched)]


def test_a_key_in_the_line_brings_its_entry_and_a_line_without_it_does_not() -> None:
    b = book(WOLVES)
    assert chosen(b, "Have you seen the WOLVES?") == ["Wolves roam the Darkwood."]  # case-insensitive by default
    assert chosen(b, "Nice weather today.") == []


def test_keys_are_scanned_in_the_last_turns_up_to_scan_depth() -> None:
    b = book(WOLVES, scan_depth=1)
    assert chosen(b, "And then?", recent=("We spoke of wolves.", "Then of bread.")) == []
    assert chosen(b, "And then?", recent=("Then of bread.", "We spoke of wolves.")) == ["Wolves roam the Darkwood."]
    assert chosen(book(WOLVES, scan_depth=0), "And then?", recent=("wolves",)) == []


def test_a_constant_entry_is_always_in_and_comes_first_in_the_world() -> None:
    b = book(WOLVES, {"constant": True, "content": "Millbrook is a village."})
    picked = lore.select([b], (), "hello", words)
    assert [e.content for e in picked.world] == ["Millbrook is a village."] and picked.matched == ()


@pytest.mark.parametrize(
    ("logic", "line", "expected"),
    [
        ("and_any", "the silver key and the cellar", True),
        ("and_any", "the silver key", False),
        ("and_all", "the silver key, the cellar and the door", True),
        ("and_all", "the silver key and the cellar", False),
        ("not_any", "the silver key", True),
        ("not_any", "the silver key and the door", False),
        ("not_all", "the silver key and the door", True),
        ("not_all", "the silver key, the cellar and the door", False),
    ],
)
def test_secondary_keys_follow_the_selective_logic(logic: str, line: str, expected: bool) -> None:
    entry = {
        "keys": ["silver key"],
        "secondary_keys": ["cellar", "door"],
        "selective": True,
        "selective_logic": logic,
        "content": "It opens the cellar.",
    }
    assert bool(chosen(book(entry), line)) is expected


def test_case_sensitivity_of_the_book_and_of_an_entry() -> None:
    entry = {"keys": ["Wren"], "content": "Wren leads the council."}
    assert chosen(book(entry, case_sensitive=True), "wren?") == []
    assert chosen(book(entry, case_sensitive=True), "Wren?") == ["Wren leads the council."]
    assert chosen(book({**entry, "case_sensitive": False}, case_sensitive=True), "wren?") == ["Wren leads the council."]


def test_the_budget_is_never_exceeded_and_the_lowest_priority_goes_first() -> None:
    entries = [
        {"keys": ["wolf"], "content": "one two three four", "priority": 10, "insertion_order": 1},
        {"keys": ["wolf"], "content": "five six seven eight", "priority": 30, "insertion_order": 3},
        {"keys": ["wolf"], "content": "nine ten eleven twelve", "priority": 20, "insertion_order": 2},
        {"constant": True, "content": "always here"},
    ]
    b = book(*entries, token_budget=10)
    picked = lore.select([b], (), "a wolf!", words)
    used = sum(words(e.content) for e in (*picked.world, *picked.matched))
    assert used <= 10
    # Priority 30 and 20 fit with the constant entry (2 + 4 + 4); priority 10 is dropped; insertion order shows them.
    assert [e.content for e in picked.matched] == ["nine ten eleven twelve", "five six seven eight"]


def test_disabled_entries_never_fire() -> None:
    assert chosen(book({**WOLVES, "enabled": False}), "wolves") == []


def test_shared_books_come_before_a_personas_own_in_the_world() -> None:
    own = lore.parse_book({"id": "a-own", "personas": ["greta"], "entries": [{"constant": True, "content": "own"}]})
    shared = lore.parse_book(
        {"id": "z-shared", "personas": ["greta", "hans"], "entries": [{"constant": True, "content": "shared"}]}
    )
    assert [e.content for e in lore.select([own, shared], (), "", words).world] == ["shared", "own"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"entries": [{"content": "no keys"}]}, "entries[0] has no keys"),
        ({"entries": [{"keys": ["x"], "content": "  "}]}, "entries[0].content is empty"),
        ({"entries": [{"keys": ["x"], "content": "x" * 4001}]}, "the limit is 4000"),
        ({"entries": [{"keys": ["x"], "content": "x", "colour": 1}]}, "unknown field(s) colour"),
        ({"entries": [{"keys": ["x"], "content": "x", "selective_logic": "maybe"}]}, "selective_logic is 'maybe'"),
        ({"personas": []}, "names no personas"),
        ({"token_budget": 0}, "token_budget must be a whole number from 1"),
        ({"id": "Bad Id"}, "lore book id 'Bad Id' is invalid"),
    ],
)
def test_bad_books_are_refused_naming_what_to_fix(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        lore.parse_book({"id": "world", "personas": ["greta"], "entries": [], **raw})
    assert message in info.value.message


def test_budgets_over_the_context_and_constants_over_the_budget_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="more than half the context window"):
        lore.check_budget(book(WOLVES, token_budget=3000), 4096, words)
    with pytest.raises(InvalidArgument, match="constant entries take 5 tokens, more than its token_budget 4"):
        lore.check_budget(book({"constant": True, "content": "a b c d e"}, token_budget=4), 4096, words)


def test_a_character_books_entries_become_the_personas_lore() -> None:
    card = {
        "spec": "chara_card_v2",
        "data": {
            "character_book": {
                "scan_depth": 3,
                "token_budget": 50,
                "entries": [
                    {"keys": ["dragon"], "content": "A dragon sleeps.", "insertion_order": 5, "enabled": True},
                    {"keys": [], "content": "Keyless, not constant: never fires."},
                    {"keys": ["moon"], "content": "Off.", "enabled": False},
                    {"keys": ["x"], "constant": True, "content": "Always.", "selective": True, "extensions": {}},
                ],
            }
        },
    }
    b = lore.book_from_card("hero", card)
    assert b is not None and (b.id, b.personas, b.scan_depth, b.token_budget) == ("card-hero", ("hero",), 3, 50)
    assert chosen(b, "the dragon") == ["Always.", "A dragon sleeps."]
    assert chosen(b, "the moon") == ["Always."]
    assert lore.book_from_card("hero", {"spec": "chara_card_v2", "data": {}}) is None


def test_lore_files_load_apply_changes_keep_the_last_good_and_go_away(tmp_path: Path) -> None:
    registry = lore.LoreRegistry()
    files = lore.LoreFiles(registry, tmp_path, lambda b: None)
    path = tmp_path / "world.toml"
    path.write_text('personas = ["greta"]\n[[entries]]\nkeys = ["wolves"]\ncontent = "Wolves."\n')
    assert files.sync_all() == 1
    assert [b.id for b in registry.for_persona("greta")] == ["world"]
    assert registry.get("world").source == str(path.resolve())  # type: ignore[union-attr]
    path.write_text('personas = ["greta"]\n[[entries]]\ncontent = "no keys"\n')
    assert not files.apply(path.resolve())
    assert "entries[0] has no keys" in files.errors[str(path.resolve())]
    assert registry.get("world") is not None  # the last good version stays
    path.unlink()
    files.apply(path.resolve())
    assert registry.get("world") is None and registry.for_persona("greta") == ()


def test_memory_ranking_mixes_relevance_importance_and_recency() -> None:
    old_relevant = MemoryHit(Memory("wolves took sheep", importance=3, id=1), relevance=5.0)
    new_trivial = MemoryHit(Memory("it rained", importance=1, id=3), relevance=0.0)
    important = MemoryHit(Memory("the mayor died", importance=10, id=2), relevance=0.0)
    assert [m.id for m in rank([new_trivial, important, old_relevant])] == [1, 2, 3]
    assert query_words("Have you seen the WOLVES near the mill?") == ["wolves", "seen", "near", "mill"]
