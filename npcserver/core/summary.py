"""The rolling summary: what was said in the turns that no longer fit in a Talk's prompt.

The kept history moves on in steps (``core.prompt.overflow_start``), and the next step's start is known well before
it is taken (``core.prompt.next_cut``). So the turns the next step will leave out are summarized ahead, by the model
at a low temperature together with the summary so far, in a background task that starts after a reply is complete.
The result is stored only if the conversation was not reset or replaced meanwhile. A Talk's prompt shows the summary
that was current when its kept history last moved, and changes it only at the next move (``NpcCore`` remembers what
it showed), so the lines in between extend the cached prompt instead of reading it again when a summary lands. No
line waits for a summary: one that is not ready at a move (a player faster than the model, or turns imported without
a summary) shows the one stored, and catches up at the next move. The engine reads a summary's prompt only while no
player's prompt is being read (``GenerationRequest.background``). The game can read and replace the summary (a small
model summarizes poorly; a save game carries it); the next rewrite then starts from the game's text, and the next
line shows it.

A model that returns nothing usable still leaves a summary: the last lines of the turns, shortened, so the NPC keeps
some thread of what was said.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from npcserver.clock import now_ms
from npcserver.core.memory import check_memory
from npcserver.core.personas import LINE_BREAKS
from npcserver.core.structured import compile_format_async
from npcserver.core.types import Memory, Persona, ResponseFormat, Summary, Turn
from npcserver.engine.base import GenerationRequest, SamplingParams, TextDelta
from npcserver.errors import Aborted, InvalidArgument, NpcError, ResourceExhausted

if TYPE_CHECKING:
    from npcserver.core.app import NpcCore

log = logging.getLogger(__name__)

TEMPERATURE = 0.2
MAX_TOKENS = 160
#: Most characters a summary keeps (older text goes first when a rewrite grows past it).
MAX_CHARS = 2000
#: Most turns one rewrite reads (the newest of those left behind).
MAX_TURNS = 40
PROPOSAL_MAX_TOKENS = 120
#: What a model's memory proposal looks like (enforced while sampling).
PROPOSAL_SCHEMA = {
    "type": "object",
    "properties": {
        "memories": {
            "type": "array",
            # At least one: a small model asked for "none if nothing matters" nearly always says none; the
            # importance it gives lets recall pass over trivia.
            "minItems": 1,
            "maxItems": 2,
            "items": {
                "type": "object",
                "properties": {
                    "text": {"type": "string", "minLength": 8, "maxLength": 200},
                    "importance": {"type": "integer", "minimum": 1, "maximum": 10},
                },
                "required": ["text", "importance"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["memories"],
    "additionalProperties": False,
}


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
        self._proposals: dict[tuple[str, str], asyncio.Task[None]] = {}

    def schedule(self, persona: Persona, key: tuple[str, str], cut: int, epoch: int) -> None:
        """Summarizes the turns before index ``cut``, unless a rewrite is under way."""
        running = self._tasks.get(key)
        if running is not None and not running.done():
            return
        task = asyncio.create_task(self._rewrite(persona, key, cut, epoch))
        self._tasks[key] = task
        task.add_done_callback(lambda t: self._tasks.pop(key, None) if self._tasks.get(key) is t else None)

    async def idle(self) -> None:
        """Waits for every rewrite and proposal under way (tests, shutdown)."""
        while self._tasks or self._proposals:
            await asyncio.gather(*self._tasks.values(), *self._proposals.values(), return_exceptions=True)

    def propose(self, persona: Persona, key: tuple[str, str], player_line: str, npc_line: str) -> None:
        """Lets the model propose memories of the exchange just stored, unless a proposal is under way (a busy
        conversation skips some exchanges rather than queueing work behind its lines)."""
        running = self._proposals.get(key)
        if running is not None and not running.done():
            return
        task = asyncio.create_task(self._propose(persona, key, player_line, npc_line))
        self._proposals[key] = task
        task.add_done_callback(lambda t: self._proposals.pop(key, None) if self._proposals.get(key) is t else None)

    async def _propose(self, persona: Persona, key: tuple[str, str], player_line: str, npc_line: str) -> None:
        try:
            compiled = await compile_format_async(ResponseFormat("json_schema", PROPOSAL_SCHEMA, "memories"))
            npc = _flat(persona.display_name, 64) or "NPC"
            player = _flat(persona.player_name, 64) or "Player"
            prompt = (
                f"{player}: {_flat(player_line)}\n{npc}: {_flat(npc_line)}\n\n"
                f"The fact from this exchange that {npc} should remember later, as JSON with an importance from 1 "
                "(trivia) to 10:\n"
            )
            text = await self._run(prompt, compiled.grammar, PROPOSAL_MAX_TOKENS)
            try:
                items = json.loads(text)["memories"] if text else []
            except (ValueError, KeyError, TypeError):
                log.info("memory proposal of %s/%s is not JSON (cut off?): %r", *key, text[:200])
                return
            for item in items:
                # Sampling grammars do not bound numbers: the importance is clamped to the scale.
                importance = min(max(int(item["importance"]), 1), 10)
                memory = Memory(str(item["text"]).strip(), importance, source="model")
                try:
                    check_memory(memory)
                    await asyncio.to_thread(self.core.store.add_memory, *key, memory, limit=self.core.max_memories)
                except ResourceExhausted:
                    log.info("memories of %s/%s are full: the model's proposal is not kept", *key)
                    return
                except InvalidArgument:
                    continue
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("memory proposal of %s/%s failed", *key)

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
        return " ".join((await self._run(summary_prompt(persona, previous, turns), None, MAX_TOKENS)).split())

    async def _run(self, prompt: str, grammar: str | None, max_tokens: int) -> str:
        engine = self.core.engine
        info = engine.info
        ids = await asyncio.to_thread(engine.tokenize, prompt, add_bos=info.add_bos, special=False)
        room = info.context_size - max_tokens - 8
        if len(ids) > room:
            ids = ids[:1] + ids[len(ids) - room + 1 :] if info.add_bos else ids[-room:]
        stop = () if grammar else ("\n\n",)
        params = SamplingParams(temperature=TEMPERATURE, top_p=0.9, max_tokens=max_tokens, seed=0, stop=stop)
        out: list[str] = []
        try:
            request = GenerationRequest(ids, params, grammar=grammar, request_id="summary", background=True)
            async for event in engine.generate(request):
                if isinstance(event, TextDelta):
                    out.append(event.text)
        except NpcError as exc:
            log.warning("background generation failed (%s)", exc.message)
            return ""
        return "".join(out)
