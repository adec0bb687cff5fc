"""NPC actions on the HTTP door, end to end with the real server and the embedded model: OpenAI's tools through the
official ``openai`` package (tool_choice in every mode, streamed tool_calls deltas keyed by index, role tool),
Ollama's tools through the official ``ollama`` package, and Talk's action events over gRPC-Web.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema
import ollama
import openai
import pytest

from npcserver.api.v1 import npcserver_pb2 as pb
from tests.http.grpcweb_wire import call as web_call

ITEMS = ["room key", "mutton stew", "brown ale"]
GIVE_ITEM: dict[str, Any] = {
    "type": "object",
    "properties": {"item": {"type": "string", "enum": ITEMS}},
    "required": ["item"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {"name": "give_item", "description": "Hand the customer an item.", "parameters": GIVE_ITEM},
    },
    {
        "type": "function",
        "function": {
            "name": "wave",
            "description": "Wave at the customer.",
            "parameters": {"type": "object", "properties": {}},
        },
    },
]
ASK: list[Any] = [
    {"role": "system", "content": "You are Greta, a tavern keeper. You hand over what customers pay for."},
    {"role": "user", "content": "Here are three silver for the room key."},
]
CHATTER = [{"role": "user", "content": "Nice weather today."}]


@pytest.fixture(scope="module")
def oai(live_server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_server.http_url}/v1", api_key="none", max_retries=0, timeout=120)


def create(oai: openai.OpenAI, messages: list[Any], **kw: Any) -> Any:
    return oai.chat.completions.create(
        model="", messages=messages, tools=TOOLS, temperature=0, max_tokens=60, **kw
    ).choices[0]


def test_openai_required_returns_a_validated_tool_call(oai: openai.OpenAI) -> None:
    baseline = create(oai, CHATTER, tool_choice="auto")
    assert not baseline.message.tool_calls, "auto does not call here, so required must make the difference"
    choice = create(oai, CHATTER, tool_choice="required")
    assert choice.finish_reason == "tool_calls"
    [tool_call] = choice.message.tool_calls
    assert tool_call.type == "function" and tool_call.id.startswith("call_")
    assert tool_call.function.name in ("give_item", "wave")
    if tool_call.function.name == "give_item":
        jsonschema.validate(json.loads(tool_call.function.arguments), GIVE_ITEM)


def test_openai_named_choice_calls_that_tool(oai: openai.OpenAI) -> None:
    choice = create(oai, ASK, tool_choice={"type": "function", "function": {"name": "wave"}})
    assert [c.function.name for c in choice.message.tool_calls or []] == ["wave"]
    choice = create(oai, ASK, tool_choice={"type": "function", "function": {"name": "give_item"}})
    [call] = choice.message.tool_calls
    assert call.function.name == "give_item"
    jsonschema.validate(json.loads(call.function.arguments), GIVE_ITEM)


def test_openai_none_never_calls(oai: openai.OpenAI) -> None:
    forced = create(oai, ASK, tool_choice="required")
    assert forced.message.tool_calls
    choice = create(oai, ASK, tool_choice="none")
    assert not choice.message.tool_calls and choice.finish_reason in ("stop", "length")
    assert "<action" not in (choice.message.content or "")


def test_openai_streamed_tool_call_deltas_keyed_by_index_then_tool_result(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="",
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "give_item"}},
        temperature=0,
        max_tokens=60,
        stream=True,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for tc in delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            entry["id"] += tc.id or ""
            entry["name"] += (tc.function.name if tc.function else None) or ""
            entry["arguments"] += (tc.function.arguments if tc.function else None) or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0] and calls[0]["name"] == "give_item"
    jsonschema.validate(json.loads(calls[0]["arguments"]), GIVE_ITEM)
    # The result goes back as role tool with tool_call_id; the model then answers in words.
    follow = create(
        oai,
        [
            *ASK,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": calls[0]["id"],
                        "type": "function",
                        "function": {"name": "give_item", "arguments": calls[0]["arguments"]},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": calls[0]["id"], "content": "the key changed hands"},
        ],
        tool_choice="none",
    )
    assert (follow.message.content or "").strip() and not follow.message.tool_calls


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"parallel_tool_calls": True}, "parallel_tool_calls: true is not supported"),
        ({"tool_choice": {"type": "function", "function": {"name": "fly"}}}, "'fly', which is not declared"),
        ({"tool_choice": "sometimes"}, "tool_choice 'sometimes' is unknown"),
    ],
)
def test_openai_bad_tool_requests_are_400_naming_the_fix(
    oai: openai.OpenAI, extra: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(model="", messages=ASK, tools=TOOLS, **extra)
    assert fragment in str(info.value)


def test_openai_bad_tools_and_unknown_tool_call_id(live_server: Any) -> None:
    url = f"{live_server.http_url}/v1/chat/completions"
    dup = {"messages": ASK, "tools": [TOOLS[0], TOOLS[0]]}
    r = httpx.post(url, json=dup, timeout=60)
    assert r.status_code == 400 and "declared twice" in r.text
    bad_name = {"messages": ASK, "tools": [{"type": "function", "function": {"name": "give item"}}]}
    r = httpx.post(url, json=bad_name, timeout=60)
    assert r.status_code == 400 and "is not an identifier" in r.text
    bad_schema = {
        "messages": ASK,
        "tools": [{"type": "function", "function": {"name": "x", "parameters": {"type": "object", "required": 3}}}],
    }
    r = httpx.post(url, json=bad_schema, timeout=60)
    assert r.status_code == 400 and "not a valid JSON Schema" in r.text
    orphan = {"messages": [*ASK, {"role": "tool", "tool_call_id": "call_nope", "content": "x"}], "tools": TOOLS}
    r = httpx.post(url, json=orphan, timeout=60)
    assert r.status_code == 400 and "'call_nope' does not name a call" in r.text


def test_ollama_tools_return_tool_calls_in_ollamas_shape(live_server: Any) -> None:
    client = ollama.Client(host=live_server.http_url, timeout=120)
    model = client.list().models[0].model
    assert model is not None
    # Ollama has no tool_choice, so the conversation shows one earlier call (few-shot, as a game would keep it);
    # the grammar makes any call well formed.
    messages: list[Any] = [
        ASK[0],
        {"role": "user", "content": "A brown ale, here is a copper."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "give_item", "arguments": {"item": "brown ale"}}}],
        },
        {"role": "tool", "tool_name": "give_item", "content": "the ale changed hands"},
        {"role": "assistant", "content": "There. Drink it slow."},
        ASK[1],
    ]
    reply = client.chat(model=model, messages=messages, tools=[TOOLS[0]], options={"temperature": 0, "num_predict": 60})
    calls = reply.message.tool_calls or []
    assert [c.function.name for c in calls] == ["give_item"], reply.message
    jsonschema.validate(dict(calls[0].function.arguments), GIVE_ITEM)
    streamed = [
        c
        for part in client.chat(
            model=model, messages=messages, tools=[TOOLS[0]], options={"temperature": 0, "num_predict": 60}, stream=True
        )
        for c in part.message.tool_calls or []
    ]
    assert [c.function.name for c in streamed] == ["give_item"]
    follow = client.chat(
        model=model,
        messages=[
            *ASK,
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": "give_item", "arguments": {"item": "room key"}}}],
            },
            {"role": "tool", "tool_name": "give_item", "content": "the key changed hands"},
        ],
        options={"temperature": 0, "num_predict": 40},
    )
    assert follow.message.content and follow.message.content.strip()


def test_grpcweb_talk_carries_the_action_call(live_server: Any) -> None:
    url = urlsplit(live_server.http_url)
    request = pb.TalkRequest(
        persona_id="tavern_keeper",
        conversation_id="web-act-" + uuid.uuid4().hex[:8],
        text="Here are three silver. I'll take the room.",
        action_choice=pb.ActionChoice(mode=pb.ActionChoice.MODE_NAMED, name="give_item"),
        sampling=pb.SamplingOptions(temperature=0),
    )
    reply = web_call(
        url.hostname or "127.0.0.1",
        url.port or 80,
        "/npcserver.api.v1.ConversationService/Talk",
        request.SerializeToString(),
    )
    assert reply.status == 0, reply.message
    events = [pb.TalkResponse.FromString(m) for m in reply.messages]
    calls = [e.action_call for e in events if e.HasField("action_call")]
    assert [c.name for c in calls] == ["give_item"]
    jsonschema.validate(json.loads(calls[0].arguments), GIVE_ITEM)
    assert events[-1].HasField("final") and list(events[-1].final.action_calls) == calls


def test_rest_talk_streams_the_action_call_as_in_the_readme(live_server: Any) -> None:
    conversation = "rest-act-" + uuid.uuid4().hex[:8]
    url = f"{live_server.http_url}/v1/npcs/tavern_keeper/conversations/{conversation}:talk"
    body = {
        "text": "Here are three silver. I will take the room.",
        "action_choice": {"mode": "MODE_NAMED", "name": "give_item"},
    }
    events = []
    with httpx.stream("POST", url, json=body, timeout=120) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[len("data: ") :]))
    calls = [e["action_call"] for e in events if "action_call" in e]
    assert [c["name"] for c in calls] == ["give_item"]
    jsonschema.validate(json.loads(calls[0]["arguments"]), GIVE_ITEM)
    assert events[-1]["final"]["action_calls"] == calls and events[-1]["final"]["stored"] is True
    stored = httpx.get(f"{live_server.http_url}/v1/npcs/tavern_keeper/conversations/{conversation}", timeout=30).json()
    assert stored["turns"][0]["action_calls"][0]["id"] == calls[0]["id"]
