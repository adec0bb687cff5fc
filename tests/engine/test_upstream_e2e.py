"""End to end: npcserver with ``--engine-url`` pointing at a real llama-server. A Talk over gRPC streams and stores its
turn; the next Talk in the conversation finds its prompt prefix in llama-server's cache."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from npcserver.client import AsyncNpcClient
from tests.conftest import ServerProcess
from tests.engine.llama_server import llama_server


async def test_talk_through_llama_server_stores_turns_and_reuses_the_prefix(
    model_path: Path, server_factory: Callable[..., ServerProcess]
) -> None:
    with llama_server(model_path, parallel=2, ctx_per_slot=4096) as upstream:
        server = server_factory(
            NPCSERVER_ENGINE_URL=upstream.url, NPCSERVER_ENGINE_API="llama-server", NPCSERVER_PARALLEL="2"
        )
        async with AsyncNpcClient(server.grpc_target, ready_timeout=60, timeout=120) as client:
            pieces: list[str] = []
            async with client.stream_talk(
                "tavern_keeper", "upstream-e2e", "What is on the menu?", max_tokens=24, temperature=0
            ) as stream:
                async for piece in stream:
                    pieces.append(piece)
                first = await stream.result()
            assert len(pieces) > 1 and "".join(pieces) == first.text
            assert first.timings.cached_prompt_tokens <= 1  # a new conversation: nothing but <bos> to reuse

            second = await client.talk("tavern_keeper", "upstream-e2e", "And to drink?", max_tokens=24, temperature=0)
            history = await client.history("tavern_keeper", "upstream-e2e")

        assert [(t.player_line, t.npc_line) for t in history.turns] == [
            ("What is on the menu?", first.text),
            ("And to drink?", second.text),
        ]
        # The second prompt extends the first, so llama-server served the first one's tokens from its cache.
        assert second.timings.cached_prompt_tokens >= first.usage.prompt_tokens - 1, (first, second)
        assert second.usage.prompt_tokens > first.usage.prompt_tokens
        assert "engine: " in server.output() and upstream.url in server.output()
