"""What every streaming HTTP call shares: in-flight tracking for a graceful stop, and a runner that ends the call's
work when the client goes away, the deadline passes, or the door shuts down.

uvicorn ignores writes to a closed connection, so a disconnect is only seen by waiting on ``receive()`` for
``http.disconnect``. The runner does that next to the work and cancels the work when it arrives, exactly as grpc.aio
cancels a servicer when its client cancels: the cancellation reaches the engine, which stops generating, and the
core stores no turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from starlette.types import Receive

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    """How a call's work ended."""

    DONE = "done"
    DISCONNECTED = "disconnected"
    SHUTDOWN = "shutdown"
    DEADLINE = "deadline"


class CallTracker:
    """Counts in-flight calls so a stop can wait for them, then tells the rest to finish early."""

    def __init__(self) -> None:
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        #: Set when the grace period is over: calls still running end now with a final trailer / [DONE].
        self.shutdown = asyncio.Event()
        #: Set when the door stops accepting work; new calls are refused with UNAVAILABLE / 503.
        self.draining = False

    @property
    def active(self) -> int:
        return self._active

    @contextlib.asynccontextmanager
    async def track(self) -> AsyncIterator[None]:
        self._active += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()

    async def wait_idle(self, limit_s: float | None) -> bool:
        """Waits until no call is in flight; False when the timeout passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), limit_s)
        except TimeoutError:
            return False
        return True


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None when the client disconnected first. Raises ``BodyTooLarge``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class BodyTooLarge(Exception):
    """The request body is over the door's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit} bytes")
        self.limit = limit


async def _cancel(task: asyncio.Future[None]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:
        # The work failed while being cancelled; the caller has already chosen how the call ends.
        log.exception("call failed while being cancelled")


async def _wait_disconnect(receive: Receive) -> None:
    # The body was read already, so the next message can only be the disconnect.
    while (await receive())["type"] != "http.disconnect":
        pass


async def run_call(
    work: Coroutine[Any, Any, None],
    receive: Receive,
    tracker: CallTracker,
    deadline_s: float | None = None,
) -> Outcome:
    """Runs ``work`` until it finishes, the client disconnects, the deadline passes, or the door shuts down.

    In every case but DONE the work is cancelled (and awaited) before this returns, so the caller may write a final
    frame without racing it. An exception raised by the work propagates.
    """
    task = asyncio.ensure_future(work)
    watchers = {
        asyncio.ensure_future(_wait_disconnect(receive)): Outcome.DISCONNECTED,
        asyncio.ensure_future(tracker.shutdown.wait()): Outcome.SHUTDOWN,
    }
    try:
        done, _ = await asyncio.wait({task, *watchers}, timeout=deadline_s, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
            return Outcome.DONE
        outcome = next((watchers[w] for w in done if w in watchers), Outcome.DEADLINE)
        await _cancel(task)
        return outcome
    finally:
        for w in watchers:
            w.cancel()
        if not task.done():
            # We were cancelled ourselves (uvicorn's forced shutdown): take the work down with us.
            await _cancel(task)
