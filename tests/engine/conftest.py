"""Engine fixtures: one real LlamaEngine on the embedded model, shared by the whole session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from npcserver.config import Settings
from npcserver.engine.llama_engine import LlamaEngine
from npcserver.engine.model import resolve_model_path

#: Small enough that prompts and replies in these tests stay fast; large enough for every test prompt.
CTX_SIZE = 2048


@pytest.fixture(scope="session")
def engine_ctx_size() -> int:
    """The context size the shared engine was started with."""
    return CTX_SIZE


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The embedded model, assembled into the configured cache on first use (reused afterwards)."""
    return resolve_model_path(None, Settings().cache_dir)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def engine(model_path: Path) -> AsyncIterator[LlamaEngine]:
    """One started engine: 2 threads, a 2048-token context, the default queue bound (16)."""
    eng = LlamaEngine(model_path=model_path, ctx_size=CTX_SIZE, threads=2)
    await eng.start()
    yield eng
    await eng.close()
