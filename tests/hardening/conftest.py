"""Helpers for the hardening tests: raw clients for both doors of a live server."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest

from npcserver.api.v1 import npcserver_pb2_grpc as pbg
from tests.conftest import ServerProcess


class Doors:
    """gRPC stubs and an HTTP client for one server."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.channel = grpc.insecure_channel(server.grpc_target)
        self.personas = pbg.PersonaServiceStub(self.channel)
        self.conversations = pbg.ConversationServiceStub(self.channel)
        self.chat = pbg.ChatServiceStub(self.channel)
        self.http = httpx.Client(base_url=server.http_url, timeout=60)

    def close(self) -> None:
        self.channel.close()
        self.http.close()


@pytest.fixture
def doors(live_server: ServerProcess) -> Iterator[Doors]:
    d = Doors(live_server)
    yield d
    d.close()
