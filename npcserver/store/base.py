"""The ``Store`` protocol: what the core needs from persistence, and what every backend must guarantee.

The core depends on this module only; the composition root (``npcserver.server``) picks a backend. Backends are
checked by one contract suite (``tests/store/test_store_contract.py``), which every backend must pass.

Data model:

- A **persona** is an opaque JSON object (``PersonaBody``) stored under its id. The store never interprets it; the
  core owns its shape (``npcserver.core.personas``).
- A **conversation** is the ordered list of ``Turn`` records under ``(persona_id, conversation_id)``. Each turn has an
  index: 0 for the oldest, then 1, 2, … with no gaps. Reset and replace renumber from 0.
- Writing turns for a persona that is not stored is the caller's mistake (the core always checks first); a backend
  may accept it or refuse it.

Semantics every backend keeps:

- **One call, one transaction.** Each method either does all of its work or, when it raises, none of it. Nobody ever
  observes a half-done call: a reader sees a conversation before or after a replace, never a mix.
- **Thread safety.** Methods are blocking and may be called from many threads, processes and machines at once (the
  core runs them through ``asyncio.to_thread``; replicas share one database).
- **Turns in order.** An append states where it goes: ``after``, the number of turns its caller saw, and ``epoch``,
  the epoch it saw them in (both from ``load_history``). It is stored only if the conversation is still exactly that:
  otherwise it raises ``npcserver.errors.Aborted`` (retryable: load again and decide again) and writes nothing. So
  two writers racing on one conversation never interleave or duplicate turns: exactly one wins each index. Every
  reset and every replace moves the conversation to a new epoch, so an append based on what was there before fails
  even when the new conversation has grown back to the same length. A conversation never reset or replaced is in
  epoch 0; the epochs that resets and replaces start are never reused within a database.
- **Durability.** What a method wrote before it returned is there when the same data is opened again, even if the
  process was killed rather than closed.
- **Text.** Ids and lines are any Unicode text (newlines, quotes, emoji included) and come back equal. Two kinds of
  string are not text and a backend may refuse them: lone surrogates (not encodable as UTF-8) and NUL characters
  (PostgreSQL's text type has none); callers must reject those before they reach the store.
- **Ordering.** Personas list by id in code-point order (a backend with collations uses a binary one, such as
  PostgreSQL's ``COLLATE "C"``), so pages do not depend on a locale.

- **Token counts.** Each turn keeps a token count (``Turn.tokens``, the writer's; when the writer gives 0 the store
  keeps ``estimate_tokens``), and the running sum of the counts before it, so ``load_recent`` reads only the newest
  turns that fit a token budget: a line costs the same at 20 turns and at 20,000. The counts are the writer's
  measure (the core's tokenizer at the time); the store only adds them up.
- **Request ids.** A turn may carry the id of the Talk that made it (``Turn.request_id``, AIP-155). Within one
  conversation an id is stored at most once: an append whose id is already there raises ``Aborted`` (code
  ``duplicate_request``) and writes nothing, and ``find_turn`` returns the stored turn, so a retried Talk replays it
  instead of generating again, even when two replicas race on the id. Replace stores turns without ids.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from npcserver.errors import Aborted

#: A persona as stored: a JSON object (str keys; values JSON-serializable). The store returns an equal, fresh dict.
PersonaBody = dict[str, Any]

#: ``create`` only when absent, ``update`` only when present, ``upsert`` either way.
PutMode = Literal["create", "update", "upsert"]
PUT_MODES: tuple[PutMode, ...] = ("create", "update", "upsert")


@dataclass(frozen=True)
class Turn:
    """One stored turn: the player's line and the NPC's reply."""

    player_line: str
    npc_line: str
    #: When the turn was made, in ms since the epoch (``npcserver.clock.now_ms``). 0 on write: the store stamps it.
    create_time_ms: int = 0
    #: The name the player spoke under ("" for the persona's default).
    player_name: str = ""
    #: The turn's size in tokens as the writer counted it (0 on write: the store keeps ``estimate_tokens``). Not part
    #: of a turn's identity: equal turns may be counted differently by different models.
    tokens: int = field(default=0, compare=False)
    #: The id of the Talk that made this turn ("" for none): a retry with the same id finds it (``find_turn``).
    request_id: str = field(default="", compare=False)


def estimate_tokens(player_line: str, npc_line: str, player_name: str) -> int:
    """A turn's token count when its writer gave none: about three characters a token, plus the speaker labels.
    Backends compute the same in SQL for rows stored before counts existed."""
    return (len(player_line) + len(npc_line) + len(player_name)) // 3 + 6


def turn_tokens(turn: Turn) -> int:
    """The token count a store keeps for ``turn``."""
    return turn.tokens if turn.tokens > 0 else estimate_tokens(turn.player_line, turn.npc_line, turn.player_name)


def imported_turns(turns: Sequence[Turn]) -> Iterator[tuple[int, Turn, int, int]]:
    """``(index, turn, tokens, tokens_before)`` for turns stored from 0, as an import stores them (both backends)."""
    before = 0
    for i, t in enumerate(turns):
        tokens = turn_tokens(t)
        yield i, t, tokens, before
        before += tokens


@dataclass(frozen=True)
class History:
    """A conversation as one writer saw it: what to pass to ``append_turn`` to store the turn that follows."""

    turns: list[Turn]
    #: Changes on every reset and replace (0 for a conversation never reset or replaced).
    epoch: int
    #: The index of ``turns[0]``: ``load_recent`` leaves the older turns out (``load_history``: 0).
    first: int = 0
    #: The summed token counts of the turns left out (those before ``first``).
    tokens_before: int = 0

    @property
    def after(self) -> int:
        """The index the next turn gets: the number of turns in the conversation."""
        return self.first + len(self.turns)


@dataclass(frozen=True)
class Summary:
    """A conversation's rolling summary: what was said in the turns before index ``through``."""

    text: str
    through: int = 0
    update_time_ms: int = 0


