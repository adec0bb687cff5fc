"""The OpenAI-compatible REST routes, and NPC routes in the same style, over NpcCore.

Routes (all JSON; errors are OpenAI error bodies):
  GET    /healthz                                                   200 ready, 503 while the model loads
  GET    /v1/models                                                 OpenAI model list
  GET    /v1/models/{model}
  POST   /v1/chat/completions                                       OpenAI chat completion; stream=true for SSE
  GET    /v1/presets                                                the sampling presets
  GET    /v1/npcs                                                   personas (?page_size=&page_token=)
  POST   /v1/npcs                                                   creates a persona (409 when the id is taken)
  GET    /v1/npcs/{persona_id}
  PUT    /v1/npcs/{persona_id}                                      creates or replaces a persona
  DELETE /v1/npcs/{persona_id}                                      deletes it and its conversations
  POST   /v1/npcs/{persona_id}/conversations/{conversation_id}:talk SSE: {"delta": ...} ... {"final": ...} [DONE]
  GET    /v1/npcs/{persona_id}/conversations/{conversation_id}      the stored turns (the export for a save file)
  PUT    /v1/npcs/{persona_id}/conversations/{conversation_id}      restores exported turns (import)
  DELETE /v1/npcs/{persona_id}/conversations/{conversation_id}      forgets the turns

Personas use the same fields as the persona TOML files (``example_dialogue`` as ``[{"player", "npc"}]``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from npcserver.core.app import NpcCore
from npcserver.core.personas import persona_from_dict, persona_to_dict
from npcserver.core.types import Completion, ModelCard, Persona, StreamEvent
from npcserver.engine.base import TextDelta
from npcserver.errors import InvalidArgument, NotFound, NotReady
from npcserver.http.calls import CallTracker, Outcome, run_call
from npcserver.http.errors import error_body, error_response
from npcserver.http.schemas import ChatCompletionBody, ConversationBody, TalkBody
from npcserver.http.sse import EventStreamResponse, SseWriter

_B = TypeVar("_B", bound=BaseModel)
Authorize = Callable[[Request], Response | None]


# ---------------------------------------------------------------------------------------------------------------
# JSON shapes
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
    }


def usage_json(c: Completion) -> dict[str, int]:
    return {
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens + c.completion_tokens,
    }


def timings_json(c: Completion) -> dict[str, Any]:
    s = c.stats
    return {
        "prompt_eval_count": s.prompt_tokens - s.cached_prompt_tokens,
        "prompt_eval_ms": s.prompt_eval_ms,
        "eval_count": s.completion_tokens,
        "eval_ms": s.eval_ms,
        "time_to_first_token_ms": s.time_to_first_token_ms,
        "load_ms": c.load_ms,
        "queue_ms": s.queue_ms,
        "cached_prompt_tokens": s.cached_prompt_tokens,
    }


def structured_json(c: Completion) -> dict[str, Any] | None:
    if c.structured is None:
        return None
    r = c.structured
    return {"valid": r.valid, "error": r.error, "schema_name": r.schema_name, "value": r.value}


def chat_completion_json(c: Completion) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": c.text},
        "finish_reason": c.finish_reason,
        "logprobs": None,
    }
    if c.structured is not None:
        choice["structured"] = structured_json(c)
    return {
        "id": c.id,
        "object": "chat.completion",
        "created": c.created,
        "model": c.model,
        "choices": [choice],
        "usage": usage_json(c),
        "timings": timings_json(c),
    }


def talk_final_json(c: Completion) -> dict[str, Any]:
    """The end of a Talk reply: the JSON form of the proto's CompletionFinal, plus whether the turn was stored."""
    return {
        "message": {"role": "assistant", "content": c.text},
        "finish_reason": c.finish_reason,
        "usage": usage_json(c),
        "timings": timings_json(c),
        "structured": structured_json(c),
        "truncated_turns": c.truncated_turns,
        "stored": c.stored,
    }


# ---------------------------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------------------------


async def _parse_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidArgument("the request body must be a JSON object")
    return data


def _persona(data: dict[str, Any]) -> Persona:
    try:
        return persona_from_dict(data)
    except (TypeError, ValueError) as exc:
        # persona_from_dict names unknown fields itself; this catches values of the wrong type (max_tokens: "ten").
        raise InvalidArgument(f"the persona has a value of the wrong type: {exc}") from exc


