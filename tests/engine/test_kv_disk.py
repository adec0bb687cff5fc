"""The KV disk tier: evicted conversations come back from files, and a file is never used for the wrong one.

On the real engine (two sequences, no RAM tier, so every eviction goes to disk) and on ``KvDiskCache`` alone for
the size limit and the least-recently-written order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from npcserver.engine.batched import BatchedEngine
from npcserver.engine.kv_disk import KvDiskCache
from npcserver.errors import InvalidArgument
from tests.engine.test_batched import make_conversations, run_conversation


@pytest_asyncio.fixture(loop_scope="session")
async def disk_engine(model_path: Path, tmp_path: Path) -> AsyncIterator[BatchedEngine]:
    eng = BatchedEngine(
        model_path=model_path,
        threads=2,
        ctx_size=512,
        n_seq=2,
        n_batch=128,
        ram_cache_mb=0,
        kv_disk_dir=tmp_path / "kv",
        kv_disk_mb=64,
    )
    await eng.start()
    yield eng
    await eng.close()


def kv_files(eng: BatchedEngine) -> list[Path]:
    assert eng.kv_disk is not None
    return sorted(eng.kv_disk.folder.glob("*.kv"))


@pytest.mark.asyncio(loop_scope="session")
async def test_evicted_conversation_comes_back_from_disk(disk_engine: BatchedEngine) -> None:
    eng = disk_engine
    convs = make_conversations("disk", n=3)
    for conv in convs:  # the third evicts the first from its sequence, to disk
        await run_conversation(eng, conv, turns=1)
    assert len(kv_files(eng)) == 1
    first = convs[0]
    await run_conversation(eng, first, turns=1)  # the same prompt again, after its KV left the context
    before, after = first.stats
    assert after.prompt_tokens == before.prompt_tokens
    assert eng.restores == 1
    assert eng.kv_disk is not None and eng.kv_disk.reads == 1
    assert after.cached_prompt_tokens == after.prompt_tokens - 1  # all but the token that gives logits
    assert first.replies[1] == first.replies[0]  # the same greedy continuation as from its own KV
    # Taking it back removed its file; the conversation it displaced went to disk in its place.
    assert len(kv_files(eng)) == 1


@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize("damage", ["flip", "truncate", "other_conversation"])
async def test_damaged_or_foreign_file_is_never_used(disk_engine: BatchedEngine, damage: str) -> None:
    eng = disk_engine
    assert eng.kv_disk is not None
    convs = make_conversations(f"bad-{damage}", n=4)
    for conv in convs[:3]:
        await run_conversation(eng, conv, turns=1)
    (path,) = kv_files(eng)  # the first conversation's KV
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[: len(data) - 100]))
    else:
        # A file with the right checksum under the wrong conversation's name: the header names its owner.
        await run_conversation(eng, convs[3], turns=1)  # evicts the second, whose file now exists too
        (other,) = (p for p in kv_files(eng) if p != path)
        other.write_bytes(bytes(data))
    target = convs[1] if damage == "other_conversation" else convs[0]
    await run_conversation(eng, target, turns=1)
    assert eng.restores == 0
    assert eng.kv_disk.rejected == 1
    after = target.stats[-1]
    assert after.cached_prompt_tokens < after.prompt_tokens - 10  # read again: only the shared scene was copied
    assert target.replies[-1] == target.replies[-2]


def test_file_of_another_model_is_refused(tmp_path: Path) -> None:
    one = KvDiskCache(tmp_path, 1 << 20, "model-a|ctx=512")
    assert one.put("npc/1", [1, 2, 3], b"state" * 10)
    other = KvDiskCache(tmp_path, 1 << 20, "model-b|ctx=512")  # picks up the file left in the folder
    assert len(other) == 1
    assert other.take("npc/1") is None
    assert other.rejected == 1 and len(other) == 0 and not list(tmp_path.glob("*.kv"))


def test_round_trip_and_take_removes(tmp_path: Path) -> None:
    cache = KvDiskCache(tmp_path, 1 << 20, "m")
    assert cache.put("npc/ünïcode\n/1", [5, 6, 70000], b"\x00\x01\x02state")
    tokens, state = cache.take("npc/ünïcode\n/1") or ([], b"")
    assert (tokens, bytes(state)) == ([5, 6, 70000], b"\x00\x01\x02state")
    assert cache.take("npc/ünïcode\n/1") is None
    assert cache.bytes == 0 and not list(tmp_path.glob("*.kv"))


def test_size_limit_evicts_least_recently_written(tmp_path: Path) -> None:
    state = b"x" * 1000
    probe = KvDiskCache(tmp_path / "probe", 1 << 20, "m")
    probe.put("a", [1], state)
    one = probe.bytes  # a file's size with its header
    cache = KvDiskCache(tmp_path / "kv", 3 * one, "m")
    for s in ("a", "b", "c"):
        assert cache.put(s, [1], state)
    assert cache.put("a", [1], state)  # rewritten: now the most recent
    assert cache.put("d", [1], state)  # over the limit: "b", the least recently written, goes
    assert "b" not in cache and {"a", "c", "d"} == {s for s in "abcd" if s in cache}
    assert cache.bytes <= 3 * one
    assert sum(p.stat().st_size for p in (tmp_path / "kv").glob("*.kv")) == cache.bytes
    assert not cache.put("huge", [1], b"x" * (3 * one))  # larger than the whole limit: not written
    # A restart counts what is on disk and deletes the oldest files down to a smaller limit.
    smaller = KvDiskCache(tmp_path / "kv", 2 * one, "m")
    assert len(smaller) == 2 and smaller.bytes <= 2 * one
    assert len(list((tmp_path / "kv").glob("*.kv"))) == 2


def test_negative_disk_limit_is_refused(model_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="kv_disk_mb"):
        BatchedEngine(model_path=model_path, kv_disk_dir="/tmp/x", kv_disk_mb=-1)
