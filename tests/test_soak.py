"""A 60-second soak (bench/soak.py): 64 conversations over gRPC and gRPC-Web with cancels, deadlines and bad
requests. Good requests end OK or RESOURCE_EXHAUSTED at the queue limit, nothing else; every conversation gets
turns; RSS and file descriptors stay flat after warm-up. The 10-minute run is ``python -m bench.soak``."""

from __future__ import annotations

import os

import pytest

from bench.soak import run_soak
from tests.conftest import ServerProcess

SECONDS = float(os.environ.get("NPCSERVER_SOAK_SECONDS", "60"))


@pytest.mark.timeout(600)
async def test_sixty_second_soak(server_factory: object) -> None:
    server: ServerProcess = server_factory(NPCSERVER_LOG_LEVEL="WARNING")  # type: ignore[operator]
    report = await run_soak(server.grpc_target, server.http_url, server.proc.pid, SECONDS, warmup_s=SECONDS / 3)
    print("\n" + report.table())
    assert server.proc.poll() is None, server.output()[-3000:]
    assert not report.unexpected, report.unexpected[:20]
    assert ("grpc", "talk", "OK") in report.codes and ("grpc-web", "talk", "OK") in report.codes
    assert min(report.turns.values()) >= 1, f"a conversation starved: {report.turns}"
    # Sixty seconds is mostly warm-up (each conversation's first turns allocate its KV and saved state), so this
    # bounds the growth; the 10-minute run reports the slope after warm-up.
    rss = report.after_warmup(report.rss_mib)
    assert max(rss) - rss[0] < 512, report.table()
    fds = report.after_warmup(report.fds)
    assert max(fds) - min(fds) <= 16, report.table()
