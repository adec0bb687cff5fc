"""Idempotent Talk end to end: the real server and model over real sockets, at the gRPC door, the REST door and the
Python SDK. A retry with the line's request id returns the stored turn, marked replayed, and stores nothing more."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import httpx
import pytest

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc
from npcserver.client import NpcClient


def talk(stub: pb_grpc.ConversationServiceStub, conversation: str, text: str, request_id: str) -> pb.CompletionFinal:
    req = pb.TalkRequest(persona_id="narrator", conversation_id=conversation, text=text, request_id=request_id)
    req.sampling.max_tokens = 24
    finals: list[pb.CompletionFinal] = [m.final for m in stub.Talk(req, timeout=120) if m.HasField("final")]
    assert len(finals) == 1
    return finals[0]


def turns(stub: pb_grpc.ConversationServiceStub, conversation: str) -> list[tuple[str, str]]:
    conv = stub.GetConversation(
        pb.GetConversationRequest(persona_id="narrator", conversation_id=conversation), timeout=30
    )
    return [(t.player_line, t.npc_line) for t in conv.conversation.turns]


def test_grpc_retry_replays_the_stored_turn(live_server: Any) -> None:
    conversation = f"idem-{uuid.uuid4().hex[:8]}"
    with grpc.insecure_channel(live_server.grpc_target) as channel:
        stub = pb_grpc.ConversationServiceStub(channel)
        # An empty reply is not stored (so there is nothing to replay): such a line is sent again as a new one.
        for n in range(5):
            first = talk(stub, conversation, "A pint of ale, please.", f"line-1-{n}")
            assert not first.replayed and first.usage.completion_tokens > 0
            if first.message.content.strip():
                break
        again = talk(stub, conversation, "A pint of ale, please.", f"line-1-{n}")
        assert again.replayed
        assert again.message.content == first.message.content
        assert again.usage.completion_tokens == 0  # nothing was generated
        assert turns(stub, conversation) == [("A pint of ale, please.", first.message.content)]
        other = talk(stub, conversation, "And a room?", "line-2")
        assert not other.replayed
        # No request id: no protection, every send is a new line, generated again.
        assert talk(stub, conversation, "And a room?", "").usage.completion_tokens > 0


def test_a_bad_request_id_names_the_field(live_server: Any) -> None:
    with grpc.insecure_channel(live_server.grpc_target) as channel:
        stub = pb_grpc.ConversationServiceStub(channel)
        for bad in ("has space", "x" * 129, "é"):
            with pytest.raises(grpc.RpcError) as caught:
                talk(stub, "idem-bad", "Hi", bad)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "request_id" in str(caught.value.details())


def test_rest_idempotency_key(live_server: Any) -> None:
    conversation = f"idem-{uuid.uuid4().hex[:8]}"
    url = f"{live_server.http_url}/v1/npcs/narrator/conversations/{conversation}:talk"
    body = {"text": "Any news?", "stream": False, "sampling": {"max_tokens": 24}}
    with httpx.Client(timeout=120) as http:
        for n in range(5):  # until a reply is stored (an empty one is not)
            first = http.post(url, json=body, headers={"Idempotency-Key": "rest-1"})
            assert first.status_code == 200, first.text
            assert first.json()["replayed"] is False
            if first.json()["stored"]:
                break
            body["text"] = f"Any news? ({n})"
        else:
            raise AssertionError("five empty replies in a row")
        # Streamed this time: the replay streams the stored text, then a final that says so.
        again = http.post(url, json={**body, "stream": True}, headers={"Idempotency-Key": "rest-1"})
        assert again.status_code == 200, again.text
        assert '"replayed": true' in again.text.replace('"replayed":true', '"replayed": true')
        # The body's request_id is the same thing; naming two different ids is a 400 that says which.
        same = http.post(url, json={**body, "request_id": "rest-1"}, headers={"Idempotency-Key": "rest-1"})
        assert same.json()["replayed"] is True
        assert same.json()["message"]["content"] == first.json()["message"]["content"]
        clash = http.post(url, json={**body, "request_id": "rest-2"}, headers={"Idempotency-Key": "rest-1"})
        assert clash.status_code == 400
        assert "Idempotency-Key" in clash.text and "request_id" in clash.text
        stored = http.get(f"{live_server.http_url}/v1/npcs/narrator/conversations/{conversation}").json()
        assert len(stored["turns"]) == 1


def test_sdk_makes_one_id_per_line_and_reuses_it(live_server: Any) -> None:
    conversation = f"idem-{uuid.uuid4().hex[:8]}"
    with NpcClient(live_server.grpc_target) as npc:
        a = npc.talk("narrator", conversation, "Hello.", max_tokens=8)
        b = npc.talk("narrator", conversation, "Hello.", max_tokens=8)  # a new line: a new id
        assert not a.replayed and not b.replayed
        for n in range(5):  # until a reply is stored (an empty one is not)
            c = npc.talk("narrator", conversation, "Bye.", max_tokens=24, request_id=f"sdk-{n}")
            if c.text.strip():
                break
        d = npc.talk("narrator", conversation, "Bye.", max_tokens=24, request_id=f"sdk-{n}")
        assert (c.replayed, d.replayed, d.text) == (False, True, c.text)
        assert [t.player_line for t in npc.history("narrator", conversation).turns].count("Bye.") == 1
