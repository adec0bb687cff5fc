"""Starts a private npcserver process on OS-chosen loopback ports, for scripts and tests that want no setup."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from npcserver.client.errors import NpcServerUnavailable

#: What ``npcserver serve`` prints once its model is loaded and its doors listen, with the ports it was given.
READY_LINE = re.compile(r"npcserver ready: grpc=(\S+)(?: http=(\S+))?")


class LocalServer:
    """An ``npcserver serve`` child process on 127.0.0.1, with the HTTP door off.

    The server binds port 0, so the OS picks a free port as it binds (no window where another process can take
    it); :meth:`start` reads the address from the server's ``npcserver ready:`` line. ``data_dir`` defaults to a
    temporary directory removed on :meth:`stop`. The server's output goes to :attr:`log_path`; its tail is quoted
    in the error when the process dies before it is ready.
    """

    def __init__(
        self,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        args: Sequence[str] = (),
        python: str = sys.executable,
    ) -> None:
        self._target: str | None = None
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._env = dict(env or {})
        self._args = list(args)
        self._python = python
        self._workdir: Path | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self._pump: threading.Thread | None = None
        self.log_path: Path | None = None

    @property
    def target(self) -> str:
        """The server's gRPC address, ``127.0.0.1:<port>``, known once :meth:`start` returned."""
        if self._target is None:
            raise NpcServerUnavailable(
                "the local npcserver has not reported its address yet: start it first (a client's connect(), or "
                "entering the client's with block, does)"
            )
        return self._target

    @property
    def port(self) -> int:
        """The gRPC port the server bound (known once :meth:`start` returned)."""
        return int(self.target.rsplit(":", 1)[1])

    @property
    def data_dir(self) -> Path | None:
        """The server's data directory (set once started)."""
        return self._data_dir

    def start(self, timeout: float = 180.0) -> None:
        """Spawns the process and returns once it is ready (its model loaded, its port bound).

        Raises NpcServerUnavailable, quoting the server's output, if it exits first or is not ready within
        ``timeout`` seconds (then it is stopped).
        """
        if self._proc is not None:
            self._wait_ready(timeout)
            return
        self._workdir = Path(tempfile.mkdtemp(prefix="npcserver-local-"))
        if self._data_dir is None:
            self._data_dir = self._workdir / "data"
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self._workdir / "server.log"
        env = {
            **os.environ,
            "NPCSERVER_GRPC_HOST": "127.0.0.1",
            "NPCSERVER_GRPC_PORT": "0",
            "NPCSERVER_HTTP_ENABLED": "false",
            "NPCSERVER_DATA_DIR": str(self._data_dir),
            "PYTHONUNBUFFERED": "1",
            **self._env,
        }
        self._proc = subprocess.Popen(
            [self._python, "-m", "npcserver", "serve", *self._args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self._pump = threading.Thread(target=self._copy_output, args=(self._proc, self.log_path), daemon=True)
        self._pump.start()
        self._wait_ready(timeout)

    def _copy_output(self, proc: subprocess.Popen[str], log_path: Path) -> None:
        # Reads until the process exits, so its pipe never fills up and blocks it; the log keeps every line.
        assert proc.stdout is not None
        with open(log_path, "a", encoding="utf-8") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if not self._ready.is_set() and (m := READY_LINE.search(line)):
                    self._target = m.group(1)
                    self._ready.set()
        self._ready.set()  # wakes start() at once when the process exits before it is ready

    def _wait_ready(self, timeout: float) -> None:
        if not self._ready.wait(timeout):
            tail = self.log_tail()
            self.stop()
            raise NpcServerUnavailable(
                f"the local npcserver ({self._python} -m npcserver serve) was not ready within {timeout:g} s "
                f"(raise ready_timeout for a slow model load). Its last output:\n{tail}"
            )
        if self._target is None:  # the output ended: the process exited before it was ready
            if self._pump is not None:
                self._pump.join(5)  # the last lines reach the log before we quote it
            code = None
            if self._proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = self._proc.wait(5)
            message = (
                f"the local npcserver ({self._python} -m npcserver serve) exited with code {code} before it was "
                f"ready. Its last output:\n{self.log_tail()}"
            )
            self.stop()
            raise NpcServerUnavailable(message)

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
        self._target = None
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
        if self._pump is not None:
            self._pump.join(5)  # its log file is closed before the directory goes
            self._pump = None
        self._ready.clear()
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
