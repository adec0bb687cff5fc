"""The gRPC door: a grpc.aio server with the API services, grpc.health.v1 and server reflection."""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from npcserver.config import Settings
from npcserver.core.app import NpcCore
from npcserver.grpc.servicers import add_services

log = logging.getLogger(__name__)

#: Big enough for a long conversation export; bounded so one request cannot eat the memory.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class GrpcDoor:
    """Owns the grpc.aio server. Health is NOT_SERVING until ``set_serving`` (the model is loaded)."""

    def __init__(self, core: NpcCore, settings: Settings) -> None:
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ]
        )
        self.services = add_services(self.server, core, settings)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection([*self.services, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server)
        self.settings = settings
        self.port = 0

    async def start(self) -> int:
        address = f"{self.settings.grpc_host}:{self.settings.grpc_port}"
        self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen on {address} (is the port in use?)")
        await self.set_serving(False)
        await self.server.start()
        log.info("gRPC door listening on %s:%d", self.settings.grpc_host, self.port)
        return self.port

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self.services]:
            await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
