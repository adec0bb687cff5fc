"""What every request passes through on its way to an operation: rate limits, metrics and the request log.

One ``Ops`` serves a whole process (the server makes it and hands it to every door), so a caller's rate limit and
the metrics are the same whichever door a request comes in by. A door opens a request scope with
``Ops.request(door, method, client)`` around each call and sets its status; ``NpcService`` fills in the rest
(caller, ids, persona, conversation, tokens, timings) through ``note`` and ``GenerationWatch``. When the outermost
scope closes, the request is counted and logged as one line on the ``npcserver.requests`` logger. The scope lives
in a context variable, so an operation reaches it without every signature carrying it; scopes nest (the HTTP door
opens one for a gRPC-Web call, and the servicer it runs joins it).

The player's text goes into the log only when that logger is at DEBUG.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from npcserver.core.types import Completion, StreamEvent
from npcserver.errors import RateLimited
from npcserver.service.limits import RateLimiter, caller_key
from npcserver.service.metrics import Metrics

if TYPE_CHECKING:
    from npcserver.config import Settings
    from npcserver.core.app import NpcCore

request_log = logging.getLogger("npcserver.requests")


@dataclass
class RequestRecord:
    """One request as the request log and the metrics see it."""

    door: str
    method: str
    #: The client's address (a gRPC peer string, or the HTTP client's host).
    client: str = ""
    started: float = field(default_factory=time.perf_counter)
    #: The core request's id for a generation (the id every stream message carries); a fresh one otherwise.
    id: str = field(default_factory=lambda: f"req-{uuid.uuid4().hex[:24]}")
    #: Who the rate limits count (``limits.caller_key``): never a raw credential.
    caller: str = ""
    #: Set by the door: a gRPC status code name, or an HTTP status.
    status: str | None = None
    persona: str = ""
    conversation: str = ""
    model: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_prompt_tokens: int | None = None
    finish_reason: str = ""
    stored: bool | None = None
    queue_ms: float | None = None
    ttft_ms: float | None = None
    retry_after_s: float | None = None
    #: The player's line (or the last user message): logged at DEBUG only.
    text: str = ""

    def log_fields(self, duration_ms: float, debug: bool) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "request_id": self.id,
            "door": self.door,
            "method": self.method,
            "status": self.status or "UNKNOWN",
            "duration_ms": round(duration_ms, 1),
            "caller": self.caller,
            "client": self.client,
        }
        optional: dict[str, Any] = {
            "persona": self.persona,
            "conversation": self.conversation,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "finish_reason": self.finish_reason,
            "stored": self.stored,
            "queue_ms": None if self.queue_ms is None else round(self.queue_ms, 1),
            "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 1),
            "retry_after_s": None if self.retry_after_s is None else round(self.retry_after_s, 2),
        }
        fields.update({k: v for k, v in optional.items() if v not in (None, "")})
        if debug and self.text:
            fields["text"] = self.text
        return fields


_current: ContextVar[RequestRecord | None] = ContextVar("npcserver_request", default=None)


def current() -> RequestRecord | None:
    """The request being served in this task, if a door opened a scope for it."""
    return _current.get()


def note(**fields: Any) -> None:
    """Sets fields of the current request's record (nothing happens outside a request scope)."""
    record = _current.get()
    if record is not None:
        for name, value in fields.items():
            setattr(record, name, value)


