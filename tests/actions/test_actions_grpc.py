"""NPC actions over gRPC, end to end: the real server, the embedded base model, grpcio stubs over a real socket.

The tavern keeper (personas/tavern_keeper.toml) declares give_item with an enum of items. Every call the server
reports must validate against its schema; the action choice changes what the model may sample, and each mode has a
test that fails if the choice were ignored.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import jsonschema
import pytest

from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc

HANG_GUARD_S = 120
ITEMS = ["room key", "mutton stew", "brown ale"]
GIVE_ITEM_SCHEMA = {
    "type": "object",
    "properties": {"item": {"type": "string", "enum": ITEMS}},
    "required": ["item"],
    "additionalProperties": False,
}
PAYS = "Here are three silver. I'll take the room."
Mode = pb.ActionChoice.Mode


class Api:
    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.conv = pb_grpc.ConversationServiceStub(self.channel)
        self.personas = pb_grpc.PersonaServiceStub(self.channel)
        self.chat = pb_grpc.ChatServiceStub(self.channel)

    def talk(self, conversation: str, text: str = "", **kw: Any) -> tuple[list[pb.TalkResponse], pb.CompletionFinal]:
        kw.setdefault("sampling", pb.SamplingOptions(temperature=0, seed=7))
        events = list(
            self.conv.Talk(
                pb.TalkRequest(persona_id="tavern_keeper", conversation_id=conversation, text=text, **kw),
                timeout=HANG_GUARD_S,
            )
        )
        assert events and events[-1].HasField("final"), "stream ended without a final message"
        return events, events[-1].final

    def turns(self, conversation: str) -> list[pb.Turn]:
        got = self.conv.GetConversation(
            pb.GetConversationRequest(persona_id="tavern_keeper", conversation_id=conversation)
        )
        return list(got.conversation.turns)


@pytest.fixture(scope="module")
def api(live_server: Any) -> Iterator[Api]:
    a = Api(live_server.grpc_target)
    yield a
    a.channel.close()


def conv_id() -> str:
    return "act-" + uuid.uuid4().hex[:12]


def calls_of(events: list[pb.TalkResponse]) -> list[pb.ActionCall]:
    return [e.action_call for e in events if e.HasField("action_call")]


WAVE = pb.Action(name="wave", description="Greta waves at someone.", parameters_schema="")
OPEN_GATE = pb.Action(
    name="open_gate",
    description="Greta opens the yard gate.",
    parameters_schema=json.dumps({"type": "object", "properties": {"gate": {"enum": ["yard", "stable"]}}}),
    await_result=True,
)


def test_persona_declares_give_item(api: Api) -> None:
    persona = api.personas.GetPersona(pb.GetPersonaRequest(persona_id="tavern_keeper")).persona
    [action] = [a for a in persona.actions if a.name == "give_item"]
    assert json.loads(action.parameters_schema)["properties"]["item"]["enum"] == ITEMS


def test_paying_player_gets_a_validated_give_item_call_in_stream_order(api: Api) -> None:
    conv = conv_id()
    events, final = api.talk(conv, PAYS)
    calls = calls_of(events)
    assert [c.name for c in calls] == ["give_item"], final
    jsonschema.validate(json.loads(calls[0].arguments), GIVE_ITEM_SCHEMA)
    assert calls[0].id.startswith("call_")
    assert list(final.action_calls) == calls and list(final.message.tool_calls) == calls
    # Fire-and-forget: the stream ends normally, and the call event comes before the final, after its text.
    assert final.finish_reason == pb.FINISH_REASON_STOP
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "final" and kinds.count("action_call") == 1
    # The line before the call streams before the call event.
    spoken = "".join(e.delta.content for e in events[: kinds.index("action_call")] if e.HasField("delta"))
    assert final.message.content.startswith(spoken)
    assert "<action>" not in final.message.content
    assert "".join(e.delta.content for e in events if e.HasField("delta")) == final.message.content
    [turn] = api.turns(conv)
    assert turn.player_line == PAYS and list(turn.action_calls) == [
        pb.ActionCall(id=calls[0].id, name="give_item", arguments=calls[0].arguments)
    ]
    assert "\x1e" not in turn.npc_line


def test_choice_none_forbids_the_call_auto_would_make(api: Api) -> None:
    _, auto = api.talk(conv_id(), PAYS)
    assert auto.action_calls, "the auto baseline must call, or this test proves nothing"
    events, final = api.talk(conv_id(), PAYS, action_choice=pb.ActionChoice(mode=Mode.MODE_NONE))
    assert not calls_of(events) and not final.action_calls
    assert final.message.content.strip() and "<action" not in final.message.content


def test_choice_required_calls_even_when_nothing_asks_for_it(api: Api) -> None:
    text = "Nice weather today."
    _, auto = api.talk(conv_id(), text)
    assert not auto.action_calls, "auto would not call here, so required must make the difference"
    events, _ = api.talk(conv_id(), text, action_choice=pb.ActionChoice(mode=Mode.MODE_REQUIRED))
    [call] = calls_of(events)
    assert call.name == "give_item"
    jsonschema.validate(json.loads(call.arguments), GIVE_ITEM_SCHEMA)


def test_choice_named_calls_that_action(api: Api) -> None:
    events, final = api.talk(
        conv_id(), PAYS, actions=[WAVE], action_choice=pb.ActionChoice(mode=Mode.MODE_NAMED, name="wave")
    )
    assert [c.name for c in calls_of(events)] == ["wave"]
    assert json.loads(final.action_calls[0].arguments) == {}


def test_await_result_round_trip_keeps_the_turn_in_the_kv_cache(api: Api) -> None:
    conv = conv_id()
    events, first = api.talk(
        conv,
        "Open the yard gate for my horse, please.",
        actions=[OPEN_GATE],
        action_choice=pb.ActionChoice(mode=Mode.MODE_NAMED, name="open_gate"),
    )
    [call] = calls_of(events)
    assert first.finish_reason == pb.FINISH_REASON_ACTION
    _, follow = api.talk(conv, action_results=[pb.ActionResult(call_id=call.id, content="the yard gate is open")])
    # The NPC speaks about the result (the follow-up defaults to choice none) from the cached previous turn.
    assert follow.message.content.strip() and not follow.action_calls
    assert follow.finish_reason == pb.FINISH_REASON_STOP
    assert follow.timings.cached_prompt_tokens >= follow.usage.prompt_tokens * 0.8, follow.timings
    turns = api.turns(conv)
    assert turns[0].action_calls[0].id == call.id
    assert turns[1].player_line == "" and list(turns[1].action_results) == [
        pb.ActionResult(call_id=call.id, content="the yard gate is open")
    ]
    # Export and import carry the calls and results.
    saved = api.conv.ExportConversation(
        pb.ExportConversationRequest(persona_id="tavern_keeper", conversation_id=conv)
    ).conversation
    api.conv.ResetConversation(pb.ResetConversationRequest(persona_id="tavern_keeper", conversation_id=conv))
    api.conv.ImportConversation(pb.ImportConversationRequest(conversation=saved))
    assert api.turns(conv) == list(saved.turns)
    # Nothing is pending any more: a second result is refused.
    with pytest.raises(grpc.RpcError) as info:
        api.talk(conv, action_results=[pb.ActionResult(call_id=call.id, content="again")])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no action call is pending" in (info.value.details() or "")


BAD: dict[str, tuple[dict[str, Any], str]] = {
    "duplicate name": (
        {"text": "hi", "actions": [pb.Action(name="give_item")]},
        "declared twice",
    ),
    "not an identifier": ({"text": "hi", "actions": [pb.Action(name="open gate")]}, "is not an identifier"),
    "schema not JSON": (
        {"text": "hi", "actions": [pb.Action(name="x", parameters_schema="{not json")]},
        "actions[0].parameters_schema is not valid JSON",
    ),
    "schema does not compile": (
        {"text": "hi", "actions": [pb.Action(name="x", parameters_schema='{"type": "object", "minProperties": "a"}')]},
        "not a valid JSON Schema",
    ),
    "named choice not declared": (
        {"text": "hi", "action_choice": pb.ActionChoice(mode=Mode.MODE_NAMED, name="fly")},
        "'fly', which is not declared",
    ),
    "result with no pending call": (
        {"action_results": [pb.ActionResult(call_id="call_x", content="done")]},
        "no action call is pending",
    ),
    "result with text": (
        {"text": "hi", "action_results": [pb.ActionResult(call_id="call_x", content="done")]},
        "text must be empty when action_results are sent",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_action_input_is_invalid_argument_and_stores_nothing(api: Api, case: str) -> None:
    kw, fragment = BAD[case]
    conv = conv_id()
    with pytest.raises(grpc.RpcError) as info:
        api.talk(conv, **kw)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert fragment in (info.value.details() or "")
    assert api.turns(conv) == []


def test_result_for_an_unknown_call_id_names_the_pending_one(api: Api) -> None:
    conv = conv_id()
    events, _ = api.talk(
        conv,
        "Open the gate.",
        actions=[OPEN_GATE],
        action_choice=pb.ActionChoice(mode=Mode.MODE_NAMED, name="open_gate"),
    )
    [call] = calls_of(events)
    with pytest.raises(grpc.RpcError) as info:
        api.talk(conv, action_results=[pb.ActionResult(call_id="call_nope", content="done")])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'call_nope' is not a pending call" in (info.value.details() or "")
    assert call.id in (info.value.details() or "")
    assert len(api.turns(conv)) == 1


def test_chat_tools_on_grpc(api: Api) -> None:
    tool = pb.Action(name="give_item", description="Hand over an item.", parameters_schema=json.dumps(GIVE_ITEM_SCHEMA))
    req = pb.StreamChatCompletionRequest(
        messages=[pb.ChatMessage(role="user", content="Three silver for the room key, please.")],
        tools=[tool],
        tool_choice=pb.ActionChoice(mode=Mode.MODE_REQUIRED),
        sampling=pb.SamplingOptions(temperature=0, max_tokens=60),
    )
    events = list(api.chat.StreamChatCompletion(req, timeout=HANG_GUARD_S))
    calls = [e.action_call for e in events if e.HasField("action_call")]
    assert [c.name for c in calls] == ["give_item"]
    jsonschema.validate(json.loads(calls[0].arguments), GIVE_ITEM_SCHEMA)
    with pytest.raises(grpc.RpcError) as info:
        list(
            api.chat.StreamChatCompletion(
                pb.StreamChatCompletionRequest(messages=req.messages, tools=[tool], parallel_tool_calls=True),
                timeout=HANG_GUARD_S,
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "parallel_tool_calls" in (info.value.details() or "")


def test_a_call_cut_off_by_max_tokens_is_never_sent_and_nothing_half_made_is_stored(api: Api) -> None:
    conv = conv_id()
    events, final = api.talk(
        conv,
        PAYS,
        action_choice=pb.ActionChoice(mode=Mode.MODE_REQUIRED),
        sampling=pb.SamplingOptions(temperature=0, max_tokens=4),
    )
    assert not calls_of(events) and not final.action_calls
    assert final.HasField("structured") and not final.structured.valid
    assert final.structured.schema_name == "action" and "cut off" in final.structured.error
    # Required puts the call first, so there is no spoken line to keep: nothing is stored.
    assert api.turns(conv) == []
