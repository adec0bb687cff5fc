"""Health tells the truth: NOT_SERVING / 503 while the event loop or the engine is stuck, not only while loading."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from npcserver.core.watchdog import Watchdog
from tests.conftest import ServerProcess


@dataclass
class _Stats:
    steps: int


class _WedgedEngine:
    """Holds a request; its scheduler's step counter moves only when told to."""

    def __init__(self) -> None:
        self.outstanding = 1
        self.steps = 0

    def stats(self) -> _Stats:
        return _Stats(self.steps)


async def test_a_blocked_event_loop_is_reported_until_it_runs_on_time_again() -> None:
    dog = Watchdog(lambda: None, lag_limit_s=0.5, recovery_s=0.6)
    dog.start()
    await asyncio.sleep(0.3)
    assert dog.problem() is None
    time.sleep(1.0)  # noqa: ASYNC251  # blocks the loop, as a long synchronous call on it would
    await asyncio.sleep(0.05)
    problem = dog.problem()
    assert problem is not None and "event loop was stuck" in problem and "LOOP_LAG_LIMIT_S" in problem
    await asyncio.sleep(0.8)
    assert dog.problem() is None
    await dog.stop()


async def test_an_engine_holding_requests_without_steps_is_reported() -> None:
    engine = _WedgedEngine()
    dog = Watchdog(lambda: engine, engine_stall_s=0.5)
    dog.start()
    await asyncio.sleep(0.3)
    assert dog.problem() is None
    await asyncio.sleep(0.6)
    problem = dog.problem()
    assert problem is not None and "engine" in problem and "ENGINE_STALL_S" in problem
    engine.steps += 1  # the scheduler moves again
    assert dog.problem() is None
    engine.outstanding = 0
    await asyncio.sleep(0.6)
    assert dog.problem() is None  # an idle engine is not stuck
    await dog.stop()


def _grpc_status(stub: health_pb2_grpc.HealthStub) -> str:
    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def test_a_stopped_server_reports_not_serving_after_it_resumes_then_serving(live_server: ServerProcess) -> None:
    channel = grpc.insecure_channel(live_server.grpc_target)
    stub = health_pb2_grpc.HealthStub(channel)
    http = httpx.Client(base_url=live_server.http_url, timeout=10)
    assert _grpc_status(stub) == "SERVING" and http.get("/healthz").status_code == 200
    # SIGSTOP freezes every thread of the process, the event loop included: the watchdog's timer fires late.
    os.kill(live_server.proc.pid, signal.SIGSTOP)
    time.sleep(2.0)
    os.kill(live_server.proc.pid, signal.SIGCONT)
    time.sleep(0.5)
    assert _grpc_status(stub) == "NOT_SERVING"
    r = http.get("/healthz")
    assert r.status_code == 503 and r.json()["status"] == "stuck" and "event loop" in r.json()["problem"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _grpc_status(stub) != "SERVING":
        time.sleep(0.25)
    assert _grpc_status(stub) == "SERVING" and http.get("/healthz").status_code == 200
    channel.close()
    http.close()
