"""Soak: 64 conversations talk through gRPC and gRPC-Web for N minutes, with cancels, deadlines and bad requests.

    .venv/bin/python -m bench.soak --minutes 10            # starts its own server on loopback, prints the table
    .venv/bin/python -m bench.soak --minutes 10 --results  # and appends it to bench/RESULTS.md

Each conversation loops: a normal Talk (a few tokens), or now and then one it cancels after the first piece, one
with a 50 ms deadline, or a bad request. A Talk refused with RESOURCE_EXHAUSTED (the queue is full) is retried after
a short pause. What it checks and reports:

- status codes by kind of request: a good request may only end OK or RESOURCE_EXHAUSTED at the queue limit; anything
  else is counted as unexpected;
- the longest a conversation waited for its next turn (retries included): no conversation starves;
- the server's RSS and open file descriptors, sampled every second: the RSS slope after warm-up (MiB per minute, a
  least-squares fit) and the descriptors' range, both flat when nothing leaks.

``run_soak`` drives a server that is already running (``tests/test_soak.py`` runs a 60-second version).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pbg

REPO = Path(__file__).resolve().parent.parent
PERSONAS = ("tavern_keeper", "narrator")
TALK_PATH = "/npcserver.api.v1.ConversationService/Talk"
#: Codes a good request may end with.
GOOD_CODES = {"OK", "RESOURCE_EXHAUSTED"}
EXPECTED = {
    "talk": GOOD_CODES,
    "cancel": GOOD_CODES | {"CANCELLED"},
    "deadline": GOOD_CODES | {"DEADLINE_EXCEEDED"},
    "bad": {"INVALID_ARGUMENT", "NOT_FOUND"},
}


@dataclass
class SoakReport:
    seconds: float
    conversations: int
    codes: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (door, kind, code)
    unexpected: list[str] = field(default_factory=list)
    turns: Counter[str] = field(default_factory=Counter)  # completed Talks per conversation
    max_wait_s: float = 0.0
    rss_mib: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MiB)
    fds: list[tuple[float, int]] = field(default_factory=list)
    warmup_s: float = 0.0

    def rss_slope_mib_per_min(self) -> float:
        """Least-squares slope of RSS after warm-up, in MiB per minute."""
        points = [(t, v) for t, v in self.rss_mib if t >= self.warmup_s]
        if len(points) < 2:
            return 0.0
        n = len(points)
        mt = sum(t for t, _ in points) / n
        mv = sum(v for _, v in points) / n
        var = sum((t - mt) ** 2 for t, _ in points)
        return 60.0 * sum((t - mt) * (v - mv) for t, v in points) / var if var else 0.0

    def after_warmup(self, series: list[tuple[float, float]] | list[tuple[float, int]]) -> list[float]:
        return [float(v) for t, v in series if t >= self.warmup_s] or [0.0]

    def table(self) -> str:
        rss, fds = self.after_warmup(self.rss_mib), self.after_warmup(self.fds)
        lines = [
            f"Soak: {self.conversations} conversations for {self.seconds:.0f} s over gRPC and gRPC-Web",
            "",
            "| door | request | status | count |",
            "| --- | --- | --- | --- |",
        ]
        lines += [f"| {d} | {k} | {c} | {n} |" for (d, k, c), n in sorted(self.codes.items())]
        lines += [
            "",
            "| measure | value |",
            "| --- | --- |",
            f"| completed Talks | {sum(self.turns.values())} |",
            f"| fewest completed Talks of one conversation | {min(self.turns.values(), default=0)} |",
            f"| longest wait for a turn (retries included) | {self.max_wait_s:.1f} s |",
            f"| RSS after warm-up ({self.warmup_s:.0f} s): first, last, max | "
            f"{rss[0]:.0f}, {rss[-1]:.0f}, {max(rss):.0f} MiB |",
            f"| RSS slope after warm-up | {self.rss_slope_mib_per_min():+.2f} MiB/min |",
            f"| open file descriptors after warm-up: min, max | {min(fds):.0f}, {max(fds):.0f} |",
            f"| unexpected outcomes | {len(self.unexpected)} |",
        ]
        return "\n".join(lines)


def _frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


class _Conversation:
    def __init__(self, n: int, report: SoakReport, stub: pbg.ConversationServiceStub, http: httpx.AsyncClient):
        self.n = n
        self.name = f"soak-{n}"
        self.persona = PERSONAS[n % len(PERSONAS)]
        self.door = "grpc" if n % 2 == 0 else "grpc-web"
        self.report = report
        self.stub = stub
        self.http = http
        self.rng = random.Random(n)

    def _request(self, kind: str, i: int) -> pb.TalkRequest:
        text = f"Line {i}: what news?" if kind != "bad" else self.rng.choice(["", "x\x00y", "a" * 9000])
        persona = self.persona if kind != "bad" or self.rng.random() < 0.7 else "no_such_npc"
        max_tokens = 48 if kind in ("cancel", "deadline") else 6
        return pb.TalkRequest(
            persona_id=persona,
            conversation_id=self.name,
            text=text,
            sampling=pb.SamplingOptions(max_tokens=max_tokens, seed=i),
        )

    async def run(self, until: float) -> None:
        i = 0
        waiting_since = time.monotonic()
        while time.monotonic() < until:
            i += 1
            roll = self.rng.random()
            kind = "cancel" if roll < 0.1 else "deadline" if roll < 0.2 else "bad" if roll < 0.3 else "talk"
            code = await self._talk(kind, self._request(kind, i), until)
            if code == "DEADLINE_EXCEEDED" and kind != "deadline" and time.monotonic() > until:
                break  # queued past the end of the soak
            self.report.codes[(self.door, kind, code)] += 1
            if code not in EXPECTED[kind]:
                self.report.unexpected.append(f"{self.door} {kind} on {self.name}: {code}")
            if kind == "talk" and code == "OK":
                self.report.turns[self.name] += 1
                self.report.max_wait_s = max(self.report.max_wait_s, time.monotonic() - waiting_since)
                waiting_since = time.monotonic()
                await asyncio.sleep(self.rng.uniform(0.0, 0.3))  # the player reads the line
            elif code == "RESOURCE_EXHAUSTED":
                await asyncio.sleep(self.rng.uniform(0.5, 1.5))  # retry later, as the error says
        self.report.turns.setdefault(self.name, 0)

    async def _talk(self, kind: str, request: pb.TalkRequest, until: float) -> str:
        # A Talk still queued when the soak ends gives up soon after (its end is not counted as an error).
        timeout = 0.05 if kind == "deadline" else max(1.0, until - time.monotonic() + 10.0)
        if self.door == "grpc":
            call = self.stub.Talk(request, timeout=timeout)
            try:
                async for reply in call:
                    if kind == "cancel" and reply.HasField("delta"):
                        call.cancel()
                        return "CANCELLED"
                return "OK"
            except grpc.aio.AioRpcError as exc:
                return str(exc.code().name)
            except asyncio.CancelledError:
                return "CANCELLED"
        return await self._talk_web(kind, request, timeout)

    async def _talk_web(self, kind: str, request: pb.TalkRequest, limit_s: float) -> str:
        headers = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}
        if kind == "deadline":
            headers["grpc-timeout"] = "50m"
        try:
            async with self.http.stream(
                "POST", TALK_PATH, content=_frame(request.SerializeToString()), headers=headers, timeout=limit_s + 30
            ) as response:
                if "grpc-status" in response.headers:  # trailers-only: an error before any message
                    return _code(response.headers["grpc-status"])
                buffer = b""
                async for chunk in response.aiter_bytes():
                    buffer += chunk
                    while len(buffer) >= 5:
                        flag, size = buffer[0], struct.unpack(">I", buffer[1:5])[0]
                        if len(buffer) < 5 + size:
                            break
                        body, buffer = buffer[5 : 5 + size], buffer[5 + size :]
                        if flag & 0x80:
                            trailers = dict(line.split(":", 1) for line in body.decode().split("\r\n") if ":" in line)
                            return _code(trailers.get("grpc-status", "2").strip())
                        if kind == "cancel":
                            return "CANCELLED"  # leaving the block closes the connection: the server sees a cancel
                return "UNKNOWN"
        except httpx.HTTPError as exc:
            return f"HTTP error {type(exc).__name__}"


_CODES: dict[int, str] = {c.value[0]: c.name for c in grpc.StatusCode}


def _code(number: str) -> str:
    try:
        return _CODES.get(int(number), f"status {number}")
    except ValueError:
        return f"status {number!r}"


def _sample(pid: int) -> tuple[float, int]:
    """The process's RSS in MiB and its open file descriptors (Linux /proc)."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(list(Path(f"/proc/{pid}/fd").iterdir()))


