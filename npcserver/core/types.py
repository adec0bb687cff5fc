"""Domain types of the core. No transport imports: doors convert their wire formats to and from these."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from npcserver.engine.base import FinishReason, GenerationStats

# TextDelta is re-exported: it is the stream event doors see, and no door imports the engine.
from npcserver.engine.base import TextDelta as TextDelta

# The store owns the turn record (it imports nothing from the core); re-exported so core code names it here too.
from npcserver.store.base import Memory as Memory
from npcserver.store.base import Summary as Summary
from npcserver.store.base import Turn as Turn

ROLES = ("system", "developer", "user", "assistant", "tool")


def new_id(kind: str) -> str:
    """A unique completion id ("chatcmpl-…", "talk-…")."""
    return f"{kind}-{uuid.uuid4().hex[:24]}"


def _now() -> int:
    return int(time.time())


ResponseKind = Literal["text", "json_object", "json_schema"]


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: str
    content: str
    name: str = ""
    #: Assistant messages: the actions the reply called.
    tool_calls: tuple[ActionCall, ...] = ()
    #: Tool messages: the call whose result ``content`` is.
    tool_call_id: str = ""


@dataclass(frozen=True)
class Action:
    """Something an NPC can do in the game (a tool). ``parameters`` is the arguments' JSON Schema (None: none)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None
    #: The reply that calls it ends with finish reason "action"; the game sends the result with the next Talk.
    await_result: bool = False


ActionMode = Literal["auto", "none", "required", "named"]


@dataclass(frozen=True)
class ActionChoice:
    """Which actions a reply may or must call (OpenAI's tool_choice). ``name`` is for ``named``."""

    mode: ActionMode = "auto"
    name: str = ""


@dataclass(frozen=True)
class ActionCall:
    """A validated call to a declared action; ``arguments`` is JSON object text. Also a stream event."""

    id: str
    name: str
    arguments: str
    #: Its position among the reply's calls.
    index: int = 0
    #: The action awaits its result (then the reply's finish reason is "action").
    await_result: bool = False
    #: Where in the reply's text the call was made (characters of spoken text before it).
    at: int = 0


@dataclass(frozen=True)
class ActionResult:
    """The game's result for a call that awaited one."""

    call_id: str
    content: str


@dataclass(frozen=True)
class Document:
    """A reference document for a chat completion (the chat templates' ``documents``)."""

    text: str
    title: str = ""


@dataclass(frozen=True)
class ReasoningDelta:
    """Newly sampled reasoning of a thinking model: never part of the reply's text, nor of a stored turn."""

    text: str


@dataclass(frozen=True)
class ResponseFormat:
    """The requested reply shape. ``schema`` is the parsed JSON Schema for ``json_schema``."""

    type: ResponseKind = "text"
    schema: dict[str, Any] | None = None
    name: str = ""


