"""The playground page: plain static files (index.html, app.js, style.css) over the REST routes.

Served at /playground on the HTTP door when the designer_endpoints setting is on. On a server with credentials the
page needs a designer's: ``authorization: Bearer <key>``, or HTTP Basic with the key as the password, which is what a
browser asks for when it gets the page's 401. A browser then sends those Basic credentials with the page's own API
calls (same origin), and the HTTP door takes them as the Bearer key they carry.
"""

from __future__ import annotations

import base64
import binascii
from importlib import resources

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from npcserver.errors import NpcError, Unauthenticated
from npcserver.http.errors import error_body, error_response
from npcserver.service import NpcService
from npcserver.service.access import Role

_FILES = {
    "": ("index.html", "text/html"),
    "app.js": ("app.js", "text/javascript"),
    "style.css": ("style.css", "text/css"),
}
_REALM = 'Basic realm="npcserver playground", charset="UTF-8"'


def bearer_from_basic(authorization: str | None) -> str | None:
    """``Basic base64(user:key)`` as ``Bearer key`` (the user name is ignored); any other value as it is."""
    if not authorization or authorization[:6].lower() != "basic ":
        return authorization
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return authorization  # the gate names the problem
    return f"Bearer {decoded.partition(':')[2]}"


def playground_routes(service: NpcService) -> list[BaseRoute]:
    async def page(request: Request) -> Response:
        name = request.path_params.get("name", "")
        if name not in _FILES:
            return JSONResponse(error_body(f"no playground file {name!r}", code="not_found"), 404)
        try:
            caller = service.gate.authenticate(bearer_from_basic(request.headers.get("authorization")))
            caller.require(Role.DESIGNER, "opening the playground")
        except Unauthenticated as exc:
            # The browser asks for the key (as the password) and sends it with the page's API calls too.
            denied = error_response(exc)
            denied.headers["www-authenticate"] = _REALM
            return denied
        except NpcError as exc:
            return error_response(exc)
        filename, media_type = _FILES[name]
        body = resources.files(__name__).joinpath(filename).read_bytes()
        return Response(body, media_type=media_type, headers={"cache-control": "no-store"})

    return [Route("/playground", page, methods=["GET"]), Route("/playground/{name}", page, methods=["GET"])]
