"""Long-term memory per conversation: facts the game records (or the NPC proposes), recalled when they matter.

Recall for a line: the store returns candidates (full-text matches of the line's words, the newest memories, the
most important ones; see ``Store.search_memories``), each is scored by relevance, recency and importance, and the
best ones that fit the token budget enter the prompt, oldest first. The cost is that of an index lookup and a few
dozen candidates, however many memories the conversation holds.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from npcserver.core.personas import LINE_BREAKS
from npcserver.errors import InvalidArgument
from npcserver.store.base import Memory, MemoryHit

if TYPE_CHECKING:
    from npcserver.core.app import NpcCore

MAX_MEMORY_CHARS = 1000
MIN_IMPORTANCE = 1
MAX_IMPORTANCE = 10
SOURCES = ("game", "model")
#: Words of the line used to search (the longest ones: short words match everything and say little).
MAX_QUERY_WORDS = 16

#: The best-ranked candidates tried against the budget (each is counted in tokens once, then cached).
MAX_RECALL_CANDIDATES = 32

#: Weights of a candidate's score (each part is in [0, 1]).
RELEVANCE_WEIGHT = 0.6
IMPORTANCE_WEIGHT = 0.25
RECENCY_WEIGHT = 0.15

_WORD = re.compile(r"\w{3,}")
_STOP = frozenset(
    re.findall(
        r"\w+",
        "the and for are but not you your with this that have has was were what when where who why how can will "
        "from they them then than there their its our out all any some just like into about would could should "
        "been being did does doing his her him she",
    )
)


def check_memory(memory: Memory, where: str = "memory") -> None:
    if not memory.text.strip():
        raise InvalidArgument(f"{where}.text is empty: say what the NPC should remember", param="memory")
    if len(memory.text) > MAX_MEMORY_CHARS:
        raise InvalidArgument(
            f"{where}.text has {len(memory.text)} characters; the limit is {MAX_MEMORY_CHARS}", param="memory"
        )
    if not MIN_IMPORTANCE <= memory.importance <= MAX_IMPORTANCE:
        raise InvalidArgument(
            f"{where}.importance is {memory.importance}; use {MIN_IMPORTANCE} (trivia) to {MAX_IMPORTANCE} "
            "(life-changing)",
            param="memory",
        )
    if memory.source not in SOURCES:
        raise InvalidArgument(f"{where}.source is {memory.source!r}; use one of {', '.join(SOURCES)}", param="memory")


def query_words(line: str) -> list[str]:
    words = dict.fromkeys(w for w in _WORD.findall(line.lower()) if w not in _STOP)
    return sorted(words, key=len, reverse=True)[:MAX_QUERY_WORDS]


def rank(hits: list[MemoryHit]) -> list[Memory]:
    """Candidates best first: relevance (relative to the best match), importance, and recency (by age rank)."""
    if not hits:
        return []
    best = max(h.relevance for h in hits) or 1.0
    by_age = sorted(hits, key=lambda h: h.memory.id, reverse=True)
    recency = {h.memory.id: 1.0 - i / len(by_age) for i, h in enumerate(by_age)}

    def score(h: MemoryHit) -> float:
        return (
            RELEVANCE_WEIGHT * h.relevance / best
            + IMPORTANCE_WEIGHT * h.memory.importance / MAX_IMPORTANCE
            + RECENCY_WEIGHT * recency[h.memory.id]
        )

    return [h.memory for h in sorted(hits, key=score, reverse=True)]


def render(memories: list[Memory]) -> str:
    return "".join(f"[Memory: {LINE_BREAKS.sub(' ', m.text).strip()}]\n" for m in memories)


def recall(core: NpcCore, persona_id: str, conversation_id: str, line: str, budget: int) -> str:
    """The memories for this line as prompt text, within ``budget`` tokens (blocking: run it in a thread)."""
    hits = core.store.search_memories(persona_id, conversation_id, query_words(line))
    chosen: list[Memory] = []
    used = 0
    count = core.lore.counter(lambda t: len(core.engine.tokenize(t, add_bos=False, special=False)))
    for m in rank(hits)[:MAX_RECALL_CANDIDATES]:
        n = count(f"Memory: {m.text}")
        if used + n > budget:
            continue
        chosen.append(m)
        used += n
    chosen.sort(key=lambda m: m.id)  # as they happened
    return render(chosen)
