"""Real instruct chat templates end to end: one real server per template family, on a copy of the embedded model.

Every family (Gemma 3, Llama 3, Qwen / ChatML, Mistral, Phi) must render a lone user message, a system message,
continue_final_message, structured output and an overflowing Talk history; the reply must end at the template's
own end of turn; and text a client types (``<end_of_turn>``, ``<eos>`` ...) must stay text. The base model's
words are meaningless, so the checks are on structure: finish reasons, token counts, stored turns.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import llama_cpp
import pytest

from bench.template_gguf import FAMILIES, Family
from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc
from tests.conftest import ServerProcess, start_server

pytestmark = pytest.mark.model

HANG_GUARD_S = 180  # a deadline only so a broken server fails the test instead of hanging it
CTX = 1024  # small, so an imported history overflows it
STOP = pb.FINISH_REASON_STOP
LENGTH = pb.FINISH_REASON_LENGTH
# Control tokens a player could type, and same-length look-alikes that are no token of the vocabulary.
TYPED = ("<start_of_turn>model\n", "<end_of_turn>", "<eos>")
LOOKALIKES = ("<start_of_turm>model\n", "<end_of_turm>", "<eoz>")
MOOD = {
    "type": "object",
    "properties": {"mood": {"type": "string", "enum": ["calm", "angry", "sleepy"]}},
    "required": ["mood"],
    "additionalProperties": False,
}


@dataclass
class Served:
    family: Family
    server: ServerProcess
    chat: pb_grpc.ChatServiceStub
    conv: pb_grpc.ConversationServiceStub
    personas: pb_grpc.PersonaServiceStub
    models: pb_grpc.ModelServiceStub
    vocab: Any

    def complete(self, messages: list[pb.ChatMessage], **kw: Any) -> pb.CreateChatCompletionResponse:
        kw.setdefault("preset", "factual")
        kw.setdefault("seed", 7)
        kw.setdefault("temperature", 0.0)  # greedy: the base model copies the pattern of the turns before
        response: pb.CreateChatCompletionResponse = self.chat.CreateChatCompletion(
            pb.CreateChatCompletionRequest(messages=messages, **kw), timeout=HANG_GUARD_S
        )
        return response

    def talk(self, persona: str, conversation: str, text: str, **kw: Any) -> tuple[str, pb.CompletionFinal]:
        kw.setdefault("preset", "factual")
        kw.setdefault("seed", 7)
        kw.setdefault("temperature", 0.0)  # greedy: the base model copies the pattern of the turns before
        pieces, final = [], None
        request = pb.TalkRequest(persona_id=persona, conversation_id=conversation, text=text, **kw)
        for msg in self.conv.Talk(request, timeout=HANG_GUARD_S):
            if msg.HasField("delta"):
                pieces.append(msg.delta.content)
            else:
                final = msg.final
        assert final is not None, "the stream ended without a final message"
        return "".join(pieces), final

    def plain_tokens(self, text: str) -> int:
        return len(self.vocab.tokenize(text.encode(), add_bos=False, special=False))


def msg(role: str, content: str) -> pb.ChatMessage:
    return pb.ChatMessage(role=role, content=content)


def conv_id() -> str:
    return "t-" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def served(
    request: pytest.FixtureRequest,
    template_model: Callable[[str], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    family = FAMILIES[request.param]
    model = template_model(family.name)
    server = start_server(
        tmp_path_factory.mktemp(f"data-{family.name}"),
        NPCSERVER_MODEL=str(model),
        NPCSERVER_CTX_SIZE=str(CTX),
        NPCSERVER_PARALLEL="2",
    )
    channel = grpc.insecure_channel(server.grpc_target)
    try:
        yield Served(
            family,
            server,
            pb_grpc.ChatServiceStub(channel),
            pb_grpc.ConversationServiceStub(channel),
            pb_grpc.PersonaServiceStub(channel),
            pb_grpc.ModelServiceStub(channel),
            llama_cpp.Llama(str(model), vocab_only=True, verbose=False),
        )
    finally:
        channel.close()
        server.stop()


def test_chat_completions_render_with_the_real_template(served: Served) -> None:
    [model] = served.models.ListModels(pb.ListModelsRequest()).models
    assert model.has_chat_template
    marker = served.family.end_of_turn

    # Only a user message: the case that failed with "list object has no element 0".
    lone = served.complete([msg("user", "Hello.")], max_tokens=24)
    [choice] = lone.choices
    assert choice.finish_reason in (STOP, LENGTH)
    assert marker not in choice.message.content
    assert lone.usage.prompt_tokens > served.plain_tokens("Hello.")

    # A system message reaches the prompt (the template places it, or it is folded into the first user turn):
    # a longer one costs exactly its extra tokens.
    short, longer = "You are Brom.", "You are Brom, the blacksmith of Lowmere. You answer briefly."
    a = served.complete([msg("system", short), msg("user", "Hello.")], max_tokens=1)
    b = served.complete([msg("system", longer), msg("user", "Hello.")], max_tokens=1)
    assert b.usage.prompt_tokens - a.usage.prompt_tokens == served.plain_tokens(longer) - served.plain_tokens(short)

    # continue_final_message: the prompt ends inside the assistant's turn, so it is shorter than a new turn.
    opened = [msg("user", "Name a fruit."), msg("assistant", "The fruit is")]
    cont = served.complete(opened, max_tokens=16, continue_final_message=True)
    fresh = served.complete([msg("user", "Name a fruit.")], max_tokens=16)
    assert cont.choices[0].finish_reason in (STOP, LENGTH)
    assert cont.usage.prompt_tokens >= fresh.usage.prompt_tokens + served.plain_tokens("The fruit is") - 2
    assert marker not in cont.choices[0].message.content

    # Structured output: the grammar forces the JSON, then the turn ends.
    fmt = pb.ResponseFormat(
        type=pb.ResponseFormat.TYPE_JSON_SCHEMA, json_schema=pb.JsonSchema(name="mood", schema=json.dumps(MOOD))
    )
    structured = served.complete([msg("user", "How do you feel?")], max_tokens=200, response_format=fmt)
    [choice] = structured.choices
    assert choice.finish_reason == STOP, choice.message.content
    assert choice.structured.valid, choice.structured.error
    assert json.loads(choice.message.content)["mood"] in ("calm", "angry", "sleepy")


def test_reply_ends_at_the_template_end_of_turn(served: Served) -> None:
    """With room for 200 tokens, the reply ends because the model closed its turn, not because of max_tokens."""
    history = []
    for word in ("Apple", "Bread", "Cheese", "Dates", "Eggs", "Figs"):
        history += [msg("user", "Name one food."), msg("assistant", f"{word}.")]
    room = 200 if served.family.model_writes_end else 24
    result = served.complete([*history, msg("user", "Name one food.")], max_tokens=room)
    [choice] = result.choices
    assert served.family.end_of_turn not in choice.message.content
    assert choice.message.content.strip()
    if served.family.model_writes_end:
        assert choice.finish_reason == STOP, choice.message.content
        assert result.usage.completion_tokens < 40, choice.message.content
    else:
        # The base model never samples <end_of_turn>; the structured reply above is where this family's turn ends.
        assert choice.finish_reason == LENGTH


def test_talk_overflows_the_context_and_keeps_the_persona(served: Served) -> None:
    persona = pb.Persona(
        id="brom",
        display_name="Brom",
        system_prompt="You are Brom, a blacksmith.",
        example_dialogue=[
            pb.ExampleExchange(player_line="Can you fix my sword?", npc_line="Aye. Two silver."),
            pb.ExampleExchange(player_line="How long will it take?", npc_line="An hour."),
        ],
    )
    served.personas.UpdatePersona(pb.UpdatePersonaRequest(persona=persona, allow_missing=True), timeout=30)
    cid = conv_id()
    turns = [
        pb.Turn(player_line=f"Question {i}: " + "tell me about the forge " * 6, npc_line=f"Answer {i}. Busy.")
        for i in range(60)
    ]
    imported = served.conv.ImportConversation(
        pb.ImportConversationRequest(conversation=pb.Conversation(persona_id="brom", conversation_id=cid, turns=turns)),
        timeout=30,
    )
    assert imported.imported_turns == 60
    room = 200 if served.family.model_writes_end else 24
    # The player keeps the history's pattern, so even a base model answers in kind and closes its turn.
    text, final = served.talk("brom", cid, "Question 60: " + "tell me about the forge " * 6, max_tokens=room)
    assert 0 < final.truncated_turns < 60
    assert final.usage.prompt_tokens <= CTX - room
    if served.family.model_writes_end:
        assert final.finish_reason == STOP, text
        assert final.usage.completion_tokens < 60, text
    assert served.family.end_of_turn not in text
    history = served.conv.GetConversation(pb.GetConversationRequest(persona_id="brom", conversation_id=cid))
    assert len(history.conversation.turns) == 61
    assert history.conversation.turns[-1].npc_line == final.message.content


def test_typed_control_tokens_stay_text(served: Served) -> None:
    """A chat message or a Talk line with <end_of_turn>, <eos>... costs the tokens of its text, like a look-alike."""
    for typed, lookalike in zip(TYPED, LOOKALIKES, strict=True):
        said, similar = f"Hi {typed} there.", f"Hi {lookalike} there."
        # Client text is tokenized on its own, as text: the prompts differ by exactly the text's token counts.
        expected = served.plain_tokens(said) - served.plain_tokens(similar)
        a = served.complete([msg("system", said), msg("user", said)], max_tokens=1)
        b = served.complete([msg("system", similar), msg("user", similar)], max_tokens=1)
        assert a.usage.prompt_tokens - b.usage.prompt_tokens == 2 * expected, typed
        _, ta = served.talk("tavern_keeper", conv_id(), said, max_tokens=1, player_name="<end_of_turn>")
        _, tb = served.talk("tavern_keeper", conv_id(), similar, max_tokens=1, player_name="<end_of_turm>")
        assert ta.usage.prompt_tokens - tb.usage.prompt_tokens == expected, typed
