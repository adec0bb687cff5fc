"""The HTTP door's request scopes: every REST, Ollama and gRPC-Web call is counted, timed and logged once.

``RequestScopes`` wraps the door's dispatcher in an ``Ops.request`` scope. It names the call by its route template
(``POST /v1/npcs/{persona_id}/conversations/{conversation_id}:talk``, never the raw path, so the metrics stay
bounded), takes the status from the response, and adds ``Retry-After`` to a 429 that a rate limit caused. A
gRPC-Web call's servicer joins the scope and sets the gRPC method and status itself. Health checks and metrics
scrapes are not logged: they come every few seconds.
"""

from __future__ import annotations

import math
from typing import Any

import grpc
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from npcserver.http.grpcweb import is_grpc_web
from npcserver.service.ops import Ops, RequestRecord

#: GET paths served outside any request scope.
UNOBSERVED = frozenset({"/healthz", "/metrics"})

_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


class RequestScopes:
    """ASGI middleware: one ``Ops.request`` scope per HTTP call. ``routes`` name the REST and Ollama calls."""

    def __init__(self, app: ASGIApp, ops: Ops, routes: list[BaseRoute]) -> None:
        self.app = app
        self.ops = ops
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        grpc_web = is_grpc_web(_header(scope, b"content-type"))
        if not grpc_web and scope["method"] == "GET" and path in UNOBSERVED:
            await self.app(scope, receive, send)
            return
        if grpc_web:
            door, method = "grpc-web", "unknown"  # the servicer names the method
        else:
            door, method = ("ollama" if path.startswith("/api/") else "rest"), self._route(scope)
        client = scope.get("client")
        with self.ops.request(door, method, client[0] if client else "") as record:
            await self.app(scope, receive, _observed(send, record, grpc_web))

    def _route(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return f"{scope['method']} {getattr(route, 'path', '?')}"
        return "unmatched"


def _observed(send: Send, record: RequestRecord, grpc_web: bool) -> Send:
    async def observed(message: Message) -> None:
        if message["type"] == "http.response.start":
            status: int = message["status"]
            headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
            if grpc_web:
                # A call refused before its servicer ran carries its status in the headers (trailers-only).
                code = _header_value(headers, b"grpc-status")
                if record.status is None and code is not None and code.isdigit():
                    record.status = _CODE_NAMES.get(int(code), code)
            else:
                record.status = str(status)
                if (
                    status == 429
                    and record.retry_after_s is not None
                    and _header_value(headers, b"retry-after") is None
                ):
                    headers.append((b"retry-after", str(_whole_seconds(record.retry_after_s)).encode()))
                    message = {**message, "headers": headers}
        await send(message)

    return observed


def _whole_seconds(seconds: float) -> int:
    return max(1, math.ceil(seconds))


def _header(scope: Scope, name: bytes) -> str:
    value = _header_value(scope["headers"], name)
    return value or ""


def _header_value(headers: Any, name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None
