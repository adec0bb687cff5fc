"""A thinking model's reasoning, split off the reply: the splitter on scripted pieces, then every door over the real
core with a scripted engine (reasoning_content on REST and gRPC, thinking on the Ollama door, never in a stored
turn). The real model and a thinking template run in test_chatapis_live.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc
from npcserver.config import Settings
from npcserver.core.app import NpcCore
from npcserver.core.presets import PresetBook
from npcserver.core.thinking import Markers, ReasoningSplitter, markers_for, opens_inside
from npcserver.core.types import Completion, TalkRequest
from npcserver.engine.base import (
    Finished,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    GenerationStats,
    ModelInfo,
    TextDelta,
)
from npcserver.grpc.server import GrpcDoor
from npcserver.http import create_http_app
from npcserver.store.sqlite import SqliteStore
from tests.fakes import FakeEngine

REPO = Path(__file__).resolve().parents[2]
TALK = "/v1/npcs/tavern_keeper/conversations/c:talk"
# The markers arrive split across pieces, as a tokenizer may sample them.
THOUGHT = ["<th", "ink>The player wants", " a room.</t", "hink", ">\n\nTwo", " silver."]


def split_all(pieces: Sequence[str], **kw: Any) -> tuple[str, str]:
    splitter = ReasoningSplitter(**kw)
    out = [p for piece in pieces for p in splitter.feed(piece)] + splitter.finish()
    return "".join(t for r, t in out if r), "".join(t for r, t in out if not r)


def test_markers_split_across_pieces_are_found() -> None:
    assert split_all(THOUGHT) == ("The player wants a room.", "Two silver.")
    # One character at a time: every marker is split everywhere it can be.
    assert split_all(list("".join(THOUGHT))) == ("The player wants a room.", "Two silver.")


def test_an_unclosed_think_at_max_tokens_is_all_reasoning() -> None:
    assert split_all(["<think>Hmm, the player", " asked for", " a ro"]) == ("Hmm, the player asked for a ro", "")
    # A reply cut inside the closing marker: the half marker is reasoning too, never the NPC's line.
    assert split_all(["<think>Hmm.</thi"]) == ("Hmm.</thi", "")


def test_text_that_only_looks_like_a_marker_is_the_reply() -> None:
    assert split_all(["Five <", " six <th", "ree"]) == ("", "Five < six <three")
    assert split_all(["Coins <"]) == ("", "Coins <")  # held back until the end, then given back


def test_a_template_that_opens_the_reasoning_starts_inside_it() -> None:
    markers = Markers()
    assert opens_inside("<|im_start|>assistant\n<think>\n", markers)
    assert not opens_inside("<|im_start|>assistant\n<think>\n\n</think>\n\n", markers)
    assert not opens_inside("<|im_start|>assistant\n", markers)
    assert split_all(["I should greet.", "</think>", "Welcome!"], inside=True) == ("I should greet.", "Welcome!")


def test_a_templates_own_markers_are_used() -> None:
    magistral = "{{ '[THINK]' }}{% for m in messages %}{{ m.content }}{% endfor %}{{ '[/THINK]' }}"
    markers = markers_for(magistral)
    assert markers == Markers("[THINK]", "[/THINK]")
    assert split_all(["[THI", "NK]plan[/THINK]", "Hello."], markers=markers) == ("plan", "Hello.")
    assert markers_for(None) == Markers()


class ScriptedEngine(FakeEngine):
    """Yields exactly these pieces, then finishes with ``finish``."""

    def __init__(self, pieces: Sequence[str], finish: FinishReason = "stop", template: str | None = None) -> None:
        super().__init__()
        self.pieces = list(pieces)
        self.finish = finish
        self.template = template

    @property
    def info(self) -> ModelInfo:
        return replace(super().info, chat_template=self.template)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        self.requests.append(request)
        for piece in self.pieces:
            yield TextDelta(piece)
        yield Finished(GenerationStats(self.finish, len(request.prompt), len(self.pieces)))


async def make_core(tmp_path: Path, engine: FakeEngine) -> NpcCore:
    core = NpcCore(engine, SqliteStore(tmp_path / "db.sqlite"), PresetBook())
    await core.load_persona_files(REPO / "personas")
    return core


@pytest.fixture
async def rest(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    core = await make_core(tmp_path, ScriptedEngine(THOUGHT))
    app = create_http_app(core, Settings(data_dir=tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://door") as client:
        yield client


def sse(text: str) -> list[Any]:
    data = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


async def test_rest_chat_completions_return_reasoning_content(rest: httpx.AsyncClient) -> None:
    body = {"messages": [{"role": "user", "content": "A room?"}], "enable_thinking": True}
    unary = (await rest.post("/v1/chat/completions", json=body)).json()
    message = unary["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "Two silver.", "reasoning_content": "The player wants a room."}

    streamed = sse((await rest.post("/v1/chat/completions", json={**body, "stream": True})).text)
    deltas = [c["choices"][0]["delta"] for c in streamed if c["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "The player wants a room."
    assert "".join(d.get("content", "") for d in deltas) == "Two silver."
    assert not any("think" in d.get("content", "") for d in deltas)


async def test_rest_talk_keeps_reasoning_out_of_the_line_and_the_stored_turn(rest: httpx.AsyncClient) -> None:
    events = sse((await rest.post(TALK, json={"text": "A room?", "enable_thinking": True})).text)
    deltas = [e["delta"] for e in events if "delta" in e]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "The player wants a room."
    assert "".join(d.get("content", "") for d in deltas) == "Two silver."
    final = events[-1]["final"]
    assert final["message"]["content"] == "Two silver." and final["stored"] is True
    assert final["message"]["reasoning_content"] == "The player wants a room."
    [turn] = (await rest.get(TALK.removesuffix(":talk"))).json()["turns"]
    assert turn["npc_line"] == "Two silver."


async def test_ollama_door_returns_thinking_and_accepts_think(rest: httpx.AsyncClient) -> None:
    body = {"model": "fake", "messages": [{"role": "user", "content": "A room?"}], "think": True}
    whole = (await rest.post("/api/chat", json={**body, "stream": False})).json()
    assert whole["message"]["content"] == "Two silver."
    assert whole["message"]["thinking"] == "The player wants a room."
    lines = [json.loads(x) for x in (await rest.post("/api/chat", json=body)).text.splitlines()]
    assert "".join(x["message"].get("thinking", "") for x in lines) == "The player wants a room."
    assert "".join(x["message"]["content"] for x in lines) == "Two silver."
    levels = await rest.post("/api/chat", json={**body, "think": "high"})
    assert levels.status_code == 400 and "think" in levels.json()["error"]


async def test_grpc_talk_and_chat_carry_reasoning_in_its_own_field(tmp_path: Path) -> None:
    core = await make_core(tmp_path, ScriptedEngine(["<think>Count coins.", "</think>Two silver."], "stop"))
    door = GrpcDoor(core, Settings(grpc_port=0, data_dir=tmp_path))
    port = await door.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            talk = pb.TalkRequest(persona_id="tavern_keeper", conversation_id="g", text="Room?", enable_thinking=True)
            messages = [m async for m in pb_grpc.ConversationServiceStub(channel).Talk(talk)]
            assert [m.delta.reasoning_content for m in messages[:-1]] == ["Count coins.", ""]
            assert [m.delta.content for m in messages[:-1]] == ["", "Two silver."]
            final = messages[-1].final
            assert (final.message.content, final.message.reasoning_content) == ("Two silver.", "Count coins.")
            chat = pb_grpc.ChatServiceStub(channel)
            reply = await chat.CreateChatCompletion(
                pb.CreateChatCompletionRequest(messages=[pb.ChatMessage(role="user", content="Room?")])
            )
            assert reply.choices[0].message.content == "Two silver."
            assert reply.choices[0].message.reasoning_content == "Count coins."
    finally:
        await door.stop(0)
    [turn] = (await core.get_conversation("tavern_keeper", "g")).turns
    assert turn.npc_line == "Two silver."


async def test_a_reply_cut_off_while_thinking_says_nothing_and_stores_nothing(tmp_path: Path) -> None:
    core = await make_core(tmp_path, ScriptedEngine(["<think>Let me", " think about"], "length"))
    events = [e async for e in core.stream_talk(TalkRequest("tavern_keeper", "cut", "Room?"))]
    assert not any(isinstance(e, TextDelta) for e in events), "no reasoning may reach the NPC's line"
    final = events[-1]
    assert isinstance(final, Completion) and final.finish_reason == "length"
    assert final.text == "" and final.reasoning == "Let me think about" and final.stored is False
    assert (await core.get_conversation("tavern_keeper", "cut")).turns == ()
