"""Ollama's native API on the HTTP door, over the same NpcService operations as every other door.

Routes (Ollama's JSON, so the official ``ollama`` client and tools that speak Ollama work):
  POST /api/chat      chat; ``stream`` (default true) sends newline-delimited JSON objects, the last with ``done``
                      and Ollama's statistics in nanoseconds; empty ``messages`` only loads (or, with keep_alive 0,
                      unloads) the model
  GET  /api/tags      the served model
  POST /api/show      details of the served model
  GET  /api/ps        the model while it is in memory (empty once keep_alive unloaded it)
  GET  /api/version   the server's version

Errors are Ollama's ``{"error": "..."}`` with Ollama's status codes: 400 for a bad request, 404 for an unknown model
or route, 401 for a missing API key, 503 when busy or loading, 500 for a server fault. Fields Ollama defines that
this server cannot honour (images, think levels, logprobs, sampling options llama.cpp's sampler here lacks) are a
400 naming them, never dropped; Ollama's machine-tuning options are accepted and logged as ignored, since the server
owns its hardware.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

import npcserver
from npcserver.core.types import (
    Action,
    ActionCall,
    ChatRequest,
    Completion,
    Message,
    ModelCard,
    ResponseFormat,
    SamplingOverrides,
)
from npcserver.errors import InvalidArgument, NotFound, NotReady, NpcError, QueueFull
from npcserver.http.bodies import parse_json
from npcserver.http.calls import CallTracker, Outcome, run_call
from npcserver.service import NpcService, ReasoningDelta, TextDelta

log = logging.getLogger(__name__)

_NDJSON = [(b"content-type", b"application/x-ndjson"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
_GENERIC_SERVER_ERROR = "the server had an error while processing the request; the details are in its log"
#: Ollama's tag for an untagged name: "gemma" and "gemma:latest" name the same model.
_LATEST = ":latest"
#: The routes served, for telling a wrong method (405) from an unknown route (404).
_ROUTES = frozenset({"/api/chat", "/api/tags", "/api/show", "/api/ps", "/api/version"})
#: What /api/ps says for a model that stays loaded (Ollama reports a far-future time for keep_alive < 0).
_FOREVER = "2318-11-29T00:00:00Z"

# --- options -----------------------------------------------------------------------------------------------------

#: Ollama's load-time and hardware options: the server owns its hardware, so these are accepted and ignored.
MACHINE_OPTIONS = frozenset(
    {
        "numa",
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "use_mmap",
        "use_mlock",
        "embedding_only",
        "num_thread",
    }
)
#: Ollama's sampling options the engine honours (num_predict maps to max_tokens).
SAMPLING_OPTIONS = frozenset(
    {"temperature", "top_p", "top_k", "min_p", "num_predict", "seed", "stop", "repeat_penalty"}
)
#: Ollama's sampling options the engine's sampler lacks, with the value that means "off" (accepted as a no-op).
UNSUPPORTED_OPTIONS: dict[str, float | None] = {
    "num_keep": None,
    "typical_p": 1.0,
    "tfs_z": 1.0,
    "repeat_last_n": None,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "mirostat": 0,
    "mirostat_tau": None,
    "mirostat_eta": None,
    "penalize_newline": None,
}


class _SamplingOptions(BaseModel):
    """The types of the sampling options this server honours."""

    model_config = ConfigDict(extra="forbid", strict=False)

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    num_predict: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    repeat_penalty: float | None = None


def overrides_from_options(options: dict[str, Any] | None) -> SamplingOverrides:
    """Ollama's ``options`` as sampling overrides. Raises InvalidArgument naming an option it cannot honour."""
    if not options:
        return SamplingOverrides()
    set_options = {k: v for k, v in options.items() if v is not None}
    ignored = sorted(k for k in set_options if k in MACHINE_OPTIONS)
    if ignored:
        log.info("ollama: options %s ignored: the server sets its own hardware and context", ", ".join(ignored))
    for name, value in set_options.items():
        if name in MACHINE_OPTIONS or name in SAMPLING_OPTIONS:
            continue
        if name in UNSUPPORTED_OPTIONS:
            off = UNSUPPORTED_OPTIONS[name]
            if off is not None and value == off:
                continue  # the value that turns it off: what the sampler does anyway
            hint = f" (only {off} is accepted: it turns the option off)" if off is not None else ""
            raise InvalidArgument(
                f"option {name!r} is not supported by this server's sampler{hint}; supported sampling options: "
                f"{', '.join(sorted(SAMPLING_OPTIONS))}",
                param=f"options.{name}",
            )
        raise InvalidArgument(
            f"option {name!r} is not an Ollama option; sampling options: {', '.join(sorted(SAMPLING_OPTIONS))}",
            param=f"options.{name}",
        )
    try:
        o = _SamplingOptions.model_validate({k: v for k, v in set_options.items() if k in SAMPLING_OPTIONS})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"])
        raise InvalidArgument(f"options.{name}: {first['msg']}", param=f"options.{name}") from None
    return SamplingOverrides(
        temperature=o.temperature,
        top_p=o.top_p,
        top_k=o.top_k,
        min_p=o.min_p,
        repeat_penalty=o.repeat_penalty,
        seed=o.seed,
        max_tokens=_max_tokens(o.num_predict),
        stop=(o.stop,) if isinstance(o.stop, str) else tuple(o.stop or ()),
    )


