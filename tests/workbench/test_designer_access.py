"""Who may use the designer's workbench (in process, over the HTTP door's ASGI app with a core whose model is still
loading): RenderPrompt, Compare and the playground page need a designer on a server with keys, Basic credentials
with the key as password count as the key, and designer_endpoints=false removes them."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx

from npcserver.config import Settings
from npcserver.http import create_http_app
from tests.ops.test_metrics_access import LoadingCore, _keys_file

RENDER = "/v1/npcs/tavern_keeper/conversations/c1:render"
COMPARE = "/v1/npcs/tavern_keeper/conversations/c1:compare"


def _client(**settings: Any) -> httpx.AsyncClient:
    app = create_http_app(LoadingCore(), Settings(**settings))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://door")


def _basic(key: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"designer:{key}".encode()).decode()}


async def test_the_workbench_needs_a_designer_when_the_server_has_keys(tmp_path: Path) -> None:
    player = {"authorization": "Bearer game-client-secret"}
    designer = {"authorization": "Bearer tools-secret"}
    async with _client(api_keys_file=_keys_file(tmp_path)) as http:
        anonymous = await http.get("/playground")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith('Basic realm="npcserver playground"')
        refused = await http.get("/playground", headers=player)
        assert refused.status_code == 403 and "designer" in refused.json()["error"]["message"]
        for headers in (designer, _basic("tools-secret")):
            page = await http.get("/playground", headers=headers)
            assert page.status_code == 200 and "npcserver playground" in page.text
            script = await http.get("/playground/app.js", headers=headers)
            assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert (await http.get("/playground", headers=_basic("wrong"))).status_code == 401
        assert (await http.get("/playground/secrets.txt", headers=designer)).status_code == 404
        for path, body in ((RENDER, {"text": "Hi"}), (COMPARE, {"text": "Hi", "variants": [{}, {}]})):
            denied = await http.post(path, json=body, headers=player)
            assert denied.status_code == 403 and "designer" in denied.json()["error"]["message"], denied.text
            # A designer passes the role check and meets the loading model; Basic works for the API calls too.
            assert (await http.post(path, json=body, headers=_basic("tools-secret"))).status_code == 503


async def test_designer_endpoints_off_removes_the_workbench() -> None:
    async with _client(designer_endpoints=False) as http:
        assert (await http.get("/playground")).status_code == 404
        # The path then reads as a conversation id, whose routes take no POST.
        assert (await http.post(RENDER, json={"text": "Hi"})).status_code in (404, 405)
        assert (await http.post("/v1/chat/completions:render", json={"messages": []})).status_code == 404
