"""The single-sequence engine: one llama.cpp context, one worker thread, a bounded FIFO queue.

The event loop never runs inference. ``generate()`` puts a job on the queue; the worker thread takes jobs one at
a time, evaluates the prompt (reusing the KV of the longest common prefix with what it evaluated last), samples
token by token and hands text to the loop with ``call_soon_threadsafe``. Cancellation is a flag the worker checks
before every token (and between prompt batches), so a cancelled request stops within a token.
"""

from __future__ import annotations

import os

# ggml's OpenMP threads spin while they wait. On a small shared machine (2 cores, a server plus its clients) the
# spinning threads steal the cores from the one thread that has work: measured here, 2-thread decode fell from
# ~42 to ~10 tok/s and prompt eval took 10x longer. Passive waiting must be chosen before libgomp loads, i.e.
# before llama_cpp is imported; a value set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import asyncio
import ctypes
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import Llama

from npcserver.engine.base import (
    Finished,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    GenerationStats,
    ModelInfo,
    SamplingParams,
    TextDelta,
)
from npcserver.engine.common import GrammarCheck, StreamDecoder, check_request, cpu_count, detect_backend
from npcserver.engine.model import model_id_for
from npcserver.errors import Internal, InvalidArgument, NotReady, NpcError, QueueFull

logger = logging.getLogger(__name__)

#: How many recent tokens the repeat penalty looks at (llama.cpp's default).
_PENALTY_LAST_N = 64
#: How many of the most likely tokens the grammar judges, in turn, before it judges the whole vocabulary.
_GRAMMAR_SHORTLISTS = (1024, 16384)
_NEG_INF = -math.inf


@dataclass(eq=False)
class _Job:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    accepted_at: float
    events: asyncio.Queue[GenerationEvent | BaseException] = field(default_factory=asyncio.Queue)
    #: Set by the consumer side (plain bool: the worker only reads it, and a stale read costs one token).
    cancelled: bool = False

    def emit(self, event: GenerationEvent | BaseException) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the consumer's loop is closed: nobody is listening any more
            self.cancelled = True