def _max_tokens(num_predict: int | None) -> int | None:
    if num_predict is None:
        return None
    if num_predict in (-1, -2):
        return 0  # Ollama's "no limit" and "fill the context": until a stop or the end of the context window
    if num_predict <= 0:
        raise InvalidArgument(
            f"options.num_predict is {num_predict}; use a positive count, -1 (no limit) or -2 (fill the context)",
            param="options.num_predict",
        )
    return num_predict


# --- keep_alive --------------------------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive_seconds(value: float | str | None) -> float | None:
    """Ollama's keep_alive (seconds, or a Go duration such as "5m" or "1h30m") in seconds; negative keeps the model
    loaded for good, None keeps the server's policy."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidArgument("keep_alive must be seconds or a duration such as '5m'", param="keep_alive")
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    total, pos = 0.0, 0
    for m in _DURATION_PART.finditer(body):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _SECONDS[m.group(2)]
        pos = m.end()
    if not body or pos != len(body):
        raise InvalidArgument(
            f"keep_alive {value!r} is not a duration: use seconds (300), a duration such as '5m' or '1h30m', 0 to "
            "unload after the request, or a negative value to keep the model loaded",
            param="keep_alive",
        )
    return sign * total


# --- request bodies ----------------------------------------------------------------------------------------------


class _Body(BaseModel):
    # Ollama's server ignores JSON fields it does not know; so does this door (options are checked by name).
    model_config = ConfigDict(extra="ignore")


class OllamaMessage(_Body):
    role: str
    content: str | None = None
    images: list[Any] | None = None
    tool_calls: list[Any] | None = None
    tool_name: str | None = None
    #: A thinking model's reasoning on an earlier turn; not part of the conversation the model reads again.
    thinking: str | None = None

    def to_core(self, index: int, model: str) -> Message:
        if self.images:
            raise InvalidArgument(
                f"messages[{index}].images: model {model!r} cannot see images (it has no vision support); send "
                "text only",
                param=f"messages[{index}].images",
            )
        calls = []
        for j, c in enumerate(self.tool_calls or ()):
            function = c.get("function") if isinstance(c, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise InvalidArgument(
                    f"messages[{index}].tool_calls[{j}] needs function.name (and function.arguments, an object)",
                    param=f"messages[{index}].tool_calls",
                )
            # Ollama's calls carry no id: one is made from their place, and a tool message answers the latest
            # call of its tool_name.
            arguments = function.get("arguments") or {}
            text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
            calls.append(ActionCall(str(c.get("id") or f"call_{index}_{j}"), function["name"], text, index=j))
        return Message(role=self.role, content=self.content or "", tool_calls=tuple(calls))


class OllamaChatBody(_Body):
    """POST /api/chat."""

    model: str = ""
    messages: list[OllamaMessage] = []
    tools: list[Any] | None = None
    format: str | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    stream: bool = True
    keep_alive: float | str | None = None
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    def check(self) -> None:
        """Refuses, by name, the fields this server cannot honour yet."""
        if self.think is not None and not isinstance(self.think, bool):
            raise InvalidArgument(f"think {self.think!r}: levels are not supported; use true or false", param="think")
        if self.logprobs:
            raise InvalidArgument("logprobs are not supported; leave logprobs unset or false", param="logprobs")
        if self.top_logprobs:
            raise InvalidArgument("top_logprobs is not supported; leave it unset or 0", param="top_logprobs")

    def response_format(self) -> ResponseFormat | None:
        if self.format is None or self.format == "":
            return None
        if self.format == "json":
            return ResponseFormat(type="json_object")
        if isinstance(self.format, dict):
            return ResponseFormat(type="json_schema", schema=self.format, name="format")
        raise InvalidArgument(
            f'format {self.format!r} is not supported: use "json" or a JSON schema object', param="format"
        )

    def tools_to_core(self) -> tuple[Action, ...]:
        out = []
        for i, t in enumerate(self.tools or ()):
            function = t.get("function") if isinstance(t, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise InvalidArgument(
                    f'tools[{i}] needs {{"type": "function", "function": {{"name": ..., "parameters": {{...}}}}}}',
                    param="tools",
                )
            params = function.get("parameters")
            if params is not None and not isinstance(params, dict):
                raise InvalidArgument(f"tools[{i}].function.parameters must be a JSON Schema object", param="tools")
            out.append(Action(function["name"], str(function.get("description") or ""), params))
        return tuple(out)

    def messages_to_core(self) -> tuple[Message, ...]:
        out: list[Message] = []
        latest: dict[str, str] = {}
        last = ""
        for i, m in enumerate(self.messages):
            msg = m.to_core(i, self.model)
            for c in msg.tool_calls:
                latest[c.name] = last = c.id
            if m.role == "tool":
                msg = replace(msg, tool_call_id=latest.get(m.tool_name or "", last) if m.tool_name else last)
            out.append(msg)
        return tuple(out)

    def to_core(self, model_id: str) -> ChatRequest:
        return ChatRequest(
            messages=self.messages_to_core(),
            tools=self.tools_to_core(),
            model=model_id,
            overrides=overrides_from_options(self.options),
            response_format=self.response_format(),
            # A thinking model's reasoning comes back as message.thinking whatever this says, never as content.
            enable_thinking=self.think if isinstance(self.think, bool) else None,
        )


class OllamaShowBody(_Body):
    """POST /api/show (older clients send ``name``)."""

    model: str = ""
    name: str = ""
    verbose: bool = False


# --- responses ---------------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _ns(ms: float) -> int:
    return int(ms * 1_000_000)


def tag_of(model_id: str) -> str:
    """The model's Ollama name: its id with a tag."""
    return model_id if ":" in model_id else model_id + _LATEST


