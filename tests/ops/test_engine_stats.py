"""The engine's stats snapshot (what /metrics reads at scrape time), on the real engine and model."""

from __future__ import annotations

import asyncio

import pytest

from npcserver.config import Settings
from npcserver.engine.base import STEP_SECONDS_BUCKETS, GenerationRequest, SamplingParams, TextDelta
from npcserver.engine.batched import BatchedEngine
from npcserver.engine.model import resolve_model_path
from tests.engine.test_batched import make_conversations, run_conversation, stream

pytestmark = pytest.mark.model  # starts its own engine on the embedded model


@pytest.mark.asyncio(loop_scope="session")
async def test_stats_count_evictions_restores_cache_hits_and_steps() -> None:
    model_path = resolve_model_path(None, Settings().cache_dir)
    eng = BatchedEngine(model_path=model_path, threads=2, ctx_size=512, n_seq=2, n_batch=128, ram_cache_mb=64)
    await eng.start()
    try:
        idle = eng.stats()
        assert (idle.running, idle.waiting, idle.evictions, idle.steps) == (0, 0, 0, 0)
        assert idle.kv_capacity == 512 * 2

        # While a reply streams, it holds a sequence (the snapshot is at most a step old: give it a moment).
        prompt = eng.tokenize("Player: Hello?\nGuard:", add_bos=True)
        gen = stream(eng, GenerationRequest(prompt=prompt, params=SamplingParams(temperature=0.0, max_tokens=64)))
        assert isinstance(await gen.__anext__(), TextDelta)
        busy = eng.stats()
        for _ in range(500):
            if busy.running == 1:
                break
            await asyncio.sleep(0.01)
            busy = eng.stats()
        assert busy.running == 1 and busy.waiting == 0 and busy.kv_tokens >= len(prompt)
        await gen.aclose()

        convs = make_conversations("stats", n=3)
        for conv in convs:  # two sequences: the third conversation evicts the least recently used conversation
            await run_conversation(eng, conv, turns=1)
        await run_conversation(eng, convs[0], turns=1)  # comes back: evicts another, restored from RAM
        await asyncio.sleep(0.05)
        s = eng.stats()
        assert s.evictions == 2  # conversation 0's, then conversation 1's (the one-off reply had no conversation)
        assert s.restores == 1
        again = convs[0].stats[1]
        assert again.cached_prompt_tokens == again.prompt_tokens - 1
        assert s.cached_prompt_tokens >= again.cached_prompt_tokens
        assert s.prompt_tokens >= sum(c.stats[0].prompt_tokens for c in convs) + again.prompt_tokens
        assert s.running == 0 and s.waiting == 0
        assert s.steps > 0 and s.step_seconds > 0
        assert len(s.step_buckets) == len(STEP_SECONDS_BUCKETS) + 1 and sum(s.step_buckets) == s.steps
        assert 0 < s.kv_tokens <= s.kv_capacity
    finally:
        await eng.close()
