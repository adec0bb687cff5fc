"""The engine: many NPC conversations share every decode step of one llama.cpp context (continuous batching).

Design
------
**Slots.** The llama context holds ``n_seq`` sequences; a ``_Slot`` is one llama sequence id plus the tokens whose
KV it holds (position i holds ``tokens[i]``) and the conversation (``session``) they belong to. A generation runs in
one slot. When it ends, the slot keeps its KV, so the conversation's next turn, whose prompt starts with the
previous prompt and reply, goes back to the same slot and evaluates only the new tokens.

**Eviction.** When a request needs a slot and none holds its conversation, it takes a free one: an empty slot
first, then one with no conversation, then the least recently used conversation's. That conversation is evicted:
its KV is copied to RAM (``llama_state_seq_get_data``, bounded by ``ram_cache_mb``, oldest dropped first) and
copied back (restored) when it returns, instead of reading its history again. With a disk tier (``kv_disk_dir``,
``kv_disk_mb``), what the RAM tier would drop goes to a file instead (``npcserver.engine.kv_disk``: least recently
written deleted first, every file checked against its conversation and the model before use), so a town's worth of
idle NPCs come back without reading their history. Whatever tier it comes from, a saved KV is only used for the
prefix its tokens share with the new prompt.

**Prefix copies.** Any prompt prefix that another slot already holds (a persona's system prompt and examples,
shared by every conversation with that NPC) is copied with ``llama_memory_seq_cp`` rather than evaluated again; in
a unified KV cache the copy only tags the existing cells with one more sequence id. When several new prompts that
share a prefix arrive together, the first reads it and the others wait a step and copy it.

**A step.** Each loop of the scheduler thread (1) takes what the event loop handed over (new requests,
cancellations), (2) decides admissions (which waiting request gets which slot) and runs them (evict, restore, trim
the slot to the prefix it shares), then (3) decides the batch (the next token of every generating sequence, plus
prompt chunks and prefix copies for the sequences still reading; while others generate, at most
``prefill_chunk`` prompt tokens, so nobody stalls long; background requests, such as a summary being written, read
their prompts only in steps where no player's prompt is being read, ``BACKGROUND_CHUNK`` tokens a step) and runs
it: one ``llama_decode``, then one sampled token per sequence that produced logits. Deciding (``_plan_*``) only
reads state; running (``_admit``, ``_run_step``) changes it. A sequence's phase is its ``_Status``: WAITING (no
slot yet) -> READING (prompt being evaluated) -> GENERATING (``pending`` is the sampled token the next step feeds
back) -> FINISHED.

**Threads.** The event loop (``generate``, ``close``, ``tokenize``) and the scheduler thread share one thing that
both change, the ``_Mailbox``, and only under ``BatchedEngine._lock``, which both sides take: new requests,
cancellations, the stop flag, and the set of open requests that the queue bound counts. Everything else that
changes after loading (the llama context, batch, slots, waiting and running lists, saved KV, every ``_Seq`` and its
sampler) belongs to the scheduler thread alone. The scheduler talks back only through ``_Stream.emit``
(``call_soon_threadsafe``), and publishes plain counters and the ``_gauges`` tuple, which other threads only read
(``stats()``; a value may be a step old). What the event loop reads without the lock is set once by ``_load``,
before the scheduler starts (model info, vocabulary), and tokenization reads only the vocabulary, so it is safe
beside a decode. ctypes releases the GIL during decode, so inference never blocks the event loop.

Why a unified KV cache with full-size SWA: with one KV stream per sequence llama.cpp splits a batch into equal
per-sequence ubatches and only groups consecutive sequence ids, so a decode step over scattered sequences runs as
several small ubatches. A unified cache decodes the whole batch at once, and flash attention skips the cells that
the mask hides, so a sequence pays for its own tokens only. Gemma 3's sliding-window layers keep a full-size cache
(``swa_full``) because a windowed cache forgets old positions, and truncating a sequence back to a shared prefix
(the next turn re-tokenizes the reply a little differently) would then attend over a window with holes. Even
with ``swa_full``, llama.cpp gives a cell to new tokens once it is outside its own sequence's window, so a long
sequence can still lose early positions from the windowed layers; ``_holds`` checks what the cache reports after
every trim, copy and restore, and a slot whose windowed cache no longer ends at its last token is read again
(llama_decode refuses such a batch). Gaps lower in the window are not detected: after a trim or a copy from a long
sequence, the first new tokens of the windowed layers may attend over a window missing some of its oldest
positions (an open problem; a fix belongs in llama.cpp's cell reuse under ``swa_full``).

Isolation (llama.cpp #27148): every token in a batch carries exactly one sequence id, and the attention mask lets it
see only cells tagged with that id, so a conversation never sees another's tokens. The randomized-interleaving test
checks it: at temperature 0, conversations whose turns interleave give the replies they give alone. llama.cpp's CPU
kernels are not batch-invariant, though: the rounding of a token's logits depends on how many rows share its
kernels (reading one 300-token prompt whole or in 37-token chunks moved logits by up to 0.9 here, in a single
sequence with nothing else running). So two schedules, solo or not, can pick different tokens where two
candidates are nearly tied; replies are stable wherever the model is decided.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import ctypes
import enum
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp.llama_cpp as ll

from npcserver.engine.base import (
    STEP_SECONDS_BUCKETS,
    EngineStats,
    Finished,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    GenerationStats,
    ModelInfo,
    TextDelta,
)
from npcserver.engine.batched_sampling import CandidateBuffer, SequenceSampler
from npcserver.engine.common import GrammarCheck, StreamDecoder, check_request, cpu_count, detect_backend
from npcserver.engine.kv_disk import KvDiskCache
from npcserver.engine.model import model_id_for
from npcserver.errors import Internal, InvalidArgument, NotReady, NpcError, QueueFull

logger = logging.getLogger(__name__)

#: Context length per sequence when ``ctx_size`` is 0 and the model's own window is larger: every sequence gets
#: its own share of the KV cache, so the model's 32k window times 8 sequences would not fit in RAM.
DEFAULT_CTX_PER_SEQUENCE = 4096
#: Most prompt tokens a background request reads in one step (about 0.1 s on 2 CPU cores for the embedded model).
BACKGROUND_CHUNK = 64

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


class _Status(enum.Enum):
    """Where a sequence is in its life. Only the scheduler thread reads or changes it."""

    WAITING = "waiting"  # accepted, no slot yet
    READING = "reading"  # holds a slot; prompt tokens are still being evaluated
    GENERATING = "generating"  # holds a slot; ``pending`` is the sampled token the next step feeds back
    FINISHED = "finished"  # ended (stop, length, error or cancelled); holds nothing


@dataclass(eq=False)
class _Stream:
    """The consumer's end of one generation. Made on the event loop; the scheduler only calls ``emit``."""

    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[GenerationEvent | BaseException] = field(default_factory=asyncio.Queue)

    def emit(self, event: GenerationEvent | BaseException) -> None:
        with contextlib.suppress(RuntimeError):  # the consumer's loop is closed: nobody is listening any more
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)


