"""Transport tests of the gRPC-Web bridge over real sockets, with a small scripted servicer in place of the model.

The servicer is registered through the generated ``add_ConversationServiceServicer_to_server``, exactly as the real
ones are, and the server is the real HttpDoor (uvicorn). What the model says does not matter here; the framing,
trailers, timing, cancellation and shutdown behaviour do. Feature tests on the real model are in test_http_live.py.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from starlette.types import Receive, Scope, Send

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc
from npcserver.config import Settings
from npcserver.http.calls import CallTracker
from npcserver.http.door import HttpDoor
from npcserver.http.grpcweb import GrpcWebBridge, MethodRegistry, decode_text_body, percent_encode
from tests.http.grpcweb_wire import WebReply, call, frame

TALK = "/npcserver.api.v1.ConversationService/Talk"
GET = "/npcserver.api.v1.ConversationService/GetConversation"


class ScriptedConversations(pb_grpc.ConversationServiceServicer):
    """Talk's behaviour is chosen by the request text; GetConversation echoes or fails."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.metadata: dict[str, Any] = {}
        self.time_remaining: float | None = None

    async def Talk(self, request: pb.TalkRequest, context: Any) -> AsyncIterator[pb.TalkResponse]:
        self.metadata = dict(context.invocation_metadata())
        self.time_remaining = context.time_remaining()
        mode = request.text
        if mode == "zero":
            return
        if mode == "fail-first":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "text is bad: fix it")
        if mode == "crash-first":
            raise RuntimeError("secret detail")
        for i in range(5 if mode == "slow" else 2):
            yield pb.TalkResponse(delta=pb.ContentDelta(content=f"w{i} "))
            if mode == "slow":
                await asyncio.sleep(0.15)
        if mode == "fail-mid":
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full — retry in 1s")
        if mode == "crash-mid":
            raise RuntimeError("secret detail")
        if mode == "hang":
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        yield pb.TalkResponse(final=pb.CompletionFinal(message=pb.ChatMessage(role="assistant", content="done")))

    async def GetConversation(self, request: pb.GetConversationRequest, context: Any) -> pb.GetConversationResponse:
        if request.persona_id == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "persona 'missing' does not exist")
        turns = [pb.Turn(player_line="hi", npc_line="hello")]
        conv = pb.Conversation(persona_id=request.persona_id, conversation_id=request.conversation_id, turns=turns)
        return pb.GetConversationResponse(conversation=conv)


class BridgeOnly:
    """The bridge as a whole ASGI app (HttpApp adds REST and CORS on top)."""

    def __init__(self, registry: MethodRegistry) -> None:
        self.tracker = CallTracker()
        self.bridge = GrpcWebBridge(registry, self.tracker)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            async with self.tracker.track():
                await self.bridge(scope, receive, send)


class Harness:
    def __init__(self) -> None:
        self.servicer = ScriptedConversations()
        registry = MethodRegistry()
        pb_grpc.add_ConversationServiceServicer_to_server(self.servicer, registry)
        self.app = BridgeOnly(registry)
        self.door = HttpDoor(None, Settings(), app=self.app)
        self.port = 0

    async def call(self, path: str, request: bytes, **kwargs: Any) -> WebReply:
        return await asyncio.to_thread(call, "127.0.0.1", self.port, path, request, **kwargs)

    async def talk(self, mode: str, **kwargs: Any) -> WebReply:
        req = pb.TalkRequest(persona_id="p", conversation_id="c", text=mode).SerializeToString()
        return await self.call(TALK, req, **kwargs)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    h = Harness()
    h.port = await h.door.start("127.0.0.1", 0)
    yield h
    await h.door.stop(1.0)


def _talk_texts(reply: WebReply) -> list[str]:
    out = []
    for m in reply.messages:
        r = pb.TalkResponse.FromString(m)
        out.append(r.delta.content if r.HasField("delta") else f"<final:{r.final.message.content}>")
    return out


