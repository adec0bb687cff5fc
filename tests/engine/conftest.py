"""Engine fixtures: the real engine on the embedded model, shared by the session, at one sequence and at four."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from npcserver.config import Settings
from npcserver.engine.batched import BatchedEngine
from npcserver.engine.model import resolve_model_path

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


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def engine(model_path: Path, n_seq: int) -> AsyncIterator[BatchedEngine]:
    """One started engine per ``n_seq``: 2 threads, a 2048-token context per sequence, MAX_QUEUE waiting."""
    eng = BatchedEngine(model_path=model_path, ctx_size=CTX_SIZE, threads=2, n_seq=n_seq, max_queue=MAX_QUEUE)
    await eng.start()
    yield eng
    await eng.close()
