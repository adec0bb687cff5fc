"""How failures reach SDK callers: status codes map to the SDK's exceptions, carrying code and message."""

from __future__ import annotations

import time

import grpc
import pytest

from npcserver.client import (
    NpcAlreadyExists,
    NpcCancelled,
    NpcClient,
    NpcClientError,
    NpcDeadlineExceeded,
    NpcInvalidArgument,
    NpcNotFound,
    NpcQueueFull,
    NpcServerError,
    NpcServerUnavailable,
    NpcUnauthenticated,
    Persona,
)
from npcserver.client.errors import from_rpc_error


def test_unknown_persona_raises_not_found(npc: NpcClient, conversation_id: str) -> None:
    with pytest.raises(NpcNotFound) as exc:
        npc.get_persona("no_such_npc")
    assert exc.value.code == grpc.StatusCode.NOT_FOUND
    assert "no_such_npc" in exc.value.message

    # A stream fails when it is read, with the same exception.
    stream = npc.stream_talk("no_such_npc", conversation_id, "Hello?")
    with pytest.raises(NpcNotFound) as exc:
        list(stream)
    assert "no_such_npc" in exc.value.message
    with pytest.raises(NpcNotFound):
        npc.talk("no_such_npc", conversation_id, "Hello?")


def test_invalid_requests_raise_invalid_argument(npc: NpcClient, conversation_id: str) -> None:
    with pytest.raises(NpcInvalidArgument) as exc:
        npc.talk("tavern_keeper", conversation_id, "")
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.value.message

    with pytest.raises(NpcInvalidArgument) as exc:
        npc.chat("Hi", temperature=5.0)
    assert "temperature" in exc.value.message

    with pytest.raises(NpcInvalidArgument) as exc:
        npc.create_persona(Persona(id="Not A Valid Id", display_name="X", system_prompt="x"))
    assert exc.value.code == grpc.StatusCode.INVALID_ARGUMENT

    with pytest.raises(NpcInvalidArgument):
        npc.chat("Hi", response_format={"type": "object", "properties": {"a": {"type": "no-such-type"}}})


def test_a_passed_deadline_raises_deadline_exceeded(npc: NpcClient, conversation_id: str) -> None:
    with pytest.raises(NpcDeadlineExceeded) as exc:
        npc.talk("narrator", conversation_id, "Describe the kingdom in great detail.", max_tokens=400, timeout=0.05)
    assert exc.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    # A reply that never finished stores no turn.
    assert npc.history("narrator", conversation_id).turns == ()


def test_a_closed_port_fails_fast_with_a_clear_error(closed_port_target: str) -> None:
    target = closed_port_target  # nothing listens here
    start = time.monotonic()
    with pytest.raises(NpcServerUnavailable) as exc, NpcClient(target, ready_timeout=1.0):
        pass
    elapsed = time.monotonic() - start
    assert elapsed < 5.0
    assert exc.value.code == grpc.StatusCode.UNAVAILABLE
    assert target in exc.value.message
    assert "npcserver serve" in exc.value.message


def test_a_call_to_a_closed_port_raises_unavailable(closed_port_target: str) -> None:
    target = closed_port_target
    client = NpcClient(target, timeout=5.0)  # not entered: no readiness wait, the call itself fails
    try:
        with pytest.raises(NpcServerUnavailable) as exc:
            client.list_presets()
        assert target in exc.value.message
    finally:
        client.close()


class _FailedCall(grpc.RpcError):  # type: ignore[misc]  # grpc ships no type hints
    """The shape of a failed call as grpc raises it: an RpcError with code() and details()."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.NOT_FOUND, NpcNotFound),
        (grpc.StatusCode.INVALID_ARGUMENT, NpcInvalidArgument),
        (grpc.StatusCode.ALREADY_EXISTS, NpcAlreadyExists),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, NpcQueueFull),
        (grpc.StatusCode.UNAVAILABLE, NpcServerUnavailable),
        (grpc.StatusCode.CANCELLED, NpcCancelled),
        (grpc.StatusCode.DEADLINE_EXCEEDED, NpcDeadlineExceeded),
        (grpc.StatusCode.UNAUTHENTICATED, NpcUnauthenticated),
        (grpc.StatusCode.INTERNAL, NpcServerError),
        (grpc.StatusCode.UNKNOWN, NpcServerError),
    ],
)
def test_status_codes_map_to_exceptions(code: grpc.StatusCode, expected: type[NpcClientError]) -> None:
    err = from_rpc_error(_FailedCall(code, "the queue holds 8 requests; retry later"))
    assert type(err) is expected
    assert err.code == code
    assert "retry later" in err.message
    assert code.name in str(err)