async def test_registry_collects_the_generated_handlers(harness: Harness) -> None:
    assert GET in harness.app.bridge.registry.methods
    assert TALK in harness.app.bridge.registry.methods


async def test_unary_returns_one_message_and_an_ok_trailer(harness: Harness) -> None:
    req = pb.GetConversationRequest(persona_id="greta", conversation_id="save1").SerializeToString()
    reply = await harness.call(GET, req)
    assert reply.http_status == 200
    assert reply.headers["content-type"] == "application/grpc-web+proto"
    assert len(reply.messages) == 1
    conv = pb.GetConversationResponse.FromString(reply.messages[0]).conversation
    assert (conv.persona_id, conv.conversation_id, conv.turns[0].npc_line) == ("greta", "save1", "hello")
    assert reply.trailers is not None and reply.status == 0


async def test_unary_error_is_trailers_only(harness: Harness) -> None:
    req = pb.GetConversationRequest(persona_id="missing", conversation_id="c").SerializeToString()
    reply = await harness.call(GET, req)
    assert reply.http_status == 200
    assert reply.trailers_only
    assert reply.status == grpc.StatusCode.NOT_FOUND.value[0]
    assert reply.message == "persona 'missing' does not exist"
    assert reply.chunks == []


async def test_stream_frames_arrive_as_they_are_produced(harness: Harness) -> None:
    reply = await harness.talk("slow")
    assert _talk_texts(reply) == ["w0 ", "w1 ", "w2 ", "w3 ", "w4 ", "<final:done>"]
    assert reply.status == 0
    # The servicer sleeps 150 ms between deltas: each must have been read in its own chunk, spread over time.
    times = reply.message_times
    assert all(b - a > 0.08 for a, b in itertools.pairwise(times[:5])), times
    assert times[4] - times[0] > 0.4
    assert reply.chunks[-1][0] - reply.chunks[0][0] > 0.5


async def test_zero_message_stream_still_ends_with_a_trailer(harness: Harness) -> None:
    reply = await harness.talk("zero")
    assert reply.http_status == 200
    assert reply.messages == []
    assert reply.trailers == {"grpc-status": "0", "grpc-message": ""}
    # The exact bytes: one trailer frame, flag 0x80, HTTP/1-style lines.
    assert b"".join(c for _, c in reply.chunks) == frame(b"grpc-status:0\r\ngrpc-message:\r\n", 0x80)


async def test_error_before_any_message_is_trailers_only(harness: Harness) -> None:
    reply = await harness.talk("fail-first")
    assert reply.trailers_only
    assert reply.status == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert reply.message == "text is bad: fix it"


async def test_error_after_messages_keeps_the_messages_and_sends_the_trailer(harness: Harness) -> None:
    reply = await harness.talk("fail-mid")
    assert _talk_texts(reply) == ["w0 ", "w1 "]
    assert reply.trailers is not None
    assert reply.status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    # Non-ASCII details are percent-encoded on the wire and decode back exactly.
    assert reply.trailers["grpc-message"] == percent_encode("queue full — retry in 1s")
    assert reply.message == "queue full — retry in 1s"


@pytest.mark.parametrize("mode", ["crash-first", "crash-mid"])
async def test_unexpected_exception_is_internal_without_details(harness: Harness, mode: str) -> None:
    reply = await harness.talk(mode)
    assert reply.status == grpc.StatusCode.INTERNAL.value[0]
    assert "secret" not in reply.message
    assert reply.trailers_only == (mode == "crash-first")


async def test_text_mode_round_trip(harness: Harness) -> None:
    reply = await harness.talk("slow", text=True)
    assert reply.headers["content-type"] == "application/grpc-web-text+proto"
    assert _talk_texts(reply) == ["w0 ", "w1 ", "w2 ", "w3 ", "w4 ", "<final:done>"]
    assert reply.status == 0
    # Every chunk is base64 on its own (one padded chunk per frame).
    for _, chunk in reply.chunks:
        base64.b64decode(chunk, validate=True)


