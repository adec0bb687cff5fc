"""Assembles one npcserver process: store, presets, engine, core, and both doors in one asyncio loop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from npcserver.config import Settings
from npcserver.core.app import NpcCore
from npcserver.core.knowledge import load_stored_books
from npcserver.core.lore import LoreFiles
from npcserver.core.presets import PresetBook
from npcserver.core.watch import PersonaFiles
from npcserver.engine.base import Engine
from npcserver.grpc.server import GrpcDoor
from npcserver.service.ops import Ops
from npcserver.store.base import Store
from npcserver.store.sqlite import SqliteStore

log = logging.getLogger(__name__)


def make_engine(settings: Settings, model_path: Path) -> Engine:
    """The engine for these settings (imported here: it loads llama.cpp)."""
    if settings.engine_url is not None:
        from npcserver.engine.upstream import UpstreamEngine

        return UpstreamEngine(
            url=settings.engine_url,
            api=settings.engine_api,
            model_path=model_path,
            model_id=settings.model_id,
            upstream_model=settings.engine_model,
            ctx_size=settings.ctx_size,
            n_seq=settings.parallel,
            max_queue=settings.max_queue,
            grammar_field=settings.engine_grammar_field,
            api_key=settings.engine_api_key.get_secret_value() if settings.engine_api_key else None,
            read_timeout_s=settings.engine_timeout_s,
        )
    from npcserver.engine.batched import BatchedEngine

    return BatchedEngine(
        model_path=model_path,
        model_id=settings.model_id,
        n_gpu_layers=settings.n_gpu_layers,
        threads=settings.threads,
        ctx_size=settings.ctx_size,
        max_queue=settings.max_queue,
        n_seq=settings.parallel,
        ram_cache_mb=settings.ram_cache_mb,
        kv_disk_dir=settings.kv_disk_dir or settings.data_dir / "kv-cache",
        kv_disk_mb=settings.kv_disk_mb,
    )


def make_store(settings: Settings) -> Store:
    """PostgreSQL when the settings name a store URL (imported here: the driver is an extra), else SQLite."""
    url = settings.store_url.get_secret_value() if settings.store_url is not None else None
    if url is None:
        sqlite = SqliteStore(settings.data_dir / "npcserver.db")
        log.info("conversations and personas are stored in %s", sqlite.path)
        return sqlite
    try:
        from npcserver.store.postgres import PostgresStore
    except ImportError as exc:
        raise RuntimeError(
            f"store_url needs the PostgreSQL driver ({exc.name} is missing): pip install 'npcserver[postgres]'"
        ) from exc
    where = urlsplit(url)  # logged without the user and password
    postgres = PostgresStore(url)
    log.info("conversations and personas are stored in PostgreSQL at %s:%s%s", where.hostname, where.port, where.path)
    return postgres


class NpcServer:
    """One server process. ``start()`` opens the doors at once (health NOT_SERVING) and loads the model behind them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.core: NpcCore | None = None
        self.grpc: GrpcDoor | None = None
        self.http: Any = None
        self.ready = asyncio.Event()
        self._load_task: asyncio.Task[None] | None = None
        self.load_error: BaseException | None = None
        self._files: PersonaFiles | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._lore_task: asyncio.Task[None] | None = None
        self._stop_watching = asyncio.Event()

    @property
    def grpc_port(self) -> int:
        return self.grpc.port if self.grpc else 0

    @property
    def http_port(self) -> int:
        return int(self.http.port) if self.http else 0

    async def start(self) -> None:
        s = self.settings
        from npcserver.engine.model import resolve_model_path

        model_path = await asyncio.to_thread(resolve_model_path, s.model, s.cache_dir)
        # The composition root picks the backend; the core sees only the Store protocol.
        store = await asyncio.to_thread(make_store, s)
        presets = PresetBook(s.default_preset, s.presets_file)
        engine = make_engine(s, model_path)
        self.core = NpcCore(
            engine,
            store,
            presets,
            default_max_tokens=s.default_max_tokens,
            max_message_chars=s.max_message_chars,
            # keep_alive unloads close the engine; a later request loads the same model with a fresh one.
            engine_factory=lambda: make_engine(s, model_path),
        )
        # Persona files and the presets file apply at startup and again whenever they are saved (core.watch).
        self._files = PersonaFiles(self.core, s.personas_dir, s.presets_file)
        if s.personas_dir is not None:
            if s.personas_dir.is_dir():
                n = await self._files.sync_all()
                log.info("loaded %d persona file(s) from %s", n, s.personas_dir)
            else:
                log.warning("personas folder %s does not exist; no persona files loaded", s.personas_dir)
        self._watch_task = asyncio.create_task(self._files.run(self._stop_watching))
        # Lore files the same way (core.lore).
        self.core.memory_budget = s.memory_budget
        self.core.max_memories = s.max_memories
        await asyncio.to_thread(load_stored_books, self.core)  # the API's books; a lore file's book wins
        self.core.lore_files = LoreFiles(self.core.lore, s.lore_dir, self.core.check_lore_book)
        n = await asyncio.to_thread(self.core.lore_files.sync_all)
        if n:
            log.info("loaded %d lore file(s) from %s", n, s.lore_dir)
        self._lore_task = asyncio.create_task(self.core.lore_files.run(self._stop_watching))
        # One Ops for both doors: a caller's rate limit and the metrics are the same whichever door it uses.
        ops = Ops.from_settings(s, self.core)
        self.grpc = GrpcDoor(self.core, s, ops)
        await self.grpc.start()
        if s.http_enabled:
            from npcserver.http import HttpDoor

            self.http = HttpDoor(self.core, s, ops=ops)
            await self.http.start(s.http_host, s.http_port)
        self._load_task = asyncio.create_task(self._load_model(engine))

    async def _load_model(self, engine: Engine) -> None:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(engine.start(), self.settings.ready_timeout_s)
        except BaseException as exc:
            if isinstance(exc, TimeoutError):
                log.error("the model did not load within ready_timeout_s=%s", self.settings.ready_timeout_s)
            else:
                log.exception("the model failed to load")
            self.load_error = exc
            self.ready.set()
            return
        info = engine.info
        log.info(
            "model %s ready in %.0f ms: backend %s, %d GPU layer(s), context %d tokens, chat template: %s",
            info.id,
            (time.perf_counter() - started) * 1000,
            info.backend,
            info.gpu_layers,
            info.context_size,
            "yes" if info.chat_template else "no (transcript rendering)",
        )
        if self.grpc:
            await self.grpc.set_serving(True)
        self.ready.set()

    async def wait_ready(self) -> None:
        await self.ready.wait()
        if self.load_error is not None:
            raise RuntimeError(f"model failed to load: {self.load_error!r}") from self.load_error

    async def stop(self) -> None:
        grace = self.settings.shutdown_grace_s
        doors = []
        if self.http is not None:
            doors.append(self.http.stop(grace))
        if self.grpc is not None:
            doors.append(self.grpc.stop(grace))
        await asyncio.gather(*doors, return_exceptions=True)
        if self._load_task is not None:
            self._load_task.cancel()
        if self._watch_task is not None:
            self._stop_watching.set()
            await asyncio.gather(self._watch_task, return_exceptions=True)
        if self._lore_task is not None:
            self._stop_watching.set()
            await asyncio.gather(self._lore_task, return_exceptions=True)
        if self.core is not None:
            await self.core.engine.close()
            self.core.store.close()


async def serve(settings: Settings) -> int:
    """Runs until SIGINT/SIGTERM, then shuts down gracefully. Returns the exit code."""
    server = NpcServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except Exception as exc:
        log.error("cannot start: %s", exc)
        await server.stop()
        return 1
    ready = asyncio.create_task(server.wait_ready())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if ready.done() and ready.exception() is not None:
        code = 1
    else:
        log.info(
            "npcserver ready (pid %d): gRPC %s:%d%s",
            os.getpid(),
            settings.grpc_host,
            server.grpc_port,
            f", HTTP {settings.http_host}:{server.http_port}" if server.http else "",
        )
        print(
            f"npcserver ready: grpc={settings.grpc_host}:{server.grpc_port}"
            + (
                f" http={'https' if settings.tls else 'http'}://{settings.http_host}:{server.http_port}"
                if server.http
                else ""
            ),
            flush=True,
        )
        await stopping
    log.info("shutting down")
    ready.cancel()
    stopping.cancel()
    await server.stop()
    return code
