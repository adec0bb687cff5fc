"""The SDK's own server process: NpcClient.local() starts `python -m npcserver serve` and stops it on exit."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from npcserver.client import NpcClient, NpcServerUnavailable, NpcUnauthenticated, Persona

REPO = Path(__file__).resolve().parents[2]


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
        assert client.target == server.target
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
    assert data_dir.is_dir() and any(data_dir.iterdir()), "the server kept no data in the given data_dir"


def test_local_server_that_dies_reports_its_output() -> None:
    start = time.monotonic()
    with pytest.raises(NpcServerUnavailable) as exc, NpcClient.local(args=["--no-such-flag"], ready_timeout=60.0):
        pass
    assert time.monotonic() - start < 30.0  # the dead process is noticed at once, not at the timeout
    assert "exited with code" in exc.value.message
    assert "--no-such-flag" in exc.value.message  # the server's own complaint is quoted
