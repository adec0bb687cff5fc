"""Token buckets per caller, on a fake clock (unit tests; the live tests exercise the doors)."""

from __future__ import annotations

import pytest

from npcserver.errors import RateLimited
from npcserver.service.limits import RateLimiter, caller_key, retry_after_header


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_refuse_with_the_time_to_wait_and_refill() -> None:
    clock = Clock()
    limiter = RateLimiter(requests_per_minute=3, clock=clock)
    for _ in range(3):
        limiter.admit_request("a")
    with pytest.raises(RateLimited) as refused:
        limiter.admit_request("a")
    assert refused.value.retry_after_s == pytest.approx(20.0)  # one request every 60/3 s
    assert retry_after_header(refused.value) == "20"
    assert "3 requests per minute" in refused.value.message and refused.value.http_status == 429
    assert refused.value.grpc_status == "RESOURCE_EXHAUSTED"
    clock.now += 19.0
    with pytest.raises(RateLimited) as again:
        limiter.admit_request("a")
    assert again.value.retry_after_s == pytest.approx(1.0)
    clock.now += 1.0
    limiter.admit_request("a")


def test_one_caller_running_out_leaves_the_others_their_share() -> None:
    limiter = RateLimiter(requests_per_minute=2, tokens_per_minute=100, clock=Clock())
    limiter.admit_request("greedy")
    limiter.admit_request("greedy")
    with pytest.raises(RateLimited):
        limiter.admit_request("greedy")
    limiter.admit_request("other")
    limiter.admit_request("other")


def test_tokens_are_charged_after_the_reply_and_a_debt_is_waited_off() -> None:
    clock = Clock()
    limiter = RateLimiter(tokens_per_minute=60, clock=clock)
    limiter.admit_generation("a")
    limiter.charge_tokens("a", 90)  # the reply was longer than what was left: 30 tokens of debt
    with pytest.raises(RateLimited) as refused:
        limiter.admit_generation("a")
    assert refused.value.code == "token_rate_limited"
    assert refused.value.retry_after_s == pytest.approx(31.0)  # back to one token at one per second
    limiter.admit_generation("b")
    clock.now += 31.0
    limiter.admit_generation("a")


def test_limits_of_zero_are_off() -> None:
    limiter = RateLimiter(clock=Clock())
    assert not limiter.enabled
    for _ in range(1000):
        limiter.admit_request("a")
        limiter.admit_generation("a")
        limiter.charge_tokens("a", 1000)


def test_caller_key_prefers_the_admitted_identity_and_never_holds_a_credential() -> None:
    assert caller_key("token:player-7", "Bearer eyJ...", "ipv4:10.0.0.1:5000") == "token:player-7"
    hashed = caller_key(None, "Bearer secret-key", "ipv4:10.0.0.1:5000")
    assert hashed.startswith("cred:") and "secret" not in hashed
    assert caller_key(None, "Bearer secret-key", None) == hashed
    assert caller_key(None, None, "ipv4:10.0.0.1:5000") == "addr:10.0.0.1"
    assert caller_key(None, None, "ipv6:[::1]:5000") == "addr:::1"
    assert caller_key(None, "", "127.0.0.1") == "addr:127.0.0.1"
