"""The continuous-batching engine: many NPC conversations share every decode step of one llama.cpp context.

One scheduler thread owns the llama context. Each loop it builds one ``llama_batch``: the next token of every
sequence that is generating, plus a chunk of the prompts that are still being read, then calls ``llama_decode``
once and samples one token for every sequence that produced logits. A long prompt is read a chunk per step, so the
NPCs already talking keep talking. The event loop only enqueues jobs and awaits their events; ctypes releases the
GIL during decode, so inference never blocks it.

Per-conversation KV reuse: a request's ``session`` ("persona/conversation") keys a sequence. Its KV stays in the
context after the turn, so the next turn, whose prompt starts with the previous prompt and reply, evaluates only
the new tokens. When every sequence is taken, the least recently used idle one is evicted; its KV is kept in RAM
(``llama_state_seq_get_data``, bounded by ``ram_cache_mb``) and copied back when that conversation returns. Any
prompt prefix that
some sequence already holds (a persona's system prompt and examples, shared by every conversation with that NPC)
is copied with ``llama_memory_seq_cp`` instead of being evaluated again; in a unified KV cache that copy only tags
the existing cells with one more sequence id.

Why a unified KV cache with full-size SWA: with one KV stream per sequence llama.cpp splits a batch into equal
per-sequence ubatches and only groups consecutive sequence ids, so a decode step over scattered sequences runs as
several small ubatches. A unified cache decodes the whole batch at once, and flash attention skips the cells that
the mask hides, so a sequence pays for its own tokens only. Gemma 3's sliding-window layers keep a full-size cache
(``swa_full``) because a windowed cache forgets old positions, and truncating a sequence back to a shared prefix
(the next turn re-tokenizes the reply a little differently) would then attend over a window with holes.

Isolation (llama.cpp #27148): every token in a batch carries exactly one sequence id, and the attention mask lets it
see only cells tagged with that id, so a conversation never sees another's tokens. The randomized-interleaving test
checks it: at temperature 0, conversations whose turns interleave give the replies they give alone. llama.cpp's CPU
kernels are not batch-invariant, though: the rounding of a token's logits depends on how many rows share its
kernels (reading one 300-token prompt whole or in 37-token chunks moved logits by up to 0.9 here, in a single
sequence with nothing else running). So two schedules, solo or not, can pick different tokens where two
candidates are nearly tied; replies are stable wherever the model is decided.
"""

from __future__ import annotations

import os

# ggml's OpenMP threads spin while they wait, which on a small shared machine steals the cores from the threads
# that have work (see llama_engine.py, which measured it). It must be set before llama_cpp loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import asyncio
import ctypes
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp.llama_cpp as ll

from npcserver.engine.base import (
    Finished,
    GenerationEvent,
    GenerationRequest,
    GenerationStats,
    ModelInfo,
    TextDelta,
)
from npcserver.engine.batched_sampling import CandidateBuffer, SequenceSampler
from npcserver.engine.common import GrammarCheck, StreamDecoder, check_request, cpu_count, detect_backend
from npcserver.engine.model import model_id_for
from npcserver.errors import Internal, InvalidArgument, NotReady, NpcError, QueueFull

logger = logging.getLogger(__name__)

#: Context length per sequence when ``ctx_size`` is 0 and the model's own window is larger: every sequence gets
#: its own share of the KV cache, so the model's 32k window times 8 sequences would not fit in RAM.
DEFAULT_CTX_PER_SEQUENCE = 4096

_llama_log_cb: object = None  # keeps the ctypes callback alive for as long as the process runs


def _install_llama_logging() -> None:
    """Routes llama.cpp's own logging into Python logging (warnings and errors only; info is very chatty)."""
    global _llama_log_cb
    if _llama_log_cb is not None:
        return
    llama_logger = logging.getLogger("llama_cpp.native")

    def forward(level: int, text: bytes | None, _user: ctypes.c_void_p) -> None:
        # ggml log levels: 2 info, 3 warn, 4 error, 5 continuation of the previous line.
        if text and level in (3, 4):
            llama_logger.log(
                logging.WARNING if level == 3 else logging.ERROR, "%s", text.decode("utf-8", "replace").rstrip()
            )

    _llama_log_cb = ll.llama_log_callback(forward)
    ll.llama_log_set(_llama_log_cb, ctypes.c_void_p(0))


