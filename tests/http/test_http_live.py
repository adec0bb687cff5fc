"""The HTTP/1.1 door of the real server on the real embedded model: the official ``openai`` client against /v1,
SSE the way ``curl -N`` reads it, a raw gRPC-Web client against the very servicers of the gRPC door, cancellation on
disconnect, CORS, the API key, and a graceful shutdown mid-stream.

The model is a small base model, so replies are checked for shape (streaming, token counts, schema validity,
storage), never for what they say.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
import jsonschema
import openai
import pytest

from npcserver.api.v1 import npcserver_pb2 as pb
from tests.http.grpcweb_wire import WebReply, call

SERVICE = "/npcserver.api.v1."
TALK = SERVICE + "ConversationService/Talk"
NPC = "tavern_keeper"
#: A persona without actions, for replies forced into a long JSON schema (actions and a JSON format do not mix).
SCHEMA_NPC = "narrator"


def long_schema(n: int) -> dict[str, Any]:
    """A schema whose every valid reply is long (n required keys), so a reply reliably spans a few seconds."""
    props = {f"line{i:02d}": {"type": "string", "maxLength": 40} for i in range(n)}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def pb_long_format(n: int) -> pb.ResponseFormat:
    return pb.ResponseFormat(
        type=pb.ResponseFormat.TYPE_JSON_SCHEMA,
        json_schema=pb.JsonSchema(name="long", schema=json.dumps(long_schema(n))),
    )


@dataclass
class Door:
    url: str
    host: str
    port: int

    def web(self, path: str, message: Any, **kwargs: Any) -> WebReply:
        return call(self.host, self.port, path, message.SerializeToString(), **kwargs)

    def openai(self, api_key: str = "not-needed") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=120)


def door_of(server: Any) -> Door:
    parts = urlsplit(server.http_url)
    assert parts.hostname is not None and parts.port is not None
    return Door(server.http_url, parts.hostname, parts.port)


@pytest.fixture(scope="module")
def door(live_server: Any) -> Door:
    return door_of(live_server)


@pytest.fixture(scope="module")
def model_id(door: Door) -> str:
    return door.openai().models.list().data[0].id


def sse_lines(response: httpx.Response) -> Iterator[tuple[float, str]]:
    """``data:`` payloads of an SSE response, with the time each arrived."""
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield time.monotonic(), line[len("data: ") :]


def talk_texts(reply: WebReply) -> tuple[list[str], pb.CompletionFinal | None]:
    deltas: list[str] = []
    final = None
    for raw in reply.messages:
        msg = pb.TalkResponse.FromString(raw)
        if msg.HasField("delta"):
            deltas.append(msg.delta.content)
        else:
            final = msg.final
    return deltas, final


# ---------------------------------------------------------------------------------------------------------------
# OpenAI REST, through the official client
# ---------------------------------------------------------------------------------------------------------------


def test_openai_models_list(door: Door, model_id: str) -> None:
    models = door.openai().models.list().data
    assert [m.id for m in models] == [model_id]
    assert models[0].owned_by == "npcserver"
    assert door.openai().models.retrieve(model_id).id == model_id


def test_openai_plain_and_streaming(door: Door, model_id: str) -> None:
    client = door.openai()
    messages: Any = [{"role": "user", "content": "Say hello to the traveller."}]
    plain = client.chat.completions.create(model=model_id, messages=messages, max_tokens=24, temperature=0, seed=7)
    text = plain.choices[0].message.content
    assert plain.object == "chat.completion"
    assert isinstance(text, str) and text
    assert plain.choices[0].finish_reason in ("stop", "length")
    assert plain.usage is not None and 0 < plain.usage.completion_tokens <= 24
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens

    stream = client.chat.completions.create(
        model=model_id,
        messages=messages,
        max_tokens=24,
        temperature=0,
        seed=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage, ids = [], None, None, set()
    for chunk in stream:
        ids.add(chunk.id)
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert len(pieces) >= 2, "a streamed reply comes in several chunks"
    assert finish in ("stop", "length")
    # Each content chunk carries at least one sampled token (a stop sequence's tokens are sampled but not sent).
    assert usage is not None and len(pieces) <= usage.completion_tokens <= 24
    assert len(ids) == 1


def test_openai_json_schema_response_format(door: Door, model_id: str) -> None:
    schema = {
        "type": "object",
        "properties": {
            "line": {"type": "string", "maxLength": 80},
            "emotion": {"type": "string", "enum": ["happy", "angry", "neutral"]},
            "gold": {"type": "integer"},
        },
        "required": ["line", "emotion", "gold"],
        "additionalProperties": False,
    }
    reply = door.openai().chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": "The shopkeeper greets you and names a price."}],
        response_format={"type": "json_schema", "json_schema": {"name": "shop", "schema": schema, "strict": True}},
        max_tokens=200,
        temperature=0.7,
        seed=3,
    )
    content = reply.choices[0].message.content
    assert content is not None
    jsonschema.validate(json.loads(content), schema)
    assert reply.model_extra is not None and reply.choices[0].model_extra is not None
    assert reply.choices[0].model_extra["structured"]["valid"] is True

    any_object = door.openai().chat.completions.create(
        model=model_id,
        messages=[{"role": "user", "content": "Give the innkeeper as JSON"}],
        response_format={"type": "json_object"},
        max_tokens=150,
        temperature=0.0,
        seed=1,
    )
    # "Any object" has no size bound, so the base model may still be writing at max_tokens. Either way the result
    # must say honestly what it is: a finished reply is a valid object, a cut-off one is flagged invalid.
    choice = any_object.choices[0]
    assert choice.model_extra is not None
    if choice.finish_reason == "stop":
        assert isinstance(json.loads(choice.message.content or ""), dict)
        assert choice.model_extra["structured"]["valid"] is True
    else:
        assert choice.finish_reason == "length"
        assert choice.model_extra["structured"]["valid"] is False


def test_openai_errors_are_typed(door: Door, model_id: str) -> None:
    client = door.openai()
    # The games chat API's contract: an unknown model is a 400 naming the model field, not a 404.
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert "no-such-model" in unknown.value.message
    assert isinstance(unknown.value.body, dict)
    assert unknown.value.body["param"] == "model" and unknown.value.body["code"] == "model_not_found"
    assert unknown.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as hot:
        client.chat.completions.create(model=model_id, messages=[{"role": "user", "content": "hi"}], temperature=5)
    assert "temperature" in hot.value.message
    with pytest.raises(openai.BadRequestError) as empty:
        client.chat.completions.create(model=model_id, messages=[])
    assert "messages" in empty.value.message


def test_rest_error_bodies(door: Door) -> None:
    with httpx.Client(base_url=door.url, timeout=60) as http:
        bad_json = http.post(
            "/v1/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"}
        )
        assert bad_json.status_code == 400
        assert "not valid JSON" in bad_json.json()["error"]["message"]
        wrong_shape = http.post("/v1/chat/completions", json={"messages": [{"content": "no role"}]})
        assert wrong_shape.status_code == 400
        assert wrong_shape.json()["error"]["param"] == "messages.0.role"
        no_route = http.get("/v1/nothing-here")
        assert no_route.status_code == 404
        assert set(no_route.json()["error"]) == {"message", "type", "param", "code"}
        assert http.get("/healthz").json()["status"] == "ok"


# ---------------------------------------------------------------------------------------------------------------
# NPC talk over REST as SSE (what `curl -N` shows)
# ---------------------------------------------------------------------------------------------------------------


def test_rest_talk_streams_sse_and_stores_the_turn(door: Door) -> None:
    conversation = f"sse-{uuid.uuid4().hex[:8]}"
    path = f"/v1/npcs/{NPC}/conversations/{conversation}"
    with httpx.Client(base_url=door.url, timeout=120) as http:
        with http.stream("POST", path + ":talk", json={"text": "What is on the menu?", "seed": 1}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = [data for _, data in sse_lines(response)]
        assert events[-1] == "[DONE]"
        parsed = [json.loads(e) for e in events[:-1]]
        deltas = [p["delta"]["content"] for p in parsed if "delta" in p]
        final = parsed[-1]["final"]
        assert deltas and all("delta" in p for p in parsed[:-1])
        assert "".join(deltas).strip() == final["message"]["content"]
        assert final["stored"] is True and final["usage"]["completion_tokens"] > 0
        history = http.get(path).json()
        assert [t["player_line"] for t in history["turns"]] == ["What is on the menu?"]
        assert history["turns"][0]["npc_line"] == final["message"]["content"]
        unknown = http.post(f"/v1/npcs/nobody/conversations/{conversation}:talk", json={"text": "hi"})
        assert unknown.status_code == 404 and "nobody" in unknown.json()["error"]["message"]
        assert http.delete(path).json() == {"deleted_turns": 1}


def test_rest_personas_and_conversation_import_export(door: Door) -> None:
    pid = f"rest_{uuid.uuid4().hex[:8]}"
    persona = {
        "id": pid,
        "display_name": "Bram",
        "system_prompt": "Bram is a ferryman who charges one copper per crossing.",
        "example_dialogue": [{"player_line": "How much?", "npc_line": "One copper."}],
    }
    turns = [
        {"player_line": "Hello", "npc_line": "Evening.", "create_time_ms": 1000, "player_name": "Ana"},
        {"player_line": "Cross?", "npc_line": "One copper.", "create_time_ms": 2000, "player_name": ""},
    ]
    with httpx.Client(base_url=door.url, timeout=60) as http:
        created = http.post("/v1/npcs", json=persona)
        assert created.status_code == 201 and created.json()["example_dialogue"] == persona["example_dialogue"]
        taken = http.post("/v1/npcs", json=persona)
        assert taken.status_code == 409 and pid in taken.json()["error"]["message"]
        wrong_type = http.put(f"/v1/npcs/{pid}", json={**persona, "max_tokens": "ten"})
        assert wrong_type.status_code == 400
        assert http.put(f"/v1/npcs/{pid}", json={**persona, "display_name": "Old Bram"}).status_code == 200
        # Changed over REST, read over gRPC-Web: the same store behind both.
        web = door.web(SERVICE + "PersonaService/GetPersona", pb.GetPersonaRequest(persona_id=pid))
        assert pb.GetPersonaResponse.FromString(web.messages[0]).persona.display_name == "Old Bram"

        path = f"/v1/npcs/{pid}/conversations/save-1"
        assert http.put(path, json={"turns": turns}).json() == {"imported_turns": 2}
        exported = http.get(path).json()
        assert [(t["player_line"], t["npc_line"]) for t in exported["turns"]] == [
            (t["player_line"], t["npc_line"]) for t in turns
        ]
        request = pb.ExportConversationRequest(persona_id=pid, conversation_id="save-1")
        web_export = door.web(SERVICE + "ConversationService/ExportConversation", request)
        conv = pb.ExportConversationResponse.FromString(web_export.messages[0]).conversation
        assert [t.npc_line for t in conv.turns] == ["Evening.", "One copper."]

        assert http.delete(f"/v1/npcs/{pid}").json() == {"deleted_conversations": 1}
        assert http.get(f"/v1/npcs/{pid}").status_code == 404


# ---------------------------------------------------------------------------------------------------------------
# Sampling options: gRPC-Web and REST accept the same ones as native gRPC (tests/test_grpc_api.py), and apply them
# ---------------------------------------------------------------------------------------------------------------

GREEDY = {"temperature": 0.0, "seed": 3, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1, "top_p": 0.9}
STOP_LETTERS = "etaoinsrhl"


def talk_with(door: Door, via: str, sampling: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """One Talk with ``sampling``, through gRPC-Web or REST: (0 or the error status, final or error as JSON)."""
    conversation = f"opts-{uuid.uuid4().hex[:8]}"
    line = "What is on the menu tonight?"
    if via == "rest":
        body = {"text": line, "stream": False, "sampling": sampling}
        reply = httpx.post(f"{door.url}/v1/npcs/{NPC}/conversations/{conversation}:talk", json=body, timeout=120)
        if reply.status_code != 200:
            return reply.status_code, reply.json()["error"]
        final = reply.json()
        return 0, {"text": final["message"]["content"], "finish": final["finish_reason"], "usage": final["usage"]}
    request = pb.TalkRequest(persona_id=NPC, conversation_id=conversation, text=line)
    request.sampling.CopyFrom(pb.SamplingOptions(**sampling))
    web = door.web(TALK, request)
    if web.status != 0:
        return web.status, {"message": web.message}
    _, msg = talk_texts(web)
    assert msg is not None
    finish = pb.FinishReason.Name(msg.finish_reason)
    usage = {"completion_tokens": msg.usage.completion_tokens}
    return 0, {"text": msg.message.content, "finish": finish, "usage": usage}


@pytest.mark.parametrize("via", ["grpc-web", "rest"])
def test_talk_accepts_every_sampling_option_and_applies_them(door: Door, via: str) -> None:
    status, one = talk_with(door, via, {**GREEDY, "max_tokens": 1})
    assert status == 0 and one["finish"] == "FINISH_REASON_LENGTH" and one["usage"]["completion_tokens"] == 1

    status, full = talk_with(door, via, {**GREEDY, "max_tokens": 24})
    stop = next(c for c in STOP_LETTERS if full["text"].find(c) > 0)
    status, cut = talk_with(door, via, {**GREEDY, "max_tokens": 24, "stop": [stop]})
    assert status == 0 and cut["text"] and stop not in cut["text"], (full["text"], cut["text"])
    assert cut["finish"] == "FINISH_REASON_STOP" and cut["usage"]["completion_tokens"] < 24

    invalid = grpc.StatusCode.INVALID_ARGUMENT.value[0] if via == "grpc-web" else 400
    bad_options: list[tuple[dict[str, Any], str]] = [
        ({"top_k": -1}, "top_k"),
        ({"min_p": 1.5}, "min_p"),
        ({"repeat_penalty": 0.0}, "repeat_penalty"),
    ]
    for bad, field in bad_options:
        status, error = talk_with(door, via, bad)
        assert status == invalid and field in error["message"], error
        if via == "rest":
            assert error["param"] == field


# ---------------------------------------------------------------------------------------------------------------
# gRPC-Web, raw frames, against the same servicers as the gRPC door
# ---------------------------------------------------------------------------------------------------------------


def test_grpcweb_unary_shares_the_services_with_rest(door: Door) -> None:
    presets = door.web(SERVICE + "PresetService/ListPresets", pb.ListPresetsRequest())
    assert presets.status == 0 and len(presets.messages) == 1
    names = [p.name for p in pb.ListPresetsResponse.FromString(presets.messages[0]).presets]
    assert "dialogue" in names

    persona_id = f"web_{uuid.uuid4().hex[:8]}"
    persona = pb.Persona(id=persona_id, display_name="Ilse", system_prompt="Ilse sells maps in the harbour.")
    created = door.web(SERVICE + "PersonaService/CreatePersona", pb.CreatePersonaRequest(persona=persona))
    assert created.status == 0
    # Created through gRPC-Web, visible through REST: one core, one store.
    rest = httpx.get(f"{door.url}/v1/npcs/{persona_id}", timeout=30).json()
    assert rest["display_name"] == "Ilse"
    again = door.web(SERVICE + "PersonaService/CreatePersona", pb.CreatePersonaRequest(persona=persona))
    assert again.trailers_only and again.status == grpc.StatusCode.ALREADY_EXISTS.value[0]


def test_grpcweb_talk_streams_tokens_incrementally(door: Door) -> None:
    conversation = f"web-{uuid.uuid4().hex[:8]}"
    request = pb.TalkRequest(
        persona_id=SCHEMA_NPC,
        conversation_id=conversation,
        text="Tell me the news.",
        response_format=pb_long_format(16),
        max_tokens=0,
    )
    reply = door.web(TALK, request)
    assert reply.http_status == 200 and reply.headers["content-type"] == "application/grpc-web+proto"
    deltas, final = talk_texts(reply)
    assert reply.trailers is not None and reply.status == 0, reply.message
    assert final is not None and final.structured.valid
    assert "".join(deltas).strip() == final.message.content
    # Tokens were framed as they were sampled: many separate reads, spread over the generation.
    delta_times = reply.message_times[: len(deltas)]
    assert len(set(delta_times)) >= 10, delta_times
    assert delta_times[-1] - delta_times[0] > 0.5, delta_times
    assert final.usage.completion_tokens >= 16


def test_grpcweb_text_mode(door: Door) -> None:
    request = pb.TalkRequest(
        persona_id=NPC, conversation_id=f"text-{uuid.uuid4().hex[:8]}", text="Hello there!", seed=2
    )
    reply = door.web(TALK, request, text=True)
    assert reply.headers["content-type"] == "application/grpc-web-text+proto"
    deltas, final = talk_texts(reply)
    assert reply.status == 0 and final is not None and final.message.content
    assert "".join(deltas).strip() == final.message.content
    presets = door.web(SERVICE + "PresetService/ListPresets", pb.ListPresetsRequest(), text=True)
    assert presets.status == 0 and pb.ListPresetsResponse.FromString(presets.messages[0]).default_preset


def test_grpcweb_error_before_first_message_is_trailers_only(door: Door) -> None:
    unknown = door.web(TALK, pb.TalkRequest(persona_id="nobody", conversation_id="c", text="hi"))
    assert unknown.trailers_only and unknown.chunks == []
    assert unknown.status == grpc.StatusCode.NOT_FOUND.value[0] and "nobody" in unknown.message
    hot = door.web(TALK, pb.TalkRequest(persona_id=NPC, conversation_id="c", text="hi", temperature=9))
    assert hot.trailers_only and hot.status == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "temperature" in hot.message


def test_grpcweb_error_mid_stream_keeps_messages_and_ends_with_a_trailer(door: Door) -> None:
    conversation = f"deadline-{uuid.uuid4().hex[:8]}"
    request = pb.TalkRequest(
        persona_id=SCHEMA_NPC, conversation_id=conversation, text="Hi", response_format=pb_long_format(40), max_tokens=0
    )
    # The deadline must pass after the first token and before the (long) reply ends; widen it on a slow machine.
    for timeout_ms in (2500, 5000, 10000):
        reply = door.web(TALK, request, headers={"grpc-timeout": f"{timeout_ms}m"})
        if reply.messages:
            break
    deltas, final = talk_texts(reply)
    assert deltas and final is None
    assert reply.trailers is not None
    assert reply.status == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    history = httpx.get(f"{door.url}/v1/npcs/{NPC}/conversations/{conversation}", timeout=30).json()
    assert history["turns"] == []


def test_disconnect_mid_stream_frees_the_engine_and_stores_no_turn(door: Door, model_id: str) -> None:
    conversation = f"gone-{uuid.uuid4().hex[:8]}"
    request = pb.TalkRequest(
        persona_id=SCHEMA_NPC, conversation_id=conversation, text="Hi", response_format=pb_long_format(40), max_tokens=0
    )
    reply = door.web(TALK, request, hang_up_after=3)
    assert reply.hung_up and len(reply.messages) == 3
    # The abandoned reply had well over 100 tokens to go. Had it kept running, this request would queue behind it.
    started = time.monotonic()
    after = door.openai().chat.completions.create(
        model=model_id, messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    assert after.model_extra is not None and after.model_extra["timings"]["queue_ms"] < 1500
    assert time.monotonic() - started < 30
    history = httpx.get(f"{door.url}/v1/npcs/{SCHEMA_NPC}/conversations/{conversation}", timeout=30).json()
    assert history["turns"] == []


def test_sse_streams_incrementally_and_a_disconnect_frees_the_engine(door: Door, model_id: str) -> None:
    body = {
        "model": model_id,
        "stream": True,
        "messages": [{"role": "user", "content": "Describe the tavern."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "long", "schema": long_schema(40)}},
    }
    times: list[float] = []
    with httpx.Client(base_url=door.url, timeout=120) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            for at, _ in sse_lines(response):
                times.append(at)
                if len(times) == 20:
                    break  # leaving the block closes the connection mid-reply
        # The events came one by one while the tokens were sampled, not in one burst at the end.
        assert len(set(times)) >= 10 and times[-1] - times[1] > 0.2, times
        after = http.post(
            "/v1/chat/completions",
            json={"model": model_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        )
    assert after.status_code == 200
    assert after.json()["timings"]["queue_ms"] < 1500


def test_cors_preflight_and_exposed_headers(door: Door) -> None:
    origin = "http://game.example"
    preflight = httpx.options(
        door.url + TALK,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-grpc-web,x-user-agent,grpc-timeout,authorization",
        },
        timeout=30,
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] in ("*", origin)
    assert "POST" in preflight.headers["access-control-allow-methods"]
    allowed = preflight.headers["access-control-allow-headers"].lower()
    for header in ("content-type", "x-grpc-web", "grpc-timeout", "authorization"):
        assert header in allowed
    reply = door.web(SERVICE + "PresetService/ListPresets", pb.ListPresetsRequest(), headers={"Origin": origin})
    assert reply.headers["access-control-allow-origin"] in ("*", origin)
    exposed = reply.headers["access-control-expose-headers"].lower()
    assert "grpc-status" in exposed and "grpc-message" in exposed


# ---------------------------------------------------------------------------------------------------------------
# A server of its own: API key, then a graceful shutdown mid-stream
# ---------------------------------------------------------------------------------------------------------------


def test_api_key_and_graceful_shutdown(server_factory: Callable[..., Any]) -> None:
    server = server_factory(NPCSERVER_API_KEY="sesame", NPCSERVER_SHUTDOWN_GRACE_S="0.5")
    door = door_of(server)
    with pytest.raises(openai.AuthenticationError):
        door.openai("wrong").models.list()
    assert door.openai("sesame").models.list().data
    denied = door.web(SERVICE + "PresetService/ListPresets", pb.ListPresetsRequest())
    assert denied.trailers_only and denied.status == grpc.StatusCode.UNAUTHENTICATED.value[0]
    auth = {"authorization": "Bearer sesame"}
    assert door.web(SERVICE + "PresetService/ListPresets", pb.ListPresetsRequest(), headers=auth).status == 0

    # A long SSE reply is running when the server is told to stop; the grace period is shorter than the reply.
    events: list[str] = []
    first = threading.Event()

    def read_sse() -> None:
        body = {
            "stream": True,
            "messages": [{"role": "user", "content": "Describe the tavern."}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "long", "schema": long_schema(40)}},
        }
        with httpx.stream("POST", f"{door.url}/v1/chat/completions", json=body, headers=auth, timeout=120) as r:
            for _, data in sse_lines(r):
                events.append(data)
                first.set()
        first.set()

    reader = threading.Thread(target=read_sse)
    reader.start()
    assert first.wait(60) and events, "the stream started"
    server.proc.terminate()
    reader.join(60)
    assert not reader.is_alive()
    assert events[-1] == "[DONE]", events[-3:]
    error = json.loads(events[-2])["error"]
    assert error["type"] == "server_error" and "shut down" in error["message"]
    assert server.proc.wait(30) == 0
