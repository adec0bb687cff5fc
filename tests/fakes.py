"""A scripted fake engine for transport tests (never the only test of a feature: the real model runs elsewhere)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from npcserver.engine.base import Finished, GenerationEvent, GenerationRequest, GenerationStats, ModelInfo, TextDelta
from npcserver.errors import NotReady


class FakeEngine:
    """Streams ``script`` word by word; or raises ``fail_with`` from generate()."""

    def __init__(
        self,
        script: str = "Hello there traveler.",
        *,
        ready: bool = True,
        fail_with: BaseException | None = None,
        delay_s: float = 0.0,
    ) -> None:
        self.script = script
        self._ready = ready
        self.fail_with = fail_with
        self.delay_s = delay_s
        self.requests: list[GenerationRequest] = []

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def info(self) -> ModelInfo:
        if not self._ready:
            raise NotReady("the model is still loading")
        return ModelInfo(
            id="fake",
            path="/dev/null",
            context_size=2048,
            backend="CPU",
            gpu_layers=0,
            chat_template=None,
            bos_token="<bos>",
            eos_token="<eos>",
            add_bos=False,
            load_ms=1.0,
            created=0,
        )

    async def start(self) -> None:
        self._ready = True

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        return [len(w) for w in text.split()] or [0]

    def detokenize(self, tokens: list[int]) -> str:
        return " ".join("x" * t for t in tokens)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        self.requests.append(request)
        if self.fail_with is not None:
            raise self.fail_with
        words = self.script.split(" ")
        for w in words:
            await asyncio.sleep(self.delay_s)
            yield TextDelta(" " + w)
        yield Finished(GenerationStats("stop", len(request.prompt), len(words)))

    async def close(self) -> None:
        self._ready = False
