"""The service layer shared by every door."""

from __future__ import annotations

from typing import Any

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc
from npcserver.config import Settings
from npcserver.core.app import NpcCore
from npcserver.service.servicers import (
    ChatServicer,
    ConversationServicer,
    ModelServicer,
    PersonaServicer,
    PresetServicer,
)

#: Full names of the API services, for health checking and reflection.
SERVICE_NAMES = [s.full_name for s in pb.DESCRIPTOR.services_by_name.values()]


def add_services(server: Any, core: NpcCore, settings: Settings) -> list[str]:
    """Registers every API servicer on ``server`` (a grpc.aio server, or the gRPC-Web bridge's collector)."""
    api_key = settings.api_key_value
    pb_grpc.add_ChatServiceServicer_to_server(ChatServicer(core, api_key), server)
    pb_grpc.add_ConversationServiceServicer_to_server(ConversationServicer(core, api_key), server)
    pb_grpc.add_PersonaServiceServicer_to_server(PersonaServicer(core, api_key), server)
    pb_grpc.add_PresetServiceServicer_to_server(PresetServicer(core, api_key), server)
    pb_grpc.add_ModelServiceServicer_to_server(ModelServicer(core, api_key), server)
    return list(SERVICE_NAMES)
