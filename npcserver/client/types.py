"""The SDK's own value types: plain dataclasses that own their protobuf conversion.

Callers never need to touch generated protobuf classes; every dataclass here has ``from_pb`` (and, where the
server accepts it, ``to_pb``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from npcserver.api.v1 import npcserver_pb2 as pb

#: "action": the reply called an action that awaits its result (send it with ``action_results``).
FinishReason = Literal["stop", "length", "action", "unspecified"]

_FINISH_REASONS: dict[int, FinishReason] = {
    pb.FINISH_REASON_UNSPECIFIED: "unspecified",
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_ACTION: "action",
}


def _f32(value: float) -> float:
    """A proto float (float32) as the short decimal it was written as: 0.699999988 -> 0.7."""
    return float(f"{value:.7g}")


@dataclass(frozen=True)
class ChatMessage:
    """One chat message, as in OpenAI's and RamaLama's chat APIs."""

    role: str
    content: str
    name: str = ""

    @classmethod
    def from_pb(cls, msg: pb.ChatMessage) -> ChatMessage:
        return cls(role=msg.role, content=msg.content, name=msg.name)

    def to_pb(self) -> pb.ChatMessage:
        return pb.ChatMessage(role=self.role, content=self.content, name=self.name)


#: What ``history`` accepts: ChatMessage objects or OpenAI-style dicts ``{"role": ..., "content": ...}``.
MessageLike = ChatMessage | Mapping[str, str]


def to_message(item: MessageLike) -> ChatMessage:
    """Normalises a history entry; a dict needs ``role`` and ``content``."""
    if isinstance(item, ChatMessage):
        return item
    try:
        return ChatMessage(role=item["role"], content=item["content"], name=item.get("name", ""))
    except KeyError as exc:
        raise ValueError(f"a history message needs 'role' and 'content' keys, got {sorted(item)}") from exc


@dataclass(frozen=True)
class ResponseFormat:
    """The shape of a reply: free text, any JSON object, or JSON matching a schema.

    Build one with :meth:`text`, :meth:`json_object` or :meth:`json_schema`. Anywhere the SDK takes a response
    format it also accepts the strings ``"text"`` / ``"json_object"``, an OpenAI-style dict
    (``{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}``) or a bare JSON Schema dict.
    """

    type: Literal["text", "json_object", "json_schema"]
    schema: Mapping[str, Any] | None = None
    name: str = ""

    @classmethod
    def text(cls) -> ResponseFormat:
        return cls("text")

    @classmethod
    def json_object(cls) -> ResponseFormat:
        return cls("json_object")

    @classmethod
    def json_schema(cls, schema: Mapping[str, Any], name: str = "") -> ResponseFormat:
        return cls("json_schema", schema=schema, name=name)

    def to_pb(self) -> pb.ResponseFormat:
        if self.type == "text":
            return pb.ResponseFormat(type=pb.ResponseFormat.TYPE_TEXT)
        if self.type == "json_object":
            return pb.ResponseFormat(type=pb.ResponseFormat.TYPE_JSON_OBJECT)
        return pb.ResponseFormat(
            type=pb.ResponseFormat.TYPE_JSON_SCHEMA,
            json_schema=pb.JsonSchema(name=self.name, schema=json.dumps(self.schema or {}), strict=True),
        )


ResponseFormatLike = ResponseFormat | str | Mapping[str, Any]

_OPENAI_FORMAT_TYPES = ("text", "json_object", "json_schema")


def to_response_format(value: ResponseFormatLike) -> ResponseFormat:
    """Normalises the accepted spellings of a response format (see :class:`ResponseFormat`)."""
    if isinstance(value, ResponseFormat):
        return value
    if isinstance(value, str):
        if value == "text":
            return ResponseFormat.text()
        if value == "json_object":
            return ResponseFormat.json_object()
        raise ValueError(f"response_format string must be 'text' or 'json_object', got {value!r}")
    kind = value.get("type")
    # JSON Schema "type" values (object, string, ...) never collide with OpenAI's format types.
    if kind in _OPENAI_FORMAT_TYPES:
        if kind == "json_schema":
            spec = value.get("json_schema")
            if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
                raise ValueError("response_format {'type': 'json_schema'} needs json_schema.schema as a dict")
            return ResponseFormat.json_schema(spec["schema"], name=str(spec.get("name", "")))
        return ResponseFormat.text() if kind == "text" else ResponseFormat.json_object()
    return ResponseFormat.json_schema(value)


@dataclass(frozen=True)
class Usage:
    """Token counts."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_pb(cls, msg: pb.Usage) -> Usage:
        return cls(msg.prompt_tokens, msg.completion_tokens, msg.total_tokens)


