"""Ollama's API on the real server and the real embedded model, driven by the official ``ollama`` client: chat,
streaming, format, options, the statistics, keep_alive unload/reload, the discovery routes and the error cases.

The model is a small base model, so replies are checked for shape (streaming, counts, schema validity), never for
what they say.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jsonschema
import ollama
import pytest

MOOD = {
    "type": "object",
    "properties": {"mood": {"type": "string", "enum": ["happy", "grumpy"]}},
    "required": ["mood"],
    "additionalProperties": False,
}


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


@pytest.fixture(scope="module")
def client(live_server: Any) -> ollama.Client:
    return ollama.Client(host=live_server.http_url, timeout=120)


@pytest.fixture(scope="module")
def model(client: ollama.Client) -> str:
    name = client.list().models[0].model
    assert name is not None
    return name


def assert_stats(final: Any, *, streamed: bool) -> None:
    """Ollama's statistics, in Ollama's units (nanoseconds) and with real counts."""
    assert final.done is True and final.done_reason in ("stop", "length")
    assert final.prompt_eval_count > 0 and final.eval_count > 0
    assert final.prompt_eval_duration > 0 and final.eval_duration >= 0
    # Nanoseconds: a reply of the embedded model takes well over a millisecond (1e6 ns) end to end.
    assert final.total_duration > 1_000_000
    assert final.total_duration >= final.prompt_eval_duration + final.eval_duration
    assert final.load_duration == 0  # the model was loaded already
    if streamed:
        assert final.message.content == ""


def test_chat_and_a_second_turn(client: ollama.Client, model: str) -> None:
    messages = [{"role": "system", "content": "You are a tavern keeper."}, user("What is on the menu?")]
    first = client.chat(model=model, messages=messages, options={"num_predict": 16, "temperature": 0})
    assert first.model == model and first.message.role == "assistant" and first.message.content
    assert first.created_at
    assert_stats(first, streamed=False)
    messages += [{"role": "assistant", "content": first.message.content}, user("And to drink?")]
    second = client.chat(model=model, messages=messages, options={"num_predict": 16, "temperature": 0})
    assert first.prompt_eval_count is not None and second.prompt_eval_count is not None
    assert second.message.content and second.prompt_eval_count > first.prompt_eval_count


def test_streaming_chat(client: ollama.Client, model: str) -> None:
    parts = list(
        client.chat(model=model, messages=[user("Tell me a story.")], stream=True, options={"num_predict": 24})
    )
    *deltas, final = parts
    assert len(deltas) > 1 and all(not p.done for p in deltas)
    assert all(p.model == model and p.created_at for p in parts)
    assert "".join(p.message.content or "" for p in deltas)
    assert_stats(final, streamed=True)


def test_stream_lines_are_ndjson_and_carry_the_request_id(live_server: Any, model: str) -> None:
    body = {"model": model, "messages": [user("Hi")], "options": {"num_predict": 8}}
    with httpx.stream("POST", f"{live_server.http_url}/api/chat", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    ids = {line["id"] for line in lines}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]


def test_format_json_and_schema(client: ollama.Client, model: str) -> None:
    plain = client.chat(
        model=model, messages=[user("Reply in JSON.")], format="json", options={"num_predict": 48, "seed": 1}
    )
    if plain.done_reason == "stop":
        json.loads(plain.message.content or "")
    shaped = client.chat(
        model=model, messages=[user("How do you feel?")], format=MOOD, options={"num_predict": 32, "temperature": 0}
    )
    assert shaped.done_reason == "stop"
    jsonschema.validate(json.loads(shaped.message.content or ""), MOOD)


def test_options_seed_and_num_predict(client: ollama.Client, model: str) -> None:
    # The first run warms the KV cache for the two compared (a prompt read on top of cached KV can differ in the
    # last bits of its logits); a few tokens, so a near-tie further on cannot split them.
    greedy = {"temperature": 0, "seed": 42, "num_predict": 4, "top_k": 40, "top_p": 0.9, "repeat_penalty": 1.0}
    runs = [client.chat(model=model, messages=[user("Name a fruit.")], options=greedy) for _ in range(3)]
    assert runs[1].message.content == runs[2].message.content and runs[1].eval_count == runs[2].eval_count
    one = client.chat(model=model, messages=[user("Count to ten.")], options={"num_predict": 1})
    assert one.done_reason == "length" and one.eval_count == 1
    stopped = client.chat(
        model=model,
        messages=[user("Count to ten.")],
        options={"num_predict": 40, "stop": ["\n"], "repeat_penalty": 1.2},
    )
    assert "\n" not in (stopped.message.content or "")
    # Hardware options are the server's to set: accepted and ignored.
    tuned = client.chat(
        model=model, messages=[user("Hi")], options={"num_predict": 2, "num_thread": 64, "num_ctx": 512, "num_gpu": 0}
    )
    assert tuned.done


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"options": {"warp_speed": 9}}, "warp_speed"),
        ({"options": {"presence_penalty": 0.5}}, "presence_penalty"),
        ({"options": {"mirostat": 2}}, "mirostat"),
        ({"options": {"num_predict": 0}}, "num_predict"),
        ({"options": {"temperature": 9}}, "temperature"),
        ({"tools": [{"type": "function", "function": {"name": "open door", "parameters": {}}}]}, "not an identifier"),
        ({"think": "high"}, "think"),
        ({"format": "yaml"}, "format"),
        ({"keep_alive": "soon"}, "keep_alive"),
    ],
)
def test_refused_fields_are_400_naming_them(live_server: Any, model: str, kwargs: Any, needle: str) -> None:
    # Raw JSON: the client itself refuses some of these before sending them.
    body = {"model": model, "messages": [user("Hi")], "stream": False, **kwargs}
    refused = httpx.post(f"{live_server.http_url}/api/chat", json=body, timeout=60)
    assert refused.status_code == 400
    assert list(refused.json()) == ["error"] and needle in refused.json()["error"]


def test_the_client_raises_on_a_refused_option(client: ollama.Client, model: str) -> None:
    with pytest.raises(ollama.ResponseError) as refused:
        client.chat(model=model, messages=[user("Hi")], options={"repeat_last_n": 128})
    assert refused.value.status_code == 400 and "repeat_last_n" in refused.value.error


def test_images_tool_messages_unknown_model_and_routes(client: ollama.Client, model: str, live_server: Any) -> None:
    with pytest.raises(ollama.ResponseError) as blind:
        client.chat(model=model, messages=[{"role": "user", "content": "What is this?", "images": [b"\x89PNG"]}])
    assert blind.value.status_code == 400 and "cannot see images" in blind.value.error
    with pytest.raises(ollama.ResponseError) as tool:
        client.chat(model=model, messages=[user("Hi"), {"role": "tool", "content": "42", "tool_name": "add"}])
    assert tool.value.status_code == 400 and "tool" in tool.value.error
    with pytest.raises(ollama.ResponseError) as unknown:
        client.chat(model="llama3:8b", messages=[user("Hi")])
    assert unknown.value.status_code == 404 and "llama3:8b" in unknown.value.error
    with pytest.raises(ollama.ResponseError) as generate:
        client.generate(model=model, prompt="Hi")
    assert generate.value.status_code == 404 and "/api/chat" in generate.value.error
    wrong_method = httpx.get(f"{live_server.http_url}/api/chat", timeout=30)
    assert wrong_method.status_code == 405 and "POST /api/chat" in wrong_method.json()["error"]
    bad_json = httpx.post(f"{live_server.http_url}/api/chat", content=b'{"model": ', timeout=30)
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]


def test_discovery_routes(client: ollama.Client, model: str, live_server: Any) -> None:
    [listed] = client.list().models
    assert listed.model == model and model.endswith(":latest")
    assert listed.size is not None and listed.size > 1_000_000 and listed.details is not None
    assert listed.details.format == "gguf" and listed.details.family
    shown = client.show(model)
    assert shown.details is not None and shown.details.family == listed.details.family
    assert shown.modelinfo is not None and any(k.endswith(".context_length") for k in shown.modelinfo)
    assert shown.capabilities == ["completion"]
    bare = client.show(model.removesuffix(":latest"))  # an untagged name is the same model
    assert bare.details == shown.details
    [running] = client.ps().models
    assert running.model == model and running.context_length is not None and running.context_length > 0
    version = httpx.get(f"{live_server.http_url}/api/version", timeout=30).json()["version"]
    assert version
    with pytest.raises(ollama.ResponseError) as missing:
        client.show("nope")
    assert missing.value.status_code == 404


def test_a_disconnect_cancels_the_generation(live_server: Any, model: str) -> None:
    schema = {"type": "object", "properties": {f"k{i}": {"type": "string"} for i in range(40)}}
    schema["required"] = list(schema["properties"])
    body = {
        "model": model,
        "messages": [user("Describe the tavern.")],
        "format": schema,
        "options": {"num_predict": -1},
    }
    with httpx.stream("POST", f"{live_server.http_url}/api/chat", json=body, timeout=120) as response:
        for n, _ in enumerate(response.iter_lines()):
            if n == 10:
                break  # leaving the block closes the connection mid-reply
    # The abandoned reply had hundreds of tokens to go. Had it kept running, this request would queue behind it.
    after = httpx.post(
        f"{live_server.http_url}/v1/chat/completions",
        json={"model": model.removesuffix(":latest"), "messages": [user("hi")], "max_tokens": 2},
        timeout=120,
    )
    assert after.status_code == 200 and after.json()["timings"]["queue_ms"] < 1500


def test_keep_alive_unloads_and_the_next_request_reloads(server_factory: Callable[..., Any]) -> None:
    server = server_factory(NPCSERVER_API_KEY="sesame")
    auth = {"authorization": "Bearer sesame"}
    with pytest.raises(ollama.ResponseError) as denied:
        ollama.Client(host=server.http_url, timeout=120).list()
    assert denied.value.status_code == 401 and "Bearer" in denied.value.error
    client = ollama.Client(host=server.http_url, timeout=120, headers=auth)
    model = client.list().models[0].model
    assert model is not None

    def health() -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{server.http_url}/healthz", headers=auth, timeout=30).json()
        return data

    def loaded_in_models() -> bool:
        data = httpx.get(f"{server.http_url}/v1/models", headers=auth, timeout=30).json()["data"]
        return bool(data[0]["loaded"])

    assert health()["loaded"] is True and loaded_in_models()
    first = client.chat(model=model, messages=[user("Hi")], options={"num_predict": 4}, keep_alive=0)
    assert first.done and first.load_duration == 0
    assert client.ps().models == []
    assert health()["status"] == "ok" and health()["loaded"] is False
    assert not loaded_in_models() and client.list().models[0].model == model  # still listed: it loads on demand

    again = client.chat(model=model, messages=[user("Hi")], options={"num_predict": 4})
    assert again.done and again.eval_count is not None and again.eval_count > 0
    assert again.load_duration is not None and again.total_duration is not None
    assert again.load_duration > 0 and again.total_duration > again.load_duration
    assert [m.model for m in client.ps().models] == [model]
    assert health()["loaded"] is True and loaded_in_models()

    # A duration: loaded now, unloaded once it passed (a request meanwhile would reset the clock).
    client.chat(model=model, messages=[], keep_alive="1s")
    [running] = client.ps().models
    assert running.expires_at is not None
    deadline = time.monotonic() + 30
    while client.ps().models and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.ps().models == []
    # An empty chat only loads, and a negative keep_alive keeps the model loaded for good.
    loaded = client.chat(model=model, messages=[], keep_alive=-1)
    assert loaded.done_reason == "load" and loaded.load_duration is not None and loaded.load_duration > 0
    assert [m.model for m in client.ps().models] == [model]
