"""Model residency: whether the model is in memory, and for how long it stays there after a request (keep_alive).

Every generation holds the model through ``hold()``: a model unloaded by an earlier keep_alive loads again first,
and the time it took is the request's load time. When the last request holding it ends, its keep_alive decides
what happens: ``None`` (every door but Ollama's, and Ollama requests without one) is the server default, which is
to stay loaded; a negative value keeps it loaded for good, ``0`` unloads it now, and a positive value unloads it
after that many idle seconds. A request that arrives in the meantime cancels the pending unload, as in Ollama.

Unloading closes the engine; loading again builds a fresh one from the factory the server gave (the same model
and settings), so no engine needs to support a restart. Without a factory (tests on scripted engines) the model
stays loaded and keep_alive is logged as ignored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from npcserver.engine.base import Engine, ModelInfo
from npcserver.errors import Internal

if TYPE_CHECKING:
    from npcserver.core.app import NpcCore

log = logging.getLogger(__name__)

EngineFactory = Callable[[], Engine]


class ModelResidency:
    """Loads and unloads the core's model on demand. One per core, shared by every door."""

    def __init__(self, core: NpcCore, factory: EngineFactory | None) -> None:
        self._core = core
        self._factory = factory
        self._lock = asyncio.Lock()
        self._holders = 0
        #: Seconds the model stays loaded once idle; None: for good.
        self._keep_s: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._unload_task: asyncio.Task[None] | None = None
        #: True once a keep_alive unloaded the model (until a request loads it again).
        self.unloaded = False
        #: The model as it was last loaded, for ListModels and health while it is unloaded.
        self.last_info: ModelInfo | None = None
        #: When the model unloads by itself (Unix seconds), or None when it stays loaded.
        self.expires_at: float | None = None

    @property
    def can_unload(self) -> bool:
        return self._factory is not None

    @property
    def loaded(self) -> bool:
        return not self.unloaded and bool(self._core.engine.ready)

    def info(self) -> ModelInfo:
        """The model's info, loaded or not; raises NotReady before the first load finished."""
        if self.unloaded and self.last_info is not None:
            return self.last_info
        info = self._core.engine.info
        self.last_info = info
        return info

    @asynccontextmanager
    async def hold(self, keep_alive_s: float | None = None) -> AsyncIterator[float]:
        """Keeps the model loaded for the block, loading it first if needed; yields the milliseconds that took."""
        self._cancel_timer()
        self._holders += 1
        try:
            load_ms = await self._ensure_loaded()
            yield load_ms
        finally:
            self._holders -= 1
            self._release(keep_alive_s)

    async def _ensure_loaded(self) -> float:
        if not self.unloaded and self._unload_task is None:
            return 0.0
        async with self._lock:
            if self._unload_task is not None:
                await asyncio.shield(self._unload_task)
            if not self.unloaded:
                return 0.0
            assert self._factory is not None
            started = time.perf_counter()
            engine = self._factory()
            try:
                await engine.start()
            except Exception as exc:
                # A model that loaded before and fails now is a server fault (500), never the request's (400).
                log.exception("loading the model again failed")
                await engine.close()
                raise Internal("the model failed to load; the server log has the reason") from exc
            self._core.engine = engine
            self.unloaded = False
            load_ms = (time.perf_counter() - started) * 1000.0
            log.info("model %s loaded again in %.0f ms", engine.info.id, load_ms)
            return load_ms

    def _release(self, keep_alive_s: float | None) -> None:
        if keep_alive_s is not None and self._factory is None:
            log.info("keep_alive=%s ignored: this engine cannot be unloaded and loaded again", keep_alive_s)
        # As in Ollama, the last request's keep_alive wins, and a request without one restores the default.
        self._keep_s = None if keep_alive_s is None or keep_alive_s < 0 else keep_alive_s
        if self._holders > 0 or self._keep_s is None or self._factory is None:
            self.expires_at = None
            return
        self.expires_at = time.time() + self._keep_s
        if self._keep_s == 0:
            self._start_unload()
        else:
            self._timer = asyncio.get_running_loop().call_later(self._keep_s, self._start_unload)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _start_unload(self) -> None:
        self._timer = None
        if self._holders > 0 or self.unloaded or self._unload_task is not None or not self._core.engine.ready:
            return
        # Marked unloaded at once, so a health check or /api/ps right after the request already sees it; a request
        # arriving while the engine closes waits for the close, then loads a fresh one.
        self.last_info = self._core.engine.info
        self.unloaded = True
        self.expires_at = None
        self._unload_task = asyncio.ensure_future(self._unload(self._core.engine))

    async def _unload(self, engine: Engine) -> None:
        try:
            await engine.close()
            log.info("model unloaded (keep_alive)")
        except Exception:
            log.exception("unloading the model failed")
        finally:
            self._unload_task = None
