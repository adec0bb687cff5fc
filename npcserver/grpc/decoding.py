"""Requests that do not decode are the caller's mistake: INVALID_ARGUMENT naming the message, never UNKNOWN.

grpc.aio answers a request its deserializer cannot parse (a string field holding bytes that are not UTF-8, such as an
encoded lone surrogate, or a truncated message) with UNKNOWN "Unexpected DecodeError". This interceptor decodes
leniently instead: a message that fails to parse reaches the handler as ``Undecodable``, which is refused with
INVALID_ARGUMENT saying which message and why, before any handler runs.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc


@dataclass(frozen=True)
class Undecodable:
    """A request message that did not parse."""

    method: str
    reason: str

    @property
    def message(self) -> str:
        return (
            f"the request is not a valid message for {self.method}: {self.reason} (string fields must be UTF-8, "
            "and the message must be complete protobuf)"
        )


class DecodeErrorsAreInvalidArgument(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Turns undecodable request messages of unary-request methods into INVALID_ARGUMENT."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        parse = handler.request_deserializer
        method = details.method

        def lenient(raw: bytes) -> Any:
            try:
                return parse(raw)
            except Exception as exc:  # protobuf's DecodeError, or a ValueError from the upb backend
                return Undecodable(method, str(exc) or type(exc).__name__)

        if handler.response_streaming:
            stream = handler.unary_stream

            async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
                if isinstance(request, Undecodable):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
                replies = stream(request, context)
                if inspect.isasyncgen(replies):
                    async for item in replies:
                        yield item
                else:  # a handler that writes with context.write (grpc health's Watch)
                    await replies

            return handler._replace(request_deserializer=lenient, unary_stream=unary_stream)
        unary = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            if isinstance(request, Undecodable):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            return await unary(request, context)

        return handler._replace(request_deserializer=lenient, unary_unary=unary_unary)
