from __future__ import annotations

from typing import Any

import pytest

from npcserver.config import Settings
from npcserver.engine.model import resolve_model_path


@pytest.fixture(scope="session")
def vocab() -> Any:
    """The embedded model's tokenizer only (vocab_only: no weights, loads in milliseconds)."""
    import llama_cpp

    path = resolve_model_path(None, Settings().cache_dir)
    return llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
