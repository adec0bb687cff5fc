"""keep_alive's rules on scripted engines: when the model unloads, that a request loads it again, and that an unload
never pulls the model from under a running request. (The real model unloads and reloads in test_ollama_live.py.)"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from npcserver.core.residency import ModelResidency
from npcserver.errors import Internal
from tests.fakes import FakeEngine


class CountingFactory:
    """Builds fresh fake engines (what the server's factory does with the real model), counting them."""

    def __init__(self, fail: bool = False) -> None:
        self.built: list[FakeEngine] = []
        self.fail = fail

    def __call__(self) -> FakeEngine:
        engine = FakeEngine(ready=False)
        if self.fail:

            async def broken() -> None:
                raise RuntimeError("the GGUF file is gone")

            engine.start = broken  # type: ignore[method-assign]
        self.built.append(engine)
        return engine


def residency(factory: Any = None) -> tuple[ModelResidency, Any]:
    core = SimpleNamespace(engine=FakeEngine())
    return ModelResidency(core, factory), core  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_keep_alive_zero_unloads_and_the_next_hold_loads_a_fresh_engine() -> None:
    factory = CountingFactory()
    r, core = residency(factory)
    first = core.engine
    async with r.hold(0) as load_ms:
        assert load_ms == 0.0 and r.loaded
    assert r.unloaded and not r.loaded and r.info().id == "fake"  # still described while unloaded
    await settle()
    assert not first.ready  # closed
    async with r.hold() as load_ms:
        assert load_ms > 0 and r.loaded and core.engine is factory.built[0]
    assert r.loaded and r.expires_at is None  # no keep_alive: the server default keeps it loaded


async def test_a_duration_unloads_once_idle_and_a_request_resets_the_clock() -> None:
    r, _ = residency(CountingFactory())
    async with r.hold(0.2):
        pass
    assert r.expires_at is not None
    await asyncio.sleep(0.1)
    async with r.hold(0.2):  # cancels the pending unload and starts a new wait
        pass
    await asyncio.sleep(0.15)
    assert r.loaded
    await asyncio.sleep(0.2)
    assert r.unloaded


async def test_no_unload_while_another_request_holds_the_model() -> None:
    r, core = residency(CountingFactory())
    engine = core.engine
    release = asyncio.Event()

    async def long_request() -> None:
        async with r.hold():
            await release.wait()

    task = asyncio.create_task(long_request())
    await settle()
    async with r.hold(0):
        pass
    await settle()
    assert r.loaded and engine.ready  # the long request still runs on it
    release.set()
    await task
    assert r.loaded  # its own keep_alive (none: the default) decides now


async def test_negative_keep_alive_keeps_the_model_and_no_factory_means_no_unload() -> None:
    r, _ = residency(CountingFactory())
    async with r.hold(-1):
        pass
    assert r.loaded and r.expires_at is None
    fixed, core = residency(None)
    async with fixed.hold(0):
        pass
    await settle()
    assert fixed.loaded and core.engine.ready


async def test_a_failed_reload_is_a_server_fault_and_the_next_request_tries_again() -> None:
    factory = CountingFactory(fail=True)
    r, _ = residency(factory)
    async with r.hold(0):
        pass
    for attempt in (1, 2):
        with pytest.raises(Internal, match="failed to load"):
            async with r.hold():
                pass
        assert len(factory.built) == attempt and r.unloaded
