"""The gRPC servicers over a scripted engine: readiness, the one error map, health, and the sampling options reaching
the engine. In-process grpc.aio, port 0."""

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


SAMPLING = pb.SamplingOptions(
    temperature=0.3, top_p=0.5, top_k=7, min_p=0.2, repeat_penalty=1.3, seed=42, max_tokens=5, stop=["zz", "yy"]
)


async def test_talk_sampling_options_reach_the_engine_and_win_over_flat_fields(tmp_path: Path) -> None:
    engine = FakeEngine()
    door, channel = await open_door(tmp_path, engine)
    stub = pb_grpc.ConversationServiceStub(channel)
    request = pb.TalkRequest(
        persona_id="tavern_keeper", conversation_id="c", text="Hi", temperature=1.9, max_tokens=99, sampling=SAMPLING
    )
    async for _ in stub.Talk(request):
        pass
    params = engine.requests[-1].params
    assert params.temperature == pytest.approx(0.3)
    assert (params.top_k, params.seed, params.max_tokens) == (7, 42, 5)
    assert params.top_p == pytest.approx(0.5) and params.min_p == pytest.approx(0.2)
    assert params.repeat_penalty == pytest.approx(1.3)
    assert params.stop[:2] == ("zz", "yy")
    # A flat field still applies when sampling leaves it unset.
    flat = pb.TalkRequest(persona_id="tavern_keeper", conversation_id="c", text="Hi", seed=5, max_tokens=3)
    async for _ in stub.Talk(flat):
        pass
    assert (engine.requests[-1].params.seed, engine.requests[-1].params.max_tokens) == (5, 3)
    await channel.close()
    await door.stop(0)


async def test_chat_sampling_options_reach_the_engine(tmp_path: Path) -> None:
    engine = FakeEngine()
    door, channel = await open_door(tmp_path, engine)
    stub = pb_grpc.ChatServiceStub(channel)
    messages = [pb.ChatMessage(role="user", content="hi")]
    await stub.CreateChatCompletion(pb.CreateChatCompletionRequest(messages=messages, top_k=3, sampling=SAMPLING))
    params = engine.requests[-1].params
    assert (params.top_k, params.seed, params.max_tokens, params.stop[:2]) == (7, 42, 5, ("zz", "yy"))
    async for _ in stub.StreamChatCompletion(pb.StreamChatCompletionRequest(messages=messages, sampling=SAMPLING)):
        pass
    assert engine.requests[-1].params.repeat_penalty == pytest.approx(1.3)
    await channel.close()
    await door.stop(0)


@pytest.mark.parametrize(
    ("sampling", "field"),
    [
        (pb.SamplingOptions(top_k=-1), "top_k"),
        (pb.SamplingOptions(min_p=1.5), "min_p"),
        (pb.SamplingOptions(repeat_penalty=0), "repeat_penalty"),
        (pb.SamplingOptions(max_tokens=-2), "max_tokens"),
        (pb.SamplingOptions(stop=[""]), "stop"),
    ],
)
async def test_out_of_range_sampling_is_invalid_argument_naming_the_field(
    tmp_path: Path, sampling: pb.SamplingOptions, field: str
) -> None:
    engine = FakeEngine()
    door, channel = await open_door(tmp_path, engine)
    stub = pb_grpc.ConversationServiceStub(channel)
    request = pb.TalkRequest(persona_id="tavern_keeper", conversation_id="c", text="Hi", sampling=sampling)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.Talk(request):
            pass
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (info.value.details() or "")
    assert engine.requests == []
    await channel.close()
    await door.stop(0)
