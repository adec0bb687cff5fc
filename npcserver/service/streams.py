"""The stream events doors see, and the one place that turns a stream into its final result.

Doors import these from here, never from the engine: a stream yields ``TextDelta`` pieces as tokens are sampled,
then exactly one ``Completion``. A door that stops reading a stream early closes it with ``contextlib.aclosing``,
so the generation behind it stops at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from npcserver.core.types import Completion, ReasoningDelta, StreamEvent, TextDelta
from npcserver.errors import Internal

__all__ = ["Completion", "ReasoningDelta", "StreamEvent", "TextDelta", "final_of"]


async def final_of(events: AsyncIterator[StreamEvent]) -> Completion:
    """Drains a stream and returns its Completion; the stream is closed however this ends."""
    async with aclosing(events) as stream:  # type: ignore[type-var]
        async for event in stream:
            if isinstance(event, Completion):
                return event
    raise Internal("the stream ended without a final result")
