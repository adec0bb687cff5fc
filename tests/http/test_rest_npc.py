"""The NPC REST routes in process (httpx's ASGI transport) over the real core and a scripted engine: proto-JSON
shapes, the sampling options reaching the engine exactly as over gRPC, and errors that name the field to fix.

The real model runs behind the same routes in test_http_live.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from npcserver.config import Settings
from npcserver.core.app import NpcCore
from npcserver.core.presets import PresetBook
from npcserver.http import create_http_app
from npcserver.store.sqlite import SqliteStore
from tests.fakes import FakeEngine

REPO = Path(__file__).resolve().parents[2]
TALK = "/v1/npcs/tavern_keeper/conversations/c:talk"
SAMPLING = {
    "temperature": 0.3,
    "top_p": 0.5,
    "top_k": 7,
    "min_p": 0.2,
    "repeat_penalty": 1.3,
    "seed": "42",
    "max_tokens": 5,
    "stop": ["zz", "yy"],
}


@pytest.fixture
async def door(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FakeEngine]]:
    engine = FakeEngine("Two silver.")
    core = NpcCore(engine, SqliteStore(tmp_path / "db.sqlite"), PresetBook())
    await core.load_persona_files(REPO / "personas")
    app = create_http_app(core, Settings(data_dir=tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://door") as client:
        yield client, engine


def sse_events(text: str) -> list[Any]:
    data = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


async def test_talk_streams_talk_responses_and_the_final_is_completion_final_plus_stored(
    door: tuple[httpx.AsyncClient, FakeEngine],
) -> None:
    client, _ = door
    reply = await client.post(TALK, json={"text": "Room?"})
    assert reply.status_code == 200
    events = sse_events(reply.text)
    assert [e["delta"] for e in events[:-1]] == [{"content": "Two"}, {"content": " silver."}]
    final = events[-1]["final"]
    assert set(final) == {
        "message",
        "finish_reason",
        "usage",
        "timings",
        "truncated_turns",
        "stored",
        "action_calls",
        "replayed",
    }
    assert final["message"] == {
        "role": "assistant",
        "content": "Two silver.",
        "name": "",
        "tool_calls": [],
        "tool_call_id": "",
    }
    assert final["action_calls"] == []
    assert final["finish_reason"] == "FINISH_REASON_STOP" and final["stored"] is True
    unary = await client.post(TALK, json={"text": "And food?", "stream": False})
    assert unary.json()["stored"] is True and unary.json()["usage"]["completion_tokens"] == 2


async def test_talk_sampling_options_reach_the_engine(door: tuple[httpx.AsyncClient, FakeEngine]) -> None:
    client, engine = door
    body = {"text": "Hi", "stream": False, "temperature": 1.9, "sampling": SAMPLING}
    assert (await client.post(TALK, json=body)).status_code == 200
    params = engine.requests[-1].params
    assert (params.top_k, params.seed, params.max_tokens, params.stop[:2]) == (7, 42, 5, ("zz", "yy"))
    assert params.temperature == pytest.approx(0.3) and params.top_p == pytest.approx(0.5)
    assert params.min_p == pytest.approx(0.2) and params.repeat_penalty == pytest.approx(1.3)


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"sampling": {"top_k": -1}}, "top_k", "top_k must be"),
        ({"sampling": {"min_p": 1.5}}, "min_p", "min_p must be"),
        ({"sampling": {"repeat_penalty": 0}}, "repeat_penalty", "repeat_penalty must be"),
        ({"top_k": 3}, "top_k", 'go under "sampling"'),
        ({"sampling": {"top_k": "many"}}, None, "top_k"),
        ({"persona_id": "narrator"}, "persona_id", "differs from the path"),
        ({"stream": "yes"}, "stream", "stream must be"),
    ],
)
async def test_bad_talk_bodies_are_400_naming_the_field(
    door: tuple[httpx.AsyncClient, FakeEngine], body: dict[str, Any], field: str | None, words: str
) -> None:
    client, engine = door
    reply = await client.post(TALK, json={"text": "Hi", **body})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert words in error["message"]
    if field is not None:
        assert error["param"] == field
    assert engine.requests == []


async def test_personas_are_proto_json(door: tuple[httpx.AsyncClient, FakeEngine]) -> None:
    client, _ = door
    persona = {
        "id": "bram",
        "display_name": "Bram",
        "system_prompt": "Bram is a ferryman.",
        "example_dialogue": [{"player_line": "How much?", "npc_line": "One copper."}],
        "max_tokens": 40,
        "response_schema": json.dumps({"type": "object"}),
    }
    created = await client.post("/v1/npcs", json=persona)
    assert created.status_code == 201, created.text
    got = (await client.get("/v1/npcs/bram")).json()
    assert got == {
        **persona,
        "default_preset": "",
        "stop": [],
        "player_name": "",
        "description": "",
        "source": "",
        "load_error": "",
        "opening_lines": [],
        "post_history_instructions": "",
        "actions": [],
        "propose_memories": False,
    }
    listed = (await client.get("/v1/npcs", params={"page_size": 1})).json()
    assert set(listed) == {"personas", "next_page_token"} and len(listed["personas"]) == 1
    wrong = await client.put("/v1/npcs/bram", json={**persona, "example_dialogue": [{"player": "x", "npc": "y"}]})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "player"
    other = await client.put("/v1/npcs/bram", json={**persona, "id": "someone"})
    assert other.status_code == 400 and other.json()["error"]["param"] == "id"
    presets = (await client.get("/v1/presets")).json()
    assert presets["default_preset"] == "dialogue"
    assert {p["name"]: p["top_k"] for p in presets["presets"]}["factual"] == 20
    assert (await client.delete("/v1/npcs/bram")).json() == {"deleted_conversations": 0}


async def test_conversations_round_trip_as_proto_json(door: tuple[httpx.AsyncClient, FakeEngine]) -> None:
    client, _ = door
    path = "/v1/npcs/tavern_keeper/conversations/save-1"
    turns = [{"player_line": "Hello", "npc_line": "Evening.", "create_time_ms": 1000, "player_name": "Ana"}]
    assert (await client.put(path, json={"turns": turns})).json() == {"imported_turns": 1}
    exported = (await client.get(path)).json()
    # int64 is a string in proto-JSON; a number is accepted on the way in.
    assert exported == {
        "persona_id": "tavern_keeper",
        "conversation_id": "save-1",
        "turns": [{**turns[0], "create_time_ms": "1000", "action_calls": [], "action_results": []}],
        "memories": [],
    }
    assert (await client.put(path, json=exported)).json() == {"imported_turns": 1}
    assert (await client.delete(path)).json() == {"deleted_turns": 1}