@dataclass
class _Job:
    """One generation request as the scheduler sees it."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[GenerationEvent | BaseException]
    submitted: float
    #: Set from the event loop thread when the consumer goes away; the scheduler drops the job at its next step.
    cancelled: bool = False
    slot: _Slot | None = None
    sampler: SequenceSampler | None = None
    text: StreamDecoder | None = None
    #: Index into request.prompt of the next prompt token to evaluate.
    prompt_pos: int = 0
    cached: int = 0
    #: The sampled token that the next decode step feeds back (None while the prompt is still being read).
    pending_token: int | None = None
    completion_tokens: int = 0
    admitted: float = 0.0
    first_token: float = 0.0
    done: bool = False

    def emit(self, event: GenerationEvent | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


@dataclass
class _Slot:
    """One llama sequence id and what its KV cells currently hold."""

    seq_id: int
    #: The tokens whose KV is in the cache for this sequence, in position order (position i holds tokens[i]).
    tokens: list[int] = field(default_factory=list)
    session: str | None = None
    job: _Job | None = None
    last_used: float = 0.0


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    # Compare in blocks first: prompts are thousands of tokens and usually share most of them.
    step = 256
    while i + step <= n and a[i : i + step] == b[i : i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


class BatchedEngine:
    """An ``Engine`` that decodes up to ``n_seq`` generations together, keeping each conversation's KV.

    Constructor arguments match ``LlamaEngine`` (``model_path, model_id, n_gpu_layers, threads, ctx_size,
    max_queue, n_batch``) plus:

    - ``n_seq``: sequences held at once (concurrent generations, and conversations whose KV is kept);
    - ``prefill_chunk``: most prompt tokens read per step while other sequences are generating, which bounds how
      long one newcomer's prompt can pause the NPCs already talking (when nobody is generating, a step reads up to
      ``n_batch`` prompt tokens);
    - ``ram_cache_mb``: RAM for the KV of conversations evicted from their sequence (``llama_state_seq_*``), so a
      conversation coming back is restored with a copy instead of reading its history again (0: off).

    ``ctx_size`` is the context of one sequence (0: the model's window, capped at 4096); the KV cache holds
    ``ctx_size * n_seq`` cells. ``max_queue`` bounds the requests waiting for a free sequence; beyond it
    ``generate`` raises ``QueueFull``.
    """

    def __init__(
        self,
        *,
        model_path: str | os.PathLike[str],
        model_id: str | None = None,
        n_gpu_layers: int = -1,
        threads: int = -1,
        ctx_size: int = 0,
        max_queue: int = 16,
        n_batch: int = 512,
        n_seq: int = 8,
        prefill_chunk: int = 256,
        ram_cache_mb: int = 256,
    ) -> None:
        if n_seq < 1:
            raise InvalidArgument("n_seq must be at least 1", param="n_seq")
        # Every generating sequence adds a token to each step, so a step must have room for all of them.
        if n_batch < n_seq:
            raise InvalidArgument(f"n_batch ({n_batch}) must be at least n_seq ({n_seq})", param="n_batch")
        if max_queue < 0:
            raise InvalidArgument("max_queue must not be negative", param="max_queue")
        self._path = Path(model_path)
        self._model_id = model_id or model_id_for(self._path)
        self._n_gpu_layers = n_gpu_layers
        self._threads = threads if threads > 0 else cpu_count()
        self._ctx_req = ctx_size
        self._max_queue = max_queue
        self._n_batch = n_batch
        self._n_seq = n_seq
        self._prefill_chunk = max(1, min(prefill_chunk, n_batch))
        self._ram_cache_bytes = max(0, ram_cache_mb) * 1024 * 1024
        #: Evicted conversations: session -> (tokens, serialized sequence state), least recently saved first.
        self._saved: OrderedDict[str, tuple[list[int], ctypes.Array[ctypes.c_uint8]]] = OrderedDict()
        self._saved_bytes = 0

        self._info: ModelInfo | None = None
        self._model: ll.llama_model_p | None = None
        self._vocab: ll.llama_vocab_p | None = None
        self._ctx: ll.llama_context_p | None = None
        self._mem: ll.llama_memory_t | None = None
        self._batch: ll.llama_batch | None = None
        self._n_ctx_seq = 0
        self._n_vocab = 0
        self._cand: CandidateBuffer | None = None

        self._start_lock = asyncio.Lock()
        self._lock = threading.Condition()
        self._incoming: deque[_Job] = deque()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._slots: list[_Slot] = []
        self._waiting: deque[_Job] = deque()
        self._active: list[_Job] = []
        self._grammars = GrammarCheck()
        #: Counters for tests and the benchmark.
        self.steps = 0
        self.tokens_decoded = 0
        self.grammar_checks = 0
        self.grammar_rejections = 0
        self.restores = 0

    # ----------------------------------------------------------------------------------------------- protocol

    @property
    def ready(self) -> bool:
        return self._info is not None and self._thread is not None and not self._stopping

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            raise NotReady("the model is still loading; retry when the server reports SERVING")
        return self._info

    @property
    def n_seq(self) -> int:
        return self._n_seq

    async def start(self) -> None:
        async with self._start_lock:
            if self._info is not None:
                return
            if self._stopping:
                raise NotReady("the engine is closed")
            await asyncio.to_thread(self._load)
            self._thread = threading.Thread(target=self._run, name="npc-batched-engine", daemon=True)
            self._thread.start()

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        vocab = self._require_vocab()
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
        vocab = self._require_vocab()
        return b"".join(self._piece(vocab, t) for t in tokens).decode("utf-8", errors="replace")

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        job = self._submit(request)
        try:
            while True:
                event = await job.events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            if not job.done:
                job.cancelled = True
                with self._lock:
                    self._lock.notify()

    async def close(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._cand is not None:
            self._cand.close()
            self._cand = None
        self._free()

    # ------------------------------------------------------------------------------------------------ loading

    def _require_vocab(self) -> ll.llama_vocab_p:
        if self._vocab is None:
            raise NotReady("the model is still loading; retry when the server reports SERVING")
        return self._vocab

    def _load(self) -> None:
        t0 = time.perf_counter()
        _install_llama_logging()
        ll.llama_backend_init()
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = self._n_gpu_layers if self._n_gpu_layers >= 0 else 2**31 - 1
        model = ll.llama_model_load_from_file(str(self._path).encode("utf-8"), mparams)
        if not model:
            raise NotReady(f"llama.cpp could not load the model file {str(self._path)!r}")
        self._model = model
        self._vocab = ll.llama_model_get_vocab(model)
        self._n_vocab = ll.llama_vocab_n_tokens(self._vocab)
        n_train = ll.llama_model_n_ctx_train(model)
        per_seq = self._ctx_req if self._ctx_req > 0 else min(n_train, DEFAULT_CTX_PER_SEQUENCE)

        cparams = ll.llama_context_default_params()
        cparams.n_ctx = per_seq * self._n_seq
        cparams.n_batch = self._n_batch
        cparams.n_ubatch = self._n_batch
        cparams.n_seq_max = self._n_seq
        cparams.n_threads = self._threads
        cparams.n_threads_batch = self._threads
        cparams.kv_unified = True
        cparams.swa_full = True
        cparams.no_perf = True
        # Flash attention skips the cells the mask hides, so a sequence's attention costs only its own tokens
        # however many other conversations share the unified cache.
        cparams.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_ENABLED
        ctx = ll.llama_init_from_model(model, cparams)
        if not ctx:
            raise NotReady(
                f"llama.cpp could not create a context of {per_seq} tokens x {self._n_seq} sequences; "
                "lower ctx_size or n_seq"
            )
        self._ctx = ctx
        self._mem = ll.llama_get_memory(ctx)
        self._n_ctx_seq = per_seq
        self._cand = CandidateBuffer(self._n_vocab)
        self._batch = ll.llama_batch_init(self._n_batch, 0, 1)
        self._slots = [_Slot(seq_id=i) for i in range(self._n_seq)]

        n_layer = ll.llama_model_n_layer(model)
        backend, devices = detect_backend()
        if backend == "CPU" or not ll.llama_supports_gpu_offload():
            gpu_layers = 0
        else:
            # n_layer blocks plus the output layer, as llama.cpp counts them when it offloads.
            gpu_layers = n_layer + 1 if self._n_gpu_layers < 0 else min(self._n_gpu_layers, n_layer + 1)
        template = ll.llama_model_chat_template(model, None)
        vocab = self._vocab
        bos = ll.llama_vocab_bos(vocab)
        eos = ll.llama_vocab_eos(vocab)
        load_ms = (time.perf_counter() - t0) * 1000.0
        self._info = ModelInfo(
            id=self._model_id,
            path=str(self._path),
            context_size=per_seq,
            backend=backend,
            gpu_layers=gpu_layers,
            chat_template=template.decode("utf-8", "replace") if template else None,
            bos_token=ll.llama_vocab_get_text(vocab, bos).decode("utf-8", "replace") if bos >= 0 else "",
            eos_token=ll.llama_vocab_get_text(vocab, eos).decode("utf-8", "replace") if eos >= 0 else "",
            add_bos=bool(ll.llama_vocab_get_add_bos(vocab)),
            load_ms=load_ms,
            created=int(time.time()),
            extra={
                "engine": "batched",
                "devices": devices,
                "n_seq": str(self._n_seq),
                "n_batch": str(self._n_batch),
                "threads": str(self._threads),
                "kv_cells": str(per_seq * self._n_seq),
            },
        )
        logger.info(
            "batched engine: %s loaded in %.0f ms; backend %s, %d/%d layers offloaded; %d sequences x %d tokens, "
            "%d threads",
            self._path.name,
            load_ms,
            backend,
            gpu_layers,
            n_layer + 1,
            self._n_seq,
            per_seq,
            self._threads,
        )

    def _free(self) -> None:
        if self._batch is not None:
            ll.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            ll.llama_free(self._ctx)
            self._ctx = None
            self._mem = None
        if self._model is not None:
            ll.llama_model_free(self._model)
            self._model = None
        self._vocab = None
        self._info = None

    @staticmethod
    def _piece(vocab: ll.llama_vocab_p, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = ll.llama_token_to_piece(vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = ll.llama_token_to_piece(vocab, token, buf, -n, 0, False)
        return buf.raw[: max(n, 0)]

    # --------------------------------------------------------------------------------------------- submission

    def _submit(self, request: GenerationRequest) -> _Job:
        if not self.ready:
            raise NotReady("the model is still loading; retry when the server reports SERVING")
        check_request(
            request, context_size=self._n_ctx_seq, n_vocab=self._n_vocab, vocab=self._vocab, grammars=self._grammars
        )
        job = _Job(
            request=request, loop=asyncio.get_running_loop(), events=asyncio.Queue(), submitted=time.perf_counter()
        )
        with self._lock:
            busy = sum(1 for s in self._slots if s.job is not None) + len(self._incoming) + len(self._waiting)
            if busy >= self._n_seq + self._max_queue:
                raise QueueFull(
                    f"the generation queue is full ({self._n_seq} generating, {self._max_queue} waiting); retry later",
                    code="queue_full",
                )
            self._incoming.append(job)
            self._lock.notify()
        return job

    # ---------------------------------------------------------------------------------------------- scheduler

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._stopping and not self._incoming and not self._active and not self._waiting:
                        self._lock.wait()
                    if self._stopping:
                        break
                    self._waiting.extend(self._incoming)
                    self._incoming.clear()
                self._drop_cancelled()
                self._admit()
                if self._active:
                    self._step()
        except Exception as exc:  # a native failure: fail every job rather than hang them
            logger.exception("batched engine: scheduler failed")
            self._fail_all(Internal(f"the engine failed: {exc}"))
        finally:
            with self._lock:
                self._stopping = True
                leftover = list(self._incoming) + list(self._waiting) + list(self._active)
                self._incoming.clear()
                self._waiting.clear()
            for job in leftover:
                if not job.done:
                    self._finish_job(job, error=NotReady("the engine shut down before this request finished"))

    def _fail_all(self, error: NpcError) -> None:
        with self._lock:
            jobs = list(self._incoming) + list(self._waiting) + list(self._active)
            self._incoming.clear()
            self._waiting.clear()
        for job in jobs:
            if not job.done:
                self._finish_job(job, error=error)

    def _drop_cancelled(self) -> None:
        if any(j.cancelled for j in self._waiting):
            for job in [j for j in self._waiting if j.cancelled]:
                self._waiting.remove(job)
                job.done = True
        for job in [j for j in self._active if j.cancelled]:
            self._finish_job(job)

    def _admit(self) -> None:
        """Gives waiting jobs a sequence, FIFO, as long as there are free ones."""
        if not self._waiting:
            return
        kept: deque[_Job] = deque()
        while self._waiting:
            job = self._waiting.popleft()
            slot = self._pick_slot(job)
            if slot is None:
                kept.append(job)
                # A job that waits for its own conversation's sequence should not block the others behind it,
                # but a job waiting for any free sequence means none is free: stop looking.
                if not self._session_busy(job):
                    kept.extend(self._waiting)
                    self._waiting.clear()
                continue
            try:
                self._start_job(job, slot)
            except NpcError as exc:
                slot.job = None
                self._finish_job(job, error=exc)
        self._waiting = kept

    def _session_busy(self, job: _Job) -> bool:
        s = job.request.session
        return s is not None and any(sl.session == s and sl.job is not None for sl in self._slots)

    def _pick_slot(self, job: _Job) -> _Slot | None:
        session = job.request.session
        if session is not None:
            for slot in self._slots:
                if slot.session == session:
                    return None if slot.job is not None else slot
        free = [s for s in self._slots if s.job is None]
        if not free:
            return None
        # Empty sequences first, then sequences with no conversation, then the least recently used conversation.
        free.sort(key=lambda s: (bool(s.tokens), s.session is not None, s.last_used))
        return free[0]

    def _start_job(self, job: _Job, slot: _Slot) -> None:
        assert self._mem is not None and self._vocab is not None
        req = job.request
        prompt = req.prompt
        saved = self._saved.pop(req.session, None) if req.session is not None else None
        if saved is not None:
            self._saved_bytes -= len(saved[1])
        if slot.session != req.session:
            if slot.session is not None and slot.tokens:
                self._save(slot)
            slot.session = req.session
            if saved is not None and _common_prefix(saved[0], prompt) > _common_prefix(slot.tokens, prompt):
                self._restore(slot, saved)
        # Reuse the longest prefix this sequence already holds (the conversation's previous turn); ``_step`` then
        # copies any longer prefix that another sequence holds.
        keep = min(_common_prefix(slot.tokens, prompt), len(prompt) - 1)
        if keep < len(slot.tokens) and not ll.llama_memory_seq_rm(self._mem, slot.seq_id, keep, -1):
            ll.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
            keep = 0
        slot.tokens = slot.tokens[:keep]
        sampler = SequenceSampler(self._vocab, req.params, req.grammar)  # may raise InvalidArgument
        slot.job = job
        slot.last_used = time.monotonic()
        job.slot = slot
        job.sampler = sampler
        job.text = StreamDecoder(req.params.stop)
        job.prompt_pos = keep
        job.cached = keep
        job.admitted = time.perf_counter()
        self._active.append(job)

    def _save(self, slot: _Slot) -> None:
        """Keeps an evicted conversation's KV in RAM (bounded, oldest dropped first)."""
        if self._ram_cache_bytes <= 0 or slot.session is None:
            return
        size = ll.llama_state_seq_get_size(self._ctx, slot.seq_id)
        if size <= 0 or size > self._ram_cache_bytes:
            return
        buf = (ctypes.c_uint8 * size)()
        n = ll.llama_state_seq_get_data(self._ctx, buf, size, slot.seq_id)
        if n <= 0:
            return
        self._saved[slot.session] = (list(slot.tokens), buf)
        self._saved_bytes += len(buf)
        while self._saved_bytes > self._ram_cache_bytes and self._saved:
            _, (_, old) = self._saved.popitem(last=False)
            self._saved_bytes -= len(old)

    def _restore(self, slot: _Slot, saved: tuple[list[int], ctypes.Array[ctypes.c_uint8]]) -> None:
        """Loads a saved conversation into a sequence (replacing what it held); on failure the sequence is empty."""
        assert self._mem is not None
        tokens, buf = saved
        if ll.llama_state_seq_set_data(self._ctx, buf, len(buf), slot.seq_id) > 0:
            slot.tokens = list(tokens)
            self.restores += 1
        else:
            ll.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
            slot.tokens = []

    def _step(self) -> None:
        """One llama_decode over every active sequence, then one sampled token per sequence with logits."""
        assert self._batch is not None and self._ctx is not None
        batch = self._batch
        entries: list[tuple[_Job, int]] = []  # (job, batch index whose logits it samples from)
        n = 0
        # KV length of each sequence before this step adds anything: only those cells exist to be copied.
        committed = {s.seq_id: len(s.tokens) for s in self._slots}
        decoding = [j for j in self._active if j.pending_token is not None]
        reading = [j for j in self._active if j.pending_token is None]
        for job in decoding:
            slot = job.slot
            assert slot is not None and job.pending_token is not None
            self._put(batch, n, job.pending_token, len(slot.tokens), slot.seq_id, True)
            slot.tokens.append(job.pending_token)
            job.pending_token = None
            entries.append((job, n))
            n += 1
        # Prompts are read oldest first; while others generate, only a chunk per step, so nobody stalls long.
        budget = self._n_batch - n
        if decoding:
            budget = min(budget, self._prefill_chunk)
        for k, job in enumerate(reading):
            if budget <= 0:
                break
            self._copy_from_donor(job, committed)
            if self._wait_for_shared_prefix(job, reading[:k], committed):
                continue
            slot = job.slot
            assert slot is not None
            prompt = job.request.prompt
            take = min(budget, len(prompt) - job.prompt_pos)
            for i in range(take):
                tok = prompt[job.prompt_pos + i]
                last = job.prompt_pos + i == len(prompt) - 1
                self._put(batch, n, tok, len(slot.tokens), slot.seq_id, last)
                slot.tokens.append(tok)
                if last:
                    entries.append((job, n))
                n += 1
            job.prompt_pos += take
            budget -= take
        if n == 0:
            return
        batch.n_tokens = n
        rc = ll.llama_decode(self._ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc} for a batch of {n} tokens")
        self.steps += 1
        self.tokens_decoded += n
        for job, idx in entries:
            self._sample(job, idx)

    def _copy_from_donor(self, job: _Job, committed: dict[int, int]) -> None:
        """Extends a prompt being read with the longest further prefix that any sequence already holds.

        A persona's system prompt and examples, shared by every conversation with that NPC, are then computed once:
        in a unified KV cache ``llama_memory_seq_cp`` only tags the donor's cells with one more sequence id.
        """
        slot = job.slot
        assert slot is not None and self._mem is not None
        prompt = job.request.prompt
        limit = len(prompt) - 1  # the last prompt token is always evaluated: its logits give the first token
        best, donor = job.prompt_pos, None
        for other in self._slots:
            held = committed[other.seq_id]
            if other is slot or held <= best:
                continue
            n = min(_common_prefix(other.tokens[:held], prompt), limit)
            if n > best:
                best, donor = n, other
        if donor is None:
            return
        ll.llama_memory_seq_cp(self._mem, donor.seq_id, slot.seq_id, job.prompt_pos, best)
        slot.tokens.extend(prompt[job.prompt_pos : best])
        job.cached += best - job.prompt_pos
        job.prompt_pos = best

    @staticmethod
    def _wait_for_shared_prefix(job: _Job, earlier: list[_Job], committed: dict[int, int]) -> bool:
        """True when an earlier prompt still being read shares this prompt's next tokens: this one waits a step
        and then copies them instead of computing them a second time (16 NPCs arriving at once over 4 personas
        read 4 persona prefixes, not 16)."""
        prompt = job.request.prompt
        for other in earlier:
            assert other.slot is not None
            n = min(_common_prefix(other.request.prompt, prompt), len(prompt) - 1)
            if n > job.prompt_pos and committed[other.slot.seq_id] < n:
                return True
        return False

    @staticmethod
    def _put(batch: ll.llama_batch, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        batch.token[i] = token
        batch.pos[i] = pos  # type: ignore[call-overload]  # llama_cpp mistypes pos as nested
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq_id
        batch.logits[i] = 1 if logits else 0

    def _sample(self, job: _Job, idx: int) -> None:
        assert job.sampler is not None and job.text is not None and job.slot is not None
        assert self._vocab is not None and self._ctx is not None
        if job.cancelled:
            self._finish_job(job)
            return
        assert self._cand is not None
        token = job.sampler.sample(self._ctx, idx, self._cand)
        now = time.perf_counter()
        if job.completion_tokens == 0:
            job.first_token = now
        if ll.llama_vocab_is_eog(self._vocab, token):
            self._finish_job(job, reason="stop")
            return
        job.completion_tokens += 1
        out = job.text.push(self._piece(self._vocab, token))
        if out:
            job.emit(TextDelta(out))
        if job.text.stopped:
            self._finish_job(job, reason="stop")
            return
        max_tokens = job.request.params.max_tokens
        if (max_tokens > 0 and job.completion_tokens >= max_tokens) or len(job.slot.tokens) >= self._n_ctx_seq:
            self._finish_job(job, reason="length")
            return
        job.pending_token = token

    def _finish_job(self, job: _Job, reason: str | None = None, error: BaseException | None = None) -> None:
        """Ends a job: emits its last text and Finished (or the error), and frees its sequence for the next one.

        The sequence keeps its KV (prompt and the tokens decoded so far) for the conversation's next turn.
        """
        if job.done:
            return
        job.done = True
        if job in self._active:
            self._active.remove(job)
        slot = job.slot
        if slot is not None:
            slot.job = None
            slot.last_used = time.monotonic()
        if job.sampler is not None:
            self.grammar_checks += job.sampler.grammar_checks
            self.grammar_rejections += job.sampler.grammar_rejections
            job.sampler.close()
            job.sampler = None
        if error is not None:
            job.emit(error)
            return
        if reason is None:  # cancelled: nobody is listening any more
            return
        assert job.text is not None
        tail = "" if job.text.stopped else job.text.flush()
        if tail:
            job.emit(TextDelta(tail))
        now = time.perf_counter()
        first = job.first_token or now
        stats = GenerationStats(
            finish_reason="stop" if reason == "stop" else "length",
            prompt_tokens=len(job.request.prompt),
            completion_tokens=job.completion_tokens,
            cached_prompt_tokens=job.cached,
            queue_ms=(job.admitted - job.submitted) * 1000.0,
            prompt_eval_ms=(first - job.admitted) * 1000.0,
            eval_ms=(now - first) * 1000.0,
            time_to_first_token_ms=(first - job.submitted) * 1000.0,
        )
        job.emit(Finished(stats))
