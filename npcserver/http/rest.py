"""The REST routes over NpcService: OpenAI-compatible routes in OpenAI's shapes, and NPC routes in the API's own.

OpenAI routes (OpenAI's JSON, so the official ``openai`` client works):
  GET    /healthz                                                   200 ready, 503 while the model loads (public:
                                                                    the model's name only with a credential)
  GET    /v1/models                                                 OpenAI model list
  GET    /v1/models/{model}
  POST   /v1/chat/completions                                       OpenAI chat completion; stream=true for SSE

NPC routes: the messages of the proto (ConversationService, PersonaService, PresetService) in canonical proto-JSON,
as grpc-gateway maps them (see ``protojson``): proto field names, enums by name, int64 as strings.
  GET    /v1/presets                                                ListPresetsResponse
  GET    /v1/npcs                                                   ListPersonasResponse (?page_size=&page_token=)
  POST   /v1/npcs                                                   body Persona: creates it (201; 409 if taken)
  GET    /v1/npcs/{persona_id}                                      Persona
  PUT    /v1/npcs/{persona_id}                                      body Persona: creates or replaces it
  DELETE /v1/npcs/{persona_id}                                      DeletePersonaResponse
  POST   /v1/npcs:import-card                                       body: a character card PNG or JSON (V2/V3):
                                                                    creates a persona (201), its Persona
                                                                    (?persona_id=&replace=true)
  GET    /v1/npcs/{persona_id}/card                                 the persona as a character card file
                                                                    (?format=png, the default, or json)
  POST   /v1/npcs/{persona_id}/conversations/{conversation_id}:talk body TalkRequest (+ "stream", default true):
                                                                    SSE of TalkResponse, [DONE]; or one final
  GET    /v1/npcs/{persona_id}/conversations/{conversation_id}      Conversation (the export for a save file)
  PUT    /v1/npcs/{persona_id}/conversations/{conversation_id}      body Conversation: restores it (import)
  DELETE /v1/npcs/{persona_id}/conversations/{conversation_id}      ResetConversationResponse
  GET    /v1/npcs/{persona_id}/conversations/{conversation_id}/memories  ListMemoriesResponse (?page_size=&page_token=)
  POST   /v1/npcs/{persona_id}/conversations/{conversation_id}/memories  body Memory: records it (201)
  DELETE /v1/npcs/{persona_id}/conversations/{conversation_id}/memories/{memory_id}  DeleteMemoryResponse
  GET    /v1/npcs/{persona_id}/conversations/{conversation_id}/summary   ConversationSummary
  PUT    /v1/npcs/{persona_id}/conversations/{conversation_id}/summary   body ConversationSummary: replaces it
  GET    /v1/lore                                                   ListLoreBooksResponse
  POST   /v1/lore                                                   body LoreBook: creates it (201; 409 if taken)
  GET    /v1/lore/{book_id}                                         LoreBook
  PUT    /v1/lore/{book_id}                                         body LoreBook: creates or replaces it
  DELETE /v1/lore/{book_id}                                         DeleteLoreBookResponse

Designer routes (DesignerService; off with the designer_endpoints setting):
  POST   /v1/npcs/{persona_id}/conversations/{conversation_id}:render  body TalkRequest (+ "persona", fields to
                                                                    try): RenderPromptResponse
  POST   /v1/npcs/{persona_id}/conversations/{conversation_id}:compare body CompareRequest: CompareResponse
  POST   /v1/chat/completions:render                                body as /v1/chat/completions:
                                                                    RenderPromptResponse
  GET    /playground                                                the playground page (a designer credential:
                                                                    Bearer, or Basic with the key as password)

Ids in the path fill the body's id fields; a body id that differs from the path's is a 400. A Talk final is the
gRPC CompletionFinal's JSON plus ``stored`` (whether the turn was stored) and ``replayed``. A Talk's
``Idempotency-Key`` header is its ``request_id``. Errors are OpenAI error bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeVar

from google.protobuf.message import Message
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.core.types import ActionCall, ModelCard, TalkRequest
from npcserver.errors import InvalidArgument, NotReady, Unauthenticated
from npcserver.grpc import convert
from npcserver.http.bodies import parse_json
from npcserver.http.calls import CallTracker, Outcome, run_call
from npcserver.http.errors import error_body, error_response
from npcserver.http.playground import playground_routes
from npcserver.http.protojson import from_json, to_json
from npcserver.http.schemas import ChatCompletionBody
from npcserver.http.sse import EventStreamResponse, SseWriter
from npcserver.service import Completion, NpcService, ReasoningDelta, StreamEvent, TextDelta

_B = TypeVar("_B", bound=BaseModel)
_T = TypeVar("_T")
_M = TypeVar("_M", bound=Message)
Authorize = Callable[[Request], Response | None]


# ---------------------------------------------------------------------------------------------------------------
# OpenAI JSON shapes
# ---------------------------------------------------------------------------------------------------------------


def model_json(card: ModelCard) -> dict[str, Any]:
    return {
        "id": card.id,
        "object": "model",
        "created": card.created,
        "owned_by": "npcserver",
        "context_size": card.context_size,
        "backend": card.backend,
        "gpu_layers": card.gpu_layers,
        "has_chat_template": card.has_chat_template,
        "loaded": card.loaded,
    }


def usage_json(c: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
    }


def timings_json(c: Completion) -> dict[str, Any]:
    """The proto's Timings, the same numbers every door reports."""
    return to_json(convert.timings_to_pb(c))


