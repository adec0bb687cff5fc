"""The engine interface: what the core needs from a model backend.

The core builds a prompt as token ids (it already fits the context window), picks sampling parameters and an
optional GBNF grammar, and consumes an async stream of text deltas ending in one ``Finished`` event. The
continuous-batching ``BatchedEngine`` implements it, and so do the scripted engines the service tests use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

# "action": a reply that called an action awaiting its result (set by the core, never by an engine).
FinishReason = Literal["stop", "length", "action"]


@dataclass(frozen=True)
class SamplingParams:
    """Resolved sampling parameters (every field has a value)."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    seed: int | None = None
    #: Most tokens to generate; 0 means until a stop or the end of the context window.
    max_tokens: int = 0
    #: Strings that end generation. They are not part of the output, and text that might be the start of one is
    #: held back until it is known not to be.
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationRequest:
    """One generation job."""

    #: Prompt token ids (BOS included when the model wants one). The core guarantees
    #: ``len(prompt) < context_size``.
    prompt: list[int]
    params: SamplingParams
    #: GBNF grammar text that constrains sampling, or None.
    grammar: str | None = None
    #: Texts that start the grammar (a lazy grammar, llama.cpp's): sampling is free until the output contains one,
    #: then the grammar constrains from it on (its root matches from the trigger). Empty: constrained from the start.
    grammar_triggers: tuple[str, ...] = ()
    #: A stable key for the conversation ("persona/conversation"), so an engine may keep its KV cache between
    #: turns. None for one-off requests.
    session: str | None = None
    #: How many leading prompt tokens are the persona's fixed prefix (system prompt + examples), shared by every
    #: conversation with that persona. An engine may reuse their KV across sessions.
    prefix_len: int = 0
    #: For logs.
    request_id: str = ""
    #: Work no player waits for (the rolling summary, memory proposals): an engine reads its prompt only in steps
    #: where no player's prompt is being read, so a background job never delays a player's first token by more than
    #: the decode steps it shares.
    background: bool = False


@dataclass
class GenerationStats:
    """Counters for one finished generation."""

    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    #: Prompt tokens whose KV was reused rather than evaluated.
    cached_prompt_tokens: int = 0
    queue_ms: float = 0.0
    prompt_eval_ms: float = 0.0
    eval_ms: float = 0.0
    #: From the engine accepting the request (queue included) to the first generated token.
    time_to_first_token_ms: float = 0.0


#: Upper bounds (seconds) of the engine step-time histogram that ``EngineStats.step_buckets`` counts.
STEP_SECONDS_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of an engine's scheduler, read by the metrics endpoint at scrape time (counters since start)."""

    #: Requests accepted and waiting for a sequence.
    waiting: int = 0
    #: Requests holding a sequence (reading their prompt or generating).
    running: int = 0
    #: KV cache cells the sequences hold (a prefix shared by several counts once per sequence), and the total.
    kv_tokens: int = 0
    kv_capacity: int = 0
    #: Conversations whose KV was moved out of their sequence for another, and the ones copied back.
    evictions: int = 0
    restores: int = 0
    #: Prompt tokens of admitted requests, and how many of them were served from the KV cache (kept, restored or
    #: copied) instead of being evaluated.
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    #: Decode steps, their total time, and how many took at most each bound of ``STEP_SECONDS_BUCKETS`` (one more
    #: count at the end for longer ones); not cumulative.
    steps: int = 0
    step_seconds: float = 0.0
    step_buckets: tuple[int, ...] = ()
    #: The bounds ``step_buckets`` count against (so a reader needs nothing else from the engine).
    step_bounds: tuple[float, ...] = STEP_SECONDS_BUCKETS


@dataclass(frozen=True)
class TextDelta:
    """Newly sampled text. Never ends inside a multi-byte UTF-8 character."""

    text: str


@dataclass(frozen=True)
class Finished:
    """The last event of every generation that was not cancelled or failed."""

    stats: GenerationStats


GenerationEvent = TextDelta | Finished


@dataclass
class ModelInfo:
    """What the core and ListModels need to know about the loaded model."""

    id: str
    path: str
    context_size: int
    backend: str  # "CPU", "CUDA", "Metal", ...
    gpu_layers: int
    #: The GGUF's own Jinja2 chat template, or None (the embedded base model has none).
    chat_template: str | None
    bos_token: str
    eos_token: str
    #: Whether tokenize() should add BOS at the start of a prompt.
    add_bos: bool
    load_ms: float
    created: int
    extra: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """A model backend. Implementation: ``BatchedEngine`` (``npcserver.engine.batched``)."""

    @property
    def ready(self) -> bool:
        """True once the model is loaded and generate() may be called."""
        ...

    @property
    def info(self) -> ModelInfo:
        """The loaded model. Raises ``NotReady`` before start() finishes."""
        ...

    async def start(self) -> None:
        """Loads the model without blocking the event loop."""
        ...

    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        """Text to token ids. Thread-safe; may be called while a generation runs."""
        ...

    def detokenize(self, tokens: list[int]) -> str:
        """Token ids to text."""
        ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Streams TextDelta events, then one Finished.

        Raises (before any event) ``InvalidArgument`` for a request it cannot run, ``QueueFull`` when the
        bounded queue of requests waiting beyond the running ones is full, and ``NotReady`` before start() or
        after close().
        Closing the iterator early (``aclose()``, or cancelling the task that iterates it) stops the generation
        within a token or two and frees the engine for the next request.
        """
        ...

    async def close(self) -> None:
        """Stops accepting work, cancels what runs, frees the model."""
        ...
