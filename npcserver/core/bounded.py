"""Bounded work: run a function in a worker process with a deadline and a memory limit, and really stop it.

Compiling a schema to a grammar (llama.cpp's parser can overflow its stack), validating a reply against a schema's
regular expressions (they can backtrack for hours) and rendering a Jinja2 chat template (a loop or a string product
can take minutes and gigabytes) all depend on what a client sent. None of it runs on the server's main thread or
its event loop: it runs here, in a small pool of warm worker processes (pebble's ``ProcessPool``). Each worker has
an address-space limit (``RLIMIT_AS``, see ``limits.WORKER_MEMORY_MB``). A task that passes its deadline, or whose
caller goes away, has its worker killed and replaced; a task that runs out of memory or crashes its worker fails
alone, and the server carries on. Those failures become ``ResourceExhausted`` naming the limit; any other exception
the function raises (an ``NpcError`` saying what to fix, say) reaches the caller unchanged. A task that cannot get
a worker in ``WORKER_QUEUE_TIMEOUT_S`` (all busy with runaway work) is given up as ``QueueFull``, so a flood of bad
requests delays good ones by a bounded time.

Use ``await arun(...)`` from async code and ``run(...)`` from a worker thread (it blocks until the task ends). The
function and its arguments must be picklable: a module-level function and plain data. A round trip to a warm
worker costs about half a millisecond.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib
import logging
import multiprocessing
import resource
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from pebble import ProcessExpired, ProcessPool

from npcserver.core import limits
from npcserver.errors import QueueFull, ResourceExhausted

log = logging.getLogger(__name__)

T = TypeVar("T")

_MIB = 1024 * 1024
#: Imported by each worker before its memory limit is set, so the limit is headroom for the work alone and the
#: first task does not pay for the imports.
WARM_MODULES = ("jinja2.sandbox", "jsonschema", "llama_cpp", "npcserver.core.structured", "npcserver.core.templates")


def _address_space() -> int | None:
    """This process's virtual memory size in bytes (Linux), or None where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _init_worker(memory_mb: int, modules: tuple[str, ...]) -> None:
    """Runs once in each new worker: warm imports, then the memory limit and no core dumps."""
    for name in modules:
        importlib.import_module(name)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash (stack overflow) must not write a core file
    used = _address_space()
    if used is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        want = used + memory_mb * _MIB
        if hard != resource.RLIM_INFINITY:
            want = min(want, hard)
        resource.setrlimit(resource.RLIMIT_AS, (want, hard))


def _noop() -> None:
    return None


