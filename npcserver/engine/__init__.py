"""Model backends. ``LlamaEngine`` is imported lazily: importing it loads llama.cpp, which code that only needs
the interface types (``npcserver.engine.base``) should not pay for."""

from __future__ import annotations

import os

# Before anything can load llama.cpp: see the note in llama_engine.py (OpenMP spin-waiting on shared cores).
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

from typing import TYPE_CHECKING, Any

from npcserver.engine.base import (
    Engine,
    Finished,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    GenerationStats,
    ModelInfo,
    SamplingParams,
    TextDelta,
)
from npcserver.engine.model import EMBEDDED_MODEL_ID, default_cache_dir, resolve_model_path

if TYPE_CHECKING:
    from npcserver.engine.llama_engine import LlamaEngine

__all__ = [
    "EMBEDDED_MODEL_ID",
    "Engine",
    "FinishReason",
    "Finished",
    "GenerationEvent",
    "GenerationRequest",
    "GenerationStats",
    "LlamaEngine",
    "ModelInfo",
    "SamplingParams",
    "TextDelta",
    "default_cache_dir",
    "resolve_model_path",
]


def __getattr__(name: str) -> Any:
    if name == "LlamaEngine":
        from npcserver.engine.llama_engine import LlamaEngine

        return LlamaEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
