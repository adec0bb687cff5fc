"""Exceptions the SDK raises. Every failed RPC becomes one of these, mapped from its gRPC status in one place.

Each carries the gRPC ``code`` (a ``grpc.StatusCode``) and the server's ``message``, which says what to fix.
"""

from __future__ import annotations

import grpc


class NpcClientError(Exception):
    """Base class of every SDK error."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNKNOWN) -> None:
        super().__init__(message)
        #: The gRPC status code (UNKNOWN for errors raised by the SDK itself before any call).
        self.code = code
        #: The server's message (or the SDK's own), saying what went wrong and what to fix.
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class NpcServerUnavailable(NpcClientError, RuntimeError):
    """No server answered, the server is not ready (model still loading), or the connection broke.

    Also a ``RuntimeError``, as the RamaLama SDK promises for "the server is not running": code written for that SDK
    catches it unchanged."""


class NpcInvalidArgument(NpcClientError):
    """The request was malformed; the message names the field and what to fix."""


class NpcNotFound(NpcClientError):
    """An unknown persona, model or preset."""


class NpcAlreadyExists(NpcClientError):
    """Creating a persona whose id is taken."""


class NpcQueueFull(NpcClientError):
    """The server's generation queue is full; retry later."""


class NpcCancelled(NpcClientError):
    """The call was cancelled (for example a stream the caller stopped)."""


class NpcDeadlineExceeded(NpcClientError):
    """The call's deadline passed before the reply finished."""


class NpcUnauthenticated(NpcClientError):
    """The server wants an API key (or a different one)."""


class NpcServerError(NpcClientError):
    """The server failed (INTERNAL, UNKNOWN or another unexpected status)."""


_BY_CODE: dict[grpc.StatusCode, type[NpcClientError]] = {
    grpc.StatusCode.UNAVAILABLE: NpcServerUnavailable,
    grpc.StatusCode.INVALID_ARGUMENT: NpcInvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: NpcInvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: NpcInvalidArgument,
    grpc.StatusCode.NOT_FOUND: NpcNotFound,
    grpc.StatusCode.ALREADY_EXISTS: NpcAlreadyExists,
    grpc.StatusCode.RESOURCE_EXHAUSTED: NpcQueueFull,
    grpc.StatusCode.CANCELLED: NpcCancelled,
    grpc.StatusCode.DEADLINE_EXCEEDED: NpcDeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: NpcUnauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: NpcUnauthenticated,
}


def from_rpc_error(err: grpc.RpcError, target: str = "") -> NpcClientError:
    """Maps a failed call to the matching SDK exception (the one place where status codes are interpreted)."""
    # grpc.RpcError itself has no code()/details(); the raised objects are also grpc.Call (sync) or AioRpcError.
    code_fn = getattr(err, "code", None)
    details_fn = getattr(err, "details", None)
    code: grpc.StatusCode = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    details = (details_fn() if callable(details_fn) else None) or str(err)
    if code == grpc.StatusCode.UNAVAILABLE and target:
        details = f"npcserver at {target} is unavailable: {details}"
    return _BY_CODE.get(code, NpcServerError)(details, code)
