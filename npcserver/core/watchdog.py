"""Health tells the truth: a watchdog over the event loop and the engine's scheduler.

Loading is not the only time a server cannot serve. The event loop can be blocked (a long synchronous call), and the
engine can hold requests without making progress (a wedged scheduler thread). Health checks ask ``Watchdog.problem``
and answer NOT_SERVING (gRPC) / 503 (``/healthz``) while it names one:

- the loop: a timer that should fire every ``PROBE_S`` is measured; firing ``LOOP_LAG_LIMIT_S`` late means the loop
  was stuck, and health stays NOT_SERVING until it has run on time for ``LOOP_RECOVERY_S`` (while it is stuck, no
  health check is answered at all, which a client sees as a timeout);
- the engine: holding requests (``outstanding``) while its step counter (``stats().steps``, the scheduler's heartbeat)
  has not moved for ``ENGINE_STALL_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from npcserver.core import limits

log = logging.getLogger(__name__)

#: How often the probe's timer is set, in seconds.
PROBE_S = 0.25


class Watchdog:
    """Measures event-loop lag and engine progress; ``problem()`` says what is stuck, or None."""

    def __init__(
        self,
        engine: Callable[[], Any],
        *,
        lag_limit_s: float = limits.LOOP_LAG_LIMIT_S,
        recovery_s: float = limits.LOOP_RECOVERY_S,
        engine_stall_s: float = limits.ENGINE_STALL_S,
    ) -> None:
        self._engine = engine
        self.lag_limit_s = lag_limit_s
        self.recovery_s = recovery_s
        self.engine_stall_s = engine_stall_s
        self._task: asyncio.Task[None] | None = None
        #: When the loop was last seen stuck, and for how long.
        self._stalled_at: float | None = None
        self._stall_s = 0.0
        #: The engine's step count and when it last changed (or the engine last held nothing).
        self._steps = -1
        self._progress_at = time.monotonic()

    def start(self) -> None:
        """Starts the probe on the running loop (again after ``stop``); harmless when it runs."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._probe(), name="health-watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _probe(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(PROBE_S)
            now = time.monotonic()
            lag = now - before - PROBE_S
            if lag > self.lag_limit_s:
                self._stalled_at, self._stall_s = now, lag
                log.warning("the event loop was stuck for %.1f s (LOOP_LAG_LIMIT_S=%s)", lag, self.lag_limit_s)
            self._check_engine(now)

    def _check_engine(self, now: float) -> None:
        engine = self._engine()
        outstanding = getattr(engine, "outstanding", 0)
        stats = getattr(engine, "stats", None)
        steps = getattr(stats(), "steps", 0) if callable(stats) else 0
        if steps != self._steps or not outstanding:
            self._steps, self._progress_at = steps, now

    def problem(self) -> str | None:
        """What keeps the server from serving now, or None."""
        now = time.monotonic()
        if self._stalled_at is not None and now - self._stalled_at < self.recovery_s:
            return (
                f"the event loop was stuck for {self._stall_s:.1f} s, {now - self._stalled_at:.1f} s ago "
                f"(LOOP_LAG_LIMIT_S={self.lag_limit_s}); serving again after {self.recovery_s:.0f} s on time"
            )
        if self._task is not None:
            self._check_engine(now)
            stalled = now - self._progress_at
            if stalled > self.engine_stall_s:
                return (
                    f"the engine holds requests but has not finished a step for {stalled:.0f} s "
                    f"(ENGINE_STALL_S={self.engine_stall_s})"
                )
        return None
