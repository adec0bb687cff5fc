"""The blocking SDK against the real server on the embedded model: chat, streaming, Talk, personas, presets."""

from __future__ import annotations

import uuid

import jsonschema
import pytest

from npcserver.client import (
    ChatMessage,
    Conversation,
    ExampleExchange,
    NpcAlreadyExists,
    NpcClient,
    NpcNotFound,
    Persona,
    Turn,
)


def test_chat_returns_an_assistant_message(npc: NpcClient) -> None:
    history: list[ChatMessage | dict[str, str]] = [
        {"role": "system", "content": "You are Greta, a gruff tavern keeper."},
        ChatMessage(role="user", content="Hello."),
        ChatMessage(role="assistant", content="What do you want?"),
    ]
    reply = npc.chat("What's on the menu?", history, max_tokens=16, temperature=0.0, seed=7)
    assert isinstance(reply, ChatMessage)
    assert reply.role == "assistant"
    assert isinstance(reply.content, str)


def test_chat_completion_reports_usage_and_timings(npc: NpcClient) -> None:
    result = npc.chat_completion(
        [{"role": "user", "content": "Name three fruits."}], max_tokens=12, temperature=0.0, seed=7
    )
    assert result.finish_reason in ("stop", "length")
    assert result.usage.prompt_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert result.model
    assert result.id
    assert result.timings.time_to_first_token_ms > 0 or result.usage.completion_tokens == 0


def test_chat_with_a_json_schema_response_format(npc: NpcClient) -> None:
    schema = {
        "type": "object",
        "properties": {"mood": {"type": "string", "enum": ["happy", "sad", "angry"]}},
        "required": ["mood"],
    }
    # A bare JSON Schema dict is accepted as response_format (OpenAI's wrapped form and ResponseFormat too).
    result = npc.chat_completion(
        [{"role": "user", "content": "How do you feel today?"}], response_format=schema, max_tokens=48, temperature=0.0
    )
    assert result.structured is not None
    assert result.structured.valid, result.structured.error
    assert result.json()["mood"] in ("happy", "sad", "angry")
    wrapped = {"type": "json_schema", "json_schema": {"name": "mood", "schema": schema}}
    again = npc.chat_completion(
        [{"role": "user", "content": "How do you feel today?"}], response_format=wrapped, max_tokens=48, temperature=0.0
    )
    assert again.structured is not None and again.structured.schema_name == "mood"
    # The same schema applies either way. (Not byte-identical text: a reused KV cache can move the logits' last
    # bits, so temperature 0 is only repeatable for the same cache state.)
    assert again.structured.valid, again.structured.error
    assert again.json()["mood"] in ("happy", "sad", "angry")


def test_stream_chat_pieces_concatenate_to_the_final_text(npc: NpcClient) -> None:
    # Warm-up: greedy decoding is exactly repeatable for the same KV-cache state, and the server reuses the KV of a
    # prompt it has seen. After this call, the stream and the unary call below both find the prompt cached.
    npc.chat("Tell me a long story about a dragon and a knight.", max_tokens=32, temperature=0.0, seed=7)
    stream = npc.stream_chat(
        "Tell me a long story about a dragon and a knight.", max_tokens=32, temperature=0.0, seed=7
    )
    pieces = list(stream)
    result = stream.result()
    assert len(pieces) >= 2, pieces
    assert "".join(pieces) == result.text == stream.text
    assert result.usage.completion_tokens >= len(pieces)
    assert result.message.role == "assistant"
    # The unary call with the same seed at temperature 0 gives the same reply.
    assert (
        npc.chat("Tell me a long story about a dragon and a knight.", max_tokens=32, temperature=0.0, seed=7).content
        == result.text
    )


def test_talk_stores_turns_and_history_resets(npc: NpcClient, conversation_id: str) -> None:
    first = npc.talk("tavern_keeper", conversation_id, "What's on the menu?", max_tokens=24, temperature=0.0, seed=7)
    assert first.message.role == "assistant"
    assert first.finish_reason in ("stop", "length")
    assert first.usage.completion_tokens > 0

    stream = npc.stream_talk("tavern_keeper", conversation_id, "And to drink?", max_tokens=24, temperature=0.0, seed=7)
    pieces = list(stream)
    second = stream.result()
    assert "".join(pieces) == second.text

    turns = npc.history("tavern_keeper", conversation_id).turns
    assert [t.player_line for t in turns] == ["What's on the menu?", "And to drink?"]
    assert [t.npc_line for t in turns] == [first.text, second.text]
    assert all(t.create_time_ms > 0 for t in turns)

    assert npc.reset("tavern_keeper", conversation_id) == 2
    assert npc.history("tavern_keeper", conversation_id).turns == ()


