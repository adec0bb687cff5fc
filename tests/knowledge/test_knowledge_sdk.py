"""The Python SDK's knowledge calls against the real server: game state on a line, memories, the summary, and a
save file (bytes and JSON) that carries the summary and the memories through a reset."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from npcserver.client import AsyncNpcClient, Conversation, NpcClient, NpcInvalidArgument, NpcNotFound

GRETA = "tavern_keeper"


@pytest.fixture(scope="module")
def npc(live_server: Any) -> Iterator[NpcClient]:
    with NpcClient(live_server.grpc_target, ready_timeout=120.0, timeout=120.0) as client:
        yield client


@pytest.fixture
async def anpc(live_server: Any) -> AsyncIterator[AsyncNpcClient]:
    async with AsyncNpcClient(live_server.grpc_target, ready_timeout=120.0, timeout=120.0) as client:
        yield client


def test_memories_summary_and_a_save_file_round_trip(npc: NpcClient) -> None:
    conversation = f"sdk-{uuid.uuid4().hex[:8]}"
    reply = npc.talk(GRETA, conversation, "Evening!", max_tokens=4, seed=1, game_state=["it is night"])
    assert reply.usage.prompt_tokens > 0
    ring = npc.add_memory(GRETA, conversation, "The player returned the ring.", importance=8)
    assert (ring.text, ring.importance, ring.source) == ("The player returned the ring.", 8, "game") and ring.id
    npc.add_memory(GRETA, conversation, "The player likes cider.")
    assert [m.text for m in npc.list_memories(GRETA, conversation)] == [
        "The player returned the ring.",
        "The player likes cider.",
    ]
    assert npc.get_summary(GRETA, conversation).text == ""
    summary = npc.set_summary(GRETA, conversation, "The player is a regular.")
    assert (summary.text, summary.through_turn) == ("The player is a regular.", 1)

    saved = npc.export_conversation(GRETA, conversation)
    assert saved.summary is not None and saved.summary.text == "The player is a regular." and len(saved.memories) == 2
    for data in (saved.to_bytes(), saved.to_json()):
        npc.reset(GRETA, conversation)
        assert npc.list_memories(GRETA, conversation) == [] and npc.get_summary(GRETA, conversation).text == ""
        restored = Conversation.from_bytes(data) if isinstance(data, bytes) else Conversation.from_json(data)
        assert npc.import_conversation(restored) == 1
        assert npc.get_summary(GRETA, conversation).text == "The player is a regular."
        assert [m.importance for m in npc.list_memories(GRETA, conversation)] == [8, 5]

    npc.delete_memory(GRETA, conversation, npc.list_memories(GRETA, conversation)[0].id)
    with pytest.raises(NpcNotFound):
        npc.delete_memory(GRETA, conversation, 10**12)
    with pytest.raises(NpcInvalidArgument, match="importance is 11"):
        npc.add_memory(GRETA, conversation, "x", importance=11)


async def test_the_async_client_sends_game_state_and_reads_memories(anpc: AsyncNpcClient) -> None:
    conversation = f"sdk-{uuid.uuid4().hex[:8]}"
    with pytest.raises(NpcInvalidArgument, match=r"game_state\[1\] is empty"):
        await anpc.talk(GRETA, conversation, "Hi", max_tokens=2, game_state=["it rains", " "])
    await anpc.add_memory(GRETA, conversation, "The well is dry.", importance=2)
    assert [m.text for m in await anpc.list_memories(GRETA, conversation)] == ["The well is dry."]
    assert (await anpc.set_summary(GRETA, conversation, "")).text == ""
