"""The gRPC door: a grpc.aio server with the API services, grpc.health.v1 and server reflection, optionally TLS.

What an unauthenticated caller may learn on a server with credentials: the health status (SERVING or NOT_SERVING)
and nothing else; reflection needs a credential like the API does (``_ReflectionNeedsCredential``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from npcserver.config import Settings
from npcserver.core.app import NpcCore
from npcserver.errors import NpcError
from npcserver.grpc.decoding import DecodeErrorsAreInvalidArgument
from npcserver.grpc.servicers import add_services, status_of
from npcserver.service import Gate
from npcserver.service.ops import Ops

log = logging.getLogger(__name__)

#: Big enough for a long conversation export; bounded so one request cannot eat the memory.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class _ReflectionNeedsCredential(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses reflection calls without a valid credential; every other call passes through (the API services
    admit their callers themselves, and health stays public)."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if not details.method.startswith(f"/{reflection.SERVICE_NAME}/"):
            return await continuation(details)
        authorization = next((v for k, v in details.invocation_metadata or () if k.lower() == "authorization"), None)
        try:
            self.gate.authenticate(authorization if isinstance(authorization, str) else None)
        except NpcError as exc:
            refusal = exc

            async def refuse(requests: Any, context: Any) -> None:
                await context.abort(status_of(refusal), refusal.message)

            return grpc.stream_stream_rpc_method_handler(refuse)
        return await continuation(details)


class GrpcDoor:
    """Owns the grpc.aio server. Health is NOT_SERVING until ``set_serving`` (the model is loaded), and again while
    the core's watchdog says the event loop or the engine is stuck."""

    def __init__(self, core: NpcCore, settings: Settings, ops: Ops | None = None) -> None:
        gate = Gate.from_settings(settings)
        self.server = grpc.aio.server(
            interceptors=[_ReflectionNeedsCredential(gate), DecodeErrorsAreInvalidArgument()],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.services = add_services(self.server, core, settings, gate, ops=ops)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection([*self.services, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server)
        self.settings = settings
        self.port = 0
        self.core = core
        self._loaded = False
        self._serving: bool | None = None
        self._follow: asyncio.Task[None] | None = None

    async def start(self) -> int:
        address = f"{self.settings.grpc_host}:{self.settings.grpc_port}"
        if self.settings.tls_cert_file is not None and self.settings.tls_key_file is not None:
            try:
                pair = (self.settings.tls_key_file.read_bytes(), self.settings.tls_cert_file.read_bytes())
            except OSError as exc:
                raise OSError(f"cannot read the TLS certificate or key: {exc}") from exc
            self.port = self.server.add_secure_port(address, grpc.ssl_server_credentials([pair]))
        else:
            self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {address} (is the port in use?)")
        await self.set_serving(False)
        await self.server.start()
        self.core.watchdog.start()
        self._follow = asyncio.create_task(self._follow_watchdog(), name="grpc-health")
        tls = " (TLS)" if self.settings.tls else ""
        log.info("gRPC door listening on %s:%d%s", self.settings.grpc_host, self.port, tls)
        return self.port

    async def set_serving(self, serving: bool) -> None:
        """Whether the model is loaded; health says SERVING when it is and the watchdog names no problem."""
        self._loaded = serving
        await self._apply()

    async def _apply(self) -> None:
        serving = self._loaded and self.core.watchdog.problem() is None
        if serving == self._serving:
            return
        self._serving = serving
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self.services]:
            await self.health.set(name, status)

    async def _follow_watchdog(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            await self._apply()

    async def stop(self, grace: float) -> None:
        if self._follow is not None:
            self._follow.cancel()
        await self.core.watchdog.stop()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