def _details(card: ModelCard) -> dict[str, Any]:
    family = card.extra.get("architecture", "")
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family] if family else None,
        "parameter_size": card.extra.get("size_label", ""),
        "quantization_level": "",
    }


def _model_entry(card: ModelCard) -> dict[str, Any]:
    return {
        "name": tag_of(card.id),
        "model": tag_of(card.id),
        "modified_at": _iso(card.created),
        "size": card.file_bytes,
        "digest": "",
        "details": _details(card),
    }


def tool_calls_json(calls: tuple[ActionCall, ...]) -> list[dict[str, Any]]:
    """Calls in Ollama's shape: the arguments as an object."""
    return [{"function": {"index": c.index, "name": c.name, "arguments": json.loads(c.arguments)}} for c in calls]


def _stats(c: Completion) -> dict[str, Any]:
    """Ollama's statistics of a finished reply, in nanoseconds."""
    return {
        "done_reason": c.finish_reason,
        "total_duration": _ns(c.total_ms),
        "load_duration": _ns(c.model_load_ms),
        "prompt_eval_count": c.prompt_tokens,
        "prompt_eval_duration": _ns(c.stats.prompt_eval_ms),
        "eval_count": c.completion_tokens,
        "eval_duration": _ns(c.stats.eval_ms),
    }


