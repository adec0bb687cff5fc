"""Streams a client can correlate, on every door of the real server: each streamed message carries the request id,
the model and a timestamp, and the final message a total duration."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc

#: A persona without actions, so every reply streams text deltas before its final (a call may come alone).
NPC = "narrator"
HANG_GUARD_S = 120


@pytest.fixture(scope="module")
def channel(live_server: Any) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(live_server.grpc_target) as ch:
        yield ch


@pytest.fixture(scope="module")
def model_id(channel: grpc.Channel) -> str:
    [model] = pb_grpc.ModelServiceStub(channel).ListModels(pb.ListModelsRequest(), timeout=HANG_GUARD_S).models
    assert model.loaded
    return str(model.id)


def sse_events(response: httpx.Response) -> list[dict[str, Any]]:
    data = [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


def assert_total(total_ms: float, timings: Any, started: float) -> None:
    """The final's total covers prompt and reply, and no more than the client waited."""
    assert total_ms > 0 and total_ms >= timings["prompt_eval_ms"] + timings["eval_ms"]
    assert total_ms <= (time.monotonic() - started) * 1000


def test_grpc_talk_messages_carry_id_model_and_time(channel: grpc.Channel, model_id: str) -> None:
    request = pb.TalkRequest(
        persona_id=NPC,
        conversation_id=f"ids-{uuid.uuid4().hex[:8]}",
        text="The hero enters the village.",
        max_tokens=12,
        seed=1,
    )
    started = time.monotonic()
    messages = list(pb_grpc.ConversationServiceStub(channel).Talk(request, timeout=HANG_GUARD_S))
    assert len(messages) > 1 and messages[-1].HasField("final")
    ids = {m.id for m in messages}
    assert len(ids) == 1 and ids.pop().startswith("talk-")
    assert {m.model for m in messages} == {model_id}
    created = {m.created for m in messages}
    assert len(created) == 1 and abs(created.pop() - time.time()) < 120
    timings = messages[-1].final.timings
    assert_total(timings.total_ms, {"prompt_eval_ms": timings.prompt_eval_ms, "eval_ms": timings.eval_ms}, started)


def test_grpc_chat_stream_final_has_a_total(channel: grpc.Channel, model_id: str) -> None:
    request = pb.StreamChatCompletionRequest(
        messages=[pb.ChatMessage(role="user", content="Hi")], sampling=pb.SamplingOptions(max_tokens=6)
    )
    started = time.monotonic()
    messages = list(pb_grpc.ChatServiceStub(channel).StreamChatCompletion(request, timeout=HANG_GUARD_S))
    assert {m.model for m in messages} == {model_id} and len({m.id for m in messages}) == 1
    timings = messages[-1].final.timings
    assert_total(timings.total_ms, {"prompt_eval_ms": timings.prompt_eval_ms, "eval_ms": timings.eval_ms}, started)


def test_rest_talk_events_carry_id_model_and_time(live_server: Any, model_id: str) -> None:
    path = f"/v1/npcs/{NPC}/conversations/ids-{uuid.uuid4().hex[:8]}:talk"
    started = time.monotonic()
    body = {"text": "The hero enters the village.", "sampling": {"max_tokens": 12, "temperature": 0, "seed": 1}}
    with httpx.stream("POST", live_server.http_url + path, json=body, timeout=HANG_GUARD_S) as response:
        assert response.status_code == 200
        events = sse_events(response)
    assert len(events) > 1 and "final" in events[-1]
    assert len({e["id"] for e in events}) == 1 and events[0]["id"].startswith("talk-")
    assert {e["model"] for e in events} == {model_id}
    assert len({e["created"] for e in events}) == 1 and int(events[0]["created"]) > 0  # int64: a string in JSON
    timings = events[-1]["final"]["timings"]
    assert_total(timings["total_ms"], timings, started)


def test_openai_chunks_final_has_a_total(live_server: Any, model_id: str) -> None:
    body = {"model": model_id, "stream": True, "max_tokens": 6, "messages": [{"role": "user", "content": "Hi"}]}
    started = time.monotonic()
    url = live_server.http_url + "/v1/chat/completions"
    with httpx.stream("POST", url, json=body, timeout=HANG_GUARD_S) as response:
        events = sse_events(response)
    assert len({(e["id"], e["model"], e["created"]) for e in events}) == 1
    timings = events[-1]["timings"]
    assert_total(timings["total_ms"], timings, started)
