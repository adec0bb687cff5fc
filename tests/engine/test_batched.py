"""BatchedEngine on the real embedded model: isolation under interleaving, KV reuse, grammars, limits, cancellation.

The central check is the issue's correctness test: at temperature 0, many conversations whose turns interleave in
a random order (with fewer sequences than conversations, so sequences are evicted, reused and copied from) give
exactly the replies that each conversation gives when it runs alone, and no reply carries another conversation's
words. Each conversation is a gate guard repeating its own password: the model is sure of that continuation, so
llama.cpp's batch-dependent rounding (see batched.py) cannot flip it, while any token from another conversation,
or a KV reused from the wrong place, would.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import pytest_asyncio
from llama_cpp.llama_grammar import json_schema_to_gbnf

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
from npcserver.errors import InvalidArgument

N_SEQ = 4
GATE = "The north gate of the old fortress. Each guard knows one password and repeats it exactly when asked.\n"
WORDS = ["copper", "violet", "anchor", "lantern", "meadow", "falcon", "harbor", "ember", "willow", "granite"]


@dataclass
class Conversation:
    """One guard: a shared scene prefix, its own password, and the replies and stats of its turns."""

    index: int
    session: str
    password: str
    replies: list[str] = field(default_factory=list)
    stats: list[GenerationStats] = field(default_factory=list)
    prefix_tokens: int = 0

    @property
    def transcript(self) -> str:
        guard = f"Guard {self.index}"
        head = GATE + f"{guard} knows the password: {self.password}.\n"
        head += f"Player: Password?\n{guard}: The password is {self.password}.\n"
        return head


def make_conversations(tag: str, n: int = 8) -> list[Conversation]:
    rng = random.Random(7)
    convs = []
    for i in range(n):
        a, b = rng.sample(WORDS, 2)
        convs.append(Conversation(i, f"guard{i}/{tag}", f"{a} {b} {rng.randint(10, 99)}"))
    return convs


def stream(engine: BatchedEngine, request: GenerationRequest) -> AsyncGenerator[GenerationEvent, None]:
    """``generate`` typed as the async generator it is, so a test can ``aclose()`` it."""
    gen = engine.generate(request)
    assert isinstance(gen, AsyncGenerator)
    return gen


async def collect(engine: Engine, request: GenerationRequest) -> tuple[str, GenerationStats]:
    parts: list[str] = []
    stats: GenerationStats | None = None
    async for ev in engine.generate(request):
        if isinstance(ev, TextDelta):
            parts.append(ev.text)
        else:
            assert isinstance(ev, Finished)
            stats = ev.stats
    assert stats is not None
    return "".join(parts), stats


async def run_conversation(
    engine: BatchedEngine, conv: Conversation, turns: int = 3, rng: random.Random | None = None
) -> None:
    """Asks the guard for the password ``turns`` times; with ``rng``, pauses a random moment before each turn."""
    prefix = engine.tokenize(GATE, add_bos=True)
    conv.prefix_tokens = len(prefix)
    transcript = conv.transcript
    guard = f"Guard {conv.index}"
    for _ in range(turns):
        if rng is not None:
            await asyncio.sleep(rng.random() * 0.2)
        transcript += f"Player: Password again?\n{guard}: The password is"
        prompt = engine.tokenize(transcript, add_bos=True)
        params = SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=8, stop=("\n",))
        req = GenerationRequest(prompt=prompt, params=params, session=conv.session, prefix_len=len(prefix))
        reply, stats = await collect(engine, req)
        conv.replies.append(reply)
        conv.stats.append(stats)
        transcript += reply + "\n"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def batched(model_path: Path) -> AsyncIterator[BatchedEngine]:
    """A started engine with fewer sequences (4) than the conversations the tests run at once (6)."""
    eng = BatchedEngine(
        model_path=model_path, threads=2, ctx_size=1024, n_seq=N_SEQ, n_batch=256, prefill_chunk=48, max_queue=8
    )
    await eng.start()
    yield eng
    await eng.close()


def test_implements_engine_protocol(batched: BatchedEngine) -> None:
    assert isinstance(batched, Engine)
    assert batched.ready
    assert batched.info.context_size == 1024
    assert batched.info.extra["engine"] == "batched"
    assert batched.info.backend == "CPU"


@pytest.mark.asyncio(loop_scope="session")
async def test_interleaved_conversations_match_each_run_alone(batched: BatchedEngine) -> None:
    alone = make_conversations("alone")
    for conv in alone:
        await run_conversation(batched, conv)

    mixed = make_conversations("mixed")
    rng = random.Random(1234)
    await asyncio.gather(*(run_conversation(batched, conv, rng=rng) for conv in rng.sample(mixed, len(mixed))))

    for a, m in zip(alone, mixed, strict=True):
        assert m.replies == a.replies, f"{m.session} diverged from its solo run"
    for conv in alone:
        others = {w for c in alone if c is not conv for w in c.password.split()} - set(conv.password.split())
        for reply in conv.replies:
            # Each guard says its own password and no word of another guard's.
            assert conv.password in reply, (conv.password, reply)
            assert not others & set(reply.replace(".", " ").split()), (conv.password, reply)
    # Follow-up turns reused the conversation's KV in the solo run: everything up to the last reply was cached.
    for conv in alone:
        for prev, cur in zip(conv.stats, conv.stats[1:], strict=False):
            assert cur.cached_prompt_tokens >= prev.prompt_tokens, conv.session
    # Every conversation after the first copied the shared scene prefix instead of evaluating it.
    for conv in alone[1:]:
        assert conv.stats[0].cached_prompt_tokens >= conv.prefix_tokens, conv.session


@pytest.mark.asyncio(loop_scope="session")
async def test_npcs_arriving_together_read_their_shared_prefix_once(batched: BatchedEngine) -> None:
    convs = make_conversations("together", n=N_SEQ)
    await asyncio.gather(*(run_conversation(batched, conv, turns=1) for conv in convs))
    # One of them read the shared scene; the others waited a step and copied it.
    copied = [c for c in convs if c.stats[0].cached_prompt_tokens >= c.prefix_tokens]
    assert len(copied) >= N_SEQ - 1, [c.stats[0].cached_prompt_tokens for c in convs]
    for conv in convs:
        assert conv.password in conv.replies[0]


@pytest.mark.asyncio(loop_scope="session")
async def test_followup_evaluates_only_new_tokens(batched: BatchedEngine) -> None:
    conv = make_conversations("followup", n=1)[0]
    await run_conversation(batched, conv, turns=4)
    for prev, cur in zip(conv.stats, conv.stats[1:], strict=False):
        assert cur.cached_prompt_tokens >= prev.prompt_tokens
        new_tokens = cur.prompt_tokens - cur.cached_prompt_tokens
        assert 0 < new_tokens < 30


@pytest.mark.asyncio(loop_scope="session")
async def test_json_schema_output_is_valid_with_the_fast_grammar_path(batched: BatchedEngine) -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "line": {"type": "string", "maxLength": 60},
            "emotion": {"type": "string", "enum": ["calm", "angry", "happy"]},
            "action": {
                "type": "object",
                "properties": {"kind": {"type": "string", "maxLength": 24}},
                "required": ["kind"],
            },
        },
        "required": ["line", "emotion", "action"],
    }
    grammar = json_schema_to_gbnf(json.dumps(schema))
    prompt = batched.tokenize(GATE + "Player: Report, as JSON.\nGuard:", add_bos=True)
    checks0, rejections0 = batched.grammar_checks, batched.grammar_rejections
    for seed in (1, 2):
        params = SamplingParams(temperature=0.7, seed=seed, max_tokens=120)
        text, stats = await collect(batched, GenerationRequest(prompt=prompt, params=params, grammar=grammar))
        assert stats.finish_reason == "stop", text
        jsonschema.validate(json.loads(text), schema)
    checks = batched.grammar_checks - checks0
    rejections = batched.grammar_rejections - rejections0
    # Every token was checked against the grammar, and most passed without the grammar touching the vocabulary.
    assert checks > 10
    assert rejections < checks


@pytest.mark.asyncio(loop_scope="session")
async def test_bad_grammar_is_invalid_argument(batched: BatchedEngine) -> None:
    prompt = batched.tokenize("Hello", add_bos=True)
    with pytest.raises(InvalidArgument) as err:
        await collect(batched, GenerationRequest(prompt=prompt, params=SamplingParams(), grammar="root ::= ("))
    assert err.value.param == "response_format"


@pytest.mark.asyncio(loop_scope="session")
async def test_max_tokens_gives_length(batched: BatchedEngine) -> None:
    prompt = batched.tokenize("Counting: 1, 2, 3, 4,", add_bos=True)
    params = SamplingParams(temperature=0.0, max_tokens=7)
    text, stats = await collect(batched, GenerationRequest(prompt=prompt, params=params))
    assert stats.finish_reason == "length"
    assert stats.completion_tokens == 7
    assert text


@pytest.mark.asyncio(loop_scope="session")
async def test_stop_string_is_cut_and_never_streamed(batched: BatchedEngine) -> None:
    prompt = batched.tokenize("Counting: 1, 2, 3, 4,", add_bos=True)
    params = SamplingParams(temperature=0.0, max_tokens=30, stop=(" 7",))
    deltas: list[str] = []
    stats: GenerationStats | None = None
    async for ev in batched.generate(GenerationRequest(prompt=prompt, params=params)):
        if isinstance(ev, TextDelta):
            deltas.append(ev.text)
        else:
            stats = ev.stats
    assert stats is not None and stats.finish_reason == "stop"
    text = "".join(deltas)
    assert text.rstrip().endswith("6,"), text
    assert " 7" not in text


@pytest.mark.asyncio(loop_scope="session")
async def test_long_prompt_is_read_in_chunks_while_another_npc_talks(batched: BatchedEngine) -> None:
    talker = batched.tokenize("Counting: 1, 2, 3, 4,", add_bos=True)
    long_text = " ".join(f"The {i}th stone of the old wall is grey." for i in range(40))
    newcomer = batched.tokenize(long_text, add_bos=True)
    assert len(newcomer) > 4 * 48
    order: list[str] = []
    talking = asyncio.Event()

    async def talk() -> None:
        params = SamplingParams(temperature=0.0, max_tokens=40)
        async for ev in batched.generate(GenerationRequest(prompt=talker, params=params)):
            if isinstance(ev, TextDelta):
                order.append("talker")
                talking.set()

    async def arrive() -> None:
        await talking.wait()
        order.append("newcomer-submitted")
        params = SamplingParams(temperature=0.0, max_tokens=2)
        async for ev in batched.generate(GenerationRequest(prompt=newcomer, params=params)):
            if isinstance(ev, TextDelta):
                order.append("newcomer")

    await asyncio.gather(talk(), arrive())
    start = order.index("newcomer-submitted")
    first = order.index("newcomer")
    # The newcomer's prompt took several steps (48 tokens each), and the talker got a token at each of them.
    assert order[start:first].count("talker") >= 3


@pytest.mark.asyncio(loop_scope="session")
async def test_a_players_prompt_is_read_before_background_work_that_came_first(batched: BatchedEngine) -> None:
    """A summary being written (background) does not hold up a player's line: the player's prompt is read first
    even though the background prompt arrived first and is many steps long."""
    long_text = " ".join(f"The {i}th stone of the old wall is grey." for i in range(60))
    summary_prompt = batched.tokenize(long_text, add_bos=True)
    assert len(summary_prompt) > 2 * 256  # more than two steps of n_batch
    player_prompt = batched.tokenize("Player: Any news?\nGreta:", add_bos=True)
    order: list[str] = []

    async def run(name: str, prompt: list[int], background: bool) -> None:
        params = SamplingParams(temperature=0.0, max_tokens=2)
        request = GenerationRequest(prompt=prompt, params=params, background=background)
        async for ev in batched.generate(request):
            if isinstance(ev, TextDelta) and name not in order:
                order.append(name)

    background = asyncio.create_task(run("summary", summary_prompt, True))
    await asyncio.sleep(0.05)  # the background request is admitted first
    await asyncio.gather(background, run("player", player_prompt, False))
    assert order == ["player", "summary"]


@pytest.mark.asyncio(loop_scope="session")
async def test_cancel_frees_the_sequence(batched: BatchedEngine) -> None:
    prompt = batched.tokenize("Counting: 1, 2, 3, 4,", add_bos=True)
    params = SamplingParams(temperature=0.0, max_tokens=500)
    gens = [stream(batched, GenerationRequest(prompt=prompt, params=params)) for _ in range(N_SEQ)]
    for g in gens:  # every sequence busy
        ev = await g.__anext__()
        assert isinstance(ev, TextDelta)
    for g in gens:
        await g.aclose()
    # The freed sequences serve the next request promptly and in full.
    text, stats = await asyncio.wait_for(
        collect(batched, GenerationRequest(prompt=prompt, params=SamplingParams(temperature=0.0, max_tokens=5))),
        timeout=60,
    )
    assert stats.completion_tokens == 5
    assert text


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("ram_cache_mb", [64, 0])
async def test_evicted_conversation_is_restored_from_ram(model_path: Path, ram_cache_mb: int) -> None:
    eng = BatchedEngine(model_path=model_path, threads=2, ctx_size=512, n_seq=2, n_batch=128, ram_cache_mb=ram_cache_mb)
    await eng.start()
    try:
        convs = make_conversations(f"evict{ram_cache_mb}", n=3)
        for conv in convs:  # the third evicts the first from its sequence
            await run_conversation(eng, conv, turns=1)
        first = convs[0]
        await run_conversation(eng, first, turns=1)  # the same prompt again, after its KV left the context
        before, after = first.stats
        assert after.prompt_tokens == before.prompt_tokens
        if ram_cache_mb:
            assert eng.restores == 1
            assert after.cached_prompt_tokens == after.prompt_tokens - 1  # all but the token that gives logits
        else:
            assert eng.restores == 0
            assert after.cached_prompt_tokens < after.prompt_tokens - 10  # only the shared scene could be reused
        assert first.replies[1] == first.replies[0]
    finally:
        await eng.close()
