"""Protobuf <-> domain conversion: the only module that knows both the API's messages and the core's types.

The gRPC door (and through it gRPC-Web) and the NPC REST routes, which speak the same messages as proto-JSON, both
convert here, so the doors cannot drift apart.
"""

from __future__ import annotations

import json
from typing import Any

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.core import actions as acts
from npcserver.core import limits
from npcserver.core.lore import LoreBook
from npcserver.core.types import (
    Action,
    ActionCall,
    ActionChoice,
    ActionMode,
    ActionResult,
    ChatRequest,
    Completion,
    Conversation,
    Document,
    ExampleExchange,
    Memory,
    Message,
    ModelCard,
    Persona,
    Preset,
    ReasoningDelta,
    ResponseFormat,
    SamplingOverrides,
    StreamEvent,
    StructuredResult,
    Summary,
    TalkRequest,
    TextDelta,
    Turn,
)
from npcserver.core.workbench import Comparison, Inspection, Variant
from npcserver.errors import InvalidArgument

_FINISH = {"stop": pb.FINISH_REASON_STOP, "length": pb.FINISH_REASON_LENGTH, "action": pb.FINISH_REASON_ACTION}
_CHOICE_MODES: dict[int, ActionMode] = {
    pb.ActionChoice.MODE_AUTO: "auto",
    pb.ActionChoice.MODE_NONE: "none",
    pb.ActionChoice.MODE_REQUIRED: "required",
    pb.ActionChoice.MODE_NAMED: "named",
}


#: The sampling options, by name, as both SamplingOptions and the core's SamplingOverrides spell them.
SAMPLING_FIELDS = tuple(f.name for f in pb.SamplingOptions.DESCRIPTOR.fields)