async def run_soak(
    grpc_target: str, http_url: str, pid: int, seconds: float, conversations: int = 64, warmup_s: float | None = None
) -> SoakReport:
    """Drives a running server for ``seconds`` and returns what happened."""
    report = SoakReport(seconds=seconds, conversations=conversations)
    report.warmup_s = warmup_s if warmup_s is not None else min(60.0, seconds / 4)
    started = time.monotonic()
    until = started + seconds
    limits = httpx.Limits(max_connections=conversations + 8, max_keepalive_connections=conversations)
    async with (
        grpc.aio.insecure_channel(grpc_target) as channel,
        httpx.AsyncClient(base_url=http_url, limits=limits) as http,
    ):
        stub = pbg.ConversationServiceStub(channel)

        async def sample() -> None:
            while time.monotonic() < until:
                rss, fds = _sample(pid)
                now = time.monotonic() - started
                report.rss_mib.append((now, rss))
                report.fds.append((now, fds))
                await asyncio.sleep(1.0)

        talkers = [_Conversation(n, report, stub, http).run(until) for n in range(conversations)]
        await asyncio.gather(sample(), *talkers)
    report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--conversations", type=int, default=64)
    parser.add_argument("--results", action="store_true", help="append the table to bench/RESULTS.md")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import tempfile

    from tests.conftest import start_server

    with tempfile.TemporaryDirectory() as data:
        # Loopback only: the server binds 127.0.0.1 (the default).
        server = start_server(Path(data), NPCSERVER_LOG_LEVEL="WARNING")
        try:
            report = asyncio.run(
                run_soak(server.grpc_target, server.http_url, server.proc.pid, args.minutes * 60, args.conversations)
            )
        finally:
            server.stop()
    print(report.table())
    for line in report.unexpected[:20]:
        print("unexpected:", line)
    if args.results:
        with open(REPO / "bench" / "RESULTS.md", "a") as f:
            f.write(f"\n## Soak ({time.strftime('%Y-%m-%d')})\n\n{report.table()}\n")
    return 1 if report.unexpected else 0


if __name__ == "__main__":
    raise SystemExit(main())