@dataclass(frozen=True)
class Memory:
    """A fact a conversation remembers ("the player returned the ring"). ``id`` is the store's (0 on write)."""

    text: str
    #: 1 (trivia) to 10 (life-changing).
    importance: int = 5
    create_time_ms: int = 0
    #: "game" (recorded by the game) or "model" (proposed by the NPC's reply).
    source: str = "game"
    id: int = field(default=0, compare=False)


@dataclass(frozen=True)
class MemoryHit:
    """A memory found for a query, and how well its text matches (0 when it was found for recency or importance)."""

    memory: Memory
    relevance: float


#: The most memories ``search_memories`` returns per kind (matches, newest, most important).
SEARCH_CANDIDATES = 64


class Store(Protocol):
    """Personas and conversation turns. See the module docstring for the guarantees every method keeps."""

    def close(self) -> None:
        """Releases connections and files. No other method is called afterwards; calling close again is harmless."""
        ...

    # --- personas ------------------------------------------------------------------------------------------------

    def get_persona(self, persona_id: str) -> PersonaBody | None:
        """The stored body, or None when there is no such persona."""
        ...

    def put_persona(self, persona_id: str, body: PersonaBody, *, mode: PutMode) -> bool:
        """Writes a persona's body, replacing the whole of any previous body.

        Returns False, writing nothing, when the mode's precondition fails: ``create`` and the persona exists, or
        ``update`` and it does not. Raises ValueError for an unknown mode, and TypeError or ValueError for a body that
        is not JSON (NaN and infinities included), before writing anything.
        """
        ...

    def list_personas(self, after: str, limit: int) -> list[PersonaBody]:
        """Up to ``limit`` bodies of the personas whose id sorts after ``after`` ("" for the first page), by id.

        Paging is keyset paging: pass the last id of a page as ``after`` to get the next one. ``limit`` 0 returns
        nothing; a negative limit raises ValueError.
        """
        ...

    def delete_persona(self, persona_id: str) -> int | None:
        """Deletes a persona and all of its conversations, in one transaction.

        Returns how many conversations (distinct conversation ids with at least one turn) went with it, or None when
        there was no such persona (then nothing is deleted).
        """
        ...

    # --- conversations -------------------------------------------------------------------------------------------

    def load_turns(self, persona_id: str, conversation_id: str) -> list[Turn]:
        """All turns of a conversation, oldest first (list position = turn index). Empty when it has none."""
        ...

    def load_history(self, persona_id: str, conversation_id: str) -> History:
        """All turns of a conversation (as ``load_turns``) and its epoch, read in one transaction."""
        ...

    def load_recent(self, persona_id: str, conversation_id: str, max_tokens: int) -> History:
        """The newest turns whose token counts add up to at most ``max_tokens`` (possibly none), oldest first, with
        the epoch, read in one transaction. ``first`` is the index of the first turn returned and ``tokens_before``
        the summed counts of the turns before it, so ``after`` is the whole conversation's length. Reads only the
        turns returned, however long the conversation. ValueError for a negative ``max_tokens``.
        """
        ...

    def append_turn(self, persona_id: str, conversation_id: str, turn: Turn, *, after: int, epoch: int) -> int:
        """Stores ``turn`` at index ``after`` if the conversation is in ``epoch`` and has exactly ``after`` turns.

        Returns the index (``after``). Raises ``npcserver.errors.Aborted``, writing nothing, when another writer
        appended first, or the conversation was reset or replaced since (its epoch changed), or a turn with the same
        non-empty ``request_id`` is already stored (code ``duplicate_request``); ValueError for a negative ``after``.
        """
        ...

    def find_turn(self, persona_id: str, conversation_id: str, request_id: str) -> tuple[int, Turn] | None:
        """The index and turn stored with ``request_id`` in this conversation, or None (always None for "")."""
        ...

    def reset(self, persona_id: str, conversation_id: str) -> int:
        """Deletes every turn of a conversation (and its summary and memories) and starts a new epoch. Returns how
        many turns were deleted."""
        ...

    def replace_turns(
        self,
        persona_id: str,
        conversation_id: str,
        turns: list[Turn],
        *,
        summary: Summary | None = None,
        memories: Sequence[Memory] = (),
    ) -> int:
        """Replaces a whole conversation with ``turns`` (indexes 0…n-1) in a new epoch. Returns how many were stored.

        An empty list leaves the conversation empty. If any turn cannot be stored, the call raises and the old
        conversation is untouched. The conversation's summary and memories are replaced by ``summary`` and
        ``memories`` in the same transaction (an export restored whole).
        """
        ...

    # --- knowledge: lore books, summaries, memories ----------------------------------------------------------------

    def get_lore_book(self, book_id: str) -> PersonaBody | None:
        """A lore book's stored body (a JSON object), or None."""
        ...

    def put_lore_book(self, book_id: str, body: PersonaBody, *, mode: PutMode) -> bool:
        """Writes a lore book; the modes are those of ``put_persona``."""
        ...

    def list_lore_books(self, after: str, limit: int) -> list[PersonaBody]:
        """Lore book bodies by id after ``after``, as ``list_personas``."""
        ...

    def delete_lore_book(self, book_id: str) -> bool:
        """Deletes a lore book; False when there was none."""
        ...

    def get_summary(self, persona_id: str, conversation_id: str) -> Summary | None:
        """The conversation's summary, or None (reset, replace and persona deletion remove it)."""
        ...

    def put_summary(self, persona_id: str, conversation_id: str, summary: Summary, *, epoch: int | None) -> None:
        """Writes the summary (an empty text removes it). With ``epoch``, only while the conversation is still in
        that epoch: otherwise ``Aborted`` (code ``epoch``) and nothing is written (a reset won meanwhile)."""
        ...

    def add_memory(self, persona_id: str, conversation_id: str, memory: Memory, *, limit: int) -> Memory:
        """Stores a memory and returns it with its id. ``npcserver.errors.ResourceExhausted``, writing nothing,
        when the conversation already holds ``limit`` memories."""
        ...

    def list_memories(self, persona_id: str, conversation_id: str, after_id: int, limit: int) -> list[Memory]:
        """Memories with an id above ``after_id``, oldest first (keyset paging)."""
        ...

    def delete_memory(self, persona_id: str, conversation_id: str, memory_id: int) -> bool:
        """Deletes one memory; False when the conversation has no such memory."""
        ...

    def search_memories(self, persona_id: str, conversation_id: str, words: list[str]) -> list[MemoryHit]:
        """Candidates for recall: the memories whose text best matches any of ``words`` (full-text relevance,
        higher is better), the newest and the most important ones, each at most ``SEARCH_CANDIDATES``, without
        repeats. Reads an index, not the whole conversation."""
        ...


def check_position(
    persona_id: str,
    conversation_id: str,
    *,
    count: int,
    current_epoch: int,
    after: int,
    epoch: int,
    duplicate: bool = False,
) -> None:
    """Raises ``Aborted`` unless an append that saw ``after`` turns in ``epoch`` still fits the stored conversation
    (and ``duplicate``, its request id is already stored, is False).

    For backends: call it under the lock or transaction that then stores the turn.
    """
    where = f"conversation {conversation_id!r} of persona {persona_id!r}"
    if duplicate:
        raise Aborted(
            f"{where} already has the turn of this request id; retry the request to get it", code="duplicate_request"
        )
    if epoch != current_epoch:
        raise Aborted(f"{where} was reset or replaced while this turn was made; retry the request", code="epoch")
    if after != count:
        raise Aborted(
            f"{where} has {count} turns, not the {after} this turn was made after: another request stored a turn "
            "first; retry the request",
            code="turn_order",
        )
