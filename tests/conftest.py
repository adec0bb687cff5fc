"""Shared fixtures: the real server, on the real embedded model, over real sockets.

``live_server`` is one server subprocess for the whole session (the model loads once). Tests that need their own
server (restart, API key, queue limits) use ``server_factory``. Ports are chosen by the OS (port 0): the server
prints the ports it got on its ``npcserver ready:`` line, which the fixture reads.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import npcserver  # noqa: F401  # first: it sets OMP_WAIT_POLICY, before any test module loads llama.cpp

REPO = Path(__file__).resolve().parent.parent
READY = re.compile(r"npcserver ready: grpc=(\S+)(?: http=(\S+))?")
START_TIMEOUT_S = 300


@dataclass
class ServerProcess:
    """A running ``python -m npcserver serve``."""

    proc: subprocess.Popen[str]
    grpc_target: str
    http_url: str
    data_dir: Path
    log: list[str] = field(default_factory=list)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        return "".join(self.log)


def start_server(data_dir: Path, **env_overrides: str) -> ServerProcess:
    """Starts a server subprocess on free ports and waits until its model is loaded."""
    env = dict(os.environ)
    env.update(
        {
            "NPCSERVER_GRPC_PORT": "0",
            "NPCSERVER_HTTP_PORT": "0",
            "NPCSERVER_DATA_DIR": str(data_dir),
            "NPCSERVER_PERSONAS_DIR": str(REPO / "personas"),
            # No lore unless a test brings its own: the example lore would change every prompt of its personas.
            "NPCSERVER_LORE_DIR": str(data_dir / "no-lore"),
            "NPCSERVER_CORS_ORIGINS": "*",
            "NPCSERVER_THREADS": "2",
            "NPCSERVER_CTX_SIZE": "4096",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(env_overrides)
    proc = subprocess.Popen(
        [sys.executable, "-m", "npcserver", "serve"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log: list[str] = []
    found: dict[str, str] = {}
    got = threading.Event()

    def pump() -> None:  # keeps reading so the pipe never fills up and blocks the server
        assert proc.stdout is not None
        for line in proc.stdout:
            log.append(line)
            m = READY.search(line)
            if m and not got.is_set():
                found["grpc"] = m.group(1)
                found["http"] = m.group(2) or ""
                got.set()
        got.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not got.wait(0.2):
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server did not become ready in time:\n" + "".join(log))
    if "grpc" not in found:
        proc.wait(10)
        raise RuntimeError(f"server exited ({proc.returncode}) before ready:\n" + "".join(log))
    return ServerProcess(proc, found["grpc"], found["http"], data_dir, log)


#: Fixtures that load the embedded model or start a server on it, defined here or in a folder's conftest.py. A test
#: that uses one, directly or through another fixture, is marked ``model`` by the hook below, so the fast lane
#: (``-m "not model and not slow"``) leaves it out without anyone having to remember the marker. tests/core's
#: ``vocab`` (the model's tokenizer alone, milliseconds) is not one.
MODEL_FIXTURES = frozenset(
    {
        "live_server",  # here
        "server_factory",  # here
        "model_path",  # tests/engine: the engine fixtures and the upstream's llama-server all start from it
        "template_model",  # tests/templates: copies of the model with other chat templates
    }
)

#: Helpers a test module may call itself to start a server on the model: a module that imports one is all ``model``.
SERVER_STARTERS = frozenset({str(Path(__file__).resolve()), str(REPO / "tests" / "engine" / "llama_server.py")})


def _starts_servers(module: object) -> bool:
    for name in ("start_server", "llama_server"):
        helper = getattr(module, name, None)
        if callable(helper):
            code = getattr(inspect.unwrap(helper), "__code__", None)
            if code is not None and str(Path(code.co_filename).resolve()) in SERVER_STARTERS:
                return True
    return False


def _uses_postgres(item: pytest.Item) -> bool:
    # The store tests open their backend by parameter (a "postgres..." id) as well as through the fixture.
    callspec = getattr(item, "callspec", None)
    return "postgres_cluster" in getattr(item, "fixturenames", ()) or "postgres" in getattr(callspec, "id", "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks ``model`` every test that needs the model: through a fixture in MODEL_FIXTURES, or because its module
    starts servers itself; and ``slow`` every test on PostgreSQL (a database cluster and a database per test)."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        module = getattr(item, "module", None)
        if MODEL_FIXTURES.intersection(fixtures) or (module is not None and _starts_servers(module)):
            item.add_marker(pytest.mark.model)
        if _uses_postgres(item):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server for the session: embedded model, example personas, CORS open, both doors."""
    server = start_server(tmp_path_factory.mktemp("live-data"))
    yield server
    server.stop()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[object]:
    """Starts extra servers for one test (``factory(data_dir=None, **env)``); stops them afterwards."""
    started: list[ServerProcess] = []

    def factory(data_dir: Path | None = None, **env: str) -> ServerProcess:
        server = start_server(data_dir or tmp_path / f"data{len(started)}", **env)
        started.append(server)
        return server

    yield factory
    for s in started:
        s.stop()