@dataclass(frozen=True)
class Timings:
    """Where the time went (Ollama-style final stats), in milliseconds and token counts."""

    prompt_eval_count: int = 0
    prompt_eval_ms: float = 0.0
    eval_count: int = 0
    eval_ms: float = 0.0
    time_to_first_token_ms: float = 0.0
    load_ms: float = 0.0
    queue_ms: float = 0.0
    cached_prompt_tokens: int = 0

    @classmethod
    def from_pb(cls, msg: pb.Timings) -> Timings:
        return cls(
            prompt_eval_count=msg.prompt_eval_count,
            prompt_eval_ms=msg.prompt_eval_ms,
            eval_count=msg.eval_count,
            eval_ms=msg.eval_ms,
            time_to_first_token_ms=msg.time_to_first_token_ms,
            load_ms=msg.load_ms,
            queue_ms=msg.queue_ms,
            cached_prompt_tokens=msg.cached_prompt_tokens,
        )

    @property
    def tokens_per_second(self) -> float:
        """Decode speed after the first token (0 when too short to measure)."""
        return (self.eval_count - 1) * 1000.0 / self.eval_ms if self.eval_ms > 0 and self.eval_count > 1 else 0.0


@dataclass(frozen=True)
class StructuredOutput:
    """The outcome of a JSON response format. ``valid`` is never True for a cut-off or non-matching reply."""

    valid: bool
    error: str = ""
    schema_name: str = ""

    @classmethod
    def from_pb(cls, msg: pb.StructuredOutput) -> StructuredOutput:
        return cls(valid=msg.valid, error=msg.error, schema_name=msg.schema_name)