def structured_json(c: Completion) -> dict[str, Any] | None:
    if c.structured is None:
        return None
    r = c.structured
    return {"valid": r.valid, "error": r.error, "schema_name": r.schema_name, "value": r.value}


def choice_json(index: int, c: Completion) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": c.text}
    if c.reasoning:
        message["reasoning_content"] = c.reasoning
    if c.action_calls:
        message["tool_calls"] = [tool_call_json(x) for x in c.action_calls]
    choice: dict[str, Any] = {"index": index, "message": message, "finish_reason": finish_json(c), "logprobs": None}
    if c.structured is not None:
        choice["structured"] = structured_json(c)
    return choice


def tool_call_json(call: ActionCall, *, index: int | None = None) -> dict[str, Any]:
    """An action call as OpenAI's tool call (streamed deltas carry their index)."""
    data: dict[str, Any] = {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }
    if index is not None:
        data = {"index": index, **data}
    return data


def finish_json(c: Completion) -> str:
    """OpenAI's finish_reason: "tool_calls" whenever the reply called a tool (the client runs it and answers)."""
    return "tool_calls" if c.action_calls else c.finish_reason


def choices_usage_json(choices: list[Completion]) -> dict[str, int]:
    """The prompt once (every choice reads the same one), and every choice's generated tokens."""
    prompt = choices[0].prompt_tokens
    completion = sum(c.completion_tokens for c in choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_completion_json(choices: list[Completion]) -> dict[str, Any]:
    """OpenAI's chat.completion for the choices of one request (choice i at index i)."""
    first = choices[0]
    return {
        "id": first.id,
        "object": "chat.completion",
        "created": first.created,
        "model": first.model,
        "choices": [choice_json(i, c) for i, c in enumerate(choices)],
        "usage": choices_usage_json(choices),
        "timings": timings_json(first),
    }


# ---------------------------------------------------------------------------------------------------------------
# NPC JSON shapes: proto-JSON
# ---------------------------------------------------------------------------------------------------------------


def talk_event_json(event: StreamEvent, talk: TalkRequest, model: str) -> dict[str, Any]:
    """One Talk event: the TalkResponse's JSON (with the request's id, model and time); a final also says whether
    the turn was stored."""
    data = to_json(convert.talk_event_to_pb(event, talk, model))
    if isinstance(event, Completion):
        data["final"]["stored"] = event.stored
        data["final"]["replayed"] = event.replayed
    return data


def _fill_ids(data: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    """The body with the path's ids; a body id that names something else is a 400."""
    for field, value in ids.items():
        if data.setdefault(field, value) != value:
            raise InvalidArgument(f"the body's {field} {data[field]!r} differs from the path's {value!r}", param=field)
    return data


# ---------------------------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------------------------


#: Bodies larger than this are parsed off the event loop (a long conversation import takes a while to read).
_PARSE_INLINE_BYTES = 64 * 1024


async def _off_loop_if_large(raw: bytes, fn: Callable[..., _T], *args: Any) -> _T:
    if len(raw) > _PARSE_INLINE_BYTES:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


async def _parse_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    data = await _off_loop_if_large(raw, parse_json, raw)
    if not isinstance(data, dict):
        raise InvalidArgument("the request body must be a JSON object", param="body")
    return data


async def _parse(request: Request, model: type[_B]) -> _B:
    return model.model_validate(await _parse_object(request))


async def _parse_message(request: Request, message: _M, **ids: str) -> _M:
    """The body as proto-JSON of ``message``, with the path's ids filled in."""
    data = _fill_ids(await _parse_object(request), ids)
    return await _off_loop_if_large(await request.body(), from_json, data, message)


def _guarded(
    authorize: Authorize, endpoint: Callable[[Request], Awaitable[Response]], tracker: CallTracker
) -> Callable[[Request], Awaitable[Response]]:
    """Checks the API key, runs the endpoint as a call that a disconnect or shutdown cancels, and maps every error
    to an OpenAI error response."""

    async def guarded(request: Request) -> Response:
        denied = authorize(request)
        if denied is not None:
            return denied
        # Read the body first: afterwards the only message receive() can bring is the disconnect.
        await request.body()
        result: list[Response] = []

        async def work() -> None:
            try:
                result.append(await endpoint(request))
            except Exception as exc:
                result.append(error_response(exc))

        outcome = await run_call(work(), request.receive, tracker)
        if outcome is Outcome.DONE:
            return result[0]
        if outcome is Outcome.SHUTDOWN:
            return error_response(NotReady("the server shut down before the reply finished; retry"))
        return Response(status_code=499)  # the client is gone; nobody reads this

    return guarded


class RestRoutes:
    """Route handlers over one NpcService."""

    def __init__(self, service: NpcService, tracker: CallTracker) -> None:
        self.service = service
        self.tracker = tracker

    def routes(self, authorize: Authorize, *, designer: bool = True) -> list[BaseRoute]:
        def route(path: str, endpoint: Callable[[Request], Awaitable[Response]], method: str) -> Route:
            return Route(path, _guarded(authorize, endpoint, self.tracker), methods=[method])

        npc = "/v1/npcs/{persona_id}"
        conversation = npc + "/conversations/{conversation_id}"
        designer_routes: list[BaseRoute] = []
        if designer:
            designer_routes = [
                route(conversation + ":render", self.render_talk, "POST"),
                route(conversation + ":compare", self.compare, "POST"),
                route("/v1/chat/completions:render", self.render_chat, "POST"),
                *playground_routes(self.service),
            ]
        return [
            *designer_routes,
            Route("/healthz", self.health, methods=["GET"]),
            route("/v1/models", self.list_models, "GET"),
            route("/v1/models/{model_id:path}", self.get_model, "GET"),
            route("/v1/chat/completions", self.chat_completions, "POST"),
            route("/v1/presets", self.list_presets, "GET"),
            route("/v1/npcs", self.list_personas, "GET"),
            route("/v1/npcs", self.create_persona, "POST"),
            route(npc, self.get_persona, "GET"),
            route(npc, self.put_persona, "PUT"),
            route(npc, self.delete_persona, "DELETE"),
            route("/v1/npcs:import-card", self.import_card, "POST"),
            route(npc + "/card", self.export_card, "GET"),
            route(conversation + ":talk", self.talk, "POST"),
            route(conversation, self.get_conversation, "GET"),
            route(conversation, self.import_conversation, "PUT"),
            route(conversation, self.reset_conversation, "DELETE"),
            route("/v1/lore", self.list_lore_books, "GET"),
            route("/v1/lore", self.create_lore_book, "POST"),
            route("/v1/lore/{book_id}", self.get_lore_book, "GET"),
            route("/v1/lore/{book_id}", self.put_lore_book, "PUT"),
            route("/v1/lore/{book_id}", self.delete_lore_book, "DELETE"),
            route(conversation + "/memories", self.list_memories, "GET"),
            route(conversation + "/memories", self.add_memory, "POST"),
            route(conversation + "/memories/{memory_id}", self.delete_memory, "DELETE"),
            route(conversation + "/summary", self.get_summary, "GET"),
            route(conversation + "/summary", self.set_summary, "PUT"),
        ]

    async def health(self, request: Request) -> Response:
        if self.tracker.draining:
            return JSONResponse({"status": "shutting_down"}, status_code=503)
        # Public: without a valid credential the answer is the status alone (NpcService.health), never a 401.
        with contextlib.suppress(Unauthenticated):
            self.service.admit(request.headers.get("authorization"))
        health = self.service.health()
        if health.problem:
            return JSONResponse({"status": "stuck", "problem": health.problem}, status_code=503)
        if not health.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        if not health.model:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "ok", "model": health.model, "loaded": health.loaded})

    # --- OpenAI ------------------------------------------------------------------------------------------------

    async def list_models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_json(m) for m in self.service.list_models()]})

    async def get_model(self, request: Request) -> Response:
        return JSONResponse(model_json(self.service.get_model(request.path_params["model_id"])))

    async def chat_completions(self, request: Request) -> Response:
        body = await _parse(request, ChatCompletionBody)
        chat = body.to_core()
        n = 1 if body.n is None else body.n
        if not body.stream:
            done: dict[int, Completion] = {}
            async with aclosing(self.service.chat_choices(chat, n)) as events:  # type: ignore[type-var]
                async for index, event in events:
                    if isinstance(event, Completion):
                        done[index] = event
            return JSONResponse(chat_completion_json([done[i] for i in range(n)]))
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        # Every chunk names the same id and model: the request's own, which the final result carries too.
        chunk_id = chat.id
        created = chat.created
        model = body.model or self.service.model_id()

        def chunk(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
            }

        async def produce(sse: SseWriter) -> None:
            finals: dict[int, Completion] = {}
            started: set[int] = set()
            async with aclosing(self.service.chat_choices(chat, n)) as events:  # type: ignore[type-var]
                async for index, event in events:
                    if index not in started:
                        await sse.event(chunk(index, {"role": "assistant", "content": ""}))
                        started.add(index)
                    if isinstance(event, TextDelta):
                        await sse.event(chunk(index, {"content": event.text}))
                    elif isinstance(event, ReasoningDelta):
                        await sse.event(chunk(index, {"reasoning_content": event.text}))
                    elif isinstance(event, ActionCall):
                        # The whole validated call in one delta, keyed by its index as OpenAI's clients expect.
                        await sse.event(chunk(index, {"tool_calls": [tool_call_json(event, index=event.index)]}))
                    elif isinstance(event, Completion):
                        finals[index] = event
                        last = chunk(index, {}, finish_json(event))
                        last["timings"] = timings_json(event)
                        if event.structured is not None:
                            last["choices"][0]["structured"] = structured_json(event)
                        await sse.event(last)
            if include_usage and finals:
                usage = choices_usage_json([finals[i] for i in sorted(finals)])
                await sse.event({**chunk(0, {}), "choices": [], "usage": usage})
            await sse.done()

        return _EventStream(produce, self.tracker)

    # --- NPC: presets and personas -----------------------------------------------------------------------------

    async def list_presets(self, request: Request) -> Response:
        return JSONResponse(to_json(convert.presets_to_pb(self.service.list_presets(), self.service.default_preset)))

    async def list_personas(self, request: Request) -> Response:
        try:
            page_size = int(request.query_params.get("page_size", "0"))
        except ValueError:
            raise InvalidArgument("page_size must be an integer", param="page_size") from None
        personas, token = await self.service.list_personas(page_size, request.query_params.get("page_token", ""))
        return JSONResponse(to_json(convert.persona_page_to_pb(personas, token)))

    async def get_persona(self, request: Request) -> Response:
        persona = await self.service.get_persona(request.path_params["persona_id"])
        return JSONResponse(to_json(convert.persona_to_pb(persona)))

    async def create_persona(self, request: Request) -> Response:
        message = await _parse_message(request, pb.Persona())
        if not message.id:
            raise InvalidArgument("a persona needs an id (lowercase letters, digits, '_' and '-')", param="id")
        persona = await self.service.create_persona(convert.persona_from_pb(message))
        return JSONResponse(to_json(convert.persona_to_pb(persona)), status_code=201)

    async def put_persona(self, request: Request) -> Response:
        message = await _parse_message(request, pb.Persona(), id=request.path_params["persona_id"])
        persona = await self.service.update_persona(convert.persona_from_pb(message), allow_missing=True)
        return JSONResponse(to_json(convert.persona_to_pb(persona)))

    async def delete_persona(self, request: Request) -> Response:
        deleted = await self.service.delete_persona(request.path_params["persona_id"])
        return JSONResponse(to_json(pb.DeletePersonaResponse(deleted_conversations=deleted)))

    async def import_card(self, request: Request) -> Response:
        query = request.query_params
        replace = query.get("replace", "false").lower()
        if replace not in ("true", "false", "1", "0"):
            raise InvalidArgument("replace must be true or false", param="replace")
        persona = await self.service.import_character_card(
            await request.body(), persona_id=query.get("persona_id", ""), replace=replace in ("true", "1")
        )
        return JSONResponse(to_json(convert.persona_to_pb(persona)), status_code=201)

    async def export_card(self, request: Request) -> Response:
        persona_id = request.path_params["persona_id"]
        fmt = request.query_params.get("format", "png")
        card, media_type = await self.service.export_character_card(persona_id, fmt)
        return Response(
            card,
            media_type=media_type,
            headers={"content-disposition": f'attachment; filename="{persona_id}.{fmt}"'},
        )

    # --- NPC: conversations ------------------------------------------------------------------------------------

    async def get_conversation(self, request: Request) -> Response:
        p = request.path_params
        conversation = await self.service.get_conversation(p["persona_id"], p["conversation_id"])
        return JSONResponse(to_json(convert.conversation_to_pb(conversation)))

    async def import_conversation(self, request: Request) -> Response:
        p = request.path_params
        message = await _parse_message(
            request, pb.Conversation(), persona_id=p["persona_id"], conversation_id=p["conversation_id"]
        )
        imported = await self.service.import_conversation(convert.conversation_from_pb(message))
        return JSONResponse(to_json(pb.ImportConversationResponse(imported_turns=imported)))

    # --- knowledge ---------------------------------------------------------------------------------------------

    async def list_lore_books(self, request: Request) -> Response:
        books = await self.service.list_lore_books()
        return JSONResponse(to_json(pb.ListLoreBooksResponse(books=[convert.lore_book_to_pb(b) for b in books])))

    async def get_lore_book(self, request: Request) -> Response:
        book = await self.service.get_lore_book(request.path_params["book_id"])
        return JSONResponse(to_json(convert.lore_book_to_pb(book)))

    async def create_lore_book(self, request: Request) -> Response:
        message = await _parse_message(request, pb.LoreBook())
        book = await self.service.put_lore_book(convert.lore_book_from_pb(message), allow_existing=False)
        return JSONResponse(to_json(convert.lore_book_to_pb(book)), status_code=201)

    async def put_lore_book(self, request: Request) -> Response:
        message = await _parse_message(request, pb.LoreBook(), id=request.path_params["book_id"])
        book = await self.service.put_lore_book(convert.lore_book_from_pb(message), allow_existing=True)
        return JSONResponse(to_json(convert.lore_book_to_pb(book)))

    async def delete_lore_book(self, request: Request) -> Response:
        await self.service.delete_lore_book(request.path_params["book_id"])
        return JSONResponse(to_json(pb.DeleteLoreBookResponse()))

    async def list_memories(self, request: Request) -> Response:
        p, q = request.path_params, request.query_params
        try:
            page_size = int(q.get("page_size", "0"))
        except ValueError:
            raise InvalidArgument("page_size must be an integer", param="page_size") from None
        memories, token = await self.service.list_memories(
            p["persona_id"], p["conversation_id"], page_size, q.get("page_token", "")
        )
        page = pb.ListMemoriesResponse(memories=[convert.memory_to_pb(m) for m in memories], next_page_token=token)
        return JSONResponse(to_json(page))

    async def add_memory(self, request: Request) -> Response:
        p = request.path_params
        message = await _parse_message(request, pb.Memory())
        memory = await self.service.add_memory(p["persona_id"], p["conversation_id"], convert.memory_from_pb(message))
        return JSONResponse(to_json(convert.memory_to_pb(memory)), status_code=201)

    async def delete_memory(self, request: Request) -> Response:
        p = request.path_params
        raw = p["memory_id"]
        if not raw.isdigit():
            raise InvalidArgument(f"memory id {raw!r} is not a number (see the memories' ids)", param="memory_id")
        await self.service.delete_memory(p["persona_id"], p["conversation_id"], int(raw))
        return JSONResponse(to_json(pb.DeleteMemoryResponse()))

    async def get_summary(self, request: Request) -> Response:
        p = request.path_params
        summary = await self.service.get_summary(p["persona_id"], p["conversation_id"])
        return JSONResponse(to_json(convert.summary_to_pb(summary)))

    async def set_summary(self, request: Request) -> Response:
        p = request.path_params
        message = await _parse_message(request, pb.ConversationSummary())
        summary = await self.service.set_summary(
            p["persona_id"], p["conversation_id"], convert.summary_from_pb(message)
        )
        return JSONResponse(to_json(convert.summary_to_pb(summary)))

    async def reset_conversation(self, request: Request) -> Response:
        p = request.path_params
        deleted = await self.service.reset_conversation(p["persona_id"], p["conversation_id"])
        return JSONResponse(to_json(pb.ResetConversationResponse(deleted_turns=deleted)))

    async def talk(self, request: Request) -> Response:
        p = request.path_params
        data = _fill_ids(
            await _parse_object(request), {"persona_id": p["persona_id"], "conversation_id": p["conversation_id"]}
        )
        # The Idempotency-Key header is REST's spelling of the body's request_id (AIP-155).
        key = request.headers.get("idempotency-key")
        if key is not None and data.setdefault("request_id", key) != key:
            raise InvalidArgument(
                f"the Idempotency-Key header {key!r} differs from the body's request_id {data['request_id']!r}: "
                "send one of them",
                param="request_id",
            )
        # "stream" is the REST door's own switch, not a field of TalkRequest.
        stream = data.pop("stream", True)
        if not isinstance(stream, bool):
            raise InvalidArgument("stream must be true (SSE) or false (one JSON object)", param="stream")
        talk = convert.talk_request_from_pb(from_json(data, pb.TalkRequest()))
        model = self.service.model_id()
        if not stream:
            return JSONResponse(talk_event_json(await self.service.talk(talk), talk, model)["final"])

        async def produce(sse: SseWriter) -> None:
            async with aclosing(self.service.stream_talk(talk)) as events:  # type: ignore[type-var]
                async for event in events:
                    await sse.event(talk_event_json(event, talk, model))
            await sse.done()

        return _EventStream(produce, self.tracker)

    # --- designer's workbench ---------------------------------------------------------------------------------

    async def render_talk(self, request: Request) -> Response:
        p = request.path_params
        data = _fill_ids(
            await _parse_object(request), {"persona_id": p["persona_id"], "conversation_id": p["conversation_id"]}
        )
        # "persona" is RenderPromptRequest's field beside the TalkRequest: the edited persona fields to try.
        edited = from_json(data.pop("persona"), pb.Persona()) if isinstance(data.get("persona"), dict) else None
        talk = convert.talk_request_from_pb(from_json(data, pb.TalkRequest()))
        fields = convert.persona_fields_from_pb(edited, "render") if edited is not None else {}
        inspected = await self.service.render_prompt(talk, fields)
        return JSONResponse(to_json(convert.inspection_to_pb(inspected)))

    async def render_chat(self, request: Request) -> Response:
        body = await _parse(request, ChatCompletionBody)
        inspected = await self.service.render_prompt(body.to_core())
        return JSONResponse(to_json(convert.inspection_to_pb(inspected)))

    async def compare(self, request: Request) -> Response:
        p = request.path_params
        message = await _parse_message(
            request, pb.CompareRequest(), persona_id=p["persona_id"], conversation_id=p["conversation_id"]
        )
        talk, variants = convert.compare_request_from_pb(message)
        return JSONResponse(to_json(convert.comparison_to_pb(await self.service.compare(talk, variants))))


class _EventStream(Response):
    """Lets a Starlette endpoint return an EventStreamResponse."""

    def __init__(self, produce: Callable[[SseWriter], Awaitable[None]], tracker: CallTracker) -> None:
        super().__init__()
        self._stream = EventStreamResponse(produce, tracker)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._stream(scope, receive, send)


def not_found_body(path: str) -> dict[str, Any]:
    return error_body(f"no route {path}; see the README for the routes this server serves", code="not_found")
