"""The HTTP/1.1 door's ASGI application: gRPC-Web and REST on one port, behind optional CORS.

A request whose content type is ``application/grpc-web*`` goes to the gRPC-Web bridge, which runs the servicers
that ``npcserver.grpc.servicers.add_services`` registers (the gRPC door's own); everything else goes to the REST routes
(OpenAI's and the NPC routes in ``rest``, Ollama's under /api in ``ollama``).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from npcserver.config import Settings
from npcserver.core.app import NpcCore
from npcserver.errors import NpcError
from npcserver.grpc.servicers import add_services
from npcserver.http.bodies import limit_body
from npcserver.http.calls import CallTracker
from npcserver.http.errors import error_body, error_response
from npcserver.http.grpcweb import GrpcWebBridge, MethodRegistry, is_grpc_web
from npcserver.http.observe import RequestScopes
from npcserver.http.ollama import OllamaRoutes
from npcserver.http.playground import bearer_from_basic
from npcserver.http.rest import RestRoutes
from npcserver.service import Gate, NpcService
from npcserver.service.access import Role
from npcserver.service.metrics import Metrics
from npcserver.service.ops import Ops

log = logging.getLogger(__name__)

#: Largest request message, as on the gRPC door; base64 (grpc-web-text) makes the body a third larger.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_MAX_BODY_BYTES = MAX_MESSAGE_BYTES * 4 // 3 + 64
#: Response headers a browser script may read; gRPC-Web clients need the trailers-only status.
EXPOSED_HEADERS = ("grpc-status", "grpc-message", "grpc-encoding", "grpc-accept-encoding", "retry-after")


class HttpApp:
    """The ASGI app. ``tracker`` lets HttpDoor stop gracefully; ``registry`` lists the gRPC-Web methods."""

    def __init__(self, core: NpcCore, settings: Settings, ops: Ops | None = None) -> None:
        self.core = core
        self.settings = settings
        #: Rate limits, metrics and the request log (the server passes the one it shares with the gRPC door).
        self.ops = ops if ops is not None else Ops.from_settings(settings, core)
        self.tracker = CallTracker()
        self.registry = MethodRegistry()
        # One gate for gRPC-Web and REST, so a key's first (scrypt) check is remembered for both.
        self.gate = Gate.from_settings(settings)
        self.services = add_services(self.registry, core, settings, self.gate, ops=self.ops)
        self.bridge = GrpcWebBridge(self.registry, self.tracker, _MAX_BODY_BYTES)
        self.service = NpcService(core, self.gate, self.ops)
        routes = RestRoutes(self.service, self.tracker).routes(self._authorize, designer=settings.designer_endpoints)
        if settings.metrics_enabled:
            routes.append(Route("/metrics", self._metrics, methods=["GET"]))
        routes += OllamaRoutes(self.service, self.tracker).routes()
        self.rest = Starlette(
            routes=routes,
            exception_handlers={HTTPException: _http_exception, Exception: _server_error},
        )
        # REST bodies are read whole: refuse one over the limit before reading it (gRPC-Web frames have their own).
        self._rest = limit_body(self.rest)
        inner: ASGIApp = RequestScopes(self._dispatch, self.ops, routes)
        if settings.cors_origins:
            inner = CORSMiddleware(
                inner,
                allow_origins=settings.cors_origins,
                allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
                allow_headers=["*"],
                expose_headers=EXPOSED_HEADERS,
                max_age=600,
            )
        self._app = inner

    def _authorize(self, request: Request) -> Response | None:
        try:
            # Basic with the key as password: what a browser sends after the playground page asked for it.
            self.service.admit(bearer_from_basic(request.headers.get("authorization")))
        except NpcError as exc:
            return error_response(exc)
        return None

    async def _metrics(self, request: Request) -> Response:
        """Prometheus metrics: for designers and admins when the server has credentials, unless metrics_public."""
        if not self.settings.metrics_public:
            try:
                # The gate, not admit: a scraper's requests count against no rate limit and appear in no log.
                self.gate.authenticate(request.headers.get("authorization")).require(Role.DESIGNER, "reading /metrics")
            except NpcError as exc:
                return error_response(exc)
        return Response(self.ops.metrics.exposition(), media_type=Metrics.CONTENT_TYPE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets are not served; returning closes the connection
        async with self.tracker.track():
            await self._app(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = _header(scope, b"content-type")
        if is_grpc_web(content_type):
            await self.bridge(scope, receive, send)
            return
        if self.tracker.draining:
            await JSONResponse(error_body("the server is shutting down; retry", "server_error"), 503)(
                scope, receive, send
            )
            return
        if scope["method"] == "POST" and self.registry.lookup(scope["path"]) is not None:
            message = (
                f"{scope['path']} is a gRPC method: over HTTP/1.1 send it as gRPC-Web with content-type "
                "application/grpc-web+proto (or application/grpc-web-text); native gRPC (application/grpc) is "
                "served on the gRPC port"
            )
            await JSONResponse(error_body(message, code="unsupported_media_type"), 415)(scope, receive, send)
            return
        await self._rest(scope, receive, send)


def create_http_app(core: NpcCore, settings: Settings, ops: Ops | None = None) -> HttpApp:
    """The HTTP door's ASGI app over ``core``: gRPC-Web for every registered RPC, OpenAI REST, NPC routes."""
    return HttpApp(core, settings, ops)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return ""


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}; see the README for the routes this server serves"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return JSONResponse(error_body(message, code=str(exc.status_code)), exc.status_code, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    return error_response(exc)


async def _lifespan(receive: Receive, send: Send) -> None:
    # The door starts and stops with HttpDoor, not with ASGI lifespan; acknowledge it for other ASGI servers.
    while True:
        message: Any = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