@dataclass(frozen=True)
class SamplingOverrides:
    """Sampling fields a request set explicitly (None = not set, fall back to preset/persona/server)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class ChatRequest:
    """A chat completion request (OpenAI shape)."""

    messages: tuple[Message, ...]
    model: str = ""
    overrides: SamplingOverrides = SamplingOverrides()
    preset: str | None = None
    response_format: ResponseFormat | None = None
    continue_final_message: bool = False
    chat_template: str | None = None
    #: Whether a thinking model may reason before it answers (None: the template's own default).
    enable_thinking: bool | None = None
    #: False renders the conversation without opening the assistant's reply (vLLM's add_generation_prompt).
    add_generation_prompt: bool = True
    #: How message contents reach the chat template: "string" (text) or "openai" (a list of text parts).
    chat_template_content_format: str = "auto"
    #: Reference documents: given to templates that read ``documents``, else rendered before the conversation.
    documents: tuple[Document, ...] = ()
    #: Actions (tools) the model may call, and which it may or must (auto when unset).
    tools: tuple[Action, ...] = ()
    tool_choice: ActionChoice | None = None
    #: Set when the request is made, so a door can label every streamed chunk before the reply is done.
    id: str = field(default_factory=lambda: new_id("chatcmpl"))
    created: int = field(default_factory=_now)


@dataclass(frozen=True)
class TalkRequest:
    """The player says a line to an NPC."""

    persona_id: str
    conversation_id: str
    text: str
    overrides: SamplingOverrides = SamplingOverrides()
    preset: str | None = None
    #: None keeps the persona's response schema; a value overrides it (``text`` turns it off).
    response_format: ResponseFormat | None = None
    player_name: str = ""
    #: Whether a thinking model may reason before the NPC answers (None: the persona's default).
    enable_thinking: bool | None = None
    #: Actions for this turn only (added to the persona's), and which the NPC may or must call.
    actions: tuple[Action, ...] = ()
    #: None: auto, except on a turn that sends action_results, where the NPC speaks about them (none).
    action_choice: ActionChoice | None = None
    #: Results for the calls the previous reply awaited (``text`` is then empty).
    action_results: tuple[ActionResult, ...] = ()
    #: The client's id for this line (AIP-155), the same on every retry: a Talk whose turn is stored replays it.
    request_id: str = ""
    #: Facts from the game for this line only ("it is night"): in the prompt, never stored as dialogue.
    game_state: tuple[str, ...] = ()
    id: str = field(default_factory=lambda: new_id("talk"))
    created: int = field(default_factory=_now)


@dataclass(frozen=True)
class Preset:
    """A named set of sampling parameters."""

    name: str
    description: str
    temperature: float
    top_p: float
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1


@dataclass(frozen=True)
class ExampleExchange:
    """One example exchange of a persona."""

    player_line: str
    npc_line: str


@dataclass(frozen=True)
class Persona:
    """Who an NPC is and how it talks."""

    id: str
    display_name: str
    system_prompt: str
    example_dialogue: tuple[ExampleExchange, ...] = ()
    default_preset: str = ""
    #: Parsed JSON Schema every reply must match, or None for free text.
    response_schema: dict[str, Any] | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    player_name: str = ""
    description: str = ""
    #: Lines the NPC may open a conversation with (a character card's greetings); the game picks one to show.
    opening_lines: tuple[str, ...] = ()
    #: Rendered after the history, right before the NPC answers (a character card's post_history_instructions).
    post_history_instructions: str = ""
    #: The persona file it comes from ("" for one created through the API, which lives in the store).
    source: str = ""
    #: Why its file's latest version did not load ("" when it did); the last good version stays live meanwhile.
    load_error: str = ""
    #: The imported character card, kept whole (npcserver.core.cards) so an export returns what was imported.
    card: dict[str, Any] | None = None
    #: Actions the NPC can take in every conversation.
    actions: tuple[Action, ...] = ()
    #: Whether a thinking model may reason before this NPC answers, unless a Talk says (None: the template's own).
    enable_thinking: bool | None = None
    #: After each stored reply, the model proposes memories of the exchange (structured output, in the background).
    propose_memories: bool = False


@dataclass(frozen=True)
class Conversation:
    """A conversation's stored turns, oldest first."""

    persona_id: str
    conversation_id: str
    turns: tuple[Turn, ...] = ()
    #: The rolling summary (None: none yet) and the memories, so an export restores everything.
    summary: Summary | None = None
    memories: tuple[Memory, ...] = ()


@dataclass(frozen=True)
class StructuredResult:
    """Outcome of structured output. ``valid`` is never True for a cut-off or non-matching reply."""

    valid: bool
    error: str = ""
    schema_name: str = ""
    #: The parsed JSON value when it parsed (even if it did not validate), else None.
    value: Any = None


@dataclass
class Completion:
    """A finished reply: the last event of a stream, and the whole result of a unary call."""

    id: str
    model: str
    created: int
    text: str
    finish_reason: FinishReason
    stats: GenerationStats
    load_ms: float = 0.0
    structured: StructuredResult | None = None
    truncated_turns: int = 0
    #: The reply's validated action calls, in order.
    action_calls: tuple[ActionCall, ...] = ()
    #: For Talk: whether the turn was stored.
    stored: bool = False
    #: For Talk: the reply is the turn stored earlier under the same request id, not generated again.
    replayed: bool = False
    #: Milliseconds from the service accepting the request to this result (set by the service layer).
    total_ms: float = 0.0
    #: Milliseconds this request waited for the model to load again after a keep_alive unload (0 when loaded).
    model_load_ms: float = 0.0
    #: A thinking model's reasoning, apart from ``text`` ("" when it did not reason).
    reasoning: str = ""

    @property
    def prompt_tokens(self) -> int:
        return self.stats.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self.stats.completion_tokens


#: What a streaming core call yields: deltas, then one Completion.
StreamEvent = TextDelta | ReasoningDelta | ActionCall | Completion


@dataclass(frozen=True)
class ModelCard:
    """A loaded model, for ListModels and /v1/models."""

    id: str
    created: int
    context_size: int
    backend: str
    gpu_layers: int
    has_chat_template: bool
    extra: dict[str, str] = field(default_factory=dict)
    #: False while the model is unloaded (keep_alive); the next generation loads it again.
    loaded: bool = True
    #: Size of the model file in bytes (0 when unknown).
    file_bytes: int = 0
