"""HttpDoor: runs the HTTP/1.1 door's ASGI app on uvicorn inside the server's own asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Protocol

import uvicorn
from starlette.types import Receive, Scope, Send

from npcserver.config import Settings
from npcserver.core.app import NpcCore
from npcserver.http.app import create_http_app
from npcserver.http.calls import CallTracker
from npcserver.service.ops import Ops

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the host process owns SIGINT/SIGTERM and calls HttpDoor.stop()."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class TrackedApp(Protocol):
    """An ASGI app whose calls a CallTracker counts (HttpApp; tests pass a bare bridge)."""

    tracker: CallTracker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


class HttpDoor:
    """Owns the uvicorn server of the HTTP door. ``start`` returns the bound port (port 0 picks a free one)."""

    def __init__(
        self, core: NpcCore | None, settings: Settings, *, app: TrackedApp | None = None, ops: Ops | None = None
    ) -> None:
        self.settings = settings
        if app is None:
            if core is None:
                raise ValueError("HttpDoor needs a core, or an app to serve")
            app = create_http_app(core, settings, ops)
        self.app: TrackedApp = app
        self.port = 0
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, host: str | None = None, port: int | None = None) -> int:
        host = host if host is not None else self.settings.http_host
        port = port if port is not None else self.settings.http_port
        sock = _listen_socket(host, port)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            http="h11",
            # None keeps the host process's logging setup instead of uvicorn's dictConfig.
            log_config=None,
            access_log=False,
            # Disconnects are detected by the app itself; keep-alive connections idle out as usual.
            timeout_keep_alive=5,
            # HTTPS for gRPC-Web and REST alike when the settings name a certificate.
            ssl_certfile=str(self.settings.tls_cert_file) if self.settings.tls_cert_file else None,
            ssl_keyfile=str(self.settings.tls_key_file) if self.settings.tls_key_file else None,
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http-door")
        while not self._server.started:
            if self._task.done():
                sock.close()
                exc = self._task.exception() if not self._task.cancelled() else None
                raise OSError(f"the HTTP door could not start on {host}:{port}") from exc
            await asyncio.sleep(0.01)
        scheme = "https" if self.settings.tls else "http"
        log.info("HTTP door (gRPC-Web + OpenAI REST) listening on %s://%s:%d", scheme, host, self.port)
        return self.port

    async def stop(self, grace: float) -> None:
        """Stops accepting requests, gives in-flight calls ``grace`` seconds, then ends the rest cleanly.

        Streams still running after the grace period end with a final frame: a gRPC-Web trailer with UNAVAILABLE,
        or an SSE error event and ``data: [DONE]``.
        """
        if self._server is None or self._task is None:
            return
        tracker = self.app.tracker
        tracker.draining = True
        # uvicorn's own limit is only a backstop, for a call that ignores its cancellation.
        self._server.config.timeout_graceful_shutdown = int(grace) + 5
        self._server.should_exit = True
        if not await tracker.wait_idle(grace):
            log.info("HTTP door: ending %d call(s) still running after %.1fs", tracker.active, grace)
            tracker.shutdown.set()
            await tracker.wait_idle(5.0)
        try:
            await self._task
        except (Exception, SystemExit):
            log.exception("HTTP door stopped with an error")
        self._server = self._task = None
        log.info("HTTP door stopped")


def _listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
