"""Server-Sent Events responses that stop their generation when the client goes away.

A stream first pulls the core's first event, so a bad request still gets a plain HTTP error status and an OpenAI
error body. Once ``data:`` lines have gone out, a failure is sent as ``data: {"error": {...}}`` and the stream still
ends with ``data: [DONE]``, as it does when the server shuts down mid-reply.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.types import Receive, Scope, Send

from npcserver.errors import NotReady
from npcserver.http.calls import CallTracker, Outcome, run_call
from npcserver.http.errors import error_status_and_body

_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    # Reverse proxies (nginx) would otherwise buffer the stream and defeat token-by-token delivery.
    (b"x-accel-buffering", b"no"),
]


class SseWriter:
    """Writes one event stream; the headers go out with the first event."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.finished = False

    async def event(self, data: dict[str, Any] | str) -> None:
        if not self.started:
            self.started = True
            await self._send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        await self._send({"type": "http.response.body", "body": f"data: {text}\n\n".encode(), "more_body": True})

    async def done(self) -> None:
        await self.event("[DONE]")
        self.finished = True
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def fail(self, exc: BaseException) -> None:
        """Ends the call with an error: an HTTP error before the stream started, else an error event + [DONE]."""
        status, body = error_status_and_body(exc)
        if not self.started:
            self.started = self.finished = True
            payload = json.dumps(body).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
            await self._send({"type": "http.response.start", "status": status, "headers": headers})
            await self._send({"type": "http.response.body", "body": payload, "more_body": False})
            return
        await self.event(body)
        await self.done()


Producer = Callable[[SseWriter], Awaitable[None]]


class EventStreamResponse:
    """An ASGI response that runs ``produce`` (which writes events and calls ``done()``) as a cancellable call."""

    def __init__(self, produce: Producer, tracker: CallTracker) -> None:
        self._produce = produce
        self._tracker = tracker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        writer = SseWriter(send)

        async def work() -> None:
            try:
                await self._produce(writer)
            except Exception as exc:
                if not writer.finished:
                    await writer.fail(exc)

        outcome = await run_call(work(), receive, self._tracker)
        if outcome is Outcome.SHUTDOWN and not writer.finished:
            await writer.fail(NotReady("the server shut down before the reply finished; retry"))
