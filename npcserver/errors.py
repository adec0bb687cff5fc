"""One exception hierarchy for every door.

The core raises these; each door maps them in exactly one place (gRPC status in ``npcserver.grpc``, HTTP status and
OpenAI error body in ``npcserver.http``). The status names are plain strings so the core imports no transport.
"""

from __future__ import annotations


class NpcError(Exception):
    """Base class. Unexpected failures become INTERNAL with a generic message at the door."""

    #: grpc.StatusCode member name.
    grpc_status: str = "INTERNAL"
    #: HTTP status for the REST door.
    http_status: int = 500
    #: OpenAI error ``type``.
    openai_type: str = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        #: The request field at fault (OpenAI ``param``), when there is one.
        self.param = param
        #: A short machine-readable code (OpenAI ``code``), when there is one.
        self.code = code


class InvalidArgument(NpcError):
    """The request is malformed: the message says which field and what to fix."""

    grpc_status = "INVALID_ARGUMENT"
    http_status = 400
    openai_type = "invalid_request_error"


class NotFound(NpcError):
    """A named model, persona or preset does not exist."""

    grpc_status = "NOT_FOUND"
    http_status = 404
    openai_type = "invalid_request_error"


class AlreadyExists(NpcError):
    """Creating something whose id is taken."""

    grpc_status = "ALREADY_EXISTS"
    http_status = 409
    openai_type = "invalid_request_error"


class QueueFull(NpcError):
    """The generation queue is at its limit; retry later."""

    grpc_status = "RESOURCE_EXHAUSTED"
    http_status = 429
    openai_type = "rate_limit_error"


class NotReady(NpcError):
    """The model is not loaded yet (or failed to load)."""

    grpc_status = "UNAVAILABLE"
    http_status = 503
    openai_type = "server_error"


class Cancelled(NpcError):
    """The caller went away or cancelled."""

    grpc_status = "CANCELLED"
    http_status = 499
    openai_type = "server_error"


class DeadlineExceeded(NpcError):
    """The caller's deadline passed before the reply finished."""

    grpc_status = "DEADLINE_EXCEEDED"
    http_status = 504
    openai_type = "server_error"


class Internal(NpcError):
    """A server fault. The message sent to callers is generic; details go to the log."""


class Unauthenticated(NpcError):
    """Missing, wrong or expired credential (API key or player token)."""

    grpc_status = "UNAUTHENTICATED"
    http_status = 401
    openai_type = "invalid_request_error"


class PermissionDenied(NpcError):
    """The credential is valid but its role or scope does not allow this; the message says what it lacks."""

    grpc_status = "PERMISSION_DENIED"
    http_status = 403
    openai_type = "permission_error"


class ResourceExhausted(NpcError):
    """The request asked for more work than a limit allows (time, memory); the message names the limit."""

    grpc_status = "RESOURCE_EXHAUSTED"
    http_status = 413
    openai_type = "invalid_request_error"


class FailedPrecondition(NpcError):
    """Something stored (a persona) is not usable as it is; the message says what to fix."""

    grpc_status = "FAILED_PRECONDITION"
    http_status = 400
    openai_type = "invalid_request_error"


class ManagedByFile(FailedPrecondition):
    """The API may not change a persona that a persona file defines: the message names the file to edit instead."""

    http_status = 409


class Aborted(NpcError):
    """A write lost a race (another replica stored a turn first, or the conversation was reset); retry the request."""

    grpc_status = "ABORTED"
    http_status = 409
    openai_type = "server_error"


class RateLimited(NpcError):
    """The caller used up its share (requests or generated tokens per minute); ``retry_after_s`` says when to retry."""

    grpc_status = "RESOURCE_EXHAUSTED"
    http_status = 429
    openai_type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after_s: float, code: str = "rate_limited") -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s
