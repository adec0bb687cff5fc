"""Model backends. ``BatchedEngine`` is imported lazily: importing it loads llama.cpp, which code that only needs
the interface types (``npcserver.engine.base``) should not pay for."""

from __future__ import annotations

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
    from npcserver.engine.batched import BatchedEngine

__all__ = [
    "EMBEDDED_MODEL_ID",
    "BatchedEngine",
    "Engine",
    "FinishReason",
    "Finished",
    "GenerationEvent",
    "GenerationRequest",
    "GenerationStats",
    "ModelInfo",
    "SamplingParams",
    "TextDelta",
    "default_cache_dir",
    "resolve_model_path",
]


def __getattr__(name: str) -> Any:
    if name == "BatchedEngine":
        from npcserver.engine.batched import BatchedEngine

        return BatchedEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
