"""The SDK's own server process: NpcClient.local() starts `python -m npcserver serve` and stops it on exit."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from npcserver.client import AsyncNpcClient, NpcClient, NpcServerUnavailable, NpcUnauthenticated, Persona

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.model  # each test starts its own server on the embedded model


def test_local_server_starts_serves_and_stops(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {
        "NPCSERVER_THREADS": "2",
        "NPCSERVER_CTX_SIZE": "2048",
        "NPCSERVER_PERSONAS_DIR": str(REPO / "personas"),
        "NPCSERVER_API_KEY": "tavern-secret",
    }
    client = NpcClient.local(data_dir=data_dir, env=env, api_key="tavern-secret", ready_timeout=300.0)
    server = client.local_server
    assert server is not None
    with client:
        assert server.running
        # The server bound port 0 and reported the port it got; the client talks to that one.
        assert server.port > 0
        assert client.target == server.target == f"127.0.0.1:{server.port}"
        assert client.list_models()[0].context_size > 0
        client.create_persona(Persona(id="local_guard", display_name="Guard", system_prompt="A bored city guard."))
        reply = client.talk("local_guard", "p1", "Halt?", max_tokens=8, temperature=0.0)
        assert reply.message.role == "assistant"
        # The key travels as `authorization: Bearer <key>`: without it (or with another) the server refuses.
        for key in (None, "wrong-key"):
            stranger = NpcClient(server.target, api_key=key, timeout=10.0)
            try:
                with pytest.raises(NpcUnauthenticated):
                    stranger.list_models()
            finally:
                stranger.close()
    assert not server.running
    with pytest.raises(NpcServerUnavailable, match="start it first"):
        _ = server.target
    assert data_dir.is_dir() and any(data_dir.iterdir()), "the server kept no data in the given data_dir"


def test_local_server_that_dies_reports_its_output() -> None:
    start = time.monotonic()
    with pytest.raises(NpcServerUnavailable) as exc, NpcClient.local(args=["--no-such-flag"], ready_timeout=60.0):
        pass
    assert time.monotonic() - start < 30.0  # the dead process is noticed at once, not at the timeout
    assert "exited with code" in exc.value.message
    assert "--no-such-flag" in exc.value.message  # the server's own complaint is quoted


async def test_async_local_server_starts_without_blocking_the_loop_and_stops() -> None:
    env = {"NPCSERVER_THREADS": "2", "NPCSERVER_CTX_SIZE": "2048", "NPCSERVER_PERSONAS_DIR": str(REPO / "personas")}
    client = AsyncNpcClient.local(env=env, ready_timeout=300.0)
    server = client.local_server
    assert server is not None
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    ticker = asyncio.create_task(tick())
    async with client:
        # The server process takes seconds to load its model; the loop kept running meanwhile.
        assert ticks >= 5
        assert client.target == server.target
        assert (await client.list_models())[0].context_size > 0
        assert "tavern_keeper" in [p.id for p in await client.list_personas()]
    ticker.cancel()
    assert not server.running