def _opt(msg: Any, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


def overrides_from_pb(
    msg: pb.CreateChatCompletionRequest | pb.StreamChatCompletionRequest | pb.TalkRequest | pb.CompareVariant,
) -> SamplingOverrides:
    """The request's sampling options: a field set in ``sampling`` wins over the deprecated flat field."""
    flat = {f.name for f in msg.DESCRIPTOR.fields}
    sampling = msg.sampling if msg.HasField("sampling") else None
    values: dict[str, Any] = {}
    for name in SAMPLING_FIELDS:
        if name == "stop":
            continue
        if sampling is not None and sampling.HasField(name):
            values[name] = getattr(sampling, name)
        elif name in flat:
            values[name] = _opt(msg, name)
    if sampling is not None and sampling.stop:
        stop: tuple[str, ...] = tuple(sampling.stop)
    else:
        stop = tuple(getattr(msg, "stop", ()))
    return SamplingOverrides(**values, stop=stop)


def parse_schema(text: str, param: str) -> dict[str, Any]:
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{param} is not valid JSON: {exc}", param=param) from exc
    if not isinstance(schema, dict):
        raise InvalidArgument(f"{param} must be a JSON object (a JSON Schema document)", param=param)
    return schema


def response_format_from_pb(msg: pb.ResponseFormat, *, unspecified_is_none: bool) -> ResponseFormat | None:
    t = msg.type
    if t == pb.ResponseFormat.TYPE_UNSPECIFIED:
        return None if unspecified_is_none else ResponseFormat("text")
    if t == pb.ResponseFormat.TYPE_TEXT:
        return ResponseFormat("text")
    if t == pb.ResponseFormat.TYPE_JSON_OBJECT:
        return ResponseFormat("json_object")
    if t == pb.ResponseFormat.TYPE_JSON_SCHEMA:
        if not msg.json_schema.schema.strip():
            raise InvalidArgument(
                "response_format.json_schema.schema is empty: give a JSON Schema", param="response_format"
            )
        schema = parse_schema(msg.json_schema.schema, "response_format.json_schema.schema")
        return ResponseFormat("json_schema", schema=schema, name=msg.json_schema.name)
    raise InvalidArgument(f"response_format.type {t} is unknown", param="response_format")


def chat_request_from_pb(msg: pb.CreateChatCompletionRequest | pb.StreamChatCompletionRequest) -> ChatRequest:
    check_parallel(msg)
    return ChatRequest(
        messages=tuple(message_from_pb(m) for m in msg.messages),
        model=msg.model,
        overrides=overrides_from_pb(msg),
        tools=actions_from_pb(msg.tools, "tools"),
        tool_choice=choice_from_pb(msg.tool_choice, "tool_choice") if msg.HasField("tool_choice") else None,
        preset=_opt(msg, "preset"),
        response_format=response_format_from_pb(msg.response_format, unspecified_is_none=False),
        continue_final_message=msg.continue_final_message,
        chat_template=_opt(msg, "chat_template"),
        enable_thinking=_opt(msg, "enable_thinking"),
        add_generation_prompt=msg.add_generation_prompt if msg.HasField("add_generation_prompt") else True,
        chat_template_content_format=msg.chat_template_content_format or "auto",
        documents=tuple(Document(d.text, d.title) for d in msg.documents),
    )


def message_from_pb(m: pb.ChatMessage) -> Message:
    return Message(
        m.role,
        m.content,
        m.name,
        tool_calls=tuple(call_from_pb(c) for c in m.tool_calls),
        tool_call_id=m.tool_call_id,
    )


def check_parallel(msg: pb.CreateChatCompletionRequest | pb.StreamChatCompletionRequest) -> None:
    """parallel_tool_calls: true is refused, never ignored: a reply makes at most one call."""
    if msg.HasField("parallel_tool_calls") and msg.parallel_tool_calls:
        raise InvalidArgument(
            "parallel_tool_calls: true is not supported: this server makes at most one tool call per reply; set it "
            "to false or leave it out",
            param="parallel_tool_calls",
        )


def actions_from_pb(items: Any, param: str) -> tuple[Action, ...]:
    """Actions (tools) from the wire; their parameters_schema is JSON text."""
    return tuple(
        Action(
            name=a.name,
            description=a.description,
            parameters=acts.parse_schema_text(
                a.parameters_schema, where=f"{param}[{i}].parameters_schema", param=param
            ),
            await_result=a.await_result,
        )
        for i, a in enumerate(items)
    )


def actions_to_pb(items: tuple[Action, ...]) -> list[pb.Action]:
    return [
        pb.Action(
            name=a.name,
            description=a.description,
            parameters_schema=json.dumps(a.parameters, ensure_ascii=False) if a.parameters is not None else "",
            await_result=a.await_result,
        )
        for a in items
    ]


def choice_from_pb(msg: pb.ActionChoice, param: str) -> ActionChoice | None:
    if msg.mode == pb.ActionChoice.MODE_UNSPECIFIED:
        if msg.name:
            return ActionChoice("named", msg.name)
        return None
    mode = _CHOICE_MODES.get(msg.mode)
    if mode is None:
        raise InvalidArgument(f"{param}.mode {msg.mode} is unknown; use AUTO, NONE, REQUIRED or NAMED", param=param)
    if mode == "named" and not msg.name:
        raise InvalidArgument(f"{param}: MODE_NAMED needs the action's name in {param}.name", param=param)
    return ActionChoice(mode, msg.name)


def call_to_pb(c: ActionCall) -> pb.ActionCall:
    return pb.ActionCall(id=c.id, name=c.name, arguments=c.arguments, index=c.index)


def call_from_pb(c: pb.ActionCall) -> ActionCall:
    return ActionCall(c.id, c.name, c.arguments, index=c.index)


def talk_request_from_pb(msg: pb.TalkRequest) -> TalkRequest:
    return TalkRequest(
        persona_id=msg.persona_id,
        conversation_id=msg.conversation_id,
        text=msg.text,
        overrides=overrides_from_pb(msg),
        preset=_opt(msg, "preset"),
        response_format=response_format_from_pb(msg.response_format, unspecified_is_none=True),
        actions=actions_from_pb(msg.actions, "actions"),
        action_choice=choice_from_pb(msg.action_choice, "action_choice"),
        action_results=tuple(ActionResult(r.call_id, r.content) for r in msg.action_results),
        player_name=msg.player_name,
        request_id=msg.request_id,
        enable_thinking=_opt(msg, "enable_thinking"),
        game_state=tuple(msg.game_state),
    )


def usage_to_pb(c: Completion) -> pb.Usage:
    return pb.Usage(
        prompt_tokens=c.prompt_tokens,
        completion_tokens=c.completion_tokens,
        total_tokens=c.prompt_tokens + c.completion_tokens,
    )


def timings_to_pb(c: Completion) -> pb.Timings:
    s = c.stats
    return pb.Timings(
        prompt_eval_count=s.prompt_tokens - s.cached_prompt_tokens,
        prompt_eval_ms=s.prompt_eval_ms,
        eval_count=s.completion_tokens,
        eval_ms=s.eval_ms,
        time_to_first_token_ms=s.time_to_first_token_ms,
        load_ms=c.load_ms,
        queue_ms=s.queue_ms,
        cached_prompt_tokens=s.cached_prompt_tokens,
        total_ms=c.total_ms,
        model_load_ms=c.model_load_ms,
    )


def structured_to_pb(s: StructuredResult | None) -> pb.StructuredOutput | None:
    if s is None:
        return None
    return pb.StructuredOutput(valid=s.valid, error=s.error, schema_name=s.schema_name)


def _reply_message(c: Completion) -> pb.ChatMessage:
    """The reply as a message; a thinking model's reasoning in its own field, present only when there was some."""
    msg = pb.ChatMessage(role="assistant", content=c.text)
    if c.reasoning:
        msg.reasoning_content = c.reasoning
    return msg


def final_to_pb(c: Completion) -> pb.CompletionFinal:
    msg = pb.CompletionFinal(
        message=_reply_message(c),
        finish_reason=_FINISH[c.finish_reason],
        usage=usage_to_pb(c),
        timings=timings_to_pb(c),
        structured=structured_to_pb(c.structured),
        truncated_turns=c.truncated_turns,
        action_calls=[call_to_pb(x) for x in c.action_calls],
        replayed=c.replayed,
    )
    msg.message.tool_calls.extend(msg.action_calls)
    return msg


def completion_to_pb(c: Completion) -> pb.CreateChatCompletionResponse:
    msg = pb.CreateChatCompletionResponse(
        id=c.id,
        object="chat.completion",
        created=c.created,
        model=c.model,
        choices=[
            pb.Choice(
                index=0,
                message=_reply_message(c),
                finish_reason=_FINISH[c.finish_reason],
                structured=structured_to_pb(c.structured),
            )
        ],
        usage=usage_to_pb(c),
        timings=timings_to_pb(c),
    )
    msg.choices[0].message.tool_calls.extend(call_to_pb(x) for x in c.action_calls)
    return msg


def persona_from_pb(msg: pb.Persona) -> Persona:
    schema = parse_schema(msg.response_schema, "persona.response_schema") if msg.response_schema.strip() else None
    return Persona(
        id=msg.id,
        display_name=msg.display_name,
        system_prompt=msg.system_prompt,
        example_dialogue=tuple(ExampleExchange(e.player_line, e.npc_line) for e in msg.example_dialogue),
        default_preset=msg.default_preset,
        response_schema=schema,
        max_tokens=_opt(msg, "max_tokens"),
        stop=tuple(msg.stop),
        player_name=msg.player_name,
        description=msg.description,
        opening_lines=tuple(msg.opening_lines),
        post_history_instructions=msg.post_history_instructions,
        enable_thinking=_opt(msg, "enable_thinking"),
        propose_memories=msg.propose_memories,
        actions=actions_from_pb(msg.actions, "persona.actions"),
        # source and load_error are output only: the server sets them.
    )


def persona_to_pb(p: Persona) -> pb.Persona:
    msg = pb.Persona(
        id=p.id,
        display_name=p.display_name,
        system_prompt=p.system_prompt,
        example_dialogue=[
            pb.ExampleExchange(player_line=e.player_line, npc_line=e.npc_line) for e in p.example_dialogue
        ],
        default_preset=p.default_preset,
        response_schema=json.dumps(p.response_schema, ensure_ascii=False) if p.response_schema is not None else "",
        stop=list(p.stop),
        player_name=p.player_name,
        description=p.description,
        source=p.source,
        load_error=p.load_error,
        opening_lines=list(p.opening_lines),
        post_history_instructions=p.post_history_instructions,
        propose_memories=p.propose_memories,
    )
    if p.max_tokens is not None:
        msg.max_tokens = p.max_tokens
    msg.actions.extend(actions_to_pb(p.actions))
    if p.enable_thinking is not None:
        msg.enable_thinking = p.enable_thinking
    return msg


def conversation_to_pb(c: Conversation) -> pb.Conversation:
    return pb.Conversation(
        persona_id=c.persona_id,
        conversation_id=c.conversation_id,
        turns=[turn_to_pb(t) for t in c.turns],
        summary=summary_to_pb(c.summary) if c.summary is not None else None,
        memories=[memory_to_pb(m) for m in c.memories],
    )


def turn_to_pb(t: Turn) -> pb.Turn:
    """A stored turn with its calls and results apart from its lines (the core keeps them inside the lines)."""
    player_line, results = acts.decode_player_line(t.player_line)
    npc_line, calls = acts.decode_npc_line(t.npc_line)
    return pb.Turn(
        player_line=player_line,
        npc_line=npc_line,
        create_time_ms=t.create_time_ms,
        player_name=t.player_name,
        action_calls=[call_to_pb(c) for c in calls],
        action_results=[pb.ActionResult(call_id=r.call_id, content=r.content) for r in results],
    )


def turn_from_pb(t: pb.Turn) -> Turn:
    calls = tuple(
        ActionCall(c.id, c.name, c.arguments, index=i, at=len(t.npc_line)) for i, c in enumerate(t.action_calls)
    )
    results = tuple(ActionResult(r.call_id, r.content) for r in t.action_results)
    return Turn(
        acts.encode_player_line(t.player_line, results),
        acts.encode_npc_line(t.npc_line, calls),
        t.create_time_ms,
        t.player_name,
    )


def conversation_from_pb(msg: pb.Conversation) -> Conversation:
    if len(msg.turns) > limits.MAX_IMPORT_TURNS:
        # Refused before a Turn is built: a 16 MiB message can hold millions of empty turns.
        raise InvalidArgument(
            f"conversation.turns has {len(msg.turns)} turns; the limit is {limits.MAX_IMPORT_TURNS} (MAX_IMPORT_TURNS)",
            param="turns",
        )
    return Conversation(
        persona_id=msg.persona_id,
        conversation_id=msg.conversation_id,
        turns=tuple(turn_from_pb(t) for t in msg.turns),
        summary=summary_from_pb(msg.summary) if msg.HasField("summary") else None,
        memories=tuple(memory_from_pb(m) for m in msg.memories),
    )


# --- knowledge -----------------------------------------------------------------------------------------------------

_LOGIC_TO_PB = {
    "and_any": pb.SELECTIVE_LOGIC_AND_ANY,
    "not_all": pb.SELECTIVE_LOGIC_NOT_ALL,
    "not_any": pb.SELECTIVE_LOGIC_NOT_ANY,
    "and_all": pb.SELECTIVE_LOGIC_AND_ALL,
}
_LOGIC_FROM_PB = {v: k for k, v in _LOGIC_TO_PB.items()} | {pb.SELECTIVE_LOGIC_UNSPECIFIED: "and_any"}


def summary_to_pb(s: Summary) -> pb.ConversationSummary:
    return pb.ConversationSummary(text=s.text, through_turn=s.through, update_time_ms=s.update_time_ms)


def summary_from_pb(s: pb.ConversationSummary) -> Summary:
    return Summary(s.text, s.through_turn, s.update_time_ms)


def memory_to_pb(m: Memory) -> pb.Memory:
    return pb.Memory(id=m.id, text=m.text, importance=m.importance, create_time_ms=m.create_time_ms, source=m.source)


def memory_from_pb(m: pb.Memory) -> Memory:
    return Memory(m.text, m.importance or 5, m.create_time_ms, m.source or "game")


def lore_book_to_pb(b: LoreBook) -> pb.LoreBook:
    return pb.LoreBook(
        id=b.id,
        name=b.name,
        personas=list(b.personas),
        token_budget=b.token_budget,
        scan_depth=b.scan_depth,
        case_sensitive=b.case_sensitive,
        source=b.source,
        entries=[
            pb.LoreEntry(
                name=e.name,
                content=e.content,
                keys=list(e.keys),
                secondary_keys=list(e.secondary_keys),
                selective=e.selective,
                selective_logic=_LOGIC_TO_PB[e.selective_logic],
                constant=e.constant,
                enabled=e.enabled,
                insertion_order=e.insertion_order,
                priority=e.priority,
                case_sensitive=e.case_sensitive,
            )
            for e in b.entries
        ],
    )


def lore_book_from_pb(b: pb.LoreBook) -> dict[str, Any]:
    """The book's dict form (npcserver.core.lore.parse_book checks it)."""
    raw: dict[str, Any] = {"id": b.id, "name": b.name, "personas": list(b.personas), "case_sensitive": b.case_sensitive}
    for name in ("token_budget", "scan_depth"):
        if b.HasField(name):
            raw[name] = getattr(b, name)
    entries = []
    for e in b.entries:
        entry: dict[str, Any] = {
            "name": e.name,
            "content": e.content,
            "keys": list(e.keys),
            "secondary_keys": list(e.secondary_keys),
            "selective": e.selective,
            "selective_logic": _LOGIC_FROM_PB.get(e.selective_logic, "and_any"),
            "constant": e.constant,
        }
        for name in ("enabled", "insertion_order", "priority", "case_sensitive"):
            if e.HasField(name):
                entry[name] = getattr(e, name)
        entries.append(entry)
    raw["entries"] = entries
    return raw


def preset_to_pb(p: Preset) -> pb.Preset:
    return pb.Preset(
        name=p.name,
        description=p.description,
        temperature=p.temperature,
        top_p=p.top_p,
        top_k=p.top_k,
        min_p=p.min_p,
        repeat_penalty=p.repeat_penalty,
    )


def model_to_pb(m: ModelCard) -> pb.Model:
    return pb.Model(
        id=m.id,
        object="model",
        created=m.created,
        owned_by="npcserver",
        context_size=m.context_size,
        backend=m.backend,
        gpu_layers=m.gpu_layers,
        has_chat_template=m.has_chat_template,
        loaded=m.loaded,
    )


def talk_event_to_pb(event: StreamEvent, request: TalkRequest, model: str) -> pb.TalkResponse:
    """One event of a Talk stream as its TalkResponse, labelled with the request's id, model and time."""
    msg = pb.TalkResponse(id=request.id, model=model, created=request.created)
    if isinstance(event, Completion):
        msg.final.CopyFrom(final_to_pb(event))
    elif isinstance(event, ActionCall):
        msg.action_call.CopyFrom(call_to_pb(event))
    elif isinstance(event, ReasoningDelta):
        msg.delta.reasoning_content = event.text
    elif isinstance(event, TextDelta):
        msg.delta.content = event.text
    return msg


def delta_to_pb(event: TextDelta | ReasoningDelta) -> pb.ContentDelta:
    """A streamed piece: reply text, or a thinking model's reasoning in its own field."""
    if isinstance(event, ReasoningDelta):
        return pb.ContentDelta(reasoning_content=event.text)
    return pb.ContentDelta(content=event.text)


def persona_page_to_pb(personas: list[Persona], next_page_token: str) -> pb.ListPersonasResponse:
    return pb.ListPersonasResponse(personas=[persona_to_pb(p) for p in personas], next_page_token=next_page_token)


def presets_to_pb(presets: list[Preset], default_preset: str) -> pb.ListPresetsResponse:
    return pb.ListPresetsResponse(presets=[preset_to_pb(p) for p in presets], default_preset=default_preset)


# --- the designer's workbench ------------------------------------------------------------------------------------


def inspection_to_pb(i: Inspection) -> pb.RenderPromptResponse:
    msg = pb.RenderPromptResponse(
        text=i.text,
        sections=[pb.PromptSection(name=s.name, text=s.text, tokens=s.tokens) for s in i.sections],
        prompt_tokens=i.prompt_tokens,
        left_out=list(i.left_out),
        grammar=i.grammar,
        grammar_source=i.grammar_source,
        stop=list(i.stop),
    )
    for p in i.sampling:
        param = msg.sampling.add(name=p.name, source=p.source, preset=p.preset)
        if p.value is not None:
            param.value = float(p.value)
    return msg


def variant_from_pb(msg: pb.CompareVariant, index: int) -> Variant:
    """A variant; its persona fields that are set (non-empty) override the stored persona's."""
    fields = persona_fields_from_pb(msg.persona, f"variants[{index}]") if msg.HasField("persona") else {}
    return Variant(label=msg.label, preset=_opt(msg, "preset"), overrides=overrides_from_pb(msg), persona=fields)


def persona_fields_from_pb(p: pb.Persona, where: str) -> dict[str, Any]:
    """The persona fields set in ``p`` (non-empty text and lists, a set max_tokens), by name."""
    fields: dict[str, Any] = {}
    for name in ("display_name", "system_prompt", "default_preset", "player_name", "post_history_instructions"):
        if getattr(p, name):
            fields[name] = getattr(p, name)
    if p.example_dialogue:
        fields["example_dialogue"] = tuple(ExampleExchange(e.player_line, e.npc_line) for e in p.example_dialogue)
    if p.stop:
        fields["stop"] = tuple(p.stop)
    if p.HasField("max_tokens"):
        fields["max_tokens"] = p.max_tokens
    if p.response_schema.strip():
        fields["response_schema"] = parse_schema(p.response_schema, f"{where}.persona.response_schema")
    return fields


def compare_request_from_pb(msg: pb.CompareRequest) -> tuple[TalkRequest, list[Variant]]:
    talk = TalkRequest(
        persona_id=msg.persona_id, conversation_id=msg.conversation_id, text=msg.text, player_name=msg.player_name
    )
    return talk, [variant_from_pb(v, i) for i, v in enumerate(msg.variants)]


def comparison_to_pb(c: Comparison) -> pb.CompareResponse:
    return pb.CompareResponse(
        results=[
            pb.CompareResult(label=r.label, final=final_to_pb(r.completion), persona=persona_to_pb(r.persona))
            for r in c.results
        ],
        peak_batch=c.peak_batch,
        engine_steps=c.engine_steps,
    )
