"""Request bodies of the OpenAI routes, and their conversion to the core's request types (the NPC routes speak
proto-JSON instead: see ``protojson``).

These check only the JSON shape (types, required fields). Value rules (temperature range, empty messages, known
roles, max_tokens, message size) live in the core, so both doors enforce them the same way.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from npcserver.core.types import (
    Action,
    ActionCall,
    ActionChoice,
    ChatRequest,
    Document,
    Message,
    ResponseFormat,
    SamplingOverrides,
)
from npcserver.errors import InvalidArgument


class _Body(BaseModel):
    # OpenAI clients send fields we do not use (user, logprobs, ...); ignoring them is what OpenAI-compatible
    # servers do.
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Body):
    """One part of a multi-part message content. Only text parts are supported."""

    type: str
    text: str | None = None


class FunctionCallBody(_Body):
    name: str
    #: The arguments as JSON text, as OpenAI sends them.
    arguments: str = "{}"


class ToolCallBody(_Body):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallBody

    def to_core(self, index: int) -> ActionCall:
        return ActionCall(self.id, self.function.name, self.function.arguments, index=index)


class FunctionBody(_Body):
    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None
    #: Accepted for compatibility: arguments always match the schema (grammar while sampling, validation after).
    strict: bool | None = None


class ToolBody(_Body):
    type: Literal["function"]
    function: FunctionBody

    def to_core(self) -> Action:
        f = self.function
        return Action(name=f.name, description=f.description, parameters=f.parameters)


class NamedFunction(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: NamedFunction


def tool_choice_to_core(choice: str | NamedToolChoice | None) -> ActionChoice | None:
    if choice is None:
        return None
    if isinstance(choice, NamedToolChoice):
        return ActionChoice("named", choice.function.name)
    if choice not in ("none", "auto", "required"):
        raise InvalidArgument(
            f'tool_choice {choice!r} is unknown; use "none", "auto", "required" or '
            '{"type": "function", "function": {"name": ...}}',
            param="tool_choice",
        )
    return ActionChoice(choice)  # type: ignore[arg-type]


class ChatMessageBody(_Body):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallBody] | None = None
    tool_call_id: str | None = None

    def to_core(self, index: int) -> Message:
        if self.content is None:
            text = ""
        elif isinstance(self.content, str):
            text = self.content
        else:
            parts = []
            for part in self.content:
                if part.type != "text" or part.text is None:
                    raise InvalidArgument(
                        f"messages[{index}].content has a {part.type!r} part; only text parts are supported",
                        param=f"messages[{index}].content",
                    )
                parts.append(part.text)
            text = "".join(parts)
        return Message(
            role=self.role,
            content=text,
            name=self.name or "",
            tool_calls=tuple(c.to_core(i) for i, c in enumerate(self.tool_calls or ())),
            tool_call_id=self.tool_call_id or "",
        )


class JsonSchemaBody(_Body):
    name: str = ""
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormatBody(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaBody | None = None

    def to_core(self) -> ResponseFormat:
        if self.type != "json_schema":
            return ResponseFormat(type=self.type)
        if self.json_schema is None or self.json_schema.schema_ is None:
            raise InvalidArgument(
                'response_format type json_schema needs json_schema: {"name": ..., "schema": {...}}',
                param="response_format.json_schema",
            )
        return ResponseFormat(type="json_schema", schema=self.json_schema.schema_, name=self.json_schema.name)


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    #: OpenAI's newer name for max_tokens.
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    #: npcserver extra: a preset name (see GET /v1/presets or ListPresets).
    preset: str | None = None
    response_format: ResponseFormatBody | None = None

    def overrides(self) -> SamplingOverrides:
        stop: tuple[str, ...] = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        max_tokens = self.max_tokens if self.max_tokens is not None else self.max_completion_tokens
        return SamplingOverrides(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            seed=self.seed,
            max_tokens=max_tokens,
            stop=stop,
        )


class DocumentBody(_Body):
    """A reference document, as HF chat templates take them: a text (or content) and an optional title."""

    text: str | None = None
    content: str | None = None
    title: str = ""

    def to_core(self, index: int) -> Document:
        text = self.text if self.text is not None else self.content
        if text is None:
            raise InvalidArgument(f'documents[{index}] needs a "text" (or "content")', param=f"documents[{index}]")
        return Document(text=text, title=self.title)


#: chat_template_kwargs this server passes on to the chat template (vLLM's way to send enable_thinking).
TEMPLATE_KWARGS = ("enable_thinking",)

#: OpenAI chat-completion fields this server cannot honour, with the values that leave them off (accepted). Any
#: other value is a 400 naming the field: it would change the reply, so it is never silently dropped.
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
    "logit_bias": (None, {}),
    "reasoning_effort": (None,),
    "modalities": (None, ["text"]),
    "audio": (None,),
    "prediction": (None,),
    "web_search_options": (None,),
}


class ChatCompletionBody(_Sampling):
    """POST /v1/chat/completions."""

    # Unknown fields are kept (not parsed) so the unsupported ones can be refused by name; the rest (user, store,
    # metadata, service_tier, ...) do not change the reply and are ignored.
    model_config = ConfigDict(extra="allow")

    model: str = ""
    messages: list[ChatMessageBody]
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    continue_final_message: bool = False
    chat_template: str | None = None
    #: A thinking model may reason first (its reasoning comes back as reasoning_content, never as content).
    enable_thinking: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: bool = True
    chat_template_content_format: Literal["auto", "string", "openai"] = "auto"
    documents: list[DocumentBody] | None = None
    tools: list[ToolBody] | None = None
    tool_choice: str | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None

    def to_core(self) -> ChatRequest:
        for name, value in (self.model_extra or {}).items():
            if name in UNSUPPORTED and value not in UNSUPPORTED[name]:
                hint = "; use enable_thinking" if name == "reasoning_effort" else ""
                raise InvalidArgument(f"{name} is not supported by this server; leave it out{hint}", param=name)
        if self.parallel_tool_calls:
            # Refused, never ignored: a client that relies on several calls per reply must know.
            raise InvalidArgument(
                "parallel_tool_calls: true is not supported: this server makes at most one tool call per reply; set "
                "it to false or leave it out",
                param="parallel_tool_calls",
            )
        enable_thinking = self.enable_thinking
        for key, value in (self.chat_template_kwargs or {}).items():
            if key not in TEMPLATE_KWARGS:
                raise InvalidArgument(
                    f"chat_template_kwargs.{key} is not supported; this server passes only: "
                    f"{', '.join(TEMPLATE_KWARGS)}",
                    param=f"chat_template_kwargs.{key}",
                )
            if not isinstance(value, bool):
                raise InvalidArgument(
                    f"chat_template_kwargs.{key} must be true or false", param=f"chat_template_kwargs.{key}"
                )
            if enable_thinking is None:
                enable_thinking = value
        return ChatRequest(
            messages=tuple(m.to_core(i) for i, m in enumerate(self.messages)),
            model=self.model,
            overrides=self.overrides(),
            preset=self.preset,
            response_format=self.response_format.to_core() if self.response_format else None,
            continue_final_message=self.continue_final_message,
            chat_template=self.chat_template,
            enable_thinking=enable_thinking,
            add_generation_prompt=self.add_generation_prompt,
            chat_template_content_format=self.chat_template_content_format,
            documents=tuple(d.to_core(i) for i, d in enumerate(self.documents or ())),
            tools=tuple(t.to_core() for t in self.tools or ()),
            tool_choice=tool_choice_to_core(self.tool_choice),
        )