@dataclass(eq=False)
class _Clock:
    """When a generation reached each stage (``time.perf_counter``), for its stats."""

    submitted: float
    admitted: float = 0.0
    first_token: float = 0.0


@dataclass(eq=False)
class _Output:
    """The sampling side of an admitted sequence: sampler state, streamed-text decoding, tokens generated."""

    sampler: SequenceSampler
    text: StreamDecoder
    tokens: int = 0


@dataclass(eq=False)
class _Seq:
    """One generation as the scheduler sees it (scheduler thread only, once handed over)."""

    request: GenerationRequest
    stream: _Stream
    clock: _Clock
    status: _Status = _Status.WAITING
    slot: _Slot | None = None
    out: _Output | None = None
    #: Index into request.prompt of the next prompt token to evaluate (READING).
    prompt_pos: int = 0
    #: Prompt tokens whose KV was reused (kept in the slot, restored or copied) rather than evaluated.
    cached: int = 0
    #: The token sampled last step, fed back by the next one (GENERATING).
    pending: int = 0


@dataclass(eq=False)
class _Slot:
    """One llama sequence id and what its KV cells currently hold (scheduler thread only)."""

    seq_id: int
    #: The tokens whose KV is in the cache for this sequence, in position order (position i holds tokens[i]).
    tokens: list[int] = field(default_factory=list)
    session: str | None = None
    #: The generation running in this slot, if any.
    seq: _Seq | None = None
    last_used: float = 0.0


@dataclass(eq=False)
class _Mailbox:
    """All the event loop and the scheduler thread share. Guarded by ``BatchedEngine._lock``, which both take."""

    #: Accepted requests the scheduler has not picked up yet, in arrival order.
    submitted: deque[_Seq] = field(default_factory=deque)
    #: Requests whose consumer went away before they ended.
    cancelled: list[_Seq] = field(default_factory=list)
    #: Requests accepted and not yet ended (waiting or running): what the queue bound counts. Removed by whichever
    #: side ends a request first (the scheduler when it finishes, the consumer when it stops listening).
    open: set[_Seq] = field(default_factory=set)
    stopping: bool = False


