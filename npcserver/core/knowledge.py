"""What a Talk's prompt knows besides persona and history: lore, the rolling summary, memories, the game's state.

Shared by NpcCore.stream_talk and the prompt inspector, so both build the same prompt. ``plan`` runs before the
history is loaded (it fixes what every line of the conversation carries, so the history's room stays the same from
line to line); ``for_line`` chooses what this line brings once the shown turns are known.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from npcserver.clock import now_ms
from npcserver.core import lore as lorelib
from npcserver.core.memory import check_memory, recall
from npcserver.core.personas import LINE_BREAKS
from npcserver.core.prompt import Knowledge
from npcserver.core.types import Memory, Persona, Summary, TalkRequest, Turn
from npcserver.errors import AlreadyExists, InvalidArgument, ManagedByFile, NotFound, NpcError

if TYPE_CHECKING:
    from npcserver.core.app import NpcCore

log = logging.getLogger(__name__)

#: Facts of the game's state one line may carry, and their length.
MAX_GAME_STATE = 32
MAX_FACT_CHARS = 500


@dataclass(frozen=True)
class Plan:
    books: tuple[lorelib.LoreBook, ...]
    world: str
    #: The stored summary's text; in ``NpcCore.talk_prompt``, the rendered one the prompt shows.
    summary: str
    #: Tokens kept for this line's lore and memories (their budgets less what is always in).
    reserved: int
    #: The turns before this index are in the stored summary.
    summary_through: int = 0
    #: Whether the conversation has memories to recall.
    memories: bool = False
    #: Tokens the history may take (set by ``NpcCore.talk_prompt``).
    room: int = 0


def check_game_state(facts: Sequence[str]) -> None:
    if len(facts) > MAX_GAME_STATE:
        raise InvalidArgument(
            f"game_state has {len(facts)} facts; a line may carry {MAX_GAME_STATE}", param="game_state"
        )
    for i, fact in enumerate(facts):
        if not fact.strip():
            raise InvalidArgument(f"game_state[{i}] is empty: send a fact such as 'it is night'", param="game_state")
        if len(fact) > MAX_FACT_CHARS:
            raise InvalidArgument(
                f"game_state[{i}] has {len(fact)} characters; the limit is {MAX_FACT_CHARS}", param="game_state"
            )


def _flat(text: str) -> str:
    return LINE_BREAKS.sub(" ", text).strip()


def render_summary(text: str) -> str:
    return f"[Earlier in this conversation: {_flat(text)}]\n"


def summary_room(context_size: int) -> int:
    """Tokens a Talk's prompt keeps for the rolling summary: enough for a model rewrite (core.summary.MAX_TOKENS)."""
    return min(192, context_size // 16)


def fit_summary(core: NpcCore, text: str, room: int) -> str:
    """``text`` rendered for the prompt within ``room`` tokens: a longer one (the game's, or fallbacks that grew)
    keeps its newest part (blocking: run it in a thread)."""
    text = _flat(text)
    if not text:
        return ""

    def size(t: str) -> int:
        return len(core.engine.tokenize(render_summary(t), add_bos=False, special=False))

    if size(text) <= room:
        return render_summary(text)
    lo, hi = 0, len(text)  # the shortest cut from the start whose rest fits
    while lo < hi:
        mid = (lo + hi) // 2
        if size("…" + text[mid:]) <= room:
            hi = mid
        else:
            lo = mid + 1
    return render_summary("…" + text[lo:]) if lo < len(text) else ""


def books_for(core: NpcCore, persona: Persona) -> tuple[lorelib.LoreBook, ...]:
    books = list(core.lore.for_persona(persona.id))
    card = lorelib.book_from_card(persona.id, persona.card)
    if card is not None and core.lore.get(card.id) is None:
        books.append(card)
    return tuple(books)


def plan(core: NpcCore, persona: Persona, request: TalkRequest) -> Plan:
    """The parts every line of this conversation carries (blocking: run it in a thread)."""
    books = books_for(core, persona)
    count = core.lore.counter(lambda t: len(core.engine.tokenize(t, add_bos=False, special=False)))
    chosen = lorelib.select(books, (), "", count)  # constant entries only: nothing to match
    world = lorelib.render_entries(chosen.world)
    # Each book's budget less its constant entries (already in ``world``), for books that can match at all.
    reserved = sum(
        max(b.token_budget - sum(count(e.content) for e in b.entries if e.constant and e.enabled), 0)
        for b in books
        if any(not e.constant for e in b.entries)
    )
    stored = core.store.get_summary(request.persona_id, request.conversation_id)
    summary = stored.text if stored is not None else ""
    # Room for memories only in a conversation that has some: the others keep their whole history room.
    memories = 0
    if core.memory_budget > 0 and core.store.list_memories(request.persona_id, request.conversation_id, 0, 1):
        memories = core.memory_budget
    return Plan(books, world, summary, reserved + memories, stored.through if stored is not None else 0, memories > 0)


def for_line(core: NpcCore, plan_: Plan, request: TalkRequest, shown: Sequence[Turn], line: str) -> Knowledge:
    """This line's knowledge: matched lore, recalled memories, the game's state (blocking: run it in a thread)."""
    count = core.lore.counter(lambda t: len(core.engine.tokenize(t, add_bos=False, special=False)))
    recent = [f"{t.player_line}\n{t.npc_line}" for t in shown]
    chosen = lorelib.select(plan_.books, recent, line, count)
    memories = ""
    if core.memory_budget > 0 and plan_.memories:
        memories = recall(core, request.persona_id, request.conversation_id, line, core.memory_budget)
    state = "".join(f"[Now: {_flat(f)}]\n" for f in request.game_state)
    return Knowledge(
        world=plan_.world,
        summary=plan_.summary,
        lore=lorelib.render_entries(chosen.matched),
        memories=memories,
        game_state=state,
    )


# --- operations (the service layer calls these) --------------------------------------------------------------------

MAX_SUMMARY_CHARS = 8000
MAX_MEMORY_PAGE = 1000


async def list_lore_books(core: NpcCore) -> list[lorelib.LoreBook]:
    return core.lore.list()


async def get_lore_book(core: NpcCore, book_id: str) -> lorelib.LoreBook:
    lorelib.check_book_id(book_id, "book_id")
    book = core.lore.get(book_id)
    if book is None:
        raise NotFound(f"lore book {book_id!r} does not exist (see ListLoreBooks)", param="book_id")
    return book


async def put_lore_book(core: NpcCore, raw: dict[str, Any], *, allow_existing: bool) -> lorelib.LoreBook:
    """Creates or replaces an API lore book: checked whole (entries, budgets against the context) before anything is
    written."""
    raw = {k: v for k, v in raw.items() if k != "source"}
    book = await asyncio.to_thread(lorelib.parse_book, raw)
    current = core.lore.get(book.id)
    if current is not None and current.source:
        raise ManagedByFile(
            f"lore book {book.id!r} is defined by the lore file {current.source}: edit that file instead",
            param="book_id",
        )
    await asyncio.to_thread(core.check_lore_book, book)
    body = lorelib.book_to_dict(book)
    stored = await asyncio.to_thread(
        core.store.put_lore_book, book.id, body, mode="upsert" if allow_existing else "create"
    )
    if not stored:
        raise AlreadyExists(f"lore book {book.id!r} already exists: set allow_existing to replace it", param="book_id")
    core.lore.put(book)
    return book


async def delete_lore_book(core: NpcCore, book_id: str) -> None:
    book = await get_lore_book(core, book_id)
    if book.source:
        raise ManagedByFile(
            f"lore book {book_id!r} is defined by the lore file {book.source}: delete that file instead",
            param="book_id",
        )
    await asyncio.to_thread(core.store.delete_lore_book, book_id)
    core.lore.remove(book_id)


def load_stored_books(core: NpcCore) -> int:
    """The API's lore books from the store into the registry (at startup); a lore file's book of the same id wins."""
    after, loaded = "", 0
    while True:
        rows = core.store.list_lore_books(after, 500)
        for row in rows:
            try:
                book = lorelib.parse_book(row)
            except NpcError as exc:
                log.error("stored lore book %r not loaded: %s", row.get("id"), exc.message)
                continue
            current = core.lore.get(book.id)
            if current is None or not current.source:
                core.lore.put(book)
                loaded += 1
        if len(rows) < 500:
            return loaded
        after = str(rows[-1]["id"])


async def add_memory(core: NpcCore, persona_id: str, conversation_id: str, memory: Memory) -> Memory:
    if memory.importance == 0:
        memory = replace(memory, importance=5)
    if not memory.source:
        memory = replace(memory, source="game")
    check_memory(memory)
    await core._conversation_key(persona_id, conversation_id)
    return await asyncio.to_thread(core.store.add_memory, persona_id, conversation_id, memory, limit=core.max_memories)


async def list_memories(
    core: NpcCore, persona_id: str, conversation_id: str, page_size: int, page_token: str
) -> tuple[list[Memory], str]:
    if not 0 <= page_size <= MAX_MEMORY_PAGE:
        raise InvalidArgument(f"page_size is {page_size}; use 1 to {MAX_MEMORY_PAGE} (0: 100)", param="page_size")
    if page_token and not page_token.isdigit():
        raise InvalidArgument("page_token is not one this server returned: pass next_page_token", param="page_token")
    size = page_size or 100
    await core._conversation_key(persona_id, conversation_id)
    rows = await asyncio.to_thread(
        core.store.list_memories, persona_id, conversation_id, int(page_token or 0), size + 1
    )
    more = len(rows) > size
    rows = rows[:size]
    return rows, str(rows[-1].id) if more else ""


async def delete_memory(core: NpcCore, persona_id: str, conversation_id: str, memory_id: int) -> None:
    await core._conversation_key(persona_id, conversation_id)
    if not await asyncio.to_thread(core.store.delete_memory, persona_id, conversation_id, memory_id):
        raise NotFound(
            f"conversation {conversation_id!r} has no memory {memory_id} (see ListMemories)", param="memory_id"
        )


async def get_summary(core: NpcCore, persona_id: str, conversation_id: str) -> Summary:
    await core._conversation_key(persona_id, conversation_id)
    found = await asyncio.to_thread(core.store.get_summary, persona_id, conversation_id)
    return found if found is not None else Summary("")


def check_summary(summary: Summary, where: str = "summary") -> None:
    if len(summary.text) > MAX_SUMMARY_CHARS:
        raise InvalidArgument(
            f"{where}.text has {len(summary.text)} characters; the limit is {MAX_SUMMARY_CHARS}", param="summary"
        )
    if summary.through < 0:
        raise InvalidArgument(f"{where}.through_turn must not be negative, got {summary.through}", param="summary")


async def set_summary(core: NpcCore, persona_id: str, conversation_id: str, summary: Summary) -> Summary:
    """The game's own summary (a small model summarizes poorly): replaces the model's; ``through`` 0 means all turns
    so far."""
    check_summary(summary)
    key = await core._conversation_key(persona_id, conversation_id)
    if summary.text and summary.through == 0:
        history = await asyncio.to_thread(core.store.load_recent, *key, 0)
        summary = replace(summary, through=history.after)
    stamped = replace(summary, update_time_ms=now_ms())
    await asyncio.to_thread(core.store.put_summary, *key, stamped, epoch=None)
    core.forget_shown_summaries(*key)  # the game's text shows from the next line on
    return stamped if summary.text else Summary("")
