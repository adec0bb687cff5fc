"""The service layer: door-agnostic operations that every door calls.

``NpcService`` (operations.py) holds the operations: admission (auth.py: API keys and player tokens into a
Caller; access.py: what each role may do), chat, Talk, personas, conversations, presets, models, health.
``streams.py`` holds the stream event types doors see and ``final_of``. The doors live in ``npcserver.grpc`` (gRPC,
and through it gRPC-Web) and ``npcserver.http`` (OpenAI REST, NPC REST); this package imports neither, nor grpc,
nor the generated protobuf code.
"""

from npcserver.service.access import Caller, Role
from npcserver.service.auth import Gate
from npcserver.service.operations import Health, NpcService
from npcserver.service.streams import Completion, ReasoningDelta, StreamEvent, TextDelta, final_of

__all__ = [
    "Caller",
    "Completion",
    "Gate",
    "Health",
    "NpcService",
    "ReasoningDelta",
    "Role",
    "StreamEvent",
    "TextDelta",
    "final_of",
]
