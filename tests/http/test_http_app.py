"""The REST layer's own rules, in process (httpx's ASGI transport), over a core stand-in that is still loading.

Everything that needs a model runs against the real server in test_http_live.py; these cover what a real server
shows only in its first second (health while loading) or only with other settings (CORS off, the API key), and the
one error map.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from npcserver.config import Settings
from npcserver.errors import (
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
    NotReady,
    NpcError,
    QueueFull,
    Unauthenticated,
)
from npcserver.http import create_http_app
from npcserver.http.errors import error_status_and_body


class LoadingEngine:
    ready = False

    @property
    def info(self) -> Any:
        raise NotReady("the model is still loading; retry shortly")


class LoadingCore:
    """Stands in for NpcCore before the model is loaded."""

    engine = LoadingEngine()
    #: Not unloaded by keep_alive: simply not loaded yet.
    residency = SimpleNamespace(unloaded=False, loaded=False)

    def list_models(self) -> list[Any]:
        return [self.engine.info]


async def _client(**settings: Any) -> httpx.AsyncClient:
    app = create_http_app(LoadingCore(), Settings(**settings))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://door")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with await _client() as c:
        yield c


async def test_health_is_503_while_the_model_loads(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    assert health.status_code == 503 and health.json() == {"status": "loading"}


async def test_routes_answer_503_with_an_openai_body_while_loading(client: httpx.AsyncClient) -> None:
    models = await client.get("/v1/models")
    assert models.status_code == 503
    assert models.json() == {
        "error": {
            "message": "the model is still loading; retry shortly (health reports ready once it has loaded)",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


async def test_a_grpc_path_without_grpc_web_content_type_is_415(client: httpx.AsyncClient) -> None:
    reply = await client.post("/npcserver.api.v1.ModelService/ListModels", json={})
    assert reply.status_code == 415
    assert "application/grpc-web+proto" in reply.json()["error"]["message"]


async def test_cors_is_off_unless_configured(client: httpx.AsyncClient) -> None:
    preflight = await client.options(
        "/v1/chat/completions", headers={"Origin": "http://x", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers
    async with await _client(cors_origins=["http://game.example"]) as cors:
        allowed = await cors.options(
            "/v1/chat/completions",
            headers={"Origin": "http://game.example", "Access-Control-Request-Method": "POST"},
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "http://game.example"
        denied = await cors.options(
            "/v1/chat/completions", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert denied.status_code == 400


async def test_api_key_guards_rest_but_not_health() -> None:
    async with await _client(api_key="sesame") as c:
        missing = await c.get("/v1/models")
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_key"
        wrong = await c.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        right = await c.get("/v1/models", headers={"Authorization": "Bearer sesame"})
        assert right.status_code == 503  # past the key check; the stand-in model is still loading
        assert (await c.get("/healthz")).status_code == 503


@pytest.mark.parametrize(
    ("error", "status", "type_"),
    [
        (InvalidArgument("temperature must be in [0, 2]", param="temperature"), 400, "invalid_request_error"),
        (NotFound("model 'x' is not loaded", param="model", code="model_not_found"), 404, "invalid_request_error"),
        (AlreadyExists("persona 'a' already exists"), 409, "invalid_request_error"),
        (QueueFull("the queue is full"), 429, "rate_limit_error"),
        (Unauthenticated("send a key"), 401, "invalid_request_error"),
        (NotReady("loading"), 503, "server_error"),
        (DeadlineExceeded("too slow"), 504, "server_error"),
        (Cancelled("gone"), 499, "server_error"),
    ],
)
def test_error_map_uses_the_exception_attributes(error: NpcError, status: int, type_: str) -> None:
    got_status, body = error_status_and_body(error)
    assert got_status == status
    assert body == {"error": {"message": error.message, "type": type_, "param": error.param, "code": error.code}}


@pytest.mark.parametrize("error", [Internal("db path /secret/x is broken"), RuntimeError("/secret/x")])
def test_server_faults_are_500_with_a_generic_message(error: Exception) -> None:
    status, body = error_status_and_body(error)
    assert status == 500 and body["error"]["type"] == "server_error"
    assert "secret" not in body["error"]["message"]
