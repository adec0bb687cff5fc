"""Pieces shared by the sync and async clients: channel options, call metadata, readiness decisions."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from npcserver.api.v1 import npcserver_pb2_grpc
from npcserver.client.errors import NpcClientError, NpcServerUnavailable, NpcUnauthenticated, from_rpc_error

DEFAULT_TARGET = "127.0.0.1:50051"

#: Short reconnect backoff: while we wait for a server that is still starting, grpc's default backoff (1 s growing
#: to 120 s) would leave us waiting long after the server came up.
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Replies are small, but an exported conversation can be long.
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]

#: How long one health probe may take before we count it as "no answer" and try again.
PROBE_TIMEOUT_S = 2.0


class Stubs:
    """The generated stubs over one channel (a grpc.Channel or a grpc.aio.Channel: the stubs work with both)."""

    def __init__(self, channel: Any) -> None:
        # The generated grpc module has no type hints, so it is used through Any here and only here.
        rpc: Any = npcserver_pb2_grpc
        self.chat: Any = rpc.ChatServiceStub(channel)
        self.personas: Any = rpc.PersonaServiceStub(channel)
        self.conversations: Any = rpc.ConversationServiceStub(channel)
        self.presets: Any = rpc.PresetServiceStub(channel)
        self.models: Any = rpc.ModelServiceStub(channel)
        self.designer: Any = rpc.DesignerServiceStub(channel)
        self.knowledge: Any = rpc.KnowledgeServiceStub(channel)
        self.health: Any = health_pb2_grpc.HealthStub(channel)


def auth_metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata sent with every call: ``authorization: Bearer <key>`` when a key is set."""
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


class ReadinessProbe:
    """Interprets health-check outcomes while waiting for a server; remembers the last reason for the error."""

    def __init__(self, target: str, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self.last_reason = "no answer"

    def serving(self, resp: health_pb2.HealthCheckResponse) -> bool:
        if resp.status == health_pb2.HealthCheckResponse.SERVING:
            return True
        self.last_reason = (
            "the server answers but is not ready yet (health "
            f"{health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}: the model is probably still loading)"
        )
        return False

    def failed(self, err: grpc.RpcError) -> None:
        """Records a failed probe; raises at once for failures that waiting cannot fix."""
        mapped: NpcClientError = from_rpc_error(err)
        if isinstance(mapped, NpcUnauthenticated):
            raise mapped
        if mapped.code == grpc.StatusCode.UNIMPLEMENTED:
            raise NpcServerUnavailable(
                f"the server at {self.target} does not implement grpc.health.v1: is it an npcserver?", mapped.code
            )
        self.last_reason = str(mapped)

    def timed_out(self) -> NpcServerUnavailable:
        return NpcServerUnavailable(
            f"no ready npcserver at {self.target} within {self.timeout:g} s: {self.last_reason}. "
            "Start one with `npcserver serve` (or pass a different target).",
            grpc.StatusCode.UNAVAILABLE,
        )
