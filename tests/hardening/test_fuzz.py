"""Fuzzing every door of a running server with hypothesis (issue 11).

Every RPC's request message (generated from the proto descriptors, random and adversarial values), raw bytes that do
not decode, every REST body (JSON of the right and wrong shapes), and truncated gRPC-Web frames. Asserted for each:
the server stays up, never answers INTERNAL/UNKNOWN or HTTP 500 to bad input, every error message is non-empty and a
client's mistake names a field or a limit, and a health check running alongside is never blocked for more than a
second.

The example budget per test is NPCSERVER_FUZZ_EXAMPLES (default 8, about a minute in all); for a long run:
``NPCSERVER_FUZZ_EXAMPLES=2000 pytest tests/hardening/test_fuzz.py``.
"""

from __future__ import annotations

import json
import os
import re
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from npcserver.api.v1 import npcserver_pb2 as pb
from tests.conftest import ServerProcess
from tests.hardening.fuzz_strategies import json_values, messages, requests, text

EXAMPLES = int(os.environ.get("NPCSERVER_FUZZ_EXAMPLES", "8"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
METHODS: list[MethodDescriptor] = [m for s in pb.DESCRIPTOR.services_by_name.values() for m in s.methods]
#: Status codes that mean the server failed, not the request.
SERVER_FAULTS = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
}
#: Codes that blame the request, whose message must name what to fix.
CLIENT_MISTAKES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
}
LIMIT = re.compile(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b")


class HealthProbe:
    """Checks gRPC health every 0.2 s on its own thread and keeps the slowest answer."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = health_pb2_grpc.HealthStub(self.channel)
        self.slowest = 0.0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                self.stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            except grpc.RpcError as exc:
                self.failures.append(f"{exc.code().name}: {exc.details()}")
            self.slowest = max(self.slowest, time.perf_counter() - started)
            self._stop.wait(0.2)

    def reset(self) -> None:
        self.slowest = 0.0

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.channel.close()


class Target:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.channel = grpc.insecure_channel(
            server.grpc_target, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        )
        self.http = httpx.Client(base_url=server.http_url, timeout=30)
        self.health = HealthProbe(server.grpc_target)

    def close(self) -> None:
        self.health.close()
        self.channel.close()
        self.http.close()


@pytest.fixture(scope="module")
def target(live_server: ServerProcess) -> Iterator[Target]:
    t = Target(live_server)
    yield t
    t.close()
    assert live_server.proc.poll() is None, "the server died during fuzzing:\n" + live_server.output()[-4000:]


@pytest.fixture
def probe(target: Target) -> Iterator[Target]:
    """The target; afterwards, the server is up and health never waited over a second."""
    target.health.reset()
    yield target
    assert target.server.proc.poll() is None, "the server died:\n" + target.server.output()[-4000:]
    assert not target.health.failures, target.health.failures
    assert target.health.slowest < 1.0, f"a health check waited {target.health.slowest:.2f}s"


def field_names(descriptor: Descriptor, seen: set[str] | None = None) -> set[str]:
    """Every field name in a message tree, and the words they are made of."""
    names = seen if seen is not None else set()
    for f in descriptor.fields:
        if f.name in names:
            continue
        names.add(f.name)
        names.update(w for w in f.name.split("_") if len(w) > 3)
        if f.message_type is not None:
            field_names(f.message_type, names)
    return names


def check_status(code: grpc.StatusCode, details: str, names: set[str], what: str) -> None:
    assert code not in SERVER_FAULTS, f"{what}: {code.name} {details!r}"
    assert details, f"{what}: {code.name} with an empty message"
    if code in CLIENT_MISTAKES:
        lowered = details.lower()
        assert LIMIT.search(details) or any(n in lowered for n in names) or "body" in lowered, (
            f"{what}: {code.name} {details!r} names no field or limit"
        )


def bounded_generation(msg: Any, small: int) -> None:
    """Keeps generations short so the budget goes to many requests: a set sampling.max_tokens stays only if small."""
    if "sampling" not in msg.DESCRIPTOR.fields_by_name:
        return
    if not (msg.sampling.HasField("max_tokens") and -2 < msg.sampling.max_tokens <= 4):
        msg.sampling.max_tokens = small


def call(target: Target, method: MethodDescriptor, payload: bytes) -> tuple[grpc.StatusCode, str]:
    path = f"/{method.containing_service.full_name}/{method.name}"
    ident = lambda b: b  # noqa: E731
    try:
        if method.server_streaming:
            for _ in target.channel.unary_stream(path, request_serializer=ident, response_deserializer=ident)(
                payload, timeout=30
            ):
                pass
        else:
            target.channel.unary_unary(path, request_serializer=ident, response_deserializer=ident)(payload, timeout=30)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, "ok"


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@FUZZ
@given(data=st.data())
def test_every_rpc_survives_random_request_messages(
    probe: Target, method: MethodDescriptor, data: st.DataObject
) -> None:
    msg = data.draw(requests(method.input_type), label="request")
    bounded_generation(msg, data.draw(st.sampled_from([1, 2, 3]), label="max_tokens"))
    code, details = call(probe, method, msg.SerializeToString())
    check_status(code, details, field_names(method.input_type), f"{method.name}({msg})")


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@FUZZ
@given(payload=st.one_of(st.binary(max_size=300), st.just(b"\x0a\x03\xed\xa0\x80"), st.just(b"\x0a\xff\xff\xff\x0f")))
def test_every_rpc_survives_bytes_that_are_not_its_message(
    probe: Target, method: MethodDescriptor, payload: bytes
) -> None:
    try:
        parsed = message_factory.GetMessageClass(method.input_type).FromString(payload)
    except Exception:  # meant not to parse: sent as it is
        parsed = None
    if parsed is not None and "sampling" in method.input_type.fields_by_name:
        bounded_generation(parsed, 2)  # it parsed: keep its generation short
        payload = parsed.SerializeToString()
    code, details = call(probe, method, payload)
    check_status(code, details, field_names(method.input_type) | {"message", "utf-8"}, f"{method.name}({payload!r})")


# --- REST bodies ------------------------------------------------------------------------------------------------

#: (method, path, the proto message its body is in proto-JSON, or None for the OpenAI and Ollama chat routes)
REST_ROUTES: list[tuple[str, str, Descriptor | None]] = [
    ("POST", "/v1/chat/completions", None),
    ("POST", "/api/chat", None),
    ("POST", "/v1/npcs", pb.DESCRIPTOR.message_types_by_name["Persona"]),
    ("PUT", "/v1/npcs/fuzz", pb.DESCRIPTOR.message_types_by_name["Persona"]),
    ("POST", "/v1/npcs/tavern_keeper/conversations/fuzz:talk", pb.DESCRIPTOR.message_types_by_name["TalkRequest"]),
    ("PUT", "/v1/npcs/tavern_keeper/conversations/fuzz", pb.DESCRIPTOR.message_types_by_name["Conversation"]),
]


@st.composite
def chat_bodies(draw: st.DrawFn) -> Any:
    """OpenAI chat bodies, mostly of the right shape with wrong values."""
    body: dict[str, Any] = {
        "messages": draw(
            st.lists(
                st.fixed_dictionaries(
                    {
                        "role": st.one_of(st.sampled_from(["user", "system", "assistant"]), text()),
                        "content": json_values(),
                    }
                ),
                max_size=3,
            )
        ),
        "max_tokens": draw(st.one_of(st.sampled_from([1, 2, 3]), json_values())),
    }
    for key in ["temperature", "top_p", "seed", "stop", "response_format", "stream", "chat_template", "n", "preset"]:
        if draw(st.booleans()):
            body[key] = draw(json_values())
    if body.get("stream") is True:
        body["max_tokens"] = 2
    return body


@st.composite
def ollama_bodies(draw: st.DrawFn) -> Any:
    """Ollama /api/chat bodies, mostly of the right shape with wrong values."""
    body: dict[str, Any] = {
        "model": draw(st.one_of(st.just("gemma-3-270m-q4_k_m"), text())),
        "messages": draw(
            st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": json_values()}))
        ),
        "stream": draw(st.one_of(st.just(False), json_values())),
        "options": {"num_predict": 2},
    }
    for key in ["options", "format", "keep_alive", "think", "tools"]:
        if draw(st.booleans()):
            body[key] = draw(json_values())
    if isinstance(body.get("options"), dict):
        body["options"]["num_predict"] = 2
    return body


@st.composite
def proto_bodies(draw: st.DrawFn, descriptor: Descriptor) -> Any:
    """proto-JSON of the message, with some fields replaced by JSON of any shape."""
    msg = draw(messages(descriptor))
    bounded_generation(msg, 2)
    body: dict[str, Any] = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    for name in draw(st.lists(st.sampled_from([f.name for f in descriptor.fields]), max_size=3)):
        body[name] = draw(json_values())
    if "text" in descriptor.fields_by_name:
        body["stream"] = draw(st.sampled_from([False, True, "yes"]))
        sampling = body.setdefault("sampling", {})
        if isinstance(sampling, dict):
            sampling["max_tokens"] = 2
    return body


@pytest.mark.parametrize(("verb", "path", "descriptor"), REST_ROUTES, ids=lambda v: str(v).split(" ")[0][-30:])
@FUZZ
@given(data=st.data())
def test_every_rest_body_gets_a_precise_answer(
    probe: Target, verb: str, path: str, descriptor: Descriptor | None, data: st.DataObject
) -> None:
    if descriptor is not None:
        shaped = proto_bodies(descriptor)
    else:
        shaped = chat_bodies() if path.startswith("/v1/") else ollama_bodies()
    body = data.draw(st.one_of(shaped, json_values()), label="body")
    raw = json.dumps(body, allow_nan=True).encode()
    if data.draw(st.booleans(), label="mangle"):
        cut = data.draw(st.integers(0, len(raw)), label="cut")
        raw = raw[:cut] + data.draw(st.binary(max_size=8), label="junk")
    r = probe.http.request(verb, path, content=raw, headers={"content-type": "application/json"})
    assert r.status_code < 500, f"{verb} {path} {raw[:300]!r} -> {r.status_code} {r.text[:300]}"
    if r.status_code >= 400:
        error = r.json()["error"]  # OpenAI's {"error": {"message": ...}}, or Ollama's {"error": "..."}
        message = error if isinstance(error, str) else error["message"]
        assert message, f"{verb} {path}: an empty error message"


# --- gRPC-Web frames ----------------------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_truncated_grpc_web_frames_are_invalid_argument(probe: Target, data: st.DataObject) -> None:
    method = data.draw(st.sampled_from([m for m in METHODS if not m.server_streaming]), label="method")
    payload = data.draw(messages(method.input_type), label="request").SerializeToString()
    frame = b"\x00" + struct.pack(">I", len(payload)) + payload
    if data.draw(st.booleans(), label="lie about the length"):
        frame = b"\x00" + struct.pack(">I", len(payload) + data.draw(st.integers(1, 2**20))) + payload
    else:
        frame = frame[: data.draw(st.integers(0, max(len(frame) - 1, 0)), label="cut")]
    r = probe.http.post(
        f"/{method.containing_service.full_name}/{method.name}",
        content=frame,
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
    )
    status = r.headers.get("grpc-status")
    assert r.status_code < 500, r.text
    assert status not in {"2", "13", "14", "15"}, (status, r.headers.get("grpc-message"))
    assert status == "3" and r.headers.get("grpc-message"), (r.status_code, status, r.headers.get("grpc-message"))
