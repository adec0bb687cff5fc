"""A real llama-server on loopback, for the upstream engine's tests.

The binary is built from the llama.cpp vendored in the installed llama-cpp-python (``bench.native``), so it is the
same llama.cpp as the embedded engine. It is cached under ``~/.cache/npcserver-bench``; on a machine without it the
first use builds it (tens of minutes on 2 cores; tests/engine/install.sh does it before pytest).
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.native import ensure_native_tools

START_TIMEOUT_S = 120.0


@dataclass
class LlamaServer:
    """A running llama-server process."""

    proc: subprocess.Popen[str]
    url: str
    parallel: int
    log: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        return "".join(self.log)

    def busy_slots(self) -> int:
        """Slots generating right now (llama-server's /slots)."""
        slots = httpx.get(f"{self.url}/slots", timeout=5).json()
        return sum(1 for s in slots if s.get("is_processing"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_llama_server(
    model: Path, *, parallel: int, ctx_per_slot: int, threads: int = 2, port: int | None = None
) -> LlamaServer:
    """Starts llama-server on loopback (a free port unless given) with ``parallel`` slots of ``ctx_per_slot``
    tokens each, and waits until it is healthy."""
    binary = ensure_native_tools()["llama-server"]
    port = port or free_port()
    cmd = [
        str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
        "--parallel", str(parallel), "--ctx-size", str(ctx_per_slot * parallel), "--threads", str(threads),
        "--slots", "--no-webui",
        # Gemma 3 attends over a window on most layers. A windowed cache cannot be cut back to where a new prompt
        # departs from the cached one (a reply is re-tokenized), so without the full cache llama-server restores an
        # earlier checkpoint and reads more again; the embedded engine keeps the full cache for the same reason.
        "--swa-full",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server = LlamaServer(proc, f"http://127.0.0.1:{port}", parallel)

    def pump() -> None:  # keeps reading so the pipe never fills up and blocks the server
        assert proc.stdout is not None
        for line in proc.stdout:
            server.log.append(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama-server exited ({proc.returncode}):\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"llama-server did not become healthy in {START_TIMEOUT_S} s:\n{server.output()}")


@contextmanager
def llama_server(model: Path, *, parallel: int, ctx_per_slot: int) -> Iterator[LlamaServer]:
    server = start_llama_server(model, parallel=parallel, ctx_per_slot=ctx_per_slot)
    try:
        yield server
    finally:
        server.stop()
