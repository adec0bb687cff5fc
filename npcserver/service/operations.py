"""NpcService: the operations every door calls (gRPC, gRPC-Web, OpenAI REST, NPC REST).

A door parses its wire format into the core's request types, calls one method here, and writes the result back in
its own shape. Admission (``admit``: credentials into a Caller), each operation's role and scope rule (``access``)
and readiness are checked here the same way for every door, and the domain errors of ``npcserver.errors`` come out
unchanged for each door's one error map.

Adding an operation: a method on NpcService (the rule itself lives in the core), then one handler per door that
converts to and from the door's shapes. Nothing here imports grpc, an HTTP library or the generated protobuf code.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

from npcserver.core import knowledge, workbench
from npcserver.core.app import NpcCore
from npcserver.core.lore import LoreBook
from npcserver.core.types import (
    ChatRequest,
    Completion,
    Conversation,
    Memory,
    ModelCard,
    Persona,
    Preset,
    StreamEvent,
    Summary,
    TalkRequest,
)
from npcserver.core.workbench import Inspection
from npcserver.errors import InvalidArgument, NotFound, NotReady, NpcError
from npcserver.service.access import Caller, Role, admitted_caller, current_caller, set_current_caller
from npcserver.service.auth import Gate
from npcserver.service.ops import Ops, note
from npcserver.service.streams import final_of

#: Conversations one BatchChatCompletions call may carry, and choices one chat completion may ask for (n).
MAX_BATCH = 64
MAX_CHOICES = 16


def _naming(exc: NpcError, where: str) -> NpcError:
    """The error with the batch item it came from in its message and param, so the caller knows which to fix."""
    exc.message = f"{where}: {exc.message}"
    exc.args = (exc.message,)
    if exc.param:
        exc.param = f"{where}.{exc.param}" if where.startswith("conversations") else exc.param
    return exc


@dataclass(frozen=True)
class Health:
    """What a health check reports: whether the model serves, which one, and whether it is in memory now.

    A model that keep_alive unloaded still serves (``ready``): the next generation loads it again.
    """

    ready: bool
    model: str = ""
    loaded: bool = False
    #: Why a loaded server does not serve now (its event loop or engine is stuck: ``core.watchdog``), else "".
    problem: str = ""


class NpcService:
    """The door-facing operations over one NpcCore. Stateless apart from the core, so every door may hold its own."""

    def __init__(self, core: NpcCore, gate: Gate | None = None, ops: Ops | None = None) -> None:
        self.core = core
        self.gate = gate if gate is not None else Gate()
        #: Rate limits, metrics and the request log: one Ops for the whole server, shared by every door's service.
        self.ops = ops if ops is not None else Ops()

    # --- admission -----------------------------------------------------------------------------------------------

    def admit(self, authorization: str | None) -> Caller:
        """The one place credentials become a caller: every door passes its ``authorization`` value here before an
        operation. Raises Unauthenticated for a missing or invalid credential (when the server has any configured);
        the Caller becomes the current call's, whose role and scope each operation below checks."""
        caller = self.gate.authenticate(authorization)
        set_current_caller(caller)
        self.ops.admit(authorization, None if caller.via == "open" else f"{caller.via}:{caller.name}")
        return caller

    @property
    def caller(self) -> Caller:
        """The admitted caller of the running call (Unauthenticated if the door did not admit one)."""
        return current_caller(self.gate.open)

    def _require(self, role: Role, action: str) -> Caller:
        caller = self.caller
        caller.require(role, action)
        return caller

    @property
    def ready(self) -> bool:
        return self.core.residency.unloaded or bool(self.core.engine.ready)

    def require_model(self) -> None:
        """Raises NotReady while the model loads: operations that generate or describe the model need it."""
        if not self.ready:
            raise NotReady("the model is still loading; retry shortly (health reports ready once it has loaded)")

    def model_id(self) -> str:
        """The id of the loaded model (what every reply names)."""
        self._require(Role.PLAYER, "reading the model")
        self.require_model()
        return self.core.residency.info().id

    def health(self) -> Health:
        """Public: without an admitted caller on a server with credentials, only whether it is ready."""
        if not self.ready:
            return Health(ready=False)
        problem = self.core.watchdog.problem()
        if problem is not None:
            return Health(ready=False, problem=problem)
        if not self.gate.open and admitted_caller() is None:
            return Health(ready=True)
        residency = self.core.residency
        return Health(ready=True, model=residency.info().id, loaded=residency.loaded)

    @property
    def model_expires_at(self) -> float | None:
        """When keep_alive unloads the model (Unix seconds), or None while it stays loaded."""
        return self.core.residency.expires_at

    # --- models and presets --------------------------------------------------------------------------------------

    def list_models(self) -> list[ModelCard]:
        """The served model; ``loaded`` says whether it is in memory now (keep_alive may have unloaded it)."""
        self._require(Role.PLAYER, "listing models")
        self.require_model()
        residency = self.core.residency
        info = residency.info()
        try:
            size = os.path.getsize(info.path)
        except OSError:
            size = 0
        return [
            ModelCard(
                id=info.id,
                created=info.created,
                context_size=info.context_size,
                backend=info.backend,
                gpu_layers=info.gpu_layers,
                has_chat_template=info.chat_template is not None,
                extra=dict(info.extra),
                loaded=residency.loaded,
                file_bytes=size,
            )
        ]

    def get_model(self, model_id: str) -> ModelCard:
        for card in self.list_models():
            if card.id == model_id:
                return card
        raise NotFound(f"model {model_id!r} is not loaded (see ListModels)", param="model", code="model_not_found")

    def list_presets(self) -> list[Preset]:
        self._require(Role.PLAYER, "listing presets")
        return self.core.list_presets()

    @property
    def default_preset(self) -> str:
        return self.core.default_preset

    async def load_model(self, *, keep_alive_s: float | None = None) -> float:
        """Loads the model if keep_alive unloaded it, then applies ``keep_alive_s`` (0 unloads it). Returns the
        milliseconds the load took (0 when it was loaded)."""
        self._require(Role.DESIGNER, "loading or unloading the model")
        self.require_model()
        async with self.core.residency.hold(keep_alive_s) as load_ms:
            return load_ms

    # --- generation ----------------------------------------------------------------------------------------------

    async def chat(self, request: ChatRequest, *, keep_alive_s: float | None = None) -> Completion:
        """A whole chat completion."""
        return await final_of(self.stream_chat(request, keep_alive_s=keep_alive_s))

    async def stream_chat(
        self, request: ChatRequest, *, keep_alive_s: float | None = None
    ) -> AsyncIterator[StreamEvent]:
        """A chat completion as TextDelta events, then one Completion.

        ``keep_alive_s``: how long the model stays loaded after this request (see ``ModelResidency``). Free text
        outside any persona: the designer's playground, not a player's.
        """
        note(id=request.id, text=request.messages[-1].content if request.messages else "")
        self._require(Role.DESIGNER, "a chat completion (text outside any persona)")
        async for event in self._generate(lambda: self.core.stream_chat(request), keep_alive_s):
            yield event

    async def batch_chat(
        self, requests: Sequence[ChatRequest], *, keep_alive_s: float | None = None
    ) -> list[Completion]:
        """Several conversations at once (vLLM's ``LLM.chat``): one Completion per conversation, in order.

        They are submitted together, up to the engine's sequence count at a time, so the batching engine decodes them
        in the same steps; the rest follow as sequences free up instead of filling the queue other callers share.
        One conversation's error fails the call, its message and param naming ``conversations[i]``.
        """
        self._require(Role.DESIGNER, "a batch of chat completions (text outside any persona)")
        if not requests:
            raise InvalidArgument("conversations must not be empty: send at least one", param="conversations")
        if len(requests) > MAX_BATCH:
            raise InvalidArgument(
                f"conversations has {len(requests)} entries; at most {MAX_BATCH} are allowed in one call",
                param="conversations",
            )
        self.require_model()
        n_seq = getattr(self.core.engine, "n_seq", None)
        room = asyncio.Semaphore(n_seq if isinstance(n_seq, int) and n_seq > 0 else 4)

        async def one(i: int, request: ChatRequest) -> Completion:
            async with room:
                try:
                    return await self.chat(request, keep_alive_s=keep_alive_s)
                except NpcError as exc:
                    raise _naming(exc, f"conversations[{i}]") from None

        tasks = [asyncio.ensure_future(one(i, r)) for i, r in enumerate(requests)]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:  # the first error ends the call: the others stop generating now
                task.cancel()

    async def chat_choices(
        self, request: ChatRequest, n: int, *, keep_alive_s: float | None = None
    ) -> AsyncIterator[tuple[int, StreamEvent]]:
        """``n`` replies to one conversation (OpenAI's ``n``), generated together: (choice index, event) pairs as
        they come, each choice ending with its Completion. With a seed, choice i samples with seed + i, so the
        choices differ and the whole answer is still reproducible."""
        if not 1 <= n <= MAX_CHOICES:
            raise InvalidArgument(f"n is {n}; use 1 to {MAX_CHOICES} choices", param="n")
        if n == 1:
            async with aclosing(self.stream_chat(request, keep_alive_s=keep_alive_s)) as events:  # type: ignore[type-var]
                async for event in events:
                    yield 0, event
            return
        seed = request.overrides.seed
        choices = [
            replace(request, overrides=replace(request.overrides, seed=seed + i)) if seed is not None else request
            for i in range(n)
        ]
        queue: asyncio.Queue[tuple[int, StreamEvent | BaseException | None]] = asyncio.Queue()

        async def pump(i: int, choice: ChatRequest) -> None:
            try:
                async with aclosing(self.stream_chat(choice, keep_alive_s=keep_alive_s)) as events:  # type: ignore[type-var]
                    async for event in events:
                        await queue.put((i, event))
                await queue.put((i, None))
            except BaseException as exc:  # handed to the consumer, which raises it
                await queue.put((i, exc))
                if isinstance(exc, asyncio.CancelledError):
                    raise

        tasks = [asyncio.ensure_future(pump(i, c)) for i, c in enumerate(choices)]
        try:
            running = n
            while running:
                i, item = await queue.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    if isinstance(item, NpcError) and n > 1:
                        raise _naming(item, f"choice {i}") from None
                    raise item
                else:
                    yield i, item
        finally:
            for task in tasks:
                task.cancel()

    async def talk(self, request: TalkRequest, *, keep_alive_s: float | None = None) -> Completion:
        """A whole Talk turn: the NPC's reply, stored when it completed (``Completion.stored``)."""
        return await final_of(self.stream_talk(request, keep_alive_s=keep_alive_s))

    async def stream_talk(
        self, request: TalkRequest, *, keep_alive_s: float | None = None
    ) -> AsyncIterator[StreamEvent]:
        """A Talk turn as TextDelta events, then one Completion; the turn is stored only when the reply completes."""
        note(id=request.id, persona=request.persona_id, conversation=request.conversation_id, text=request.text)
        self.caller.require_conversation(request.persona_id, request.conversation_id, "Talk")
        async for event in self._generate(lambda: self.core.stream_talk(request), keep_alive_s):
            yield event

    async def _generate(
        self, start: Callable[[], AsyncIterator[StreamEvent]], keep_alive_s: float | None
    ) -> AsyncIterator[StreamEvent]:
        """Holds the model (loading it again after a keep_alive unload) and times the request for its final."""
        started = time.perf_counter()
        self.require_model()
        async with (
            self.ops.watch_generation() as watch,  # refuses a caller over its token rate limit
            self.core.residency.hold(keep_alive_s) as load_ms,
            aclosing(start()) as events,  # type: ignore[type-var]
        ):
            async for event in events:
                if isinstance(event, Completion):
                    total_ms = (time.perf_counter() - started) * 1000.0
                    event = replace(event, total_ms=total_ms, model_load_ms=load_ms)
                watch.observe(event)
                yield event

    # --- personas ------------------------------------------------------------------------------------------------

    async def create_persona(self, persona: Persona) -> Persona:
        self._require(Role.DESIGNER, "creating a persona")
        return await self.core.create_persona(persona)

    async def get_persona(self, persona_id: str) -> Persona:
        self._require(Role.PLAYER, "reading a persona").require_persona(persona_id, "reading a persona")
        return await self.core.get_persona(persona_id)

    async def list_personas(self, page_size: int = 0, page_token: str = "") -> tuple[list[Persona], str]:
        """A page of personas; a token that names its personas sees only those (so a page may hold fewer)."""
        caller = self._require(Role.PLAYER, "listing personas")
        personas, token = await self.core.list_personas(page_size, page_token)
        return [p for p in personas if caller.may_use_persona(p.id)], token

    async def update_persona(self, persona: Persona, *, allow_missing: bool = False) -> Persona:
        self._require(Role.DESIGNER, "updating a persona")
        return await self.core.update_persona(persona, allow_missing=allow_missing)

    async def delete_persona(self, persona_id: str) -> int:
        self._require(Role.ADMIN, "deleting a persona (with all its conversations)")
        return await self.core.delete_persona(persona_id)

    async def import_character_card(self, card: bytes, *, persona_id: str = "", replace: bool = False) -> Persona:
        """Creates a persona from a SillyTavern / TavernAI character card (V2 or V3, PNG or JSON)."""
        self._require(Role.DESIGNER, "importing a character card")
        return await self.core.import_card(card, persona_id=persona_id, replace_existing=replace)

    async def export_character_card(self, persona_id: str, fmt: str = "png") -> tuple[bytes, str]:
        """A persona as a character card: (the file's bytes, its media type); ``fmt`` is "png" or "json"."""
        self._require(Role.PLAYER, "exporting a character card").require_persona(persona_id, "exporting a card")
        return await self.core.export_card(persona_id, fmt)

    # --- conversations -------------------------------------------------------------------------------------------

    async def get_conversation(self, persona_id: str, conversation_id: str) -> Conversation:
        note(persona=persona_id, conversation=conversation_id)
        self.caller.require_conversation(persona_id, conversation_id, "reading a conversation")
        return await self.core.get_conversation(persona_id, conversation_id)

    async def reset_conversation(self, persona_id: str, conversation_id: str) -> int:
        note(persona=persona_id, conversation=conversation_id)
        self._require(Role.ADMIN, "resetting a conversation")
        return await self.core.reset_conversation(persona_id, conversation_id)

    async def import_conversation(self, conversation: Conversation) -> int:
        note(persona=conversation.persona_id, conversation=conversation.conversation_id)
        self._require(Role.ADMIN, "importing a conversation")
        return await self.core.import_conversation(conversation)

    # --- knowledge: lore (designer), summaries and memories (the game, in its own conversations) ----------------

    async def list_lore_books(self) -> list[LoreBook]:
        self._require(Role.DESIGNER, "listing lore books")
        return await knowledge.list_lore_books(self.core)

    async def get_lore_book(self, book_id: str) -> LoreBook:
        self._require(Role.DESIGNER, "reading a lore book")
        return await knowledge.get_lore_book(self.core, book_id)

    async def put_lore_book(self, book: dict[str, Any], *, allow_existing: bool) -> LoreBook:
        self._require(Role.DESIGNER, "writing a lore book")
        return await knowledge.put_lore_book(self.core, book, allow_existing=allow_existing)

    async def delete_lore_book(self, book_id: str) -> None:
        self._require(Role.DESIGNER, "deleting a lore book")
        await knowledge.delete_lore_book(self.core, book_id)

    async def add_memory(self, persona_id: str, conversation_id: str, memory: Memory) -> Memory:
        note(persona=persona_id, conversation=conversation_id)
        self.caller.require_conversation(persona_id, conversation_id, "recording a memory")
        return await knowledge.add_memory(self.core, persona_id, conversation_id, memory)

    async def list_memories(
        self, persona_id: str, conversation_id: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[Memory], str]:
        note(persona=persona_id, conversation=conversation_id)
        self.caller.require_conversation(persona_id, conversation_id, "listing memories")
        return await knowledge.list_memories(self.core, persona_id, conversation_id, page_size, page_token)

    async def delete_memory(self, persona_id: str, conversation_id: str, memory_id: int) -> None:
        note(persona=persona_id, conversation=conversation_id)
        self.caller.require_conversation(persona_id, conversation_id, "deleting a memory")
        await knowledge.delete_memory(self.core, persona_id, conversation_id, memory_id)

    async def get_summary(self, persona_id: str, conversation_id: str) -> Summary:
        note(persona=persona_id, conversation=conversation_id)
        self.caller.require_conversation(persona_id, conversation_id, "reading a conversation's summary")
        return await knowledge.get_summary(self.core, persona_id, conversation_id)

    async def set_summary(self, persona_id: str, conversation_id: str, summary: Summary) -> Summary:
        note(persona=persona_id, conversation=conversation_id)
        self.caller.require_conversation(persona_id, conversation_id, "replacing a conversation's summary")
        return await knowledge.set_summary(self.core, persona_id, conversation_id, summary)

    # --- the designer's workbench --------------------------------------------------------------------------------

    async def render_prompt(
        self, request: TalkRequest | ChatRequest, persona_fields: dict[str, Any] | None = None
    ) -> Inspection:
        """The prompt inspector: what a Talk or a chat completion would send the model, with its sections, their
        tokens, the turns left out, the grammar and the sampling parameters with their sources. Nothing is
        generated or stored."""
        self._require(Role.DESIGNER, "inspecting a prompt (RenderPrompt)")
        self.require_model()
        async with self.core.residency.hold(None):
            if isinstance(request, TalkRequest):
                note(persona=request.persona_id, conversation=request.conversation_id, text=request.text)
                return await workbench.render_talk(self.core, request, persona_fields)
            return await workbench.render_chat(self.core, request)

    async def compare(self, request: TalkRequest, variants: list[workbench.Variant]) -> workbench.Comparison:
        """One player line through 2 to 4 variants in one engine batch, against the conversation's history; nothing
        is stored. Saving a variant is UpdatePersona with the variant's persona."""
        note(persona=request.persona_id, conversation=request.conversation_id, text=request.text)
        self._require(Role.DESIGNER, "comparing variants (Compare)")
        self.require_model()
        async with self.core.residency.hold(None):
            return await workbench.compare(self.core, request, variants)
