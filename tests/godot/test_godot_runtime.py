"""The Godot addon's GDScript tests, run inside the official Godot 4.6 web build against the live server.

One engine run (module fixture) executes every suite under godot_addon/tests/ and prints ``N passed, N failed``;
the tests here check that summary and what the run left behind: the GDScript encodings of the wire fixtures
(decoded with Python protobuf), the API key a stalled request carried, and the server's stored turns after a
cancel. Needs chromium and the npm packages (tests/godot/install.sh); without them these tests fail.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc
import pytest

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc
from tests.godot import godot_harness as harness

FIXTURES = harness.REPO / "tests" / "fixtures" / "wire"
#: How many GDScript tests the suites hold; the run must report at least these.
MIN_GDSCRIPT_TESTS = 20
ENGINE_TIMEOUT_S = 300


class LiveServer(Protocol):
    """What tests/conftest.py's live_server fixture yields (only what is used here)."""

    grpc_target: str
    http_url: str


class StallServer:
    """Answers CORS preflights, records each POST's headers, and never answers the POST (for timeouts)."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.posts: list[dict[str, str]] = []
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        data = b""
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method = lines[0].split(" ")[0]
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
                if method == "OPTIONS":
                    allow = headers.get("access-control-request-headers", "*")
                    conn.sendall(
                        b"HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Origin: *\r\n"
                        b"Access-Control-Allow-Methods: POST, OPTIONS\r\n"
                        + f"Access-Control-Allow-Headers: {allow}\r\n".encode()
                        + b"Access-Control-Max-Age: 600\r\nContent-Length: 0\r\n\r\n"
                    )
                    continue
                self.posts.append(headers)
                self._held.append(conn)  # keep it open and silent until the client gives up
                return
        except OSError:
            return

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for conn in self._held:
            conn.close()


def unused_port() -> int:
    """A loopback port with no listener (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: A persona whose schema forces a reply of about a thousand tokens (four strings of at least 1000 characters, the
#: server's longest minLength; about 20 s on 2 CPU cores), so a cancel always lands mid-stream however slowly the
#: engine's frames run, and a generation that was not stopped would hold the next line in the server's queue for
#: many seconds.
LONG_PERSONA = pb.Persona(
    id="godot_chronicler",
    display_name="Chronicler",
    system_prompt="The chronicler of Millbrook tells every story at great length.",
    response_schema=json.dumps(
        {
            "type": "object",
            "properties": {"story": {"type": "array", "minItems": 4, "items": {"type": "string", "minLength": 1000}}},
            "required": ["story"],
        }
    ),
    max_tokens=1500,
    description="Made by tests/godot for the cancel test.",
)


def ensure_long_persona(grpc_target: str) -> str:
    with grpc.insecure_channel(grpc_target) as channel:
        stub = pb_grpc.PersonaServiceStub(channel)
        stub.UpdatePersona(pb.UpdatePersonaRequest(persona=LONG_PERSONA, allow_missing=True), timeout=30)
    return LONG_PERSONA.id


@dataclass
class RuntimeResult:
    run: harness.EngineRun
    config: dict[str, object]
    stall: StallServer
    took_s: float


@pytest.fixture(scope="module")
def engine_run(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeResult]:
    harness.check_tools()
    work = tmp_path_factory.mktemp("godot")
    stall = StallServer()
    http_port = int(live_server.http_url.rsplit(":", 1)[1])
    fixtures = sorted(p.stem for p in FIXTURES.glob("*.bin"))
    config: dict[str, object] = {
        "host": "127.0.0.1",
        "port": http_port,
        "refused_port": unused_port(),
        "stall_port": stall.port,
        "api_key": "godot-" + uuid.uuid4().hex[:8],
        "run_id": "godot-" + uuid.uuid4().hex[:8],
        "idle_timeout_s": 120.0,
        "long_persona": ensure_long_persona(live_server.grpc_target),
        "fixtures": fixtures,
        # NPC_GODOT_ONLY=substring runs only the GDScript tests whose name contains it (for debugging).
        "only": os.environ.get("NPC_GODOT_ONLY", ""),
    }
    extra = {"res://tests/run_config.json": json.dumps(config).encode()}
    for name in fixtures:
        for suffix in (".bin", ".json"):
            extra[f"res://tests/wire/{name}{suffix}"] = (FIXTURES / f"{name}{suffix}").read_bytes()
    page = harness.PageServer(work / "www")
    try:
        url = page.add_pack("tests.zip", harness.build_pack("res://tests/runner.tscn", extra))
        started = time.monotonic()
        run = harness.run_engine(url, ENGINE_TIMEOUT_S, screenshot=work / "last.png")
        yield RuntimeResult(run, config, stall, time.monotonic() - started)
        if os.environ.get("NPC_GODOT_DUMP"):
            Path(os.environ["NPC_GODOT_DUMP"]).write_text(live_server.output())  # type: ignore[attr-defined]
    finally:
        page.close()
        stall.close()


def test_gdscript_suites_pass_in_the_godot_runtime(engine_run: RuntimeResult) -> None:
    run = engine_run.run
    assert any("Godot Engine v4.6" in line for line in run.lines), run.output
    script_errors = [line for line in run.lines if "SCRIPT ERROR" in line]
    assert not script_errors, f"GDScript errors in the engine:\n{run.output}"
    summary = run.summary()
    assert summary is not None, f"no 'N passed, N failed' line; engine output:\n{run.output}"
    passed, failed = summary
    assert failed == 0, f"{failed} GDScript test(s) failed:\n{run.output}"
    assert passed >= MIN_GDSCRIPT_TESTS, f"only {passed} GDScript tests ran:\n{run.output}"
    assert run.exit_code == 0, f"engine exit code {run.exit_code}:\n{run.output}"
    print(f"{passed} GDScript tests passed in {engine_run.took_s:.1f} s")


def test_python_decodes_what_gdscript_encoded(engine_run: RuntimeResult) -> None:
    """The reverse direction: bytes GDScript built from each fixture's fields parse to the same message."""
    encoded = dict(line.split(" ", 1) for line in engine_run.run.prints("WIRE "))
    assert sorted(encoded) == engine_run.config["fixtures"], engine_run.run.output
    for name, b64 in encoded.items():
        spec = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
        expected = getattr(pb, spec["message"])()
        expected.ParseFromString((FIXTURES / f"{name}.bin").read_bytes())
        expected.DiscardUnknownFields()  # what a decoder keeps from the non-canonical fixtures
        got = getattr(pb, spec["message"])()
        got.ParseFromString(b"" if b64 == "-" else base64.b64decode(b64))  # "-": empty
        assert got == expected, name
        assert got.SerializeToString() == expected.SerializeToString(), name


def test_the_api_key_is_sent_as_bearer(engine_run: RuntimeResult) -> None:
    posts = engine_run.stall.posts
    assert len(posts) == 1, posts
    assert posts[0].get("authorization") == f"Bearer {engine_run.config['api_key']}"
    assert posts[0].get("content-type") == "application/grpc-web+proto"
    assert posts[0].get("x-grpc-web") == "1"


def test_a_cancelled_line_left_no_turn_on_the_server(engine_run: RuntimeResult, live_server: LiveServer) -> None:
    """The cancelled line's turn is not on the server (checked again here, well after the engine run)."""
    printed = engine_run.run.prints("CANCELLED_CONVERSATION ")
    assert len(printed) == 1, engine_run.run.output
    persona_id, conversation_id = printed[0].split(" ")
    with grpc.insecure_channel(live_server.grpc_target) as channel:
        stub = pb_grpc.ConversationServiceStub(channel)
        reply = stub.GetConversation(
            pb.GetConversationRequest(persona_id=persona_id, conversation_id=conversation_id), timeout=30
        )
    assert "Tell the whole story of the storm." not in [t.player_line for t in reply.conversation.turns], reply


def test_the_demo_scene_plays_in_the_runtime(live_server: LiveServer, tmp_path: Path) -> None:
    """The demo, as a player uses it: the NpcServer autoload (configured by project settings), the narrator's
    opening streamed into its label, a typed line to Greta answered in the dialogue box."""
    port = live_server.http_url.rsplit(":", 1)[1]
    pack = harness.build_pack(
        "res://tests/demo_smoke.tscn",
        settings={"npc_dialogue/server/host": '"127.0.0.1"', "npc_dialogue/server/port": port},
    )
    page = harness.PageServer(tmp_path / "www")
    try:
        run = harness.run_engine(page.add_pack("demo.zip", pack), ENGINE_TIMEOUT_S, screenshot=tmp_path / "demo.png")
    finally:
        page.close()
    assert not [line for line in run.lines if "SCRIPT ERROR" in line], run.output
    summary = run.summary()
    assert summary is not None and summary[1] == 0 and summary[0] >= 8, run.output
    assert run.exit_code == 0, run.output
    assert run.prints("DEMO dialogue: "), run.output


def test_pack_carries_the_class_cache() -> None:
    """class_name globals only resolve in a pack with the cache; every addon class must be listed."""
    pack = zipfile.ZipFile(io.BytesIO(harness.build_pack("res://tests/runner.tscn")))
    cache = pack.read(".godot/global_script_class_cache.cfg").decode()
    for name in ("NpcClient", "NpcDialogue", "NpcNarrator", "NpcLine", "NpcCall", "NpcProto", "NpcWire"):
        assert f'"class": &"{name}"' in cache
    assert 'run/main_scene="res://tests/runner.tscn"' in pack.read("project.godot").decode()
    assert not any(Path(n).suffix == ".svg" for n in pack.namelist())
