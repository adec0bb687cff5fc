"""Failover on one machine with real processes, all on loopback: PostgreSQL, one llama-server, two npcserver replicas
on the upstream engine sharing the database, and nginx in front with the shipped configuration
(``deploy/nginx/npcserver.conf``, only its ports changed).

Conversations stay on their replica (nginx names the one that answered in ``x-npc-upstream``). The replica serving a
conversation is SIGKILLed in the middle of a Talk stream; the client's retry with the same request id completes on
the other replica, a second retry replays the stored turn, and the conversation has exactly one copy of every turn,
in order. Every process the test starts is stopped by it, also when it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc
from npcserver.client import NpcClient
from npcserver.client.options import conversation_metadata
from npcserver.config import Settings
from npcserver.engine.model import resolve_model_path
from tests.conftest import ServerProcess
from tests.engine.llama_server import llama_server
from tests.store.postgres_cluster import PostgresCluster

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "deploy" / "nginx" / "npcserver.conf"
NPC = "narrator"  # no actions: every non-empty reply is stored


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _nginx() -> str:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(found).is_file(), "nginx is missing: tests/scaleout/install.sh installs it (scripts/test.sh runs it)"
    return found


@dataclass
class Front:
    grpc_target: str
    http_url: str
    #: Replica grpc/http address -> which replica ("a" or "b").
    names: dict[str, str]


def start_nginx(stack: ExitStack, tmp: Path, a: ServerProcess, b: ServerProcess) -> Front:
    """nginx with the shipped configuration, its example ports swapped for the replicas' and two free front ones."""
    front_grpc, front_http = _free_port(), _free_port()
    ports = {
        "127.0.0.1:50051": a.grpc_target,
        "127.0.0.1:50061": b.grpc_target,
        "127.0.0.1:8080": a.http_url.removeprefix("http://"),
        "127.0.0.1:8090": b.http_url.removeprefix("http://"),
        "127.0.0.1:9051": f"127.0.0.1:{front_grpc}",
        "127.0.0.1:9080": f"127.0.0.1:{front_http}",
    }
    text = CONFIG.read_text()
    for example, real in ports.items():
        assert text.count(f"{example} ") + text.count(f"{example};") == 1, f"{CONFIG} no longer names {example} once"
        text = text.replace(f"{example} ", f"{real} ").replace(f"{example};", f"{real};")
    conf = tmp / "npcserver.conf"
    conf.write_text(text)
    temp = "".join(f"{kind}_temp_path {tmp / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main = tmp / "nginx.conf"
    main.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\nworker_processes 1;\npid {tmp / 'nginx.pid'};\nerror_log {tmp / 'error.log'} info;\n"
        + "events { worker_connections 256; }\n"
        + f"http {{\naccess_log {tmp / 'access.log'};\n{temp}include {conf};\n}}\n"
    )
    nginx = _nginx()
    check = subprocess.run([nginx, "-t", "-p", str(tmp), "-c", str(main), "-e", str(tmp / "error.log")], text=True,
                           capture_output=True)  # fmt: skip
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([nginx, "-p", str(tmp), "-c", str(main), "-e", str(tmp / "error.log")])
    stack.callback(_stop, proc)
    deadline = time.monotonic() + 30
    for port in (front_grpc, front_http):
        while True:
            assert proc.poll() is None, (tmp / "error.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen in time"
                time.sleep(0.1)
    names = {a.grpc_target: "a", b.grpc_target: "b"}
    names.update({a.http_url.removeprefix("http://"): "a", b.http_url.removeprefix("http://"): "b"})
    return Front(f"127.0.0.1:{front_grpc}", f"http://127.0.0.1:{front_http}", names)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def cluster(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> Iterator[tuple[Front, ServerProcess, ServerProcess]]:
    with ExitStack() as stack:
        pg = PostgresCluster.start()
        stack.callback(pg.stop)
        store_url = pg.url(pg.create_database())
        model = resolve_model_path(None, Settings().cache_dir)
        upstream = stack.enter_context(llama_server(model, parallel=4, ctx_per_slot=4096))
        env = {"NPCSERVER_STORE_URL": store_url, "NPCSERVER_ENGINE_URL": upstream.url, "NPCSERVER_PARALLEL": "2"}
        a = server_factory(tmp_path / "a", **env)
        b = server_factory(tmp_path / "b", **env)
        stack.callback(b.stop)  # also stopped by server_factory; stopping first keeps the order (replicas, then
        stack.callback(a.stop)  # the engine and the database)
        (tmp_path / "nginx").mkdir()
        yield start_nginx(stack, tmp_path / "nginx", a, b), a, b


def _request(conversation: str, text: str, request_id: str, max_tokens: int) -> pb.TalkRequest:
    req = pb.TalkRequest(persona_id=NPC, conversation_id=conversation, text=text, request_id=request_id)
    req.sampling.max_tokens = max_tokens
    return req


def talk(stub: pb_grpc.ConversationServiceStub, front: Front, conversation: str, text: str, request_id: str,
         max_tokens: int = 8) -> tuple[str, pb.CompletionFinal]:  # fmt: skip
    """One Talk through nginx: the replica that answered ("a" or "b") and the final."""
    call = stub.Talk(_request(conversation, text, request_id, max_tokens), timeout=120,
                     metadata=conversation_metadata(NPC, conversation))  # fmt: skip
    finals = [m.final for m in call if m.HasField("final")]
    assert len(finals) == 1
    upstream = dict(call.initial_metadata())["x-npc-upstream"]
    return front.names[upstream.split(", ")[-1]], finals[0]


def stored(stub: pb_grpc.ConversationServiceStub, conversation: str) -> list[str]:
    resp = stub.GetConversation(pb.GetConversationRequest(persona_id=NPC, conversation_id=conversation), timeout=30)
    return [t.player_line for t in resp.conversation.turns]


def test_a_killed_replica_fails_over_without_losing_or_doubling_a_turn(
    cluster: tuple[Front, ServerProcess, ServerProcess],
) -> None:
    front, a, b = cluster
    replicas = {"a": a, "b": b}
    with grpc.insecure_channel(front.grpc_target) as channel:
        stub = pb_grpc.ConversationServiceStub(channel)
        # Affinity: every line of a conversation goes to the same replica; with eight conversations both serve some.
        home: dict[str, str] = {}
        # What each conversation must hold: every line whose reply was stored (an empty one is not, nor one whose
        # action call did not validate).
        expect: dict[str, list[str]] = {}

        def say(conversation: str, text: str, request_id: str, max_tokens: int = 8) -> tuple[str, pb.CompletionFinal]:
            served, final = talk(stub, front, conversation, text, request_id, max_tokens)
            if final.message.content.strip() and (not final.HasField("structured") or final.structured.valid):
                expect.setdefault(conversation, []).append(text)
            return served, final

        for i in range(8):
            conversation = f"player-{i}"
            served = {say(conversation, f"line {n}", f"{conversation}-{n}")[0] for n in range(2)}
            assert len(served) == 1, (conversation, served)
            home[conversation] = served.pop()
        assert set(home.values()) == {"a", "b"}, home

        # The HTTP door hashes on the same header (on its own ring: a game uses one door or the other).
        with httpx.Client(timeout=120) as http:
            url = f"{front.http_url}/v1/npcs/{NPC}/conversations/web-0:talk"
            headers = dict(conversation_metadata(NPC, "web-0"))
            served = set()
            for n in range(2):
                answer = http.post(url, json={"text": f"web {n}", "stream": False, "sampling": {"max_tokens": 8}},
                                   headers={**headers, "Idempotency-Key": f"web-0-{n}"})  # fmt: skip
                assert answer.status_code == 200, answer.text
                served.add(front.names[answer.headers["x-npc-upstream"]])
            assert len(served) == 1, served

        # Kill the replica of one conversation while it streams a reply.
        victim = "player-1"
        dead = home[victim]
        call = stub.Talk(_request(victim, "Tell me a long story.", "player-1-2", 200), timeout=120,
                         metadata=conversation_metadata(NPC, victim))  # fmt: skip
        events = iter(call)
        first = next(events)
        assert first.HasField("delta"), first
        replicas[dead].proc.kill()  # SIGKILL: no chance to finish or store anything
        with pytest.raises(grpc.RpcError):
            for message in events:
                assert not message.HasField("final"), "the reply finished before the replica was killed"
        replicas[dead].proc.wait(30)

        # The retry, with the same request id, completes on the other replica.
        for attempt in range(5):
            try:
                answered_by, final = say(victim, "Tell me a long story.", "player-1-2", max_tokens=200)
                break
            except grpc.RpcError:
                assert attempt < 4
                time.sleep(0.5)
        assert answered_by != dead and not final.replayed
        # A client that never saw that final sends the line again: the SDK gets the stored turn back.
        with NpcClient(front.grpc_target) as npc:
            again = npc.talk(NPC, victim, "Tell me a long story.", max_tokens=200, request_id="player-1-2")
        assert again.replayed and again.text == final.message.content
        logs = [line for r in (a, b) for line in r.log if victim in line]
        assert stored(stub, victim) == expect[victim], logs
        assert expect[victim][-1] == "Tell me a long story."
        # Every conversation goes on, on the replica still up, from where it was: one copy of every turn, in order.
        for conversation in home:
            answered_by, _ = say(conversation, "line 3", f"{conversation}-3")
            assert answered_by != dead
        for conversation in home:
            logs = [line for r in (a, b) for line in r.log if conversation in line or "Traceback" in line]
            assert stored(stub, conversation) == expect.get(conversation, []), (conversation, logs)
