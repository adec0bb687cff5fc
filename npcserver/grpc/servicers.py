"""The gRPC door's servicers: protobuf in, one NpcService operation, protobuf out.

Both the gRPC door and the HTTP door's gRPC-Web bridge run these exact handlers. ``unary`` and ``streaming`` hold
the door's admission (the API key or player token from the ``authorization`` metadata) and its one map from domain
errors to gRPC status codes; every operation, rule and check (roles and scopes too) lives behind NpcService.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeAlias, TypeVar

import grpc

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc
from npcserver.config import Settings
from npcserver.core.app import NpcCore
from npcserver.core.types import ActionCall
from npcserver.errors import Internal, InvalidArgument, NpcError, RateLimited
from npcserver.grpc import convert
from npcserver.service import Completion, Gate, NpcService, ReasoningDelta, TextDelta
from npcserver.service.limits import retry_after_header
from npcserver.service.ops import Ops, RequestRecord

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
#: grpc.aio.ServicerContext (grpc ships no type information, so mypy sees Any either way).
Context: TypeAlias = Any


def status_of(err: NpcError) -> grpc.StatusCode:
    """The one map from domain errors to gRPC status codes."""
    return getattr(grpc.StatusCode, err.grpc_status, grpc.StatusCode.INTERNAL)


def _metadata(context: Context, key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k.lower() == key:
            return v if isinstance(v, str) else v.decode()
    return None


class _Base:
    def __init__(self, service: NpcService) -> None:
        self.service = service

    def _admit(self, context: Context) -> None:
        self.service.admit(_metadata(context, "authorization"))


async def _abort(context: Context, exc: BaseException, method: str, record: RequestRecord) -> None:
    if not isinstance(exc, NpcError):
        log.exception("%s failed", method, exc_info=exc)
        exc = Internal("internal server error; the server log has the details")
    code = status_of(exc)
    record.status = code.name
    # A rate-limited caller learns when to come back, as HTTP's Retry-After says it (whole seconds).
    trailing = (("retry-after", retry_after_header(exc)),) if isinstance(exc, RateLimited) else ()
    await context.abort(code, exc.message, trailing_metadata=trailing)


def _scope(self: _Base, fn: Callable[..., Any], context: Context) -> contextlib.AbstractContextManager[RequestRecord]:
    """The request scope of one call: counted, timed and logged as door "grpc" (a gRPC-Web call joins the scope the
    HTTP door opened for it)."""
    return self.service.ops.request("grpc", fn.__name__, str(context.peer() or ""))


def unary(fn: Callable[[Any, Req, Context], Awaitable[Resp]]) -> Callable[[Any, Req, Context], Awaitable[Resp]]:
    """Wraps a unary handler: admission and the error map."""

    @functools.wraps(fn)
    async def handler(self: _Base, request: Req, context: Context) -> Resp:
        with _scope(self, fn, context) as record:
            try:
                self._admit(context)
                response = await fn(self, request, context)
                record.status = "OK"
                return response
            except Exception as exc:
                await _abort(context, exc, fn.__qualname__, record)
                raise AssertionError("unreachable: abort raises") from exc

    return handler


def streaming(
    fn: Callable[[Any, Req, Context], AsyncIterator[Resp]],
) -> Callable[[Any, Req, Context], AsyncIterator[Resp]]:
    """Wraps a server-streaming handler: admission and the error map. The stream is closed however it ends."""

    @functools.wraps(fn)
    async def handler(self: _Base, request: Req, context: Context) -> AsyncIterator[Resp]:
        with _scope(self, fn, context) as record:
            try:
                self._admit(context)
                async with aclosing(fn(self, request, context)) as items:  # type: ignore[type-var]
                    async for item in items:
                        yield item
                record.status = "OK"
            except Exception as exc:
                await _abort(context, exc, fn.__qualname__, record)

    return handler


class ChatServicer(_Base, pb_grpc.ChatServiceServicer):
    @unary
    async def CreateChatCompletion(self, request: pb.CreateChatCompletionRequest, context: Context) -> Any:
        return convert.completion_to_pb(await self.service.chat(convert.chat_request_from_pb(request)))

    @streaming
    async def StreamChatCompletion(self, request: pb.StreamChatCompletionRequest, context: Context) -> Any:
        chat = convert.chat_request_from_pb(request)
        model = self.service.model_id()
        async with aclosing(self.service.stream_chat(chat)) as events:  # type: ignore[type-var]
            async for event in events:
                msg = pb.StreamChatCompletionResponse(id=chat.id, model=model, created=chat.created)
                if isinstance(event, TextDelta | ReasoningDelta):
                    msg.delta.CopyFrom(convert.delta_to_pb(event))
                elif isinstance(event, ActionCall):
                    msg.action_call.CopyFrom(convert.call_to_pb(event))
                elif isinstance(event, Completion):
                    msg.final.CopyFrom(convert.final_to_pb(event))
                yield msg

    @unary
    async def BatchChatCompletions(self, request: pb.BatchChatCompletionsRequest, context: Context) -> Any:
        chats = [convert.chat_request_from_pb(c) for c in request.conversations]
        results = await self.service.batch_chat(chats)
        return pb.BatchChatCompletionsResponse(results=[convert.completion_to_pb(c) for c in results])


class ConversationServicer(_Base, pb_grpc.ConversationServiceServicer):
    @streaming
    async def Talk(self, request: pb.TalkRequest, context: Context) -> Any:
        talk = convert.talk_request_from_pb(request)
        model = self.service.model_id()
        async with aclosing(self.service.stream_talk(talk)) as events:  # type: ignore[type-var]
            async for event in events:
                yield convert.talk_event_to_pb(event, talk, model)

    @unary
    async def GetConversation(self, request: pb.GetConversationRequest, context: Context) -> Any:
        conv = await self.service.get_conversation(request.persona_id, request.conversation_id)
        return pb.GetConversationResponse(conversation=convert.conversation_to_pb(conv))

    @unary
    async def ResetConversation(self, request: pb.ResetConversationRequest, context: Context) -> Any:
        n = await self.service.reset_conversation(request.persona_id, request.conversation_id)
        return pb.ResetConversationResponse(deleted_turns=n)

    @unary
    async def ExportConversation(self, request: pb.ExportConversationRequest, context: Context) -> Any:
        conv = await self.service.get_conversation(request.persona_id, request.conversation_id)
        return pb.ExportConversationResponse(conversation=convert.conversation_to_pb(conv))

    @unary
    async def ImportConversation(self, request: pb.ImportConversationRequest, context: Context) -> Any:
        n = await self.service.import_conversation(convert.conversation_from_pb(request.conversation))
        return pb.ImportConversationResponse(imported_turns=n)


class PersonaServicer(_Base, pb_grpc.PersonaServiceServicer):
    @unary
    async def CreatePersona(self, request: pb.CreatePersonaRequest, context: Context) -> Any:
        persona = await self.service.create_persona(convert.persona_from_pb(request.persona))
        return pb.CreatePersonaResponse(persona=convert.persona_to_pb(persona))

    @unary
    async def GetPersona(self, request: pb.GetPersonaRequest, context: Context) -> Any:
        persona = await self.service.get_persona(request.persona_id)
        return pb.GetPersonaResponse(persona=convert.persona_to_pb(persona))

    @unary
    async def ListPersonas(self, request: pb.ListPersonasRequest, context: Context) -> Any:
        personas, token = await self.service.list_personas(request.page_size, request.page_token)
        return convert.persona_page_to_pb(personas, token)

    @unary
    async def UpdatePersona(self, request: pb.UpdatePersonaRequest, context: Context) -> Any:
        persona = await self.service.update_persona(
            convert.persona_from_pb(request.persona), allow_missing=request.allow_missing
        )
        return pb.UpdatePersonaResponse(persona=convert.persona_to_pb(persona))

    @unary
    async def DeletePersona(self, request: pb.DeletePersonaRequest, context: Context) -> Any:
        return pb.DeletePersonaResponse(deleted_conversations=await self.service.delete_persona(request.persona_id))

    @unary
    async def ImportCharacterCard(self, request: pb.ImportCharacterCardRequest, context: Context) -> Any:
        persona = await self.service.import_character_card(
            request.card, persona_id=request.persona_id, replace=request.replace
        )
        return pb.ImportCharacterCardResponse(persona=convert.persona_to_pb(persona))

    @unary
    async def ExportCharacterCard(self, request: pb.ExportCharacterCardRequest, context: Context) -> Any:
        card, media_type = await self.service.export_character_card(request.persona_id, request.format or "png")
        return pb.ExportCharacterCardResponse(card=card, media_type=media_type)


class DesignerServicer(_Base, pb_grpc.DesignerServiceServicer):
    @unary
    async def RenderPrompt(self, request: pb.RenderPromptRequest, context: Context) -> Any:
        which = request.WhichOneof("request")
        if which == "talk":
            fields = convert.persona_fields_from_pb(request.persona, "render") if request.HasField("persona") else {}
            inspected = await self.service.render_prompt(convert.talk_request_from_pb(request.talk), fields)
        elif which == "chat":
            inspected = await self.service.render_prompt(convert.chat_request_from_pb(request.chat))
        else:
            raise InvalidArgument("RenderPrompt needs a request to inspect: set talk or chat", param="request")
        return convert.inspection_to_pb(inspected)

    @unary
    async def Compare(self, request: pb.CompareRequest, context: Context) -> Any:
        talk, variants = convert.compare_request_from_pb(request)
        return convert.comparison_to_pb(await self.service.compare(talk, variants))


class KnowledgeServicer(_Base, pb_grpc.KnowledgeServiceServicer):
    @unary
    async def ListLoreBooks(self, request: pb.ListLoreBooksRequest, context: Context) -> Any:
        books = await self.service.list_lore_books()
        return pb.ListLoreBooksResponse(books=[convert.lore_book_to_pb(b) for b in books])

    @unary
    async def GetLoreBook(self, request: pb.GetLoreBookRequest, context: Context) -> Any:
        return pb.GetLoreBookResponse(book=convert.lore_book_to_pb(await self.service.get_lore_book(request.book_id)))

    @unary
    async def PutLoreBook(self, request: pb.PutLoreBookRequest, context: Context) -> Any:
        book = await self.service.put_lore_book(
            convert.lore_book_from_pb(request.book), allow_existing=request.allow_existing
        )
        return pb.PutLoreBookResponse(book=convert.lore_book_to_pb(book))

    @unary
    async def DeleteLoreBook(self, request: pb.DeleteLoreBookRequest, context: Context) -> Any:
        await self.service.delete_lore_book(request.book_id)
        return pb.DeleteLoreBookResponse()

    @unary
    async def AddMemory(self, request: pb.AddMemoryRequest, context: Context) -> Any:
        memory = await self.service.add_memory(
            request.persona_id, request.conversation_id, convert.memory_from_pb(request.memory)
        )
        return pb.AddMemoryResponse(memory=convert.memory_to_pb(memory))

    @unary
    async def ListMemories(self, request: pb.ListMemoriesRequest, context: Context) -> Any:
        memories, token = await self.service.list_memories(
            request.persona_id, request.conversation_id, request.page_size, request.page_token
        )
        return pb.ListMemoriesResponse(memories=[convert.memory_to_pb(m) for m in memories], next_page_token=token)

    @unary
    async def DeleteMemory(self, request: pb.DeleteMemoryRequest, context: Context) -> Any:
        await self.service.delete_memory(request.persona_id, request.conversation_id, request.memory_id)
        return pb.DeleteMemoryResponse()

    @unary
    async def GetSummary(self, request: pb.GetSummaryRequest, context: Context) -> Any:
        summary = await self.service.get_summary(request.persona_id, request.conversation_id)
        return pb.GetSummaryResponse(summary=convert.summary_to_pb(summary))

    @unary
    async def SetSummary(self, request: pb.SetSummaryRequest, context: Context) -> Any:
        summary = await self.service.set_summary(
            request.persona_id, request.conversation_id, convert.summary_from_pb(request.summary)
        )
        return pb.SetSummaryResponse(summary=convert.summary_to_pb(summary))


class PresetServicer(_Base, pb_grpc.PresetServiceServicer):
    @unary
    async def ListPresets(self, request: pb.ListPresetsRequest, context: Context) -> Any:
        return convert.presets_to_pb(self.service.list_presets(), self.service.default_preset)


class ModelServicer(_Base, pb_grpc.ModelServiceServicer):
    @unary
    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> Any:
        return pb.ListModelsResponse(models=[convert.model_to_pb(m) for m in self.service.list_models()])


#: Full names of the API services, for health checking and reflection.
SERVICE_NAMES = [s.full_name for s in pb.DESCRIPTOR.services_by_name.values()]


def add_services(
    server: Any, core: NpcCore, settings: Settings, gate: Gate | None = None, ops: Ops | None = None
) -> list[str]:
    """Registers every API servicer on ``server`` (a grpc.aio server, or the gRPC-Web bridge's collector).

    ``gate`` admits callers (default: the one ``settings`` describe); a door passes its own to share it. ``ops``:
    the server's rate limits, metrics and request log (default: the door's own).
    """
    service = NpcService(core, gate if gate is not None else Gate.from_settings(settings), ops)
    pb_grpc.add_ChatServiceServicer_to_server(ChatServicer(service), server)
    pb_grpc.add_ConversationServiceServicer_to_server(ConversationServicer(service), server)
    pb_grpc.add_PersonaServiceServicer_to_server(PersonaServicer(service), server)
    if settings.designer_endpoints:
        pb_grpc.add_DesignerServiceServicer_to_server(DesignerServicer(service), server)
    pb_grpc.add_PresetServiceServicer_to_server(PresetServicer(service), server)
    pb_grpc.add_KnowledgeServiceServicer_to_server(KnowledgeServicer(service), server)
    pb_grpc.add_ModelServiceServicer_to_server(ModelServicer(service), server)
    return list(SERVICE_NAMES)