def error_status(exc: BaseException) -> tuple[int, str]:
    """The one map from exceptions to Ollama's status codes and error text."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return 400, f"{where}: {first['msg']}" if where else str(first["msg"])
    if isinstance(exc, NpcError) and exc.grpc_status != "INTERNAL":
        if exc.code == "model_not_found":
            return 404, exc.message  # Ollama's status for a model it does not have
        if isinstance(exc, QueueFull | NotReady):
            return 503, exc.message  # Ollama's "server busy" status
        return exc.http_status, exc.message
    log.error("Ollama call failed", exc_info=exc)
    return 500, _GENERIC_SERVER_ERROR


def error_response(exc: BaseException) -> JSONResponse:
    status, message = error_status(exc)
    return JSONResponse({"error": message}, status_code=status)


class _NdjsonWriter:
    """Writes one NDJSON stream; the headers go out with the first line, so an early error is a plain status."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False
        self.finished = False

    async def line(self, data: dict[str, Any]) -> None:
        if not self.started:
            self.started = True
            await self._send({"type": "http.response.start", "status": 200, "headers": _NDJSON})
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n"
        await self._send({"type": "http.response.body", "body": text.encode(), "more_body": True})

    async def end(self) -> None:
        self.finished = True
        await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    async def fail(self, exc: BaseException) -> None:
        """An HTTP error before the stream started; afterwards an ``{"error": ...}`` line, as Ollama sends."""
        status, message = error_status(exc)
        if not self.started:
            self.started = self.finished = True
            await self._plain_error(status, message)
            return
        await self.line({"error": message})
        await self.end()

    async def _plain_error(self, status: int, message: str) -> None:
        payload = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": payload, "more_body": False})


class _NdjsonStream(Response):
    """A streamed reply run as a call that a disconnect or shutdown cancels (nothing is stored then)."""

    def __init__(self, produce: Callable[[_NdjsonWriter], Awaitable[None]], tracker: CallTracker) -> None:
        super().__init__()
        self._produce = produce
        self._tracker = tracker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        writer = _NdjsonWriter(send)

        async def work() -> None:
            try:
                await self._produce(writer)
            except Exception as exc:
                if not writer.finished:
                    await writer.fail(exc)

        outcome = await run_call(work(), receive, self._tracker)
        if outcome is Outcome.SHUTDOWN and not writer.finished:
            await writer.fail(NotReady("the server shut down before the reply finished; retry"))


# --- routes ------------------------------------------------------------------------------------------------------


