"""Request bodies of the REST routes: a size limit before anything is read whole, and JSON that cannot exhaust.

``limit_body`` wraps an ASGI app: a body declared over ``MAX_BODY_BYTES`` is refused at once (413), and a chunked
one stops being read the moment it goes over. ``parse_json`` turns every way a body can fail to be JSON (bad UTF-8, a
5,000-digit number, 10,000 nested brackets) into one InvalidArgument, and refuses nesting past ``MAX_JSON_DEPTH``
before the routes walk it.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from npcserver.core import limits
from npcserver.errors import InvalidArgument, ResourceExhausted
from npcserver.http.errors import error_response


def _too_large(size: int | None) -> ResourceExhausted:
    got = f" ({size} bytes)" if size is not None else ""
    return ResourceExhausted(
        f"the request body is over {limits.MAX_BODY_BYTES} bytes{got} (MAX_BODY_BYTES); send less, or import a long "
        "conversation in parts",
        param="body",
        code="body_too_large",
    )


def limit_body(app: ASGIApp, max_bytes: int = limits.MAX_BODY_BYTES) -> ASGIApp:
    """``app`` with its request bodies limited to ``max_bytes``."""

    async def limited(scope: Scope, receive: Receive, send: Send) -> None:
        declared = _content_length(scope)
        if declared is not None and declared > max_bytes:
            response: JSONResponse = error_response(_too_large(declared))
            response.headers["connection"] = "close"  # the unread body must not be taken for the next request
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    raise _too_large(None)
            return message

        await app(scope, counted, send)

    return limited


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def parse_json(raw: bytes) -> Any:
    """The body's JSON value; InvalidArgument saying what is wrong when it is not JSON or nests too deep."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"the request body is not valid JSON: {exc}", param="body") from exc
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"the request body is not UTF-8: {exc}", param="body") from exc
    except RecursionError:
        raise InvalidArgument(
            f"the request body nests deeper than {limits.MAX_JSON_DEPTH} levels of objects and arrays (MAX_JSON_DEPTH)",
            param="body",
        ) from None
    except ValueError as exc:  # Python reads integers of at most 4,300 digits
        raise InvalidArgument(
            f"the request body has a number too long to read ({str(exc).split(';')[0].lower()}); no field takes one",
            param="body",
        ) from exc
    check_depth(data)
    return data


def check_depth(data: Any, max_depth: int = limits.MAX_JSON_DEPTH) -> None:
    """Refuses JSON nested deeper than ``max_depth`` (iteratively: the check itself cannot overflow the stack)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise InvalidArgument(
                f"the request body nests deeper than {max_depth} levels of objects and arrays (MAX_JSON_DEPTH)",
                param="body",
            )
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
