"""The upstream engine's wire protocol, against a scripted upstream (httpx.MockTransport): what it sends, and how it
maps what comes back. The behaviour against a real llama-server is in test_upstream.py and the contract tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from llama_cpp import Llama

from npcserver.engine.base import Finished, GenerationRequest, SamplingParams, TextDelta
from npcserver.engine.upstream import CONVERSATION_HEADER, UpstreamEngine
from npcserver.errors import InvalidArgument, NotReady, QueueFull

URL = "http://upstream.test:8081"
SLOT_CTX = 512


SSE = {"content-type": "text/event-stream"}


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)


class FakeUpstream:
    """Answers the probes like llama-server (or vLLM) and the generation with a scripted response."""

    def __init__(self, model_path: Path) -> None:
        self.vocab = Llama(str(model_path), vocab_only=True, verbose=False)
        self.requests: list[httpx.Request] = []
        self.generation: Callable[[httpx.Request], httpx.Response] = lambda _: httpx.Response(500)
        self.tokenize_offset = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/health":
            return httpx.Response(200, json={"status": "ok"})
        if path == "/props":
            return httpx.Response(
                200,
                json={
                    "default_generation_settings": {"n_ctx": SLOT_CTX},
                    "total_slots": 2,
                    "model_path": "/models/gemma.gguf",
                },
            )
        if path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "gemma", "max_model_len": SLOT_CTX}]})
        if path == "/tokenize":
            body = json.loads(request.content)
            text = body.get("content") or body.get("prompt")
            ids = self.vocab.tokenize(text.encode(), add_bos=False, special=True)
            return httpx.Response(200, json={"tokens": [t + self.tokenize_offset for t in ids]})
        self.requests.append(request)
        return self.generation(request)


@pytest.fixture
def upstream(model_path: Path) -> FakeUpstream:
    return FakeUpstream(model_path)


async def started(upstream: FakeUpstream, model_path: Path, **kwargs: Any) -> UpstreamEngine:
    engine = UpstreamEngine(url=URL, model_path=model_path, transport=httpx.MockTransport(upstream), **kwargs)
    await engine.start()
    return engine


def req(engine: UpstreamEngine, **params: Any) -> GenerationRequest:
    return GenerationRequest(
        prompt=engine.tokenize("Brom: hello", add_bos=True),
        params=SamplingParams(**params),
        session="tavern_keeper/player-7",
        request_id="req-1",
    )


async def run(engine: UpstreamEngine, request: GenerationRequest) -> tuple[str, Finished]:
    text = ""
    async for event in engine.generate(request):
        if isinstance(event, TextDelta):
            text += event.text
        else:
            return text, event
    raise AssertionError("no Finished")


async def test_llama_server_request_carries_ids_cache_prompt_grammar_and_the_conversation_header(
    upstream: FakeUpstream, model_path: Path
) -> None:
    upstream.generation = lambda _: httpx.Response(
        200,
        headers=SSE,
        content=sse(
            {"content": " Stew", "tokens": [1], "stop": False, "tokens_predicted": 1},
            {"content": ".", "tokens": [2], "stop": False, "tokens_predicted": 2},
            {
                "content": "",
                "stop": True,
                "stop_type": "eos",
                "tokens_predicted": 2,
                "timings": {"cache_n": 3, "prompt_n": 2, "prompt_ms": 4.5, "predicted_ms": 9.0},
            },
        ),
    )
    engine = await started(upstream, model_path, ctx_size=4096)
    try:
        assert engine.info.context_size == SLOT_CTX  # a larger ctx_size is capped to what a slot holds
        assert engine.info.extra["engine"] == "upstream"
        request = req(engine, max_tokens=0, stop=("\nTraveller:",), seed=7, temperature=0.3)
        request = replace(request, grammar='root ::= " Stew."')
        text, finished = await run(engine, request)
    finally:
        await engine.close()
    assert text == " Stew."
    stats = finished.stats
    assert (stats.finish_reason, stats.completion_tokens, stats.cached_prompt_tokens) == ("stop", 2, 3)
    assert stats.prompt_tokens == len(request.prompt) and stats.prompt_eval_ms == 4.5 and stats.eval_ms == 9.0

    (sent,) = upstream.requests
    assert sent.url.path == "/completion"
    assert sent.headers[CONVERSATION_HEADER] == "tavern_keeper/player-7"
    assert sent.headers["x-request-id"] == "req-1"
    body = json.loads(sent.content)
    assert body["prompt"] == request.prompt  # token ids, exactly as the core built them
    assert body["cache_prompt"] is True and body["stream"] is True
    assert body["grammar"] == 'root ::= " Stew."'
    assert body["n_predict"] == -1 and body["stop"] == ["\nTraveller:"] and body["seed"] == 7
    assert body["temperature"] == 0.3


async def test_openai_request_nests_the_grammar_and_reads_cached_tokens_from_usage(
    upstream: FakeUpstream, model_path: Path
) -> None:
    upstream.generation = lambda _: httpx.Response(
        200,
        headers=SSE,
        content=sse(
            {"choices": [{"text": " Stew", "finish_reason": None}]},
            {"choices": [{"text": " and", "finish_reason": "length"}]},
            {"choices": [], "usage": {"completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 5}}},
        )
        + b"data: [DONE]\n\n",
    )
    engine = await started(upstream, model_path, api="openai", grammar_field="structured_outputs.grammar")
    try:
        request = replace(req(engine), grammar="root ::= [a-z]+")
        text, finished = await run(engine, request)
    finally:
        await engine.close()
    assert text == " Stew and"
    assert (finished.stats.finish_reason, finished.stats.completion_tokens) == ("length", 2)
    assert finished.stats.cached_prompt_tokens == 5
    (sent,) = upstream.requests
    assert sent.url.path == "/v1/completions"
    assert sent.headers[CONVERSATION_HEADER] == "tavern_keeper/player-7"
    body = json.loads(sent.content)
    assert body["model"] == "gemma" and body["prompt"] == request.prompt
    assert body["structured_outputs"] == {"grammar": "root ::= [a-z]+"}
    assert body["max_tokens"] == SLOT_CTX - len(request.prompt)  # "until a stop", spelled out
    assert body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("status", [429, 503])
async def test_upstream_overload_is_resource_exhausted(upstream: FakeUpstream, model_path: Path, status: int) -> None:
    upstream.generation = lambda _: httpx.Response(
        status, json={"error": {"code": status, "message": "no slot available", "type": "unavailable_error"}}
    )
    engine = await started(upstream, model_path)
    try:
        with pytest.raises(QueueFull) as exc:
            await run(engine, req(engine))
    finally:
        await engine.close()
    assert exc.value.grpc_status == "RESOURCE_EXHAUSTED"
    assert URL in exc.value.message and "no slot available" in exc.value.message and "retry" in exc.value.message


async def test_upstream_context_overflow_is_invalid_argument(upstream: FakeUpstream, model_path: Path) -> None:
    upstream.generation = lambda _: httpx.Response(
        400, json={"error": {"code": 400, "message": "request exceeds context", "type": "exceed_context_size_error"}}
    )
    engine = await started(upstream, model_path)
    try:
        with pytest.raises(InvalidArgument) as exc:
            await run(engine, req(engine))
    finally:
        await engine.close()
    assert exc.value.param == "messages" and "ctx_size" in exc.value.message


async def test_an_error_mid_stream_is_unavailable(upstream: FakeUpstream, model_path: Path) -> None:
    upstream.generation = lambda _: httpx.Response(
        200,
        headers=SSE,
        content=sse({"content": " Ste", "stop": False}, {"error": {"code": 500, "message": "decode failed"}}),
    )
    engine = await started(upstream, model_path)
    try:
        seen: list[str] = []
        with pytest.raises(NotReady) as exc:
            async for event in engine.generate(req(engine)):
                assert isinstance(event, TextDelta)
                seen.append(event.text)
    finally:
        await engine.close()
    assert seen == [" Ste"]
    assert "decode failed" in exc.value.message and exc.value.grpc_status == "UNAVAILABLE"
    assert engine.outstanding == 0


async def test_a_different_vocabulary_upstream_fails_start(upstream: FakeUpstream, model_path: Path) -> None:
    upstream.tokenize_offset = 1
    engine = UpstreamEngine(url=URL, model_path=model_path, transport=httpx.MockTransport(upstream))
    with pytest.raises(InvalidArgument) as exc:
        await engine.start()
    assert exc.value.param == "model" and "tokenizes differently" in exc.value.message
    assert not engine.ready
    await engine.close()


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"url": "127.0.0.1:8081"}, "engine_url"),
        ({"api": "grpc"}, "engine_api"),
        ({"n_seq": 0}, "n_seq"),
        ({"max_queue": -1}, "max_queue"),
    ],
)
def test_bad_arguments_name_the_setting(model_path: Path, kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        UpstreamEngine(**{"url": URL, "model_path": model_path, **kwargs})
    assert exc.value.param == param and param in exc.value.message
