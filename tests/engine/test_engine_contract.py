"""The engine contract on the real embedded model, at one sequence and at four (the ``engine`` fixture is
parametrized): streaming, sampling, stops, limits, cancellation, the queue, UTF-8, grammars, loading and closing.
The same tests run on the upstream engine over a real llama-server with as many slots (``engine_kind``); where the
upstream's order differs (equally long requests ending in any order), the test says so and checks what still holds.

At one sequence requests run strictly one after another; at four, the tests that need a queue first occupy every
sequence with a long generation (``occupy``), so the same checks hold however many run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
from llama_cpp import Llama

from npcserver.core.structured import allow_leading_space, check_output, compile_format
from npcserver.core.types import ResponseFormat
from npcserver.engine.base import (
    Engine,
    Finished,
    GenerationEvent,
    GenerationRequest,
    GenerationStats,
    SamplingParams,
    TextDelta,
)
from npcserver.engine.batched import BatchedEngine
from npcserver.engine.upstream import UpstreamEngine
from npcserver.errors import InvalidArgument, NotReady, QueueFull

#: The engines the contract runs on (the ``engine`` fixture's kinds).
ContractEngine = BatchedEngine | UpstreamEngine

TAVERN = (
    "A tavern in the mountains. Brom, the gruff tavern keeper, answers travellers in one short line.\n"
    "Traveller: Is there a room free tonight?\n"
    "Brom: One, above the stables. Two silver.\n"
    "Traveller: What is on the menu?\n"
    "Brom:"
)
STORY = "Once upon a time, in a kingdom by the sea, there lived"


def request(engine: ContractEngine, prompt: str, grammar: str | None = None, **params: Any) -> GenerationRequest:
    return GenerationRequest(
        prompt=engine.tokenize(prompt, add_bos=True), params=SamplingParams(**params), grammar=grammar
    )


def stream(engine: ContractEngine, req: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
    """``generate`` typed as the async generator it is, so a test can ``aclose()`` it."""
    gen = engine.generate(req)
    assert isinstance(gen, AsyncGenerator)
    return gen


async def collect(engine: Engine, req: GenerationRequest) -> tuple[list[str], GenerationStats]:
    deltas: list[str] = []
    stats: GenerationStats | None = None
    async for event in engine.generate(req):
        assert stats is None, "nothing may follow Finished"
        if isinstance(event, TextDelta):
            deltas.append(event.text)
        else:
            assert isinstance(event, Finished)
            stats = event.stats
    assert stats is not None, "every generation ends with Finished"
    return deltas, stats


async def first_delta(gen: AsyncGenerator[GenerationEvent, None]) -> str:
    event = await anext(gen)
    assert isinstance(event, TextDelta)
    return event.text


async def occupy(engine: ContractEngine, n: int | None = None) -> list[AsyncGenerator[GenerationEvent, None]]:
    """Starts ``n`` (default: every sequence) long generations and waits until each has produced text."""
    gens = [
        stream(engine, request(engine, STORY, temperature=0.8, max_tokens=400, seed=100 + i))
        for i in range(engine.n_seq if n is None else n)
    ]
    for gen in gens:
        await first_delta(gen)
    return gens


async def release(gens: list[AsyncGenerator[GenerationEvent, None]]) -> None:
    for gen in gens:
        await gen.aclose()


async def until_outstanding(engine: ContractEngine, n: int) -> None:
    for _ in range(10_000):
        if engine.outstanding >= n:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"{n} requests never accepted (outstanding: {engine.outstanding})")


# -- basics ------------------------------------------------------------------------------------------------------


async def test_model_info(engine: ContractEngine, engine_ctx_size: int, n_seq: int, engine_kind: str) -> None:
    assert isinstance(engine, Engine)
    assert engine.ready
    info = engine.info
    assert info.id == "gemma-3-270m-q4_k_m"
    assert info.context_size == engine_ctx_size
    # The upstream engine runs no model here: its backend is the other server's.
    assert info.backend == ("CPU" if engine_kind == "batched" else "upstream") and info.gpu_layers == 0
    assert info.chat_template is None  # the embedded base model has none
    assert (info.bos_token, info.eos_token, info.add_bos) == ("<bos>", "<eos>", True)
    assert info.load_ms > 0 and info.created > 0
    assert info.extra["architecture"] == "gemma3"
    assert info.extra["engine"] == engine_kind and info.extra["n_seq"] == str(n_seq)


async def test_not_ready_before_start(model_path: Path) -> None:
    cold = BatchedEngine(model_path=model_path)
    assert not cold.ready
    with pytest.raises(NotReady):
        _ = cold.info
    with pytest.raises(NotReady):
        await anext(cold.generate(GenerationRequest(prompt=[2, 100], params=SamplingParams())))


async def test_tokenize_round_trip(engine: ContractEngine) -> None:
    ids = engine.tokenize("Hello there, traveller.", add_bos=True)
    assert ids[0] == 2  # <bos>
    assert engine.detokenize(ids[1:]) == "Hello there, traveller."
    assert engine.tokenize("<start_of_turn>", special=True) != engine.tokenize("<start_of_turn>", special=False)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [({"max_queue": -1}, "max_queue"), ({"n_seq": 0}, "n_seq"), ({"n_seq": 8, "n_batch": 4}, "n_batch")],
)
def test_bad_engine_arguments_are_invalid_argument(model_path: Path, kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        BatchedEngine(model_path=model_path, **kwargs)
    assert err.value.param == param
    assert param in err.value.message


async def test_a_model_llama_cpp_cannot_load_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00\xff" * 64)  # the magic, then nothing llama.cpp can read
    eng = BatchedEngine(model_path=broken, threads=1, n_seq=1)
    with pytest.raises(InvalidArgument) as err:
        await eng.start()
    assert err.value.param == "model"
    assert str(broken) in err.value.message
    assert not eng.ready
    await eng.close()


# -- streaming and sampling ----------------------------------------------------------------------------------------


async def test_stream_matches_llama_cpp_python_greedy_output(engine: ContractEngine, model_path: Path) -> None:
    """The streamed deltas, joined, are exactly what llama-cpp-python itself generates for the same prompt."""
    deltas, stats = await collect(engine, request(engine, STORY, temperature=0, repeat_penalty=1.0, max_tokens=24))
    assert len(deltas) >= 5, deltas
    assert stats.completion_tokens == 24 and stats.finish_reason == "length"
    assert stats.prompt_tokens == len(engine.tokenize(STORY, add_bos=True))

    # Flash attention, as the engine uses: the two attention kernels round differently, and on this prompt that
    # alone flips a near-tie at the second token ("who was" / "who loved").
    oracle = Llama(str(model_path), n_ctx=256, n_threads=2, flash_attn=True, verbose=False)
    try:
        out = oracle.create_completion(STORY, max_tokens=24, temperature=0, repeat_penalty=1.0)
    finally:
        oracle.close()
    assert "".join(deltas) == out["choices"][0]["text"]  # type: ignore[index]


async def test_same_seed_same_output(engine: ContractEngine) -> None:
    greedy = [await collect(engine, request(engine, TAVERN, temperature=0, max_tokens=16)) for _ in range(2)]
    assert "".join(greedy[0][0]) == "".join(greedy[1][0])

    def sampled(seed: int) -> GenerationRequest:
        return request(engine, STORY, temperature=1.0, top_p=0.95, top_k=40, min_p=0.0, seed=seed, max_tokens=16)

    a = "".join((await collect(engine, sampled(7)))[0])
    b = "".join((await collect(engine, sampled(7)))[0])
    assert a == b
    others = {"".join((await collect(engine, sampled(s)))[0]) for s in (8, 9, 10)}
    assert len(others | {a}) >= 2, "different seeds should give different stories"


async def test_max_tokens_finishes_with_length(engine: ContractEngine) -> None:
    _, stats = await collect(engine, request(engine, STORY, temperature=0, max_tokens=5))
    assert stats.finish_reason == "length"
    assert stats.completion_tokens == 5
    assert stats.eval_ms > 0 and stats.prompt_eval_ms > 0
    assert stats.time_to_first_token_ms >= stats.prompt_eval_ms


async def test_stop_string_cuts_the_reply(engine: ContractEngine) -> None:
    free, _ = await collect(engine, request(engine, STORY, temperature=0, repeat_penalty=1.0, max_tokens=30))
    text = "".join(free)
    # A stop string taken from the middle of the free reply, so it certainly occurs (and likely spans tokens).
    stop = text[12:17]
    assert stop.strip(), text
    cut = text[: text.index(stop)]

    deltas, stats = await collect(
        engine, request(engine, STORY, temperature=0, repeat_penalty=1.0, max_tokens=30, stop=("never-seen", stop))
    )
    assert stats.finish_reason == "stop"
    assert "".join(deltas) == cut
    assert all(stop not in d for d in deltas)


async def test_eos_finishes_with_stop(engine: ContractEngine) -> None:
    # The grammar allows exactly one word, so the model must end with its end-of-generation token right after.
    deltas, stats = await collect(engine, request(engine, TAVERN, grammar='root ::= " Stew."', temperature=0))
    assert "".join(deltas) == " Stew."
    assert stats.finish_reason == "stop"


async def test_end_of_context_finishes_with_length(model_path: Path, n_seq: int) -> None:
    small = BatchedEngine(model_path=model_path, ctx_size=64, threads=2, n_seq=n_seq)
    await small.start()
    try:
        n_ctx = small.info.context_size
        assert n_ctx == 64
        (the,) = small.tokenize(" the")
        prompt = [2] + [the] * (n_ctx - 6)
        _, stats = await collect(small, GenerationRequest(prompt=prompt, params=SamplingParams(temperature=0)))
        # Prompt and reply together fill the window, and not one token more.
        assert stats.finish_reason == "length"
        assert stats.prompt_tokens + stats.completion_tokens == n_ctx
        with pytest.raises(InvalidArgument, match="context window"):
            await anext(small.generate(GenerationRequest(prompt=prompt * 2, params=SamplingParams())))
    finally:
        await small.close()


async def test_bad_requests_are_rejected_before_any_event(engine: ContractEngine) -> None:
    with pytest.raises(InvalidArgument, match="empty"):
        await anext(engine.generate(GenerationRequest(prompt=[], params=SamplingParams())))
    with pytest.raises(InvalidArgument, match="token ids"):
        await anext(engine.generate(GenerationRequest(prompt=[2, 10**7], params=SamplingParams())))
    with pytest.raises(InvalidArgument) as exc:
        await anext(engine.generate(request(engine, TAVERN, grammar="root ::= ( unclosed")))
    assert exc.value.param == "response_format"
    assert engine.outstanding == 0


# -- UTF-8 -------------------------------------------------------------------------------------------------------


async def test_multibyte_characters_split_over_tokens_arrive_whole(engine: ContractEngine) -> None:
    # These characters are not in the vocabulary, so the model must spell them with byte tokens, one byte each.
    target = " 𝄞𓀀"
    deltas, stats = await collect(engine, request(engine, TAVERN, grammar=f'root ::= "{target}"', temperature=0))
    assert "".join(deltas) == target
    assert stats.completion_tokens > len(deltas), "several byte tokens were merged into each character"
    assert all("\ufffd" not in d for d in deltas)


# -- cancellation and the queue ------------------------------------------------------------------------------------


async def test_closing_the_stream_frees_its_sequence_at_once(engine: ContractEngine) -> None:
    running = await occupy(engine)
    try:
        await running[0].aclose()
        _, stats = await collect(engine, request(engine, TAVERN, temperature=0, max_tokens=2))
        # Had the 400-token story kept its sequence, this request would have waited for seconds.
        assert stats.queue_ms < 1000, stats
    finally:
        await release(running)


async def test_cancelling_the_consumer_task_frees_its_sequence(engine: ContractEngine) -> None:
    others = await occupy(engine, engine.n_seq - 1)
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in engine.generate(request(engine, STORY, temperature=0.8, max_tokens=400, seed=2)):
            started.set()

    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(started.wait(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        t0 = time.perf_counter()
        _, stats = await collect(engine, request(engine, TAVERN, temperature=0, max_tokens=2))
        assert stats.queue_ms < 1000, stats
        assert (time.perf_counter() - t0) * 1000 < stats.queue_ms + stats.prompt_eval_ms + stats.eval_ms + 200
    finally:
        await release(others)


async def test_a_cancelled_queued_request_never_runs(engine: ContractEngine) -> None:
    running = await occupy(engine)
    try:
        queued_task = asyncio.create_task(collect(engine, request(engine, STORY, temperature=0.8, max_tokens=400)))
        await until_outstanding(engine, engine.n_seq + 1)
        queued_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await queued_task
        assert engine.outstanding == engine.n_seq

        await running[0].aclose()
        _, stats = await collect(engine, request(engine, TAVERN, temperature=0, max_tokens=2))
        assert stats.queue_ms < 1000, "the cancelled 400-token request must not have taken the freed sequence"
    finally:
        await release(running)


async def test_max_queue_counts_the_requests_waiting_beyond_the_running_ones(engine: ContractEngine) -> None:
    max_queue = engine.max_queue
    assert max_queue > 0
    running = await occupy(engine)
    waiting = [asyncio.create_task(collect(engine, request(engine, TAVERN, max_tokens=4))) for _ in range(max_queue)]
    try:
        await until_outstanding(engine, engine.n_seq + max_queue)  # every one of them was accepted
        with pytest.raises(QueueFull) as exc:
            await anext(engine.generate(request(engine, TAVERN, max_tokens=4)))
        assert exc.value.grpc_status == "RESOURCE_EXHAUSTED"
        assert f"{max_queue} waiting" in exc.value.message
    finally:
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await release(running)
    assert engine.outstanding == 0


async def test_waiting_requests_are_served_in_arrival_order(engine: ContractEngine) -> None:
    running = await occupy(engine)
    order: list[int] = []

    async def run(i: int) -> None:
        await collect(engine, request(engine, TAVERN, temperature=0, max_tokens=2))
        order.append(i)

    n = engine.max_queue
    assert n >= 3
    tasks = []
    try:
        for i in range(n):
            tasks.append(asyncio.create_task(run(i)))
            await until_outstanding(engine, engine.n_seq + i + 1)  # accepted before the next one arrives
    finally:
        await release(running)
    await asyncio.gather(*tasks)
    if isinstance(engine, UpstreamEngine) and engine.n_seq > 1:
        # Requests leave the local queue in arrival order, but several llama-server slots then run them side by side
        # and end equally long ones in no set order: every waiting request is served, none lost or doubled.
        assert sorted(order) == list(range(n))
    else:
        assert order == list(range(n))


async def test_tokenize_is_safe_while_generating(engine: ContractEngine) -> None:
    expected = engine.tokenize(TAVERN, add_bos=True)
    gen = stream(engine, request(engine, STORY, temperature=0.8, max_tokens=60, seed=5))
    await first_delta(gen)
    for _ in range(20):
        assert engine.tokenize(TAVERN, add_bos=True) == expected
        await asyncio.sleep(0.005)
    await gen.aclose()


async def test_prompt_prefix_kv_is_reused(engine: ContractEngine) -> None:
    _, first = await collect(engine, request(engine, TAVERN, temperature=0, max_tokens=4))
    longer = TAVERN + " Stew and bread.\nTraveller: And to drink?\nBrom:"
    _, second = await collect(engine, request(engine, longer, temperature=0, max_tokens=4))
    assert second.cached_prompt_tokens >= first.prompt_tokens - 1
    assert second.prompt_tokens == len(engine.tokenize(longer, add_bos=True))
    _, unrelated = await collect(engine, request(engine, "Completely different: " + STORY, max_tokens=2))
    assert unrelated.cached_prompt_tokens == 1  # just <bos>


async def test_close_ends_running_and_queued_requests_with_not_ready(model_path: Path, n_seq: int) -> None:
    own = BatchedEngine(model_path=model_path, ctx_size=256, threads=2, n_seq=n_seq)
    await own.start()
    running = await occupy(own)
    queued = asyncio.create_task(collect(own, request(own, STORY, max_tokens=200)))
    await until_outstanding(own, n_seq + 1)

    await asyncio.wait_for(own.close(), 10)
    assert not own.ready
    for gen in running:
        with pytest.raises(NotReady):
            async for _ in gen:
                pass
    with pytest.raises(NotReady):
        await queued
    with pytest.raises(NotReady):
        await anext(own.generate(GenerationRequest(prompt=[2, 100], params=SamplingParams())))


# -- grammars and structured output ---------------------------------------------------------------------------------

SCHEMAS: dict[str, dict[str, Any]] = {
    "npc_line": {
        "type": "object",
        "properties": {
            "line": {"type": "string", "maxLength": 40},
            "emotion": {"type": "string", "enum": ["calm", "angry", "happy", "afraid"]},
            "action": {"type": "string", "enum": ["none", "nod", "shrug", "draw_sword"]},
        },
        "required": ["line", "emotion", "action"],
    },
    "nested": {
        "type": "object",
        "properties": {
            "speaker": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 16}, "mood": {"enum": ["good", "bad"]}},
                "required": ["name", "mood"],
            },
            "trust": {"type": "integer"},
            "hostile": {"type": "boolean"},
        },
        "required": ["speaker", "trust", "hostile"],
    },
    "arrays": {
        "type": "object",
        "properties": {
            "menu": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 3},
            "prices": {"type": "array", "items": {"type": "number"}, "maxItems": 3},
        },
        "required": ["menu", "prices"],
    },
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
async def test_schema_grammar_output_parses_and_validates(engine: ContractEngine, name: str) -> None:
    compiled = compile_format(ResponseFormat(type="json_schema", schema=SCHEMAS[name], name=name))
    assert compiled.grammar is not None
    grammar = allow_leading_space(compiled.grammar)
    deltas, stats = await collect(engine, request(engine, TAVERN, grammar=grammar, temperature=0, max_tokens=160))
    text = "".join(deltas)
    assert stats.finish_reason == "stop", text
    result = check_output(text, compiled, stats.finish_reason)
    assert result is not None and result.valid, (text, result)
    assert result.value == json.loads(text)


async def test_sampled_schema_output_validates_too(engine: ContractEngine) -> None:
    compiled = compile_format(ResponseFormat(type="json_schema", schema=SCHEMAS["npc_line"], name="npc"))
    assert compiled.grammar is not None
    for seed in (1, 2):
        req = request(engine, TAVERN, grammar=compiled.grammar, temperature=0.8, seed=seed, max_tokens=160)
        deltas, stats = await collect(engine, req)
        result = check_output("".join(deltas), compiled, stats.finish_reason)
        assert result is not None and result.valid, ("".join(deltas), result)


async def test_json_object_output_is_an_object(engine: ContractEngine) -> None:
    compiled = compile_format(ResponseFormat(type="json_object"))
    assert compiled.grammar is not None
    # An open-ended object can run on; what matters is that whatever comes out is judged honestly.
    deltas, stats = await collect(
        engine, request(engine, TAVERN, grammar=compiled.grammar, temperature=0, max_tokens=60)
    )
    text = "".join(deltas)
    assert text.startswith("{")
    result = check_output(text, compiled, stats.finish_reason)
    assert result is not None
    if stats.finish_reason == "stop":
        assert result.valid and isinstance(result.value, dict), (text, result)
    else:
        assert not result.valid and "cut off" in result.error


async def test_json_cut_off_by_max_tokens_is_flagged_invalid(engine: ContractEngine) -> None:
    compiled = compile_format(ResponseFormat(type="json_schema", schema=SCHEMAS["npc_line"], name="npc"))
    assert compiled.grammar is not None
    deltas, stats = await collect(
        engine, request(engine, TAVERN, grammar=compiled.grammar, temperature=0, max_tokens=4)
    )
    assert stats.finish_reason == "length" and stats.completion_tokens == 4
    result = check_output("".join(deltas), compiled, stats.finish_reason)
    assert result is not None and not result.valid
    assert "cut off by max_tokens" in result.error