class OllamaRoutes:
    """Ollama's routes over one NpcService."""

    def __init__(self, service: NpcService, tracker: CallTracker) -> None:
        self.service = service
        self.tracker = tracker

    def routes(self) -> list[BaseRoute]:
        def route(path: str, endpoint: Callable[[Request], Awaitable[Response]], method: str) -> Route:
            return Route(path, self._guarded(endpoint), methods=[method])

        return [
            route("/api/chat", self.chat, "POST"),
            route("/api/tags", self.tags, "GET"),
            route("/api/show", self.show, "POST"),
            route("/api/ps", self.ps, "GET"),
            route("/api/version", self.version, "GET"),
            Route("/api/{rest:path}", self.unknown, methods=["GET", "POST", "DELETE", "HEAD", "PUT"]),
        ]

    def _guarded(self, endpoint: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        """Admission, a call that a disconnect or shutdown cancels, and Ollama's error map."""

        async def guarded(request: Request) -> Response:
            try:
                self.service.admit(request.headers.get("authorization"))
            except NpcError as exc:
                return error_response(exc)
            await request.body()  # afterwards the only message receive() can bring is the disconnect
            result: list[Response] = []

            async def work() -> None:
                try:
                    result.append(await endpoint(request))
                except Exception as exc:
                    result.append(error_response(exc))

            outcome = await run_call(work(), request.receive, self.tracker)
            if outcome is Outcome.DONE:
                return result[0]
            if outcome is Outcome.SHUTDOWN:
                return error_response(NotReady("the server shut down before the reply finished; retry"))
            return Response(status_code=499)  # the client is gone; nobody reads this

        return guarded

    async def _body(self, request: Request, model: type[_Body]) -> Any:
        raw = await request.body()
        # parse_json: bad UTF-8, deep nesting and 5,000-digit numbers are a 400 naming the body, never a 500.
        data = parse_json(raw) if raw.strip() else {}
        if not isinstance(data, dict):
            raise InvalidArgument("the request body must be a JSON object", param="body")
        return model.model_validate(data)

    def _model_id(self, name: str) -> str:
        """The served model's id for an Ollama model name ("id" or "id:latest"); 404 for any other name."""
        if not name:
            raise InvalidArgument("model is required", param="model")
        served = self.service.model_id()
        if name in (served, tag_of(served)):
            return served
        raise NotFound(f"model {name!r} not found; this server serves {tag_of(served)!r}", code="model_not_found")

    async def chat(self, request: Request) -> Response:
        body: OllamaChatBody = await self._body(request, OllamaChatBody)
        model_id = self._model_id(body.model)
        body.check()
        keep_alive = keep_alive_seconds(body.keep_alive)
        if not body.messages:
            # Ollama's load/unload request: nothing to say, only the model's residency changes.
            load_ms = await self.service.load_model(keep_alive_s=keep_alive)
            return JSONResponse(
                {
                    "model": body.model,
                    "created_at": _now(),
                    "message": {"role": "assistant", "content": ""},
                    "done_reason": "unload" if keep_alive == 0 else "load",
                    "done": True,
                    "load_duration": _ns(load_ms),
                }
            )
        chat = body.to_core(model_id)

        def line(content: str, thinking: str = "") -> dict[str, Any]:
            message = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            return {"model": body.model, "created_at": _now(), "message": message, "done": False, "id": chat.id}

        if not body.stream:
            final = await self.service.chat(chat, keep_alive_s=keep_alive)
            whole = line(final.text, final.reasoning)
            if final.action_calls:
                whole["message"]["tool_calls"] = tool_calls_json(final.action_calls)
            return JSONResponse({**whole, "done": True, **_stats(final)})

        async def produce(out: _NdjsonWriter) -> None:
            final: Completion | None = None
            async with aclosing(self.service.stream_chat(chat, keep_alive_s=keep_alive)) as events:  # type: ignore[type-var]
                async for event in events:
                    if isinstance(event, TextDelta):
                        await out.line(line(event.text))
                    elif isinstance(event, ReasoningDelta):
                        await out.line(line("", event.text))
                    elif isinstance(event, ActionCall):
                        called = line("")
                        called["message"]["tool_calls"] = tool_calls_json((event,))
                        await out.line(called)
                    elif isinstance(event, Completion):
                        final = event
            # Written once the stream is closed, so the model's keep_alive has applied when the client reads it.
            if final is not None:
                await out.line({**line(""), "done": True, **_stats(final)})
            await out.end()

        return _NdjsonStream(produce, self.tracker)

    async def tags(self, request: Request) -> Response:
        return JSONResponse({"models": [_model_entry(card) for card in self.service.list_models()]})

    async def show(self, request: Request) -> Response:
        body: OllamaShowBody = await self._body(request, OllamaShowBody)
        model_id = self._model_id(body.model or body.name)
        card = self.service.get_model(model_id)
        arch = card.extra.get("architecture", "")
        return JSONResponse(
            {
                "modified_at": _iso(card.created),
                "modelfile": "",
                "parameters": "",
                "template": "",
                "details": _details(card),
                "model_info": {
                    "general.architecture": arch,
                    "general.name": card.extra.get("name", card.id),
                    f"{arch or 'model'}.context_length": card.context_size,
                },
                "capabilities": ["completion"],
            }
        )

    async def ps(self, request: Request) -> Response:
        models = []
        for card in self.service.list_models():
            if not card.loaded:
                continue
            expires = self.service.model_expires_at
            entry = _model_entry(card)
            entry.update(
                {
                    "expires_at": _FOREVER if expires is None else _iso(expires),
                    "size_vram": card.file_bytes if card.gpu_layers > 0 else 0,
                    "context_length": card.context_size,
                }
            )
            models.append(entry)
        return JSONResponse({"models": models})

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": npcserver.__version__})

    async def unknown(self, request: Request) -> Response:
        served = (
            "this server mirrors Ollama's POST /api/chat, GET /api/tags, POST /api/show, GET /api/ps "
            "and GET /api/version"
        )
        if request.url.path in _ROUTES:
            message = f"{request.method} is not allowed on {request.url.path}; {served}"
            return JSONResponse({"error": message}, status_code=405)
        return JSONResponse({"error": f"{request.url.path} is not served; {served}"}, status_code=404)