class Ops:
    """Rate limits, metrics and the request log for one server process.

    ``engine`` and ``model`` return the engine now serving and its model id (keep_alive may replace the engine).
    """

    def __init__(
        self,
        *,
        requests_per_minute: int = 0,
        tokens_per_minute: int = 0,
        engine: Callable[[], object] | None = None,
        model: Callable[[], str] | None = None,
    ) -> None:
        self.limiter = RateLimiter(requests_per_minute, tokens_per_minute)
        self.metrics = Metrics(engine, model)
        self._model = model or (lambda: "")

    @classmethod
    def from_settings(cls, settings: Settings, core: NpcCore) -> Ops:
        """The server's Ops: the rate limits ``settings`` set, metrics over whichever engine ``core`` runs now."""

        def model() -> str:
            return core.engine.info.id

        return cls(
            requests_per_minute=settings.rate_limit_requests_per_minute,
            tokens_per_minute=settings.rate_limit_tokens_per_minute,
            engine=lambda: core.engine,
            model=model,
        )

    # --- request scopes (doors) ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def request(self, door: str, method: str, client: str = "") -> Iterator[RequestRecord]:
        """A request scope. The door sets ``record.status``; an exception that escapes without one is CANCELLED (the
        client went away) or INTERNAL. Inside another scope, this one joins it (and names the method)."""
        outer = _current.get()
        if outer is not None:
            outer.method = method
            try:
                yield outer
            except BaseException as exc:
                _fallback_status(outer, exc)
                raise
            return
        record = RequestRecord(door=door, method=method, client=client)
        token = _current.set(record)
        try:
            yield record
        except BaseException as exc:
            _fallback_status(record, exc)
            raise
        finally:
            # Reset fails only when an async generator is finalized in another context; the value dies with it then.
            with contextlib.suppress(ValueError):
                _current.reset(token)
            self.finish(record)

    def finish(self, record: RequestRecord) -> None:
        """Counts and logs a finished request."""
        duration = time.perf_counter() - record.started
        status = record.status or "UNKNOWN"
        m = self.metrics
        m.requests.labels(record.door, record.method, status).inc()
        m.request_duration.labels(record.door, record.method).observe(duration)
        if request_log.isEnabledFor(logging.INFO):
            fields = record.log_fields(duration * 1000.0, request_log.isEnabledFor(logging.DEBUG))
            request_log.info(
                "%s %s %s %s %.0f ms", record.id, record.door, record.method, status, duration * 1000.0, extra=fields
            )

    # --- admission and generation (NpcService) -------------------------------------------------------------------

    def admit(self, authorization: str | None, identity: str | None = None) -> None:
        """Counts a request against its caller's rate limit; raises RateLimited when the caller is over it.

        ``identity``: who admission found (``limits.caller_key``), or None on a server with no credentials.
        """
        record = _current.get()
        caller = caller_key(identity, authorization, record.client if record else "")
        if record is not None:
            record.caller = caller
        try:
            self.limiter.admit_request(caller)
        except RateLimited as exc:
            self._refused(record, exc, "requests")
            raise

    def watch_generation(self) -> GenerationWatch:
        """Starts watching one generation; raises RateLimited when the caller's token allowance is spent."""
        record = _current.get()
        caller = record.caller if record is not None and record.caller else caller_key(None, None, "")
        try:
            self.limiter.admit_generation(caller)
        except RateLimited as exc:
            self._refused(record, exc, "tokens")
            raise
        try:
            model = self._model()
        except Exception:  # not loaded: the generation will say so itself
            model = ""
        return GenerationWatch(self, record, caller, model)

    def _refused(self, record: RequestRecord | None, exc: RateLimited, limit: str) -> None:
        self.metrics.rate_limited.labels(limit).inc()
        if record is not None:
            record.retry_after_s = exc.retry_after_s


class GenerationWatch:
    """Times one generation's stream for the metrics and the request log, and charges its tokens to its caller."""

    def __init__(self, ops: Ops, record: RequestRecord | None, caller: str, model: str) -> None:
        self._ops = ops
        self._record = record
        self._caller = caller
        self._model = model
        self._started = time.perf_counter()
        self._last: float | None = None
        self._pieces = 0
        self._final: Completion | None = None

    def delta(self) -> None:
        """A piece of text streamed: the gap since the previous one is an inter-token latency."""
        now = time.perf_counter()
        if self._last is not None:
            self._ops.metrics.itl.labels(self._model).observe(now - self._last)
        self._last = now
        self._pieces += 1

    def observe(self, event: StreamEvent) -> None:
        """One event of the generation's stream, as it passes to the door."""
        if isinstance(event, Completion):
            self.finished(event)
        else:
            self.delta()

    def finished(self, final: Completion) -> None:
        self._final = final
        m = self._ops.metrics
        s = final.stats
        model = final.model or self._model
        m.ttft.labels(model).observe(s.time_to_first_token_ms / 1000.0)
        m.queue_time.labels(model).observe(s.queue_ms / 1000.0)
        m.e2e.labels(model).observe(time.perf_counter() - self._started)
        m.prompt_tokens.labels(model).inc(s.prompt_tokens)
        m.generation_tokens.labels(model).inc(s.completion_tokens)
        m.request_success.labels(model, s.finish_reason).inc()
        if self._record is not None:
            r = self._record
            r.model = model
            r.prompt_tokens = s.prompt_tokens
            r.completion_tokens = s.completion_tokens
            r.cached_prompt_tokens = s.cached_prompt_tokens
            r.finish_reason = s.finish_reason
            r.queue_ms = s.queue_ms
            r.ttft_ms = s.time_to_first_token_ms
            r.stored = final.stored

    def close(self) -> None:
        """Charges what was generated (a cancelled reply counts the pieces it streamed)."""
        tokens = self._final.completion_tokens if self._final is not None else self._pieces
        self._ops.limiter.charge_tokens(self._caller, tokens)

    async def __aenter__(self) -> GenerationWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _fallback_status(record: RequestRecord, exc: BaseException) -> None:
    if record.status is None:
        cancelled = isinstance(exc, asyncio.CancelledError | GeneratorExit)
        record.status = "CANCELLED" if cancelled else "INTERNAL"
