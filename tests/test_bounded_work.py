"""Bounded work per request, end to end (issue 11): the real server and model, over gRPC and REST.

Each case crashed, froze or bloated the server before: a schema that overflowed llama.cpp's parser (and the same
schema stored in a persona), a backtracking ``pattern`` validated on the event loop, a chat template that took
minutes and gigabytes, a 100,000-value enum and a 200-deep schema. Now each is refused naming its limit, or
stopped at its deadline, while health checks keep answering.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import openai
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc
from npcserver.core.personas import persona_to_dict
from npcserver.core.types import Persona
from npcserver.store.sqlite import SqliteStore

HANG_GUARD_S = 120  # only so a broken server fails the test instead of hanging it
HEALTH_PROMPT_S = 1.0  # a health check must answer within this while the bounded work runs
T = TypeVar("T")

CRASHER = {"type": "string", "maxLength": 20000}  # overflowed llama.cpp's grammar parser: the process died
#: The issue's regular expression: the grammar forces "aaaa…a!", on which ^(a+)+$ backtracks for hours.
FREEZER = {"type": "string", "enum": ["a" * 39 + "!"], "pattern": "^(a+)+$"}
STRING_BOMB = "{{ 'a' * 100000000 }}"
LOOP_BOMB = "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}"
SILENT_LOOP_BOMB = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"  # CPU only


def deep_schema(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


class Api:
    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.chat = pb_grpc.ChatServiceStub(self.channel)
        self.conv = pb_grpc.ConversationServiceStub(self.channel)
        self.personas = pb_grpc.PersonaServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def serving(self, timeout: float = HANG_GUARD_S) -> bool:
        status = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout).status
        return bool(status == health_pb2.HealthCheckResponse.SERVING)

    def chat_with(self, schema: dict[str, Any] | None = None, **kw: Any) -> pb.CreateChatCompletionResponse:
        if schema is not None:
            kw["response_format"] = pb.ResponseFormat(
                type=pb.ResponseFormat.TYPE_JSON_SCHEMA, json_schema=pb.JsonSchema(name="s", schema=json.dumps(schema))
            )
        request = pb.CreateChatCompletionRequest(messages=[pb.ChatMessage(role="user", content="Speak.")], **kw)
        response: pb.CreateChatCompletionResponse = self.chat.CreateChatCompletion(request, timeout=HANG_GUARD_S)
        return response

    def talk(self, persona: str, text: str) -> list[pb.TalkResponse]:
        request = pb.TalkRequest(persona_id=persona, conversation_id="c-" + uuid.uuid4().hex[:8], text=text)
        return list(self.conv.Talk(request, timeout=HANG_GUARD_S))


@pytest.fixture(scope="module")
def api(live_server: Any) -> Iterator[Api]:
    a = Api(live_server.grpc_target)
    yield a
    a.channel.close()


@pytest.fixture(scope="module")
def rest(live_server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server.http_url}/v1", api_key="unused", max_retries=0, timeout=HANG_GUARD_S)


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as exc:
        call()
    return exc.value


class HealthProbe:
    """Checks gRPC health (and HTTP /healthz) over and over in a thread; records the slowest answer."""

    def __init__(self, api: Api, http_url: str) -> None:
        self.api, self.http_url = api, http_url
        self.slowest = 0.0
        self.checks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.http_url, timeout=HANG_GUARD_S) as http:
            while not self._stop.is_set():
                start = time.perf_counter()
                assert self.api.serving()
                assert http.get("/healthz").status_code == 200
                self.slowest = max(self.slowest, time.perf_counter() - start)
                self.checks += 1
                time.sleep(0.05)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(HANG_GUARD_S)


def rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (the bounded workers are children), in MiB."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue  # a worker that was just replaced
    return total


def timed(call: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


# --- finding 1: a schema that crashed the process ------------------------------------------------------------------


def test_schema_that_crashed_llama_cpp_is_invalid_argument_and_the_server_stays_up(
    api: Api, rest: openai.OpenAI, live_server: Any
) -> None:
    err = rpc_error(lambda: api.chat_with(CRASHER))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "MAX_STRING_LENGTH" in str(err.details())
    with pytest.raises(openai.BadRequestError) as bad:
        rest.chat.completions.create(
            model="",
            messages=[{"role": "user", "content": "Speak."}],
            response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": CRASHER}},
        )
    assert "MAX_STRING_LENGTH" in str(bad.value) and "maxLength 20000" in str(bad.value)
    persona = pb.Persona(
        id="crasher", display_name="Crasher", system_prompt="You crash.", response_schema=json.dumps(CRASHER)
    )
    err = rpc_error(lambda: api.personas.CreatePersona(pb.CreatePersonaRequest(persona=persona), timeout=HANG_GUARD_S))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "MAX_STRING_LENGTH" in str(err.details())
    assert live_server.proc.poll() is None and api.serving()
    assert api.chat_with(max_tokens=4).choices[0].message.content is not None


def test_stored_persona_over_a_limit_is_refused_at_talk_naming_it_not_executed(
    server_factory: Any, tmp_path: Path
) -> None:
    # Stored before the limits existed: straight into the store, as an older server would have accepted it.
    data = tmp_path / "old-data"
    data.mkdir()
    old = Persona(id="old_bard", display_name="Bard", system_prompt="You sing.", response_schema=CRASHER)
    assert SqliteStore(data / "npcserver.db").put_persona("old_bard", persona_to_dict(old), mode="create")
    server = server_factory(data_dir=data)
    api = Api(server.grpc_target)
    try:
        for _ in range(2):  # again and again: nothing stored can crash a later Talk
            err = rpc_error(lambda: api.talk("old_bard", "Sing!"))
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
            details = str(err.details())
            assert "'old_bard'" in details and "MAX_STRING_LENGTH" in details and "UpdatePersona" in details
        assert server.proc.poll() is None and api.serving()
        assert "old_bard" in server.output(), "the refusal is reported in the server log"
        # The designer can still fix it.
        fixed = pb.Persona(id="old_bard", display_name="Bard", system_prompt="You sing.")
        api.personas.UpdatePersona(pb.UpdatePersonaRequest(persona=fixed), timeout=HANG_GUARD_S)
        assert api.talk("old_bard", "Sing!")[-1].HasField("final")
    finally:
        api.channel.close()


# --- finding 2: a regular expression that froze everything ---------------------------------------------------------


def test_backtracking_pattern_returns_invalid_within_seconds_while_health_answers(api: Api, live_server: Any) -> None:
    with HealthProbe(api, live_server.http_url) as probe:
        reply, took = timed(lambda: api.chat_with(FREEZER, max_tokens=64, temperature=0))
    choice = reply.choices[0]
    assert json.loads(choice.message.content) == "a" * 39 + "!"
    assert not choice.structured.valid
    assert (
        "could not be validated" in choice.structured.error and "SCHEMA_VALIDATE_TIMEOUT_S" in choice.structured.error
    )
    assert took < 8, f"the reply took {took:.1f} s"
    assert probe.checks > 0 and probe.slowest < HEALTH_PROMPT_S, f"health took {probe.slowest:.2f} s"


# --- finding 3: a chat template as a memory and CPU bomb -----------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "limits"),
    [
        (STRING_BOMB, ("WORKER_MEMORY_MB", "MAX_RENDERED_CHARS")),
        (LOOP_BOMB, ("WORKER_MEMORY_MB", "TEMPLATE_RENDER_TIMEOUT_S")),  # whichever it reaches first
        (SILENT_LOOP_BOMB, ("TEMPLATE_RENDER_TIMEOUT_S",)),
    ],
    ids=["string-product", "nested-loops", "nested-loops-no-output"],
)
def test_template_bomb_is_stopped_within_its_deadline_without_bloating_the_server(
    api: Api, live_server: Any, template: str, limits: tuple[str, ...]
) -> None:
    pid = live_server.proc.pid
    before = rss_mib(pid)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mib(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with HealthProbe(api, live_server.http_url) as probe:
        err, took = timed(lambda: rpc_error(lambda: api.chat_with(chat_template=template, max_tokens=4)))
    done.set()
    sampler.join()
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, live_server.output()[-4000:]
    details = str(err.details())
    assert "chat template" in details and any(limit in details for limit in limits), details
    assert took < 5, f"refused after {took:.1f} s"
    assert peak - before < 200, f"server and workers grew by {peak - before:.0f} MiB"
    assert probe.checks > 0 and probe.slowest < HEALTH_PROMPT_S, f"health took {probe.slowest:.2f} s"
    assert api.chat_with(max_tokens=4).choices[0].message.content is not None


def test_template_bomb_over_rest_is_413_naming_the_limit(live_server: Any) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "chat_template": SILENT_LOOP_BOMB, "max_tokens": 4}
    with httpx.Client(base_url=live_server.http_url, timeout=HANG_GUARD_S) as http:
        reply = http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 413, reply.text
    error = reply.json()["error"]
    assert error["param"] == "chat_template" and "TEMPLATE_RENDER_TIMEOUT_S" in error["message"]


def test_oversized_template_is_invalid_argument_naming_the_limit(api: Api) -> None:
    err = rpc_error(lambda: api.chat_with(chat_template="x" * 200_000, max_tokens=4))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "MAX_TEMPLATE_CHARS" in str(err.details())


# --- also from issue 11: a huge enum, a very deep schema -----------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "limit"),
    [
        ({"type": "string", "enum": [f"v{i}" for i in range(100_000)]}, "MAX_ENUM_VALUES"),
        (deep_schema(100), "MAX_SCHEMA_DEPTH"),  # 200 levels of JSON: INTERNAL (RecursionError) before
    ],
    ids=["enum-100000", "depth-200"],
)
def test_huge_enum_and_deep_schema_are_invalid_argument_naming_the_limit(
    api: Api, live_server: Any, schema: dict[str, Any], limit: str
) -> None:
    with HealthProbe(api, live_server.http_url) as probe:
        err, took = timed(lambda: rpc_error(lambda: api.chat_with(schema, max_tokens=4)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and limit in str(err.details()), err
    assert took < 3, f"refused after {took:.1f} s"
    assert probe.slowest < HEALTH_PROMPT_S, f"health took {probe.slowest:.2f} s"
