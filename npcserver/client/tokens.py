"""Player tokens, minted by a game backend: short-lived JWTs that bind one player to their conversations.

::

    from npcserver.client import mint_player_token

    token = mint_player_token(secret, "player-42", "player-42:", personas=["tavern_keeper"], ttl=900)
    # The game client sends it as its API key: authorization: Bearer <token>

The server (with ``player_token_secret`` or ``player_token_public_key_file``) lets the token Talk and read
conversations whose ids start with ``conversation_prefix``, with the listed personas (any when None), until it
expires. End the prefix with a separator ("player-42:") so it cannot also match "player-420" ("/" does not fit in a
REST path; ":" does). Needs PyJWT:
``pip install 'npcserver[tokens]'``; the rest of the client does not.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

#: Must match the server's audience (npcserver.service.auth.TOKEN_AUDIENCE); the token tests check both agree.
AUDIENCE = "npcserver"


def mint_player_token(
    secret: str | bytes,
    player: str,
    conversation_prefix: str,
    personas: Iterable[str] | None = None,
    ttl: float = 900,
    *,
    algorithm: str = "HS256",
) -> str:
    """A signed player token valid for ``ttl`` seconds.

    ``secret``: the server's HS256 secret, or for ``algorithm`` RS256/ES256 the PEM private key whose public key the
    server holds. ``player`` becomes ``sub``; ``conversation_prefix`` and ``personas`` limit what the token may touch.
    """
    try:
        import jwt
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "minting player tokens needs PyJWT: pip install 'npcserver[tokens]' (or pip install 'PyJWT[crypto]')"
        ) from None
    if not player:
        raise ValueError("player must be a non-empty id (it becomes the token's 'sub')")
    if not conversation_prefix:
        raise ValueError(
            "conversation_prefix must be non-empty, e.g. 'player-42:': it scopes the player's conversations"
        )
    if ttl <= 0:
        raise ValueError(f"ttl must be positive seconds, not {ttl}")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": player,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + int(ttl),
        "conversation_prefix": conversation_prefix,
    }
    if personas is not None:
        claims["personas"] = list(personas)
    return str(jwt.encode(claims, secret, algorithm=algorithm))
