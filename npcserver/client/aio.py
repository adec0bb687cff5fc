"""The asyncio client, :class:`AsyncNpcClient`.

The blocking client in ``sync.py`` is generated from this module by ``tools/gen_sync_client.py`` (unasync), so the
two keep one API: edit this module, then run the tool.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Unpack

import grpc
from grpc_health.v1 import health_pb2

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.client import _io_async as backend
from npcserver.client._common import (
    DEFAULT_TARGET,
    PROBE_TIMEOUT_S,
    ReadinessProbe,
    Stubs,
    auth_metadata,
)
from npcserver.client.errors import NpcClientError, from_rpc_error
from npcserver.client.local import LocalServer
from npcserver.client.options import (
    ChatOptions,
    TalkOptions,
    chat_request,
    conversation_metadata,
    stream_chat_request,
    talk_request,
)
from npcserver.client.streams import AsyncReplyStream
from npcserver.client.types import (
    ChatMessage,
    ChatResult,
    Conversation,
    Memory,
    MessageLike,
    ModelInfo,
    Persona,
    Preset,
    Summary,
    history_messages,
    to_message,
)

#: How many times ``talk`` sends a line before it gives up (the first try included).
TALK_ATTEMPTS = 3
#: Failures after which sending the same line again is safe: its request id makes the server replay a stored turn.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})


class AsyncNpcClient:
    """An asyncio npcserver client over gRPC.

    Use it as a context manager: entering connects and waits until the server reports SERVING (up to
    ``ready_timeout`` seconds), or raises :class:`~npcserver.client.errors.NpcServerUnavailable`::

        async with AsyncNpcClient("127.0.0.1:50051") as npc:
            reply = await npc.chat("Hello!")
            print(reply.content)
            stream = npc.stream_talk("tavern_keeper", "player-1", "What's on the menu?")
            async for piece in stream:
                print(piece, end="", flush=True)
            result = await stream.result()
            print(result.usage)

    ``AsyncNpcClient.local()`` starts a private server process instead and stops it on exit.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        api_key: str | None = None,
        timeout: float | None = None,
        ready_timeout: float = 30.0,
        local_server: LocalServer | None = None,
    ) -> None:
        """``timeout`` is the default deadline in seconds of each call (None: no deadline); ``api_key`` is sent as
        ``authorization: Bearer <key>``; ``local_server`` is started on :meth:`connect` (``target`` then becomes
        the address it reports) and stopped on :meth:`close`.
        """
        self.target = target
        self.timeout = timeout
        self.ready_timeout = ready_timeout
        self._metadata = auth_metadata(api_key)
        self._server = local_server
        self._channel: Any = None
        self._stubs_: Stubs | None = None

    @classmethod
    def local(
        cls,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        api_key: str | None = None,
        timeout: float | None = None,
        ready_timeout: float = 180.0,
    ) -> AsyncNpcClient:
        """A client that owns a private ``python -m npcserver serve`` on a free loopback port (HTTP door off).

        ``env`` adds NPCSERVER_* settings for the server; ``ready_timeout`` covers its model load.
        """
        server = LocalServer(data_dir=data_dir, env=env, args=args)
        return cls(api_key=api_key, timeout=timeout, ready_timeout=ready_timeout, local_server=server)

    @property
    def _stubs(self) -> Stubs:
        # Made on first use: the asyncio flavour's channel must be created inside the running event loop.
        if self._stubs_ is None:
            if self._server is not None:
                self.target = self._server.target  # raises a clear error if the server was never started
            self._channel = backend.open_channel(self.target)
            self._stubs_ = Stubs(self._channel)
        return self._stubs_

    # -- lifecycle ----------------------------------------------------------------------------------------------

    @property
    def local_server(self) -> LocalServer | None:
        """The server process this client started, if any."""
        return self._server

    async def connect(self) -> AsyncNpcClient:
        """Starts the local server (if any) and waits until the server is ready. Returns self."""
        try:
            if self._server is not None:
                # Returns once the server printed its ready line (model loaded, ports bound) or raises.
                await backend.run_blocking(self._server.start, self.ready_timeout)
                self.target = self._server.target
            await self.wait_ready(self.ready_timeout)
        except BaseException:
            await self.close()
            raise
        return self

    async def wait_ready(self, max_wait: float | None = None) -> None:
        """Waits until grpc.health.v1 reports SERVING; raises NpcServerUnavailable after ``max_wait`` seconds
        (default: ``ready_timeout``)."""
        max_wait = self.ready_timeout if max_wait is None else max_wait
        probe = ReadinessProbe(self.target, max_wait)
        deadline = time.monotonic() + max_wait
        pause = 0.05
        while True:
            if self._server is not None:
                self._server.check_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise probe.timed_out()
            try:
                resp = await self._stubs.health.Check(
                    health_pb2.HealthCheckRequest(service=""),
                    timeout=min(remaining, PROBE_TIMEOUT_S),
                    metadata=self._metadata,
                )
                if probe.serving(resp):
                    return
            except grpc.RpcError as err:
                probe.failed(err)
            await backend.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 2, 0.5)

    async def close(self) -> None:
        """Closes the channel and stops the local server, if this client started one."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._stubs_ = None
        if self._server is not None:
            await backend.run_blocking(self._server.stop)

    async def __aenter__(self) -> AsyncNpcClient:
        return await self.connect()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _call(self, method: Callable[..., Any], request: Any, call_timeout: float | None = None) -> Any:
        try:
            return await method(
                request, timeout=call_timeout if call_timeout is not None else self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err, self.target) from None

    def _stream(
        self, method: Callable[..., Any], request: Any, call_timeout: float | None, metadata: tuple[Any, ...] = ()
    ) -> AsyncReplyStream:
        # A streaming call does not fail here; errors surface on iteration, where the stream maps them.
        call = method(
            request,
            timeout=call_timeout if call_timeout is not None else self.timeout,
            metadata=(*self._metadata, *metadata),
        )
        return AsyncReplyStream(call, self.target)

    # -- chat completions ---------------------------------------------------------------------------------------

    async def chat(
        self, message: str, history: Sequence[MessageLike] | None = None, **options: Unpack[ChatOptions]
    ) -> ChatMessage:
        """Sends ``message`` as the user after ``history`` and returns the assistant's reply."""
        result = await self.chat_completion(history_messages(message, history), **options)
        return result.message

    async def chat_completion(self, messages: Sequence[MessageLike], **options: Unpack[ChatOptions]) -> ChatResult:
        """A whole chat completion over ``messages``, with usage, timings and structured output."""
        req = chat_request([to_message(m) for m in messages], options)
        resp: pb.CreateChatCompletionResponse = await self._call(
            self._stubs.chat.CreateChatCompletion, req, options.get("timeout")
        )
        return ChatResult.from_response(resp)

    def stream_chat(
        self, message: str, history: Sequence[MessageLike] | None = None, **options: Unpack[ChatOptions]
    ) -> AsyncReplyStream:
        """Like :meth:`chat`, but yields the reply's text pieces as they are sampled."""
        return self.stream_chat_completion(history_messages(message, history), **options)

    def stream_chat_completion(
        self, messages: Sequence[MessageLike], **options: Unpack[ChatOptions]
    ) -> AsyncReplyStream:
        """Streams a chat completion; ``await stream.result()`` gives finish reason, usage and timings."""
        req = stream_chat_request([to_message(m) for m in messages], options)
        return self._stream(self._stubs.chat.StreamChatCompletion, req, options.get("timeout"))

    async def batch_chat(
        self, conversations: Sequence[str | Sequence[MessageLike]], **options: Unpack[ChatOptions]
    ) -> list[ChatResult]:
        """Several conversations in one call (vLLM's ``LLM.chat``): one result per conversation, in order, decoded
        together by the server's batching engine. A conversation is a list of messages, or a string: one user
        message. ``options`` apply to every conversation (1 to 64 of them)."""
        req = pb.BatchChatCompletionsRequest(
            conversations=[
                chat_request(
                    history_messages(conv, None) if isinstance(conv, str) else [to_message(m) for m in conv], options
                )
                for conv in conversations
            ]
        )
        resp: pb.BatchChatCompletionsResponse = await self._call(
            self._stubs.chat.BatchChatCompletions, req, options.get("timeout")
        )
        return [ChatResult.from_response(r) for r in resp.results]

    # -- NPC dialogue ------------------------------------------------------------------------------------------

    async def talk(self, npc: str, conversation: str, text: str, **overrides: Unpack[TalkOptions]) -> ChatResult:
        """The player says ``text`` to persona ``npc`` in ``conversation``; returns the NPC's whole reply.

        The server stores the turn once the reply completes. A broken connection or an ABORTED race is retried
        (``TALK_ATTEMPTS`` in all) with the same request id, so a line already answered returns its stored reply
        (``result.replayed``), never a second turn.
        """
        options = TalkOptions(**overrides)
        options["request_id"] = overrides.get("request_id") or talk_request(npc, conversation, text, {}).request_id
        for attempt in range(TALK_ATTEMPTS):
            try:
                # Leaving the with block early (task cancelled, Ctrl-C) cancels the stream: the server stops.
                async with self.stream_talk(npc, conversation, text, **options) as stream:
                    return await stream.result()
            except NpcClientError as err:
                if err.code not in RETRYABLE or attempt == TALK_ATTEMPTS - 1:
                    raise
                await backend.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def stream_talk(self, npc: str, conversation: str, text: str, **overrides: Unpack[TalkOptions]) -> AsyncReplyStream:
        """Like :meth:`talk`, but yields the reply's text pieces as they are sampled. Cancelling stores nothing."""
        req = talk_request(npc, conversation, text, overrides)
        return self._stream(
            self._stubs.conversations.Talk, req, overrides.get("timeout"), conversation_metadata(npc, conversation)
        )

    async def send_action_results(
        self, npc: str, conversation: str, results: Mapping[str, str], **overrides: Unpack[TalkOptions]
    ) -> ChatResult:
        """Sends the results of the actions the NPC's last reply awaited (its finish_reason was "action"), by call
        id; returns what the NPC says about them."""
        options = TalkOptions(**overrides)
        options["action_results"] = results
        return await self.talk(npc, conversation, "", **options)

    async def history(self, npc: str, conversation: str) -> Conversation:
        """The stored turns of a conversation, oldest first (none when it has none)."""
        resp: pb.GetConversationResponse = await self._call(
            self._stubs.conversations.GetConversation,
            pb.GetConversationRequest(persona_id=npc, conversation_id=conversation),
        )
        return Conversation.from_pb(resp.conversation)

    async def reset(self, npc: str, conversation: str) -> int:
        """Forgets a conversation; returns how many turns were deleted."""
        resp: pb.ResetConversationResponse = await self._call(
            self._stubs.conversations.ResetConversation,
            pb.ResetConversationRequest(persona_id=npc, conversation_id=conversation),
        )
        return resp.deleted_turns

    async def export_conversation(self, npc: str, conversation: str) -> Conversation:
        """The whole conversation, for a save file (see ``Conversation.to_bytes`` / ``to_json``)."""
        resp: pb.ExportConversationResponse = await self._call(
            self._stubs.conversations.ExportConversation,
            pb.ExportConversationRequest(persona_id=npc, conversation_id=conversation),
        )
        return Conversation.from_pb(resp.conversation)

    async def import_conversation(self, conversation: Conversation | bytes) -> int:
        """Restores an exported conversation, replacing what the server held; returns the turns imported."""
        conv = Conversation.from_bytes(conversation) if isinstance(conversation, bytes) else conversation
        resp: pb.ImportConversationResponse = await self._call(
            self._stubs.conversations.ImportConversation, pb.ImportConversationRequest(conversation=conv.to_pb())
        )
        return resp.imported_turns

    # -- memories and the summary -------------------------------------------------------------------------------

    async def add_memory(
        self, npc: str, conversation: str, text: str, *, importance: int = 5, source: str = "game"
    ) -> Memory:
        """Records a fact the NPC remembers in this conversation ("the player returned the ring"); recalled into
        the prompt when a line makes it relevant. Past the server's max_memories: NpcQueueFull (RESOURCE_EXHAUSTED)."""
        resp: pb.AddMemoryResponse = await self._call(
            self._stubs.knowledge.AddMemory,
            pb.AddMemoryRequest(
                persona_id=npc,
                conversation_id=conversation,
                memory=pb.Memory(text=text, importance=importance, source=source),
            ),
        )
        return Memory.from_pb(resp.memory)

    async def list_memories(self, npc: str, conversation: str) -> list[Memory]:
        """Every memory of a conversation, oldest first."""
        out: list[Memory] = []
        token = ""
        while True:
            resp: pb.ListMemoriesResponse = await self._call(
                self._stubs.knowledge.ListMemories,
                pb.ListMemoriesRequest(persona_id=npc, conversation_id=conversation, page_size=1000, page_token=token),
            )
            out.extend(Memory.from_pb(m) for m in resp.memories)
            token = resp.next_page_token
            if not token:
                return out

    async def delete_memory(self, npc: str, conversation: str, memory_id: int) -> None:
        """Forgets one memory (NpcNotFound when there is no such memory)."""
        await self._call(
            self._stubs.knowledge.DeleteMemory,
            pb.DeleteMemoryRequest(persona_id=npc, conversation_id=conversation, memory_id=memory_id),
        )

    async def get_summary(self, npc: str, conversation: str) -> Summary:
        """The rolling summary of the turns that no longer fit in the prompt (text "" when there is none yet)."""
        resp: pb.GetSummaryResponse = await self._call(
            self._stubs.knowledge.GetSummary, pb.GetSummaryRequest(persona_id=npc, conversation_id=conversation)
        )
        return Summary.from_pb(resp.summary)

    async def set_summary(self, npc: str, conversation: str, text: str) -> Summary:
        """Replaces the rolling summary with the game's own text ("" removes it)."""
        resp: pb.SetSummaryResponse = await self._call(
            self._stubs.knowledge.SetSummary,
            pb.SetSummaryRequest(
                persona_id=npc, conversation_id=conversation, summary=pb.ConversationSummary(text=text)
            ),
        )
        return Summary.from_pb(resp.summary)

    # -- personas ----------------------------------------------------------------------------------------------

    async def create_persona(self, persona: Persona) -> Persona:
        """Creates a persona; raises NpcAlreadyExists when its id is taken."""
        resp: pb.CreatePersonaResponse = await self._call(
            self._stubs.personas.CreatePersona, pb.CreatePersonaRequest(persona=persona.to_pb())
        )
        return Persona.from_pb(resp.persona)

    async def get_persona(self, persona_id: str) -> Persona:
        """One persona; raises NpcNotFound when it does not exist."""
        resp: pb.GetPersonaResponse = await self._call(
            self._stubs.personas.GetPersona, pb.GetPersonaRequest(persona_id=persona_id)
        )
        return Persona.from_pb(resp.persona)

    async def list_personas(self, page_size: int = 0) -> list[Persona]:
        """Every persona, ordered by id (pages are followed for you; ``page_size`` sets their size)."""
        personas: list[Persona] = []
        token = ""
        while True:
            resp: pb.ListPersonasResponse = await self._call(
                self._stubs.personas.ListPersonas, pb.ListPersonasRequest(page_size=page_size, page_token=token)
            )
            personas.extend(Persona.from_pb(p) for p in resp.personas)
            token = resp.next_page_token
            if not token:
                return personas

    async def update_persona(self, persona: Persona, *, allow_missing: bool = False) -> Persona:
        """Replaces a persona; with ``allow_missing`` creates it when absent (else NpcNotFound)."""
        resp: pb.UpdatePersonaResponse = await self._call(
            self._stubs.personas.UpdatePersona,
            pb.UpdatePersonaRequest(persona=persona.to_pb(), allow_missing=allow_missing),
        )
        return Persona.from_pb(resp.persona)

    async def delete_persona(self, persona_id: str) -> int:
        """Deletes a persona and its conversations; returns how many conversations went with it."""
        resp: pb.DeletePersonaResponse = await self._call(
            self._stubs.personas.DeletePersona, pb.DeletePersonaRequest(persona_id=persona_id)
        )
        return resp.deleted_conversations

    # -- presets and models ------------------------------------------------------------------------------------

    async def list_presets(self) -> list[Preset]:
        """The server's sampling presets, ordered by name; ``is_default`` marks the server default."""
        resp: pb.ListPresetsResponse = await self._call(self._stubs.presets.ListPresets, pb.ListPresetsRequest())
        return [Preset.from_pb(p, default=resp.default_preset) for p in resp.presets]

    async def list_models(self) -> list[ModelInfo]:
        """The models the server has loaded."""
        resp: pb.ListModelsResponse = await self._call(self._stubs.models.ListModels, pb.ListModelsRequest())
        return [ModelInfo.from_pb(m) for m in resp.models]

    # -- the designer's workbench (needs a designer key) -------------------------------------------------------

    async def render_prompt(
        self, npc: str, conversation: str, text: str, **overrides: Unpack[TalkOptions]
    ) -> pb.RenderPromptResponse:
        """The prompt inspector: what ``talk`` with these arguments would send the model (the text, its sections
        with their tokens, the turns left out, the grammar, the sampling parameters and where each came from).
        Nothing is generated or stored."""
        req = pb.RenderPromptRequest(talk=talk_request(npc, conversation, text, overrides))
        resp: pb.RenderPromptResponse = await self._call(
            self._stubs.designer.RenderPrompt, req, overrides.get("timeout")
        )
        return resp

    async def compare(
        self,
        npc: str,
        conversation: str,
        text: str,
        variants: Sequence[pb.CompareVariant],
        *,
        player_name: str = "",
        deadline: float | None = None,
    ) -> pb.CompareResponse:
        """One line through 2 to 4 variants (preset, sampling, persona fields) in one engine batch, against the
        conversation's history, which stays unchanged. To keep a variant: ``update_persona`` with
        ``Persona.from_pb(result.persona)``. ``deadline``: seconds for the call (default: the client's timeout)."""
        req = pb.CompareRequest(
            persona_id=npc, conversation_id=conversation, text=text, player_name=player_name, variants=variants
        )
        resp: pb.CompareResponse = await self._call(self._stubs.designer.Compare, req, deadline)
        return resp
