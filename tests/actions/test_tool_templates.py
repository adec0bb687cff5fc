"""NPC actions on a model whose chat template has a tool format (Qwen 2.5's ``<tool_call>``), end to end: a copy of
the embedded model carrying Qwen 2.5's template, the real server, gRPC stubs and the official ``openai`` package.

The template renders the tools; ``required`` and named choices constrain the whole reply to a ``<tool_call>``;
``auto`` samples freely until the model opens a ``<tool_call>``, and a lazy grammar constrains the call from there.
The base model copies what the turns before it show, which is how the tests steer it into writing a call.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import grpc
import jsonschema
import openai
import pytest

from bench.template_gguf import FAMILIES, stamp_template
from npcserver.api.v1 import npcserver_pb2 as pb
from npcserver.api.v1 import npcserver_pb2_grpc as pb_grpc
from npcserver.config import Settings
from npcserver.core import actions as acts
from npcserver.engine.base import GenerationRequest, SamplingParams, TextDelta
from npcserver.engine.batched import BatchedEngine
from npcserver.engine.model import resolve_model_path
from tests.conftest import ServerProcess, start_server

pytestmark = pytest.mark.model

HANG_GUARD_S = 180
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
    {"type": "function", "function": {"name": "wave", "description": "Wave.", "parameters": {"type": "object"}}},
]
SYSTEM = {"role": "system", "content": "You are Greta, a tavern keeper. You hand over what customers pay for."}
ASK = {"role": "user", "content": "Here are three silver for the room key."}
# An earlier reply that called give_item with an item that is not in the enum: the base model copies it.
BAD_CALL = 'Here you go.<tool_call>\n{"name": "give_item", "arguments": {"item": "golden crown"}}\n</tool_call>'
COPY_ME: list[Any] = [SYSTEM] + [ASK, {"role": "assistant", "content": BAD_CALL}] * 3 + [ASK]
Mode = pb.ActionChoice.Mode


class Served:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.channel = grpc.insecure_channel(server.grpc_target)
        self.conv = pb_grpc.ConversationServiceStub(self.channel)
        self.designer = pb_grpc.DesignerServiceStub(self.channel)
        self.oai = openai.OpenAI(base_url=f"{server.http_url}/v1", api_key="none", max_retries=0, timeout=120)

    def talk(self, conversation: str, text: str, **kw: Any) -> tuple[list[pb.TalkResponse], pb.CompletionFinal]:
        kw.setdefault("sampling", pb.SamplingOptions(temperature=0, seed=7))
        request = pb.TalkRequest(persona_id="tavern_keeper", conversation_id=conversation, text=text, **kw)
        events = list(self.conv.Talk(request, timeout=HANG_GUARD_S))
        assert events and events[-1].HasField("final"), "stream ended without a final message"
        return events, events[-1].final

    def chat(self, messages: list[Any], **kw: Any) -> Any:
        kw.setdefault("temperature", 0)
        kw.setdefault("max_tokens", 60)
        return self.oai.chat.completions.create(model="", messages=messages, **kw).choices[0]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("qwen-tools")
    model = folder / "qwen2_5.gguf"
    stamp_template(resolve_model_path(None, Settings().cache_dir), model, FAMILIES["qwen2_5"].template, {})
    server = start_server(folder / "data", NPCSERVER_MODEL=str(model), NPCSERVER_CTX_SIZE="2048")
    served = Served(server)
    try:
        yield served
    finally:
        served.channel.close()
        server.stop()
        model.unlink(missing_ok=True)  # as big as the model


def grpc_tools() -> list[pb.Action]:
    return [
        pb.Action(
            name=t["function"]["name"],
            description=t["function"]["description"],
            parameters_schema=json.dumps(t["function"]["parameters"]),
        )
        for t in TOOLS
    ]


def test_tool_format_is_read_from_the_template_source() -> None:
    assert acts.has_tool_format(FAMILIES["qwen2_5"].template)
    # Llama 3.1 reads tools but writes calls as bare JSON, Gemma 3 has no tools: both keep the <action> format.
    for name in ("llama3", "gemma3", "mistral", "phi3"):
        assert not acts.has_tool_format(FAMILIES[name].template), name
    assert not acts.has_tool_format(None)


def test_a_line_with_a_less_than_sign_streams_as_text() -> None:
    cut = acts.CallCutter(tool_format=True)
    out = cut.feed("Two <") + cut.feed(" three, and <tool") + cut.feed("s> too. ")
    assert out == "Two < three, and <tools> too. " and not cut.raw
    assert cut.feed("<tool_") == "" and cut.feed('call>\n{"name": "wave", "arguments": {}}\n</tool_call>') == ""
    assert cut.done and cut.raw.startswith("<tool_call>") and cut.before.strip() == "Two < three, and <tools> too."


def test_the_template_renders_the_tools_and_the_grammar_starts_at_tool_call(qwen: Served) -> None:
    messages = [pb.ChatMessage(role=m["role"], content=m["content"]) for m in (SYSTEM, ASK)]
    shown = qwen.designer.RenderPrompt(
        pb.RenderPromptRequest(chat=pb.CreateChatCompletionRequest(messages=messages, tools=grpc_tools())),
        timeout=60,
    )
    # Qwen 2.5's own tools section, with each tool as the template's tojson writes it.
    assert "# Tools" in shown.text and "<tools>" in shown.text
    assert '"name": "give_item"' in shown.text and '"enum": ["room key", "mutton stew", "brown ale"]' in shown.text
    assert "can act in the game" not in shown.text  # not described a second time in our own words
    assert shown.grammar.startswith("root ::= call") and '"<tool_call>"' in shown.grammar
    assert "<action>" not in shown.grammar
    # Choice none: no tools for the template, and the spoken-only grammar.
    none = qwen.designer.RenderPrompt(
        pb.RenderPromptRequest(
            chat=pb.CreateChatCompletionRequest(
                messages=messages, tools=grpc_tools(), tool_choice=pb.ActionChoice(mode=Mode.MODE_NONE)
            )
        ),
        timeout=60,
    )
    assert "<tools>" not in none.text and "<tool_call>" not in none.grammar


def test_the_transcript_path_keeps_the_action_grammar(live_server: Any) -> None:
    # The embedded base model has no chat template: the whole reply is constrained by the <action> grammar.
    channel = grpc.insecure_channel(live_server.grpc_target)
    try:
        designer = pb_grpc.DesignerServiceStub(channel)
        shown = designer.RenderPrompt(
            pb.RenderPromptRequest(
                chat=pb.CreateChatCompletionRequest(
                    messages=[pb.ChatMessage(role="user", content=ASK["content"])], tools=grpc_tools()
                )
            ),
            timeout=60,
        )
    finally:
        channel.close()
    assert '"<action>"' in shown.grammar and "<tool_call>" not in shown.grammar
    assert "<tools>" not in shown.text and "give_item" in shown.text


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "give_item"}}])
def test_openai_required_and_named_make_a_validated_tool_call(qwen: Served, choice: Any) -> None:
    baseline = qwen.chat([SYSTEM, {"role": "user", "content": "Nice weather today."}], tools=TOOLS)
    assert not baseline.message.tool_calls, "auto does not call here, so the choice must make the difference"
    got = qwen.chat([SYSTEM, {"role": "user", "content": "Nice weather today."}], tools=TOOLS, tool_choice=choice)
    assert got.finish_reason == "tool_calls"
    [call] = got.message.tool_calls
    assert call.id.startswith("call_")
    if choice != "required":
        assert call.function.name == "give_item"
    if call.function.name == "give_item":
        jsonschema.validate(json.loads(call.function.arguments), GIVE_ITEM)
    assert "<tool_call>" not in (got.message.content or "")


def test_auto_talks_freely_then_the_lazy_grammar_constrains_the_call(qwen: Served) -> None:
    # Without tools the base model copies the earlier replies, invalid item and all.
    plain = qwen.chat(COPY_ME)
    assert "golden crown" in (plain.message.content or ""), plain.message.content
    got = qwen.chat(COPY_ME, tools=TOOLS, tool_choice="auto")
    # The line before the call was sampled freely (the <action> grammar's one line would not matter here, but it
    # is what the model wrote unconstrained), and the call from <tool_call> on follows the schema.
    assert (got.message.content or "").startswith("Here you go")
    [call] = got.message.tool_calls
    assert call.function.name == "give_item"
    jsonschema.validate(json.loads(call.function.arguments), GIVE_ITEM)
    # choice none: the same conversation makes no call, and no call text leaks into the line.
    none = qwen.chat(COPY_ME, tools=TOOLS, tool_choice="none")
    assert not none.message.tool_calls and "<tool_call" not in (none.message.content or "")


def test_talk_named_choice_calls_give_item_in_the_templates_format(qwen: Served) -> None:
    conv = "tt-" + uuid.uuid4().hex[:10]
    events, final = qwen.talk(
        conv, "Here are three silver.", action_choice=pb.ActionChoice(mode=Mode.MODE_NAMED, name="give_item")
    )
    calls = [e.action_call for e in events if e.HasField("action_call")]
    assert [c.name for c in calls] == ["give_item"], final
    jsonschema.validate(json.loads(calls[0].arguments), GIVE_ITEM)
    assert "<tool_call>" not in final.message.content
    # The next line's prompt shows the stored call as the template writes calls, and the tools in the template's
    # section; the persona's example call is shown in that format too.
    shown = qwen.designer.RenderPrompt(
        pb.RenderPromptRequest(talk=pb.TalkRequest(persona_id="tavern_keeper", conversation_id=conv, text="Thanks.")),
        timeout=60,
    )
    assert '<tool_call>\n{"name": "give_item", "arguments": ' + calls[0].arguments + "}\n</tool_call>" in shown.text
    assert "<tools>" in shown.text and "<action>" not in shown.text


# --- the engine's lazy grammar -------------------------------------------------------------------------------------


async def generate(engine: BatchedEngine, request: GenerationRequest) -> str:
    parts: list[str] = []
    async for event in engine.generate(request):
        if isinstance(event, TextDelta):
            parts.append(event.text)
    return "".join(parts)


async def test_lazy_grammar_leaves_the_text_free_until_its_trigger() -> None:
    path = resolve_model_path(None, Settings().cache_dir)
    engine = BatchedEngine(model_path=path, threads=2, ctx_size=1024, n_seq=2, max_queue=8)
    await engine.start()
    try:
        prompt = engine.tokenize("The old innkeeper looked up and said", add_bos=True)
        greedy = SamplingParams(temperature=0.0, max_tokens=24)
        free = await generate(engine, GenerationRequest(prompt=prompt, params=greedy))
        head = await generate(engine, GenerationRequest(prompt=prompt, params=replace(greedy, max_tokens=3)))
        assert free.startswith(head) and head.strip() and not head[-1].isspace(), (free, head)
        trigger = head.lstrip()
        grammar = f"root ::= {json.dumps(trigger)} {json.dumps(' XYZZY.')}"
        lazy = GenerationRequest(prompt=prompt, params=greedy, grammar=grammar, grammar_triggers=(trigger,))
        # Up to the trigger the output is the unconstrained one; from it on, the grammar's (then the end).
        both = await asyncio.gather(generate(engine, lazy), generate(engine, GenerationRequest(prompt, greedy)))
        assert list(both) == [head + " XYZZY.", free]
        # A trigger that a token would complete with more text after it: that token is redrawn (llama.cpp would
        # abort replaying text the grammar does not allow), and the grammar still holds once it starts.
        cut = trigger[:-1]
        grammar = f"root ::= {json.dumps(cut)} {json.dumps('!')}"
        text = await generate(
            engine, GenerationRequest(prompt=prompt, params=greedy, grammar=grammar, grammar_triggers=(cut,))
        )
        assert not text.startswith(head)
        assert cut not in text or text.endswith(cut + "!"), text
    finally:
        await engine.close()
