"""The REST door's one error map: exceptions to an HTTP status and OpenAI's error body.

``{"error": {"message", "type", "param", "code"}}`` is what OpenAI sends and what its clients parse into typed
exceptions (400 BadRequestError, 404 NotFoundError, 429 RateLimitError, ...).
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse

from npcserver.errors import NpcError

log = logging.getLogger(__name__)

_GENERIC_SERVER_ERROR = "The server had an error while processing the request; the details are in its log."


def error_body(
    message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_status_and_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The HTTP status and OpenAI error body for any exception a REST call raised."""
    if isinstance(exc, NpcError) and exc.grpc_status != "INTERNAL":
        # Every class but Internal carries a message written for the caller; Internal's details stay in the log.
        return exc.http_status, error_body(exc.message, exc.openai_type, exc.param, exc.code)
    if isinstance(exc, ValidationError):
        return 400, validation_error_body(exc)
    log.error("REST call failed", exc_info=exc)
    return 500, error_body(_GENERIC_SERVER_ERROR, "server_error")


def error_response(exc: BaseException) -> JSONResponse:
    status, body = error_status_and_body(exc)
    return JSONResponse(body, status_code=status)


def validation_error_body(exc: ValidationError) -> dict[str, Any]:
    """A pydantic error as an OpenAI error naming the first bad field."""
    first = exc.errors()[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
    message = f"{param}: {first['msg']}{more}" if param else f"{first['msg']}{more}"
    return error_body(message, "invalid_request_error", param, None)
