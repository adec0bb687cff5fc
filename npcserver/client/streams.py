"""Streaming replies: iterators of text pieces that keep the final result (finish reason, usage, timings).

Both the chat stream (``StreamChatCompletionResponse``) and the Talk stream (``TalkResponse``) carry a ``oneof
event`` of ``delta`` / ``final``; these wrappers read either.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any

import grpc
import grpc.aio

from npcserver.client.errors import NpcCancelled, NpcServerError, from_rpc_error
from npcserver.client.types import ChatResult


def _final_result(msg: Any) -> ChatResult:
    # Chat stream messages carry id/model/created on every message; Talk messages have none of these fields.
    return ChatResult.from_final(
        msg.final,
        id=getattr(msg, "id", ""),
        model=getattr(msg, "model", ""),
        created=getattr(msg, "created", 0),
    )


class _StreamState:
    """What both stream flavours track: the pieces so far and the final result once it arrives."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.pieces: list[str] = []
        self.final: ChatResult | None = None
        self.done = False
        self.cancelled = False

    def take(self, msg: Any) -> str | None:
        """Records one stream message; returns its text when it is a non-empty delta."""
        event = msg.WhichOneof("event")
        if event == "delta":
            text: str = msg.delta.content
            if text:
                self.pieces.append(text)
                return text
        elif event == "final":
            self.final = _final_result(msg)
        return None

    def result(self) -> ChatResult:
        if self.final is None:
            if self.cancelled:
                raise NpcCancelled("the stream was cancelled before its final message", grpc.StatusCode.CANCELLED)
            raise NpcServerError("the stream ended without a final message", grpc.StatusCode.INTERNAL)
        return self.final


class ReplyStream(Iterator[str]):
    """A streamed reply (chat or Talk): iterate for text pieces, then call :meth:`result` for the rest.

    Use it as a context manager (or call :meth:`cancel`) to stop generation early; the server then frees the
    engine and, for Talk, stores no turn.
    """

    def __init__(self, call: Any, target: str) -> None:
        self._call = call
        self._state = _StreamState(target)

    def __iter__(self) -> ReplyStream:
        return self

    def __next__(self) -> str:
        state = self._state
        while not state.done:
            try:
                msg = next(self._call)
            except StopIteration:
                state.done = True
                break
            except grpc.RpcError as err:
                state.done = True
                raise from_rpc_error(err, state.target) from None
            text = state.take(msg)
            if text is not None:
                return text
        raise StopIteration

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._state.pieces)

    @property
    def pieces(self) -> list[str]:
        """The text pieces received so far, in order."""
        return list(self._state.pieces)

    def result(self) -> ChatResult:
        """The final result. Reads whatever is left of the stream first."""
        for _ in self:
            pass
        return self._state.result()

    def cancel(self) -> None:
        """Stops the stream (and generation on the server). Safe to call more than once."""
        if not self._state.done:
            self._state.cancelled = True
            self._state.done = True
            self._call.cancel()

    def __enter__(self) -> ReplyStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cancel()


class AsyncReplyStream(AsyncIterator[str]):
    """The asyncio twin of :class:`ReplyStream`: ``async for`` pieces, then ``await stream.result()``."""

    def __init__(self, call: grpc.aio.UnaryStreamCall[Any, Any], target: str) -> None:
        self._call = call
        self._state = _StreamState(target)

    def __aiter__(self) -> AsyncReplyStream:
        return self

    async def __anext__(self) -> str:
        state = self._state
        while not state.done:
            try:
                msg = await self._call.read()
            except grpc.aio.AioRpcError as err:
                state.done = True
                raise from_rpc_error(err, state.target) from None
            if msg is grpc.aio.EOF:
                state.done = True
                break
            text = state.take(msg)
            if text is not None:
                return text
        raise StopAsyncIteration

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._state.pieces)

    @property
    def pieces(self) -> list[str]:
        """The text pieces received so far, in order."""
        return list(self._state.pieces)

    async def result(self) -> ChatResult:
        """The final result. Reads whatever is left of the stream first."""
        async for _ in self:
            pass
        return self._state.result()

    def cancel(self) -> None:
        """Stops the stream (and generation on the server). Safe to call more than once."""
        if not self._state.done:
            self._state.cancelled = True
            self._state.done = True
            self._call.cancel()

    async def __aenter__(self) -> AsyncReplyStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cancel()
