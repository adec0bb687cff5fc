"""The optional API key, checked the same way by every door."""

from __future__ import annotations

import hmac

from npcserver.errors import Unauthenticated


def check_api_key(authorization: str | None, api_key: str | None) -> None:
    """Raises Unauthenticated unless ``authorization`` is ``Bearer <api_key>`` (or no key is configured)."""
    if api_key is None:
        return
    if not authorization:
        raise Unauthenticated("this server needs an API key: send 'authorization: Bearer <key>'", code="missing_key")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise Unauthenticated("the API key is wrong: send 'authorization: Bearer <key>'", code="invalid_api_key")
