"""Batches and choices over the real core and doors with a scripted engine: BatchChatCompletions (gRPC and the SDK's
batch_chat) returns one result per conversation in order and names the conversation at fault; REST's n gives n
choices (streamed keyed by index); both need the designer role; the SDK's unavailable error is a RuntimeError.
The real batching engine decoding a batch together is in test_chatapis_live.py."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc
from npcserver.client import AsyncNpcClient
from npcserver.client.errors import NpcInvalidArgument, NpcServerUnavailable
from npcserver.config import Settings
from npcserver.core.app import NpcCore
from npcserver.core.presets import PresetBook
from npcserver.core.types import ChatRequest, Message, SamplingOverrides
from npcserver.errors import PermissionDenied
from npcserver.grpc.server import GrpcDoor
from npcserver.http import create_http_app
from npcserver.service import final_of
from npcserver.store.sqlite import SqliteStore
from tests.fakes import FakeEngine
from tests.security.test_access_rules import CREDENTIALS, secured_service

REPO = Path(__file__).resolve().parents[2]
CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture
async def rest(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FakeEngine]]:
    engine = FakeEngine("Two silver.")
    core = NpcCore(engine, SqliteStore(tmp_path / "db.sqlite"), PresetBook())
    app = create_http_app(core, Settings(data_dir=tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://door") as client:
        yield client, engine


async def test_n_choices_each_with_its_own_seed(rest: tuple[httpx.AsyncClient, FakeEngine]) -> None:
    client, engine = rest
    reply = (await client.post(CHAT, json={"messages": HI, "n": 3, "seed": 40})).json()
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2]
    assert {c["message"]["content"] for c in reply["choices"]} == {"Two silver."}
    seeds = sorted(r.params.seed for r in engine.requests if r.params.seed is not None)
    assert len(engine.requests) == 3 and seeds == [40, 41, 42]  # reproducible, yet different choices
    usage = reply["usage"]
    assert usage["completion_tokens"] == 3 * 2 and usage["total_tokens"] == usage["prompt_tokens"] + 6


async def test_streamed_choices_are_keyed_by_index(rest: tuple[httpx.AsyncClient, FakeEngine]) -> None:
    client, _ = rest
    body = {"messages": HI, "n": 2, "stream": True, "stream_options": {"include_usage": True}}
    text = (await client.post(CHAT, json=body)).text
    chunks = [json.loads(x[6:]) for x in text.splitlines() if x.startswith("data: {")]
    by_index: dict[int, str] = {0: "", 1: ""}
    finished = set()
    for chunk in chunks:
        for choice in chunk["choices"]:
            by_index[choice["index"]] += choice["delta"].get("content", "")
            if choice["finish_reason"]:
                finished.add(choice["index"])
    assert by_index == {0: "Two silver.", 1: "Two silver."} and finished == {0, 1}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize("n", [0, 17, -1])
async def test_n_out_of_range_is_a_400_naming_n(rest: tuple[httpx.AsyncClient, FakeEngine], n: int) -> None:
    client, _ = rest
    refused = await client.post(CHAT, json={"messages": HI, "n": n})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "n" and "1 to 16" in refused.json()["error"]["message"]


@pytest.fixture
async def door(tmp_path: Path) -> AsyncIterator[str]:
    core = NpcCore(FakeEngine("Two silver."), SqliteStore(tmp_path / "db.sqlite"), PresetBook())
    grpc_door = GrpcDoor(core, Settings(grpc_port=0, data_dir=tmp_path))
    port = await grpc_door.start()
    await grpc_door.set_serving(True)
    yield f"127.0.0.1:{port}"
    await grpc_door.stop(0)


def conversation(words: int) -> pb.CreateChatCompletionRequest:
    return pb.CreateChatCompletionRequest(messages=[pb.ChatMessage(role="user", content=" ".join(["hey"] * words))])


async def test_batch_rpc_returns_one_result_per_conversation_in_order(door: str) -> None:
    async with grpc.aio.insecure_channel(door) as channel:
        chat = pb_grpc.ChatServiceStub(channel)
        batch = await chat.BatchChatCompletions(
            pb.BatchChatCompletionsRequest(conversations=[conversation(n) for n in (5, 1, 9)])
        )
        prompts = [r.usage.prompt_tokens for r in batch.results]
        assert prompts[1] < prompts[0] < prompts[2]  # each result answers its own conversation, in order
        assert {r.choices[0].message.content for r in batch.results} == {"Two silver."}

        bad = [conversation(1), pb.CreateChatCompletionRequest(messages=[pb.ChatMessage(role="wizard", content="x")])]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await chat.BatchChatCompletions(pb.BatchChatCompletionsRequest(conversations=bad))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "conversations[1]: messages[0].role 'wizard' is unknown" in (refused.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as empty:
            await chat.BatchChatCompletions(pb.BatchChatCompletionsRequest())
        assert "conversations must not be empty" in (empty.value.details() or "")


async def test_sdk_batch_chat(door: str) -> None:
    async with AsyncNpcClient(door, ready_timeout=10) as npc:
        results = await npc.batch_chat(["Hello there", [{"role": "user", "content": "Hi"}]], max_tokens=8)
        assert [r.text for r in results] == ["Two silver.", "Two silver."]
        assert results[0].usage.prompt_tokens > results[1].usage.prompt_tokens
        with pytest.raises(NpcInvalidArgument, match=r"conversations\[0\]: temperature"):
            await npc.batch_chat(["Hello"], temperature=9.0)
        with pytest.raises(TypeError, match="temprature"):  # a misspelt option is never dropped unnoticed
            await npc.batch_chat(["Hello"], temprature=0.5)  # type: ignore[call-arg]


async def test_the_sdks_server_not_running_error_is_a_runtime_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    with pytest.raises(RuntimeError) as err:
        async with AsyncNpcClient(f"127.0.0.1:{port}", ready_timeout=1.0):
            pass
    assert isinstance(err.value, NpcServerUnavailable) and "npcserver serve" in str(err.value)


@pytest.mark.parametrize("credential", ["player key", "player token"])
async def test_batches_and_choices_need_the_designer_role(tmp_path: Path, credential: str) -> None:
    service = await secured_service(tmp_path)
    hi = ChatRequest((Message("user", "Hi"),), overrides=SamplingOverrides(seed=1))

    async def choices() -> Any:
        return [e async for e in service.chat_choices(hi, 2)]

    for run in (lambda: service.batch_chat([hi, hi]), choices):
        service.admit(CREDENTIALS[credential])
        with pytest.raises(PermissionDenied, match="needs the designer role"):
            await run()
    service.admit(CREDENTIALS["designer key"])
    assert len(await service.batch_chat([hi, hi])) == 2
    assert (await final_of(service.stream_chat(hi))).text == "Two silver."


@pytest.mark.parametrize(
    ("field", "value"),
    [("logprobs", True), ("presence_penalty", 0.5), ("logit_bias", {"42": 5}), ("reasoning_effort", "low")],
)
async def test_openai_fields_this_server_cannot_honour_are_400_naming_them(
    rest: tuple[httpx.AsyncClient, FakeEngine], field: str, value: Any
) -> None:
    client, _ = rest
    refused = await client.post(CHAT, json={"messages": HI, field: value})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == field


async def test_fields_left_off_and_fields_that_do_not_change_the_reply_are_accepted(
    rest: tuple[httpx.AsyncClient, FakeEngine],
) -> None:
    client, _ = rest
    body = {"messages": HI, "logprobs": False, "presence_penalty": 0, "user": "p1", "store": False, "metadata": {}}
    assert (await client.post(CHAT, json=body)).status_code == 200


@pytest.mark.parametrize(
    ("extra", "param", "fragment"),
    [
        ({"documents": [{"title": "Log"}]}, "documents[0]", 'needs a "text"'),
        ({"documents": [{"text": "  "}]}, "documents", "documents[0].text must not be empty"),
        ({"documents": [{"text": "x"}] * 33}, "documents", "at most 32"),
        ({"chat_template_kwargs": {"tools_in_user": True}}, "chat_template_kwargs.tools_in_user", "not supported"),
        ({"chat_template_kwargs": {"enable_thinking": "yes"}}, "chat_template_kwargs.enable_thinking", "true or"),
    ],
)
async def test_bad_template_fields_are_400_naming_them(
    rest: tuple[httpx.AsyncClient, FakeEngine], extra: dict[str, Any], param: str, fragment: str
) -> None:
    client, _ = rest
    refused = await client.post(CHAT, json={"messages": HI, **extra})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == param and fragment in error["message"]


async def test_an_unknown_content_format_over_grpc_names_the_field(door: str) -> None:
    async with grpc.aio.insecure_channel(door) as channel:
        request = conversation(1)
        request.chat_template_content_format = "xml"
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pb_grpc.ChatServiceStub(channel).CreateChatCompletion(request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "chat_template_content_format 'xml' is unknown" in (refused.value.details() or "")
