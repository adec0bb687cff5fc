"""Thinking and batches on the real model.

A real server runs a copy of the embedded model that carries a Qwen3-style template with the ``enable_thinking``
switch (tests/fixtures/templates/qwen3_thinking.jinja): off, the template closes the reasoning before the reply; on,
it opens it, so every word the base model writes is reasoning, which no door may put in an NPC's line or a stored
turn. The batch test runs the batching engine in process and reads its stats snapshot while a batch decodes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from bench.template_gguf import stamp_template
from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc
from npcserver.client import NpcClient
from npcserver.config import Settings
from npcserver.core.app import NpcCore
from npcserver.core.presets import PresetBook
from npcserver.core.types import ChatRequest, Message, SamplingOverrides
from npcserver.engine.batched import BatchedEngine
from npcserver.engine.model import resolve_model_path
from npcserver.service import NpcService
from npcserver.store.sqlite import SqliteStore
from tests.conftest import ServerProcess, start_server

pytestmark = pytest.mark.model

TEMPLATE = Path(__file__).resolve().parents[1] / "fixtures" / "templates" / "qwen3_thinking.jinja"
HANG_GUARD_S = 180
HI = [pb.ChatMessage(role="user", content="Is the mountain pass open?")]
HI_JSON = [{"role": "user", "content": "Is the mountain pass open?"}]


@pytest.fixture(scope="module")
def thinking_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("thinking-model") / "qwen3-thinking.gguf"
    stamp_template(resolve_model_path(None, Settings().cache_dir), out, TEMPLATE.read_text(), {})
    yield out
    out.unlink(missing_ok=True)  # as big as the model


@pytest.fixture(scope="module")
def server(thinking_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    served = start_server(
        tmp_path_factory.mktemp("thinking-data"),
        NPCSERVER_MODEL=str(thinking_model),
        NPCSERVER_CTX_SIZE="2048",
        NPCSERVER_PARALLEL="2",
    )
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="module")
def stubs(server: ServerProcess) -> Iterator[tuple[pb_grpc.ChatServiceStub, Any, Any]]:
    channel = grpc.insecure_channel(server.grpc_target)
    try:
        yield (
            pb_grpc.ChatServiceStub(channel),
            pb_grpc.ConversationServiceStub(channel),
            pb_grpc.PersonaServiceStub(channel),
        )
    finally:
        channel.close()


def complete(chat: pb_grpc.ChatServiceStub, **kw: Any) -> pb.CreateChatCompletionResponse:
    # Sampled (not greedy): the base model then writes words rather than ending its turn at once.
    request = pb.CreateChatCompletionRequest(messages=HI, temperature=1.0, seed=3, max_tokens=12, **kw)
    response: pb.CreateChatCompletionResponse = chat.CreateChatCompletion(request, timeout=HANG_GUARD_S)
    return response


def test_the_switch_reaches_the_template_on_every_door(server: ServerProcess, stubs: Any) -> None:
    chat, conversations, personas = stubs
    off = complete(chat, enable_thinking=False).usage.prompt_tokens
    unset = complete(chat).usage.prompt_tokens
    assert off > unset  # the closed reasoning block is in the prompt: thinking is off
    # REST, in vLLM's spelling and in the plain field; Ollama's think.
    body = {"messages": [{"role": "user", "content": HI[0].content}], "max_tokens": 4, "seed": 7}
    for extra in ({"chat_template_kwargs": {"enable_thinking": False}}, {"enable_thinking": False}):
        rest = httpx.post(f"{server.http_url}/v1/chat/completions", json={**body, **extra}, timeout=HANG_GUARD_S)
        assert rest.json()["usage"]["prompt_tokens"] == off
    [model] = httpx.get(f"{server.http_url}/api/tags", timeout=30).json()["models"]
    ollama = {"model": model["name"], "messages": body["messages"], "stream": False, "options": {"num_predict": 4}}
    said = httpx.post(f"{server.http_url}/api/chat", json={**ollama, "think": False}, timeout=HANG_GUARD_S).json()
    assert said["prompt_eval_count"] == off

    # A persona's default, and a Talk that overrides it.
    persona = pb.Persona(id="quiet_guard", display_name="Guard", system_prompt="You guard the pass.")
    persona.enable_thinking = False
    personas.CreatePersona(pb.CreatePersonaRequest(persona=persona))
    assert personas.GetPersona(pb.GetPersonaRequest(persona_id="quiet_guard")).persona.enable_thinking is False
    finals = []
    for override in (None, True):
        talk = pb.TalkRequest(persona_id="quiet_guard", conversation_id=uuid.uuid4().hex, text="Open?", max_tokens=4)
        if override is not None:
            talk.enable_thinking = override
        finals.append(list(conversations.Talk(talk, timeout=HANG_GUARD_S))[-1].final)
    default_off, on = finals
    # The persona's default closed the reasoning ("<think>\n\n</think>\n\n"); the Talk's own switch opened it.
    assert default_off.usage.prompt_tokens > on.usage.prompt_tokens
    assert on.message.HasField("reasoning_content") and not default_off.message.HasField("reasoning_content")


def test_reasoning_never_reaches_an_npc_line_or_a_stored_turn(server: ServerProcess, stubs: Any) -> None:
    chat, conversations, personas = stubs
    # Thinking on: the template opened the reasoning, so the model's words are reasoning until it closes it.
    reply = complete(chat, enable_thinking=True).choices[0].message
    assert reply.reasoning_content and "<think>" not in reply.content and "</think>" not in reply.content

    persona = pb.Persona(id="thinking_guard", display_name="Guard", system_prompt="You guard the pass.")
    persona.enable_thinking = True
    personas.CreatePersona(pb.CreatePersonaRequest(persona=persona))
    conversation = uuid.uuid4().hex
    talk = pb.TalkRequest(
        persona_id="thinking_guard", conversation_id=conversation, text="Open?", max_tokens=12, temperature=1.0, seed=3
    )
    messages = list(conversations.Talk(talk, timeout=HANG_GUARD_S))
    final = messages[-1].final
    line = "".join(m.delta.content for m in messages[:-1])
    assert "".join(m.delta.reasoning_content for m in messages[:-1]) == final.message.reasoning_content != ""
    assert line == final.message.content and "think>" not in line
    stored = conversations.GetConversation(
        pb.GetConversationRequest(persona_id="thinking_guard", conversation_id=conversation)
    ).conversation.turns
    # A reply that was all reasoning says nothing and stores nothing; one that closed it stores only the line.
    assert [t.npc_line for t in stored] == ([line] if line.strip() else [])

    # REST Talk and chat, and Ollama: the same split, each in its own API's field.
    url = f"{server.http_url}/v1/npcs/thinking_guard/conversations/{conversation}:talk"
    events = [
        json.loads(x[6:])
        for x in httpx.post(
            url, json={"text": "Why?", "max_tokens": 12, "temperature": 1.0, "seed": "3"}, timeout=HANG_GUARD_S
        ).text.splitlines()
        if x.startswith("data: {")
    ]
    rest_final = events[-1]["final"]
    assert rest_final["message"]["reasoning_content"] and "think>" not in rest_final["message"]["content"]
    body = {"messages": HI_JSON, "max_tokens": 12, "temperature": 1.0, "seed": 3, "enable_thinking": True}
    message = httpx.post(f"{server.http_url}/v1/chat/completions", json=body, timeout=HANG_GUARD_S).json()
    assert message["choices"][0]["message"]["reasoning_content"]
    [model] = httpx.get(f"{server.http_url}/api/tags", timeout=30).json()["models"]
    ollama = {"model": model["name"], "messages": body["messages"], "stream": False, "think": True}
    options = {"num_predict": 12, "temperature": 1.0, "seed": 3}
    said = httpx.post(f"{server.http_url}/api/chat", json={**ollama, "options": options}, timeout=HANG_GUARD_S)
    assert said.json()["message"]["thinking"] and "think>" not in said.json()["message"]["content"]


def test_sdk_batch_and_rest_choices_on_the_real_server(server: ServerProcess) -> None:
    with NpcClient(server.grpc_target, ready_timeout=60) as npc:
        results = npc.batch_chat(["Hello.", "Is the pass open?", "Who rules here?"], max_tokens=6, seed=3)
    assert len(results) == 3 and all(r.finish_reason in ("stop", "length") for r in results)
    assert len({r.usage.prompt_tokens for r in results}) == 3  # each answers its own conversation
    body = {"messages": [{"role": "user", "content": "Name a fruit."}], "max_tokens": 6, "n": 2, "seed": 5}
    reply = httpx.post(f"{server.http_url}/v1/chat/completions", json=body, timeout=HANG_GUARD_S).json()
    assert [c["index"] for c in reply["choices"]] == [0, 1]


@pytest.mark.asyncio(loop_scope="session")
async def test_a_batch_is_decoded_together_by_the_batching_engine(tmp_path: Path) -> None:
    model_path = resolve_model_path(None, Settings().cache_dir)
    engine = BatchedEngine(model_path=model_path, threads=2, ctx_size=1024, n_seq=4, n_batch=128)
    await engine.start()
    try:
        service = NpcService(NpcCore(engine, SqliteStore(tmp_path / "db.sqlite"), PresetBook()))
        lines = ["The tavern is", "The dragon was", "Our ship sails", "The old king"]
        # Replies long enough that, submitted together, they are generating at the same time.
        batch = [
            ChatRequest((Message("user", line),), overrides=SamplingOverrides(max_tokens=48, seed=i))
            for i, line in enumerate(lines)
        ]
        peak = 0
        task = asyncio.ensure_future(service.batch_chat(batch))
        while not task.done():
            peak = max(peak, engine.stats().running)
            await asyncio.sleep(0.005)
        results = task.result()
        assert len(results) == 4 and all(r.completion_tokens > 0 for r in results)
        assert peak >= 2, f"the batch was decoded one conversation at a time (peak {peak} running sequences)"
    finally:
        await engine.close()
