"""The asyncio SDK against the real server: the same calls, awaited, plus cancelling a stream."""

from __future__ import annotations

import grpc
import pytest

from npcserver.client import AsyncNpcClient, ChatMessage, NpcCancelled, NpcNotFound


async def test_async_chat_and_stream(anpc: AsyncNpcClient) -> None:
    reply = await anpc.chat("Say hello to the traveller.", max_tokens=12, temperature=0.0, seed=11)
    assert isinstance(reply, ChatMessage)
    assert reply.role == "assistant"

    stream = anpc.stream_chat(
        "Tell me a long story about a lighthouse keeper.", max_tokens=24, temperature=0.0, seed=11
    )
    pieces = [piece async for piece in stream]
    result = await stream.result()
    assert len(pieces) >= 2
    assert "".join(pieces) == result.text
    assert result.usage.completion_tokens >= len(pieces)


async def test_async_talk_history_and_reset(anpc: AsyncNpcClient, conversation_id: str) -> None:
    stream = anpc.stream_talk("tavern_keeper", conversation_id, "Is there a room for the night?", max_tokens=24)
    async with stream:
        pieces = [piece async for piece in stream]
    result = await stream.result()
    assert "".join(pieces) == result.text
    second = await anpc.talk("tavern_keeper", conversation_id, "How much?", max_tokens=16)

    conv = await anpc.history("tavern_keeper", conversation_id)
    assert [t.npc_line for t in conv.turns] == [result.text, second.text]
    exported = await anpc.export_conversation("tavern_keeper", conversation_id)
    assert exported == conv
    assert await anpc.reset("tavern_keeper", conversation_id) == 2
    assert await anpc.import_conversation(exported) == 2
    assert await anpc.history("tavern_keeper", conversation_id) == conv
    await anpc.reset("tavern_keeper", conversation_id)


async def test_async_cancelled_stream_stores_no_turn(
    anpc: AsyncNpcClient, chronicler: str, long_question: str, conversation_id: str
) -> None:
    stream = anpc.stream_talk(chronicler, conversation_id, long_question, max_tokens=400, temperature=0.0)
    first = await anext(stream)
    assert first
    stream.cancel()
    with pytest.raises(NpcCancelled):
        await stream.result()
    assert (await anpc.history(chronicler, conversation_id)).turns == ()
    # The engine is free again: the next request is served.
    assert (await anpc.chat("Hello.", max_tokens=4)).role == "assistant"


async def test_async_personas_presets_models_and_not_found(anpc: AsyncNpcClient) -> None:
    ids = [p.id for p in await anpc.list_personas()]
    assert "tavern_keeper" in ids
    assert (await anpc.get_persona("tavern_keeper")).display_name
    assert await anpc.list_presets()
    assert (await anpc.list_models())[0].context_size > 0
    with pytest.raises(NpcNotFound) as exc:
        await anpc.get_persona("nobody_here")
    assert exc.value.code == grpc.StatusCode.NOT_FOUND
