"""NpcCore: the one place where a chat completion or a Talk turn happens. The service layer calls this.

It validates requests, resolves personas, presets and response formats, builds the prompt within the context
budget, drives the engine, checks structured output, and commits a turn only when its reply completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from npcserver.clock import now_ms
from npcserver.core import actions as acts
from npcserver.core import bounded, cards, knowledge, limits, thinking
from npcserver.core import lore as lorelib
from npcserver.core import personas as rules
from npcserver.core.inputs import check_seed, check_strings
from npcserver.core.memory import check_memory
from npcserver.core.presets import PresetBook, check_sampling
from npcserver.core.prompt import BuiltPrompt, PromptBuilder, next_cut, overflow_start
from npcserver.core.residency import EngineFactory, ModelResidency
from npcserver.core.structured import (
    CompiledFormat,
    allow_leading_space,
    check_output_async,
    compile_format_async,
    compile_persona_schema,
)
from npcserver.core.summary import Summarizer
from npcserver.core.templates import TemplateOptions
from npcserver.core.types import (
    ROLES,
    ActionCall,
    ChatRequest,
    Completion,
    Conversation,
    Memory,
    ModelCard,
    Persona,
    Preset,
    ReasoningDelta,
    ResponseFormat,
    SamplingOverrides,
    StreamEvent,
    Summary,
    TalkRequest,
    Turn,
)
from npcserver.core.watchdog import Watchdog
from npcserver.engine.base import (
    Engine,
    Finished,
    FinishReason,
    GenerationRequest,
    GenerationStats,
    SamplingParams,
    TextDelta,
)
from npcserver.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    ManagedByFile,
    NotFound,
    NpcError,
    QueueFull,
    ResourceExhausted,
)
from npcserver.store.base import History, PutMode, Store
from npcserver.store.base import Turn as StoredTurn

log = logging.getLogger(__name__)


MAX_STOP = 16
#: Reference documents one chat completion may carry (each is also held to max_message_chars).
MAX_DOCUMENTS = 32
CONTENT_FORMATS = ("auto", "string", "openai")
MAX_PAGE = 1000
DEFAULT_PAGE = 100


@dataclass(frozen=True)
class PreparedChat:
    """A checked chat completion with its prompt, ready to generate (or to inspect)."""

    request: ChatRequest
    compiled: CompiledFormat
    plan: acts.ActionPlan | None
    params: SamplingParams
    prompt: BuiltPrompt
    template: str | None


#: Conversations whose shown summary ``NpcCore`` remembers (least recently talked to are forgotten first).
SHOWN_SUMMARIES = 10_000


class NpcCore:
    """The domain service behind every door."""

    def __init__(
        self,
        engine: Engine,
        store: Store,
        presets: PresetBook,
        *,
        default_max_tokens: int = 256,
        max_message_chars: int = 8000,
        engine_factory: EngineFactory | None = None,
    ) -> None:
        self.engine = engine
        #: Unloads and reloads the model for keep_alive; ``engine_factory`` builds a fresh engine to reload with.
        self.residency = ModelResidency(self, engine_factory)
        self.store = store
        self.presets = presets
        self.default_max_tokens = default_max_tokens
        self.max_message_chars = max_message_chars
        self._prompts: PromptBuilder | None = None
        # Schemas, patterns and chat templates are compiled, checked and rendered in worker processes: start them
        # now, beside the model load, so the first request does not wait for them.
        bounded.warm()
        #: Says when the event loop or the engine is stuck, for health checks (started by the gRPC door).
        self.watchdog = Watchdog(lambda: self.engine)
        # One reply at a time per conversation, so two Talks on one conversation never interleave their turns.
        # Weak values: a lock lives while a turn holds or awaits it, so idle conversations cost no memory.
        self._conversation_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        #: Talks waiting for another Talk on their conversation: they count toward the engine's queue limit, so
        #: a crowd on one conversation gets QueueFull instead of waiting without bound.
        self._lock_waiters = 0
        #: Writes of one persona's conversations, and its deletion, one at a time: a Talk that started before the
        #: persona was deleted (``_deletions`` moved on) stores nothing, so no orphan turn outlives it.
        self._persona_writes: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._deletions: dict[str, int] = {}
        #: Lore books (files and API), by persona (npcserver.core.lore).
        self.lore = lorelib.LoreRegistry()
        #: Tokens of recalled memories a Talk prompt may carry (0: none recalled), and the most a conversation holds.
        self.memory_budget = 0
        self.max_memories = 20000
        #: Rewrites conversations' rolling summaries in the background (core.summary).
        self.summarizer = Summarizer(self)
        #: The summary each recent conversation's prompt shows, with the epoch and kept-history start it was chosen
        #: at: it changes only when the kept history moves, so a summary written in between does not make the
        #: engine read the prompt again (core.summary). A conversation forgotten here shows the stored summary.
        self._shown_summaries: OrderedDict[tuple[str, str], tuple[int, int, str]] = OrderedDict()
        #: The lore files' loader (set by the server when it has a lore folder).
        self.lore_files: lorelib.LoreFiles | None = None

    def check_lore_book(self, book: lorelib.LoreBook) -> None:
        """A lore book's budgets against this model's context (skipped while no model is loaded to count with)."""
        try:
            info = self.engine.info
        except NpcError:
            return
        lorelib.check_budget(
            book, info.context_size, lambda t: len(self.engine.tokenize(t, add_bos=False, special=False))
        )

    # --- model ---------------------------------------------------------------------------------------------------

    @property
    def prompts(self) -> PromptBuilder:
        if self._prompts is None:
            info = self.engine.info  # raises NotReady until the model is loaded
            self._prompts = PromptBuilder(
                lambda text, add_bos, special: self.engine.tokenize(text, add_bos=add_bos, special=special),
                info.context_size,
                chat_template=info.chat_template,
                bos_token=info.bos_token,
                eos_token=info.eos_token,
                add_bos=info.add_bos,
            )
        return self._prompts

    def list_models(self) -> list[ModelCard]:
        info = self.engine.info
        return [
            ModelCard(
                id=info.id,
                created=info.created,
                context_size=info.context_size,
                backend=info.backend,
                gpu_layers=info.gpu_layers,
                has_chat_template=info.chat_template is not None,
                extra=dict(info.extra),
            )
        ]

    def list_presets(self) -> list[Preset]:
        return self.presets.list()

    @property
    def default_preset(self) -> str:
        return self.presets.default

    # --- chat completions ----------------------------------------------------------------------------------------

    async def prepare_chat(self, request: ChatRequest) -> PreparedChat:
        """Checks a chat completion and builds its prompt: what stream_chat runs and the prompt inspector shows."""
        info = self.engine.info
        if request.model and request.model != info.id:
            # A 400 / INVALID_ARGUMENT, as the games chat API documents it: the request names the wrong model.
            raise InvalidArgument(
                f"model {request.model!r} does not exist; this server serves {info.id!r} (see ListModels)",
                param="model",
                code="model_not_found",
            )
        check_strings(request)
        self._check_messages(request)
        self._check_overrides(request.overrides)
        compiled = await compile_format_async(request.response_format)
        template = request.chat_template or info.chat_template
        plan, request = await acts.prepare_chat(request, compiled, template)
        params = self.presets.resolve(
            request.overrides, request.preset, None, default_max_tokens=self.default_max_tokens
        )
        options = TemplateOptions(
            enable_thinking=request.enable_thinking,
            add_generation_prompt=request.add_generation_prompt,
            content_format=request.chat_template_content_format,
            tools=plan.tools if plan is not None else (),
        )
        prompt = await asyncio.to_thread(
            self.prompts.chat,
            request.messages,
            max_tokens=params.max_tokens,
            continue_final=request.continue_final_message,
            chat_template=request.chat_template,
            options=options,
            documents=request.documents,
        )
        return PreparedChat(request, compiled, plan, params, prompt, template)

    async def stream_chat(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Streams a chat completion: TextDelta events, then one Completion."""
        chat = await self.prepare_chat(request)
        async for event in self._generate(
            chat.request.id,
            chat.request.created,
            chat.prompt,
            chat.params,
            chat.compiled,
            session=None,
            template=chat.template,
            plan=chat.plan,
        ):
            yield event

    # --- Talk ----------------------------------------------------------------------------------------------------

    def check_talk(self, request: TalkRequest) -> None:
        """The checks of a Talk request, made before any work (Talk and the prompt inspector alike)."""
        check_strings(request)
        rules.check_persona_id(request.persona_id)
        rules.check_conversation_id(request.conversation_id)
        if not request.text.strip() and not request.action_results:
            raise InvalidArgument("text must not be empty: it is what the player says", param="text")
        self._check_chars(request.text, "text")
        rules.check_name(request.player_name, field="player_name")
        _check_request_id(request.request_id)
        knowledge.check_game_state(request.game_state)
        self._check_overrides(request.overrides)

    async def talk_format(self, request: TalkRequest, persona: Persona) -> tuple[CompiledFormat, str]:
        """The reply's format and where it comes from: the request's, else the persona's response schema."""
        if request.response_format is None and persona.response_schema is not None:
            # Checked against the limits again: a persona stored before them is refused, not executed.
            return await compile_persona_schema(persona.id, persona.response_schema), "persona response_schema"
        return await compile_format_async(request.response_format), "request response_format"

    async def talk_prompt(
        self,
        request: TalkRequest,
        persona: Persona,
        params: SamplingParams,
        compiled: CompiledFormat,
        plan: acts.ActionPlan | None,
        *,
        remember: bool = True,
    ) -> tuple[BuiltPrompt, History, int, knowledge.Plan]:
        """A Talk's prompt (``persona`` as actions.prepare_talk returned it), with the history it was built from,
        where the shown turns start in it, and the knowledge planned for it.

        Only the newest turns that can fit are read, and an overflowing history leaves in big steps, so a line costs
        the same at 20 turns and at 20,000 and most lines extend the cached prompt (core.prompt). ``left_out`` and
        ``truncated_turns`` count every turn left out. ``remember`` False (the prompt inspector) leaves the summary
        the conversation shows as it was.
        """
        known = await asyncio.to_thread(knowledge.plan, self, persona, request)
        # The summary's room is kept whether or not there is one yet, so the room, and with it where the history's
        # overflow steps fall, stays the same when a summary arrives or changes length.
        summary_room = knowledge.summary_room(self.prompts.context_size)
        room = await asyncio.to_thread(
            self.prompts.history_room,
            persona,
            params.max_tokens,
            fixed_text=known.world,
            reserved=known.reserved + summary_room,
        )
        history = await asyncio.to_thread(self.store.load_recent, request.persona_id, request.conversation_id, room)
        start = overflow_start([t.tokens for t in history.turns], history.tokens_before, room)
        summary = await self._shown_summary(
            persona, request, history.epoch, history.first + start, known, summary_room, remember=remember
        )
        known = replace(known, summary=summary, room=room)
        line, shown = acts.prepare_turns(request, history.turns, start, plan is not None and plan.tool_format)
        for_line = await asyncio.to_thread(knowledge.for_line, self, known, request, shown, line)
        enable_thinking = request.enable_thinking if request.enable_thinking is not None else persona.enable_thinking
        prompt = await asyncio.to_thread(
            self.prompts.talk,
            persona,
            shown,
            line,
            player_name=request.player_name or persona.player_name,
            max_tokens=params.max_tokens,
            structured=compiled.grammar is not None,
            options=TemplateOptions(enable_thinking=enable_thinking, tools=plan.tools if plan is not None else ()),
            knowledge=for_line,
        )
        before = history.first + start
        prompt = replace(prompt, truncated_turns=before + prompt.truncated_turns, left_out=before + prompt.left_out)
        return prompt, history, start, known

    async def _shown_summary(
        self,
        persona: Persona,
        request: TalkRequest,
        epoch: int,
        start: int,
        known: knowledge.Plan,
        room: int,
        *,
        remember: bool,
    ) -> str:
        """The rendered summary a Talk's prompt carries when its kept history starts at turn ``start``: the one
        shown since the history last moved, or, at a move, the stored one (core.summary)."""
        key = (request.persona_id, request.conversation_id)
        remembered = self._shown_summaries.get(key)
        if remembered is not None and remembered[:2] == (epoch, start):
            self._shown_summaries.move_to_end(key)
            return remembered[2]
        # The kept history moved (or this process is new to the conversation): the stored summary, written ahead
        # for this move. One that lags (a move that came before it was ready, or turns imported without one) is
        # shown as it is; the next one is written in the background after this line, for the next move.
        rendered = await asyncio.to_thread(knowledge.fit_summary, self, known.summary, room)
        if not remember:
            return rendered
        self._shown_summaries[key] = (epoch, start, rendered)
        self._shown_summaries.move_to_end(key)
        while len(self._shown_summaries) > SHOWN_SUMMARIES:
            self._shown_summaries.popitem(last=False)
        return rendered

    def forget_shown_summaries(self, persona_id: str, conversation_id: str | None = None) -> None:
        """The next line shows the stored summary (the game replaced it, or the conversations are gone)."""
        for key in [k for k in self._shown_summaries if k[0] == persona_id and conversation_id in (None, k[1])]:
            del self._shown_summaries[key]

    async def stream_talk(self, request: TalkRequest) -> AsyncIterator[StreamEvent]:
        """The player says a line; streams the NPC's reply and stores the turn when it completes."""
        self.check_talk(request)
        persona = await self._usable_persona(request.persona_id)
        deletions = self._deletions.get(request.persona_id, 0)
        compiled, _ = await self.talk_format(request, persona)
        params = self.presets.resolve(
            request.overrides, request.preset, persona, default_max_tokens=self.default_max_tokens
        )
        # The persona the NPC speaks as describes its actions; per-turn ones follow the history.
        plan, persona = await acts.prepare_talk(request, persona, compiled, self.prompts.chat_template)
        key = (request.persona_id, request.conversation_id)
        lock = self._lock(key)
        async with self._queued(lock):
            # A retry of a line whose turn is stored (by this replica or another) gets that turn, not a new reply.
            replay = await self._stored_reply(request)
            if replay is not None:
                for event in replay:
                    yield event
                return
            prompt, history, _, known = await self.talk_prompt(request, persona, params, compiled, plan)
            final: Completion | None = None
            async for event in self._generate(
                request.id,
                request.created,
                prompt,
                params,
                compiled,
                session="/".join(key),
                template=self.engine.info.chat_template,
                plan=plan,
            ):
                if isinstance(event, Completion):
                    final = event
                    break
                yield event
            if final is None:
                raise Internal("the engine ended without a final result")
            # A structured reply that failed validation is not stored: it would teach the NPC broken JSON. Nor is an
            # empty reply: a turn with no NPC line teaches nothing (the final says stored = false).
            # A reply whose action call failed keeps its spoken line, which the player heard: the call is dropped
            # (never stored or sent as a call) and the final's structured says why.
            kept = final.structured is None or final.structured.valid or acts.failed_call(final.structured)
            if kept and (final.text.strip() or final.action_calls):
                turn = acts.stored_turn(request, final, now_ms())
                turn = replace(
                    turn,
                    tokens=await asyncio.to_thread(self.prompts.turn_tokens, persona, turn),
                    request_id=request.request_id,
                )
                async with self._persona_write(request.persona_id):
                    if self._deletions.get(request.persona_id, 0) != deletions:
                        raise NotFound(
                            f"persona {request.persona_id!r} was deleted while this reply was made; the turn was not "
                            "stored",
                            param="persona_id",
                        )
                    # Stored only right after the turns the reply was made from: another replica that stored a turn
                    # here meanwhile (or a reset) makes this ABORTED, and the client retries.
                    try:
                        await asyncio.to_thread(
                            self.store.append_turn, *key, turn, after=history.after, epoch=history.epoch
                        )
                    except Aborted:
                        # Another replica stored this very line first (the client retried while we generated):
                        # its turn is the one the conversation has, so that is the reply.
                        replay = await self._stored_reply(request)
                        if replay is None:
                            raise
                        yield replay[-1]
                        return
                final.stored = True
                # Where the kept history will move next is known long before it moves: the summary of the turns
                # that move will leave out is written now, in the background, ready for that line (core.summary).
                counts = [t.tokens for t in history.turns] + [turn.tokens]
                upcoming = next_cut(counts, history.tokens_before, known.room)
                total = history.tokens_before + sum(counts)
                if upcoming is not None and total * 4 >= known.room * 3:  # a move is near: 3/4 of the room said
                    through = history.first + upcoming
                    if through > known.summary_through:
                        self.summarizer.schedule(persona, key, through, history.epoch)
                if persona.propose_memories:
                    self.summarizer.propose(persona, key, request.text, final.text)
            yield final

    async def _stored_reply(self, request: TalkRequest) -> list[StreamEvent] | None:
        """The events that replay the turn stored under ``request.request_id``, or None when there is none."""
        if not request.request_id:
            return None
        found = await asyncio.to_thread(
            self.store.find_turn, request.persona_id, request.conversation_id, request.request_id
        )
        if found is None:
            return None
        return _replay_events(request, found[1], self.engine.info.id)

    # --- the generation loop shared by chat and Talk -------------------------------------------------------------

    async def _generate(
        self,
        request_id: str,
        created: int,
        prompt: BuiltPrompt,
        params: SamplingParams,
        compiled: CompiledFormat,
        *,
        session: str | None,
        template: str | None = None,
        plan: acts.ActionPlan | None = None,
    ) -> AsyncIterator[StreamEvent]:
        info = self.engine.info
        # A thinking model's reasoning is split off the reply as it streams (core.thinking): it never reaches the
        # reply's text, its structured-output check, or a stored turn.
        markers = thinking.markers_for(template)
        splitter = thinking.ReasoningSplitter(markers, inside=thinking.opens_inside(prompt.text, markers))
        reasoning: list[str] = []
        stop = tuple(dict.fromkeys((*params.stop, *prompt.stop)))
        params = replace(params, stop=stop[: MAX_STOP + 4])
        grammar = compiled.grammar
        if grammar is not None and prompt.strip_leading_space:
            # After "Name:" the model's natural next token is a space; let it write one before the JSON.
            grammar = allow_leading_space(grammar)
        if plan is not None:
            grammar = plan.grammar
        cut = acts.CallCutter(plan is not None and plan.tool_format)
        request = GenerationRequest(
            prompt=prompt.tokens,
            params=params,
            grammar=grammar,
            session=session,
            prefix_len=prompt.prefix_len,
            grammar_triggers=plan.triggers if plan is not None else (),
            request_id=request_id,
        )
        pieces: list[str] = []
        trim = prompt.strip_leading_space
        leading = trim
        held = ""  # trailing whitespace held back until more text follows, so deltas add up to the final text
        thought_held = ""
        # Closed however this ends, so an abandoned stream stops its generation now.
        async with aclosing(self.engine.generate(request)) as events:  # type: ignore[type-var]
            async for event in events:
                if isinstance(event, TextDelta):
                    split = splitter.feed(event.text)
                elif isinstance(event, Finished):
                    split = splitter.finish()
                else:
                    continue
                for is_reasoning, text in split:
                    if is_reasoning:
                        # Trimmed like the reply: no blank lines around it, and its deltas add up to the final's.
                        text = thought_held + (text if reasoning else text.lstrip())
                        body = text.rstrip()
                        thought_held = text[len(body) :]
                        if body:
                            reasoning.append(body)
                            yield ReasoningDelta(body)
                        continue
                    if leading:
                        # The reply follows "Name:", so the first token carries the space after the colon.
                        text = text.lstrip()
                        if not text:
                            continue
                        leading = False
                    if plan is not None:
                        # The call streams as its own event once it is complete and valid, never as text.
                        text = cut.feed(text)
                        if not text:
                            continue
                    if trim:
                        text = held + text
                        body = text.rstrip()
                        held = text[len(body) :]
                        text = body
                        if not text:
                            continue
                    pieces.append(text)
                    yield TextDelta(text)
                if isinstance(event, Finished):
                    text = "".join(pieces)
                    structured = await check_output_async(text, compiled, event.stats.finish_reason)
                    finish: FinishReason = event.stats.finish_reason
                    calls: tuple[ActionCall, ...] = ()
                    if plan is not None:
                        call, structured = await acts.finish_reply(cut, plan, finish, text)
                        if call is not None:
                            calls = (call,)
                            yield call
                            if call.await_result:
                                finish = "action"
                    yield Completion(
                        id=request_id,
                        model=info.id,
                        created=created,
                        text=text,
                        finish_reason=finish,
                        stats=event.stats,
                        load_ms=info.load_ms,
                        structured=structured,
                        truncated_turns=prompt.truncated_turns,
                        action_calls=calls,
                        reasoning="".join(reasoning),
                    )
                    return

    # --- validation ----------------------------------------------------------------------------------------------

    def _check_chars(self, text: str, field: str) -> None:
        if len(text) > self.max_message_chars:
            raise InvalidArgument(
                f"{field} is {len(text)} characters; the limit is {self.max_message_chars} (server setting "
                "max_message_chars)",
                param=field,
            )

    def _check_messages(self, request: ChatRequest) -> None:
        if not request.messages:
            raise InvalidArgument("messages must not be empty: send at least one user message", param="messages")
        for i, m in enumerate(request.messages):
            if m.role not in ROLES:
                raise InvalidArgument(
                    f"messages[{i}].role {m.role!r} is unknown; use one of: {', '.join(ROLES)}", param="messages"
                )
            self._check_chars(m.content, f"messages[{i}].content")
        if request.continue_final_message and request.messages[-1].role != "assistant":
            raise InvalidArgument(
                "continue_final_message needs the last message to be the assistant's (the text to continue)",
                param="continue_final_message",
            )
        if request.chat_template_content_format not in CONTENT_FORMATS:
            raise InvalidArgument(
                f"chat_template_content_format {request.chat_template_content_format!r} is unknown; use one of: "
                f"{', '.join(CONTENT_FORMATS)}",
                param="chat_template_content_format",
            )
        if len(request.documents) > MAX_DOCUMENTS:
            raise InvalidArgument(
                f"documents has {len(request.documents)} entries; at most {MAX_DOCUMENTS} are allowed",
                param="documents",
            )
        for i, d in enumerate(request.documents):
            if not d.text.strip():
                raise InvalidArgument(f"documents[{i}].text must not be empty", param="documents")
            self._check_chars(d.text, f"documents[{i}].text")
            self._check_chars(d.title, f"documents[{i}].title")

    def _check_overrides(self, o: SamplingOverrides) -> None:
        check_sampling(
            temperature=o.temperature,
            top_p=o.top_p,
            top_k=o.top_k,
            min_p=o.min_p,
            repeat_penalty=o.repeat_penalty,
            max_tokens=o.max_tokens,
        )
        check_seed(o.seed)
        if len(o.stop) > MAX_STOP:
            raise InvalidArgument(f"stop has {len(o.stop)} sequences; at most {MAX_STOP} are allowed", param="stop")
        if any(not s for s in o.stop):
            raise InvalidArgument("stop sequences must not be empty strings", param="stop")

    # --- personas ------------------------------------------------------------------------------------------------

    async def _check_persona(self, persona: Persona) -> None:
        rules.check_persona(persona, max_chars=self.max_message_chars)
        await acts.check_persona_actions(persona)
        if persona.default_preset:
            self.presets.get(persona.default_preset, param="default_preset")
        if persona.response_schema is not None:
            await compile_format_async(
                ResponseFormat(type="json_schema", schema=persona.response_schema, name=persona.id),
                param="response_schema",
                subject=f"persona {persona.id!r} response_schema",
            )

    async def validate_persona(self, persona: Persona) -> None:
        """Every check a persona must pass before it is stored: fields, preset, response schema."""
        await self._check_persona(persona)

    async def _refuse_file_persona(self, persona_id: str, action: str) -> dict[str, Any] | None:
        """The stored body; raises ManagedByFile when a persona file defines the persona (see core.watch)."""
        body = await asyncio.to_thread(self.store.get_persona, persona_id)
        if body is not None and body.get("source"):
            raise ManagedByFile(
                f"persona {persona_id!r} comes from the file {body['source']}: {action} it by editing that file "
                "(it applies when saved), or remove the file to manage the persona through the API",
                param="persona_id",
            )
        return body

    async def create_persona(self, persona: Persona) -> Persona:
        persona = replace(persona, source="", load_error="")
        await self._check_persona(persona)
        body = rules.persona_to_dict(persona)
        if not await asyncio.to_thread(self.store.put_persona, persona.id, body, mode="create"):
            await self._refuse_file_persona(persona.id, "change")
            raise AlreadyExists(f"persona {persona.id!r} already exists; use UpdatePersona to change it")
        return persona

    async def get_persona(self, persona_id: str) -> Persona:
        """The persona as stored; one that fails the limits comes back cut to them, its load_error saying why."""
        return (await self._read_persona(persona_id))[0]

    async def _read_persona(self, persona_id: str) -> tuple[Persona, str]:
        rules.check_persona_id(persona_id)
        body = await asyncio.to_thread(self.store.get_persona, persona_id)
        if body is None:
            raise NotFound(f"persona {persona_id!r} does not exist (see ListPersonas)", param="persona_id")
        persona, problem = rules.readable_persona(body, max_chars=self.max_message_chars)
        if problem:
            log.error("stored persona %r fails the limits: %s", persona_id, problem)
        return persona, problem

    async def _usable_persona(self, persona_id: str) -> Persona:
        """The persona for a Talk: one stored that fails the limits is refused, never executed."""
        persona, problem = await self._read_persona(persona_id)
        if problem:
            raise FailedPrecondition(
                f"persona {persona_id!r} is stored but fails the server's limits: {problem}; update the persona "
                "(UpdatePersona or PUT /v1/npcs/{id}) to use it",
                param="persona_id",
            )
        return persona

    async def list_personas(self, page_size: int = 0, page_token: str = "") -> tuple[list[Persona], str]:
        if page_size < 0:
            raise InvalidArgument("page_size must not be negative", param="page_size")
        size = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        if page_token:
            rules.check_persona_id(page_token, param="page_token")
        rows = await asyncio.to_thread(self.store.list_personas, page_token, size + 1)
        personas: list[Persona] = []
        chars = 0
        for row in rows[:size]:
            persona, problem = rules.readable_persona(row, max_chars=self.max_message_chars)
            if problem:
                log.error("stored persona %r fails the limits: %s", persona.id, problem)
            chars += rules.persona_chars(persona)
            if personas and chars > limits.MAX_PAGE_CHARS:
                # The page ends early rather than outgrow a message; the token goes on from here.
                return personas, personas[-1].id
            personas.append(persona)
        next_token = personas[-1].id if len(rows) > size else ""
        return personas, next_token

    async def update_persona(self, persona: Persona, *, allow_missing: bool = False) -> Persona:
        stored = await self._refuse_file_persona(persona.id, "change")
        # An imported card is kept across edits: the API's Persona message does not carry it.
        card = persona.card if persona.card is not None else (stored or {}).get("card")
        persona = replace(persona, source="", load_error="", card=card if isinstance(card, dict) else None)
        await self._check_persona(persona)
        body = rules.persona_to_dict(persona)
        mode: PutMode = "upsert" if allow_missing else "update"
        if not await asyncio.to_thread(self.store.put_persona, persona.id, body, mode=mode):
            raise NotFound(
                f"persona {persona.id!r} does not exist; create it, or set allow_missing", param="persona.id"
            )
        return persona

    async def delete_persona(self, persona_id: str) -> int:
        rules.check_persona_id(persona_id)
        await self._refuse_file_persona(persona_id, "delete")
        async with self._persona_write(persona_id):
            # Talks that began before this deletion store nothing (see stream_talk), even if the id is reused.
            self._deletions[persona_id] = self._deletions.get(persona_id, 0) + 1
            deleted = await asyncio.to_thread(self.store.delete_persona, persona_id)
            self.forget_shown_summaries(persona_id)
        if deleted is None:
            raise NotFound(f"persona {persona_id!r} does not exist", param="persona_id")
        return deleted

    async def load_persona_files(self, folder: Any) -> int:
        """Applies a folder of persona TOML files once (the server also watches it: core.watch). Returns the count."""
        from npcserver.core.watch import PersonaFiles

        return await PersonaFiles(self, Path(folder)).sync_all()

    # --- character cards -----------------------------------------------------------------------------------------

    async def import_card(self, blob: bytes, *, persona_id: str = "", replace_existing: bool = False) -> Persona:
        """Creates a persona from a character card (PNG or JSON; see core.cards). ``replace_existing`` replaces a
        persona of the same id that was created through the API."""
        if persona_id:
            rules.check_persona_id(persona_id)
        persona = await asyncio.to_thread(cards.import_persona, blob, persona_id=persona_id)
        if replace_existing:
            return await self.update_persona(persona, allow_missing=True)
        return await self.create_persona(persona)

    async def export_card(self, persona_id: str, fmt: str) -> tuple[bytes, str]:
        """A persona as a character card file: (bytes, media type) for ``fmt`` "png" or "json"."""
        if fmt not in cards.FORMATS:
            raise InvalidArgument(f"card format {fmt!r} is unknown; use 'png' or 'json'", param="format")
        persona = await self.get_persona(persona_id)
        return await asyncio.to_thread(cards.export_card, persona, fmt)

    def _lock(self, key: tuple[str, str]) -> asyncio.Lock:
        lock = self._conversation_locks.get(key)
        if lock is None:
            lock = self._conversation_locks[key] = asyncio.Lock()
        return lock

    def _persona_write(self, persona_id: str) -> asyncio.Lock:
        lock = self._persona_writes.get(persona_id)
        if lock is None:
            lock = self._persona_writes[persona_id] = asyncio.Lock()
        return lock

    @contextlib.asynccontextmanager
    async def _queued(self, lock: asyncio.Lock) -> AsyncIterator[None]:
        """Holds a conversation's lock. Waiting for it counts as waiting in the engine's queue: past the queue limit
        (``max_queue`` beyond the running sequences) the request is QueueFull at once."""
        if lock.locked():
            capacity = _queue_capacity(self.engine)
            outstanding = getattr(self.engine, "outstanding", 0)
            if capacity is not None and outstanding + self._lock_waiters >= capacity:
                raise QueueFull(
                    f"the generation queue is full ({outstanding} requests generating or queued, "
                    f"{self._lock_waiters} waiting for their conversation; server setting max_queue); retry later",
                    code="queue_full",
                )
            self._lock_waiters += 1
            try:
                await lock.acquire()
            finally:
                self._lock_waiters -= 1
        else:
            await lock.acquire()
        try:
            yield
        finally:
            lock.release()

    # --- conversations -------------------------------------------------------------------------------------------

    async def _conversation_key(self, persona_id: str, conversation_id: str) -> tuple[str, str]:
        rules.check_conversation_id(conversation_id)
        await self.get_persona(persona_id)  # NOT_FOUND for an unknown persona
        return persona_id, conversation_id

    async def get_conversation(self, persona_id: str, conversation_id: str) -> Conversation:
        key = await self._conversation_key(persona_id, conversation_id)
        turns = await asyncio.to_thread(self.store.load_turns, *key)
        summary = await asyncio.to_thread(self.store.get_summary, *key)
        memories = await asyncio.to_thread(self.store.list_memories, *key, 0, self.max_memories)
        return Conversation(persona_id, conversation_id, tuple(turns), summary, tuple(memories))

    async def reset_conversation(self, persona_id: str, conversation_id: str) -> int:
        key = await self._conversation_key(persona_id, conversation_id)
        async with self._lock(key), self._persona_write(persona_id):
            await self.get_persona(persona_id)  # not deleted meanwhile: a reset would leave an orphan epoch
            return await asyncio.to_thread(self.store.reset, *key)

    async def import_conversation(self, conversation: Conversation) -> int:
        """Replaces a conversation with an exported one. Every limit is checked before any work; the checks of a
        long import run off the event loop."""
        turns = conversation.turns
        if len(turns) > limits.MAX_IMPORT_TURNS:
            raise InvalidArgument(
                f"conversation.turns has {len(turns)} turns; the limit is {limits.MAX_IMPORT_TURNS} (MAX_IMPORT_TURNS)",
                param="turns",
            )
        chars = sum(len(t.player_line) + len(t.npc_line) + len(t.player_name) for t in turns)
        if chars > limits.MAX_IMPORT_CHARS:
            raise InvalidArgument(
                f"conversation.turns hold {chars} characters; the limit is {limits.MAX_IMPORT_CHARS} "
                "(MAX_IMPORT_CHARS)",
                param="turns",
            )
        if len(conversation.memories) > self.max_memories:
            raise ResourceExhausted(
                f"conversation.memories has {len(conversation.memories)} memories; this server keeps at most "
                f"{self.max_memories} per conversation (max_memories)",
                param="memories",
            )
        for i, m in enumerate(conversation.memories):
            check_memory(m, f"conversation.memories[{i}]")
        if conversation.summary is not None:
            knowledge.check_summary(conversation.summary, "conversation.summary")
        key = await self._conversation_key(conversation.persona_id, conversation.conversation_id)
        await asyncio.to_thread(self._check_turns, conversation)
        async with self._lock(key), self._persona_write(conversation.persona_id):
            persona = await self.get_persona(conversation.persona_id)  # not deleted meanwhile: no orphan conversation
            return await asyncio.to_thread(
                self._store_import, key, persona, turns, conversation.summary, conversation.memories
            )

    def _store_import(
        self,
        key: tuple[str, str],
        persona: Persona,
        turns: Sequence[Turn],
        summary: Summary | None = None,
        memories: Sequence[Memory] = (),
    ) -> int:
        # Each turn's token count, so a Talk loads only the turns that fit; with no model loaded to count them, the
        # store estimates them.
        try:
            prompts = self.prompts
        except NpcError:
            counted = list(turns)
        else:
            counted = [replace(t, tokens=prompts.turn_tokens(persona, t)) for t in turns]
        return self.store.replace_turns(*key, counted, summary=summary, memories=memories)

    def _check_turns(self, conversation: Conversation) -> None:
        check_strings(conversation, "conversation")
        for i, t in enumerate(conversation.turns):
            # An empty npc_line is accepted: Talk no longer stores one, but exports of older servers may hold it.
            if not t.player_line.strip():
                raise InvalidArgument(f"conversation.turns[{i}] needs a player_line", param="turns")
            self._check_chars(t.player_line, f"conversation.turns[{i}].player_line")
            self._check_chars(t.npc_line, f"conversation.turns[{i}].npc_line")
            rules.check_name(t.player_name, field=f"conversation.turns[{i}].player_name", param="turns")
            if not 0 <= t.create_time_ms <= limits.MAX_TIME_MS:
                raise InvalidArgument(
                    f"conversation.turns[{i}].create_time_ms is {t.create_time_ms}: use milliseconds since 1970 "
                    f"(0 to {limits.MAX_TIME_MS}; 0 stamps the import's time)",
                    param="turns",
                )


