"""Engine fixtures: the real engine on the embedded model, shared by the session, at one sequence and at four; and the
upstream engine over a real llama-server (built from the llama.cpp llama-cpp-python vendors) with as many slots."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from npcserver.config import Settings
from npcserver.engine.batched import BatchedEngine
from npcserver.engine.model import resolve_model_path
from npcserver.engine.upstream import UpstreamEngine
from tests.engine.llama_server import llama_server

#: Small enough that prompts and replies in these tests stay fast; large enough for every test prompt.
CTX_SIZE = 2048
#: Requests the shared engine lets wait beyond its running ones.
MAX_QUEUE = 3


@pytest.fixture(scope="session")
def engine_ctx_size() -> int:
    """The context size the shared engine was started with."""
    return CTX_SIZE


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The embedded model, assembled into the configured cache on first use (reused afterwards)."""
    return resolve_model_path(None, Settings().cache_dir)


@pytest.fixture(scope="session", params=[1, 4], ids=["1seq", "4seq"])
def n_seq(request: pytest.FixtureRequest) -> int:
    """Sequences decoded together: one (requests strictly one after another) and four (batched)."""
    return int(request.param)


#: Contract tests that cannot hold for an engine whose model runs in another server: the fewest sequences at which
#: each differs, and why. They are reported as skipped with the reason on the upstream engine (``-rs`` lists them).
@pytest.fixture(scope="session", params=["batched", "upstream"])
def engine_kind(request: pytest.FixtureRequest) -> str:
    """The engine under contract: the embedded batched one, or the upstream one over a llama-server."""
    return str(request.param)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def engine(model_path: Path, n_seq: int, engine_kind: str) -> AsyncIterator[BatchedEngine | UpstreamEngine]:
    """One started engine per ``n_seq`` and kind: 2 threads, a 2048-token context per sequence, MAX_QUEUE waiting.

    The upstream one runs llama-server with ``n_seq`` slots of 2048 tokens, and sends it ``n_seq`` requests at once.
    """
    if engine_kind == "upstream":
        with llama_server(model_path, parallel=n_seq, ctx_per_slot=CTX_SIZE) as server:
            upstream = UpstreamEngine(
                url=server.url, model_path=model_path, ctx_size=CTX_SIZE, n_seq=n_seq, max_queue=MAX_QUEUE
            )
            await upstream.start()
            yield upstream
            await upstream.close()
        return
    eng = BatchedEngine(model_path=model_path, ctx_size=CTX_SIZE, threads=2, n_seq=n_seq, max_queue=MAX_QUEUE)
    await eng.start()
    yield eng
    await eng.close()
