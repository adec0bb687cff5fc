"""Protobuf <-> domain conversion. The only module that knows both the wire schema and the core types."""

from __future__ import annotations

import json
from typing import Any, Protocol

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.core.types import (
    ChatRequest,
    Completion,
    Conversation,
    ExampleExchange,
    Message,
    ModelCard,
    Persona,
    Preset,
    ResponseFormat,
    SamplingOverrides,
    StructuredResult,
    TalkRequest,
    Turn,
)
from npcserver.errors import InvalidArgument

_FINISH = {"stop": pb.FINISH_REASON_STOP, "length": pb.FINISH_REASON_LENGTH}


class _SamplingFields(Protocol):
    """The optional sampling fields that chat and Talk requests share."""

    def HasField(self, name: str) -> bool: ...


def _opt(msg: Any, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


def overrides_from_pb(msg: Any) -> SamplingOverrides:
    fields = {f.name for f in msg.DESCRIPTOR.fields}
    return SamplingOverrides(
        temperature=_opt(msg, "temperature"),
        top_p=_opt(msg, "top_p"),
        top_k=_opt(msg, "top_k") if "top_k" in fields else None,
        min_p=_opt(msg, "min_p") if "min_p" in fields else None,
        repeat_penalty=_opt(msg, "repeat_penalty") if "repeat_penalty" in fields else None,
        seed=_opt(msg, "seed"),
        max_tokens=_opt(msg, "max_tokens"),
        stop=tuple(msg.stop) if "stop" in fields else (),
    )


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
    return ChatRequest(
        messages=tuple(Message(m.role, m.content, m.name) for m in msg.messages),
        model=msg.model,
        overrides=overrides_from_pb(msg),
        preset=_opt(msg, "preset"),
        response_format=response_format_from_pb(msg.response_format, unspecified_is_none=False),
        continue_final_message=msg.continue_final_message,
        chat_template=_opt(msg, "chat_template"),
    )


def talk_request_from_pb(msg: pb.TalkRequest) -> TalkRequest:
    return TalkRequest(
        persona_id=msg.persona_id,
        conversation_id=msg.conversation_id,
        text=msg.text,
        overrides=overrides_from_pb(msg),
        preset=_opt(msg, "preset"),
        response_format=response_format_from_pb(msg.response_format, unspecified_is_none=True),
        player_name=msg.player_name,
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
    )


def structured_to_pb(s: StructuredResult | None) -> pb.StructuredOutput | None:
    if s is None:
        return None
    return pb.StructuredOutput(valid=s.valid, error=s.error, schema_name=s.schema_name)


def final_to_pb(c: Completion) -> pb.CompletionFinal:
    return pb.CompletionFinal(
        message=pb.ChatMessage(role="assistant", content=c.text),
        finish_reason=_FINISH[c.finish_reason],
        usage=usage_to_pb(c),
        timings=timings_to_pb(c),
        structured=structured_to_pb(c.structured),
        truncated_turns=c.truncated_turns,
    )


def completion_to_pb(c: Completion) -> pb.CreateChatCompletionResponse:
    return pb.CreateChatCompletionResponse(
        id=c.id,
        object="chat.completion",
        created=c.created,
        model=c.model,
        choices=[
            pb.Choice(
                index=0,
                message=pb.ChatMessage(role="assistant", content=c.text),
                finish_reason=_FINISH[c.finish_reason],
                structured=structured_to_pb(c.structured),
            )
        ],
        usage=usage_to_pb(c),
        timings=timings_to_pb(c),
    )


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
    )
    if p.max_tokens is not None:
        msg.max_tokens = p.max_tokens
    return msg


def conversation_to_pb(c: Conversation) -> pb.Conversation:
    return pb.Conversation(
        persona_id=c.persona_id,
        conversation_id=c.conversation_id,
        turns=[
            pb.Turn(
                player_line=t.player_line,
                npc_line=t.npc_line,
                create_time_ms=t.create_time_ms,
                player_name=t.player_name,
            )
            for t in c.turns
        ],
    )


def conversation_from_pb(msg: pb.Conversation) -> Conversation:
    return Conversation(
        persona_id=msg.persona_id,
        conversation_id=msg.conversation_id,
        turns=tuple(Turn(t.player_line, t.npc_line, t.create_time_ms, t.player_name) for t in msg.turns),
    )


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
    )