_REQUEST_ID = re.compile(r"[!-~]{1,128}")


def _check_request_id(request_id: str) -> None:
    if request_id and not _REQUEST_ID.fullmatch(request_id):
        raise InvalidArgument(
            f"request_id {request_id[:200]!r} is invalid: use 1-128 printable ASCII characters without spaces "
            "(a UUID, new for each line and the same on its retries), or leave it empty",
            param="request_id",
        )


def _replay_events(request: TalkRequest, turn: StoredTurn, model: str) -> list[StreamEvent]:
    """A stored turn as a Talk stream: its text and calls as events, then a final marked replayed (and stored)."""
    text, calls = acts.decode_npc_line(turn.npc_line)
    events: list[StreamEvent] = [TextDelta(text)] if text else []
    events.extend(calls)
    finish: FinishReason = "action" if any(c.await_result for c in calls) else "stop"
    final = Completion(
        id=request.id,
        model=model,
        created=request.created,
        text=text,
        finish_reason=finish,
        stats=GenerationStats(finish_reason=finish, prompt_tokens=0, completion_tokens=0),
        action_calls=calls,
        stored=True,
        replayed=True,
    )
    return [*events, final]


def _queue_capacity(engine: Engine) -> int | None:
    """Requests the engine takes at once, running and queued (None when it has no limit)."""
    n_seq, max_queue = getattr(engine, "n_seq", None), getattr(engine, "max_queue", None)
    return n_seq + max_queue if isinstance(n_seq, int) and isinstance(max_queue, int) else None