async def test_text_mode_error_mid_stream(harness: Harness) -> None:
    reply = await harness.talk("fail-mid", text=True)
    assert len(reply.messages) == 2
    assert reply.status == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


async def test_client_disconnect_cancels_the_servicer(harness: Harness) -> None:
    reply = await harness.talk("hang", hang_up_after=1)
    assert reply.hung_up
    await asyncio.wait_for(harness.servicer.cancelled.wait(), 5)
    assert harness.app.tracker.active == 0 or await harness.app.tracker.wait_idle(2)


async def test_deadline_from_grpc_timeout(harness: Harness) -> None:
    started = time.monotonic()
    reply = await harness.talk("hang", headers={"grpc-timeout": "300m"})
    assert reply.status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert len(reply.messages) == 2 and reply.trailers is not None
    assert time.monotonic() - started < 5
    assert harness.servicer.time_remaining is not None and 0 < harness.servicer.time_remaining <= 0.3
    assert harness.servicer.cancelled.is_set()


async def test_headers_reach_the_servicer_as_metadata(harness: Harness) -> None:
    md_bin = base64.b64encode(b"\x00\x01").decode()
    await harness.talk("zero", headers={"Authorization": "Bearer k", "x-player": "7", "x-blob-bin": md_bin})
    assert harness.servicer.metadata["authorization"] == "Bearer k"
    assert harness.servicer.metadata["x-player"] == "7"
    assert harness.servicer.metadata["x-blob-bin"] == b"\x00\x01"
    assert "content-type" not in harness.servicer.metadata
    assert harness.servicer.time_remaining is None


async def test_unknown_method_is_unimplemented(harness: Harness) -> None:
    reply = await harness.call("/npcserver.api.v1.ConversationService/Nope", b"")
    assert reply.trailers_only
    assert reply.status == grpc.StatusCode.UNIMPLEMENTED.value[0]
    assert "/npcserver.api.v1.ConversationService/Nope" in reply.message


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"\x00\x00", "one frame"),
        (b"\x00\x00\x00\x00\x09abc", "announces 9 bytes"),
        (b"\x01\x00\x00\x00\x00", "compressed"),
        (frame(b"") + frame(b""), "more than one message"),
        (frame(b"\xff\xff\xff"), "not a valid message"),
    ],
)
async def test_malformed_requests_are_invalid_argument(harness: Harness, body: bytes, fragment: str) -> None:
    reply = await harness.call(TALK, b"", raw_body=body)
    assert reply.status == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert fragment in reply.message


async def test_graceful_stop_ends_a_running_stream_with_a_trailer(harness: Harness) -> None:
    pending = asyncio.ensure_future(harness.talk("hang"))
    await asyncio.sleep(0.5)  # the stream is running: two deltas sent, the servicer is waiting
    await harness.door.stop(0.3)
    reply = await asyncio.wait_for(pending, 10)
    assert len(reply.messages) == 2
    assert reply.trailers is not None
    assert reply.status == grpc.StatusCode.UNAVAILABLE.value[0]
    assert harness.servicer.cancelled.is_set()


def test_text_body_decoding_accepts_concatenated_padded_chunks() -> None:
    parts = [b"\x00\x00\x00\x00\x01", b"a"]
    body = b"".join(base64.b64encode(p) for p in parts)
    assert decode_text_body(body) == b"".join(parts)


async def test_graceful_stop_lets_a_stream_that_ends_within_the_grace_period_finish(harness: Harness) -> None:
    pending = asyncio.ensure_future(harness.talk("slow"))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await harness.door.stop(5.0)
    reply = await asyncio.wait_for(pending, 10)
    assert _talk_texts(reply)[-1] == "<final:done>"
    assert reply.status == 0
    assert time.monotonic() - started < 4, "stop returns once the last call is done, not after the whole grace"
