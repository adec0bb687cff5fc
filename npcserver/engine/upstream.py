"""An ``Engine`` that sends generation to an inference server that is already running: llama-server (its native
``/completion``) or any OpenAI-compatible ``/v1/completions`` (vLLM, SGLang, llama-server's own, Ollama).

What it keeps local, and why:

- **Tokens.** The core builds prompts as token ids and calls ``tokenize`` synchronously many times per line, so the
  vocabulary is loaded here from the same GGUF (``vocab_only``: megabytes, no weights) instead of asking the
  upstream's ``/tokenize`` over the network on the event loop. ``start()`` checks that the upstream tokenizes a
  probe text to the same ids, so a mismatched ``--model`` is an error at startup, not garbled replies.
- **Prompts as ids.** The prompt is sent as token ids, exactly as the core built it. A conversation's prompt only
  grows at its end between lines, so the upstream's prefix cache (llama-server's ``cache_prompt``, vLLM's and
  SGLang's prefix caching) reuses everything before the new line. The conversation key goes upstream as the
  ``x-npc-conversation`` header for a cache-aware router in front of a GPU pool.
- **A bounded queue.** At most ``n_seq`` requests are in flight upstream and ``max_queue`` more wait here, in
  arrival order; beyond that ``generate`` raises ``QueueFull`` (RESOURCE_EXHAUSTED), as the embedded engine does.
  An upstream that answers 429 or 503 (overloaded, no free slot, still loading) maps to ``QueueFull`` too.
- **Stops and checks.** Stop strings go upstream (so it stops generating) and are applied again here, with the same
  hold-back of a possible partial stop as the embedded engine. Grammars are checked with llama.cpp before anything
  is sent, and the core still validates structured output itself: an upstream that ignores the grammar fails closed.

Closing the stream (``aclose()``, a cancelled task, a deadline) closes the HTTP response; llama-server and vLLM
stop a generation whose client went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import httpx
import llama_cpp as ll
from httpx_sse import EventSource, SSEError

from npcserver.engine.base import (
    EngineStats,
    Finished,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    GenerationStats,
    ModelInfo,
    TextDelta,
)
from npcserver.engine.common import GrammarCheck, StreamDecoder, check_request
from npcserver.engine.model import model_id_for
from npcserver.errors import Internal, InvalidArgument, NotReady, QueueFull

logger = logging.getLogger(__name__)

UpstreamApi = Literal["llama-server", "openai"]

#: The request header that carries the conversation key ("persona/conversation"), here and upstream.
CONVERSATION_HEADER = "x-npc-conversation"
#: Tokenized here and upstream at start(); a mismatch means the two sides use different vocabularies.
_PROBE = "Hello there, traveller! Two silver for the room, 1234 coins in all. Ça va? 東京"
#: How often start() asks a server that is still loading (HTTP 503) or not listening yet.
_POLL_S = 0.25


@dataclass(frozen=True)
class _Vocab:
    model: Any  # llama_model_p loaded with vocab_only
    vocab: Any  # llama_vocab_p
    n_vocab: int
    n_ctx_train: int


class UpstreamEngine:
    """An ``Engine`` over an inference server at ``url``.

    - ``api``: ``"llama-server"`` (``POST /completion`` with token ids and ``cache_prompt``) or ``"openai"``
      (``POST /v1/completions`` with token ids, which vLLM and SGLang accept);
    - ``model_path``: the same GGUF the upstream serves (its vocabulary is loaded here, see the module docs);
    - ``model_id``: the id clients see (default: the file's stem); ``upstream_model``: the model name sent to an
      OpenAI-compatible server (default: the first one its ``/v1/models`` lists);
    - ``ctx_size``: the context of one conversation (0: llama-server's slot size from ``/props``, or the model
      entry's ``max_model_len`` for vLLM, else the GGUF's training context; never more than a llama-server slot);
    - ``n_seq``: requests in flight upstream at once; ``max_queue``: requests that may wait here beyond them;
    - ``grammar_field``: where a GBNF grammar goes in an OpenAI-compatible request, dotted for a nested field
      (``structured_outputs.grammar`` for vLLM, ``guided_grammar`` for vLLM before 0.11, ``ebnf`` for SGLang,
      ``grammar`` for llama-server; ``""`` sends none, for Ollama, and the core's validation still applies);
    - ``api_key``: sent as ``authorization: Bearer`` (llama-server's and vLLM's ``--api-key``);
    - ``read_timeout_s``: longest silence from the upstream during a generation before it counts as gone;
    - ``transport``: an httpx transport to use instead of the network (tests).
    """

    def __init__(
        self,
        *,
        url: str,
        model_path: str | Path,
        api: UpstreamApi = "llama-server",
        model_id: str | None = None,
        upstream_model: str | None = None,
        ctx_size: int = 0,
        n_seq: int = 8,
        max_queue: int = 16,
        grammar_field: str = "grammar",
        api_key: str | None = None,
        read_timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if api not in ("llama-server", "openai"):
            raise InvalidArgument(f"engine_api must be 'llama-server' or 'openai', not {api!r}", param="engine_api")
        if not url.startswith(("http://", "https://")):
            raise InvalidArgument(
                f"engine_url must be an http:// or https:// URL such as http://127.0.0.1:8081, not {url!r}",
                param="engine_url",
            )
        if n_seq < 1:
            raise InvalidArgument(f"n_seq must be at least 1, not {n_seq}", param="n_seq")
        if max_queue < 0:
            raise InvalidArgument(f"max_queue must be 0 or more, not {max_queue}", param="max_queue")
        if ctx_size < 0:
            raise InvalidArgument(f"ctx_size must be 0 (the upstream's own) or more, not {ctx_size}", param="ctx_size")
        self._url = url.rstrip("/")
        self._api: UpstreamApi = api
        self._path = Path(model_path)
        self._model_id = model_id or model_id_for(self._path)
        self._upstream_model = upstream_model
        self._ctx_req = ctx_size
        self._n_seq = n_seq
        self._max_queue = max_queue
        self._grammar_field = grammar_field if api == "openai" else "grammar"
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(connect=connect_timeout_s, read=read_timeout_s, write=30.0, pool=None)
        self._headers = headers
        self._transport = transport

        self._vocab: _Vocab | None = None
        self._info: ModelInfo | None = None
        self._client: httpx.AsyncClient | None = None
        self._grammars = GrammarCheck()
        self._start_lock = asyncio.Lock()
        self._closed = False
        # Admission, on the event loop: requests accepted and not ended, upstream slots free, waiters in order.
        self._outstanding = 0
        self._free = n_seq
        self._waiters: deque[asyncio.Future[None]] = deque()
        #: Counters for metrics (EngineStats). ``steps`` counts events received from the upstream: the health
        #: watchdog reads it as the heartbeat of an engine that holds requests.
        self.steps = 0
        self.prompt_tokens_admitted = 0
        self.cached_prompt_tokens = 0

    # ----------------------------------------------------------------------------------------------- protocol

    @property
    def ready(self) -> bool:
        return self._info is not None and not self._closed

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            raise NotReady(f"the inference server at {self._url} is not connected yet; retry when SERVING")
        return self._info

    @property
    def n_seq(self) -> int:
        """Requests sent upstream at once."""
        return self._n_seq

    @property
    def max_queue(self) -> int:
        """Requests that may wait here beyond the ``n_seq`` in flight."""
        return self._max_queue

    @property
    def outstanding(self) -> int:
        """Requests accepted and not yet ended: the ones upstream and those waiting here."""
        return self._outstanding

    def stats(self) -> EngineStats:
        running = self._n_seq - self._free
        return EngineStats(
            waiting=max(0, self._outstanding - running),
            running=running,
            prompt_tokens=self.prompt_tokens_admitted,
            cached_prompt_tokens=self.cached_prompt_tokens,
            steps=self.steps,
        )

    async def start(self) -> None:
        async with self._start_lock:
            if self._info is not None:
                return
            if self._closed:
                raise NotReady("the engine is closed")
            t0 = time.perf_counter()
            if self._vocab is None:
                self._vocab = await asyncio.to_thread(_load_vocab, self._path)
            self._client = httpx.AsyncClient(
                base_url=self._url, timeout=self._timeout, headers=self._headers, transport=self._transport
            )
            if self._api == "llama-server":
                ctx, extra = await self._probe_llama_server()
            else:
                ctx, extra = await self._probe_openai()
            self._info = self._model_info(ctx, extra, (time.perf_counter() - t0) * 1000)
            logger.info(
                "engine: %s at %s (%s API) for %s; %d tokens per conversation, %d in flight, %d may wait",
                extra.get("upstream_model", "the model"),
                self._url,
                self._api,
                self._path.name,
                ctx,
                self._n_seq,
                self._max_queue,
            )

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        vocab = self._require_vocab().vocab
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (ll.llama_token * cap)()
        n = ll.llama_tokenize(vocab, data, len(data), buf, cap, add_bos, special)
        if n < 0:  # only when the buffer was too small; -n is the size needed
            cap = -n
            buf = (ll.llama_token * cap)()
            n = ll.llama_tokenize(vocab, data, len(data), buf, cap, add_bos, special)
            if n < 0:
                raise Internal(f"tokenization failed ({n})")
        return list(buf[:n])

    def detokenize(self, tokens: list[int]) -> str:
        vocab = self._require_vocab().vocab
        buf = ctypes.create_string_buffer(64)
        out = []
        for t in tokens:
            n = ll.llama_token_to_piece(vocab, t, buf, len(buf), 0, False)
            if n < 0:
                big = ctypes.create_string_buffer(-n)
                n = ll.llama_token_to_piece(vocab, t, big, -n, 0, False)
                out.append(big.raw[: max(n, 0)])
            else:
                out.append(buf.raw[:n])
        return b"".join(out).decode("utf-8", errors="replace")

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        info = self._info
        vocab = self._vocab
        if info is None or vocab is None or self._closed or self._client is None:
            raise NotReady(f"the inference server at {self._url} is not connected; retry when SERVING")
        check_request(
            request, context_size=info.context_size, n_vocab=vocab.n_vocab, vocab=vocab.vocab, grammars=self._grammars
        )
        if self._outstanding >= self._n_seq + self._max_queue:
            raise QueueFull(
                f"the generation queue is full ({self._n_seq} generating, {self._max_queue} waiting); retry later",
                code="queue_full",
            )
        accepted = time.perf_counter()
        self._outstanding += 1
        holding = False
        try:
            await self._acquire()
            holding = True
            if self._closed:
                raise NotReady("the engine is closed")
            queue_ms = (time.perf_counter() - accepted) * 1000
            run = self._stream_llama_server if self._api == "llama-server" else self._stream_openai
            # aclosing: when our consumer stops, the upstream response is closed now, not when collected.
            async with contextlib.aclosing(run(request, info.context_size, accepted, queue_ms)) as events:
                async for event in events:
                    yield event
        finally:
            self._outstanding -= 1
            if holding:
                self._release()

    async def close(self) -> None:
        self._closed = True
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(NotReady("the engine is closed"))
        if self._client is not None:
            await self._client.aclose()  # in-flight streams fail, and generate() reports NotReady
            self._client = None
        self._info = None
        if self._vocab is not None:
            ll.llama_model_free(self._vocab.model)
            self._vocab = None

    # --------------------------------------------------------------------------------------------- admission

    async def _acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # handed a slot in the same moment it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def _release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._free += 1

    # ------------------------------------------------------------------------------------------------ probing

    async def _get_ready(self, path: str) -> Any:
        """GET ``path`` until the server answers (it may still be loading), within start()'s own deadline."""
        client = self._require_client()
        said = False
        while True:
            try:
                resp = await client.get(path)
            except httpx.TransportError as exc:
                if not said:  # once: the server may take minutes to come up
                    logger.info("waiting for the inference server at %s (%s)", self._url, exc)
                    said = True
                await asyncio.sleep(_POLL_S)
                continue
            if resp.status_code == 503:  # loading the model
                if not said:
                    logger.info("waiting for the inference server at %s to load its model", self._url)
                    said = True
                await asyncio.sleep(_POLL_S)
                continue
            if resp.status_code in (401, 403):
                raise InvalidArgument(
                    f"the inference server at {self._url} refused the key (HTTP {resp.status_code}); "
                    "set engine_api_key",
                    param="engine_api_key",
                )
            if resp.status_code != 200:
                raise InvalidArgument(
                    f"the inference server at {self._url} answered GET {path} with HTTP {resp.status_code}; "
                    f"is engine_api={self._api!r} the API it serves?",
                    param="engine_api",
                )
            return resp.json()

    async def _probe_llama_server(self) -> tuple[int, dict[str, str]]:
        await self._get_ready("/health")
        props = await self._get_ready("/props")
        slot_ctx = int(props.get("default_generation_settings", {}).get("n_ctx", 0))
        resp = await self._require_client().post(
            "/tokenize", json={"content": _PROBE, "add_special": False, "parse_special": True}
        )
        resp.raise_for_status()
        self._check_vocab(resp.json().get("tokens"))
        ctx = self._ctx_req or slot_ctx or self._require_vocab().n_ctx_train
        if slot_ctx and ctx > slot_ctx:
            # A prompt longer than the slot would be refused upstream: budget prompts for the slot instead.
            logger.warning(
                "ctx_size %d is more than the %d tokens each llama-server slot holds; using %d (start llama-server "
                "with a larger --ctx-size per --parallel slot for more)",
                ctx,
                slot_ctx,
                slot_ctx,
            )
            ctx = slot_ctx
        model = Path(str(props.get("model_path", ""))).name
        return ctx, {"upstream_model": model, "upstream_slots": str(props.get("total_slots", ""))}

    async def _probe_openai(self) -> tuple[int, dict[str, str]]:
        listed = await self._get_ready("/v1/models")
        models = [m for m in listed.get("data", []) if isinstance(m, dict) and m.get("id")]
        if self._upstream_model is None:
            if not models:
                raise InvalidArgument(f"the inference server at {self._url} lists no models", param="engine_model")
            self._upstream_model = str(models[0]["id"])
        entry = next((m for m in models if m.get("id") == self._upstream_model), None)
        if entry is None:
            names = ", ".join(str(m["id"]) for m in models) or "none"
            raise InvalidArgument(
                f"the inference server at {self._url} does not serve {self._upstream_model!r} (it lists: {names})",
                param="engine_model",
            )
        # vLLM's /tokenize; llama-server's takes "content". A server with neither is trusted, with a warning.
        resp = await self._require_client().post(
            "/tokenize",
            json={"model": self._upstream_model, "prompt": _PROBE, "content": _PROBE, "add_special_tokens": False},
        )
        if resp.status_code == 200 and isinstance(resp.json().get("tokens"), list):
            self._check_vocab(resp.json()["tokens"])
        else:
            logger.warning(
                "the inference server at %s has no /tokenize, so its vocabulary cannot be checked against %s",
                self._url,
                self._path,
            )
        upstream_ctx = int(entry.get("max_model_len") or 0)
        ctx = self._ctx_req or upstream_ctx or self._require_vocab().n_ctx_train
        return ctx, {"upstream_model": self._upstream_model}

    def _check_vocab(self, upstream: Any) -> None:
        ours = self.tokenize(_PROBE, special=True)
        theirs = [t["id"] if isinstance(t, dict) else t for t in upstream or []]
        if theirs != ours:
            raise InvalidArgument(
                f"the inference server at {self._url} tokenizes differently from {self._path} ({theirs[:8]}... vs "
                f"{ours[:8]}...): point model at the GGUF the inference server runs",
                param="model",
            )

    def _model_info(self, ctx: int, extra: dict[str, str], load_ms: float) -> ModelInfo:
        v = self._require_vocab()
        template = ll.llama_model_chat_template(v.model, None)
        bos, eos = ll.llama_vocab_bos(v.vocab), ll.llama_vocab_eos(v.vocab)

        def text(token: int) -> str:
            return ll.llama_vocab_get_text(v.vocab, token).decode("utf-8", "replace") if token >= 0 else ""

        extra = {
            "engine": "upstream",
            "upstream_url": self._url,
            "upstream_api": self._api,
            "architecture": _meta(v.model, "general.architecture"),
            "n_seq": str(self._n_seq),
            **extra,
        }
        return ModelInfo(
            id=self._model_id,
            path=str(self._path),
            context_size=ctx,
            backend="upstream",
            gpu_layers=0,
            chat_template=template.decode("utf-8", "replace") if template else None,
            bos_token=text(bos),
            eos_token=text(eos),
            add_bos=bool(ll.llama_vocab_get_add_bos(v.vocab)),
            load_ms=load_ms,
            created=int(time.time()),
            extra={k: val for k, val in extra.items() if val},
        )

    # ---------------------------------------------------------------------------------------------- streaming

    def _headers_for(self, request: GenerationRequest) -> dict[str, str]:
        headers = {}
        if request.session:
            # Header values are ASCII: percent-encode anything else, so routers hash a stable key.
            headers[CONVERSATION_HEADER] = quote(request.session, safe="/:@-._~")
        if request.request_id:
            headers["x-request-id"] = quote(request.request_id, safe="/:@-._~")
        return headers

    async def _stream_llama_server(
        self, request: GenerationRequest, ctx: int, accepted: float, queue_ms: float
    ) -> AsyncGenerator[GenerationEvent, None]:
        p = request.params
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "stream": True,
            "cache_prompt": True,
            "return_tokens": True,
            # Our max_tokens 0 runs to the end of the context window; llama-server's -1 stops there too.
            "n_predict": p.max_tokens if p.max_tokens > 0 else -1,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "top_k": p.top_k,
            "min_p": p.min_p,
            "repeat_penalty": p.repeat_penalty,
            "stop": list(p.stop),
        }
        if p.seed is not None:
            body["seed"] = p.seed
        if request.grammar:
            body["grammar"] = request.grammar
        decoder = StreamDecoder(p.stop)
        first_token_at: float | None = None
        n_tokens = 0
        async with (
            self._post_stream("/completion", body, request) as resp,
            contextlib.aclosing(self._events(resp)) as events,
        ):
            async for data in events:
                n_tokens = int(data.get("tokens_predicted", n_tokens))
                content = str(data.get("content") or "")
                if first_token_at is None and (data.get("tokens") or content):
                    first_token_at = time.perf_counter()
                text = decoder.push(content.encode("utf-8")) if content else ""
                if text:
                    yield TextDelta(text)
                if decoder.stopped or data.get("stop"):
                    timings = data.get("timings") or {}
                    if decoder.stopped:
                        reason: FinishReason = "stop"
                    else:
                        reason = "length" if data.get("stop_type") == "limit" else "stop"
                        tail = decoder.flush()
                        if tail:
                            yield TextDelta(tail)
                    cached = int(timings.get("cache_n", 0))
                    yield Finished(
                        self._stats(
                            request,
                            reason,
                            n_tokens,
                            cached,
                            accepted,
                            queue_ms,
                            first_token_at,
                            prompt_ms=timings.get("prompt_ms"),
                            eval_ms=timings.get("predicted_ms"),
                        )
                    )
                    return
        raise NotReady(f"the inference server at {self._url} ended the stream without a final result; retry")

    async def _stream_openai(
        self, request: GenerationRequest, ctx: int, accepted: float, queue_ms: float
    ) -> AsyncGenerator[GenerationEvent, None]:
        p = request.params
        body: dict[str, Any] = {
            "model": self._upstream_model,
            "prompt": request.prompt,
            "stream": True,
            "stream_options": {"include_usage": True},
            # OpenAI's default is 16 tokens: "until a stop" has to be spelled out as the rest of the window.
            "max_tokens": p.max_tokens if p.max_tokens > 0 else ctx - len(request.prompt),
            "temperature": p.temperature,
            "top_p": p.top_p,
            # Beyond OpenAI's own fields, in vLLM's and SGLang's names.
            "top_k": p.top_k,
            "min_p": p.min_p,
            "repetition_penalty": p.repeat_penalty,
            "stop": list(p.stop),
        }
        if p.seed is not None:
            body["seed"] = p.seed
        if request.grammar and self._grammar_field:
            _set_dotted(body, self._grammar_field, request.grammar)
        decoder = StreamDecoder(p.stop)
        first_token_at: float | None = None
        n_chunks = 0
        finish: str | None = None
        usage: dict[str, Any] = {}
        async with (
            self._post_stream("/v1/completions", body, request) as resp,
            contextlib.aclosing(self._events(resp)) as events,
        ):
            async for data in events:
                usage = data.get("usage") or usage
                for choice in data.get("choices") or []:
                    content = str(choice.get("text") or "")
                    if content:
                        n_chunks += 1
                        if first_token_at is None:
                            first_token_at = time.perf_counter()
                        text = decoder.push(content.encode("utf-8"))
                        if text:
                            yield TextDelta(text)
                    finish = choice.get("finish_reason") or finish
                if decoder.stopped:
                    break
        if finish is None and not decoder.stopped:
            raise NotReady(f"the inference server at {self._url} ended the stream without a finish reason; retry")
        if not decoder.stopped:
            tail = decoder.flush()
            if tail:
                yield TextDelta(tail)
        reason: FinishReason = "length" if finish == "length" and not decoder.stopped else "stop"
        details = usage.get("prompt_tokens_details") or {}
        yield Finished(
            self._stats(
                request,
                reason,
                int(usage.get("completion_tokens", n_chunks)),
                int(details.get("cached_tokens") or 0),
                accepted,
                queue_ms,
                first_token_at,
            )
        )

    @contextlib.asynccontextmanager
    async def _post_stream(
        self, path: str, body: dict[str, Any], request: GenerationRequest
    ) -> AsyncIterator[httpx.Response]:
        """POSTs a streaming request and yields the response once it is known to be a 200. Maps every failure of
        the upstream, while connecting and while reading in the with block, to an NpcError."""
        client = self._require_client()
        try:
            async with client.stream("POST", path, json=body, headers=self._headers_for(request)) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    raise self._http_error(resp)
                yield resp
        except SSEError as exc:  # before TransportError, which it subclasses
            raise NotReady(f"the inference server at {self._url} did not answer with an event stream: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise NotReady(
                f"the inference server at {self._url} sent nothing for {self._timeout.read} s; retry"
            ) from exc
        except httpx.TransportError as exc:
            if self._closed:
                raise NotReady("the engine is closed") from exc
            raise NotReady(f"cannot reach the inference server at {self._url}: {exc}; retry") from exc

    async def _events(self, resp: httpx.Response) -> AsyncGenerator[dict[str, Any], None]:
        async for sse in EventSource(resp).aiter_sse():
            self.steps += 1
            if sse.data == "[DONE]":
                return
            if not sse.data:
                continue
            data = json.loads(sse.data)
            if "error" in data:
                error = data["error"]
                message = error.get("message", error) if isinstance(error, dict) else error
                raise NotReady(f"the inference server at {self._url} failed mid-reply: {message}; retry")
            yield data

    def _http_error(self, resp: httpx.Response) -> Exception:
        try:
            error = resp.json().get("error", {})
        except (json.JSONDecodeError, AttributeError):
            error = {}
        if isinstance(error, dict):
            message, kind = str(error.get("message", resp.text[:200])), str(error.get("type", ""))
        else:
            message, kind = str(error), ""
        status = resp.status_code
        where = f"the inference server at {self._url}"
        if status in (429, 503):
            return QueueFull(f"{where} is overloaded (HTTP {status}: {message}); retry later", code="upstream_busy")
        if status == 400 and "context" in kind:
            return InvalidArgument(f"{where}: {message}; shorten the conversation or raise ctx_size", param="messages")
        if status in (400, 422):
            return InvalidArgument(f"{where} refused the request (HTTP {status}: {message})")
        if status in (401, 403):
            logger.error("%s refused the key (HTTP %d): set engine_api_key", where, status)
            return Internal(f"{where} refused the key")
        logger.error("%s failed (HTTP %d): %s", where, status, message)
        return NotReady(f"{where} failed (HTTP {status}); retry")

    def _stats(
        self,
        request: GenerationRequest,
        reason: FinishReason,
        completion_tokens: int,
        cached: int,
        accepted: float,
        queue_ms: float,
        first_token_at: float | None,
        *,
        prompt_ms: Any = None,
        eval_ms: Any = None,
    ) -> GenerationStats:
        now = time.perf_counter()
        ttft = ((first_token_at or now) - accepted) * 1000
        prompt_tokens = len(request.prompt)
        self.prompt_tokens_admitted += prompt_tokens
        self.cached_prompt_tokens += cached
        if prompt_ms is not None:
            # Everything before the first token that was not the upstream reading the prompt was waiting: here, on
            # the network, and in the upstream's own queue (a slot still finishing a closed stream, say).
            queue_ms = max(queue_ms, ttft - float(prompt_ms))
        return GenerationStats(
            finish_reason=reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_prompt_tokens=cached,
            queue_ms=queue_ms,
            # The upstream's own timings when it reports them (llama-server), else what is seen from here.
            prompt_eval_ms=float(prompt_ms) if prompt_ms is not None else max(0.0, ttft - queue_ms),
            eval_ms=float(eval_ms) if eval_ms is not None else (now - (first_token_at or now)) * 1000,
            time_to_first_token_ms=ttft,
        )

    # -------------------------------------------------------------------------------------------------- misc

    def _require_vocab(self) -> _Vocab:
        if self._vocab is None:
            raise NotReady(f"the inference server at {self._url} is not connected yet; retry when SERVING")
        return self._vocab

    def _require_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise NotReady("the engine is closed")
        return self._client


def _load_vocab(path: Path) -> _Vocab:
    ll.llama_backend_init()
    params = ll.llama_model_default_params()
    params.vocab_only = True
    model = ll.llama_model_load_from_file(str(path).encode("utf-8"), params)
    if not model:
        raise InvalidArgument(
            f"llama.cpp could not read the vocabulary of {str(path)!r}; pass the GGUF file the inference server runs",
            param="model",
        )
    vocab = ll.llama_model_get_vocab(model)
    return _Vocab(model, vocab, ll.llama_vocab_n_tokens(vocab), ll.llama_model_n_ctx_train(model))


def _meta(model: Any, key: str) -> str:
    buf = ctypes.create_string_buffer(256)
    n = ll.llama_model_meta_val_str(model, key.encode("utf-8"), buf, len(buf))
    return buf.value.decode("utf-8", "replace") if n >= 0 else ""


def _set_dotted(body: dict[str, Any], field: str, value: Any) -> None:
    """``a.b`` sets ``body["a"]["b"]``: vLLM nests its grammar under ``structured_outputs``."""
    *parents, leaf = field.split(".")
    node = body
    for name in parents:
        node = node.setdefault(name, {})
    node[leaf] = value