@dataclass(frozen=True)
class Action:
    """Something an NPC can do in the game (a tool): ``parameters`` is the arguments' JSON Schema."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] | None = None
    #: The reply that calls it ends with finish_reason "action"; send the result back with ``action_results``.
    await_result: bool = False

    def to_pb(self) -> pb.Action:
        schema = json.dumps(dict(self.parameters)) if self.parameters is not None else ""
        return pb.Action(
            name=self.name, description=self.description, parameters_schema=schema, await_result=self.await_result
        )


@dataclass(frozen=True)
class ActionCall:
    """A validated call the NPC made to one of its actions."""

    id: str
    name: str
    #: The arguments as JSON text (valid against the action's schema); ``args`` parses them.
    arguments: str

    @property
    def args(self) -> Any:
        return json.loads(self.arguments)

    @classmethod
    def from_pb(cls, c: pb.ActionCall) -> ActionCall:
        return cls(c.id, c.name, c.arguments)


@dataclass(frozen=True)
class ChatResult:
    """A finished reply with everything the server reported about it (chat completion or Talk)."""

    message: ChatMessage
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    #: Present only when a JSON response format applied.
    structured: StructuredOutput | None = None
    #: Talk only: how many of the oldest turns were left out of the prompt to fit the context window.
    truncated_turns: int = 0
    id: str = ""
    model: str = ""
    created: int = 0
    #: A thinking model's reasoning, kept out of the reply's text ("" when it did not reason).
    reasoning: str = ""
    #: The actions the NPC called (tools, for a chat completion), in order.
    action_calls: tuple[ActionCall, ...] = ()
    #: Talk only: the reply stored earlier for this line's request id (a retry), not generated again.
    replayed: bool = False

    @property
    def text(self) -> str:
        """The reply text."""
        return self.message.content

    def json(self) -> Any:
        """The reply parsed as JSON. Raises ValueError when the server did not flag it as valid structured output."""
        if self.structured is None or not self.structured.valid:
            reason = "no JSON response format applied" if self.structured is None else self.structured.error
            raise ValueError(f"the reply is not valid structured output: {reason}")
        return json.loads(self.message.content)

    @classmethod
    def from_final(cls, final: pb.CompletionFinal, *, id: str = "", model: str = "", created: int = 0) -> ChatResult:
        return cls(
            message=ChatMessage.from_pb(final.message),
            finish_reason=_FINISH_REASONS.get(final.finish_reason, "unspecified"),
            usage=Usage.from_pb(final.usage),
            timings=Timings.from_pb(final.timings),
            structured=StructuredOutput.from_pb(final.structured) if final.HasField("structured") else None,
            truncated_turns=final.truncated_turns,
            id=id,
            model=model,
            created=created,
            reasoning=final.message.reasoning_content,
            action_calls=tuple(ActionCall.from_pb(c) for c in final.action_calls),
            replayed=final.replayed,
        )

    @classmethod
    def from_response(cls, resp: pb.CreateChatCompletionResponse) -> ChatResult:
        if not resp.choices:
            raise ValueError("the server returned a chat completion with no choices")
        choice = resp.choices[0]
        return cls(
            message=ChatMessage.from_pb(choice.message),
            finish_reason=_FINISH_REASONS.get(choice.finish_reason, "unspecified"),
            action_calls=tuple(ActionCall.from_pb(c) for c in choice.message.tool_calls),
            usage=Usage.from_pb(resp.usage),
            timings=Timings.from_pb(resp.timings),
            structured=StructuredOutput.from_pb(choice.structured) if choice.HasField("structured") else None,
            id=resp.id,
            model=resp.model,
            created=resp.created,
            reasoning=choice.message.reasoning_content,
        )


@dataclass(frozen=True)
class ExampleExchange:
    """One exchange of example dialogue."""

    player_line: str
    npc_line: str


@dataclass(frozen=True)
class Persona:
    """Who an NPC is and how it talks. ``response_schema`` is a parsed JSON Schema, or None for free text."""

    id: str
    display_name: str
    system_prompt: str
    example_dialogue: tuple[ExampleExchange, ...] = ()
    default_preset: str = ""
    response_schema: Mapping[str, Any] | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    player_name: str = ""
    description: str = ""
    #: Lines the NPC may open a conversation with (a character card's greetings).
    opening_lines: tuple[str, ...] = ()
    #: Rendered after the conversation history, right before the NPC answers.
    post_history_instructions: str = ""
    #: Set by the server: the persona file that defines it ("" for one created through the API; only its file
    #: changes it), and why that file's latest version did not load ("" when it did).
    source: str = ""
    load_error: str = ""

    @classmethod
    def from_pb(cls, msg: pb.Persona) -> Persona:
        return cls(
            id=msg.id,
            display_name=msg.display_name,
            system_prompt=msg.system_prompt,
            example_dialogue=tuple(ExampleExchange(e.player_line, e.npc_line) for e in msg.example_dialogue),
            default_preset=msg.default_preset,
            response_schema=json.loads(msg.response_schema) if msg.response_schema else None,
            max_tokens=msg.max_tokens if msg.HasField("max_tokens") else None,
            stop=tuple(msg.stop),
            player_name=msg.player_name,
            description=msg.description,
            opening_lines=tuple(msg.opening_lines),
            post_history_instructions=msg.post_history_instructions,
            source=msg.source,
            load_error=msg.load_error,
        )

    def to_pb(self) -> pb.Persona:
        msg = pb.Persona(
            id=self.id,
            display_name=self.display_name,
            system_prompt=self.system_prompt,
            example_dialogue=[
                pb.ExampleExchange(player_line=e.player_line, npc_line=e.npc_line) for e in self.example_dialogue
            ],
            default_preset=self.default_preset,
            response_schema=json.dumps(self.response_schema) if self.response_schema is not None else "",
            stop=list(self.stop),
            player_name=self.player_name,
            description=self.description,
            opening_lines=list(self.opening_lines),
            post_history_instructions=self.post_history_instructions,
        )
        if self.max_tokens is not None:
            msg.max_tokens = self.max_tokens
        return msg


@dataclass(frozen=True)
class Turn:
    """One stored turn: the player's line and the NPC's reply."""

    player_line: str
    npc_line: str
    create_time_ms: int = 0
    player_name: str = ""

    @classmethod
    def from_pb(cls, msg: pb.Turn) -> Turn:
        return cls(msg.player_line, msg.npc_line, msg.create_time_ms, msg.player_name)

    def to_pb(self) -> pb.Turn:
        return pb.Turn(
            player_line=self.player_line,
            npc_line=self.npc_line,
            create_time_ms=self.create_time_ms,
            player_name=self.player_name,
        )


@dataclass(frozen=True)
class Memory:
    """A fact a conversation remembers. ``importance``: 1 (trivia) to 10 (life-changing); ``source``: "game" or
    "model" (proposed by the NPC). ``id`` and ``create_time_ms`` are the server's."""

    text: str
    importance: int = 5
    source: str = "game"
    id: int = 0
    create_time_ms: int = 0

    @classmethod
    def from_pb(cls, msg: pb.Memory) -> Memory:
        return cls(msg.text, msg.importance, msg.source, msg.id, msg.create_time_ms)

    def to_pb(self) -> pb.Memory:
        return pb.Memory(
            text=self.text,
            importance=self.importance,
            source=self.source,
            id=self.id,
            create_time_ms=self.create_time_ms,
        )


@dataclass(frozen=True)
class Summary:
    """A conversation's rolling summary of the turns before ``through_turn`` ("" when there is none yet)."""

    text: str
    through_turn: int = 0
    update_time_ms: int = 0

    @classmethod
    def from_pb(cls, msg: pb.ConversationSummary) -> Summary:
        return cls(msg.text, msg.through_turn, msg.update_time_ms)

    def to_pb(self) -> pb.ConversationSummary:
        return pb.ConversationSummary(
            text=self.text, through_turn=self.through_turn, update_time_ms=self.update_time_ms
        )