class BoundedPool:
    """Warm worker processes that run one task each at a time, under a deadline and a memory limit."""

    def __init__(
        self,
        *,
        workers: int = limits.WORKERS,
        memory_mb: int = limits.WORKER_MEMORY_MB,
        queue_wait_s: float = limits.WORKER_QUEUE_TIMEOUT_S,
        warm_modules: tuple[str, ...] = WARM_MODULES,
    ) -> None:
        self.workers = workers
        self.memory_mb = memory_mb
        self.queue_wait_s = queue_wait_s
        # spawn, not fork: the server holds gRPC, llama.cpp and event-loop threads, which a forked child would
        # inherit in whatever state they were in.
        self._pool = ProcessPool(
            max_workers=workers,
            initializer=_init_worker,
            initargs=(memory_mb, warm_modules),
            context=multiprocessing.get_context("spawn"),
        )

    def warm(self) -> None:
        """Starts the workers now (in the background) rather than on the first task."""
        self._pool.schedule(_noop)

    def submit(self, fn: Callable[..., T], *args: Any, time_limit_s: float) -> Future[T]:
        """Schedules ``fn(*args)``; the worker is killed if it runs longer than ``time_limit_s`` seconds or the
        future is cancelled. Prefer ``run`` / ``arun``, which translate the failures."""
        future: Future[T] = self._pool.schedule(fn, args=args, timeout=time_limit_s)
        return future

    def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        time_limit_s: float,
        what: str,
        param: str | None = None,
        limit_name: str = "",
    ) -> T:
        """Runs ``fn(*args)`` in a worker and waits (do not call it on the event loop).

        ``what`` says what the work is ("rendering the chat template"), ``param`` names the request field and
        ``limit_name`` the time limit's constant, for the error when a limit is hit.
        """
        future = self.submit(fn, *args, time_limit_s=time_limit_s)
        try:
            return future.result(timeout=time_limit_s + self.queue_wait_s)
        except BaseException as exc:
            if not future.done():  # still waiting for a worker: give up on it rather than wait without end
                future.cancel()
                raise self._busy(what, param) from None
            raise self._translate(
                exc, time_limit_s=time_limit_s, what=what, param=param, limit_name=limit_name
            ) from None

    async def arun(
        self,
        fn: Callable[..., T],
        *args: Any,
        time_limit_s: float,
        what: str,
        param: str | None = None,
        limit_name: str = "",
    ) -> T:
        """``run`` for async code. Cancelling the awaiting task kills the worker running it."""
        future = self.submit(fn, *args, time_limit_s=time_limit_s)
        try:
            # wrap_future cancels the pebble future when this task is cancelled (or wait_for gives up on it);
            # pebble then stops the worker running it.
            return await asyncio.wait_for(asyncio.wrap_future(future), time_limit_s + self.queue_wait_s)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if future.cancelled():
                raise self._busy(what, param) from None
            raise self._translate(
                exc, time_limit_s=time_limit_s, what=what, param=param, limit_name=limit_name
            ) from None

    def _busy(self, what: str, param: str | None) -> QueueFull:
        return QueueFull(
            f"{what} waited more than {self.queue_wait_s:g} s for a free worker (WORKER_QUEUE_TIMEOUT_S): the server "
            "is busy with other bounded work; retry later",
            param=param,
            code="workers_busy",
        )

    def _translate(
        self, exc: BaseException, *, time_limit_s: float, what: str, param: str | None, limit_name: str
    ) -> BaseException:
        if isinstance(exc, TimeoutError):
            named = f" ({limit_name})" if limit_name else ""
            return ResourceExhausted(
                f"{what} took longer than its time limit of {time_limit_s:g} s{named} and was stopped; simplify it",
                param=param,
                code="time_limit",
            )
        if isinstance(exc, MemoryError):
            return ResourceExhausted(
                f"{what} needed more than the worker memory limit of {self.memory_mb} MiB (WORKER_MEMORY_MB) and was "
                "stopped; simplify it",
                param=param,
                code="memory_limit",
            )
        if isinstance(exc, ProcessExpired):
            return ResourceExhausted(
                f"{what} crashed its worker process (exit code {exc.exitcode}), which was replaced; the input is too "
                "large or too deeply nested: simplify it",
                param=param,
                code="worker_crashed",
            )
        return exc

    def close(self) -> None:
        """Stops the workers (running tasks are abandoned)."""
        self._pool.stop()  # type: ignore[no-untyped-call]  # pebble leaves stop() unannotated
        self._pool.join()


_default: BoundedPool | None = None
_default_lock = threading.Lock()


def default_pool() -> BoundedPool:
    """The process's shared pool, created (and its workers started) on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = BoundedPool()
            _default.warm()
            atexit.register(_default.close)
        return _default


def warm() -> None:
    """Starts the shared pool's workers in the background, so the first request does not wait for them."""
    default_pool()


def run(
    fn: Callable[..., T], *args: Any, time_limit_s: float, what: str, param: str | None = None, limit_name: str = ""
) -> T:
    """``BoundedPool.run`` on the shared pool."""
    return default_pool().run(fn, *args, time_limit_s=time_limit_s, what=what, param=param, limit_name=limit_name)


async def arun(
    fn: Callable[..., T], *args: Any, time_limit_s: float, what: str, param: str | None = None, limit_name: str = ""
) -> T:
    """``BoundedPool.arun`` on the shared pool."""
    return await default_pool().arun(
        fn, *args, time_limit_s=time_limit_s, what=what, param=param, limit_name=limit_name
    )
