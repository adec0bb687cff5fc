"""The service layer: grpc.aio servicers that convert protobuf to domain calls on NpcCore and back.

Both doors run these exact handlers: the gRPC door natively, the HTTP door through its gRPC-Web bridge. The
``rpc`` decorators hold the one map from domain errors to gRPC status codes, and the API-key check.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc
from npcserver.config import Settings
from npcserver.core.app import NpcCore
from npcserver.core.types import Completion
from npcserver.engine.base import TextDelta
from npcserver.errors import Internal, NotReady, NpcError
from npcserver.grpc import convert
from npcserver.service.auth import check_api_key

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")


def status_of(err: NpcError) -> grpc.StatusCode:
    """The one map from domain errors to gRPC status codes."""
    return getattr(grpc.StatusCode, err.grpc_status, grpc.StatusCode.INTERNAL)


def _metadata(context: grpc.aio.ServicerContext[Any, Any], key: str) -> str | None:
    for k, v in context.invocation_metadata() or ():
        if k.lower() == key:
            return v if isinstance(v, str) else v.decode()
    return None


class _Base:
    def __init__(self, core: NpcCore, api_key: str | None) -> None:
        self.core = core
        self.api_key = api_key

    def _admit(self, context: grpc.aio.ServicerContext[Any, Any], needs_model: bool) -> None:
        check_api_key(_metadata(context, "authorization"), self.api_key)
        if needs_model and not self.core.engine.ready:
            raise NotReady("the model is still loading; retry shortly (health check reports SERVING when ready)")


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, method: str) -> None:
    if not isinstance(exc, NpcError):
        log.exception("%s failed", method, exc_info=exc)
        exc = Internal("internal server error; the server log has the details")
    await context.abort(status_of(exc), exc.message)


def unary(needs_model: bool = False) -> Callable[..., Any]:
    """Wraps a unary handler: API key, readiness, and the error map."""

    def wrap(fn: Callable[[Any, Req, Any], Awaitable[Resp]]) -> Callable[[Any, Req, Any], Awaitable[Resp]]:
        @functools.wraps(fn)
        async def handler(self: _Base, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
            try:
                self._admit(context, needs_model)
                return await fn(self, request, context)
            except Exception as exc:
                await _abort(context, exc, fn.__qualname__)
                raise AssertionError("unreachable: abort raises") from exc

        return handler

    return wrap


def streaming(needs_model: bool = False) -> Callable[..., Any]:
    """Wraps a server-streaming handler: API key, readiness, and the error map."""

    def wrap(fn: Callable[[Any, Req, Any], AsyncIterator[Resp]]) -> Callable[[Any, Req, Any], AsyncIterator[Resp]]:
        @functools.wraps(fn)
        async def handler(
            self: _Base, request: Req, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Resp]:
            try:
                self._admit(context, needs_model)
                async for item in fn(self, request, context):
                    yield item
            except Exception as exc:
                await _abort(context, exc, fn.__qualname__)

        return handler

    return wrap


class ChatServicer(_Base, pb_grpc.ChatServiceServicer):
    @unary(needs_model=True)
    async def CreateChatCompletion(self, request: pb.CreateChatCompletionRequest, context: Any) -> Any:
        return convert.completion_to_pb(await self.core.chat(convert.chat_request_from_pb(request)))

    @streaming(needs_model=True)
    async def StreamChatCompletion(self, request: pb.StreamChatCompletionRequest, context: Any) -> Any:
        chat = convert.chat_request_from_pb(request)
        model = self.core.engine.info.id
        async for event in self.core.stream_chat(chat):
            msg = pb.StreamChatCompletionResponse(id=chat.id, model=model, created=chat.created)
            if isinstance(event, TextDelta):
                msg.delta.content = event.text
            elif isinstance(event, Completion):
                msg.final.CopyFrom(convert.final_to_pb(event))
            yield msg


class ConversationServicer(_Base, pb_grpc.ConversationServiceServicer):
    @streaming(needs_model=True)
    async def Talk(self, request: pb.TalkRequest, context: Any) -> Any:
        async for event in self.core.stream_talk(convert.talk_request_from_pb(request)):
            if isinstance(event, TextDelta):
                yield pb.TalkResponse(delta=pb.ContentDelta(content=event.text))
            elif isinstance(event, Completion):
                yield pb.TalkResponse(final=convert.final_to_pb(event))

    @unary()
    async def GetConversation(self, request: pb.GetConversationRequest, context: Any) -> Any:
        conv = await self.core.get_conversation(request.persona_id, request.conversation_id)
        return pb.GetConversationResponse(conversation=convert.conversation_to_pb(conv))

    @unary()
    async def ResetConversation(self, request: pb.ResetConversationRequest, context: Any) -> Any:
        n = await self.core.reset_conversation(request.persona_id, request.conversation_id)
        return pb.ResetConversationResponse(deleted_turns=n)

    @unary()
    async def ExportConversation(self, request: pb.ExportConversationRequest, context: Any) -> Any:
        conv = await self.core.get_conversation(request.persona_id, request.conversation_id)
        return pb.ExportConversationResponse(conversation=convert.conversation_to_pb(conv))

    @unary()
    async def ImportConversation(self, request: pb.ImportConversationRequest, context: Any) -> Any:
        n = await self.core.import_conversation(convert.conversation_from_pb(request.conversation))
        return pb.ImportConversationResponse(imported_turns=n)


class PersonaServicer(_Base, pb_grpc.PersonaServiceServicer):
    @unary()
    async def CreatePersona(self, request: pb.CreatePersonaRequest, context: Any) -> Any:
        persona = await self.core.create_persona(convert.persona_from_pb(request.persona))
        return pb.CreatePersonaResponse(persona=convert.persona_to_pb(persona))

    @unary()
    async def GetPersona(self, request: pb.GetPersonaRequest, context: Any) -> Any:
        persona = await self.core.get_persona(request.persona_id)
        return pb.GetPersonaResponse(persona=convert.persona_to_pb(persona))

    @unary()
    async def ListPersonas(self, request: pb.ListPersonasRequest, context: Any) -> Any:
        personas, token = await self.core.list_personas(request.page_size, request.page_token)
        return pb.ListPersonasResponse(personas=[convert.persona_to_pb(p) for p in personas], next_page_token=token)

    @unary()
    async def UpdatePersona(self, request: pb.UpdatePersonaRequest, context: Any) -> Any:
        persona = await self.core.update_persona(
            convert.persona_from_pb(request.persona), allow_missing=request.allow_missing
        )
        return pb.UpdatePersonaResponse(persona=convert.persona_to_pb(persona))

    @unary()
    async def DeletePersona(self, request: pb.DeletePersonaRequest, context: Any) -> Any:
        return pb.DeletePersonaResponse(deleted_conversations=await self.core.delete_persona(request.persona_id))


class PresetServicer(_Base, pb_grpc.PresetServiceServicer):
    @unary()
    async def ListPresets(self, request: pb.ListPresetsRequest, context: Any) -> Any:
        return pb.ListPresetsResponse(
            presets=[convert.preset_to_pb(p) for p in self.core.list_presets()],
            default_preset=self.core.default_preset,
        )


class ModelServicer(_Base, pb_grpc.ModelServiceServicer):
    @unary(needs_model=True)
    async def ListModels(self, request: pb.ListModelsRequest, context: Any) -> Any:
        return pb.ListModelsResponse(models=[convert.model_to_pb(m) for m in self.core.list_models()])


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
