"""A throwaway PostgreSQL cluster and a PgBouncer in front of it, for the store tests.

Both run from Debian's packages (``tests/store/install.sh`` installs them) in a temporary folder, on free loopback
ports, with their unix sockets in that folder; ``stop`` ends them and deletes it. Neither runs as root (both refuse),
so under root they run as the ``postgres`` user that Debian's package creates.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

USER = "npc"  # the cluster's superuser; trust authentication on loopback


def _bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: run tests/store/install.sh (scripts/test.sh does)")
    return found[-1].parent


def _pgbouncer() -> str:
    path = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
    if path is None:
        raise RuntimeError("PgBouncer is not installed: run tests/store/install.sh (scripts/test.sh does)")
    return path


def _as_db_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str], timeout: float = 120) -> None:
    done = subprocess.run(_as_db_user(cmd), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def _wait_connectable(dsn: str, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
            return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not accept connections within {timeout} s: {exc}") from exc
            time.sleep(0.1)


@dataclass
class PostgresCluster:
    """One running cluster (``start``), with a PgBouncer in transaction pooling mode in front of it."""

    root: Path
    port: int
    bouncer_port: int
    _bouncer_pid: int | None = field(default=None, repr=False)

    @classmethod
    def start(cls) -> PostgresCluster:
        root = Path(tempfile.mkdtemp(prefix="npcserver-pg-"))
        cluster = cls(root, _free_port(), _free_port())
        try:
            if os.geteuid() == 0:
                shutil.chown(root, "postgres", "postgres")
            cluster._start_postgres()
            cluster._start_bouncer()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _start_postgres(self) -> None:
        bin_dir = _bin_dir()
        data = self.root / "data"
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "-A", "trust", "-E", "UTF8", "--no-sync"])
        # Throwaway data: no fsync. Enough connections for the bouncer's pools plus direct ones.
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        log = self.root / "postgres.log"
        _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"])

    def _start_bouncer(self) -> None:
        (self.root / "userlist.txt").write_text(f'"{USER}" ""\n')
        ini = self.root / "pgbouncer.ini"
        pidfile = self.root / "pgbouncer.pid"
        ini.write_text(
            f"""[databases]
* = host=127.0.0.1 port={self.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.bouncer_port}
unix_socket_dir = {self.root}
auth_type = trust
auth_file = {self.root / "userlist.txt"}
pool_mode = transaction
max_client_conn = 500
default_pool_size = 10
logfile = {self.root / "pgbouncer.log"}
pidfile = {pidfile}
"""
        )
        for path in (ini, self.root / "userlist.txt"):
            if os.geteuid() == 0:
                shutil.chown(path, "postgres", "postgres")
        _run([_pgbouncer(), "-d", "-q", str(ini)])  # -d: daemon; its pid goes to the pidfile
        deadline = time.monotonic() + 30
        while not pidfile.exists() or not pidfile.read_text().strip():
            if time.monotonic() > deadline:
                raise RuntimeError(f"pgbouncer wrote no pidfile; its log:\n{self._log('pgbouncer.log')}")
            time.sleep(0.05)
        self._bouncer_pid = int(pidfile.read_text().strip())
        _wait_connectable(self.url("postgres", bouncer=True), "pgbouncer")

    def _log(self, name: str) -> str:
        path = self.root / name
        return path.read_text(errors="replace") if path.exists() else "(no log)"

    def url(self, database: str, *, bouncer: bool = False) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.bouncer_port if bouncer else self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database (ICU collation, so that an id order depending on the locale would show)."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(
                f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' "
                "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
            )
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            # FORCE: the bouncer may still hold server connections to it.
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        if self._bouncer_pid is not None:
            pid, self._bouncer_pid = self._bouncer_pid, None
            try:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    os.kill(pid, 0)  # raises once it is gone
                    time.sleep(0.05)
            except ProcessLookupError:
                pass
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            _run([str(_bin_dir() / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)