async def _parse(request: Request, model: type[_B]) -> _B:
    return model.model_validate(await _parse_object(request))


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
    """Route handlers bound to one core."""

    def __init__(self, core: NpcCore, tracker: CallTracker) -> None:
        self.core = core
        self.tracker = tracker

    def routes(self, authorize: Authorize) -> list[BaseRoute]:
        def route(path: str, endpoint: Callable[[Request], Awaitable[Response]], method: str) -> Route:
            return Route(path, _guarded(authorize, endpoint, self.tracker), methods=[method])

        npc = "/v1/npcs/{persona_id}"
        conversation = npc + "/conversations/{conversation_id}"
        return [
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
            route(conversation + ":talk", self.talk, "POST"),
            route(conversation, self.get_conversation, "GET"),
            route(conversation, self.import_conversation, "PUT"),
            route(conversation, self.reset_conversation, "DELETE"),
        ]

    async def health(self, request: Request) -> Response:
        if self.tracker.draining:
            return JSONResponse({"status": "shutting_down"}, status_code=503)
        if not self.core.engine.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok", "model": self.core.engine.info.id})

    async def list_models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_json(m) for m in self.core.list_models()]})

    async def get_model(self, request: Request) -> Response:
        model_id = request.path_params["model_id"]
        for card in self.core.list_models():
            if card.id == model_id:
                return JSONResponse(model_json(card))
        raise NotFound(f"model {model_id!r} is not loaded (see GET /v1/models)", param="model", code="model_not_found")

    async def list_presets(self, request: Request) -> Response:
        presets = [dataclasses.asdict(p) for p in self.core.list_presets()]
        return JSONResponse({"object": "list", "data": presets, "default_preset": self.core.default_preset})

    async def list_personas(self, request: Request) -> Response:
        try:
            page_size = int(request.query_params.get("page_size", "0"))
        except ValueError:
            raise InvalidArgument("page_size must be an integer", param="page_size") from None
        personas, token = await self.core.list_personas(page_size, request.query_params.get("page_token", ""))
        return JSONResponse({"data": [persona_to_dict(p) for p in personas], "next_page_token": token})

    async def get_persona(self, request: Request) -> Response:
        persona = await self.core.get_persona(request.path_params["persona_id"])
        return JSONResponse(persona_to_dict(persona))

    async def create_persona(self, request: Request) -> Response:
        data = await _parse_object(request)
        if not data.get("id"):
            raise InvalidArgument("a persona needs an id (lowercase letters, digits, '_' and '-')", param="id")
        persona = await self.core.create_persona(_persona(data))
        return JSONResponse(persona_to_dict(persona), status_code=201)

    async def put_persona(self, request: Request) -> Response:
        persona_id = request.path_params["persona_id"]
        data = await _parse_object(request)
        if data.setdefault("id", persona_id) != persona_id:
            raise InvalidArgument(f"the body's id {data['id']!r} differs from the path's {persona_id!r}", param="id")
        persona = await self.core.update_persona(_persona(data), allow_missing=True)
        return JSONResponse(persona_to_dict(persona))

    async def delete_persona(self, request: Request) -> Response:
        deleted = await self.core.delete_persona(request.path_params["persona_id"])
        return JSONResponse({"deleted_conversations": deleted})

    async def get_conversation(self, request: Request) -> Response:
        p = request.path_params
        conversation = await self.core.get_conversation(p["persona_id"], p["conversation_id"])
        return JSONResponse(dataclasses.asdict(conversation))

    async def import_conversation(self, request: Request) -> Response:
        p = request.path_params
        body = await _parse(request, ConversationBody)
        imported = await self.core.import_conversation(body.to_core(p["persona_id"], p["conversation_id"]))
        return JSONResponse({"imported_turns": imported})

    async def reset_conversation(self, request: Request) -> Response:
        p = request.path_params
        deleted = await self.core.reset_conversation(p["persona_id"], p["conversation_id"])
        return JSONResponse({"deleted_turns": deleted})

    # --- generation --------------------------------------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response:
        body = await _parse(request, ChatCompletionBody)
        chat = body.to_core()
        if not body.stream:
            return JSONResponse(chat_completion_json(await self.core.chat(chat)))
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        # Every chunk names the same id and model: the request's own, which the final result carries too.
        chunk_id = chat.id
        created = chat.created
        model = body.model or self.core.list_models()[0].id

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
            }

        async def produce(sse: SseWriter) -> None:
            async with _closing(self.core.stream_chat(chat)) as events:
                first = True
                async for event in events:
                    if first:
                        await sse.event(chunk({"role": "assistant", "content": ""}))
                        first = False
                    if isinstance(event, TextDelta):
                        await sse.event(chunk({"content": event.text}))
                    elif isinstance(event, Completion):
                        last = chunk({}, event.finish_reason)
                        last["timings"] = timings_json(event)
                        if event.structured is not None:
                            last["choices"][0]["structured"] = structured_json(event)
                        await sse.event(last)
                        if include_usage:
                            await sse.event({**chunk({}), "choices": [], "usage": usage_json(event)})
            await sse.done()

        return _EventStream(produce, self.tracker)

    async def talk(self, request: Request) -> Response:
        body = await _parse(request, TalkBody)
        p = request.path_params
        talk = body.to_core(p["persona_id"], p["conversation_id"])
        if not body.stream:
            return JSONResponse(talk_final_json(await _final(self.core.stream_talk(talk))))

        async def produce(sse: SseWriter) -> None:
            async with _closing(self.core.stream_talk(talk)) as events:
                async for event in events:
                    if isinstance(event, TextDelta):
                        await sse.event({"delta": {"content": event.text}})
                    else:
                        await sse.event({"final": talk_final_json(event)})
            await sse.done()

        return _EventStream(produce, self.tracker)


@contextlib.asynccontextmanager
async def _closing(events: AsyncIterator[StreamEvent]) -> AsyncIterator[AsyncIterator[StreamEvent]]:
    """Closes a core stream however the consumer leaves it, so a cancelled reply stops the engine at once."""
    try:
        yield events
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


async def _final(events: AsyncIterator[StreamEvent]) -> Completion:
    async with _closing(events) as stream:
        async for event in stream:
            if isinstance(event, Completion):
                return event
    raise RuntimeError("the core ended a stream without a final result")


class _EventStream(Response):
    """Lets a Starlette endpoint return an EventStreamResponse."""

    def __init__(self, produce: Callable[[SseWriter], Awaitable[None]], tracker: CallTracker) -> None:
        super().__init__()
        self._stream = EventStreamResponse(produce, tracker)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._stream(scope, receive, send)


def not_found_body(path: str) -> dict[str, Any]:
    return error_body(f"no route {path}; see the README for the routes this server serves", code="not_found")
