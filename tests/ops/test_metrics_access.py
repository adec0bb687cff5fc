"""Who may read /metrics: designers and admins on a server with credentials, anyone with metrics_public (in process,
over the HTTP door's ASGI app; the live tests scrape a real server)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from npcserver.config import Settings
from npcserver.errors import NotReady
from npcserver.http import create_http_app
from npcserver.service.auth import hash_key


class LoadingEngine:
    ready = False

    @property
    def info(self) -> Any:
        raise NotReady("the model is still loading")


class LoadingCore:
    """Stands in for NpcCore before the model is loaded: /metrics answers without a model."""

    engine = LoadingEngine()
    residency = SimpleNamespace(unloaded=False, loaded=False)


def _keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.toml"
    entries = [("game-client", "player"), ("tools", "designer")]
    path.write_text(
        "".join(
            f'[[keys]]\nname = "{name}"\nrole = "{role}"\nhash = "{hash_key(name + "-secret")}"\n'
            for name, role in entries
        )
    )
    return path


def _client(**settings: Any) -> httpx.AsyncClient:
    app = create_http_app(LoadingCore(), Settings(**settings))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://door")


async def test_metrics_need_a_designer_when_the_server_has_keys(tmp_path: Path) -> None:
    async with _client(api_keys_file=_keys_file(tmp_path)) as http:
        anonymous = await http.get("/metrics")
        player = await http.get("/metrics", headers={"authorization": "Bearer game-client-secret"})
        designer = await http.get("/metrics", headers={"authorization": "Bearer tools-secret"})
    assert anonymous.status_code == 401
    assert player.status_code == 403 and "designer" in player.json()["error"]["message"]
    assert designer.status_code == 200 and "# TYPE npcserver:requests_total counter" in designer.text


async def test_metrics_public_serves_anyone_and_metrics_can_be_turned_off(tmp_path: Path) -> None:
    async with _client(api_keys_file=_keys_file(tmp_path), metrics_public=True) as http:
        public = await http.get("/metrics")
    assert public.status_code == 200 and public.headers["content-type"].startswith("text/plain")
    async with _client(metrics_enabled=False) as http:
        assert (await http.get("/metrics")).status_code == 404