def test_talk_with_a_response_schema_reports_structured_output(npc: NpcClient, conversation_id: str) -> None:
    schema = npc.get_persona("ship_ai").response_schema
    assert schema is not None
    result = npc.talk("ship_ai", conversation_id, "Status report, please.", max_tokens=200, temperature=0.0, seed=7)
    assert result.structured is not None
    if result.finish_reason == "stop":
        assert result.structured.valid, result.structured.error
        jsonschema.validate(result.json(), schema)
    else:  # cut off: never presented as valid
        assert not result.structured.valid
        with pytest.raises(ValueError):
            result.json()


def test_persona_crud(npc: NpcClient) -> None:
    pid = f"sdk_{uuid.uuid4().hex[:10]}"
    persona = Persona(
        id=pid,
        display_name="Bram",
        system_prompt="Bram is a nervous blacksmith's apprentice in a mountain village.",
        example_dialogue=(ExampleExchange("Can you fix my sword?", "I-I think so, give me a day."),),
        response_schema={"type": "object", "properties": {"line": {"type": "string"}}, "required": ["line"]},
        max_tokens=48,
        stop=("\n\n",),
        player_name="Traveller",
        description="test persona",
    )
    created = npc.create_persona(persona)
    assert created == persona
    assert npc.get_persona(pid) == persona
    assert pid in [p.id for p in npc.list_personas()]
    with pytest.raises(NpcAlreadyExists) as exc:
        npc.create_persona(persona)
    assert pid in exc.value.message

    changed = Persona(id=pid, display_name="Bram the Bold", system_prompt="Bram is now a confident smith.")
    assert npc.update_persona(changed) == changed
    assert npc.get_persona(pid).display_name == "Bram the Bold"

    assert npc.delete_persona(pid) == 0
    with pytest.raises(NpcNotFound):
        npc.get_persona(pid)
    with pytest.raises(NpcNotFound):
        npc.update_persona(changed)
    assert npc.update_persona(changed, allow_missing=True) == changed
    npc.delete_persona(pid)


def test_list_personas_follows_pages(npc: NpcClient) -> None:
    everything = npc.list_personas()
    one_by_one = npc.list_personas(page_size=1)
    assert [p.id for p in one_by_one] == [p.id for p in everything]
    assert {"tavern_keeper", "ship_ai", "narrator"} <= {p.id for p in everything}
    assert [p.id for p in everything] == sorted(p.id for p in everything)


def test_export_then_import_reproduces_a_conversation(npc: NpcClient, conversation_id: str) -> None:
    saved = Conversation(
        persona_id="tavern_keeper",
        conversation_id=conversation_id,
        turns=(
            Turn("Any rooms free?", "One, above the stables.", 1_700_000_000_000, "Ana"),
            Turn("I'll take it.", "Two silver. Up front.", 1_700_000_060_000, "Ana"),
        ),
    )
    assert npc.import_conversation(saved) == 2
    exported = npc.export_conversation("tavern_keeper", conversation_id)
    assert exported == saved
    # What a game keeps in its save file survives both encodings.
    assert Conversation.from_bytes(exported.to_bytes()) == saved
    assert Conversation.from_json(exported.to_json()) == saved

    npc.reset("tavern_keeper", conversation_id)
    assert npc.import_conversation(exported.to_bytes()) == 2
    assert npc.history("tavern_keeper", conversation_id) == saved
    npc.reset("tavern_keeper", conversation_id)


def test_presets_and_models(npc: NpcClient) -> None:
    presets = npc.list_presets()
    assert presets, "the server lists no presets"
    assert sum(p.is_default for p in presets) == 1
    assert all(0.0 <= p.temperature <= 2.0 and 0.0 < p.top_p <= 1.0 for p in presets)
    models = npc.list_models()
    assert models
    assert models[0].id
    assert models[0].context_size > 0
    assert models[0].backend
