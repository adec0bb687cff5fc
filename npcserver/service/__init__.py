"""The service layer: door-agnostic operations that every door calls.

``NpcService`` (operations.py) holds the operations: admission, chat, Talk, personas, conversations, presets,
models, health. ``streams.py`` holds the stream event types doors see and ``final_of``. The doors live in
``npcserver.grpc`` (gRPC, and through it gRPC-Web) and ``npcserver.http`` (OpenAI REST, NPC REST); this package
imports neither, nor grpc, nor the generated protobuf code.
"""

from npcserver.service.auth import check_api_key
from npcserver.service.operations import Health, NpcService
from npcserver.service.streams import Completion, StreamEvent, TextDelta, final_of

__all__ = ["Completion", "Health", "NpcService", "StreamEvent", "TextDelta", "check_api_key", "final_of"]
