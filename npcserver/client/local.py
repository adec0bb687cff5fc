"""Starts a private npcserver process on a free loopback port, for scripts and tests that want no setup."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from npcserver.client.errors import NpcServerUnavailable


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free right now (the server binds it a moment later; a clash is very unlikely)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class LocalServer:
    """An ``npcserver serve`` child process on 127.0.0.1:<free port>, with the HTTP door off.

    ``data_dir`` defaults to a temporary directory removed on :meth:`stop`. The server's output goes to
    :attr:`log_path`; its tail is quoted in the error when the process dies before it is ready.
    """

    def __init__(
        self,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        python: str = sys.executable,
    ) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._env = dict(env or {})
        self._args = list(args)
        self._python = python
        self._workdir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None

    @property
    def data_dir(self) -> Path | None:
        """The server's data directory (set once started)."""
        return self._data_dir

    def start(self) -> None:
        """Spawns the process. Returns at once; the client then waits for health SERVING."""
        if self._proc is not None:
            return
        self._workdir = Path(tempfile.mkdtemp(prefix="npcserver-local-"))
        if self._data_dir is None:
            self._data_dir = self._workdir / "data"
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self._workdir / "server.log"
        env = {
            **os.environ,
            "NPCSERVER_GRPC_PORT": str(self.port),
            "NPCSERVER_HTTP_ENABLED": "false",
            "NPCSERVER_DATA_DIR": str(self._data_dir),
            **self._env,
        }
        with open(self.log_path, "wb") as log:
            # The child keeps its own handle on the log file; ours can close right away.
            self._proc = subprocess.Popen(
                [self._python, "-m", "npcserver", "serve", *self._args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        """The last lines the server printed."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raises NpcServerUnavailable (quoting the server's log) if the process has exited."""
        if self._proc is None:
            raise NpcServerUnavailable("the local npcserver was never started")
        code = self._proc.poll()
        if code is not None:
            raise NpcServerUnavailable(
                f"the local npcserver ({self._python} -m npcserver serve) exited with code {code} before it was "
                f"ready. Its last output:\n{self.log_tail()}"
            )

    def stop(self, timeout: float = 15.0) -> int | None:
        """Stops the process gracefully (SIGTERM, then SIGKILL after ``timeout`` s) and removes temp files.

        Returns the exit code, or None if it was never started.
        """
        proc, self._proc = self._proc, None
        code: int | None = None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()  # SIGTERM: the server drains and closes its store cleanly.
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            code = proc.returncode
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        return code

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
