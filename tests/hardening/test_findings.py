"""Regression tests for issue 11's findings 4, 5, 6, 8, 9, 11 and 12, on the real server over both doors.

Each one failed on the code before the fix: an INTERNAL/500, a read that failed for everyone, a turn that could not
be restored, an unbounded wait, an orphan turn or a refused preflight.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.core import limits
from npcserver.core.app import NpcCore
from npcserver.core.presets import PresetBook
from npcserver.core.types import Conversation, TalkRequest, Turn
from npcserver.service import NpcService
from npcserver.store.sqlite import SqliteStore
from tests.conftest import ServerProcess
from tests.fakes import FakeEngine
from tests.hardening.conftest import Doors

REPO = Path(__file__).resolve().parents[2]
TALK = "/v1/npcs/tavern_keeper/conversations/{}:talk"


def small_talk(conversation: str, text: str = "Hello", max_tokens: int = 4) -> pb.TalkRequest:
    return pb.TalkRequest(
        persona_id="tavern_keeper",
        conversation_id=conversation,
        text=text,
        sampling=pb.SamplingOptions(max_tokens=max_tokens),
    )


def persona_json(pid: str, **extra: object) -> dict[str, Any]:
    return {"id": pid, "display_name": "Tess", "system_prompt": "A smith.", **extra}


# --- finding 4: body and import limits ------------------------------------------------------------------------


def test_a_rest_body_over_the_limit_is_413_before_it_is_read(doors: Doors) -> None:
    body = b"{" + b" " * limits.MAX_BODY_BYTES + b"}"
    r = doors.http.put("/v1/npcs/tavern_keeper/conversations/big", content=body)
    assert r.status_code == 413
    assert "MAX_BODY_BYTES" in r.json()["error"]["message"]


def test_an_import_over_the_turn_limit_is_refused_naming_it_on_both_doors(doors: Doors) -> None:
    turns = [{"player_line": "a", "npc_line": "b"}] * (limits.MAX_IMPORT_TURNS + 1)
    r = doors.http.put("/v1/npcs/tavern_keeper/conversations/many", json={"turns": turns})
    assert r.status_code == 400 and "MAX_IMPORT_TURNS" in r.json()["error"]["message"]
    conversation = pb.Conversation(
        persona_id="tavern_keeper",
        conversation_id="many",
        turns=[pb.Turn(player_line="a", npc_line="b")] * (limits.MAX_IMPORT_TURNS + 1),
    )
    with pytest.raises(grpc.RpcError) as err:
        doors.conversations.ImportConversation(pb.ImportConversationRequest(conversation=conversation))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "MAX_IMPORT_TURNS" in err.value.details()


def test_a_large_import_does_not_block_health(doors: Doors) -> None:
    turns = [{"player_line": "a" * 300, "npc_line": "b" * 300}] * limits.MAX_IMPORT_TURNS
    slowest = 0.0
    done = threading.Event()

    def probe() -> None:
        nonlocal slowest
        while not done.is_set():
            t = time.perf_counter()
            doors.http.get("/healthz")
            slowest = max(slowest, time.perf_counter() - t)
            time.sleep(0.05)

    watcher = threading.Thread(target=probe)
    watcher.start()
    try:
        r = doors.http.put("/v1/npcs/tavern_keeper/conversations/long-save", json={"turns": turns})
    finally:
        done.set()
        watcher.join()
    assert r.status_code == 200, r.text
    assert slowest < 1.0, f"health waited {slowest:.2f}s during the import"


# --- finding 5: persona limits, and reads that never fail because of stored data ------------------------------


@pytest.mark.parametrize(
    ("extra", "limit"),
    [
        ({"max_tokens": 1_000_000}, "MAX_PERSONA_MAX_TOKENS"),
        ({"description": "d" * (limits.MAX_PERSONA_FIELD_CHARS + 1)}, "MAX_PERSONA_FIELD_CHARS"),
        ({"stop": ["x"] * (limits.MAX_PERSONA_STOPS + 1)}, "MAX_PERSONA_STOPS"),
    ],
)
def test_persona_fields_over_their_limits_are_refused_on_every_door(
    doors: Doors, extra: dict[str, object], limit: str
) -> None:
    r = doors.http.put("/v1/npcs/limits", json=persona_json("limits", **extra))
    assert r.status_code == 400 and limit in r.json()["error"]["message"], r.text
    with pytest.raises(grpc.RpcError) as err:
        doors.personas.CreatePersona(pb.CreatePersonaRequest(persona=pb.Persona(**persona_json("limits", **extra))))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and limit in err.value.details()


def test_a_whole_persona_over_the_size_limit_is_refused(doors: Doors) -> None:
    examples = [{"player_line": "p" * 4000, "npc_line": "n" * 4000}] * 30
    r = doors.http.put("/v1/npcs/huge", json=persona_json("huge", example_dialogue=examples))
    assert r.status_code == 400 and "MAX_PERSONA_CHARS" in r.json()["error"]["message"]


def test_a_stored_persona_over_the_limits_is_reported_by_reads_and_refused_at_talk(doors: Doors) -> None:
    # Written behind the server's back, as an older server (which had no limits) stored it.
    body = persona_json("old_giant", max_tokens=3_000_000_000, description="d" * 15_000_000)
    with sqlite3.connect(doors.server.data_dir / "npcserver.db") as db:
        db.execute("INSERT INTO personas (id, body, updated_ms) VALUES (?, ?, 0)", ("old_giant", json.dumps(body)))
    got = doors.personas.GetPersona(pb.GetPersonaRequest(persona_id="old_giant")).persona
    assert "MAX_PERSONA" in got.load_error and not got.HasField("max_tokens")
    listed = doors.personas.ListPersonas(pb.ListPersonasRequest(page_size=1000)).personas
    assert "old_giant" in [p.id for p in listed]
    assert doors.http.get("/v1/npcs/old_giant").status_code == 200
    with pytest.raises(grpc.RpcError) as err:
        list(doors.conversations.Talk(pb.TalkRequest(persona_id="old_giant", conversation_id="c", text="Hi")))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "old_giant" in err.value.details()
    doors.http.delete("/v1/npcs/old_giant")


# --- finding 6: an empty NPC line is never stored; export -> import round trips ---------------------------------


async def test_an_empty_reply_is_not_stored(tmp_path: Path) -> None:
    core = NpcCore(FakeEngine(""), SqliteStore(tmp_path / "db.sqlite"), PresetBook())
    await core.load_persona_files(REPO / "personas")
    final = await NpcService(core).talk(TalkRequest("tavern_keeper", "c", "Hello?"))
    assert final.text == "" and final.stored is False
    assert (await core.get_conversation("tavern_keeper", "c")).turns == ()


async def test_import_accepts_an_empty_npc_line_from_an_older_export(tmp_path: Path) -> None:
    core = NpcCore(FakeEngine(), SqliteStore(tmp_path / "db.sqlite"), PresetBook())
    await core.load_persona_files(REPO / "personas")
    saved = Conversation("tavern_keeper", "c", (Turn("Hello?", "", 1), Turn("Anyone?", "Aye.", 2)))
    assert await core.import_conversation(saved) == 2
    assert (await core.get_conversation("tavern_keeper", "c")).turns == saved.turns


def test_export_then_import_round_trips_on_every_door(doors: Doors) -> None:
    export = pb.ExportConversationRequest(persona_id="tavern_keeper", conversation_id="round-trip")
    for i in range(8):  # Greta may answer a line with an empty reply, which is not stored: talk until two are
        list(doors.conversations.Talk(small_talk("round-trip", f"Line {i}")))
        exported = doors.conversations.ExportConversation(export).conversation
        if len(exported.turns) == 2:
            break
    assert len(exported.turns) == 2
    doors.conversations.ImportConversation(pb.ImportConversationRequest(conversation=exported))
    as_json = doors.http.get("/v1/npcs/tavern_keeper/conversations/round-trip").json()
    r = doors.http.put("/v1/npcs/tavern_keeper/conversations/round-trip", json=as_json)
    assert r.status_code == 200, r.text
    assert doors.http.get("/v1/npcs/tavern_keeper/conversations/round-trip").json() == as_json


# --- finding 8: waiting on a conversation counts toward max_queue ------------------------------------------------


def test_talks_waiting_on_one_conversation_get_resource_exhausted_past_the_queue(server_factory: object) -> None:
    server: ServerProcess = server_factory(NPCSERVER_MAX_QUEUE="2", NPCSERVER_PARALLEL="1")  # type: ignore[operator]
    doors = Doors(server)

    def talk(i: int) -> str:
        try:
            list(doors.conversations.Talk(small_talk("crowd", f"Hi {i}", max_tokens=16), timeout=120))
            return "OK"
        except grpc.RpcError as exc:
            return str(exc.code().name)

    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(talk, range(20)))
    doors.close()
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, codes
    assert codes.count("RESOURCE_EXHAUSTED") >= 10, codes
    assert codes.count("OK") >= 1, codes


# --- finding 9: bad inputs are precise INVALID_ARGUMENT / 400, never INTERNAL / 500 ------------------------------


@pytest.mark.parametrize(
    ("method", "path", "raw", "names"),
    [
        ("POST", TALK.format("bad"), '{"text":"hi","sampling":{"seed":' + "9" * 5000 + "}}", "digits"),
        ("POST", TALK.format("bad"), '{"text":"hi","sampling":{"seed":' + "9" * 30 + "}}", "seed"),
        ("POST", TALK.format("bad"), '{"text":"hi \\ud800"}', "text"),
        ("POST", TALK.format("bad"), '{"text":"hi \\u0000"}', "text"),
        ("POST", "/v1/chat/completions", '{"messages":[{"role":"user","content":"a\\ud800"}]}', "messages[0].content"),
        (
            "POST",
            "/v1/chat/completions",
            '{"messages":[{"role":"user","content":"a"}],"seed":' + "9" * 30 + "}",
            "seed",
        ),
        ("POST", "/v1/npcs", '{"id":"sur","display_name":"a\\ud800","system_prompt":"x"}', "display_name"),
        ("POST", "/v1/npcs", '{"id":"nul","display_name":"a","system_prompt":"x\\u0000"}', "system_prompt"),
        (
            "PUT",
            "/v1/npcs/tavern_keeper/conversations/bad",
            '{"turns":[{"player_line":"a\\ud800","npc_line":"b"}]}',
            "player_line",
        ),
        ("POST", "/v1/chat/completions", "[" * 10_000 + "]" * 10_000, "MAX_JSON_DEPTH"),
        ("POST", "/api/chat", "[" * 10_000 + "]" * 10_000, "MAX_JSON_DEPTH"),
        ("POST", "/api/chat", '{"model":"m","options":{"seed":' + "9" * 5000 + "}}", "digits"),
        ("POST", "/v1/npcs", '{"id":"mt","display_name":"a","system_prompt":"x","max_tokens":1e999}', "max_tokens"),
        (
            "PUT",
            "/v1/npcs/tavern_keeper/conversations/bad",
            '{"turns":[{"player_line":"a","npc_line":"b","create_time_ms":' + str(2**70) + "}]}",
            "create_time_ms",
        ),
        (
            "PUT",
            "/v1/npcs/tavern_keeper/conversations/bad",
            '{"turns":[{"player_line":"a","npc_line":"b","create_time_ms":-5}]}',
            "create_time_ms",
        ),
    ],
)
def test_bad_rest_input_is_a_400_naming_the_field(doors: Doors, method: str, path: str, raw: str, names: str) -> None:
    r = doors.http.request(method, path, content=raw.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]  # Ollama's routes answer {"error": "..."}
    assert names in (error if isinstance(error, str) else error["message"]), r.text


def test_a_schema_nested_200_deep_is_a_400(doors: Doors) -> None:
    schema: dict[str, object] = {"type": "string"}
    for _ in range(100):
        schema = {"type": "object", "properties": {"a": schema}}
    body = {
        "messages": [{"role": "user", "content": "a"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }
    r = doors.http.post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and "MAX_" in r.text
    with pytest.raises(grpc.RpcError) as err:
        doors.chat.CreateChatCompletion(
            pb.CreateChatCompletionRequest(
                messages=[pb.ChatMessage(role="user", content="a")],
                response_format=pb.ResponseFormat(
                    type=pb.ResponseFormat.TYPE_JSON_SCHEMA,
                    json_schema=pb.JsonSchema(name="x", schema=json.dumps(schema)),
                ),
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "MAX_" in err.value.details()


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("/npcserver.api.v1.ConversationService/Talk", b"\x0a\x02tk\x12\x01c\x1a\x03\xed\xa0\x80"),
        ("/npcserver.api.v1.PersonaService/GetPersona", b"\x0a\x03\xed\xa0\x80"),
        ("/npcserver.api.v1.PersonaService/GetPersona", b"\x0a\x09abc"),  # truncated
    ],
)
def test_undecodable_grpc_messages_are_invalid_argument(doors: Doors, method: str, message: bytes) -> None:
    call = doors.channel.unary_stream if method.endswith("Talk") else doors.channel.unary_unary
    rpc = call(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as err:
        result = rpc(message, timeout=10)
        list(result) if method.endswith("Talk") else None
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert "not a valid message" in err.value.details()


def test_nul_in_grpc_text_is_invalid_argument_naming_it(doors: Doors) -> None:
    with pytest.raises(grpc.RpcError) as err:
        list(doors.conversations.Talk(small_talk("nul", "hi\x00there")))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "text" in err.value.details()


# --- finding 11: a Talk streaming while its persona is deleted stores nothing ------------------------------------


def test_a_talk_streaming_when_its_persona_is_deleted_stores_no_orphan(doors: Doors) -> None:
    doors.http.delete("/v1/npcs/doomed")
    assert doors.http.put("/v1/npcs/doomed", json=persona_json("doomed")).status_code == 200
    stream = doors.conversations.Talk(
        pb.TalkRequest(
            persona_id="doomed",
            conversation_id="c",
            text="Tell me a long story.",
            sampling=pb.SamplingOptions(max_tokens=64, stop=["\u2603"]),
        )
    )
    first = next(stream)
    assert first.HasField("delta")
    assert doors.http.delete("/v1/npcs/doomed").status_code == 200
    assert doors.http.put("/v1/npcs/doomed", json=persona_json("doomed")).status_code == 200
    with pytest.raises(grpc.RpcError) as err:
        for _ in stream:
            pass
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "not stored" in err.value.details()
    assert doors.http.get("/v1/npcs/doomed/conversations/c").json()["turns"] == []
    doors.http.delete("/v1/npcs/doomed")


# --- finding 12: CORS preflight allows PUT and DELETE -------------------------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_cors_preflight_allows_put_and_delete(doors: Doors, method: str) -> None:
    r = doors.http.options(
        "/v1/npcs/tavern_keeper",
        headers={"origin": "https://game.example", "access-control-request-method": method},
    )
    assert r.status_code == 200
    assert method in r.headers["access-control-allow-methods"]