class LlamaEngine:
    """An ``Engine`` over llama-cpp-python that runs one sequence at a time."""

    def __init__(
        self,
        *,
        model_path: Path,
        model_id: str | None = None,
        n_gpu_layers: int = -1,
        threads: int = -1,
        ctx_size: int = 0,
        max_queue: int = 16,
        n_batch: int = 512,
    ) -> None:
        """``n_gpu_layers`` -1 offloads all layers, ``threads`` -1 uses every core, ``ctx_size`` 0 takes the
        model's training context, ``max_queue`` bounds the requests waiting behind the running one."""
        if max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        self._model_path = Path(model_path)
        self._model_id = model_id or model_id_for(self._model_path)
        self._n_gpu_layers = n_gpu_layers
        self._threads = threads if threads > 0 else cpu_count()
        self._ctx_size = ctx_size
        self._max_queue = max_queue
        self._n_batch = n_batch

        self._llm: Llama | None = None
        self._info: ModelInfo | None = None
        self._cond = threading.Condition()
        self._waiting: deque[_Job] = deque()
        self._current: _Job | None = None
        self._closing = False
        self._worker: threading.Thread | None = None
        self._start_lock = asyncio.Lock()
        # Grammars llama.cpp has already parsed successfully, so each is checked once (LRU).
        self._grammars = GrammarCheck()

        # Set at load; used by the worker on every token.
        self._vocab: Any = None
        self._ctx: Any = None
        self._n_ctx = 0
        self._n_vocab = 0
        self._piece_buf = ctypes.create_string_buffer(64)
        self._cand: Any = None
        self._prefilters: list[Any] = []
        self._one = (llama_cpp.llama_token_data * 1)()
        self._one_arr = llama_cpp.llama_token_data_array(data=self._one, size=1, selected=-1, sorted=False)

    # -- Engine protocol -------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._info is not None and not self._closing

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            raise NotReady("the model is not loaded yet; retry shortly")
        return self._info

    @property
    def queued(self) -> int:
        """Requests waiting behind the running one."""
        return len(self._waiting)

    async def start(self) -> None:
        async with self._start_lock:
            if self._info is not None:
                return
            if self._closing:
                raise NotReady("the engine is closed")
            self._info = await asyncio.to_thread(self._load)
            self._worker = threading.Thread(target=self._work, name="llama-engine", daemon=True)
            self._worker.start()

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        # llama.cpp tokenization reads only the vocabulary, so it is safe beside a running decode.
        return self._model().tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def detokenize(self, tokens: list[int]) -> str:
        return self._model().detokenize(tokens).decode("utf-8", errors="replace")

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        self._validate(request)
        job = _Job(request=request, loop=asyncio.get_running_loop(), accepted_at=time.perf_counter())
        with self._cond:
            if self._closing:
                raise NotReady("the engine is shutting down")
            if len(self._waiting) >= self._max_queue:
                raise QueueFull(
                    f"the generation queue is full ({self._max_queue} requests waiting); retry later",
                    code="queue_full",
                )
            self._waiting.append(job)
            self._cond.notify()
        try:
            while True:
                event = await job.events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            # Reached on normal end, aclose(), and task cancellation alike. A job still waiting never runs.
            job.cancelled = True
            with self._cond:
                if job in self._waiting:
                    self._waiting.remove(job)

    async def close(self) -> None:
        with self._cond:
            self._closing = True
            dropped = list(self._waiting)
            self._waiting.clear()
            if self._current is not None:
                self._current.cancelled = True
            self._cond.notify_all()
        for job in dropped:
            job.cancelled = True
            job.emit(NotReady("the engine shut down before this request ran"))
        if self._worker is not None:
            await asyncio.to_thread(self._worker.join)
            self._worker = None
        for smpl in self._prefilters:
            llama_cpp.llama_sampler_free(smpl)
        self._prefilters = []
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    # -- loading ---------------------------------------------------------------------------------------------

    def _load(self) -> ModelInfo:
        t0 = time.perf_counter()
        try:
            llm = Llama(
                model_path=str(self._model_path),
                n_gpu_layers=self._n_gpu_layers,
                n_ctx=self._ctx_size,
                n_batch=self._n_batch,
                n_ubatch=self._n_batch,
                n_threads=self._threads,
                n_threads_batch=self._threads,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise InvalidArgument(f"cannot load model {str(self._model_path)!r}: {exc}", param="model") from exc
        load_ms = (time.perf_counter() - t0) * 1000
        self._llm = llm
        self._vocab = llm._model.vocab
        self._ctx = llm.ctx
        # llama.cpp may round a small context up (64 -> 256), but Llama sized its token buffer to what was asked.
        self._n_ctx = min(llm.n_ctx(), len(llm.input_ids))
        self._n_batch = llm.n_batch
        self._n_vocab = llm.n_vocab()
        from llama_cpp import _internals  # the numpy-backed candidate array llama-cpp-python uses itself

        self._cand = _internals.LlamaTokenDataArray(n_vocab=self._n_vocab)
        self._prefilters = [llama_cpp.llama_sampler_init_top_k(k) for k in _GRAMMAR_SHORTLISTS if k < self._n_vocab]

        n_layer = int(llama_cpp.llama_model_n_layer(llm.model))
        backend, devices = detect_backend()
        if backend == "CPU" or not llama_cpp.llama_supports_gpu_offload():
            gpu_layers = 0
        else:
            # n_layer blocks plus the output layer, as llama.cpp counts them when it offloads.
            gpu_layers = n_layer + 1 if self._n_gpu_layers < 0 else min(self._n_gpu_layers, n_layer + 1)
        md = llm.metadata
        bos_id, eos_id = llm.token_bos(), llm.token_eos()
        info = ModelInfo(
            id=self._model_id,
            path=str(self._model_path),
            context_size=self._n_ctx,
            backend=backend,
            gpu_layers=gpu_layers,
            chat_template=md.get("tokenizer.chat_template") or None,
            bos_token=llm._model.token_get_text(bos_id) if bos_id >= 0 else "",
            eos_token=llm._model.token_get_text(eos_id) if eos_id >= 0 else "",
            add_bos=bool(llm._model.add_bos_token()),
            load_ms=load_ms,
            created=int(time.time()),
            extra={
                k: v
                for k, v in {
                    "architecture": md.get("general.architecture", ""),
                    "name": md.get("general.name", ""),
                    "size_label": md.get("general.size_label", ""),
                    "devices": devices,
                    "n_layer": str(n_layer),
                    "threads": str(self._threads),
                }.items()
                if v
            },
        )
        logger.info(
            "model %s loaded in %.0f ms: backend %s (%s), %d/%d layers offloaded to GPU, context %d tokens, "
            "%d threads, chat template: %s",
            info.id,
            load_ms,
            backend,
            devices,
            gpu_layers,
            n_layer + 1,
            self._n_ctx,
            self._threads,
            "yes" if info.chat_template else "none",
        )
        return info

    def _model(self) -> Llama:
        if self._llm is None:
            raise NotReady("the model is not loaded yet; retry shortly")
        return self._llm

    # -- request checks (on the event loop, before anything is queued) ---------------------------------------

    def _validate(self, request: GenerationRequest) -> None:
        if not self.ready:
            raise NotReady("the model is not loaded yet; retry shortly")
        check_request(
            request, context_size=self._n_ctx, n_vocab=self._n_vocab, vocab=self._vocab, grammars=self._grammars
        )

    # -- the worker thread -----------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                job = self._waiting.popleft()
                if job.cancelled:
                    continue
                self._current = job
            try:
                self._run(job)
                if job.cancelled and self._closing:
                    job.emit(NotReady("the engine shut down during this request"))
            except NpcError as exc:
                job.emit(exc)
            except Exception:
                logger.exception("generation %s failed", job.request.request_id or "?")
                # The KV may hold a half-evaluated batch; forget it so the next prompt is evaluated from scratch.
                if self._llm is not None:
                    self._llm.reset()  # type: ignore[no-untyped-call]
                job.emit(Internal("generation failed; see the server log"))
            finally:
                with self._cond:
                    self._current = None

    def _run(self, job: _Job) -> None:
        llm = self._llm
        assert llm is not None
        started = time.perf_counter()
        req = job.request
        params = req.params
        prompt = req.prompt
        n_prompt = len(prompt)
        cached = self._reuse_prefix(prompt)
        chain, grammar = self._samplers(params, req.grammar)
        try:
            todo = prompt[cached:]
            for i in range(0, len(todo), self._n_batch):
                if job.cancelled:
                    return
                llm.eval(todo[i : i + self._n_batch])

            budget = self._n_ctx - n_prompt
            if params.max_tokens > 0:
                budget = min(budget, params.max_tokens)
            decoder = StreamDecoder(params.stop)
            vocab = self._vocab
            emit = job.emit
            finish: FinishReason = "length"
            n_gen = 0
            first_at = 0.0
            while n_gen < budget:
                if job.cancelled:
                    return
                tok = self._sample(chain, grammar)
                if not first_at:
                    first_at = time.perf_counter()
                if llama_cpp.llama_vocab_is_eog(vocab, tok):
                    finish = "stop"
                    break
                n_gen += 1
                text = decoder.push(self._piece(tok))
                if text:
                    emit(TextDelta(text))
                if decoder.stopped:
                    finish = "stop"
                    break
                if n_gen < budget:  # the last token's KV is never needed
                    llm.eval([tok])
            if not decoder.stopped:
                tail = decoder.flush()
                if tail:
                    emit(TextDelta(tail))
            ended = time.perf_counter()
            first_at = first_at or ended
            emit(
                Finished(
                    GenerationStats(
                        finish_reason=finish,
                        prompt_tokens=n_prompt,
                        completion_tokens=n_gen,
                        cached_prompt_tokens=cached,
                        queue_ms=(started - job.accepted_at) * 1000,
                        prompt_eval_ms=(first_at - started) * 1000,
                        eval_ms=(ended - first_at) * 1000,
                        time_to_first_token_ms=(first_at - job.accepted_at) * 1000,
                    )
                )
            )
        finally:
            llama_cpp.llama_sampler_free(chain)
            if grammar is not None:
                llama_cpp.llama_sampler_free(grammar)

    def _reuse_prefix(self, prompt: list[int]) -> int:
        """Keeps the KV of the longest common prefix with the last evaluated sequence; returns its length."""
        llm = self._llm
        assert llm is not None
        n_past = llm.n_tokens
        if n_past > 0:
            m = min(n_past, len(prompt))
            same = llm.input_ids[:m] == np.asarray(prompt[:m], dtype=np.intc)
            common = m if bool(same.all()) else int(np.argmin(same))
            # At least one prompt token must be evaluated: sampling needs the logits of the last position.
            common = min(common, len(prompt) - 1)
            if common > 0 and llm._ctx.kv_cache_seq_rm(-1, common, -1):
                llm.n_tokens = common
                return common
        llm.reset()  # type: ignore[no-untyped-call]  # the next eval() clears the KV from position 0
        return 0

    def _samplers(self, p: SamplingParams, grammar_text: str | None) -> tuple[Any, Any]:
        """The sampling chain, and a separate grammar sampler (see ``_sample`` for why it is separate)."""
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())

        def add(smpl: Any) -> None:
            llama_cpp.llama_sampler_chain_add(chain, smpl)

        if p.repeat_penalty != 1.0:
            add(llama_cpp.llama_sampler_init_penalties(self._n_vocab, _PENALTY_LAST_N, p.repeat_penalty, 0.0, 0.0))
        if p.temperature <= 0:
            add(llama_cpp.llama_sampler_init_greedy())
        else:
            if p.top_k > 0:
                add(llama_cpp.llama_sampler_init_top_k(p.top_k))
            if 0 < p.top_p < 1:
                add(llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
            if p.min_p > 0:
                add(llama_cpp.llama_sampler_init_min_p(p.min_p, 1))
            add(llama_cpp.llama_sampler_init_temp(p.temperature))
            seed = random.getrandbits(32) if p.seed is None else p.seed & 0xFFFFFFFF
            add(llama_cpp.llama_sampler_init_dist(seed))
        grammar = None
        if grammar_text:
            grammar = llama_cpp.llama_sampler_init_grammar(self._vocab, grammar_text.encode("utf-8"), b"root")
            if not grammar:
                llama_cpp.llama_sampler_free(chain)
                raise InvalidArgument("the response format's grammar failed to compile", param="response_format")
        return chain, grammar

    def _sample(self, chain: Any, grammar: Any) -> int:
        if grammar is None:
            return int(llama_cpp.llama_sampler_sample(chain, self._ctx, -1))
        # Applying a grammar to all ~262k vocabulary entries costs ~60 ms, far more than a decode step. As
        # llama.cpp's common sampler does: sample without it and ask the grammar about that one token. When it is
        # rejected, let the grammar judge only the most likely candidates, and the whole vocabulary only when none
        # of those is allowed. (For greedy decoding this picks exactly what the full pass would.)
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, -1), shape=(self._n_vocab,))
        cand = self._cand
        arr = cand.candidates
        cand.copy_logits(logits)
        arr.selected = -1
        llama_cpp.llama_sampler_apply(chain, ctypes.byref(arr))
        tok = int(arr.data[arr.selected].id)
        one = self._one[0]
        one.id, one.logit, one.p = tok, 1.0, 0.0  # type: ignore[assignment]
        self._one_arr.size, self._one_arr.selected, self._one_arr.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(grammar, ctypes.byref(self._one_arr))
        if one.logit == _NEG_INF:
            for shortlist in self._prefilters:
                cand.copy_logits(logits)
                arr.selected = -1
                llama_cpp.llama_sampler_apply(shortlist, ctypes.byref(arr))
                llama_cpp.llama_sampler_apply(grammar, ctypes.byref(arr))
                if np.isfinite(np.ctypeslib.as_array(arr.data, shape=(arr.size,))["logit"]).any():
                    break
            else:
                cand.copy_logits(logits)
                arr.selected = -1
                llama_cpp.llama_sampler_apply(grammar, ctypes.byref(arr))
            llama_cpp.llama_sampler_apply(chain, ctypes.byref(arr))
            tok = int(arr.data[arr.selected].id)
        llama_cpp.llama_sampler_accept(grammar, tok)
        llama_cpp.llama_sampler_accept(chain, tok)
        return tok

    def _piece(self, tok: int) -> bytes:
        buf = self._piece_buf
        n = llama_cpp.llama_token_to_piece(self._vocab, tok, buf, len(buf), 0, False)
        if n < 0:  # a piece longer than the buffer: grow it once
            self._piece_buf = buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, tok, buf, len(buf), 0, False)
        return buf.raw[:n]