@dataclass(eq=False)
class _Read:
    """Prompt work planned for one READING sequence in one step."""

    seq: _Seq
    #: A slot that already holds the prompt up to ``copy_to``, to copy from instead of evaluating; or None.
    donor: _Slot | None
    #: The prompt position reached after the copy (the sequence's own position when there is no donor).
    copy_to: int
    #: Prompt tokens to evaluate after the copy (0: it waits a step for a shared prefix another one is reading).
    take: int


@dataclass(eq=False)
class _StepPlan:
    """One step's batch: every GENERATING sequence's pending token, then prompt reads in arrival order."""

    decode: list[_Seq]
    reads: list[_Read]
    n_tokens: int


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

    - ``model_path``, ``model_id``: the GGUF file, and the id clients see (default: the file name's stem);
    - ``n_gpu_layers``: layers offloaded to the GPU (-1: all); ``threads``: CPU threads (-1: every core);
    - ``ctx_size``: the context of one sequence (0: the model's window, capped at 4096); the KV cache holds
      ``ctx_size * n_seq`` cells. A generation ends with ``length`` when prompt plus reply fill it;
    - ``n_seq``: sequences held at once (concurrent generations, and conversations whose KV is kept);
    - ``max_queue``: requests that may wait beyond the ``n_seq`` running ones; beyond it ``generate`` raises
      ``QueueFull``;
    - ``n_batch``: most tokens in one decode step;
    - ``prefill_chunk``: most prompt tokens read per step while other sequences are generating, which bounds how
      long one newcomer's prompt can pause the NPCs already talking (when nobody is generating, a step reads up to
      ``n_batch`` prompt tokens);
    - ``ram_cache_mb``: RAM for the KV of conversations evicted from their sequence (``llama_state_seq_*``), so a
      conversation coming back is restored with a copy instead of reading its history again (0: off);
    - ``kv_disk_dir``, ``kv_disk_mb``: a folder for the KV that the RAM tier has no room for, and the most it may
      hold (None or 0: no disk tier).

    Bad arguments raise ``InvalidArgument``; a model llama.cpp cannot load makes ``start()`` raise
    ``InvalidArgument`` naming the file.
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
        kv_disk_dir: str | os.PathLike[str] | None = None,
        kv_disk_mb: int = 0,
    ) -> None:
        if n_seq < 1:
            raise InvalidArgument(f"n_seq must be at least 1, not {n_seq}", param="n_seq")
        # Every generating sequence adds a token to each step, so a step must have room for all of them.
        if n_batch < n_seq:
            raise InvalidArgument(f"n_batch ({n_batch}) must be at least n_seq ({n_seq})", param="n_batch")
        if max_queue < 0:
            raise InvalidArgument(f"max_queue must be 0 or more, not {max_queue}", param="max_queue")
        if ctx_size < 0:
            raise InvalidArgument(f"ctx_size must be 0 (the model's own) or more, not {ctx_size}", param="ctx_size")
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
        if kv_disk_mb < 0:
            raise InvalidArgument(f"kv_disk_mb must be 0 (off) or more, not {kv_disk_mb}", param="kv_disk_mb")
        self._kv_disk_dir = Path(kv_disk_dir) if kv_disk_dir is not None and kv_disk_mb > 0 else None
        self._kv_disk_bytes = kv_disk_mb * 1024 * 1024
        #: The disk tier (made by _load; the scheduler thread's own afterwards).
        self.kv_disk: KvDiskCache | None = None

        # Set by _load before the scheduler starts, then only read (the llama handles by the scheduler alone).
        self._info: ModelInfo | None = None
        self._model: ll.llama_model_p | None = None
        self._vocab: ll.llama_vocab_p | None = None
        self._ctx: ll.llama_context_p | None = None
        self._mem: ll.llama_memory_t | None = None
        self._batch: ll.llama_batch | None = None
        self._n_ctx_seq = 0
        self._n_swa = 0
        self._n_vocab = 0
        self._grammars = GrammarCheck()  # thread-safe on its own

        # Shared with the scheduler thread: only under _lock.
        self._lock = threading.Condition()
        self._box = _Mailbox()

        # The event loop's own.
        self._start_lock = asyncio.Lock()
        self._thread: threading.Thread | None = None

        # The scheduler thread's own.
        self._slots: list[_Slot] = []
        self._waiting: deque[_Seq] = deque()
        self._running: list[_Seq] = []
        #: Evicted conversations: session -> (tokens, serialized sequence state), least recently saved first.
        self._saved: OrderedDict[str, tuple[list[int], ctypes.Array[ctypes.c_uint8]]] = OrderedDict()
        self._saved_bytes = 0
        self._cand: CandidateBuffer | None = None
        self._piece_buf = ctypes.create_string_buffer(64)
        #: Counters for tests and the benchmark (written by the scheduler; a reader may see a value a step old).
        self.steps = 0
        self.tokens_decoded = 0
        self.grammar_checks = 0
        self.grammar_rejections = 0
        self.restores = 0
        self.evictions = 0
        self.prompt_tokens_admitted = 0
        self.cached_prompt_tokens = 0
        self.step_seconds = 0.0
        self._step_buckets = [0] * (len(STEP_SECONDS_BUCKETS) + 1)
        #: (waiting, running, KV cells held), published by the scheduler after each loop as one tuple, so a reader
        #: on another thread sees a consistent snapshot without taking the lock.
        self._gauges = (0, 0, 0)

    # ----------------------------------------------------------------------------------------------- protocol

    @property
    def ready(self) -> bool:
        with self._lock:
            stopping = self._box.stopping
        return self._info is not None and self._thread is not None and not stopping

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            raise NotReady("the model is still loading; retry when the server reports SERVING")
        return self._info

    @property
    def n_seq(self) -> int:
        return self._n_seq

    @property
    def max_queue(self) -> int:
        """Requests that may wait beyond the ``n_seq`` running ones."""
        return self._max_queue

    @property
    def outstanding(self) -> int:
        """Requests accepted and not yet ended: the running ones and those waiting behind them."""
        with self._lock:
            return len(self._box.open)

    def stats(self) -> EngineStats:
        """A snapshot of the scheduler for metrics: cheap, lock-free but for one short read, and at most a step old."""
        waiting, running, kv_tokens = self._gauges
        with self._lock:
            open_requests = len(self._box.open)
        return EngineStats(
            # Requests still in the mailbox are waiting too: count every open request that holds no sequence.
            waiting=max(waiting, open_requests - running),
            running=running,
            kv_tokens=kv_tokens,
            kv_capacity=self._n_ctx_seq * self._n_seq,
            evictions=self.evictions,
            restores=self.restores,
            prompt_tokens=self.prompt_tokens_admitted,
            cached_prompt_tokens=self.cached_prompt_tokens,
            steps=self.steps,
            step_seconds=self.step_seconds,
            step_buckets=tuple(self._step_buckets),
        )

    async def start(self) -> None:
        async with self._start_lock:
            if self._info is not None:
                return
            with self._lock:
                if self._box.stopping:
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
        buf = ctypes.create_string_buffer(64)  # not the scheduler's buffer: this runs on the caller's thread
        return b"".join(_piece(vocab, t, buf) for t in tokens).decode("utf-8", errors="replace")

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        seq = self._submit(request)
        events = seq.stream.events
        try:
            while True:
                event = await events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            # Normal end, aclose() and task cancellation alike: if the request has not ended, the scheduler drops it.
            with self._lock:
                if seq in self._box.open:
                    self._box.open.discard(seq)
                    self._box.cancelled.append(seq)
                    self._lock.notify()

    async def close(self) -> None:
        with self._lock:
            self._box.stopping = True
            self._lock.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
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
            raise InvalidArgument(
                f"llama.cpp could not load the model file {str(self._path)!r} (the server log has its reason); "
                "pass a complete GGUF file of an architecture this llama.cpp supports",
                param="model",
            )
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
            self._free()
            raise InvalidArgument(
                f"llama.cpp could not create a context of {per_seq} tokens x {self._n_seq} sequences "
                "(the server log has its reason); lower ctx_size or parallel",
                param="ctx_size",
            )
        self._ctx = ctx
        self._mem = ll.llama_get_memory(ctx)
        self._n_ctx_seq = per_seq
        self._n_swa = int(ll.llama_model_n_swa(model))
        self._cand = CandidateBuffer(self._n_vocab)
        self._batch = ll.llama_batch_init(self._n_batch, 0, 1)
        self._slots = [_Slot(seq_id=i) for i in range(self._n_seq)]
        if self._kv_disk_dir is not None:
            # A file is restored only into the same model file and context layout it was written from.
            st = self._path.stat()
            fingerprint = f"{self._path.resolve()}|{st.st_size}|{st.st_mtime_ns}|ctx={per_seq}|swa_full|unified"
            self.kv_disk = KvDiskCache(self._kv_disk_dir, self._kv_disk_bytes, fingerprint)

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
        extra = {
            "engine": "batched",
            "architecture": _meta(model, "general.architecture"),
            "name": _meta(model, "general.name"),
            "size_label": _meta(model, "general.size_label"),
            "devices": devices,
            "n_layer": str(n_layer),
            "n_seq": str(self._n_seq),
            "n_batch": str(self._n_batch),
            "threads": str(self._threads),
            "kv_cells": str(per_seq * self._n_seq),
        }
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
            extra={k: v for k, v in extra.items() if v},
        )
        logger.info(
            "engine: %s loaded in %.0f ms; backend %s, %d/%d layers offloaded; %d sequences x %d tokens, %d threads",
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
        """Frees the native objects; only once the scheduler thread has ended (or never started)."""
        if self._cand is not None:
            self._cand.close()
            self._cand = None
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

    # --------------------------------------------------------------------------------------------- submission

    def _submit(self, request: GenerationRequest) -> _Seq:
        """Checks a request and hands it to the scheduler (event loop side)."""
        with self._lock:
            if self._box.stopping:
                raise NotReady("the engine is shut down")
        if self._info is None or self._thread is None:
            raise NotReady("the model is still loading; retry when the server reports SERVING")
        check_request(
            request, context_size=self._n_ctx_seq, n_vocab=self._n_vocab, vocab=self._vocab, grammars=self._grammars
        )
        seq = _Seq(request=request, stream=_Stream(asyncio.get_running_loop()), clock=_Clock(time.perf_counter()))
        with self._lock:
            box = self._box
            if box.stopping:
                raise NotReady("the engine is shutting down")
            if len(box.open) >= self._n_seq + self._max_queue:
                raise QueueFull(
                    f"the generation queue is full ({self._n_seq} generating, {self._max_queue} waiting); retry later",
                    code="queue_full",
                )
            box.open.add(seq)
            box.submitted.append(seq)
            self._lock.notify()
        return seq

    # ---------------------------------------------------------------------------------- scheduler: the loop

    def _run(self) -> None:
        error: NpcError = NotReady("the engine shut down before this request finished")
        try:
            while self._take_mail():
                if self._waiting:
                    for seq, slot in self._plan_admissions():
                        self._admit(seq, slot)
                if self._running:
                    plan = self._plan_step()
                    if plan.n_tokens:
                        self._run_step(plan)
                self._gauges = (len(self._waiting), len(self._running), sum(len(s.tokens) for s in self._slots))
        except Exception as exc:  # a native failure: fail every request rather than hang them
            logger.exception("engine: scheduler failed")
            error = Internal(f"the engine failed: {exc}")
        finally:
            with self._lock:
                self._box.stopping = True
                self._waiting.extend(self._box.submitted)
                self._box.submitted.clear()
                self._box.cancelled.clear()
            for seq in [*self._running, *self._waiting]:
                self._fail(seq, error)

    def _take_mail(self) -> bool:
        """Waits for work, then takes new requests and cancellations from the mailbox; False once stopping."""
        with self._lock:
            box = self._box
            while not (box.stopping or box.submitted or box.cancelled or self._running or self._waiting):
                self._lock.wait()
            if box.stopping:
                return False
            self._waiting.extend(box.submitted)
            box.submitted.clear()
            cancelled, box.cancelled = box.cancelled, []
        for seq in cancelled:
            if seq.status is not _Status.FINISHED:
                self._retire(seq)  # nobody is listening: no event
        return True

    # ------------------------------------------------------------------------------ scheduler: admissions

    def _plan_admissions(self) -> list[tuple[_Seq, _Slot]]:
        """Decides which waiting requests get which slot this step (FIFO, as long as slots are free)."""
        # The plan's own view of the slots, updated as it hands them out: seq_id -> (session, busy).
        view = {s.seq_id: (s.session, s.seq is not None) for s in self._slots}
        plan: list[tuple[_Seq, _Slot]] = []
        for seq in self._waiting:
            session = seq.request.session
            slot = self._pick_slot(session, view)
            if slot is None:
                # A request waiting for its own conversation's slot does not hold up the others behind it, but one
                # waiting for any free slot means none is free.
                if session is not None and any(sess == session and busy for sess, busy in view.values()):
                    continue
                break
            view[slot.seq_id] = (session, True)
            plan.append((seq, slot))
        return plan

    def _pick_slot(self, session: str | None, view: dict[int, tuple[str | None, bool]]) -> _Slot | None:
        if session is not None:
            for slot in self._slots:
                held, busy = view[slot.seq_id]
                if held == session:
                    return None if busy else slot
        free = [s for s in self._slots if not view[s.seq_id][1]]
        if not free:
            return None
        # Empty slots first, then slots with no conversation, then the least recently used conversation.
        return min(free, key=lambda s: (bool(s.tokens), view[s.seq_id][0] is not None, s.last_used))

    def _admit(self, seq: _Seq, slot: _Slot) -> None:
        """Runs one admission: evicts the slot's conversation if it is another's, restores this conversation's saved
        KV if that reuses more, trims the slot to the prefix it shares with the prompt, and sets up sampling."""
        assert self._mem is not None and self._vocab is not None
        req = seq.request
        prompt = req.prompt
        saved: tuple[list[int], ctypes.Array[ctypes.c_uint8]] | None = None
        if req.session is not None:
            saved = self._saved.pop(req.session, None)
            if saved is not None:
                self._saved_bytes -= len(saved[1])
            if self.kv_disk is not None and slot.session != req.session:
                on_disk = self.kv_disk.take(req.session)
                if saved is None and on_disk is not None:
                    tokens, state = on_disk
                    saved = (tokens, (ctypes.c_uint8 * len(state)).from_buffer(state))
        if slot.session != req.session:
            if slot.session is not None and slot.tokens:
                self.evictions += 1
                self._save(slot)
            slot.session = req.session
            if saved is not None and _common_prefix(saved[0], prompt) > _common_prefix(slot.tokens, prompt):
                self._restore(slot, saved)
        # Keep the longest prefix this slot already holds (the conversation's previous turn); the step then copies
        # any longer prefix that another slot holds. The last prompt token is always evaluated: its logits give
        # the first token.
        keep = min(_common_prefix(slot.tokens, prompt), len(prompt) - 1)
        if keep < len(slot.tokens) and not ll.llama_memory_seq_rm(self._mem, slot.seq_id, keep, -1):
            ll.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
            keep = 0
        del slot.tokens[keep:]
        if not self._holds(slot):
            logger.warning("engine: slot %d lost KV below position %d; reading it again", slot.seq_id, keep)
            ll.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
            slot.tokens.clear()
            keep = 0
        slot.last_used = time.monotonic()
        try:
            sampler = SequenceSampler(self._vocab, req.params, req.grammar, req.grammar_triggers)
        except NpcError as exc:
            self._fail(seq, exc)
            return
        self._waiting.remove(seq)
        slot.seq = seq
        seq.slot = slot
        seq.out = _Output(sampler, StreamDecoder(req.params.stop))
        seq.prompt_pos = seq.cached = keep
        seq.clock.admitted = time.perf_counter()
        seq.status = _Status.READING
        self._running.append(seq)

    def _holds(self, slot: _Slot) -> bool:
        """Whether the KV cache really holds what ``slot.tokens`` says, as far as llama.cpp lets us see.

        llama.cpp's sliding-window cache hands a cell to new tokens once it is outside its own sequence's window,
        even with ``swa_full``: a long sequence's early positions can vanish from the windowed layers. Trimming such
        a sequence back, copying its prefix to another, or restoring it, can then leave a gap where the new tokens'
        window needs cells (llama_decode refuses the batch when the newest is missing). So after each of those the
        windowed cache must still end at the slot's last token; if not, the slot is read again rather than trusted.
        """
        assert self._mem is not None
        n = len(slot.tokens)
        last = int(ll.llama_memory_seq_pos_max(self._mem, slot.seq_id))
        if n == 0:
            return last < 0
        # Only the newest position is checked: requiring the whole window below it as well made every long
        # conversation's next turn read its window again (llama.cpp reuses the cells just below a sequence's window
        # as it goes), seconds a line; a gap there is what the design note describes.
        return last == n - 1

    def _save(self, slot: _Slot) -> None:
        """Keeps an evicted conversation's KV in RAM (bounded, oldest first out); what leaves RAM, or does not fit
        in it, goes to the disk tier when there is one."""
        disk = self.kv_disk
        if (self._ram_cache_bytes <= 0 and disk is None) or slot.session is None:
            return
        size = ll.llama_state_seq_get_size(self._ctx, slot.seq_id)
        if size <= 0:
            return
        buf = (ctypes.c_uint8 * size)()
        n = ll.llama_state_seq_get_data(self._ctx, buf, size, slot.seq_id)
        if n <= 0:
            return
        if size > self._ram_cache_bytes:
            if disk is not None:
                disk.put(slot.session, slot.tokens, memoryview(buf).cast("B")[:n])
            return
        self._saved[slot.session] = (list(slot.tokens), buf)
        self._saved_bytes += len(buf)
        while self._saved_bytes > self._ram_cache_bytes and self._saved:
            session, (tokens, old) = self._saved.popitem(last=False)
            self._saved_bytes -= len(old)
            if disk is not None:
                disk.put(session, tokens, memoryview(old).cast("B"))

    def _restore(self, slot: _Slot, saved: tuple[list[int], ctypes.Array[ctypes.c_uint8]]) -> None:
        """Loads a saved conversation into a slot (replacing what it held); on failure the slot is empty."""
        assert self._mem is not None
        tokens, buf = saved
        slot.tokens = list(tokens)
        if ll.llama_state_seq_set_data(self._ctx, buf, len(buf), slot.seq_id) > 0 and self._holds(slot):
            self.restores += 1
        else:
            ll.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
            slot.tokens = []

    # ---------------------------------------------------------------------------------- scheduler: a step

    def _plan_step(self) -> _StepPlan:
        """Decides the next batch: every generating sequence's pending token, then prompt work, oldest first."""
        decode = [s for s in self._running if s.status is _Status.GENERATING]
        reading = [s for s in self._running if s.status is _Status.READING]
        if any(not s.request.background for s in reading):  # a player's prompt goes first; background work waits
            reading = [s for s in reading if not s.request.background]
        budget = self._n_batch - len(decode)
        if decode:  # others are talking: read only a chunk of prompt, so nobody stalls long
            budget = min(budget, self._prefill_chunk)
        reads: list[_Read] = []
        n = len(decode)
        for k, seq in enumerate(reading):
            if budget <= 0:
                break
            donor, pos = self._best_donor(seq)
            if self._shared_prefix_in_flight(seq, pos, reading[:k]):
                take = 0
            else:
                take = min(budget, len(seq.request.prompt) - pos)
                if seq.request.background:  # small steps: a player's line arriving meanwhile waits for one at most
                    take = min(take, BACKGROUND_CHUNK)
            reads.append(_Read(seq, donor, pos, take))
            budget -= take
            n += take
        return _StepPlan(decode, reads, n)

    def _best_donor(self, seq: _Seq) -> tuple[_Slot | None, int]:
        """The slot holding the longest further prefix of this prompt, and the prompt position a copy reaches.

        Only KV that exists before the step counts (a slot's ``tokens`` as they are while planning).
        """
        slot = seq.slot
        prompt = seq.request.prompt
        limit = len(prompt) - 1  # the last prompt token is always evaluated: its logits give the first token
        best, donor = seq.prompt_pos, None
        for other in self._slots:
            if other is slot or len(other.tokens) <= best:
                continue
            n = min(_common_prefix(other.tokens, prompt), limit)
            if n > best:
                best, donor = n, other
        return donor, best

    @staticmethod
    def _shared_prefix_in_flight(seq: _Seq, pos: int, earlier: list[_Seq]) -> bool:
        """True when an earlier prompt still being read shares this prompt's next tokens: this one waits a step
        and then copies them instead of computing them a second time (16 NPCs arriving at once over 4 personas
        read 4 persona prefixes, not 16)."""
        prompt = seq.request.prompt
        for other in earlier:
            assert other.slot is not None
            n = min(_common_prefix(other.request.prompt, prompt), len(prompt) - 1)
            if n > pos and len(other.slot.tokens) < n:
                return True
        return False

    def _run_step(self, plan: _StepPlan) -> None:
        """Runs a planned step: prefix copies, one llama_decode, then one sampled token per sequence with logits."""
        assert self._batch is not None and self._ctx is not None and self._mem is not None
        batch = self._batch
        sample_at: list[tuple[_Seq, int]] = []  # (sequence, batch row whose logits it samples from)
        n = 0
        for seq in plan.decode:
            slot = seq.slot
            assert slot is not None
            _put(batch, n, seq.pending, len(slot.tokens), slot.seq_id, True)
            slot.tokens.append(seq.pending)
            sample_at.append((seq, n))
            n += 1
        for read in plan.reads:
            seq = read.seq
            slot = seq.slot
            assert slot is not None
            prompt = seq.request.prompt
            if read.donor is not None:
                ll.llama_memory_seq_cp(self._mem, read.donor.seq_id, slot.seq_id, seq.prompt_pos, read.copy_to)
                slot.tokens.extend(prompt[seq.prompt_pos : read.copy_to])
                if self._holds(slot):
                    seq.cached += read.copy_to - seq.prompt_pos
                    seq.prompt_pos = read.copy_to
                else:  # the donor lost some of those cells (see _holds): read them instead
                    ll.llama_memory_seq_rm(self._mem, slot.seq_id, seq.prompt_pos, -1)
                    del slot.tokens[seq.prompt_pos :]
            pos = seq.prompt_pos
            end = pos + read.take
            last = len(prompt) - 1
            for i in range(pos, end):
                _put(batch, n, prompt[i], i, slot.seq_id, i == last)
                n += 1
            slot.tokens.extend(prompt[pos:end])
            seq.prompt_pos = end
            if end == len(prompt):
                sample_at.append((seq, n - 1))
        if n == 0:
            return
        batch.n_tokens = n
        started = time.perf_counter()
        rc = ll.llama_decode(self._ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc} for a batch of {n} tokens")
        self.steps += 1
        self.tokens_decoded += n
        for seq, row in sample_at:
            self._sample(seq, row)
        # Plain counters only: the metrics endpoint turns them into a histogram when it is scraped.
        took = time.perf_counter() - started
        self.step_seconds += took
        self._step_buckets[bisect.bisect_left(STEP_SECONDS_BUCKETS, took)] += 1

    def _sample(self, seq: _Seq, row: int) -> None:
        out, slot = seq.out, seq.slot
        assert out is not None and slot is not None and self._vocab is not None and self._ctx is not None
        assert self._cand is not None
        token = out.sampler.sample(self._ctx, row, self._cand)
        if out.tokens == 0:
            seq.clock.first_token = time.perf_counter()
        if ll.llama_vocab_is_eog(self._vocab, token):
            self._end(seq, "stop")
            return
        out.tokens += 1
        text = out.text.push(self._piece(token))
        if text:
            seq.stream.emit(TextDelta(text))
        if out.text.stopped:
            self._end(seq, "stop")
            return
        max_tokens = seq.request.params.max_tokens
        # The window holds prompt plus reply: the token just sampled is one more than the slot holds.
        if (max_tokens > 0 and out.tokens >= max_tokens) or len(slot.tokens) + 1 >= self._n_ctx_seq:
            self._end(seq, "length")
            return
        seq.pending = token
        seq.status = _Status.GENERATING

    def _piece(self, token: int) -> bytes:
        assert self._vocab is not None
        piece = _piece(self._vocab, token, self._piece_buf)
        if len(self._piece_buf) < len(piece):  # keep the grown buffer for the next long piece
            self._piece_buf = ctypes.create_string_buffer(len(piece))
        return piece

    # ------------------------------------------------------------------------------- scheduler: endings

    def _end(self, seq: _Seq, reason: FinishReason) -> None:
        """A generation completed: emits its held-back text and Finished with its stats."""
        out = seq.out
        assert out is not None
        self._retire(seq)
        tail = "" if out.text.stopped else out.text.flush()
        if tail:
            seq.stream.emit(TextDelta(tail))
        clock = seq.clock
        now = time.perf_counter()
        first = clock.first_token or now
        stats = GenerationStats(
            finish_reason=reason,
            prompt_tokens=len(seq.request.prompt),
            completion_tokens=out.tokens,
            cached_prompt_tokens=seq.cached,
            queue_ms=(clock.admitted - clock.submitted) * 1000.0,
            prompt_eval_ms=(first - clock.admitted) * 1000.0,
            eval_ms=(now - first) * 1000.0,
            time_to_first_token_ms=(first - clock.submitted) * 1000.0,
        )
        seq.stream.emit(Finished(stats))

    def _fail(self, seq: _Seq, error: NpcError) -> None:
        """A generation cannot go on: its consumer gets the error."""
        if seq.status is _Status.FINISHED:
            return
        self._retire(seq)
        seq.stream.emit(error)

    def _retire(self, seq: _Seq) -> None:
        """Takes a sequence out of the schedule and frees its slot, which keeps the KV (prompt and the tokens
        decoded so far) for the conversation's next turn. Emits nothing: a cancelled generation ends here."""
        if seq.status is _Status.WAITING:
            self._waiting.remove(seq)
        elif seq.status is not _Status.FINISHED:
            self._running.remove(seq)
        seq.status = _Status.FINISHED
        slot = seq.slot
        if slot is not None:
            slot.seq = None
            slot.last_used = time.monotonic()
        out = seq.out
        if out is not None:
            self.prompt_tokens_admitted += len(seq.request.prompt)
            self.cached_prompt_tokens += seq.cached
            self.grammar_checks += out.sampler.grammar_checks
            self.grammar_rejections += out.sampler.grammar_rejections
            out.sampler.close()
        with self._lock:
            self._box.open.discard(seq)


def _piece(vocab: ll.llama_vocab_p, token: int, buf: ctypes.Array[ctypes.c_char]) -> bytes:
    """One token's bytes, written into ``buf`` (a larger buffer is made when a piece does not fit)."""
    n = ll.llama_token_to_piece(vocab, token, buf, len(buf), 0, False)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = ll.llama_token_to_piece(vocab, token, buf, -n, 0, False)
    return buf.raw[: max(n, 0)]


def _meta(model: ll.llama_model_p, key: str) -> str:
    """A GGUF metadata string value, or "" when the model has none."""
    buf = ctypes.create_string_buffer(256)
    n = ll.llama_model_meta_val_str(model, key.encode("utf-8"), buf, len(buf))
    return buf.value.decode("utf-8", "replace") if n >= 0 else ""


def _put(batch: ll.llama_batch, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
    batch.token[i] = token
    batch.pos[i] = pos  # type: ignore[call-overload]  # llama_cpp mistypes pos as nested
    batch.n_seq_id[i] = 1
    batch.seq_id[i][0] = seq_id
    batch.logits[i] = 1 if logits else 0
