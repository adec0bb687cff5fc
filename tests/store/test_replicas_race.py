"""Two replicas on one database race on one conversation: the slower Talk is ABORTED at either door, never stored.

Each replica is a real core with its own store on the shared database (two SQLite connections on one file, or two
PostgreSQL stores, one through PgBouncer) over a scripted engine; replica A's engine holds its reply until replica B
has stored a turn in the same conversation. In process: gRPC on port 0, REST through httpx's ASGI transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc
from npcserver.config import Settings
from npcserver.core.app import NpcCore
from npcserver.core.presets import PresetBook
from npcserver.engine.base import Finished, GenerationEvent, GenerationRequest
from npcserver.grpc.server import GrpcDoor
from npcserver.http import create_http_app
from npcserver.store.base import Store
from npcserver.store.postgres import PostgresStore
from npcserver.store.sqlite import SqliteStore
from tests.fakes import FakeEngine
from tests.store.postgres_cluster import PostgresCluster

REPO = Path(__file__).resolve().parents[2]
TALK = "/v1/npcs/tavern_keeper/conversations/c:talk"


class GatedEngine(FakeEngine):
    """Streams its script, then waits for ``gate`` before finishing: the reply is made, not yet stored."""

    def __init__(self, script: str) -> None:
        super().__init__(script)
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        self.started.set()  # the core loaded the conversation before it asked for generation
        async for event in super().generate(request):
            if isinstance(event, Finished):
                await self.gate.wait()
            yield event


@dataclass
class Replicas:
    a: NpcCore
    b: NpcCore
    engine_a: GatedEngine
    tmp_path: Path


@contextmanager
def two_stores(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    if backend == "sqlite":
        first, second = SqliteStore(tmp_path / "shared.db"), SqliteStore(tmp_path / "shared.db")
        try:
            yield first, second
        finally:
            first.close()
            second.close()
        return
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    database = cluster.create_database()
    stores = [PostgresStore(cluster.url(database)), PostgresStore(cluster.url(database, bouncer=True))]
    try:
        yield stores[0], stores[1]
    finally:
        for s in stores:
            s.close()
        cluster.drop_database(database)


@pytest.fixture(params=["sqlite", "postgres"])
async def replicas(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Replicas]:
    with two_stores(request.param, request, tmp_path) as (store_a, store_b):
        engine_a = GatedEngine("A's slow reply.")
        a = NpcCore(engine_a, store_a, PresetBook())
        b = NpcCore(FakeEngine("B's quick reply."), store_b, PresetBook())
        await a.load_persona_files(REPO / "personas")
        yield Replicas(a, b, engine_a, tmp_path)


async def talk_on_b(replicas: Replicas, text: str) -> None:
    app = create_http_app(replicas.b, Settings(data_dir=replicas.tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as client:
        reply = await client.post(TALK, json={"text": text, "stream": False})
    assert reply.status_code == 200, reply.text
    assert reply.json()["stored"] is True


async def stored_lines(core: NpcCore) -> list[tuple[str, str]]:
    conversation = await core.get_conversation("tavern_keeper", "c")
    return [(t.player_line, t.npc_line) for t in conversation.turns]


async def test_grpc_talk_that_lost_the_race_is_aborted(replicas: Replicas) -> None:
    door = GrpcDoor(replicas.a, Settings(grpc_port=0, data_dir=replicas.tmp_path))
    port = await door.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ConversationServiceStub(channel)

            async def talk_on_a() -> None:
                async for _ in stub.Talk(pb.TalkRequest(persona_id="tavern_keeper", conversation_id="c", text="A?")):
                    pass

            slow = asyncio.create_task(talk_on_a())
            await asyncio.wait_for(replicas.engine_a.started.wait(), 30)
            await talk_on_b(replicas, "B?")
            replicas.engine_a.gate.set()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await asyncio.wait_for(slow, 30)
            assert info.value.code() == grpc.StatusCode.ABORTED
            assert "another request stored a turn first; retry the request" in (info.value.details() or "")
            assert await stored_lines(replicas.a) == [("B?", "B's quick reply.")]  # A's reply was not stored

            await talk_on_a()  # the client's retry follows B's turn
    finally:
        await door.stop(0)
    assert await stored_lines(replicas.b) == [("B?", "B's quick reply."), ("A?", "A's slow reply.")]


async def test_rest_talk_interrupted_by_a_reset_is_409(replicas: Replicas) -> None:
    await talk_on_b(replicas, "B?")
    app = create_http_app(replicas.a, Settings(data_dir=replicas.tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:
        slow = asyncio.create_task(client.post(TALK, json={"text": "A?", "stream": False}))
        await asyncio.wait_for(replicas.engine_a.started.wait(), 30)
        # Another replica resets the conversation and it grows back to the length A saw: only the epoch differs.
        await replicas.b.reset_conversation("tavern_keeper", "c")
        await talk_on_b(replicas, "B again?")
        replicas.engine_a.gate.set()
        reply = await asyncio.wait_for(slow, 30)
    assert reply.status_code == 409
    error = reply.json()["error"]
    assert error["code"] == "epoch" and "was reset or replaced while this turn was made" in error["message"]
    assert await stored_lines(replicas.a) == [("B again?", "B's quick reply.")]


async def test_replicas_racing_on_one_request_id_store_one_turn(replicas: Replicas) -> None:
    # The client sent its line to A, gave up waiting and sent it again, with the same request id, to B. B stores it
    # first; A's reply then loses the race and returns B's stored turn, marked replayed, instead of an error.
    door = GrpcDoor(replicas.a, Settings(grpc_port=0, data_dir=replicas.tmp_path))
    port = await door.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ConversationServiceStub(channel)
            line = pb.TalkRequest(persona_id="tavern_keeper", conversation_id="c", text="A?", request_id="line-1")

            async def talk_on_a() -> list[pb.TalkResponse]:
                return [m async for m in stub.Talk(line)]

            slow = asyncio.create_task(talk_on_a())
            await asyncio.wait_for(replicas.engine_a.started.wait(), 30)
            app = create_http_app(replicas.b, Settings(data_dir=replicas.tmp_path))
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as client:
                reply = await client.post(
                    TALK, json={"text": "A?", "stream": False}, headers={"Idempotency-Key": "line-1"}
                )
            assert reply.status_code == 200, reply.text
            assert (reply.json()["stored"], reply.json()["replayed"]) == (True, False)
            replicas.engine_a.gate.set()
            messages = await asyncio.wait_for(slow, 30)
            final = messages[-1].final
            assert final.replayed and final.message.content == "B's quick reply."
            # And once more, to A: replayed at once, nothing generated.
            again = (await talk_on_a())[-1].final
            assert again.replayed and again.message.content == "B's quick reply."
    finally:
        await door.stop(0)
    assert await stored_lines(replicas.b) == [("A?", "B's quick reply.")]
