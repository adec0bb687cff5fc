"""NPC actions through the Python SDK (sync and async clients) against the real server and the embedded model."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from npcserver.client import Action, AsyncNpcClient, NpcClient

OPEN_GATE = Action(
    "open_gate",
    "Greta opens the yard gate.",
    {"type": "object", "properties": {"gate": {"enum": ["yard", "stable"]}}},
    await_result=True,
)


def test_sync_client_await_result_round_trip(live_server: Any) -> None:
    conversation = "sdk-" + uuid.uuid4().hex[:8]
    with NpcClient(live_server.grpc_target) as npc:
        first = npc.talk(
            "tavern_keeper",
            conversation,
            "Open the yard gate, please.",
            actions=[OPEN_GATE],
            action_choice="open_gate",
            temperature=0,
        )
        assert first.finish_reason == "action"
        [call] = first.action_calls
        assert call.name == "open_gate" and isinstance(call.args, dict)
        after = npc.send_action_results("tavern_keeper", conversation, {call.id: "the gate is open"}, temperature=0)
        assert after.finish_reason == "stop" and after.text.strip() and not after.action_calls


def test_async_client_choice_none_and_required(live_server: Any) -> None:
    async def go() -> None:
        async with AsyncNpcClient(live_server.grpc_target) as npc:
            line = "Here are three silver. I'll take the room."
            forced = await npc.talk("tavern_keeper", "sdk-" + uuid.uuid4().hex[:8], line, action_choice="required")
            assert [c.name for c in forced.action_calls] == ["give_item"]
            quiet = await npc.talk("tavern_keeper", "sdk-" + uuid.uuid4().hex[:8], line, action_choice="none")
            assert not quiet.action_calls

    asyncio.run(go())
