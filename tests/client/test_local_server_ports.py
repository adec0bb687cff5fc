"""LocalServer takes its address from the server's ready line (port 0, no check-then-bind), shown with a stand-in.

The stand-in replaces the Python executable, so these run without the model; the real process is in
test_client_local.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from npcserver.client import LocalServer, NpcServerUnavailable


def _fake_python(tmp_path: Path, body: str) -> str:
    """An executable that stands in for ``python -m npcserver serve``; it records its environment first."""
    script = tmp_path / "fake-python"
    script.write_text(f'#!/bin/sh\nenv > "{tmp_path}/env.txt"\n{body}\n')
    script.chmod(0o755)
    return str(script)


def test_the_address_comes_from_the_ready_line_of_a_server_on_port_zero(tmp_path: Path) -> None:
    python = _fake_python(
        tmp_path, 'echo "loading the model"\necho "npcserver ready: grpc=127.0.0.1:41234"\nexec sleep 60'
    )
    server = LocalServer(python=python)
    with pytest.raises(NpcServerUnavailable, match="start it first"):
        _ = server.target
    server.start(timeout=20)
    try:
        assert server.target == "127.0.0.1:41234"
        assert server.port == 41234
        assert server.running
        env = dict(line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines() if "=" in line)
        assert env["NPCSERVER_GRPC_PORT"] == "0"  # the server binds port 0: the OS picks a free port as it binds
        assert env["NPCSERVER_HTTP_ENABLED"] == "false"
        assert "loading the model" in server.log_tail()
    finally:
        server.stop()
    assert not server.running


def test_a_server_that_never_gets_ready_is_stopped_at_the_timeout(tmp_path: Path) -> None:
    server = LocalServer(python=_fake_python(tmp_path, 'echo "still loading"\nexec sleep 60'))
    start = time.monotonic()
    with pytest.raises(NpcServerUnavailable, match=r"not ready within 1 s") as exc:
        server.start(timeout=1.0)
    assert time.monotonic() - start < 10
    assert "still loading" in exc.value.message
    assert not server.running


def test_a_server_that_exits_early_is_reported_at_once_with_its_output(tmp_path: Path) -> None:
    server = LocalServer(python=_fake_python(tmp_path, 'echo "error: no such flag" >&2\nexit 3'))
    start = time.monotonic()
    with pytest.raises(NpcServerUnavailable, match="exited with code 3") as exc:
        server.start(timeout=60)
    assert time.monotonic() - start < 10
    assert "error: no such flag" in exc.value.message
