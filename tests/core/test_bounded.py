"""The bounded worker pool: deadlines that really stop the work, the memory limit, crashes, and errors passing
through. Real worker processes; the functions below run in them (so they are module-level, to be picklable)."""

from __future__ import annotations

import asyncio
import ctypes
import os
import threading
import time
from collections.abc import Iterator

import pytest

from npcserver.core.bounded import BoundedPool
from npcserver.errors import InvalidArgument, QueueFull, ResourceExhausted


def pid() -> int:
    return os.getpid()


def spin_forever() -> None:
    while True:
        pass


def allocate(mib: int) -> int:
    return len(bytearray(mib * 1024 * 1024))


def refuse(message: str) -> None:
    raise InvalidArgument(message, param="chat_template", code="bad")


def fail_plainly() -> None:
    raise ValueError("plain failure")


def segfault() -> None:
    ctypes.string_at(0)


def echo(value: str) -> str:
    return value


def alive(process_id: int) -> bool:
    try:
        os.kill(process_id, 0)
    except ProcessLookupError:
        return False
    # A killed child that was not reaped yet is a zombie: gone for every purpose here.
    with open(f"/proc/{process_id}/stat") as f:
        return f.read().split(") ")[1][0] != "Z"


@pytest.fixture(scope="module")
def pool() -> Iterator[BoundedPool]:
    p = BoundedPool(workers=1, memory_mb=128, warm_modules=())
    yield p
    p.close()


def test_a_task_past_its_deadline_is_stopped_and_its_worker_replaced(pool: BoundedPool) -> None:
    worker = pool.run(pid, time_limit_s=30, what="finding the worker")
    start = time.perf_counter()
    with pytest.raises(ResourceExhausted) as exc:
        pool.run(spin_forever, time_limit_s=0.5, what="spinning", param="chat_template")
    assert time.perf_counter() - start < 2.0
    assert exc.value.code == "time_limit" and exc.value.param == "chat_template"
    assert exc.value.message.startswith("spinning took longer than its time limit of 0.5 s")
    assert not alive(worker), "the timed-out worker must be killed, not left running"
    replacement = pool.run(pid, time_limit_s=30, what="finding the worker")
    assert replacement != worker


def test_the_memory_limit_stops_a_task_and_the_worker_carries_on(pool: BoundedPool) -> None:
    assert pool.run(allocate, 32, time_limit_s=30, what="allocating") == 32 * 1024 * 1024
    with pytest.raises(ResourceExhausted) as exc:
        pool.run(allocate, 1024, time_limit_s=30, what="allocating a GiB")
    assert exc.value.code == "memory_limit" and "128 MiB" in exc.value.message
    assert pool.run(allocate, 32, time_limit_s=30, what="allocating") == 32 * 1024 * 1024


def test_a_crashing_task_fails_alone(pool: BoundedPool) -> None:
    with pytest.raises(ResourceExhausted) as exc:
        pool.run(segfault, time_limit_s=30, what="reading address 0")
    assert exc.value.code == "worker_crashed" and "crashed its worker process" in exc.value.message
    assert pool.run(echo, "still here", time_limit_s=30, what="echo") == "still here"


def test_exceptions_from_the_task_reach_the_caller_unchanged(pool: BoundedPool) -> None:
    with pytest.raises(InvalidArgument) as exc:
        pool.run(refuse, "no such filter", time_limit_s=30, what="rendering")
    assert (exc.value.message, exc.value.param, exc.value.code) == ("no such filter", "chat_template", "bad")
    with pytest.raises(ValueError, match="plain failure"):
        pool.run(fail_plainly, time_limit_s=30, what="failing")


async def test_async_callers_wait_without_blocking_the_loop_and_a_deadline_applies(pool: BoundedPool) -> None:
    assert await pool.arun(echo, "hi", time_limit_s=30, what="echo") == "hi"
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    tick = asyncio.create_task(ticker())
    with pytest.raises(ResourceExhausted, match=r"time limit of 0\.6 s"):
        await pool.arun(spin_forever, time_limit_s=0.6, what="spinning")
    tick.cancel()
    assert ticks >= 6, "the event loop kept running while the worker spun"


async def test_a_cancelled_caller_stops_its_worker(pool: BoundedPool) -> None:
    worker = await pool.arun(pid, time_limit_s=30, what="finding the worker")
    task = asyncio.create_task(pool.arun(spin_forever, time_limit_s=60, what="spinning"))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(60):  # pebble stops a cancelled task's worker on its next pass (every 0.1 s)
        if not alive(worker):
            break
        await asyncio.sleep(0.05)
    assert not alive(worker), "a caller that went away must not leave its work running"
    assert await pool.arun(echo, "next", time_limit_s=30, what="echo") == "next"


def test_worker_threads_share_the_pool(pool: BoundedPool) -> None:
    results: list[str] = []

    def call(i: int) -> None:
        results.append(pool.run(echo, f"t{i}", time_limit_s=30, what="echo"))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == sorted(f"t{i}" for i in range(8))


def test_a_round_trip_to_a_warm_worker_is_cheap(pool: BoundedPool) -> None:
    pool.run(echo, "warm", time_limit_s=30, what="echo")
    n = 200
    start = time.perf_counter()
    for _ in range(n):
        pool.run(echo, "x" * 1000, time_limit_s=30, what="echo")
    per_call_ms = (time.perf_counter() - start) / n * 1000
    print(f"bounded round trip: {per_call_ms:.2f} ms")
    assert per_call_ms < 10, per_call_ms


async def test_a_task_that_cannot_get_a_worker_in_time_is_given_up_as_queue_full() -> None:
    busy = BoundedPool(workers=1, memory_mb=128, queue_wait_s=0.3, warm_modules=())
    try:
        assert busy.run(echo, "warm", time_limit_s=30, what="echo") == "warm"
        hog = busy.submit(spin_forever, time_limit_s=5)
        start = time.perf_counter()
        with pytest.raises(QueueFull) as exc:
            busy.run(echo, "late", time_limit_s=0.2, what="echoing", param="chat_template")
        assert exc.value.code == "workers_busy" and "WORKER_QUEUE_TIMEOUT_S" in exc.value.message
        with pytest.raises(QueueFull):
            await busy.arun(echo, "late", time_limit_s=0.2, what="echoing")
        assert time.perf_counter() - start < 3
        hog.cancel()
        assert await busy.arun(echo, "free again", time_limit_s=30, what="echo") == "free again"
    finally:
        busy.close()