@dataclass(frozen=True)
class Conversation:
    """A whole conversation, oldest turn first: what history and export return and what import takes, with its
    rolling summary and memories.

    ``to_bytes`` / ``to_json`` give a form to keep in a save file; ``from_bytes`` / ``from_json`` read it back.
    """

    persona_id: str
    conversation_id: str
    turns: tuple[Turn, ...] = ()
    summary: Summary | None = None
    memories: tuple[Memory, ...] = ()

    @classmethod
    def from_pb(cls, msg: pb.Conversation) -> Conversation:
        return cls(
            msg.persona_id,
            msg.conversation_id,
            tuple(Turn.from_pb(t) for t in msg.turns),
            Summary.from_pb(msg.summary) if msg.HasField("summary") else None,
            tuple(Memory.from_pb(m) for m in msg.memories),
        )

    def to_pb(self) -> pb.Conversation:
        return pb.Conversation(
            persona_id=self.persona_id,
            conversation_id=self.conversation_id,
            turns=[t.to_pb() for t in self.turns],
            summary=self.summary.to_pb() if self.summary is not None else None,
            memories=[m.to_pb() for m in self.memories],
        )

    def to_bytes(self) -> bytes:
        """The protobuf encoding, the same bytes any other client (Unity, Godot) would store."""
        return self.to_pb().SerializeToString()

    @classmethod
    def from_bytes(cls, data: bytes) -> Conversation:
        msg = pb.Conversation()
        msg.ParseFromString(data)
        return cls.from_pb(msg)

    def to_json(self) -> str:
        """A JSON form with the proto's snake_case field names."""
        return json.dumps(
            {
                "persona_id": self.persona_id,
                "conversation_id": self.conversation_id,
                "turns": [
                    {
                        "player_line": t.player_line,
                        "npc_line": t.npc_line,
                        "create_time_ms": t.create_time_ms,
                        "player_name": t.player_name,
                    }
                    for t in self.turns
                ],
                **(
                    {
                        "summary": {
                            "text": self.summary.text,
                            "through_turn": self.summary.through_turn,
                            "update_time_ms": self.summary.update_time_ms,
                        }
                    }
                    if self.summary is not None
                    else {}
                ),
                "memories": [
                    {
                        "text": m.text,
                        "importance": m.importance,
                        "source": m.source,
                        "id": m.id,
                        "create_time_ms": m.create_time_ms,
                    }
                    for m in self.memories
                ],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Conversation:
        data = json.loads(text)
        return cls(
            persona_id=data["persona_id"],
            conversation_id=data["conversation_id"],
            turns=tuple(
                Turn(t["player_line"], t["npc_line"], int(t.get("create_time_ms", 0)), t.get("player_name", ""))
                for t in data.get("turns", [])
            ),
            summary=(
                Summary(
                    data["summary"]["text"],
                    int(data["summary"].get("through_turn", 0)),
                    int(data["summary"].get("update_time_ms", 0)),
                )
                if data.get("summary")
                else None
            ),
            memories=tuple(
                Memory(
                    m["text"],
                    int(m.get("importance", 5)),
                    m.get("source", "game"),
                    int(m.get("id", 0)),
                    int(m.get("create_time_ms", 0)),
                )
                for m in data.get("memories", [])
            ),
        )


@dataclass(frozen=True)
class Preset:
    """A named set of sampling parameters. ``is_default`` marks the server's default preset."""

    name: str
    description: str
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    is_default: bool = False

    @classmethod
    def from_pb(cls, msg: pb.Preset, *, default: str = "") -> Preset:
        return cls(
            name=msg.name,
            description=msg.description,
            temperature=_f32(msg.temperature),
            top_p=_f32(msg.top_p),
            top_k=msg.top_k,
            min_p=_f32(msg.min_p),
            repeat_penalty=_f32(msg.repeat_penalty),
            is_default=msg.name == default,
        )


@dataclass(frozen=True)
class ModelInfo:
    """A model the server has loaded."""

    id: str
    created: int
    owned_by: str
    context_size: int
    backend: str
    gpu_layers: int
    has_chat_template: bool

    @classmethod
    def from_pb(cls, msg: pb.Model) -> ModelInfo:
        return cls(
            id=msg.id,
            created=msg.created,
            owned_by=msg.owned_by,
            context_size=msg.context_size,
            backend=msg.backend,
            gpu_layers=msg.gpu_layers,
            has_chat_template=msg.has_chat_template,
        )


def history_messages(message: str, history: Sequence[MessageLike] | None) -> list[ChatMessage]:
    """The message list for ``chat(message, history)``: the history, then the new user message."""
    messages = [to_message(m) for m in history or ()]
    messages.append(ChatMessage(role="user", content=message))
    return messages
