"""Python SDK for npcserver: chat completions, NPC dialogue (Talk), personas, presets and models over gRPC.

::

    from npcserver.client import NpcClient

    with NpcClient("127.0.0.1:50051") as npc:          # waits until the server is ready
        print(npc.chat("Hello there!").content)        # -> ChatMessage(role="assistant", content=...)
        stream = npc.stream_talk("tavern_keeper", "player-1", "What's on the menu?")
        for piece in stream:
            print(piece, end="", flush=True)
        print(stream.result().usage)

``AsyncNpcClient`` is the asyncio twin. ``NpcClient.local()`` starts a private server process and stops it on exit.
Failures raise :class:`NpcClientError` subclasses carrying the gRPC ``code`` and the server's ``message``.
A game backend mints player tokens with :func:`mint_player_token` (needs the ``tokens`` extra).
"""

from npcserver.client.aio import AsyncNpcClient
from npcserver.client.errors import (
    NpcAlreadyExists,
    NpcCancelled,
    NpcClientError,
    NpcDeadlineExceeded,
    NpcInvalidArgument,
    NpcNotFound,
    NpcQueueFull,
    NpcServerError,
    NpcServerUnavailable,
    NpcUnauthenticated,
)
from npcserver.client.local import LocalServer
from npcserver.client.options import ChatOptions, TalkOptions
from npcserver.client.streams import AsyncReplyStream, ReplyStream
from npcserver.client.sync import NpcClient
from npcserver.client.tokens import mint_player_token
from npcserver.client.types import (
    Action,
    ActionCall,
    ChatMessage,
    ChatResult,
    Conversation,
    ExampleExchange,
    Memory,
    ModelInfo,
    Persona,
    Preset,
    ResponseFormat,
    StructuredOutput,
    Summary,
    Timings,
    Turn,
    Usage,
)

__all__ = [
    "Action",
    "ActionCall",
    "AsyncNpcClient",
    "AsyncReplyStream",
    "ChatMessage",
    "ChatOptions",
    "ChatResult",
    "Conversation",
    "ExampleExchange",
    "LocalServer",
    "Memory",
    "ModelInfo",
    "NpcAlreadyExists",
    "NpcCancelled",
    "NpcClient",
    "NpcClientError",
    "NpcDeadlineExceeded",
    "NpcInvalidArgument",
    "NpcNotFound",
    "NpcQueueFull",
    "NpcServerError",
    "NpcServerUnavailable",
    "NpcUnauthenticated",
    "Persona",
    "Preset",
    "ReplyStream",
    "ResponseFormat",
    "StructuredOutput",
    "Summary",
    "TalkOptions",
    "Timings",
    "Turn",
    "Usage",
    "mint_player_token",
]
