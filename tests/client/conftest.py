"""Fixtures for the SDK tests: SDK clients connected to the session's real server (``live_server``)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from npcserver.client import AsyncNpcClient, ExampleExchange, NpcClient, Persona

#: Generous: the first test of a session may wait for the model to load.
READY_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def npc(live_server: Any) -> Iterator[NpcClient]:
    """A blocking client, connected and ready."""
    with NpcClient(live_server.grpc_target, ready_timeout=READY_TIMEOUT_S, timeout=120.0) as client:
        yield client


@pytest.fixture
async def anpc(live_server: Any) -> AsyncIterator[AsyncNpcClient]:
    """An asyncio client, connected and ready."""
    async with AsyncNpcClient(live_server.grpc_target, ready_timeout=READY_TIMEOUT_S, timeout=120.0) as client:
        yield client


@pytest.fixture
def closed_port_target() -> Iterator[str]:
    """``127.0.0.1:<port>`` where nothing listens: the port stays bound (not listening) for the whole test, so no
    other process can take it and connections to it are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def conversation_id() -> str:
    """A fresh conversation id, so tests never see each other's turns."""
    return f"sdk-test-{uuid.uuid4().hex[:12]}"


_LONG_ANSWER = (
    "In the first age the river kings ruled from Osk, and their barges carried salt and iron down to the sea; then "
    "came the long winter, the fall of the bridges, the wandering of the clans, the founding of the seven towers, "
    "and the war of the ash crown, which lasted a hundred years and ended only when the last king drowned."
)


@pytest.fixture(scope="module")
def chronicler(npc: NpcClient) -> Iterator[str]:
    """A persona whose replies run long (tens of tokens at temperature 0), so a test can interrupt one mid-way."""
    persona_id = f"chronicler_{uuid.uuid4().hex[:8]}"
    npc.create_persona(
        Persona(
            id=persona_id,
            display_name="Chronicler",
            system_prompt="The Chronicler is an ancient scholar who answers every question with a very long, "
            "detailed, unbroken account.",
            example_dialogue=(ExampleExchange("Tell me of the old days.", _LONG_ANSWER),),
        )
    )
    yield persona_id
    npc.delete_persona(persona_id)


@pytest.fixture
def long_question() -> str:
    """The line that makes the chronicler talk at length."""
    return "Tell me the whole history of the realm, from the first kings to now."
