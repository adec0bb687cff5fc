"""The upstream engine against a real llama-server (built from the llama.cpp llama-cpp-python vendors) on loopback,
through both of its APIs: structured output, cancellation that stops the upstream, and follow-up turns whose
prompt prefix the upstream serves from its cache. The engine contract tests run on it too (conftest.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from npcserver.core.structured import CompiledFormat, check_output, compile_format
from npcserver.core.types import ResponseFormat
from npcserver.engine.base import Finished, GenerationRequest, GenerationStats, SamplingParams, TextDelta
from npcserver.engine.upstream import UpstreamApi, UpstreamEngine
from npcserver.errors import NotReady
from tests.engine.llama_server import LlamaServer, free_port, llama_server, start_llama_server

CTX = 2048
TAVERN = (
    "A tavern in the mountains. Brom, the gruff tavern keeper, answers travellers in one short line.\n"
    "Traveller: Is there a room free tonight?\n"
    "Brom: One, above the stables. Two silver.\n"
    "Traveller: What is on the menu?\n"
    "Brom:"
)
STORY = "Once upon a time, in a kingdom by the sea, there lived"
NPC_LINE = {
    "type": "object",
    "properties": {
        "line": {"type": "string", "maxLength": 40},
        "emotion": {"type": "string", "enum": ["calm", "angry", "happy", "afraid"]},
    },
    "required": ["line", "emotion"],
}


@pytest.fixture(scope="module")
def upstream_server(model_path: Path) -> Iterator[LlamaServer]:
    """llama-server with two slots, so another conversation can run beside the one a test follows."""
    with llama_server(model_path, parallel=2, ctx_per_slot=CTX) as server:
        yield server


async def engine_for(server: LlamaServer, model_path: Path, api: UpstreamApi, **kwargs: Any) -> UpstreamEngine:
    engine = UpstreamEngine(url=server.url, model_path=model_path, api=api, ctx_size=CTX, n_seq=2, **kwargs)
    await engine.start()
    return engine


@pytest_asyncio.fixture(loop_scope="session", params=["llama-server", "openai"])
async def engine(
    request: pytest.FixtureRequest, upstream_server: LlamaServer, model_path: Path
) -> AsyncIterator[UpstreamEngine]:
    """The engine on each API llama-server speaks (its OpenAI endpoint takes the grammar as ``grammar``)."""
    eng = await engine_for(upstream_server, model_path, request.param, grammar_field="grammar")
    yield eng
    await eng.close()


def req(engine: UpstreamEngine, text: str, session: str | None = None, **params: Any) -> GenerationRequest:
    return GenerationRequest(
        prompt=engine.tokenize(text, add_bos=True), params=SamplingParams(**params), session=session
    )


async def collect(engine: UpstreamEngine, request: GenerationRequest) -> tuple[str, GenerationStats]:
    text = ""
    async for event in engine.generate(request):
        if isinstance(event, TextDelta):
            text += event.text
        else:
            assert isinstance(event, Finished)
            return text, event.stats
    raise AssertionError("every generation ends with Finished")


def npc_line_format() -> CompiledFormat:
    compiled = compile_format(ResponseFormat(type="json_schema", schema=NPC_LINE, name="npc"))
    assert compiled.grammar is not None
    return compiled


async def test_structured_output_follows_the_schema(engine: UpstreamEngine) -> None:
    compiled = npc_line_format()
    for seed in (1, 2):
        text, stats = await collect(
            engine, replace(req(engine, TAVERN, temperature=0.8, seed=seed, max_tokens=120), grammar=compiled.grammar)
        )
        assert stats.finish_reason == "stop", text
        result = check_output(text, compiled, stats.finish_reason)
        assert result is not None and result.valid, (text, result)


async def test_an_upstream_that_ignores_the_grammar_still_fails_closed(
    upstream_server: LlamaServer, model_path: Path
) -> None:
    # As with Ollama's OpenAI endpoint, which takes no grammar: the reply is free text, and the core's own
    # validation refuses it rather than passing it off as structured output.
    engine = await engine_for(upstream_server, model_path, "openai", grammar_field="")
    try:
        compiled = npc_line_format()
        text, stats = await collect(
            engine, replace(req(engine, TAVERN, temperature=0, max_tokens=24), grammar=compiled.grammar)
        )
    finally:
        await engine.close()
    assert not text.lstrip().startswith("{"), text
    result = check_output(text, compiled, stats.finish_reason)
    assert result is not None and not result.valid


async def test_closing_the_stream_stops_the_upstream_generation(
    engine: UpstreamEngine, upstream_server: LlamaServer
) -> None:
    gen = engine.generate(req(engine, STORY, temperature=0.8, max_tokens=1500, seed=3))
    assert isinstance(gen, AsyncGenerator)
    assert isinstance(await anext(gen), TextDelta)
    assert await asyncio.to_thread(upstream_server.busy_slots) == 1
    await gen.aclose()
    # 1500 tokens would keep the slot busy for half a minute; a closed stream frees it within a token or two.
    await until_idle(upstream_server, within_s=3.0)
    assert engine.outstanding == 0


async def test_cancelling_the_consumer_stops_the_upstream_generation(
    engine: UpstreamEngine, upstream_server: LlamaServer
) -> None:
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in engine.generate(req(engine, STORY, temperature=0.8, max_tokens=1500, seed=4)):
            started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until_idle(upstream_server, within_s=3.0)


async def test_a_deadline_stops_the_upstream_generation(engine: UpstreamEngine, upstream_server: LlamaServer) -> None:
    async def consume() -> None:
        async for _ in engine.generate(req(engine, STORY, temperature=0.8, max_tokens=1500, seed=5)):
            pass

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(consume(), 1.5)
    await until_idle(upstream_server, within_s=3.0)


async def test_a_follow_up_turn_reuses_the_cached_prefix(engine: UpstreamEngine) -> None:
    session = f"tavern/{engine.info.extra['upstream_api']}"
    first_text, first = await collect(engine, req(engine, TAVERN, session, temperature=0, max_tokens=12))
    # Another conversation in between, as on a busy server.
    await collect(engine, req(engine, "A ship's computer reports: " + STORY, "ship/1", temperature=0, max_tokens=8))
    follow_up = TAVERN + first_text + "\nTraveller: And to drink?\nBrom:"
    _, second = await collect(engine, req(engine, follow_up, session, temperature=0, max_tokens=8))
    assert second.prompt_tokens == len(engine.tokenize(follow_up, add_bos=True))
    # Everything before the new line came from the upstream's cache (the last token is always read again).
    assert second.cached_prompt_tokens >= first.prompt_tokens - 1, (first, second)
    assert second.cached_prompt_tokens < second.prompt_tokens


async def test_stop_strings_and_usage_pass_through(engine: UpstreamEngine) -> None:
    free, _ = await collect(engine, req(engine, STORY, temperature=0, repeat_penalty=1.0, max_tokens=30))
    stop = free[12:17]
    assert stop.strip(), free
    text, stats = await collect(
        engine, req(engine, STORY, temperature=0, repeat_penalty=1.0, max_tokens=30, stop=("never-seen", stop))
    )
    assert text == free[: free.index(stop)]
    assert stats.finish_reason == "stop"
    assert 0 < stats.completion_tokens < 30
    assert stats.prompt_tokens == len(engine.tokenize(STORY, add_bos=True))


async def until_idle(server: LlamaServer, *, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while await asyncio.to_thread(server.busy_slots):
        assert time.monotonic() < deadline, "llama-server kept generating after the stream was closed"
        await asyncio.sleep(0.05)


async def test_close_ends_running_and_waiting_requests_with_not_ready(
    upstream_server: LlamaServer, model_path: Path
) -> None:
    own = await engine_for(upstream_server, model_path, "llama-server")
    own_n_seq = own.n_seq
    running = [own.generate(req(own, STORY, temperature=0.8, max_tokens=1500, seed=s)) for s in range(own_n_seq)]
    for gen in running:
        assert isinstance(await anext(gen), TextDelta)
    waiting = asyncio.create_task(collect(own, req(own, TAVERN, max_tokens=4)))
    for _ in range(3000):
        if own.outstanding > own_n_seq:
            break
        await asyncio.sleep(0.01)
    assert own.outstanding == own_n_seq + 1, "the extra request waits in the engine"

    await asyncio.wait_for(own.close(), 10)
    assert not own.ready
    for gen in running:
        with pytest.raises(NotReady):
            async for _ in gen:
                pass
    with pytest.raises(NotReady):
        await waiting
    with pytest.raises(NotReady):
        await anext(own.generate(GenerationRequest(prompt=[2, 100], params=SamplingParams())))
    await until_idle(upstream_server, within_s=3.0)


async def test_start_waits_for_an_inference_server_that_is_not_up_yet(model_path: Path) -> None:
    # Replicas may start before the GPU server: start() keeps asking until it answers (the server bounds the wait
    # with ready_timeout_s).
    port = free_port()
    engine = UpstreamEngine(url=f"http://127.0.0.1:{port}", model_path=model_path, ctx_size=CTX, n_seq=1)
    starting = asyncio.create_task(engine.start())
    await asyncio.sleep(1.0)
    assert not starting.done() and not engine.ready
    server = await asyncio.to_thread(start_llama_server, model_path, parallel=1, ctx_per_slot=CTX, port=port)
    try:
        await asyncio.wait_for(starting, 30)
        assert engine.ready
        text, stats = await collect(engine, req(engine, TAVERN, temperature=0, max_tokens=4))
        assert text and stats.completion_tokens == 4
    finally:
        await engine.close()
        server.stop()
