"""Per-caller rate limits: requests per minute and generated tokens per minute, each a token bucket.

A caller is who admission says is calling (``caller_key``): the API key's name or the player token's player, or,
on a server with no credentials configured, the bearer value it sends or else its address. Each caller has its own
buckets, so one player who hammers the server runs out of its own share and gets RESOURCE_EXHAUSTED / 429 with a
retry hint, while every other player keeps theirs.

The buckets are written here rather than taken from ``limits`` or ``aiolimiter``: the tokens a reply generates are
known only once it has streamed, so the token bucket is charged afterwards and may go into debt (the caller's next
generation waits the debt off), and a refusal needs the exact time until the bucket has refilled for its retry
hint. ``limits`` refuses a hit that would overdraw instead of recording it, and ``aiolimiter`` makes the caller wait
instead of refusing. A bucket is a dozen lines.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from npcserver.errors import RateLimited

#: Buckets kept before idle, full ones are dropped (a full bucket is the same as no bucket).
_PRUNE_AT = 4096


def caller_key(identity: str | None, authorization: str | None, client: str | None) -> str:
    """The identity rate limits count: the admitted caller's (a key's name, a token's player), else a hash of the
    credential sent, else the client's address (a server with no credentials configured).

    A player token counts as its player, so minting fresh tokens does not reset a player's share. The credential is
    hashed so that neither the limiter nor the request log ever holds a key or token.
    """
    if identity:
        return identity
    if authorization and authorization.strip():
        return "cred:" + hashlib.sha256(authorization.strip().encode()).hexdigest()[:16]
    return "addr:" + _host_of(client or "")


def _host_of(peer: str) -> str:
    """The host part of a gRPC peer ("ipv4:127.0.0.1:5555", "ipv6:[::1]:5555") or an address ("127.0.0.1")."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer or "unknown"
    if rest.startswith("["):
        return rest[1:].partition("]")[0]
    return rest.rpartition(":")[0] or rest


@dataclass
class TokenBucket:
    """``capacity`` units that refill at ``rate`` per second. ``level`` may go below zero: a debt to wait off."""

    rate: float
    capacity: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def take(self, n: float, now: float) -> float:
        """Takes ``n`` units; returns 0, or the seconds until ``n`` are there (taking nothing)."""
        self.refill(now)
        if self.level >= n:
            self.level -= n
            return 0.0
        return (n - self.level) / self.rate

    def charge(self, n: float, now: float) -> None:
        """Takes ``n`` units that were already spent, going into debt if need be."""
        self.refill(now)
        self.level -= n


class RateLimiter:
    """Requests and generated tokens per minute, per caller. A limit of 0 is off.

    A caller may use a whole minute's allowance at once (the bucket's capacity), then one unit every
    ``60 / limit`` seconds. A generation may start while the caller's token bucket holds at least one token; what
    it generates is charged when it ends.
    """

    def __init__(
        self, requests_per_minute: int = 0, tokens_per_minute: int = 0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._clock = clock
        self._requests: dict[str, TokenBucket] = {}
        self._tokens: dict[str, TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        return self.requests_per_minute > 0 or self.tokens_per_minute > 0

    def admit_request(self, caller: str) -> None:
        """Counts one request; raises RateLimited when the caller has used its requests for now."""
        if self.requests_per_minute <= 0:
            return
        wait = self._bucket(self._requests, caller, self.requests_per_minute).take(1, self._clock())
        if wait > 0:
            raise RateLimited(
                f"rate limit: this caller may make {self.requests_per_minute} requests per minute; "
                f"retry in {_seconds(wait)} s",
                retry_after_s=wait,
            )

    def admit_generation(self, caller: str) -> None:
        """Raises RateLimited while the caller's generated tokens are over its per-minute allowance."""
        if self.tokens_per_minute <= 0:
            return
        bucket = self._bucket(self._tokens, caller, self.tokens_per_minute)
        bucket.refill(self._clock())
        if bucket.level < 1:
            wait = (1 - bucket.level) / bucket.rate
            raise RateLimited(
                f"rate limit: this caller may generate {self.tokens_per_minute} tokens per minute; "
                f"retry in {_seconds(wait)} s",
                retry_after_s=wait,
                code="token_rate_limited",
            )

    def charge_tokens(self, caller: str, tokens: int) -> None:
        """Charges the tokens a generation produced (it may leave the caller in debt)."""
        if self.tokens_per_minute <= 0 or tokens <= 0:
            return
        self._bucket(self._tokens, caller, self.tokens_per_minute).charge(tokens, self._clock())

    def _bucket(self, buckets: dict[str, TokenBucket], caller: str, per_minute: int) -> TokenBucket:
        bucket = buckets.get(caller)
        if bucket is None:
            now = self._clock()
            if len(buckets) >= _PRUNE_AT:
                _prune(buckets, now)
            bucket = buckets[caller] = TokenBucket(per_minute / 60.0, float(per_minute), float(per_minute), now)
        return bucket


def _prune(buckets: dict[str, TokenBucket], now: float) -> None:
    for key in [k for k, b in buckets.items() if b.level + (now - b.updated) * b.rate >= b.capacity]:
        del buckets[key]


def _seconds(wait: float) -> int:
    """Whole seconds to wait, rounded up (what Retry-After carries)."""
    return max(1, math.ceil(wait))


def retry_after_header(error: RateLimited) -> str:
    """The Retry-After / retry-after value for a refusal: whole seconds, at least 1."""
    return str(_seconds(error.retry_after_s))
