"""The HTTP/1.1 door: gRPC-Web for every RPC and an OpenAI-compatible REST API, over the gRPC door's services."""

from npcserver.http.app import HttpApp, create_http_app
from npcserver.http.door import HttpDoor

__all__ = ["HttpApp", "HttpDoor", "create_http_app"]
