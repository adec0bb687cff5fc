"""The service layer over a scripted engine: readiness, the one error map, health. In-process grpc.aio, port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc
from npcserver.config import Settings
from npcserver.core.app import NpcCore
from npcserver.core.presets import PresetBook
from npcserver.errors import QueueFull
from npcserver.grpc.server import GrpcDoor
from npcserver.store.sqlite import SqliteStore
from tests.fakes import FakeEngine

REPO = Path(__file__).resolve().parents[2]


async def open_door(tmp_path: Path, engine: FakeEngine) -> tuple[GrpcDoor, grpc.aio.Channel]:
    core = NpcCore(engine, SqliteStore(tmp_path / "db.sqlite"), PresetBook())
    await core.load_persona_files(REPO / "personas")
    door = GrpcDoor(core, Settings(grpc_port=0, data_dir=tmp_path))
    port = await door.start()
    return door, grpc.aio.insecure_channel(f"127.0.0.1:{port}")


@pytest.fixture
async def loading(tmp_path: Path) -> AsyncIterator[tuple[GrpcDoor, grpc.aio.Channel]]:
    door, channel = await open_door(tmp_path, FakeEngine(ready=False))
    yield door, channel
    await channel.close()
    await door.stop(0)


async def test_model_loading_is_unavailable_and_health_not_serving(loading: tuple[GrpcDoor, grpc.aio.Channel]) -> None:
    door, channel = loading
    health = health_pb2_grpc.HealthStub(channel)
    check = await health.Check(health_pb2.HealthCheckRequest(service="npcserver.api.v1.ConversationService"))
    assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
    talk = pb_grpc.ConversationServiceStub(channel).Talk(
        pb.TalkRequest(persona_id="tavern_keeper", conversation_id="c", text="hi")
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in talk:
            pass
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "still loading" in (info.value.details() or "")
    # Persona and preset calls need no model: they work while it loads.
    presets = await pb_grpc.PresetServiceStub(channel).ListPresets(pb.ListPresetsRequest())
    assert presets.default_preset == "dialogue"
    await door.set_serving(True)
    check = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert check.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    ("failure", "code", "message"),
    [
        (QueueFull("the queue is full (32 waiting); retry later"), grpc.StatusCode.RESOURCE_EXHAUSTED, "queue is full"),
        (RuntimeError("secret internal detail"), grpc.StatusCode.INTERNAL, "internal server error"),
    ],
)
async def test_engine_failures_map_to_status_and_store_nothing(
    tmp_path: Path, failure: BaseException, code: grpc.StatusCode, message: str
) -> None:
    door, channel = await open_door(tmp_path, FakeEngine(fail_with=failure))
    stub = pb_grpc.ConversationServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.Talk(pb.TalkRequest(persona_id="tavern_keeper", conversation_id="c", text="hi")):
            pass
    assert info.value.code() == code
    assert message in (info.value.details() or "")
    assert "secret" not in (info.value.details() or "")
    history = await stub.GetConversation(pb.GetConversationRequest(persona_id="tavern_keeper", conversation_id="c"))
    assert len(history.conversation.turns) == 0
    await channel.close()
    await door.stop(0)


async def test_deltas_add_up_to_the_stored_line(tmp_path: Path) -> None:
    door, channel = await open_door(tmp_path, FakeEngine("Two silver. \n"))
    stub = pb_grpc.ConversationServiceStub(channel)
    deltas, final = [], None
    async for msg in stub.Talk(pb.TalkRequest(persona_id="tavern_keeper", conversation_id="c", text="Room?")):
        if msg.HasField("delta"):
            deltas.append(msg.delta.content)
        else:
            final = msg.final
    assert final is not None and "".join(deltas) == final.message.content == "Two silver."
    history = await stub.GetConversation(pb.GetConversationRequest(persona_id="tavern_keeper", conversation_id="c"))
    assert [t.npc_line for t in history.conversation.turns] == ["Two silver."]
    await channel.close()
    await door.stop(0)
