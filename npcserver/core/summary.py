"""The rolling summary: what was said in the turns that no longer fit in a Talk's prompt.

When a conversation's kept history moves on (``core.prompt.overflow_start``), the turns it left behind are
summarized by the model at a low temperature, together with the summary so far, in a background task that starts
after the reply is complete: a player's line never waits for it. The result is stored only if the conversation was
not reset or replaced meanwhile, and is rendered after the persona from the next line on. The game can read and
replace it (a small model summarizes poorly); the next rewrite then starts from the game's text.

A model that returns nothing usable still leaves a summary: the last lines of the turns, shortened, so the NPC keeps
some thread of what was said.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from npcserver.clock import now_ms
from npcserver.core.personas import LINE_BREAKS
from npcserver.core.types import Persona, Summary, Turn
from npcserver.engine.base import GenerationRequest, SamplingParams, TextDelta
from npcserver.errors import Aborted, NpcError

if TYPE_CHECKING:
    from npcserver.core.app import NpcCore

log = logging.getLogger(__name__)

TEMPERATURE = 0.2
MAX_TOKENS = 160
#: Most characters a summary keeps (older text goes first when a rewrite grows past it).
MAX_CHARS = 2000
#: Most turns one rewrite reads (the newest of those left behind).
MAX_TURNS = 40


def _flat(text: str, limit: int = 300) -> str:
    text = LINE_BREAKS.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summary_prompt(persona: Persona, previous: str, turns: Sequence[Turn]) -> str:
    npc = _flat(persona.display_name, 64) or "NPC"
    lines = "".join(
        f"{_flat(t.player_name, 64) or _flat(persona.player_name, 64) or 'Player'}: {_flat(t.player_line)}\n"
        f"{npc}: {_flat(t.npc_line)}\n"
        for t in turns
    )
    before = f"Summary so far: {_flat(previous, MAX_CHARS)}\n\n" if previous else ""
    return (
        f"{before}Conversation:\n{lines}\n"
        f"A short summary of the conversation with {npc}, in the third person, keeping names, promises and facts:\n"
    )


def fallback(previous: str, turns: Sequence[Turn]) -> str:
    """What a rewrite keeps when the model wrote nothing: the summary so far and the last lines, shortened."""
    recent = " ".join(f"{_flat(t.player_line, 80)} / {_flat(t.npc_line, 80)}." for t in turns[-3:])
    return _clip(f"{previous} {recent}".strip())


def _clip(text: str) -> str:
    return text if len(text) <= MAX_CHARS else "…" + text[-(MAX_CHARS - 1) :]


class Summarizer:
    """Background summary rewrites, one at a time per conversation."""

    def __init__(self, core: NpcCore) -> None:
        self.core = core
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    def schedule(self, persona: Persona, key: tuple[str, str], cut: int, epoch: int) -> None:
        """Summarizes the turns before index ``cut`` (those the prompt leaves out now), unless one is under way."""
        running = self._tasks.get(key)
        if running is not None and not running.done():
            return
        task = asyncio.create_task(self._rewrite(persona, key, cut, epoch))
        self._tasks[key] = task
        task.add_done_callback(lambda t: self._tasks.pop(key, None) if self._tasks.get(key) is t else None)

    async def idle(self) -> None:
        """Waits for every rewrite under way (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def _rewrite(self, persona: Persona, key: tuple[str, str], cut: int, epoch: int) -> None:
        try:
            stored = await asyncio.to_thread(self.core.store.get_summary, *key)
            start = stored.through if stored is not None else 0
            if start >= cut:
                return
            turns = (await asyncio.to_thread(self.core.store.load_turns, *key))[max(start, cut - MAX_TURNS) : cut]
            previous = stored.text if stored is not None else ""
            text = await self._generate(persona, previous, turns)
            summary = Summary(_clip(text) if text else fallback(previous, turns), through=cut, update_time_ms=now_ms())
            await asyncio.to_thread(self.core.store.put_summary, *key, summary, epoch=epoch)
            log.info("summary of %s/%s rewritten through turn %d", *key, cut)
        except Aborted:
            pass  # reset or replaced meanwhile: the old turns' summary is not wanted
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("summary rewrite of %s/%s failed", *key)

    async def _generate(self, persona: Persona, previous: str, turns: Sequence[Turn]) -> str:
        engine = self.core.engine
        info = engine.info
        prompt = summary_prompt(persona, previous, turns)
        ids = await asyncio.to_thread(engine.tokenize, prompt, add_bos=info.add_bos, special=False)
        room = info.context_size - MAX_TOKENS - 8
        if len(ids) > room:
            ids = ids[:1] + ids[len(ids) - room + 1 :] if info.add_bos else ids[-room:]
        params = SamplingParams(temperature=TEMPERATURE, top_p=0.9, max_tokens=MAX_TOKENS, seed=0, stop=("\n\n",))
        out: list[str] = []
        try:
            async for event in engine.generate(GenerationRequest(ids, params, request_id="summary")):
                if isinstance(event, TextDelta):
                    out.append(event.text)
        except NpcError as exc:
            log.warning("summary not generated (%s); keeping a shortened transcript instead", exc.message)
            return ""
        return " ".join("".join(out).split())
