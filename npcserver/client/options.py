"""Request options and their protobuf builders, shared by the sync and async clients."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import TypedDict
from urllib.parse import quote

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.client.types import Action, ChatMessage, ResponseFormatLike, to_response_format

#: The conversation's key as a header (``persona/conversation``, percent-encoded), for a proxy's consistent hashing.
CONVERSATION_HEADER = "x-npc-conversation"


class ChatOptions(TypedDict, total=False):
    """Optional chat-completion fields. Unset ones fall back to the preset, then the server default."""

    #: Model id from ``list_models``; empty means the server's default model.
    model: str
    #: Sampling temperature in [0, 2]; 0 is greedy.
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    #: Most tokens to generate; 0 means until a stop or the end of the context window.
    max_tokens: int
    #: Sequences that end the reply; a single string is one sequence.
    stop: Sequence[str] | str
    seed: int
    #: A preset name from ``list_presets``.
    preset: str
    response_format: ResponseFormatLike
    #: Continue the last (assistant) message instead of starting a new one.
    continue_final_message: bool
    #: A Jinja2 chat template overriding the model's own.
    chat_template: str
    #: Whether a thinking model may reason first; its reasoning comes back as ``ChatResult.reasoning``.
    enable_thinking: bool
    #: False renders the conversation without opening the assistant's reply.
    add_generation_prompt: bool
    #: "auto", "string" or "openai": how message contents reach the chat template.
    chat_template_content_format: str
    #: Reference documents: ``{"text": ..., "title": ...}`` each.
    documents: Sequence[Mapping[str, str]]
    #: Seconds before the call is abandoned (DEADLINE_EXCEEDED); default: the client's ``timeout``.
    timeout: float


class TalkOptions(TypedDict, total=False):
    """Optional Talk fields. Unset ones fall back to the preset named here, the persona's, then the server's."""

    preset: str
    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    #: Overrides the persona's response schema (``"text"`` turns it off).
    response_format: ResponseFormatLike
    #: The player's name for this line; empty means the persona's player_name.
    player_name: str
    #: Whether a thinking model may reason first (unset: the persona's default); never part of the NPC's line.
    enable_thinking: bool
    #: Actions for this turn only, added to the persona's.
    actions: Sequence[Action]
    #: "auto" (default), "none", "required", or the name of the one action the NPC must call.
    action_choice: str
    #: Results of the calls the previous reply awaited, by call id (the text must then be "").
    action_results: Mapping[str, str]
    #: Seconds before the call is abandoned (DEADLINE_EXCEEDED); default: the client's ``timeout``.
    timeout: float
    #: The line's id (AIP-155), the same on every retry of it: a retry of a line already answered returns the stored
    #: reply instead of a new one. Default: a new UUID for each call (``talk`` reuses it on its own retries).
    request_id: str
    #: Facts from the game for this line only ("it is night"): in the prompt, never stored as dialogue.
    game_state: Sequence[str]


def _check_names(options: Mapping[str, object], allowed: type, what: str) -> None:
    # Keyword options are a TypedDict only for type checkers: an unknown name would otherwise vanish unnoticed.
    unknown = sorted(set(options) - set(allowed.__annotations__))
    if unknown:
        raise TypeError(f"{what} got unknown options {unknown}; known: {sorted(allowed.__annotations__)}")


def _stops(stop: Sequence[str] | str) -> list[str]:
    # A lone string is one stop sequence, not a sequence of one-character stops.
    return [stop] if isinstance(stop, str) else list(stop)


def chat_request(messages: Sequence[ChatMessage], options: ChatOptions) -> pb.CreateChatCompletionRequest:
    """Builds the unary request; the streaming one has identical fields (see :func:`stream_chat_request`)."""
    _check_names(options, ChatOptions, "a chat completion")
    req = pb.CreateChatCompletionRequest(
        model=options.get("model", ""),
        messages=[m.to_pb() for m in messages],
        stop=_stops(options.get("stop", ())),
        continue_final_message=options.get("continue_final_message", False),
    )
    # Explicit presence matters: an unset optional field means "use the preset / server default".
    for name in (
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repeat_penalty",
        "max_tokens",
        "seed",
        "preset",
        "chat_template",
        "enable_thinking",
        "add_generation_prompt",
        "chat_template_content_format",
    ):
        if name in options:
            setattr(req, name, options[name])
    for doc in options.get("documents", ()):
        req.documents.add(text=doc.get("text", ""), title=doc.get("title", ""))
    if "response_format" in options:
        req.response_format.CopyFrom(to_response_format(options["response_format"]).to_pb())
    return req


def stream_chat_request(messages: Sequence[ChatMessage], options: ChatOptions) -> pb.StreamChatCompletionRequest:
    """The streaming request: the same fields as the unary one, so it is copied over by wire encoding."""
    return pb.StreamChatCompletionRequest.FromString(chat_request(messages, options).SerializeToString())


def talk_request(npc: str, conversation: str, text: str, options: TalkOptions) -> pb.TalkRequest:
    _check_names(options, TalkOptions, "Talk")
    req = pb.TalkRequest(
        persona_id=npc, conversation_id=conversation, text=text, player_name=options.get("player_name", "")
    )
    for name in ("preset", "temperature", "top_p", "max_tokens", "seed", "enable_thinking"):
        if name in options:
            setattr(req, name, options[name])
    if "response_format" in options:
        req.response_format.CopyFrom(to_response_format(options["response_format"]).to_pb())
    req.actions.extend(a.to_pb() for a in options.get("actions", ()))
    if "action_choice" in options:
        choice = options["action_choice"]
        modes = {"auto": pb.ActionChoice.MODE_AUTO, "none": pb.ActionChoice.MODE_NONE}
        modes["required"] = pb.ActionChoice.MODE_REQUIRED
        if choice in modes:
            req.action_choice.mode = modes[choice]
        else:
            req.action_choice.CopyFrom(pb.ActionChoice(mode=pb.ActionChoice.MODE_NAMED, name=choice))
    req.action_results.extend(
        pb.ActionResult(call_id=k, content=v) for k, v in options.get("action_results", {}).items()
    )
    req.request_id = options.get("request_id") or str(uuid.uuid4())
    game_state = options.get("game_state", ())
    req.game_state.extend([game_state] if isinstance(game_state, str) else game_state)
    return req


def conversation_metadata(npc: str, conversation: str) -> tuple[tuple[str, str], ...]:
    """The header a proxy in front of several servers hashes on, so a conversation stays where its cache is warm."""
    return ((CONVERSATION_HEADER, quote(f"{npc}/{conversation}", safe="/:@-._~")),)
